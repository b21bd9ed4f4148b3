"""Streaming JSONL reading that reports framing problems instead of crashing on them."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ftkit.data.issues import Issue
from ftkit.errors import DatasetError, FtkitError

_BOM = b"\xef\xbb\xbf"
# Issues that lose nothing: a BOM is stripped and the line still parsed; a blank line holds no data.
_HARMLESS = frozenset({"bom", "blank_line"})


def require_file(path: str | Path, error: type[FtkitError] = DatasetError, missing: str = "no such file") -> Path:
    """``path`` (``~`` expanded) when it is an existing file, else ``error`` naming it.

    The error's cause is the matching ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``), so
    the command line can tell "this path is wrong" from "this file's content is wrong".
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{p}: is a folder, not a file") from IsADirectoryError(errno.EISDIR, "Is a directory", str(p))
    if not p.is_file():
        raise error(f"{p}: {missing}") from FileNotFoundError(errno.ENOENT, "No such file", str(p))
    return p


@dataclass(slots=True)
class Line:
    """One line of a JSONL file: the parsed object, or the issue that stopped parsing."""

    number: int
    raw: bytes
    obj: Any = None
    issue: Issue | None = None


def iter_lines(path: str | Path, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[Line]:
    """Yield every non-trailing line of ``path`` parsed as JSON, one at a time (flat memory).

    Framing problems (BOM, invalid UTF-8, blank lines, bad JSON, a cut-off last line) come
    back as ``Line.issue``; the caller decides whether to go on. A BOM is reported and then
    ignored so the rest of the line is still checked.

    ``start``/``end`` (byte offsets on line boundaries) and ``first_line`` read one part of the file.

    Raises:
        DatasetError: the file does not exist or cannot be opened.
    """
    p = Path(path)
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed in the finally below, while yielding
    except OSError as e:
        raise DatasetError(f"{p}: cannot open: {e.strerror or e}") from e
    try:
        f.seek(start)
        pos = start
        number = first_line - 1
        for raw in f:
            if end is not None and pos >= end:
                break
            pos += len(raw)
            number += 1
            ended = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n")
            if number == 1 and start == 0 and body.startswith(_BOM):
                yield Line(
                    number,
                    body,
                    issue=Issue(
                        line=1, code="bom", message="file starts with a UTF-8 BOM; save it as UTF-8 without BOM"
                    ),
                )
                body = body[len(_BOM) :]
            if not body.strip():
                yield Line(number, body, issue=Issue(line=number, code="blank_line", message="blank line"))
                continue
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                yield Line(number, body, issue=_parse_issue(number, body, str(e), ended))
                continue
            yield Line(number, body, obj=obj)
    finally:
        f.close()


def iter_objects(path: str | Path) -> Iterator[Line]:
    """Every JSON object of ``path`` with its line, for commands that copy data: none is dropped silently.

    Blank lines and a leading BOM are skipped (they hold no data).

    Raises:
        DatasetError: at the first line that is not valid JSON or not an object, naming file and line;
            ``ftkit validate`` lists them all.
    """
    for line in iter_lines(path):
        if line.issue is not None:
            if line.issue.code in _HARMLESS:
                continue
            raise DatasetError(f"{path}:{line.number}: {line.issue.code}: {line.issue.message}")
        if not isinstance(line.obj, dict):
            raise DatasetError(
                f"{path}:{line.number}: not_an_object: line is a JSON {type(line.obj).__name__}, not an object"
            )
        yield line


def _parse_issue(number: int, body: bytes, error: str, ended: bool) -> Issue:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return Issue(line=number, code="invalid_utf8", message=f"invalid UTF-8 at byte {e.start}")
    if not ended:
        return Issue(line=number, code="truncated_last_line", message=f"last line is cut off: {error}")
    return Issue(line=number, code="invalid_json", message=f"invalid JSON: {error}")
