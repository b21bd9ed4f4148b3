"""The lease ledger: a record of every machine ftkit may be paying for, written BEFORE create.

``$FTKIT_HOME/remote/leases.json`` (next to the core registry, which this package does not change)
holds one lease per run, keyed by its label ``ftkit-<job id>``. The order of writes is what makes
leaks recoverable: the lease exists before the provider is asked to create anything, the instance
id is added the moment it is known, and the lease is closed only after the instance is verified
gone. A crash anywhere leaves either no instance or an instance that ``ftkit remote gc`` finds by
label. Writes are atomic (temp file + ``os.replace``) under an exclusive ``flock``, so several
processes can share the ledger. Secrets are never stored: provider options are kept without keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ftkit.atomic import atomic_write_bytes
from ftkit.paths import ftkit_home

_SECRET_OPTIONS = frozenset({"api_key"})


class Lease(BaseModel):
    """One run's claim on a machine."""

    label: str = Field(description="ftkit-<job id>: the label the instance carries at the provider.")
    job_id: str
    provider: str
    provider_options: dict[str, Any] = Field(default_factory=dict, description="Without secrets.")
    offer: dict[str, Any] = Field(default_factory=dict)
    instance_id: str | None = None
    status: str = Field(default="creating", description="creating | active | destroying | released")
    price_per_hour: float = 0.0
    created_at: float = Field(default_factory=time.time)
    deadline: float = Field(description="Unix time after which the machine must be gone (max_duration).")
    driver_pid: int = Field(default_factory=os.getpid, description="The process that is setting the run up.")
    driver_host: str = Field(default_factory=socket.gethostname)
    started: bool = Field(default=False, description="True once the worker runs on the machine.")
    destroyed_at: float | None = None
    cost_usd: float | None = None
    note: str = ""

    def driver_alive(self) -> bool:
        """True while the process that creates and sets up the machine is still running (on this host)."""
        if self.driver_host != socket.gethostname():
            return True  # cannot tell from here: assume alive, the deadline still bounds it
        try:
            os.kill(self.driver_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """Provider options without secrets (API keys come back from the environment)."""
    return {k: v for k, v in options.items() if k not in _SECRET_OPTIONS}


class LeaseLedger:
    """The JSON ledger of leases under ``$FTKIT_HOME/remote``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ftkit_home() / "remote" / "leases.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
            before = dict(data)
            yield data
            if data != before:
                atomic_write_bytes(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    def open(self, lease: Lease) -> Lease:
        """Record a lease (before create). An open lease with the same label is an error: one run, one machine."""
        with self._locked() as data:
            old = data.get(lease.label)
            if old and old["status"] != "released":
                raise RuntimeError(f"lease {lease.label} is already open (instance {old.get('instance_id')})")
            data[lease.label] = lease.model_dump(mode="json")
        return lease

    def update(self, label: str, **fields: Any) -> Lease:
        """Change fields of a lease and return it."""
        with self._locked() as data:
            if label not in data:
                raise KeyError(label)
            data[label] = data[label] | fields
            return Lease.model_validate(data[label])

    def get(self, label: str) -> Lease | None:
        """The lease with this label, if any."""
        with self._locked() as data:
            raw = data.get(label)
        return Lease.model_validate(raw) if raw else None

    def all(self) -> list[Lease]:
        """Every lease, released ones included, oldest first."""
        with self._locked() as data:
            leases = [Lease.model_validate(v) for v in data.values()]
        return sorted(leases, key=lambda x: x.created_at)

    def open_leases(self) -> list[Lease]:
        """Leases whose machine may still exist."""
        return [x for x in self.all() if x.status != "released"]

    def release(self, label: str, cost_usd: float | None, note: str = "") -> Lease:
        """Close a lease once its instance is verified gone."""
        return self.update(label, status="released", destroyed_at=time.time(), cost_usd=cost_usd, note=note)
