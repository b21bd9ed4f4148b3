"""Fixtures: the three provider emulators on loopback, an isolated FTKIT_HOME, and the leak guard."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftkit_remote.emulators import lambda_ as lambda_emu
from ftkit_remote.emulators import runpod as runpod_emu
from ftkit_remote.emulators import vast as vast_emu
from ftkit_remote.emulators.common import EmulatorServer

FAKE_WORKER = str(Path(__file__).with_name("fake_worker.py"))
_STARTED: list[EmulatorServer] = []


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
    _STARTED.clear()
    yield
    leaked = {s.state.provider: [i.id for i in s.state.live()] for s in _STARTED if s.state.live()}
    for s in _STARTED:
        s.stop()
    _STARTED.clear()
    assert not leaked, f"instances left running: {leaked}"


def _start(state: Any, app: Any) -> EmulatorServer:
    server = EmulatorServer(app, state).start()
    _STARTED.append(server)
    return server


@pytest.fixture
def vast(tmp_path: Path) -> EmulatorServer:
    state = vast_emu.VastState(tmp_path / "machines")
    return _start(state, vast_emu.make_app(state))


@pytest.fixture
def runpod(tmp_path: Path) -> EmulatorServer:
    state = runpod_emu.RunPodState(tmp_path / "machines")
    return _start(state, runpod_emu.make_app(state))


@pytest.fixture
def lambda_(tmp_path: Path) -> EmulatorServer:
    state = lambda_emu.LambdaState(tmp_path / "machines")
    return _start(state, lambda_emu.make_app(state))


@pytest.fixture(params=["vast", "runpod", "lambda"])
def emulator(request: pytest.FixtureRequest) -> EmulatorServer:
    return request.getfixturevalue({"lambda": "lambda_"}.get(request.param, request.param))


def provider_options(server: EmulatorServer) -> dict[str, Any]:
    """Options pointing a provider at its emulator (fast retries for tests)."""
    name = server.state.provider
    retry = {"initial_wait_s": 0.05, "max_wait_s": 1.5, "attempts": 5}
    if name == "vast":
        return {"base_url": server.url, "retry": retry}
    if name == "runpod":
        return {"base_url": server.url, "rest_url": server.url + "/v1", "retry": retry}
    return {"base_url": server.url, "ssh_port": server.state.ssh_port, "seconds_between_launches": 0.0,
            "retry": retry}


def remote_options(server: EmulatorServer, **over: Any) -> dict[str, Any]:
    """RemoteBackend options for a run on ``server`` with the fake worker."""
    opts: dict[str, Any] = {
        "provider": server.state.provider,
        "provider_options": provider_options(server),
        "worker_command": ["python", FAKE_WORKER, "run", ".", "--steps", "4", "--delay", "0.05"],
        "poll_interval": 0.2,
        "deadman_check_s": 0.5,
        "disk_gb": 20,
    }
    return opts | over


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rows = [{"text": f"message number {i} {'win cash now' if i % 2 else 'see you at lunch'}",
             "label": "spam" if i % 2 else "ham"} for i in range(24)]
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def python() -> str:
    return sys.executable
