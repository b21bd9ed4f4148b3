"""The lease ledger and the scripts written onto the machine."""

from __future__ import annotations

import time

import pytest
from ftkit_remote.cli import app
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.jobfolder import deadman_script, run_script
from ftkit_remote.leases import Lease, LeaseLedger, public_options
from remote_testkit import provider_options
from typer.testing import CliRunner

from ftkit.cli import app as ftkit_app


def test_ledger_round_trip_and_one_open_lease_per_label() -> None:
    ledger = LeaseLedger()
    ledger.open(Lease(label="ftkit-a", job_id="a", provider="vast", deadline=time.time() + 60))
    with pytest.raises(RuntimeError, match="already open"):
        ledger.open(Lease(label="ftkit-a", job_id="a", provider="vast", deadline=time.time() + 60))
    ledger.update("ftkit-a", instance_id="42", status="active")
    assert ledger.get("ftkit-a").instance_id == "42"  # type: ignore[union-attr]
    ledger.release("ftkit-a", 0.5, "done")
    assert ledger.open_leases() == [] and ledger.all()[0].cost_usd == 0.5
    assert not list(ledger.path.parent.glob("*.tmp")), "writes are atomic"


def test_secrets_are_not_stored() -> None:
    assert public_options({"api_key": "k", "base_url": "u"}) == {"base_url": "u"}


def test_run_script_uses_torchrun_on_several_gpus() -> None:
    one = run_script(["python", "-m", "ftkit_hf.worker", "run", "."], 1, "auto")
    assert "python -m ftkit_hf.worker run ." in one and "torchrun" not in one
    four = run_script(["python", "-m", "ftkit_hf.worker", "run", "."], 4, "auto")
    assert "torchrun --standalone --nproc-per-node=4 -m ftkit_hf.worker run ." in four
    acc = run_script(["python", "-m", "ftkit_hf.worker", "run", "."], 2, "accelerate")
    assert "accelerate launch --num_processes=2 -m ftkit_hf.worker run ." in acc
    assert "exit_code" in one and "ftkit_setup.py" not in one
    shipped = run_script(["python", "-m", "ftkit_hf.worker", "run", "."], 1, "auto", setup=True)
    setup, worker = shipped.index("python ftkit_setup.py"), shipped.index("python -m ftkit_hf.worker")
    assert setup < shipped.index(".ftkit-pythonpath") < worker, "install, then the worker sees the wheels first"


def test_deadman_script_destroys_or_kills() -> None:
    s = deadman_script(["python3", "-c", "print(1)"], 2_000_000_000, 60, 30)
    assert "2000000000" in s and "python3 -c 'print(1)'" in s
    assert "kill -TERM" in deadman_script(None, 2_000_000_000, 60, 30)


def test_cli_offers_and_instances(vast: EmulatorServer) -> None:
    r = CliRunner().invoke(app, ["offers", "-p", "vast", "-o", f"base_url={vast.url}", "--max-price", "0.5",
                                 "--disk-gb", "20"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "7001" in r.output and "7003" not in r.output
    r = CliRunner().invoke(app, ["instances", "-p", "vast", "-o", f"base_url={vast.url}"])
    assert r.exit_code == 0 and "no instance" in r.output
    # Through the ftkit command, so the error meets the one top-level handler: a config error is exit 2.
    r = CliRunner().invoke(ftkit_app, ["remote", "offers", "-p", "nope"])
    assert r.exit_code == 2 and r.output.startswith("error: unknown provider 'nope'"), r.output
    assert provider_options(vast)["base_url"] == vast.url
