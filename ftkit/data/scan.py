"""One streaming pass over a JSONL file: validation issues and statistics together.

Memory stays flat: examples are checked and token-counted in chunks, issues are kept up to a
cap per code (with full counts), and per-example figures live in compact numpy arrays.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from ftkit.data.formats import Format, check, detect_format, label_str
from ftkit.data.issues import Issue
from ftkit.data.leakage import input_hashes
from ftkit.data.reader import iter_lines
from ftkit.data.targets import Target

CHUNK = 2048
PARALLEL_MIN_BYTES = 16 * 2**20
MAX_ISSUES_PER_CODE = 100


class ValidationReport(BaseModel):
    """Every problem found in one file. ``ok`` is True when there are no errors."""

    path: str
    format: Format | None
    examples: int
    target: str | None = None
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
    error_counts: dict[str, int] = Field(default_factory=dict)
    warning_counts: dict[str, int] = Field(default_factory=dict)
    label_counts: dict[str, int] = Field(default_factory=dict)
    total_tokens: int | None = Field(default=None, description="Tokens of the valid examples, when counted.")

    @property
    def ok(self) -> bool:
        """True when the file has no errors (warnings allowed)."""
        return not self.error_counts

    def summary(self, max_errors: int = 10) -> str:
        """A few lines for an exception message: counts, then the first errors with file:line."""
        total = sum(self.error_counts.values())
        head = f"{self.path}: {total} error(s) in {self.examples} example(s)"
        lines = [f"  {self.path}:{e.line or '-'}: {e.code}: {e.message}" for e in self.errors[:max_errors]]
        more = [f"  ... and {total - len(lines)} more"] if total > len(lines) else []
        return "\n".join([head, *lines, *more])

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` shape: path, format, examples, errors, warnings (+ counts)."""
        return self.model_dump(mode="json")


class TokenStats(BaseModel):
    """Distribution of tokens per example."""

    total: int
    min: int
    max: int
    mean: float
    median: float
    p5: float
    p95: float


class DatasetStats(BaseModel):
    """What ``ftkit stats`` reports for one file."""

    path: str
    format: Format | None
    examples: int
    tokenizer: str
    tokens: TokenStats | None
    billed_tokens_per_epoch: int
    over_limit: int
    limit: int | None
    label_counts: dict[str, int]
    duplicates: int
    duplicate_lines: list[int]
    messages_per_example: TokenStats | None = None
    overlap: dict[str, Any] | None = None


class ScanResult:
    """Raw outcome of a scan: the report, per-example token counts and content hashes."""

    def __init__(
        self,
        report: ValidationReport,
        tokens: np.ndarray,
        hashes: np.ndarray,
        input_hashes: np.ndarray,
        lines: np.ndarray,
        n_messages: np.ndarray,
        limit: int | None,
        tokenizer: str,
    ) -> None:
        self.report = report
        self.tokens = tokens
        self.hashes = hashes
        self.input_hashes = input_hashes
        self.lines = lines
        self.n_messages = n_messages
        self.limit = limit
        self.tokenizer = tokenizer


