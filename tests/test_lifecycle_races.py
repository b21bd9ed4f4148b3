"""The issue's load test, small: processes that start and follow jobs race processes that cancel them.

Before compare-and-set, 64 of 355 jobs cancelled by one of 8 processes ended "succeeded". Here 4
processes share one registry: two runners start every job (only one start may win) and wait for them,
two cancellers cancel jobs at random moments. Whatever cancel() answered "cancelled" must end cancelled,
with its job stopped at the service; nothing may be left "validating".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from ftkit import FineTuneJob, JobSpec, JobStatus, register_backend
from ftkit.testing import FakeBackend
from tests.helpers import spam_rows, write_jsonl

register_backend(FakeBackend)

RACER = textwrap.dedent(
    """
    import random, sys, time
    import ftkit
    from ftkit.testing import FakeBackend
    ftkit.register_backend(FakeBackend)
    role, seed, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    rng = random.Random(seed)
    rng.shuffle(ids)
    if role == "runner":
        jobs = [ftkit.FineTuneJob.get(i) for i in ids]  # handles that go stale as the others act
        for job in jobs:
            try:
                job.start()
            except ftkit.JobError:
                pass  # the other runner started it, or it was cancelled first
        for job in jobs:
            try:
                job.wait(timeout=60, poll_interval=0.01)
            except ftkit.JobError:
                pass  # cancelled before it was started
    else:
        time.sleep(rng.uniform(0, 0.2))
        for i in ids[: len(ids) * 2 // 3]:
            time.sleep(rng.uniform(0, 0.03))
            print(i, ftkit.FineTuneJob.get(i).cancel().value, flush=True)
    """
)

JOBS = 30


def test_no_cancelled_job_ends_succeeded(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", spam_rows())
    spec = JobSpec(task="classification", train=train)
    jobs = [FineTuneJob.create(spec, backend="fake", options={"steps": 3, "seconds_per_step": 0.05}, validate=i == 0)
            for i in range(JOBS)]
    ids = ",".join(j.id for j in jobs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, role, str(seed), ids], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for seed, role in enumerate(["runner", "canceller", "runner", "canceller"])]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    told_cancelled = {line.split()[0] for out, _ in outs for line in out.splitlines() if line.endswith(" cancelled")}
    assert told_cancelled  # the race did happen

    final = {j.id: FineTuneJob.get(j.id) for j in jobs}
    wrong = {i: final[i].status.value for i in told_cancelled if final[i].status is not JobStatus.CANCELLED}
    assert not wrong, f"{len(wrong)} of {len(told_cancelled)} jobs told 'cancelled' ended otherwise: {wrong}"
    for job in final.values():
        assert job.status.is_terminal, f"{job.id} left {job.status.value}"
        path = job.workdir / "fake-service.json"
        if job.status is JobStatus.CANCELLED and path.is_file():
            assert orjson.loads(path.read_bytes())["cancelled"], f"{job.id} cancelled but still running"
