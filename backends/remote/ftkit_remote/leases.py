"""The lease ledger: a record of every machine ftkit may be paying for, written BEFORE create.

``$FTKIT_HOME/remote/leases.jsonl`` (next to the core registry, which this package does not change)
holds one lease per run, keyed by its label ``ftkit-<job id>``. The order of writes is what makes
leaks recoverable: the lease exists before the provider is asked to create anything, the instance
id is added the moment it is known, and the lease is closed only after the instance is verified
gone. A crash anywhere leaves either no instance or an instance that ``ftkit remote gc`` finds by
label.

The ledger must stay readable whatever happens to it, because it is what finds a leaked machine:

- It is an append-only log, one whole lease per line; the last readable line of a label wins. A
  writer appends one complete line with a single ``write`` under a :class:`filelock.FileLock`, after
  checking that the line reads back as a lease (no ``inf``, no ``nan``: ``Lease`` refuses them), and
  starts a new line first if a crash left the file without a final newline.
- A reader takes no lock and never fails on content: a torn, truncated or garbage line, a line
  with ``inf`` or a record that no longer validates is skipped and reported in
  :attr:`LeaseLedger.problems` (``ftkit remote gc`` prints them). A skipped lease costs nothing
  but ownership: gc treats its instance as unowned and destroys it.
- The one-object ``leases.json`` of earlier versions is still read (under the log), never written.

Secrets are never stored: provider options are kept without keys.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ftkit.atomic import atomic_write_bytes
from ftkit.paths import ftkit_home

_SECRET_OPTIONS = frozenset({"api_key"})
LEGACY_NAME = "leases.json"
COMPACT_BYTES = 1 << 20
"""Above this size, opening a lease first rewrites the log with one line per lease (unreadable lines kept)."""


class Lease(BaseModel):
    """One run's claim on a machine."""

    model_config = ConfigDict(allow_inf_nan=False)  # an inf deadline is no deadline, and JSON cannot hold it

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


def _why(e: ValidationError) -> str:
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return "not a JSON record"
    return f"{'.'.join(str(x) for x in err['loc']) or 'record'}: {err['msg']}"


class LeaseLedger:
    """The append-only JSON-lines ledger of leases under ``$FTKIT_HOME/remote``.

    Attributes:
        path: the log (``leases.jsonl``).
        problems: what the last read skipped, one line each (file, line number, why).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ftkit_home() / "remote" / "leases.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.legacy = self.path.with_name(LEGACY_NAME)
        self.problems: list[str] = []
        self._lock = FileLock(str(self.path) + ".lock")

    # ------------------------------------------------------------------ reading

    def _read(self) -> dict[str, Lease]:
        """The latest readable lease of each label; what could not be read goes to ``problems``."""
        problems: list[str] = []
        leases = self._read_legacy(problems)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        lines = raw.split(b"\n")
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                lease = Lease.model_validate_json(line)
            except ValidationError as e:
                last = no == len(lines)  # no newline after it: a write in progress, or torn by a crash
                why = "incomplete last line (being written, or torn by a crash)" if last else _why(e)
                problems.append(f"{self.path}:{no}: skipped, {why}")
                continue
            leases[lease.label] = lease
        self.problems = problems
        return leases

    def _read_legacy(self, problems: list[str]) -> dict[str, Lease]:
        if not self.legacy.exists():
            return {}
        try:
            data = orjson.loads(self.legacy.read_bytes())
        except (orjson.JSONDecodeError, OSError) as e:
            problems.append(f"{self.legacy}: skipped, unreadable ({e})")
            return {}
        if not isinstance(data, dict):
            problems.append(f"{self.legacy}: skipped, not a JSON object")
            return {}
        out: dict[str, Lease] = {}
        for label, record in data.items():
            try:
                out[label] = Lease.model_validate(record)
            except ValidationError as e:
                problems.append(f"{self.legacy}: lease {label!r} skipped, {_why(e)}")
        return out

    def get(self, label: str) -> Lease | None:
        """The lease with this label, if any (readable)."""
        return self._read().get(label)

    def all(self) -> list[Lease]:
        """Every readable lease, released ones included, oldest first."""
        return sorted(self._read().values(), key=lambda x: x.created_at)

    def open_leases(self) -> list[Lease]:
        """Leases whose machine may still exist."""
        return [x for x in self.all() if x.status != "released"]

    # ------------------------------------------------------------------ writing

    def _append(self, lease: Lease) -> None:
        """Append one complete line (under the lock): a record that reads back, after a newline if one is missing."""
        line = lease.model_dump_json().encode()
        Lease.model_validate_json(line)  # never write what a reader would have to skip
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            data = (b"\n" if torn else b"") + line + b"\n"
            while data:  # one write for a line this size; the loop only guards a short write
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _compact(self, leases: dict[str, Lease]) -> None:
        """Rewrite the log atomically with one line per lease, keeping unreadable lines as they were."""
        kept = [ln for ln in self.path.read_bytes().split(b"\n") if ln.strip() and not _readable(ln)]
        body = b"".join(ln + b"\n" for ln in kept)
        body += b"".join(x.model_dump_json().encode() + b"\n" for x in sorted(leases.values(), key=_created))
        atomic_write_bytes(self.path, body)

    def open(self, lease: Lease) -> Lease:
        """Record a lease (before create). An open lease with the same label is an error: one run, one machine."""
        lease = Lease.model_validate(lease.model_dump())  # a lease built with bad numbers fails here, before create
        with self._lock:
            leases = self._read()
            old = leases.get(lease.label)
            if old is not None and old.status != "released":
                raise RuntimeError(f"lease {lease.label} is already open (instance {old.instance_id})")
            if self.path.exists() and self.path.stat().st_size > COMPACT_BYTES:
                self._compact(leases)
            self._append(lease)
        return lease

    def update(self, label: str, **fields: Any) -> Lease:
        """Change fields of a lease and return it (a change that would not validate is refused, not written)."""
        with self._lock:
            current = self._read().get(label)
            if current is None:
                raise KeyError(label)
            lease = Lease.model_validate(current.model_dump() | fields)
            self._append(lease)
        return lease

    def release(self, label: str, cost_usd: float | None, note: str = "") -> Lease:
        """Close a lease once its instance is verified gone."""
        return self.update(label, status="released", destroyed_at=time.time(), cost_usd=cost_usd, note=note)


def _readable(line: bytes) -> bool:
    try:
        Lease.model_validate_json(line)
    except ValidationError:
        return False
    return True


def _created(lease: Lease) -> float:
    return lease.created_at
