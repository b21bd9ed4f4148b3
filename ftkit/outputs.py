"""The files a command is about to write, checked all together before the first one is written.

A command that writes several files (``split``'s three parts, ``eval``'s report, calibrator and
predictions) must not replace one and then refuse the next: every target is checked first, and
nothing is written unless all of them pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ftkit.atomic import is_special_file
from ftkit.errors import ConfigError


def check_outputs(
    outputs: Iterable[str | Path],
    *,
    inputs: Iterable[str | Path | None] = (),
    force: bool = False,
) -> list[Path]:
    """Refuse, before anything is written, every output that would lose something the user owns.

    Refused always: an output that is one of ``inputs`` (same path, symbolic or hard link), two
    outputs that are the same file, an output that is a folder. Refused unless ``force``: an output
    that exists as a file. A device or a pipe (``/dev/stdout``) is written into and is always fine.

    Args:
        outputs: the paths about to be written.
        inputs: the files the command reads (``None`` entries are skipped).
        force: replace existing files (``--force`` on the command line).

    Returns:
        The outputs as paths, in order.

    Raises:
        ConfigError: naming the first output refused and why.
    """
    outs = [Path(p).expanduser() for p in outputs]
    ins = [Path(p).expanduser() for p in inputs if p is not None]
    for i, out in enumerate(outs):
        if is_special_file(out):
            continue  # written into, never replaced
        for src in ins:
            if _same_file(out, src):
                raise ConfigError(f"{out}: refusing to overwrite the input file {src}")
        for other in outs[:i]:
            if _same_file(out, other):
                raise ConfigError(f"{out}: the same file is given for two outputs")
        if out.is_dir():
            raise ConfigError(f"{out}: is a folder; give a file path")
        if out.exists() and not force:
            raise ConfigError(f"{out}: already exists; refusing to replace it without --force (force=True)")
    return outs


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # one of them does not exist yet
        return False
