"""How much the libraries under ftkit (transformers, peft, the Hugging Face Hub client) may print.

Loading a model makes transformers print warnings and tqdm bars ("Loading weights") on stderr; in
a command's output they read as ftkit's own and bury what ftkit says. A backend that loads such
libraries in ftkit's process sends their log records to :func:`libraries_log` and switches their
bars off, unless ``FTKIT_VERBOSE=1`` (``ftkit --verbose``) asks for everything as the libraries
print it. A training worker's whole output already goes to its job's ``worker.log``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftkit.paths import ftkit_home

VERBOSE_ENV = "FTKIT_VERBOSE"


def verbose_requested() -> bool:
    """True when ``FTKIT_VERBOSE`` is set (not ``0``) or ``ftkit --verbose`` was given."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """Ask for the libraries' own output in this process and the processes it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def libraries_log() -> Path:
    """Where the libraries' warnings go when not verbose: ``$FTKIT_HOME/logs/libraries.log``."""
    return ftkit_home() / "logs" / "libraries.log"
