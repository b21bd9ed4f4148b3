"""Job state changes are compare-and-set in the registry: cancel wins, interrupted starts are reconciled.

Every test here acts on one job from two real processes, or kills/interrupts a real start: the registry
(SQLite) and the fake service (a file per job, keyed by the job id) are shared as they would be in use.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from ftkit import ConfigError, FineTuneJob, JobError, JobSpec, JobStatus, JobStore, register_backend
from ftkit.backend import JobContext
from ftkit.events import Event
from ftkit.testing import FakeBackend
from tests.helpers import spam_rows, write_jsonl

register_backend(FakeBackend)

ROOT = Path(__file__).parents[1]

# A second process acting on the same registry: `python -c PEER JOB_ID ACTION [ARG]`.
PEER = textwrap.dedent(
    """
    import sys
    import ftkit
    from ftkit.testing import FakeBackend
    ftkit.register_backend(FakeBackend)
    job = ftkit.FineTuneJob.get(sys.argv[1])
    action = sys.argv[2]
    if action == "cancel":
        print(job.cancel().value, flush=True)
    elif action == "start":
        job.start()
        print(job.status.value, flush=True)
    """
)


def make_spec(tmp_path: Path, **kw: Any) -> JobSpec:
    train = write_jsonl(tmp_path / "train.jsonl", spam_rows())
    return JobSpec(task="classification", train=train, **kw)


def peer(job_id: str, action: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", PEER, job_id, action], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def service(job: FineTuneJob) -> dict[str, Any] | None:
    """The fake service's own record of the job (what a vendor would have), or None if it never got it."""
    path = job.workdir / "fake-service.json"
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def wait_for(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ----------------------------------------------------------------------------- the store's compare-and-set


def test_compare_and_set_lets_one_writer_win(tmp_path: Path) -> None:
    store = JobStore()
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", store=store)
    v0 = store.get(job.id).version
    first = store.compare_and_set(job.id, expect_status=JobStatus.CREATED, status=JobStatus.CANCELLED)
    second = store.compare_and_set(job.id, expect_status=JobStatus.CREATED, status=JobStatus.VALIDATING)
    assert first is not None and first.status is JobStatus.CANCELLED and first.version == v0 + 1
    assert second is None and store.get(job.id).status is JobStatus.CANCELLED
    # A version check loses to any write in between, even one that keeps the status.
    store.update(job.id, backend_status="x")
    assert store.compare_and_set(job.id, expect_version=first.version, error="stale") is None
    assert store.get(job.id).error is None


def test_registry_written_before_versions_is_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "old-home"
    root.mkdir()
    db = sqlite3.connect(root / "jobs.sqlite")
    db.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, backend TEXT NOT NULL, backend_job_id TEXT, status TEXT NOT NULL,"
        " backend_status TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, spec TEXT NOT NULL,"
        " options TEXT NOT NULL, state TEXT NOT NULL, model TEXT, estimated_cost TEXT, actual_cost TEXT,"
        " manifest TEXT NOT NULL, error TEXT);"
        "INSERT INTO jobs VALUES ('ftk-old', 'fake', NULL, 'created', NULL, 1, 1, '{}', '{}', '{}', NULL, NULL, NULL,"
        " '{}', NULL);"
    )
    db.commit()
    db.close()
    store = JobStore(root)
    assert store.get("ftk-old").version == 0
    assert store.compare_and_set("ftk-old", expect_status=JobStatus.CREATED, status=JobStatus.CANCELLED) is not None


def test_nan_and_inf_in_event_data_survive_the_registry(tmp_path: Path) -> None:
    store = JobStore()
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", store=store)
    store.add_events(job.id, [Event(kind="metrics", key="s3", data={"step": 3, "train_loss": float("nan"),
                                                                     "valid_loss": float("inf")})])
    [m] = [m for m in job.metrics() if m.get("step") == 3]
    assert math.isnan(m["train_loss"]) and m["valid_loss"] == math.inf


# ----------------------------------------------------------------------------- cancel wins


