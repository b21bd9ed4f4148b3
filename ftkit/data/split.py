"""Deterministic, stratified train/validation/test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ftkit.atomic import atomic_write_bytes
from ftkit.data.dataset import Dataset
from ftkit.data.formats import label_str
from ftkit.errors import ConfigError, DatasetError


def split_examples(
    examples: list[dict[str, Any]],
    *,
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Split examples into train/validation/test, stratified by label where there are labels.

    The same examples and seed always give the same split.
    """
    from sklearn.model_selection import train_test_split  # imported here: `import ftkit` stays light

    if not 0 <= validation < 1 or not 0 <= test < 1 or validation + test >= 1:
        raise ConfigError("validation and test fractions must be in [0, 1) and sum below 1")
    labels = [label_str(e["label"]) for e in examples] if stratify and all("label" in e for e in examples) else None
    idx = np.arange(len(examples))
    parts: dict[str, np.ndarray] = {}
    rest = idx
    for name, frac in (("test", test), ("validation", validation)):
        if frac == 0:
            parts[name] = np.array([], dtype=int)
            continue
        share = frac / (len(rest) / len(examples))
        strat = [labels[i] for i in rest] if labels else None
        try:
            rest, parts[name] = train_test_split(rest, test_size=share, random_state=seed, stratify=strat)
        except ValueError as e:
            raise DatasetError(f"cannot split {len(examples)} examples this way: {e}") from None
    parts["train"] = rest
    return {k: [examples[i] for i in sorted(parts[k])] for k in ("train", "validation", "test")}


def split_file(
    path: str | Path,
    out_dir: str | Path,
    *,
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
) -> dict[str, Path]:
    """Split a JSONL file into ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` in ``out_dir``.

    The input file is only read. Each output is written atomically.
    """
    ds = Dataset.load(path)
    parts = split_examples(list(ds), validation=validation, test=test, seed=seed)
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for name, rows in parts.items():
        if not rows:
            continue
        target = out / f"{name}.jsonl"
        if target.resolve() == ds.path.resolve():
            raise ConfigError(f"refusing to overwrite the input file {ds.path}")
        atomic_write_bytes(target, b"".join(orjson.dumps(r) + b"\n" for r in rows))
        written[name] = target
    return written
