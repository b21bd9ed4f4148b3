"""Signals around the window where money is spent: SIGTERM interrupts set-up, nothing interrupts teardown.

While a machine is being set up, SIGTERM is raised as KeyboardInterrupt so the set-up's handler
destroys the machine (a plain SIGTERM would end the process with the machine running). Once that
teardown runs, a second Ctrl-C or SIGTERM must not cut it short: the signals are held until the
machine is verified gone, then the interruption goes on as it started.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM raise KeyboardInterrupt while the machine is being set up, so teardown runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def signals_held(what: str) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM (saying so on stderr) while ``what`` runs; yields the signals that came.

    Only the main thread can set handlers; elsewhere (a notebook's worker thread) signals reach the
    main thread, not this code, so there is nothing to hold.
    """
    came: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return

    def hold(signum: int, frame: Any) -> None:
        came.append(signum)
        print(f"ftkit: {what}; signal {signum} held until it is done", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, hold) for s in _HELD}
    try:
        yield came
    finally:
        for s, h in old.items():
            signal.signal(s, h)
