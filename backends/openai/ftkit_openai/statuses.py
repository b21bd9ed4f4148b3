"""OpenAI job statuses mapped onto ftkit's one status model, by an explicit table.

The spec's enum is ``validating_files, queued, running, succeeded, failed, cancelled``; the server
also sends ``paused`` (pause/resume). A test checks the table against the spec's enum.
"""

from __future__ import annotations

from ftkit.events import JobStatus

STATUS_TABLE: dict[str, JobStatus] = {
    "validating_files": JobStatus.VALIDATING,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

TERMINAL = frozenset(name for name, status in STATUS_TABLE.items() if status.is_terminal)

BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
