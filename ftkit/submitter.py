"""Who is submitting a job: the record that lets another process tell an abandoned start from one in flight.

``FineTuneJob.start`` writes this into the job's state when it moves the job to ``validating``, before
it asks the backend for anything. A ``validating`` job whose submitter is gone (killed, interrupted,
crashed) is then reconciled with the backend by the job's id instead of staying ``validating`` forever.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

import psutil
from pydantic import BaseModel, Field

# Jobs whose submit is running in this process right now. A KeyboardInterrupt leaves the process alive,
# so "the pid is alive" alone cannot tell a notebook's interrupted start from one still in flight.
_IN_FLIGHT: set[str] = set()


class Submitter(BaseModel):
    """The process that moved a job to ``validating`` and is (or was) calling the backend's submit."""

    pid: int
    host: str
    pid_started: float | None = Field(default=None, description="The process's start time: tells a reused pid.")
    at: float = Field(default_factory=time.time, description="When the submit began (Unix seconds).")
    interrupted: str | None = Field(default=None, description="Why the submit stopped early, when it said so.")

    @classmethod
    def current(cls) -> Submitter:
        """This process."""
        return cls(pid=os.getpid(), host=socket.gethostname(), pid_started=_create_time(os.getpid()))

    def gone(self, job_id: str) -> bool | None:
        """True when this submitter can no longer finish the submit of ``job_id``; None when it cannot be told.

        A process on another host cannot be looked at: that is None, and the caller must not take over.
        """
        if self.interrupted:
            return True
        if self.host != socket.gethostname():
            return None
        if self.pid == os.getpid():
            return job_id not in _IN_FLIGHT
        started = _create_time(self.pid)
        if started is None:
            return True
        # A pid reused by another process since: the submitter is gone all the same.
        return self.pid_started is not None and abs(started - self.pid_started) > 1.0

    def describe(self) -> str:
        """E.g. ``pid 4242 on host-a since 12:03:04``."""
        return f"pid {self.pid} on {self.host} since {time.strftime('%H:%M:%S', time.localtime(self.at))}"


@contextlib.contextmanager
def submitting(job_id: str) -> Iterator[None]:
    """Mark the submit of ``job_id`` as running in this process for the duration of the block."""
    _IN_FLIGHT.add(job_id)
    try:
        yield
    finally:
        _IN_FLIGHT.discard(job_id)


def _create_time(pid: int) -> float | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
