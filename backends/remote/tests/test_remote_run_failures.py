"""The fact sheet's failures, met by the whole run: every path ends with no machine left."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.ssh import HostKeyChanged
from remote_testkit import FAKE_WORKER, remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.errors import ConfigError, FtkitError
from ftkit.events import JobStatus

LONG = ["python", FAKE_WORKER, "run", ".", "--steps", "30", "--delay", "0.1"]


def _job(data_file: Path, server: EmulatorServer, **over: object) -> FineTuneJob:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"], max_cost=over.pop("max_cost", None))
    return FineTuneJob.create(spec, backend="remote", options=remote_options(server, **over))


def _messages(job: FineTuneJob) -> str:
    return "\n".join(e.message for e in job.events())


def test_stuck_loading_hits_the_ready_deadline(vast: EmulatorServer, data_file: Path) -> None:
    vast.state.faults.add("instance", "stuck_loading")
    job = _job(data_file, vast, ready_timeout_s=1.5)
    with pytest.raises(FtkitError, match="not usable after"):
        job.start()
    assert job.status is JobStatus.FAILED
    assert not vast.state.live() and not LeaseLedger().open_leases()


def test_created_stopped_is_destroyed_and_next_offer_used(vast: EmulatorServer, data_file: Path) -> None:
    vast.state.faults.add("create", "created_stopped")
    job = _job(data_file, vast)
    job.start()
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert len(vast.state.instances) == 2 and not vast.state.live()
    assert "failed after create" in _messages(job)


def test_capacity_error_moves_to_the_next_offer(runpod: EmulatorServer, data_file: Path) -> None:
    runpod.state.faults.add("create", "no_capacity")
    job = _job(data_file, runpod)
    job.start()
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert "unavailable" in _messages(job)


def test_no_offer_can_be_rented(lambda_: EmulatorServer, data_file: Path) -> None:
    lambda_.state.faults.add("create", "insufficient_capacity", times=5)
    job = _job(data_file, lambda_)
    with pytest.raises(FtkitError, match="no offer could be rented"):
        job.start()
    assert not lambda_.state.live() and not LeaseLedger().open_leases()


def test_error_after_create_is_reconciled_by_label(vast: EmulatorServer, data_file: Path) -> None:
    vast.state.faults.add("create", "error_after_create")
    job = _job(data_file, vast)
    job.start()
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert len(vast.state.instances) == 1, "the instance created behind the 500 was adopted, not duplicated"


@pytest.mark.parametrize("fault", ["no_gpu", "disk_full"])
def test_unusable_machine_is_destroyed(vast: EmulatorServer, data_file: Path, fault: str) -> None:
    if fault == "no_gpu":
        vast.state.faults.add("instance", "no_gpu")
        job = _job(data_file, vast)
        match = "no GPU"
    else:
        vast.state.sandbox_free_disk_gb = 0.5
        job = _job(data_file, vast)
        match = "GB free"
    with pytest.raises(FtkitError, match=match):
        job.start()
    assert not vast.state.live() and not LeaseLedger().open_leases()


def test_ssh_refused_until_sshd_is_up(runpod: EmulatorServer, data_file: Path) -> None:
    runpod.state.sshd_delay_s = 1.5
    job = _job(data_file, runpod)
    t0 = time.monotonic()
    job.start()
    assert time.monotonic() - t0 >= 1.5
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED


def test_disconnect_mid_run_reattaches_from_the_offset(vast: EmulatorServer, data_file: Path) -> None:
    job = _job(data_file, vast, worker_command=LONG)
    job.start()
    inst = next(iter(vast.state.instances.values()))
    job.refresh()
    inst.sshd_down = True  # sshd goes away for a while; the worker keeps training
    vast.call(inst.sandbox.stop(kill=False))
    job.refresh()
    assert job.status is JobStatus.RUNNING and job.record.backend_status == "disconnected"
    inst.sshd_down = False  # the emulator brings sshd back
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    steps = [m["step"] for m in job.metrics()]
    assert steps == list(range(1, 31)), "no event lost or repeated across the reconnect"
    assert "lost the SSH connection" in _messages(job)


def test_changed_host_key_is_refused(vast: EmulatorServer, data_file: Path) -> None:
    job = _job(data_file, vast, worker_command=LONG)
    job.start()
    sandbox = next(iter(vast.state.instances.values())).sandbox
    vast.call(sandbox.rotate_host_key())
    with pytest.raises(HostKeyChanged):
        job.refresh()
    job.cancel()  # cancel cannot reach the machine over SSH either, and still destroys it
    assert not vast.state.live()


def test_max_cost_guard_refuses_before_spending(vast: EmulatorServer, data_file: Path) -> None:
    with pytest.raises(ConfigError, match="max_cost"):
        _job(data_file, vast, max_cost=0.01)
    assert not vast.state.instances


def test_max_cost_caps_the_machine_lifetime(vast: EmulatorServer, data_file: Path) -> None:
    job = _job(data_file, vast, max_cost=1.0, estimated_train_hours=0.5)
    job.start()
    lease = LeaseLedger().get("ftkit-" + job.id)
    assert lease is not None
    price = lease.price_per_hour
    assert lease.deadline - lease.created_at <= 1.0 / price * 3600 + 5
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED


def test_unknown_provider_option_is_a_config_error(vast: EmulatorServer, data_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"remote\.vast"):
        _job(data_file, vast, provider_options={"base_url": vast.url, "colour": "blue"})


def test_bad_trainer_option_is_refused_at_create(vast: EmulatorServer, data_file: Path) -> None:
    pytest.importorskip("ftkit_hf.config")
    with pytest.raises(ConfigError, match=r"remote\.hf"):
        _job(data_file, vast, worker_command=None, hf={"lora_rank_typo": 8})
    assert not vast.state.instances
