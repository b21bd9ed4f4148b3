"""Stratified label permutation: the data of a placebo run.

A placebo run trains on the same texts with the labels shuffled among them, so whatever it scores
comes from the label frequencies and the training recipe, not from what the texts say. A plain random
permutation keeps the label counts but, on a few hundred examples, can leave a good share of labels
in place by chance (and with them some real signal). Here the permutation is *stratified*: within
every true class the placebo labels are spread in proportion to the label counts (to within one
example), so the placebo label is as close to independent of the true label as whole numbers allow,
and which examples of a class receive which label is drawn at random from the seed.

The label column is all that changes: every other key of every line is copied as it is, in order,
and the label counts are exactly those of the input. The cross-table of true against placebo labels
is returned for the record.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from ftkit.atomic import atomic_write_bytes
from ftkit.data.formats import label_str
from ftkit.data.reader import iter_lines
from ftkit.errors import DatasetError


class Permutation(BaseModel):
    """What a label permutation did, for the placebo job's manifest."""

    seed: int
    stream: int = Field(description="Which of the seed's random streams was used (0 train, 1 validation).")
    examples: int
    changed: int = Field(description="Examples whose label changed.")
    label_counts: dict[str, int] = Field(description="Counts of each label: the same before and after.")
    crosstab: dict[str, dict[str, int]] = Field(description="True label -> placebo label -> examples.")


def permute_labels(labels: list[Any], seed: int, stream: int = 0) -> tuple[list[Any], dict[str, dict[str, int]]]:
    """A stratified permutation of ``labels``, and its cross-table (true -> placebo -> count).

    Args:
        labels: the labels in file order (any JSON values; compared as strings).
        seed: the permutation's seed; the same labels and seed always give the same permutation.
        stream: a second seed component, so train and validation files get independent draws.
    """
    rng = np.random.default_rng([seed, stream])
    keys = [label_str(x) for x in labels]
    n = len(keys)
    classes = sorted(set(keys))
    # Rows grouped by true class, in random order within each class.
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(np.array(keys) == c)) for c in classes] or [np.array([], dtype=int)]
    )
    # The label multiset laid out evenly along [0, 1) (each label at its own random phase), so any
    # contiguous block of rows (one true class) receives each label in proportion to its count, within one.
    counts = Counter(keys)
    value_of = {label_str(x): x for x in labels}
    slots = sorted(((k + rng.random()) / counts[c], c) for c in classes for k in range(counts[c]))
    placebo: list[Any] = [None] * n
    for row, (_, c) in zip(order, slots, strict=True):
        placebo[int(row)] = value_of[c]
    table: dict[str, dict[str, int]] = {c: {d: 0 for d in classes} for c in classes}
    for true, new in zip(keys, placebo, strict=True):
        table[true][label_str(new)] += 1
    return placebo, table


def permute_file(src: str | Path, dst: str | Path, seed: int, stream: int = 0) -> Permutation:
    """Write ``src`` to ``dst`` (atomically) with its labels permuted; ``src`` is only read.

    Raises:
        DatasetError: a line is not a JSON object with a ``label`` (validate the file first), or
            ``dst`` is ``src``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise DatasetError(f"refusing to overwrite the input file {src}")
    rows: list[dict[str, Any]] = []
    for ln in iter_lines(src):
        if not isinstance(ln.obj, dict) or "label" not in ln.obj:
            raise DatasetError(f"{src}:{ln.number}: a placebo run needs a label on every line")
        rows.append(ln.obj)
    if not rows:
        raise DatasetError(f"{src}: no examples to permute")
    labels = [r["label"] for r in rows]
    placebo, table = permute_labels(labels, seed, stream)
    atomic_write_bytes(
        dst, b"".join(orjson.dumps(r | {"label": lab}) + b"\n" for r, lab in zip(rows, placebo, strict=True))
    )
    counts = Counter(label_str(x) for x in labels)
    return Permutation(
        seed=seed,
        stream=stream,
        examples=len(rows),
        changed=sum(label_str(a) != label_str(b) for a, b in zip(labels, placebo, strict=True)),
        label_counts=dict(sorted(counts.items())),
        crosstab=table,
    )
