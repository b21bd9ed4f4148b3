"""A start() that fails after renting always destroys the machine, whatever ends it.

Each test crashes the real client (emulated provider API, real SSH on loopback) at one step after
the create call — with an error, a Ctrl-C, SystemExit, a SIGTERM or a SIGINT delivered to this
process — and then asks the emulator whether anything is still running and the ledger whether the
lease says the machine was destroyed.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.providers.vast import VastProvider
from ftkit_remote.provision import Provisioning
from ftkit_remote.ssh import SshSession
from remote_testkit import remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.errors import BackendError

MAIN = threading.current_thread() is threading.main_thread()
pytestmark = [pytest.mark.leak, pytest.mark.skipif(not MAIN, reason="signals need the main thread")]


def _crash(kind: str) -> None:
    """End the client the way ``kind`` does."""
    if kind == "error":
        raise RuntimeError("injected fault")
    if kind == "ctrl-c":
        raise KeyboardInterrupt
    if kind == "exit":
        raise SystemExit(3)
    if kind == "sigterm":  # the backend turns SIGTERM into KeyboardInterrupt while it sets up
        signal.raise_signal(signal.SIGTERM)
    elif kind == "sigint":  # a real Ctrl-C: asyncio.run cancels the task at its next await
        signal.raise_signal(signal.SIGINT)
    else:
        raise AssertionError(kind)


EXPECTED: dict[str, type[BaseException]] = {
    "error": BackendError,
    "ctrl-c": KeyboardInterrupt,
    "exit": SystemExit,
    "sigterm": KeyboardInterrupt,
    "sigint": KeyboardInterrupt,
}


def _inject(mp: pytest.MonkeyPatch, owner: type, name: str, when: str, kind: str,
            only: Callable[..., bool] = lambda *a, **k: True) -> list[int]:  # fmt: skip
    """Wrap ``owner.name`` to crash (once) ``before`` or ``after`` the real call; returns a hit counter."""
    real = getattr(owner, name)
    hits: list[int] = []

    def fire(args: Any, kwargs: Any) -> bool:
        if hits or not only(*args, **kwargs):
            return False
        hits.append(1)
        return True

    # "after" counts only a call that returned: a probe refused while sshd boots is retried, and must not
    # use up the one crash.
    if inspect.iscoroutinefunction(real):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if when == "before" and fire(args, kwargs):
                _crash(kind)
            out = await real(*args, **kwargs)
            if when == "after" and fire(args, kwargs):
                _crash(kind)
            return out
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if when == "before" and fire(args, kwargs):
                _crash(kind)
            out = real(*args, **kwargs)
            if when == "after" and fire(args, kwargs):
                _crash(kind)
            return out

    mp.setattr(owner, name, wrapper)
    return hits


# Every step of start() after the create call, in order.
STEPS: dict[str, tuple[type, str, str, Callable[..., bool]]] = {
    "created, id not yet recorded": (Provisioning, "_create", "after", lambda *a, **k: True),
    "recording the instance id": (LeaseLedger, "update", "before", lambda *a, **k: "instance_id" in k),
    "waiting until usable": (Provisioning, "_wait_ready", "before", lambda *a, **k: True),
    "probed: ssh, gpu, disk": (Provisioning, "_probe", "after", lambda *a, **k: True),
    "shipping the job folder": (SshSession, "put", "before", lambda *a, **k: True),
    "worker started": (Provisioning, "_ship_and_start", "after", lambda *a, **k: True),
    "marking the lease started": (LeaseLedger, "update", "before", lambda *a, **k: "started" in k),
}
CASES = [pytest.param(step, kind, id=f"{step}-{kind}") for step in STEPS for kind in ("error", "ctrl-c")]
CASES += [pytest.param(step, kind, id=f"{step}-{kind}")
          for step in ("waiting until usable", "worker started") for kind in ("exit", "sigterm", "sigint")]  # fmt: skip


def _job(data_file: Path, server: EmulatorServer, **over: Any) -> FineTuneJob:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    return FineTuneJob.create(spec, backend="remote", options=remote_options(server, **over))


def _assert_destroyed(server: EmulatorServer, job: FineTuneJob) -> None:
    assert server.state.instances, "the crash came after create: something was rented"
    assert not server.state.live(), "the machine outlived the crash"
    ledger = LeaseLedger()
    lease = ledger.get("ftkit-" + job.id)
    assert lease is not None and lease.status == "released" and lease.destroyed_at is not None, lease
    assert not ledger.open_leases()


@pytest.mark.parametrize(("step", "kind"), CASES)
def test_crash_after_create_destroys_the_machine(
    vast: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch, step: str, kind: str
) -> None:
    owner, name, when, only = STEPS[step]
    job = _job(data_file, vast)
    hits = _inject(monkeypatch, owner, name, when, kind, only)
    with pytest.raises(EXPECTED[kind]):
        job.start()
    assert hits, f"the fault at {step!r} was reached"
    _assert_destroyed(vast, job)
    assert "setup failed" in (LeaseLedger().get("ftkit-" + job.id).note or "")  # type: ignore[union-attr]


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_second_interrupt_during_teardown_is_held(
    vast: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch, second: int,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Ctrl-C, then Ctrl-C (or SIGTERM) again while the machine is being destroyed: it is still destroyed."""
    job = _job(data_file, vast)
    _inject(monkeypatch, Provisioning, "_wait_ready", "before", "ctrl-c")
    real_destroy = VastProvider.destroy

    async def impatient(self: VastProvider, instance_id: str) -> None:
        signal.raise_signal(second)
        await asyncio.sleep(0.05)  # an await for a cancellation to land on
        await real_destroy(self, instance_id)

    monkeypatch.setattr(VastProvider, "destroy", impatient)
    with pytest.raises(KeyboardInterrupt):
        job.start()
    _assert_destroyed(vast, job)
    assert "held until it is done" in capfd.readouterr().err


