"""Atomic writes: a reader sees the old file or the new one, never half of either.

Each file is written to a temporary file in the same folder, flushed to disk, then renamed over
the target. A failure (a full disk, a file-size limit, an interrupt) removes the temporary file
and leaves the target as it was. The ``OSError`` that reaches the caller names the target.

Two kinds of target are not files to replace: a symbolic link is followed (the file it points to
is replaced, the link stays), and a device or pipe (``/dev/stdout``, a FIFO) is written into
directly, since renaming over it would replace the device node itself.

Permissions: ``mkstemp`` creates its file with mode 0600 whatever the umask, so the temporary file
is given the mode the target should end with before the rename. A new file gets what ``open`` would
give it (0666 less the umask); a file being replaced keeps its own mode (a user who made a report
group-readable, or a log private, keeps that). ``private=True`` is for files that hold secrets
(an SSH private key): always 0600.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

PRIVATE_MODE = 0o600


def atomic_write_bytes(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Args:
        path: The target; its folder is created when missing.
        data: The whole new content.
        private: Mode 0600 whatever the umask (a file that holds a secret); otherwise the umask decides.
    """
    write_files_atomically({Path(path): data}, private=private)


def atomic_write_text(path: str | Path, text: str, *, private: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``private`` as in :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), private=private)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which for a moment changes it for every thread;
    Linux publishes it in ``/proc/self/status``, so that is asked first.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(target: Path, private: bool) -> int:
    """The permission bits ``target`` should have once written."""
    if private:
        return PRIVATE_MODE
    try:
        return stat.S_IMODE(os.stat(target).st_mode)  # replacing a file keeps its mode
    except OSError:
        return 0o666 & ~current_umask()


def is_special_file(path: str | Path) -> bool:
    """True when ``path`` exists and is neither a regular file nor a folder (a device, a pipe, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_files_atomically(files: Mapping[Path, bytes], *, private: bool = False) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every temporary file is written and flushed before the first rename, so a full disk while
    writing the last one leaves every target untouched. (The renames themselves need no space.)
    Modes follow the umask, or stay 0600 with ``private`` (see the module docstring).

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
            staged.append((target, _stage(target, data, _final_mode(target, private))))
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


def _stage(target: Path, data: bytes, mode: int) -> str:
    """A flushed temporary copy of ``data`` beside ``target``, with permission bits ``mode``; its path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _naming(e, target) from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
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
