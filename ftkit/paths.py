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


def measurements_dir() -> Path:
    """The folder for what jobs measured on this machine (training speeds): ``$FTKIT_MEASUREMENTS``,
    or ``measurements`` in the cache folder.

    A separate variable from ``$FTKIT_CACHE`` so that a test suite can keep its own measurements (its
    tiny models train at speeds no real job reaches) while it still shares the converted models.
    """
    own = os.environ.get("FTKIT_MEASUREMENTS")
    return Path(own).expanduser() if own else cache_dir() / "measurements"
