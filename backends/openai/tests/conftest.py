"""Fixtures: a loopback emulator, an isolated registry, and a guard against any real network use."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ftkit_openai.backend import OpenAIBackend
from ftkit_openai.emulator import EmulatorServer, EmulatorSettings
from openai_testdata import TEST_KEY

from ftkit.backend import Capabilities

# What jobs measure (training speeds) goes to a folder of this test session's own: the tests' tiny models
# train at speeds no real job reaches, and running the tests must never change a user's estimates.
os.environ["FTKIT_MEASUREMENTS"] = tempfile.mkdtemp(prefix="ftkit-test-measurements-")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    # Every outgoing connection resolves its host first: refusing here means no test can reach
    # api.openai.com (or anything else) even if a base_url is wrong.
    if host not in _LOOPBACK and not (isinstance(host, bytes) and host.decode() in _LOOPBACK):
        raise RuntimeError(f"network guard: tests may only talk to loopback, not {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


FAST = {"status_seconds": 0.05, "step_seconds": 0.01, "steps_per_epoch": 4, "batch_seconds": 0.05,
        "queue_seconds": 0.0, "validate_responses": True}


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(**FAST)) as emu:
        yield emu


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ftkit-cache")


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emulator: EmulatorServer, cache_dir: Path
) -> Iterator[None]:
    # Only for this suite's tests (not other suites run in the same session).
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only)
    monkeypatch.setenv("FTKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FTKIT_CACHE", str(cache_dir))
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.delenv("FTKIT_TODAY", raising=False)
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    monkeypatch.setattr(OpenAIBackend, "capabilities",
                        OpenAIBackend.capabilities.model_copy(update={"poll_interval": 0.02}))
    assert isinstance(OpenAIBackend.capabilities, Capabilities)
    yield
    emulator.clear_faults()
    for key, value in FAST.items():
        setattr(emulator.settings, key, value)
    emulator.settings.api_key = None


@pytest.fixture
def no_violations(emulator: EmulatorServer) -> Iterator[None]:
    """Fail the test if the emulator answered anything that breaks the OpenAPI excerpt meanwhile."""
    before = len(emulator.violations())
    yield
    assert emulator.violations()[before:] == []
