"""Leakage: examples of the data a model is tuned or judged on that it already saw in training.

Two examples overlap when the model is shown the same *input* in both: the classification text, the
completion prompt, the chat messages before the last assistant answer, the preference input (the part
``ftkit stats --test`` compares). The label or answer plays no part: a test text seen in training with
another label still tells the model something. Matches come in two kinds, counted apart:

- ``exact``: the input is the same, character for character;
- ``near``: the same only once whitespace is collapsed and case folded (a re-exported, re-cased or
  re-wrapped copy), which ``stats`` counts together with the exact ones.

A file is also compared as a whole: the same path, or a byte-identical copy, is reported as
``same_file`` (a preparation script that wrote the training data into the validation file).

Reading streams each file once; a reference file is kept as two int64 hash arrays, so memory stays
small for a training file of millions of lines. Lines that are not JSON objects of a known format are
skipped here: validation reports them.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, Field

from ftkit.data.formats import Format, detect_format
from ftkit.data.reader import iter_lines
from ftkit.errors import DatasetError

MAX_EXAMPLES = 10
_PREVIEW = 80


def model_input(fmt: Format, obj: dict[str, Any]) -> Any:
    """The part of an example a model sees as input: what must not leak from training into evaluation.

    Malformed examples get here too (they are hashed for duplicate checks), so nothing is assumed.
    """
    if fmt in ("classification", "text"):
        return obj.get("text", "")
    if fmt == "completion":
        return obj.get("prompt")
    msgs = obj.get("messages") if fmt == "chat" else (obj.get("input") or {})
    if fmt == "preference":
        msgs = msgs.get("messages") if isinstance(msgs, dict) else msgs
    if not isinstance(msgs, list):
        return msgs
    last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"), default=0)
    return msgs[:last] if fmt == "chat" else msgs


def normalise(value: Any) -> Any:
    """Every string in ``value`` with whitespace collapsed to single spaces and case folded."""
    if isinstance(value, str):
        return " ".join(value.casefold().split())
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def input_hashes(fmt: Format, obj: dict[str, Any]) -> tuple[int, int]:
    """Hashes of an example's input as it is and normalised (see :func:`normalise`)."""
    raw = model_input(fmt, obj)
    return _hash(raw), _hash(normalise(raw))


def _hash(value: Any) -> int:
    # Python's own 64-bit hash of the canonical JSON: fast, and only ever compared within one process.
    return hash(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))


def _preview(fmt: Format, obj: dict[str, Any]) -> str:
    raw = model_input(fmt, obj)
    if isinstance(raw, list):  # a conversation: its last user turn says most
        users = [m.get("content") for m in raw if isinstance(m, dict) and m.get("role") == "user"]
        raw = users[-1] if users else raw
    text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


class OverlapExample(BaseModel):
    """One example of the checked file whose input the other file also holds."""

    line: int = Field(description="Line in the checked file.")
    id: str | None = Field(default=None, description="The example's own id, when it has one.")
    kind: Literal["exact", "near"]
    other_line: int = Field(description="Line of the first match in the other file.")
    text: str = Field(description="The start of the shared input.")


class Overlap(BaseModel):
    """How much of the checked file one other file (training or validation data) already holds."""

    role: str = Field(description="What the other file was for: train or validation.")
    path: str
    same_file: bool = Field(description="The same file, or a byte-identical copy of it.")
    exact: int = Field(description="Checked examples whose input the other file holds as it is.")
    near: int = Field(description="Checked examples equal to one of the other file's only after normalising.")
    examples: list[OverlapExample] = Field(default_factory=list)

    @property
    def total(self) -> int:
        """Exact and near matches together (what ``stats --test`` counts)."""
        return self.exact + self.near


class LeakageReport(BaseModel):
    """A file checked against the data a model was trained (and tuned) on."""

    path: str = Field(description="The checked file.")
    role: str = Field(description="What the checked file is for: validation or test.")
    examples: int
    overlapping: int = Field(description="Checked examples that match any of the other files.")
    overlaps: list[Overlap] = Field(default_factory=list)
    missing: list[str] = Field(
        default_factory=list, description="Files to compare against that no longer exist: not checked."
    )

    @property
    def leaked(self) -> bool:
        """True when any checked example's input also appears in the other files."""
        return self.overlapping > 0 or any(o.same_file for o in self.overlaps)

    @property
    def fraction(self) -> float:
        """Share of the checked examples that overlap."""
        return self.overlapping / self.examples if self.examples else 0.0

    def summary(self, max_examples: int = 3) -> str:
        """One line per other file: counts by kind and a few example lines."""
        lines = []
        for o in self.overlaps:
            if not o.total and not o.same_file:
                continue
            head = (
                f"{self.path}: {o.total} of {self.examples} {self.role} example(s) also in the {o.role} data {o.path}"
            )
            if o.same_file:
                head = f"{self.path}: the {self.role} file is the {o.role} file {o.path} (or a byte-identical copy)"
            kinds = f" ({o.exact} exact, {o.near} only after normalising whitespace/case)"
            shown = ", ".join(
                f"line {e.line}{f' (id {e.id})' if e.id else ''} = {o.role} line {e.other_line}"
                for e in o.examples[:max_examples]
            )
            lines.append(head + kinds + (f"; e.g. {shown}" if shown else ""))
        lines.extend(f"{self.path}: not compared with {m} (no such file)" for m in self.missing)
        return "\n".join(lines)