def _hash(value: Any) -> int:
    # Python's own 64-bit hash of the canonical JSON: fast, and only ever compared within one process.
    return hash(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


@dataclass
class _Part:
    """What one byte range of a file gave: issues (capped per code), counts and per-example arrays."""

    issues: dict[str, list[Issue]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    label_counts: Counter[str] = field(default_factory=Counter)
    examples: int = 0
    # Compact arrays, not lists of Python ints: a million examples cost megabytes, not hundreds.
    tokens: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    n_messages: array[int] = field(default_factory=lambda: array("q"))
    hashes: array[int] = field(default_factory=lambda: array("q"))
    input_hashes: array[int] = field(default_factory=lambda: array("q"))

    def add(self, issue: Issue) -> None:
        self.counts[issue.code] += 1
        bucket = self.issues.setdefault(issue.code, [])
        if len(bucket) < MAX_ISSUES_PER_CODE:
            bucket.append(issue)

    def merge(self, other: _Part) -> None:
        for bucket in other.issues.values():
            for issue in bucket:
                self.add(issue)
        self.counts.update({c: n - len(other.issues.get(c, [])) for c, n in other.counts.items()})
        self.label_counts.update(other.label_counts)
        self.examples += other.examples
        for name in ("tokens", "lines", "n_messages", "hashes", "input_hashes"):
            getattr(self, name).extend(getattr(other, name))


def _scan_range(
    path: Path,
    target: Target,
    allowed: frozenset[str] | None,
    count_tokens: bool,
    start: int,
    end: int | None,
    first_line: int,
    file_format: Format | None,
    task: str | None = None,
) -> _Part:
    """Check, count and hash every line of one byte range of the file."""
    part = _Part()
    pending: list[tuple[Format, dict[str, Any], int]] = []

    def flush() -> None:
        sizes = target.count([(f, o) for f, o, _ in pending]) if count_tokens else [0] * len(pending)
        for (fmt, obj, line), n in zip(pending, sizes, strict=True):
            part.tokens.append(n)
            for issue in target.check_example(fmt, obj, line, n):
                part.add(issue)
        pending.clear()

    for ln in iter_lines(path, start=start, end=end, first_line=first_line):
        if ln.issue is not None:
            part.add(ln.issue)
            if ln.obj is None:
                continue
        obj = ln.obj
        if not isinstance(obj, dict):
            part.add(Issue(line=ln.number, code="not_an_object", message=f"line is a JSON {type(obj).__name__}"))
            continue
        fmt = _detect(obj, task, file_format)
        if fmt is None:
            part.add(Issue(line=ln.number, code="unknown_format", message=f"keys {sorted(obj)[:6]} match no format"))
            continue
        if file_format is None:
            file_format = fmt
        elif fmt != file_format:
            part.add(Issue(line=ln.number, code="mixed_formats", message=f"{fmt} example in a {file_format} file"))
            continue
        part.examples += 1
        found = check(fmt, obj, ln.number, allowed)
        for issue in found:
            part.add(issue)
        if fmt == "classification" and "label" in obj:
            part.label_counts[label_str(obj["label"])] += 1
        # Exact duplicates: the same line for structured formats, the same (text, label) for classification.
        part.hashes.append(hash(ln.raw) if fmt != "classification" else _hash([obj.get("text"), obj.get("label")]))
        # The input normalised the way the leakage guard compares it: overlap counts exact and near matches.
        part.input_hashes.append(input_hashes(fmt, obj)[1])
        part.lines.append(ln.number)
        msgs = obj.get("messages") if fmt == "chat" else None
        part.n_messages.append(len(msgs) if isinstance(msgs, list) else 0)
        if any(i.level == "error" for i in found):
            part.tokens.append(0)  # keep arrays aligned; broken examples are not counted
            continue
        pending.append((fmt, obj, ln.number))
        if len(pending) >= CHUNK:
            flush()
    flush()
    return part


# Set in the parent just before forking the worker pool; forked workers inherit it (and the
# tokenizer already loaded) instead of unpickling a tokenizer per task.
_FORK_ARGS: tuple[Any, ...] = ()


def _scan_range_in_worker(start: int, end: int | None, first_line: int) -> _Part:
    path, target, allowed, count_tokens, file_format, task = _FORK_ARGS
    return _scan_range(path, target, allowed, count_tokens, start, end, first_line, file_format, task)


def _detect(obj: dict[str, Any], task: str | None, file_format: Format | None) -> Format | None:
    """The line's format; a ``text`` line in a classification file (or job) is a classification line without
    its label, so that it is reported as ``missing_label`` rather than as a different format."""
    fmt = detect_format(obj)
    if fmt == "text" and (file_format == "classification" or task == "classification"):
        return "classification"
    return fmt


def _ranges(path: Path, n: int) -> list[tuple[int, int | None, int]]:
    """Split a file into ``n`` byte ranges on line boundaries, with each range's first line number."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        cuts = [0]
        for k in range(1, n):
            f.seek(max(size * k // n, cuts[-1]))
            f.readline()  # move to the start of the next line
            cuts.append(f.tell())
        cuts.append(size)
        firsts, line, prev = [], 1, 0
        for c in cuts[:-1]:
            f.seek(prev)
            while prev < c:  # count newlines in blocks: memory stays flat on a file of any size
                block = f.read(min(1 << 24, c - prev))
                line += block.count(b"\n")
                prev += len(block)
            firsts.append(line)
    return [(cuts[i], cuts[i + 1], firsts[i]) for i in range(n) if cuts[i] < cuts[i + 1]]


def _first_format(path: Path, task: str | None = None) -> Format | None:
    """The file's format: its first example's, except that a file starting with unlabelled ``text`` lines is a
    classification file when a labelled line follows within ``_LOOKAHEAD`` examples (its first lines then
    lack their labels: ``missing_label``, not ``mixed_formats`` on every labelled line)."""
    first: Format | None = None
    seen = 0
    for ln in iter_lines(path):
        if not isinstance(ln.obj, dict) or (fmt := _detect(ln.obj, task, None)) is None:
            continue
        if first is None:
            first = fmt
            if fmt != "text":
                return fmt
        elif fmt == "classification":
            return fmt
        seen += 1
        if seen >= _LOOKAHEAD:
            break
    return first


_LOOKAHEAD = 1000


def scan(
    path: str | Path,
    target: Target,
    *,
    labels: list[str] | None = None,
    task: str | None = None,
    count_tokens: bool = True,
) -> ScanResult:
    """Read ``path`` once: check every line, count tokens, hash contents.

    Files over ``PARALLEL_MIN_BYTES`` are split on line boundaries and scanned by one forked
    process per core; the result is the same as a sequential scan.
    """
    global _FORK_ARGS
    path = Path(path)
    allowed = frozenset(labels) if labels else None
    workers = min(os.cpu_count() or 1, 8)
    size = path.stat().st_size if path.exists() else 0
    if workers > 1 and size >= PARALLEL_MIN_BYTES and "fork" in mp.get_all_start_methods():
        file_format = _first_format(path, task)
        _FORK_ARGS = (path, target, allowed, count_tokens, file_format, task)
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.starmap(_scan_range_in_worker, _ranges(path, workers))
        finally:
            _FORK_ARGS = ()
        part = parts[0]
        for other in parts[1:]:
            part.merge(other)
    else:
        file_format = _first_format(path, task)
        part = _scan_range(path, target, allowed, count_tokens, 0, None, 1, file_format, task)
        file_format = file_format if part.examples else None
    add, counts, examples, label_counts = part.add, part.counts, part.examples, part.label_counts
    tokens, lines, hashes = part.tokens, part.lines, part.hashes

    if examples == 0 and not counts:
        add(Issue(line=None, code="empty_file", message="the file holds no examples"))
    if task is not None and file_format is not None and file_format != task:
        add(Issue(line=None, code="format_mismatch", message=f"a {task} job needs {task} data, not {file_format}"))
    if file_format == "classification" and examples and len(label_counts) < 2:
        add(Issue(line=None, code="too_few_labels", message=f"only one label present: {list(label_counts)}"))
    for issue in target.check_file(file_format, examples):
        add(issue)

    hash_arr = np.frombuffer(hashes, dtype=np.int64)
    if len(hash_arr):
        _, first = np.unique(hash_arr, return_index=True)
        line_arr = np.frombuffer(lines, dtype=np.int64)
        dup_mask = np.ones(len(hash_arr), dtype=bool)
        dup_mask[first] = False
        for line in line_arr[dup_mask][:MAX_ISSUES_PER_CODE]:
            add(Issue(line=int(line), code="duplicate_example", message="same example as an earlier line"))
        counts["duplicate_example"] = int(dup_mask.sum())
    issues = part.issues
    input_hashes, n_messages = part.input_hashes, part.n_messages

    ordered = sorted((i for bucket in issues.values() for i in bucket), key=lambda i: (i.line or 0, i.code))
    report = ValidationReport(
        path=str(path),
        format=file_format,
        examples=examples,
        target=None if type(target) is Target else target.name,
        errors=[i for i in ordered if i.level == "error"],
        warnings=[i for i in ordered if i.level == "warning"],
        error_counts={c: n for c, n in sorted(counts.items()) if n and _level(c) == "error"},
        warning_counts={c: n for c, n in sorted(counts.items()) if n and _level(c) == "warning"},
        label_counts=dict(sorted(label_counts.items())),
        total_tokens=int(np.frombuffer(tokens, dtype=np.int64).sum()) if count_tokens else None,
    )
    return ScanResult(
        report,
        tokens=np.frombuffer(tokens, dtype=np.int64),
        hashes=hash_arr,
        input_hashes=np.frombuffer(input_hashes, dtype=np.int64),
        lines=np.frombuffer(lines, dtype=np.int64),
        n_messages=np.frombuffer(n_messages, dtype=np.int64),
        limit=target.max_tokens,
        tokenizer=target.name,
    )


def _level(code: str) -> str:
    from ftkit.data.issues import CODES

    return CODES[code][0]


def distribution(values: np.ndarray) -> TokenStats | None:
    """Summary statistics of a non-empty integer array (None when empty)."""
    if len(values) == 0:
        return None
    return TokenStats(
        total=int(values.sum()),
        min=int(values.min()),
        max=int(values.max()),
        mean=round(float(values.mean()), 2),
        median=float(np.median(values)),
        p5=float(np.percentile(values, 5)),
        p95=float(np.percentile(values, 95)),
    )


def build_stats(result: ScanResult, test: ScanResult | None = None) -> DatasetStats:
    """Statistics from a scan, with train/test overlap when a second scan is given."""
    tok = result.tokens
    limit = result.limit
    billed = int(np.minimum(tok, limit).sum()) if limit else int(tok.sum())
    dup_lines = [i.line for i in result.report.warnings if i.code == "duplicate_example" and i.line]
    overlap = None
    if test is not None:
        shared = np.isin(test.input_hashes, result.input_hashes)
        overlap = {
            "test_path": test.report.path,
            "test_examples": len(test.input_hashes),
            "overlapping": int(shared.sum()),
            "fraction": round(float(shared.mean()), 4) if len(shared) else 0.0,
            "test_lines": [int(x) for x in test.lines[shared][:MAX_ISSUES_PER_CODE]],
        }
    return DatasetStats(
        path=result.report.path,
        format=result.report.format,
        examples=result.report.examples,
        tokenizer=result.tokenizer,
        tokens=distribution(tok),
        billed_tokens_per_epoch=billed,
        over_limit=int((tok > limit).sum()) if limit else 0,
        limit=limit,
        label_counts=result.report.label_counts,
        duplicates=result.report.warning_counts.get("duplicate_example", 0),
        duplicate_lines=dup_lines,
        messages_per_example=distribution(result.n_messages) if result.report.format == "chat" else None,
        overlap=overlap,
    )
