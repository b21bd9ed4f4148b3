"""Tables as classification data: a CSV/TSV file or a pandas DataFrame becomes ``text``/``label`` rows.

Spreadsheets name their columns as they like (``review``, ``sentiment``), so the text and label
columns are chosen by name. Every row is checked before anything is written; a bad row is named
by its file and line (the line a record starts on, so a quoted field spread over several lines
does not shift the count) or by its DataFrame index, and all the bad rows are listed, not only the
first. Blank lines hold no data and are skipped, as in JSONL files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.data.formats import label_str
from ftkit.data.reader import require_file
from ftkit.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".tsv")
MAX_LISTED = 10  # problems listed in an error; the count is always complete


def is_table(path: str | Path) -> bool:
    """True for a ``.csv`` or ``.tsv`` file name."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def csv_rows(
    path: str | Path, *, text_col: str = "text", label_col: str = "label", labels: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The classification rows of a CSV file with a header (a ``.tsv`` file is tab-separated).

    Args:
        path: the CSV file; UTF-8 (a byte-order mark from a spreadsheet export is accepted).
        text_col: the header of the column holding the text.
        label_col: the header of the column holding the label.
        labels: when given, a label outside it is a bad row.

    Raises:
        DatasetError: the file is missing, not UTF-8, lacks a column, or has bad rows; the message
            names ``file:line`` for each (the first ``MAX_LISTED``) and counts them all.
    """
    p = require_file(path, DatasetError)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{p}:{line}: not UTF-8 (byte {data[e.start]:#04x}); save the file as UTF-8") from None
    delimiter = "\t" if p.suffix.lower() == ".tsv" else _sniff(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{p}:1: empty file: a header line naming the columns is needed") from None
    except csv.Error as e:
        raise DatasetError(f"{p}:1: not a CSV header: {e}") from None
    header = [h.strip() for h in header]
    columns = _columns(header, text_col, label_col, where=f"{p}:1")
    rows: list[tuple[str, dict[str, Any] | str]] = []  # in file order: a row, or what is wrong with it
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # an unclosed quote, a NUL byte
            rows.append((f"{p}:{start}", str(e)))
            break
        if not any(f.strip() for f in fields):
            start = reader.line_num + 1
            continue  # a blank line
        where = f"{p}:{start}"
        if len(fields) != len(header):
            rows.append((where, f"{len(fields)} fields where the header has {len(header)}"))
        else:
            rows.append((where, {"text": fields[columns[0]], "label": fields[columns[1]]}))
        start = reader.line_num + 1
    return _checked(rows, text_col, label_col, labels, source=str(p))


def frame_rows(
    frame: pd.DataFrame,
    *,
    text_col: str = "text",
    label_col: str = "label",
    labels: Sequence[str] | None = None,
    name: str = "DataFrame",
) -> list[dict[str, str]]:
    """The classification rows of a pandas DataFrame; a bad row is named by its index.

    Raises:
        DatasetError: a column is missing or rows are bad (missing, empty or non-text values).
    """
    header = [str(c) for c in frame.columns]
    _columns(header, text_col, label_col, where=name)
    rows: list[tuple[str, dict[str, Any] | str]] = []
    for index, text, label in zip(frame.index, frame[text_col], frame[label_col], strict=True):
        rows.append((f"{name} row {index!r}", _row(text, label, text_col, label_col)))
    return _checked(rows, text_col, label_col, labels, source=name)


def jsonl_rows(
    path: str | Path, *, text_col: str = "text", label_col: str = "label", labels: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The classification rows of a JSONL file whose keys are named otherwise (``review``, ``sentiment``).

    Raises:
        DatasetError: a line is not a JSON object (the first such line), or rows are bad (all listed).
    """
    from ftkit.data.reader import iter_objects

    p = require_file(path, DatasetError)
    rows = [
        (f"{p}:{line.number}", _row(line.obj.get(text_col), line.obj.get(label_col), text_col, label_col))
        for line in iter_objects(p)
    ]
    return _checked(rows, text_col, label_col, labels, source=str(p))


def _row(text: Any, label: Any, text_col: str, label_col: str) -> dict[str, Any] | str:
    """The row, or what is wrong with its values (a JSON key or a DataFrame cell may hold anything)."""
    if not isinstance(text, str):
        return f"{text_col!r} is {_kind(text)}, not text"
    if _missing(label) or isinstance(label, dict | list):
        return f"{label_col!r} is {_kind(label)}, not a label"
    return {"text": text, "label": label}


def _sniff(text: str) -> str:
    """The delimiter of a CSV file: comma, semicolon (European spreadsheets), tab or pipe."""
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _columns(header: list[str], text_col: str, label_col: str, where: str) -> tuple[int, int]:
    found = []
    for col, option in ((text_col, "--text-col"), (label_col, "--label-col")):
        if col not in header:
            raise DatasetError(f"{where}: no column {col!r} (columns: {', '.join(header)}); name it with {option}")
        found.append(header.index(col))
    return found[0], found[1]


def _checked(
    rows: Iterable[tuple[str, dict[str, Any] | str]],
    text_col: str,
    label_col: str,
    labels: Sequence[str] | None,
    source: str,
) -> list[dict[str, str]]:
    out = []
    problems = []
    allowed = set(labels) if labels else None
    for where, row in rows:
        if isinstance(row, str):
            problems.append(f"{where}: {row}")
            continue
        text, label = row["text"], label_str(row["label"]).strip()
        if not text.strip():
            problems.append(f"{where}: empty text in column {text_col!r}")
        elif not label:
            problems.append(f"{where}: empty label in column {label_col!r}")
        elif allowed is not None and label not in allowed:
            problems.append(f"{where}: label {label!r} is not one of {', '.join(labels or [])}")
        else:
            out.append({"text": text, "label": label})
    if problems:
        listed = problems[:MAX_LISTED]
        more = [f"... and {len(problems) - len(listed)} more"] if len(problems) > len(listed) else []
        raise DatasetError("; ".join([f"{source}: {len(problems)} bad row(s), nothing written", *listed, *more]))
    if not out:
        raise DatasetError(f"{source}: no rows under the header")
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN: pandas' empty cell


def _kind(value: Any) -> str:
    return "missing" if _missing(value) else type(value).__name__
