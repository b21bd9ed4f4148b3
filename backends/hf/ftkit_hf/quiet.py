"""Keep transformers' and peft's own output out of ftkit's (see :mod:`ftkit.verbosity`).

Called before a model is loaded in ftkit's process (a predictor, a base model, a GGUF
conversion). Unless verbose: tqdm bars off; records of the ``transformers``, ``peft`` and
``huggingface_hub`` loggers (WARNING and up) and Python warnings raised inside those packages go to
``$FTKIT_HOME/logs/libraries.log``, so a user who wants them can read them there.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from ftkit.verbosity import libraries_log, verbose_requested

LIBRARIES = ("transformers", "peft", "huggingface_hub", "accelerate")
_installed: Path | None = None  # the log file the handlers write to, once installed


def quiet_libraries() -> None:
    """Route the libraries' output to the log file (once per process and log path); nothing when verbose."""
    global _installed
    if verbose_requested():
        return
    if not getattr(warnings.showwarning, "_ftkit_quiet", False):  # once, or again if someone restored theirs
        warnings.showwarning = _showwarning_to_log(warnings.showwarning)
    log = libraries_log()
    if _installed == log:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # also the Hub client's bars
    hf_logging.disable_default_handler()  # transformers' own stderr handler
    log.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log, delay=True, encoding="utf-8")  # no file until something is said
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_ftkit_quiet", False)]:
            logger.removeHandler(old)  # FTKIT_HOME changed (tests): the new log replaces the old one
        handler._ftkit_quiet = True  # type: ignore[attr-defined]  # marks ours for the line above
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    _installed = log


def _showwarning_to_log(original: Any) -> Any:
    """``warnings.showwarning`` that logs warnings raised inside the libraries and shows the rest as before."""

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if file is None and not verbose_requested() and _inside_libraries(filename):
            logging.getLogger("transformers").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)
            return
        original(message, category, filename, lineno, file, line)

    show._ftkit_quiet = True  # type: ignore[attr-defined]
    return show


def _inside_libraries(filename: str) -> bool:
    """True for a file of one of the libraries' installed packages."""
    path = Path(filename)
    for name in LIBRARIES:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None)
        if where and path.is_relative_to(Path(where).parent):
            return True
    return False
