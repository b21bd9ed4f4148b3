"""Shared fixtures: a private ftkit home per test and a guard against real network access."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path

import pytest

# What jobs measure (training speeds) goes to a folder of this test session's own: the tests' tiny models
# train at speeds no real job reaches, and running the tests must never change a user's estimates.
os.environ["FTKIT_MEASUREMENTS"] = tempfile.mkdtemp(prefix="ftkit-test-measurements-")

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else None
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise RuntimeError(f"test tried to reach {host}: tests never touch the network")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTKIT_HOME", str(tmp_path / "ftkit-home"))
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