@dataclass
class _Index:
    """One reference file: its examples' input hashes, sorted for binary search, with their lines."""

    path: Path
    exact: np.ndarray
    exact_lines: np.ndarray
    near: np.ndarray
    near_lines: np.ndarray

    def find(self, exact: int, near: int) -> tuple[Literal["exact", "near"], int] | None:
        """The kind of match and the first matching line, or None."""
        for kind, keys, lines, h in (
            ("exact", self.exact, self.exact_lines, exact),
            ("near", self.near, self.near_lines, near),
        ):
            i = int(np.searchsorted(keys, h))
            if i < len(keys) and keys[i] == h:
                return kind, int(lines[i])  # type: ignore[return-value]
        return None


@dataclass
class _Found:
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[OverlapExample] = field(default_factory=list)


def _examples(source: str | Path | Sequence[dict[str, Any]]) -> Iterator[tuple[int, Format, dict[str, Any]]]:
    """(line, format, example) for every example of a file or a list of rows, in order."""
    if isinstance(source, (str, Path)):
        for ln in iter_lines(Path(source)):
            if isinstance(ln.obj, dict) and (fmt := detect_format(ln.obj)) is not None:
                yield ln.number, fmt, ln.obj
        return
    for i, obj in enumerate(source, start=1):
        if isinstance(obj, dict) and (fmt := detect_format(obj)) is not None:
            yield i, fmt, obj


def _index(path: Path) -> _Index:
    exact, near, lines = array("q"), array("q"), array("q")
    for line, fmt, obj in _examples(path):
        e, n = input_hashes(fmt, obj)
        exact.append(e)
        near.append(n)
        lines.append(line)
    line_arr = np.frombuffer(lines, dtype=np.int64)
    sorted_parts: list[np.ndarray] = []
    for hashes in (exact, near):
        arr = np.frombuffer(hashes, dtype=np.int64)
        order = np.argsort(arr, kind="stable")  # stable: among equal inputs the first line comes first
        sorted_parts += [arr[order], line_arr[order]]
    return _Index(path, *sorted_parts)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
    except OSError:
        return False
    from ftkit.manifest import file_sha256

    return file_sha256(a) == file_sha256(b)


def check_leakage(
    checked: str | Path | Sequence[dict[str, Any]],
    against: Mapping[str, str | Path | None],
    *,
    role: str = "test",
    max_examples: int = MAX_EXAMPLES,
) -> LeakageReport:
    """Count the examples of ``checked`` whose input also appears in each file of ``against``.

    Example:
        >>> report = check_leakage("test.jsonl", {"train": "train.jsonl", "validation": "val.jsonl"})
        >>> report.leaked, report.overlapping, report.overlaps[0].exact

    Args:
        checked: the validation or test file, or its rows.
        against: ``{role: path}`` of the files the model learnt from (None entries are skipped).
        role: what ``checked`` is for, in messages.
        max_examples: how many matching examples to keep per file and kind.
    """
    indexes: dict[str, _Index] = {}
    missing: list[str] = []
    for name, p in against.items():
        if p is None:
            continue
        if not Path(p).is_file():
            missing.append(str(p))
            continue
        indexes[name] = _index(Path(p))
    found = {name: _Found() for name in indexes}
    examples = overlapping = 0
    for line, fmt, obj in _examples(checked):
        examples += 1
        e, n = input_hashes(fmt, obj)
        hit = False
        for name, idx in indexes.items():
            match = idx.find(e, n)
            if match is None:
                continue
            hit = True
            kind, other_line = match
            f = found[name]
            f.counts[kind] += 1
            if sum(x.kind == kind for x in f.examples) < max_examples:
                ident = obj.get("id") if fmt == "classification" else None
                f.examples.append(
                    OverlapExample(
                        line=line,
                        id=None if ident is None else str(ident),
                        kind=kind,
                        other_line=other_line,
                        text=_preview(fmt, obj),
                    )
                )
        overlapping += hit
    checked_path = Path(checked) if isinstance(checked, (str, Path)) else None
    overlaps = [
        Overlap(
            role=name,
            path=str(idx.path),
            same_file=checked_path is not None and _same_file(checked_path, idx.path),
            exact=found[name].counts["exact"],
            near=found[name].counts["near"],
            examples=found[name].examples,
        )
        for name, idx in indexes.items()
    ]
    return LeakageReport(
        path=str(checked_path) if checked_path is not None else "<rows>",
        role=role,
        examples=examples,
        overlapping=overlapping,
        overlaps=overlaps,
        missing=missing,
    )


def guard_validation(train: str | Path, validation: str | Path | None, *, allow: bool = False) -> dict[str, Any]:
    """Refuse validation data that repeats training inputs, unless ``allow``; the manifest entry otherwise.

    Validation that holds training examples makes validation loss, early stopping and any metric on it
    look better than the model is. The check runs when a job is created.

    Returns:
        ``{"leakage": {...}}`` for the job's manifest (counts, example lines, whether it was allowed),
        or ``{}`` when there is no validation file.

    Raises:
        DatasetError: the validation file is the training file, or shares inputs with it, and
            ``allow`` is False. The message gives counts by kind and example lines.
    """
    if validation is None:
        return {}
    report = check_leakage(validation, {"train": train}, role="validation", max_examples=3)
    if report.leaked and not allow:
        raise DatasetError(
            report.summary()
            + "; validation metrics would be inflated. Remove the shared examples (ftkit stats TRAIN --test VALID "
            "lists them), or set allow_overlap = true in the spec to keep a deliberate overlap (it is recorded)"
        )
    o = report.overlaps[0]
    return {
        "leakage": {
            "validation_vs_train": {
                "examples": report.examples,
                "same_file": o.same_file,
                "exact": o.exact,
                "near": o.near,
                "lines": [e.line for e in o.examples],
                "allowed": allow,
            }
        }
    }
