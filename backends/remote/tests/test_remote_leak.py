"""Leak tests: a client killed mid-run leaves an orphan that `ftkit remote gc` destroys; SIGTERM tears down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ftkit_remote import ssh
from ftkit_remote.cli import app
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.providers import LaunchSpec, OfferQuery, make_provider
from remote_testkit import FAKE_WORKER, provider_options, remote_options
from typer.testing import CliRunner

from ftkit import FineTuneJob, JobSpec, JobStatus

pytestmark = pytest.mark.leak
CLIENT = str(Path(__file__).with_name("client_script.py"))


def _start_client(server: EmulatorServer, data_file: Path, **over: object) -> subprocess.Popen[str]:
    opts = remote_options(server, ready_timeout_s=120, **over)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, CLIENT, str(data_file), json.dumps(opts)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _gc(server: EmulatorServer, *extra: str) -> str:
    r = CliRunner().invoke(app, ["gc", "--provider", server.state.provider, "-o", f"base_url={server.url}", *extra])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("fault", ["stuck_loading", "slow_response"])
def test_leak_killed_client_leaves_orphan_that_gc_destroys(vast: EmulatorServer, data_file: Path, fault: str) -> None:
    """SIGKILL while the machine boots (id known) or while create is answering (id never learned)."""
    vast.state.faults.add("instance" if fault == "stuck_loading" else "create", fault)
    client = _start_client(vast, data_file)
    _wait_for(lambda: vast.state.live())
    if fault == "stuck_loading":  # the client has recorded the id in its lease before it dies
        _wait_for(lambda: any(x.instance_id for x in LeaseLedger().all()))
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    assert vast.state.live(), "the orphan keeps running (and billing) after the client died"
    leases = LeaseLedger().open_leases()
    assert len(leases) == 1 and (leases[0].instance_id is None) == (fault == "slow_response")
    out = _gc(vast, "--dry-run")
    assert "would destroy" in out and vast.state.live()
    out = _gc(vast)
    assert "destroyed" in out and "died before the worker started" in out
    assert not vast.state.live()
    assert not LeaseLedger().open_leases()


def test_leak_sigterm_during_setup_destroys_the_machine(runpod: EmulatorServer, data_file: Path) -> None:
    runpod.state.faults.add("instance", "stuck_provisioning")
    client = _start_client(runpod, data_file)
    _wait_for(lambda: runpod.state.live())
    _wait_for(lambda: any(x.instance_id for x in LeaseLedger().all()))
    client.send_signal(signal.SIGTERM)
    client.wait(30)
    assert not runpod.state.live(), "SIGTERM during setup must destroy the machine"
    lease = LeaseLedger().all()[0]
    assert lease.status == "released" and "interrupted" in lease.note


def test_leak_gc_keeps_a_running_job_and_reaps_unleased_ones(vast: EmulatorServer, data_file: Path) -> None:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "400", "--delay", "0.05"]
    job = FineTuneJob.create(spec, backend="remote", options=remote_options(vast, worker_command=cmd))
    job.start()

    async def stray() -> str:  # an instance with ftkit's label that no lease knows (a lost ledger)
        p = make_provider("vast", provider_options(vast) | {"api_key": "test-key"})
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        key = ssh.public_key_line(ssh.load_or_create_key())
        iid = await p.create(offer, LaunchSpec(label="ftkit-ftk-lost", ssh_public_key=key, disk_gb=20))
        await p.aclose()
        return iid

    import asyncio

    stray_id = asyncio.run(stray())
    out = _gc(vast)
    assert "kept" in out and "destroyed" in out
    live = [i.id for i in vast.state.live()]
    assert stray_id not in live and len(live) == 1
    job.cancel()
    assert not vast.state.live()


def test_leak_max_duration_destroys_a_running_job(lambda_: EmulatorServer, data_file: Path) -> None:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "400", "--delay", "0.05"]
    opts = remote_options(lambda_, worker_command=cmd, max_duration_hours=3 / 3600)
    job = FineTuneJob.create(spec, backend="remote", options=opts)
    job.start()
    with pytest.raises(Exception, match="max_duration"):
        job.wait(poll_interval=0.3, timeout=60)
    assert not lambda_.state.live()


def test_leak_deadman_switch_destroys_machine_without_the_client(vast: EmulatorServer, data_file: Path) -> None:
    """The laptop is gone: the machine destroys itself at the deadline with its own scoped key."""
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "400", "--delay", "0.05"]
    opts = remote_options(vast, worker_command=cmd, max_duration_hours=3 / 3600, deadman_check_s=0.2)
    job = FineTuneJob.create(spec, backend="remote", options=opts)
    job.start()  # ...and nobody polls any more
    _wait_for(lambda: not vast.state.live(), timeout=30)
    deletes = [p for m, p in vast.state.requests if m == "DELETE"]
    assert deletes, "the instance deleted itself through the API"
    # The next poll notices and closes the books.
    with pytest.raises(Exception, match=r"max_duration|gone"):
        job.wait(poll_interval=0.2, timeout=30)
    assert not LeaseLedger().open_leases()


def test_start_after_a_killed_client_destroys_its_machine_before_renting_again(
    vast: EmulatorServer, data_file: Path
) -> None:
    """kill -9 while the machine boots: the next start() destroys that orphan, then rents one machine."""
    vast.state.faults.add("instance", "stuck_loading")
    client = _start_client(vast, data_file)
    job_id = (client.stdout.readline() if client.stdout else "").strip()
    _wait_for(lambda: any(x.instance_id for x in LeaseLedger().all()))
    orphans = [i.id for i in vast.state.live()]
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    job = FineTuneJob.get(job_id)
    assert job.status is JobStatus.VALIDATING and len(orphans) == 1

    job.start()  # the submitter is dead: its machine is found by label and destroyed, then one is rented
    assert orphans[0] not in [i.id for i in vast.state.live()]
    assert job.wait(poll_interval=0.2, timeout=120) is JobStatus.SUCCEEDED
    assert not vast.state.live()
    assert not LeaseLedger().open_leases()
    assert [x.status for x in LeaseLedger().all()] == ["released"]  # one lease per job label, closed
