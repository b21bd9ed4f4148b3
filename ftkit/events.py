"""The one status model and the one event model that every backend maps onto."""

from __future__ import annotations

import enum
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

EventKind = Literal["message", "metrics", "checkpoint", "cost"]
EventLevel = Literal["debug", "info", "warning", "error"]


class JobStatus(enum.StrEnum):
    """Where a job is in its life. Every backend maps its own statuses onto these."""

    CREATED = "created"
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """True while the backend is (or may be) spending on the job."""
        return self in (JobStatus.VALIDATING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Event(BaseModel):
    """One thing that happened to a job.

    ``kind`` says how to read ``data``:

    - ``message``: free text, ``data`` optional.
    - ``metrics``: ``data`` holds any of ``step``, ``total_steps``, ``epoch``, ``train_loss``,
      ``valid_loss``, ``learning_rate``, ``tokens_per_second``, ``train_mean_token_accuracy``...
    - ``checkpoint``: ``data`` holds ``step`` and ``path`` or ``model``.
    - ``cost``: ``data`` holds ``usd`` and what it was computed from.

    ``key`` is the backend's own id for the event (an OpenAI event id, a line number of the
    worker's log) so the registry never stores the same event twice.
    """

    time: float = Field(default_factory=time.time, description="Unix seconds.")
    level: EventLevel = "info"
    kind: EventKind = "message"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = Field(default=None, description="Backend-given id used to deduplicate.")


def map_status(table: dict[str, JobStatus], vendor_status: str | None) -> JobStatus | None:
    """Map a vendor status through an explicit table; None for statuses the table lacks.

    Backends keep one such table each, and a test asserts it covers every vendor status.
    An unknown status is never silently treated as running: the caller records an error event.
    """
    if vendor_status is None:
        return None
    return table.get(vendor_status)
