"""Where ftkit keeps its state: the job registry, job folders and caches."""

from __future__ import annotations

import os
from pathlib import Path


def ftkit_home() -> Path:
    """The folder for the job registry and job folders: ``$FTKIT_HOME`` or ``~/.ftkit``."""
    return Path(os.environ.get("FTKIT_HOME") or Path.home() / ".ftkit").expanduser()


def cache_dir() -> Path:
    """The folder for converted models and encodings: ``$FTKIT_CACHE`` or ``~/.cache/ftkit``."""
    return Path(os.environ.get("FTKIT_CACHE") or Path.home() / ".cache" / "ftkit").expanduser()
