"""The whole run through FineTuneJob on each emulator, with the stand-in worker (fast)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from remote_testkit import remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.events import JobStatus


def _job(data_file: Path, server: EmulatorServer, **over: object) -> FineTuneJob:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    return FineTuneJob.create(spec, backend="remote", options=remote_options(server, **over))


def test_run_succeeds_fetches_adapter_and_destroys(emulator: EmulatorServer, data_file: Path) -> None:
    job = _job(data_file, emulator)
    assert job.record.estimated_cost and job.record.estimated_cost["usd"] > 0
    job.start()
    assert job.status is JobStatus.QUEUED
    assert emulator.state.live(), "the machine runs while the job trains"
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert (job.workdir / "model" / "adapter_model.safetensors").is_file()
    steps = [m["step"] for m in job.metrics()]
    assert steps == [1, 2, 3, 4]
    assert not emulator.state.live()
    lease = LeaseLedger().get("ftkit-" + job.id)
    assert lease is not None and lease.status == "released"
    cost = job.record.actual_cost
    billed = emulator.state.total_cost()
    # The client's figure is price × (create → verified destroy): an upper bound of what the emulator billed
    # per second (boot time is not billed), and close to it.
    assert cost is not None and billed * 0.98 <= cost["usd"] <= billed * 2 + 1e-5
    kinds = {e.kind for e in job.events()}
    assert {"message", "metrics", "cost"} <= kinds


def test_worker_failure_destroys_machine(vast: EmulatorServer, data_file: Path) -> None:
    from remote_testkit import FAKE_WORKER

    job = _job(data_file, vast, worker_command=["python", FAKE_WORKER, "run", ".", "--fail-at", "2", "--delay", "0.05"])
    job.start()
    with pytest.raises(Exception, match="loss is NaN"):
        job.wait(poll_interval=0.2, timeout=60)
    assert job.status is JobStatus.FAILED
    assert not vast.state.live()


def test_worker_dying_without_status_is_a_failure(runpod: EmulatorServer, data_file: Path) -> None:
    from remote_testkit import FAKE_WORKER

    cmd = ["python", FAKE_WORKER, "run", ".", "--die-at", "2", "--delay", "0.05"]
    job = _job(data_file, runpod, worker_command=cmd)
    job.start()
    with pytest.raises(Exception, match="exited"):
        job.wait(poll_interval=0.2, timeout=60)
    assert not runpod.state.live()


def test_cancel_stops_worker_and_destroys(lambda_: EmulatorServer, data_file: Path) -> None:
    from remote_testkit import FAKE_WORKER

    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "200", "--delay", "0.1"]
    job = _job(data_file, lambda_, worker_command=cmd)
    job.start()
    job.refresh()
    assert job.cancel() is JobStatus.CANCELLED
    assert not lambda_.state.live()


def test_status_from_a_new_process_view_reconnects(vast: EmulatorServer, data_file: Path) -> None:
    """After start, a fresh FineTuneJob.get (as `ftkit status ID` does later) follows the same run."""
    from remote_testkit import FAKE_WORKER

    job = _job(data_file, vast, worker_command=["python", FAKE_WORKER, "run", ".", "--steps", "6", "--delay", "0.1"])
    job.start()
    time.sleep(0.3)
    again = FineTuneJob.get(job.id)
    assert again.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert [m["step"] for m in again.metrics()] == [1, 2, 3, 4, 5, 6]
    assert not vast.state.live()
