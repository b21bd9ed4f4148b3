"""The lease ledger stays readable whatever was written to it, and gc still finds and destroys leaks."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ftkit_remote import leases as leases_module
from ftkit_remote import ssh
from ftkit_remote.cli import app
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import Lease, LeaseLedger
from ftkit_remote.providers import LaunchSpec, OfferQuery, make_provider
from pydantic import ValidationError
from remote_testkit import FAKE_WORKER, provider_options, remote_options
from typer.testing import CliRunner

from ftkit import FineTuneJob, JobSpec


def _lease(label: str, **over: object) -> Lease:
    return Lease.model_validate({"label": label, "job_id": label, "provider": "vast", "deadline": time.time() + 600}
                                | over)  # fmt: skip


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_bad_lines_are_skipped_and_reported() -> None:
    ledger = LeaseLedger()
    ledger.open(_lease("ftkit-a"))
    ledger.open(_lease("ftkit-b", instance_id="7"))
    with open(ledger.path, "ab") as f:
        f.write(b"not json at all\n")  # line 3
        f.write(b'{"label": "ftkit-b", "job_id": "b", "provider": "vast", "deadline": 1e999}\n')  # 4: inf
        f.write(b'{"label": "ftkit-b", "job_id": "b", "provider": "vast", "deadline": NaN}\n')  # 5
        f.write(b"[1, 2]\n")  # 6
        f.write(b'{"label": "ftkit-c"}\n')  # 7: a record missing its fields
        f.write(b"\n\n")  # blank lines are nothing
        f.write(b'{"label": "ftkit-d", "job_id": "d", "prov')  # 10: torn by a crash
    found = {x.label: x for x in ledger.all()}
    assert set(found) == {"ftkit-a", "ftkit-b"} and found["ftkit-b"].instance_id == "7", "the last readable one wins"
    problems = ledger.problems
    assert [p.split(":")[1] for p in problems] == ["3", "4", "5", "6", "7", "10"], problems
    assert "not a JSON record" in problems[0] and "deadline" in problems[1] and "job_id" in problems[4]
    assert "incomplete last line" in problems[5]
    assert all(str(ledger.path) in p for p in problems)


def test_an_append_after_a_torn_tail_starts_a_new_line() -> None:
    ledger = LeaseLedger()
    ledger.open(_lease("ftkit-a"))
    ledger.open(_lease("ftkit-b"))
    data = ledger.path.read_bytes()
    ledger.path.write_bytes(data[:-25])  # a partially written file: the last record cut short
    assert [x.label for x in ledger.all()] == ["ftkit-a"] and len(ledger.problems) == 1
    ledger.update("ftkit-a", instance_id="9", status="active")
    ledger.open(_lease("ftkit-b"))
    assert {x.label: x.instance_id for x in ledger.all()} == {"ftkit-a": "9", "ftkit-b": None}
    assert len(ledger.problems) == 1 and "incomplete" not in ledger.problems[0], "the torn line stays one bad line"


def test_writers_refuse_what_readers_could_not_read() -> None:
    ledger = LeaseLedger()
    with pytest.raises(ValidationError, match="finite"):
        _lease("ftkit-a", deadline=math.inf)
    ledger.open(_lease("ftkit-a"))
    before = ledger.path.read_bytes()
    for bad in ({"deadline": math.inf}, {"price_per_hour": math.nan}, {"cost_usd": -math.inf}):
        with pytest.raises(ValidationError):
            ledger.update("ftkit-a", **bad)  # type: ignore[arg-type]
    assert ledger.path.read_bytes() == before, "nothing was written"
    built = Lease.model_construct(**_lease("ftkit-b").model_dump() | {"deadline": math.inf})  # skips validation
    with pytest.raises(ValidationError):
        ledger.open(built)
    assert ledger.path.read_bytes() == before
    assert oct(ledger.path.stat().st_mode & 0o777) == "0o600"


def test_the_old_json_ledger_is_still_read() -> None:
    ledger = LeaseLedger()
    old = {"ftkit-old": _lease("ftkit-old", instance_id="5", status="active").model_dump(mode="json")}
    ledger.legacy.write_text(json.dumps(old))
    assert [(x.label, x.instance_id) for x in ledger.open_leases()] == [("ftkit-old", "5")]
    ledger.release("ftkit-old", 0.1, "gone")
    assert ledger.open_leases() == [] and json.loads(ledger.legacy.read_text()) == old, "read, never written"
    ledger.legacy.write_bytes(b'{"ftkit-old": {"label": "ftkit-old", "deadl')  # a torn old ledger
    assert [x.label for x in ledger.all()] == ["ftkit-old"]  # its later record in the log still counts
    assert "unreadable" in ledger.problems[0] and str(ledger.legacy) in ledger.problems[0]


def _writer(n: int, rounds: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ledger = LeaseLedger()
    try:
        ledger.open(_lease("ftkit-shared"))
        won = True
    except RuntimeError:
        won = False
    ledger.open(_lease(f"ftkit-w{n}"))
    for i in range(rounds):
        ledger.update(f"ftkit-w{n}", note=f"{i}" + "x" * 3000)  # long lines: more than one page per write
    results.put(won)


def test_concurrent_writers_never_produce_an_unreadable_ledger() -> None:
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_writer, args=(n, 25, results)) for n in range(6)]
    for p in procs:
        p.start()
    reader = LeaseLedger()
    while any(p.is_alive() for p in procs):  # readers take no lock: they must never fail meanwhile
        reader.all()
        assert all("incomplete last line" in p for p in reader.problems), reader.problems
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(results.get() for _ in procs) == [False] * 5 + [True], "one open lease per label, under the lock"
    final = {x.label: x for x in reader.all()}
    assert reader.problems == []
    assert {f"ftkit-w{n}" for n in range(6)} | {"ftkit-shared"} == set(final)
    assert all(final[f"ftkit-w{n}"].note.startswith("24x") for n in range(6))
    assert len(reader.path.read_bytes().splitlines()) == 1 + 6 * 26


def test_a_big_log_is_compacted_keeping_what_it_could_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = LeaseLedger()
    ledger.open(_lease("ftkit-a"))
    for i in range(20):
        ledger.update("ftkit-a", note=str(i))
    with open(ledger.path, "ab") as f:
        f.write(b"garbage\n")
    monkeypatch.setattr(leases_module, "COMPACT_BYTES", 1000)
    ledger.open(_lease("ftkit-b"))
    lines = ledger.path.read_bytes().splitlines()
    assert lines[0] == b"garbage" and len(lines) == 3
    assert {x.label: x.note for x in ledger.all()} == {"ftkit-a": "19", "ftkit-b": ""}


async def _rent(server: EmulatorServer, label: str) -> str:
    p = make_provider(server.state.provider, provider_options(server) | {"api_key": "test-key"})
    try:
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        key = ssh.public_key_line(ssh.load_or_create_key())
        return await p.create(offer, LaunchSpec(label=label, ssh_public_key=key, disk_gb=20))
    finally:
        await p.aclose()


def _gc(server: EmulatorServer) -> str:
    r = CliRunner().invoke(app, ["gc", "-p", server.state.provider, "-o", f"base_url={server.url}"])
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())  # the console wraps long lines


def test_gc_destroys_a_leak_whatever_the_ledger_holds(vast: EmulatorServer) -> None:
    """The report: a machine leaked, the ledger could not be read, and `ftkit remote gc` crashed too."""
    ledger = LeaseLedger()
    iid = asyncio.run(_rent(vast, "ftkit-leaked"))  # a client that died after create (its process is gone)
    ledger.open(_lease("ftkit-leaked", instance_id=iid, status="active", driver_pid=_dead_pid()))
    with open(ledger.path, "ab") as f:  # and then everything that can go wrong with the file did
        f.write(b'{"label": "ftkit-leaked", "job_id": "leaked", "provider": "vast", "deadline": 1e999}\n')
        f.write(os.urandom(64).replace(b"\n", b"") + b"\n")
        f.write(b'{"label": "ftkit-torn", "jo')
    ledger.legacy.write_bytes(b"{ torn")
    r = CliRunner().invoke(app, ["instances", "-p", "vast", "-o", f"base_url={vast.url}"])
    assert r.exit_code == 0 and "lease ledger:" in r.output and iid in r.output, r.output
    out = _gc(vast)
    assert "destroyed" in out and "ftkit-leaked" in out, out
    assert out.count("lease ledger:") >= 4 and "leases.json:" in out, out
    assert not vast.state.live()
    assert LeaseLedger().get("ftkit-leaked").status == "released"  # type: ignore[union-attr]


def test_gc_destroys_a_leak_whose_lease_was_lost(vast: EmulatorServer) -> None:
    """A lease line that cannot be read counts as no lease: the instance is unowned, and destroyed."""
    ledger = LeaseLedger()
    asyncio.run(_rent(vast, "ftkit-unreadable"))
    with open(ledger.path, "ab") as f:
        f.write(b'{"label": "ftkit-unreadable", "job_id": "u", "provider": "vast", "deadline": 1e999}\n')
    out = _gc(vast)
    assert "destroyed" in out and "no open lease" in out, out
    assert not vast.state.live()


def test_gc_destroys_a_running_job_at_max_duration_without_client_or_switch(
    vast: EmulatorServer, data_file: Path
) -> None:
    """max_duration is a bound even when nobody polls and the dead-man switch is off: gc enforces it."""
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "400", "--delay", "0.05"]
    opts = remote_options(vast, worker_command=cmd, max_duration_hours=4 / 3600, deadman=False)
    job = FineTuneJob.create(spec, backend="remote", options=opts)
    job.start()
    lease = LeaseLedger().get("ftkit-" + job.id)
    assert lease is not None and lease.started
    assert "kept" in _gc(vast) and vast.state.live(), "before the deadline a running job is left alone"
    time.sleep(max(0.0, lease.deadline - time.time()) + 0.2)
    out = _gc(vast)
    assert "destroyed" in out and "past its max_duration deadline" in out, out
    assert not vast.state.live()
    with pytest.raises(Exception, match=r"max_duration|gone"):
        job.wait(poll_interval=0.2, timeout=30)
    assert not LeaseLedger().open_leases()
