"""Capability flags are enforced by FineTuneJob: an operation a backend does not declare never reaches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from ftkit import FineTuneJob, JobSpec, JobStatus, register_backend
from ftkit.backend import Capabilities, JobContext
from ftkit.errors import ConfigError, JobFailedError
from ftkit.testing import FakeBackend
from tests.helpers import spam_rows, write_jsonl

CALLS: list[str] = []


class UndeclaredBackend(FakeBackend):
    """Implements pause and resume but declares neither: the flags, not the methods, decide."""

    name: ClassVar[str] = "fake-undeclared"
    capabilities = Capabilities(tasks=frozenset({"classification"}), poll_interval=0.01)

    def pause(self, ctx: JobContext) -> None:
        CALLS.append("pause")

    def resume(self, ctx: JobContext) -> None:
        CALLS.append("resume")


class PausingBackend(UndeclaredBackend):
    name: ClassVar[str] = "fake-pausing"
    capabilities = Capabilities(tasks=frozenset({"classification"}), poll_interval=0.01, supports_pause=True)


register_backend(UndeclaredBackend)
register_backend(PausingBackend)


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def _failed_job(tmp_path: Path, backend: str) -> FineTuneJob:
    spec = JobSpec(task="classification", train=write_jsonl(tmp_path / "train.jsonl", spam_rows()))
    job = FineTuneJob.create(spec, backend=backend, options={"steps": 3, "fail_at_step": 1, "seconds_per_step": 0.01})
    job.start()
    with pytest.raises(JobFailedError):
        job.wait(timeout=30)
    return job


def test_pause_not_declared_is_refused_before_the_backend(tmp_path: Path) -> None:
    job = _failed_job(tmp_path, "fake-undeclared")
    with pytest.raises(ConfigError, match=r"cannot pause jobs \(supports_pause is false\)"):
        job.pause()
    assert CALLS == [] and job.refresh() is JobStatus.FAILED


def test_resume_from_checkpoint_not_declared_is_refused(tmp_path: Path) -> None:
    job = _failed_job(tmp_path, "fake-pausing")  # pausing is not restarting a failed job from a checkpoint
    with pytest.raises(ConfigError, match=r"restart a failed job from a checkpoint"):
        job.resume()
    assert CALLS == [] and job.refresh() is JobStatus.FAILED


def test_declared_pause_reaches_the_backend(tmp_path: Path) -> None:
    job = _failed_job(tmp_path, "fake-pausing")
    job.pause()
    assert CALLS == ["pause"]


# The command line turns the refusal into its one-line exit code 2 (the command cannot run as given).
SCRIPT = """
import sys
from ftkit.cli_errors import report
from ftkit.errors import ConfigError, JobFailedError
sys.exit(report(ConfigError("backend 'x' cannot pause jobs (supports_pause is false); job j is left as it is")))
"""


def test_refusal_is_exit_code_2_without_a_traceback() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot pause jobs" in r.stderr and "Traceback" not in r.stderr
