"""A client killed right after it started the worker (kill -9, before the registry knew) is reconciled.

The user's report: killing the client right after "created" left the job "validating" forever while the
detached worker trained on. Here the client process dies by SIGKILL at the worst moment, the instant
HFBackend.submit has started the real worker and before the registry records it; the next start() finds
that worker by the job folder instead of starting a second one, and the job is followed to its end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import ftkit
from ftkit import JobStatus

pytestmark = pytest.mark.slow

# The client: a real start whose process is killed (SIGKILL, no handler runs) as soon as submit returns.
CLIENT = textwrap.dedent(
    """
    import os, signal, sys
    import ftkit
    from ftkit_hf.backend import HFBackend

    real_submit = HFBackend.submit

    def submit_then_die(self, ctx):
        real_submit(self, ctx)
        os.kill(os.getpid(), signal.SIGKILL)

    HFBackend.submit = submit_then_die
    ftkit.FineTuneJob.get(sys.argv[1]).start()
    """
)


def test_start_after_a_client_killed_mid_start_follows_the_worker_it_left(spam_files, tiny_llama_dir, ftkit_home):
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=spam_files["train"],
                         labels=["ham", "spam"], hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "max_steps": 2, "batch_tokens": 256})
    client = subprocess.run([sys.executable, "-c", CLIENT, job.id], env=dict(os.environ), capture_output=True,
                            text=True, timeout=300)
    assert client.returncode == -9, client.stderr

    stuck = ftkit.FineTuneJob.get(job.id)
    assert stuck.status is JobStatus.VALIDATING and stuck.backend_job_id is None
    worker_pid = int((job.workdir / "worker.json").read_text().split('"pid": ')[1].split(",")[0])

    stuck.start()  # the client is dead: the worker it left is found, not duplicated
    assert stuck.status is JobStatus.QUEUED and stuck.backend_job_id == f"local-{worker_pid}"
    assert stuck.wait(timeout=300) is JobStatus.SUCCEEDED
    started = [e for e in stuck.events() if e.message.startswith("worker started")]
    assert len(started) == 1 and f"pid {worker_pid}" in started[0].message
    assert (job.workdir / "model" / "adapter_config.json").is_file()