def test_start_reads_the_registry_so_a_cancel_elsewhere_sticks(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake")  # this object still holds "created"
    out, err = peer(job.id, "cancel").communicate(timeout=60)
    assert out.strip() == "cancelled", err
    with pytest.raises(JobError, match="is cancelled"):
        job.start()
    assert service(job) is None  # nothing was submitted: nothing is paid for
    assert FineTuneJob.get(job.id).status is JobStatus.CANCELLED


class _DeafFake(FakeBackend):
    """A service whose jobs run to the end whatever cancel says (a cancel that arrives too late)."""

    name: ClassVar[str] = "fake-deaf"

    def cancel(self, ctx: JobContext) -> None:
        pass


def test_refresh_never_turns_a_cancelled_job_back(tmp_path: Path) -> None:
    register_backend(_DeafFake)
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake-deaf", options={"steps": 2, "seconds_per_step": 0.2})
    job.start()
    assert FineTuneJob.get(job.id).cancel() is JobStatus.CANCELLED  # another handle on the job
    time.sleep(0.5)  # the service finishes the job anyway
    assert job.wait(timeout=30) is JobStatus.CANCELLED
    rec = FineTuneJob.get(job.id).record
    assert rec.status is JobStatus.CANCELLED and rec.backend_status == "done" and rec.model is None
    assert any(e.key == "finished-after-cancel" for e in job.events())


def test_cancel_while_submit_is_in_flight_cancels_the_new_backend_job(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 50, "seconds_per_step": 0.1, "submit_seconds": 2})
    starter = peer(job.id, "start")
    wait_for(lambda: service(job) is not None)  # the service has the job; the starter has no answer yet
    assert FineTuneJob.get(job.id).status is JobStatus.VALIDATING
    assert job.cancel() is JobStatus.CANCELLED
    out, err = starter.communicate(timeout=60)
    assert starter.returncode == 0 and out.strip() == "cancelled", err
    rec = FineTuneJob.get(job.id).record
    assert rec.status is JobStatus.CANCELLED and rec.backend_job_id == f"fake-{job.id}"
    assert service(job)["cancelled"] is True  # the job the submit created was stopped at once
    assert job.wait(timeout=30) is JobStatus.CANCELLED
    assert any(e.key == "cancelled-while-starting" for e in job.events())


def test_cancel_a_job_whose_submitter_was_killed_stops_what_it_created(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 50, "seconds_per_step": 0.1, "submit_seconds": 60})
    starter = peer(job.id, "start")
    wait_for(lambda: service(job) is not None)
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=30)
    assert job.cancel() is JobStatus.CANCELLED
    assert service(job)["cancelled"] is True
    assert FineTuneJob.get(job.id).record.backend_job_id == f"fake-{job.id}"


# ----------------------------------------------------------------------------- interrupted starts


def test_start_killed_after_the_backend_has_the_job_is_followed_by_the_next_start(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 2, "seconds_per_step": 0.05, "submit_seconds": 60})
    starter = peer(job.id, "start")
    wait_for(lambda: service(job) is not None)
    starter.send_signal(signal.SIGKILL)  # kill -9: no handler runs, the registry says "validating"
    starter.wait(timeout=30)
    stuck = FineTuneJob.get(job.id)
    assert stuck.status is JobStatus.VALIDATING and stuck.record.state["submit"]["pid"] == starter.pid
    stuck.start()  # the submitter is dead: ask the service by the job's id instead of submitting again
    assert stuck.status is JobStatus.QUEUED and stuck.backend_job_id == f"fake-{job.id}"
    assert stuck.wait(timeout=30) is JobStatus.SUCCEEDED
    assert any("backend has the job" in e.message for e in stuck.events())


