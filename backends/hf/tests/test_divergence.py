"""No bad model is called a success: a run whose loss turns nan/inf fails with the step, in real training.

The tiny random Llama of conftest.py, trained in the detached worker with a learning rate that is finite
but absurd (1e30): the first update moves the LoRA weights by ~1e30, the activations then overflow
float32 and the loss becomes nan or inf within a few steps. Nothing is injected.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

import ftkit
from ftkit import JobFailedError, JobStatus

pytestmark = pytest.mark.slow


def test_diverging_loss_fails_the_job_with_the_step_and_no_model(spam_files, tiny_llama_dir, ftkit_home):
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=spam_files["train"],
                         labels=["ham", "spam"], hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e30))
    job = ftkit.FineTuneJob.create(spec, backend="hf",
                                   options={"device": "cpu", "max_steps": 12, "batch_tokens": 256, "warmup_ratio": 0})
    job.start()
    with pytest.raises(JobFailedError, match=r"loss became (nan|inf) at step \d+") as e:
        job.wait(timeout=300)
    step = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    assert step < 12  # it stopped where it diverged, not at the end

    again = ftkit.FineTuneJob.get(job.id)
    assert again.status is JobStatus.FAILED and f"at step {step}" in (again.record.error or "")
    assert not (job.workdir / "model").exists()  # nothing to load, nothing to serve
    with pytest.raises(ftkit.JobError, match="failed"):
        again.model()
    # The loss curve ends with the bad loss itself, at that step: not with the last finite one.
    last = again.metrics()[-1]
    assert last["step"] == step and not math.isfinite(last["train_loss"])
    assert all(math.isfinite(m["train_loss"]) for m in again.metrics()[:-1])

    # `ftkit status` says so too.
    out = subprocess.run([sys.executable, "-m", "ftkit.cli", "status", job.id], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "FTKIT_HOME": str(ftkit_home)})
    assert out.returncode == 0, out.stderr
    assert " failed " in out.stdout and f"at step {step}" in out.stdout
    assert re.search(rf"step {step}/\d+\s+train_loss (nan|inf)", out.stdout), out.stdout