def test_unreadable_ledger_does_not_stop_the_teardown(
    lambda_: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report: the ledger got a line it could not read, start() crashed, teardown crashed reading it."""
    job = _job(data_file, lambda_)
    ledger_path = LeaseLedger().path
    real_create = Provisioning._create

    async def create_then_corrupt(self: Provisioning, offers: Any) -> Any:
        await real_create(self, offers)
        with open(ledger_path, "ab") as f:  # what an older writer could leave: inf, a torn record, garbage
            f.write(b'{"label": "ftkit-other", "job_id": "x", "provider": "lambda", "deadline": 1e999}\n')
            f.write(b"\x00\x17garbage\n")
            f.write(b'{"label": "ftkit-torn", "job_')
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Provisioning, "_create", create_then_corrupt)
    with pytest.raises(BackendError, match="injected fault"):
        job.start()
    _assert_destroyed(lambda_, job)
    ledger = LeaseLedger()
    ledger.all()
    problems = "\n".join(ledger.problems)
    assert "deadline" in problems and "not a JSON record" in problems, problems


def test_broken_ledger_writes_do_not_stop_the_teardown(
    lambda_: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full (or any ledger failure) from the first write after create on: the machine is still destroyed."""
    job = _job(data_file, lambda_)
    real_append = LeaseLedger._append
    created: list[int] = []

    def append(self: LeaseLedger, lease: Any) -> None:
        if lease.instance_id or created:
            created.append(1)
            raise OSError(28, "No space left on device")
        real_append(self, lease)

    monkeypatch.setattr(LeaseLedger, "_append", append)
    with pytest.raises(BackendError, match="No space left"):
        job.start()
    assert lambda_.state.instances and not lambda_.state.live(), "the machine outlived a broken ledger"
    monkeypatch.setattr(LeaseLedger, "_append", real_append)
    assert LeaseLedger().get("ftkit-" + job.id).status == "creating"  # type: ignore[union-attr]
    # gc closes the lease the broken disk left open: its instance no longer exists.
    from ftkit_remote.cli import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["gc", "-p", "lambda", "-o", f"base_url={lambda_.url}"])
    assert r.exit_code == 0, r.output
    assert not LeaseLedger().open_leases(), r.output


def test_lambda_crash_is_destroyed_too(
    lambda_: EmulatorServer, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same guarantee on a provider without a dead-man key (Lambda): only the client can destroy."""
    job = _job(data_file, lambda_)
    _inject(monkeypatch, Provisioning, "_ship_and_start", "after", "ctrl-c")
    with pytest.raises(KeyboardInterrupt):
        job.start()
    _assert_destroyed(lambda_, job)
