"""Fixtures: the three provider emulators on loopback, an isolated FTKIT_HOME, and the leak guard."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ftkit_remote.emulators import lambda_ as lambda_emu
from ftkit_remote.emulators import runpod as runpod_emu
from ftkit_remote.emulators import vast as vast_emu
from ftkit_remote.emulators.common import EmulatorServer
from remote_testkit import STARTED, start_emulator

# What jobs measure (training speeds) goes to a folder of this test session's own: the tests' tiny models
# train at speeds no real job reaches, and running the tests must never change a user's estimates.
os.environ["FTKIT_MEASUREMENTS"] = tempfile.mkdtemp(prefix="ftkit-test-measurements-")


@pytest.fixture(autouse=True)
def ftkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ftkit-home"
    monkeypatch.setenv("FTKIT_HOME", str(home))
    for var in ("VAST_API_KEY", "RUNPOD_API_KEY", "LAMBDA_API_KEY"):
        monkeypatch.setenv(var, "test-key")
    for var in ("VAST_URL", "RUNPOD_API_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def no_leaked_instances() -> Iterator[None]:
    """Every test must leave no instance alive on any emulator it started (the leak guard)."""
    STARTED.clear()
    yield
    leaked = {s.state.provider: [i.id for i in s.state.live()] for s in STARTED if s.state.live()}
    for s in STARTED:
        s.stop()
    STARTED.clear()
    assert not leaked, f"instances left running: {leaked}"


@pytest.fixture
def vast(tmp_path: Path) -> EmulatorServer:
    state = vast_emu.VastState(tmp_path / "machines")
    return start_emulator(state, vast_emu.make_app(state))


@pytest.fixture
def runpod(tmp_path: Path) -> EmulatorServer:
    state = runpod_emu.RunPodState(tmp_path / "machines")
    return start_emulator(state, runpod_emu.make_app(state))


@pytest.fixture
def lambda_(tmp_path: Path) -> EmulatorServer:
    state = lambda_emu.LambdaState(tmp_path / "machines")
    return start_emulator(state, lambda_emu.make_app(state))


@pytest.fixture(params=["vast", "runpod", "lambda"])
def emulator(request: pytest.FixtureRequest) -> EmulatorServer:
    return request.getfixturevalue({"lambda": "lambda_"}.get(request.param, request.param))


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rows = [{"text": f"message number {i} {'win cash now' if i % 2 else 'see you at lunch'}",
             "label": "spam" if i % 2 else "ham"} for i in range(24)]  # fmt: skip
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