def test_start_killed_before_the_backend_has_the_job_is_submitted_again(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 2, "seconds_per_step": 0.05, "upload_seconds": 60})
    starter = peer(job.id, "start")
    wait_for(lambda: FineTuneJob.get(job.id).status is JobStatus.VALIDATING)
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=30)
    assert FineTuneJob.get(job.id).refresh() is JobStatus.CREATED  # refresh tells the truth: never submitted
    retry = FineTuneJob.get(job.id)
    retry._live_options = {"steps": 2, "seconds_per_step": 0.05}  # this time without the slow upload
    retry.start()
    assert retry.wait(timeout=30) is JobStatus.SUCCEEDED


def test_start_of_a_job_another_live_process_is_starting_is_refused(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"upload_seconds": 60})
    starter = peer(job.id, "start")
    try:
        wait_for(lambda: FineTuneJob.get(job.id).status is JobStatus.VALIDATING)
        with pytest.raises(JobError, match=f"being started by pid {starter.pid}"):
            job.start()
        assert job.refresh() is JobStatus.VALIDATING  # in flight: nothing to reconcile yet
        assert job.record.backend_status.startswith(f"submitting: pid {starter.pid} on ")  # `ftkit status` says
    finally:
        starter.kill()
        starter.wait(timeout=30)


def test_ctrl_c_during_start_leaves_a_job_that_start_finishes(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 2, "seconds_per_step": 0.05, "submit_seconds": 30})
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        job.start()
    timer.join()
    rec = FineTuneJob.get(job.id).record
    assert rec.status is JobStatus.VALIDATING and rec.backend_status == "submit interrupted"
    assert rec.state["submit"]["interrupted"] == "KeyboardInterrupt"
    job._live_options = {"steps": 2, "seconds_per_step": 0.05}
    job.start()  # this very process is alive, but its submit is over: reconciled, not refused
    assert job.backend_job_id == f"fake-{job.id}" and job.wait(timeout=30) is JobStatus.SUCCEEDED


def test_resume_finishes_an_interrupted_start(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 2, "seconds_per_step": 0.05, "submit_seconds": 60})
    starter = peer(job.id, "start")
    wait_for(lambda: service(job) is not None)
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=30)
    job.resume()
    assert job.status is JobStatus.QUEUED and job.wait(timeout=30) is JobStatus.SUCCEEDED


def test_wait_on_a_job_never_started_says_so(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake")
    with pytest.raises(JobError, match="start"):
        job.wait(timeout=5)


# ----------------------------------------------------------------------------- no bad numbers accepted


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_learning_rate_is_refused_at_create(tmp_path: Path, value: str) -> None:
    write_jsonl(tmp_path / "train.jsonl", spam_rows())
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(f'task = "classification"\ntrain = "train.jsonl"\n[hyperparameters]\nlearning_rate = {value}\n')
    with pytest.raises(ConfigError, match=r"hyperparameters\.learning_rate: Input should be a finite number"):
        FineTuneJob.create(cfg, backend="fake")
    assert JobStore().list() == []


def test_non_finite_values_are_refused_wherever_they_come_from(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", spam_rows())
    cfg = tmp_path / "ftkit.yaml"
    cfg.write_text("task: classification\ntrain: train.jsonl\nmax_cost: .nan\n")
    with pytest.raises(ConfigError, match="max_cost: Input should be a finite number"):
        FineTuneJob.create(cfg, backend="fake")
    cfg.write_text("task: classification\ntrain: train.jsonl\nmax_cost: .inf\n")
    with pytest.raises(ConfigError, match="max_cost: Input should be a finite number"):
        FineTuneJob.create(cfg, backend="fake")
    # A backend section's hyperparameters, and a spec object changed after it was built.
    spec = make_spec(tmp_path, backend_options={"fake": {"hyperparameters": {"learning_rate": math.nan}}})
    with pytest.raises(ConfigError, match="finite number"):
        FineTuneJob.create(spec, backend="fake")
    spec = make_spec(tmp_path)
    spec.hyperparameters.learning_rate = math.inf
    with pytest.raises(ConfigError, match=r"spec: hyperparameters\.learning_rate: Input should be a finite number"):
        FineTuneJob.create(spec, backend="fake")
    assert JobStore().list() == []
