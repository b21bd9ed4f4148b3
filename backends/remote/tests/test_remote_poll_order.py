"""A worker that writes its final status and exits just after a poll read its status is not "unexplained".

The poll reads ``status.json``, then the exit code the wrapper writes once the worker is gone, then the
events. If the worker finishes between the first two reads, the poll sees "running" and an exit code; it
must read the status again before concluding the worker exited without one (that poll ends the job, so a
wrong conclusion would stick). The test makes every status read stale until the exit code exists, so the
poll that finishes the job is always one that met this interleaving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.follow import Following
from ftkit_remote.ssh import SshSession
from remote_testkit import remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.events import JobStatus


def test_status_written_just_before_exit_is_read_again(
    vast: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = Following._read_json
    seen = {"stale_with_exit_code": 0}

    async def stale_status(self: Following, s: SshSession, name: str) -> dict[str, Any] | None:
        out = await real_read(self, s, name)
        if name != "status.json" or not out or out.get("status") not in ("succeeded", "failed", "cancelled"):
            return out
        if seen["stale_with_exit_code"]:
            return out  # the poll's second look
        exit_code = (await s.read_from(f"{self.job}/exit_code", 0)).strip()
        if exit_code:
            seen["stale_with_exit_code"] += 1  # the poll will now read this exit code after "running"
        return {"status": "running"}

    monkeypatch.setattr(Following, "_read_json", stale_status)
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    job = FineTuneJob.create(spec, backend="remote", options=remote_options(vast))
    job.start()
    assert job.wait(poll_interval=0.2, timeout=120) is JobStatus.SUCCEEDED, job.record.error
    assert seen["stale_with_exit_code"] == 1
    assert [m["step"] for m in job.metrics()] == [1, 2, 3, 4]
    assert not vast.state.live()
