"""A client killed (SIGKILL) right after OpenAI created its job, before ftkit recorded the id.

The real openai client against the loopback emulator. The job is left "validating" with a dead submitter:
the next start() adopts the job OpenAI has (one job, not two paid ones), and a cancel() cancels it there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import openai
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import TEST_KEY, write_classification

from ftkit import FineTuneJob, JobSpec, JobStatus

CLIENT = textwrap.dedent(
    """
    import os, signal, sys
    import ftkit
    from ftkit_openai.backend import OpenAIBackend

    real_submit = OpenAIBackend.submit

    def submit_then_die(self, ctx):
        real_submit(self, ctx)
        os.kill(os.getpid(), signal.SIGKILL)  # no handler runs: the registry never hears of the job

    OpenAIBackend.submit = submit_then_die
    ftkit.FineTuneJob.get(sys.argv[1]).start()
    """
)


def _killed_mid_start(tmp_path: Path) -> FineTuneJob:
    train = write_classification(tmp_path / "train.jsonl", 30, seed=21)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai")
    client = subprocess.run([sys.executable, "-c", CLIENT, job.id], env=dict(os.environ), capture_output=True,
                            text=True, timeout=120)
    assert client.returncode == -9, client.stderr
    stuck = FineTuneJob.get(job.id)
    assert stuck.status is JobStatus.VALIDATING and stuck.backend_job_id is None
    return stuck


def _jobs_at_openai(emulator: EmulatorServer, ftkit_id: str) -> list[openai.types.fine_tuning.FineTuningJob]:
    client = openai.OpenAI(api_key=TEST_KEY, base_url=emulator.base_url)
    return [j for j in client.fine_tuning.jobs.list(limit=100) if (j.metadata or {}).get("ftkit_job_id") == ftkit_id]


def test_start_adopts_the_job_a_killed_client_created(tmp_path: Path, emulator: EmulatorServer) -> None:
    stuck = _killed_mid_start(tmp_path)
    [remote] = _jobs_at_openai(emulator, stuck.id)
    stuck.start()
    assert stuck.status is JobStatus.QUEUED and stuck.backend_job_id == remote.id
    assert stuck.wait(timeout=60, poll_interval=0.02) is JobStatus.SUCCEEDED
    assert len(_jobs_at_openai(emulator, stuck.id)) == 1  # adopted, not created a second time


def test_cancel_stops_the_job_a_killed_client_created(tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.settings.step_seconds = 0.5  # still running when the cancel arrives
    stuck = _killed_mid_start(tmp_path)
    assert stuck.cancel() is JobStatus.CANCELLED
    [remote] = _jobs_at_openai(emulator, stuck.id)
    assert remote.status == "cancelled" and stuck.record.backend_job_id == remote.id
