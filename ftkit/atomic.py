"""Atomic writes: a reader sees the old file or the new one, never half of either.

Each file is written to a temporary file in the same folder, flushed to disk, then renamed over
the target. A failure (a full disk, a file-size limit, an interrupt) removes the temporary file
and leaves the target as it was. The ``OSError`` that reaches the caller names the target.

Two kinds of target are not files to replace: a symbolic link is followed (the file it points to
is replaced, the link stays), and a device or pipe (``/dev/stdout``, a FIFO) is written into
directly, since renaming over it would replace the device node itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    write_files_atomically({Path(path): data})


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_special_file(path: str | Path) -> bool:
    """True when ``path`` exists and is neither a regular file nor a folder (a device, a pipe, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_files_atomically(files: Mapping[Path, bytes]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every temporary file is written and flushed before the first rename, so a full disk while
    writing the last one leaves every target untouched. (The renames themselves need no space.)

    Raises:
        OSError: with ``filename`` set to the target that could not be written.
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path, data in files.items():
            target = Path(os.path.realpath(path))
            if is_special_file(target):
                _write_in_place(target, data)
                continue
            staged.append((target, _stage(target, data)))
        while staged:
            target, tmp = staged[0]
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise _naming(e, target) from e
            staged.pop(0)
    finally:
        for _, tmp in staged:  # the ones not renamed
            Path(tmp).unlink(missing_ok=True)


def _stage(target: Path, data: bytes) -> str:
    """A flushed temporary copy of ``data`` beside ``target``; its path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _naming(e, target) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, target) from e
        raise
    return tmp


def _write_in_place(target: Path, data: bytes) -> None:
    try:
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
    except OSError as e:
        raise _naming(e, target) from e


def _naming(e: OSError, target: Path) -> OSError:
    """The same error (same subclass, same errno) with the target as its file name."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(target))
