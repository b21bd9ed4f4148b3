"""Deterministic, stratified train/validation/test splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ftkit.atomic import write_files_atomically
from ftkit.data.formats import label_str
from ftkit.data.reader import iter_objects, require_file
from ftkit.errors import ConfigError, DatasetError
from ftkit.outputs import check_outputs

PARTS = ("train", "validation", "test")


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

    Raises:
        ConfigError: the fractions are out of range.
        DatasetError: there are too few examples (or too few per label) for these fractions.
    """
    parts = _split_indices(examples, validation=validation, test=test, seed=seed, stratify=stratify)
    return {k: [examples[i] for i in parts[k]] for k in PARTS}


def _split_indices(
    examples: list[dict[str, Any]], *, validation: float, test: float, seed: int, stratify: bool
) -> dict[str, list[int]]:
    """Sorted example indices of each part."""
    from sklearn.model_selection import train_test_split  # imported here: `import ftkit` stays light

    if not 0 <= validation < 1 or not 0 <= test < 1 or validation + test >= 1:
        raise ConfigError("validation and test fractions must be in [0, 1) and sum below 1")
    if not examples:
        raise DatasetError("no examples to split")
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
    return {k: sorted(int(i) for i in parts[k]) for k in PARTS}


def split_file(
    path: str | Path,
    out_dir: str | Path,
    *,
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Path]:
    """Split a JSONL file into ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` in ``out_dir``.

    The input file is only read, and every example is copied byte for byte (key order, number
    formatting and nesting kept). Every output is checked before the first is written, and all of
    them are replaced together or none is. A part with no examples is not written.

    Args:
        path: the JSONL file to split.
        out_dir: the folder for the parts (created when missing).
        validation: share of the examples for ``validation.jsonl``.
        test: share of the examples for ``test.jsonl``.
        seed: the same file and seed always give the same split.
        force: replace parts that already exist in ``out_dir``.

    Raises:
        DatasetError: a line is not a JSON object (naming file and line), or too few examples.
        ConfigError: an output exists (without ``force``), is the input file, or ``out_dir`` is a file.
    """
    src = require_file(path, DatasetError)
    lines = list(iter_objects(src))
    try:
        parts = _split_indices([ln.obj for ln in lines], validation=validation, test=test, seed=seed, stratify=True)
    except DatasetError as e:
        raise DatasetError(f"{src}: {e}") from None
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out takes a folder")
    targets = {name: out / f"{name}.jsonl" for name in PARTS if parts[name]}
    check_outputs(targets.values(), inputs=[src], force=force)
    write_files_atomically({targets[name]: b"".join(lines[i].raw + b"\n" for i in parts[name]) for name in targets})
    return targets


class SplitPart(BaseModel):
    """One written part of a split, counted: what ``ftkit split`` prints.

    Attributes:
        path: the part's file.
        examples: its number of examples.
        labels: examples per label (sorted by label), empty for data without labels.
    """

    path: Path = Field(description="The part's file.")
    examples: int = Field(description="Examples in the part.")
    labels: dict[str, int] = Field(default_factory=dict, description="Examples per label; empty without labels.")


def count_parts(parts: dict[str, Path]) -> dict[str, SplitPart]:
    """Examples and label counts of each part :func:`split_file` wrote, read back from the files.

    Read from the files rather than remembered from the split, so what is printed is what was written.
    """
    out = {}
    for name, path in parts.items():
        objs = [ln.obj for ln in iter_objects(path)]
        labels = Counter(label_str(o["label"]) for o in objs if "label" in o)
        out[name] = SplitPart(path=path, examples=len(objs), labels=dict(sorted(labels.items())))
    return out
