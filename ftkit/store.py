"""The job registry: every job ftkit has created, in one SQLite file.

SQLite in WAL mode with a busy timeout lets two processes (a script that started a job and
``ftkit events ID --follow`` in another terminal) read and write at once. Events are kept in
their own table with a uniqueness constraint on the backend's event key, so polling the same
events twice stores them once.

Status changes are compare-and-set (:meth:`JobStore.compare_and_set`): an ``UPDATE ... WHERE
status = ? [AND version = ?]`` inside one write transaction, which tells its caller whether it won.
Every write bumps the row's ``version``, so a process that acts on what it read earlier can ask for
"only if nobody changed the job since".
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ftkit.errors import JobNotFoundError
from ftkit.events import Event, JobStatus
from ftkit.paths import ftkit_home
from ftkit.redact import redact, redact_text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    backend_job_id TEXT,
    status TEXT NOT NULL,
    backend_status TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    spec TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    model TEXT,
    estimated_cost TEXT,
    actual_cost TEXT,
    manifest TEXT NOT NULL,
    error TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, key)
);
"""

_JSON_FIELDS = ("spec", "options", "state", "estimated_cost", "actual_cost", "manifest")
# Free text that may quote a vendor's answer (an error echoing a URL with credentials, a key).
_TEXT_FIELDS = ("error", "backend_status", "model")


class JobRecord(BaseModel):
    """One job as the registry keeps it. Readable without the backend that ran it."""

    id: str
    backend: str
    backend_job_id: str | None = None
    status: JobStatus = JobStatus.CREATED
    backend_status: str | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    spec: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    estimated_cost: dict[str, Any] | None = None
    actual_cost: dict[str, Any] | None = None
    manifest: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    version: int = Field(default=0, description="Bumped by every write: what compare-and-set compares.")


def new_job_id() -> str:
    """A sortable, unique job id such as ``ftk-20261123-120301-a1b2c3``."""
    return time.strftime("ftk-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


class JobStore:
    """The SQLite job registry and the per-job folders beside it.

    Args:
        root: the registry folder; defaults to ``$FTKIT_HOME`` or ``~/.ftkit``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else ftkit_home()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "jobs.sqlite"
        with self._connect() as db:
            db.executescript(_SCHEMA)
            _add_version_column(db)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    def job_dir(self, job_id: str) -> Path:
        """The folder that holds one job's files (data copies, worker logs, artifacts)."""
        return self.root / "jobs" / job_id

    def insert(self, record: JobRecord) -> None:
        """Record a new job. Called before anything is spent."""
        row = self._to_row(record)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as db:
            db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(row.values()))

    def update(self, job_id: str, **fields: Any) -> None:
        """Change some fields of a job (and its ``updated_at``), whatever its status.

        Status changes go through :meth:`compare_and_set` instead, so that they never undo another
        process's change (a cancel) made since the caller read the job.
        """
        self.compare_and_set(job_id, **fields)

    def compare_and_set(
        self,
        job_id: str,
        *,
        expect_status: JobStatus | Iterable[JobStatus] | None = None,
        expect_version: int | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        """Change some fields of a job only if it is still as the caller last saw it.

        One write transaction: ``UPDATE jobs SET ... WHERE id = ? AND status IN (...) AND version = ?``,
        then the row as written. Two processes that race for the same transition cannot both win.

        Args:
            job_id: the job's full id.
            expect_status: the status (or statuses) the job must still have; None for any.
            expect_version: the ``version`` the job must still have; None for any.
            **fields: the columns to set (``status``, ``state``, ``error``...).

        Returns:
            The job as written when the change was made; None when the job had moved on (lost the race).

        Raises:
            JobNotFoundError: there is no such job.
        """
        fields["updated_at"] = time.time()
        row = self._to_row_fields(fields)
        sets = ", ".join(f"{k} = ?" for k in row)
        where, args = "id = ?", [job_id]
        if expect_status is not None:
            expected = [expect_status] if isinstance(expect_status, JobStatus) else list(expect_status)
            where += f" AND status IN ({', '.join('?' for _ in expected)})"
            args += [s.value for s in expected]
        if expect_version is not None:
            where += " AND version = ?"
            args.append(str(expect_version))
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(f"UPDATE jobs SET {sets}, version = version + 1 WHERE {where}", (*row.values(), *args))
                won = cur.rowcount == 1
                found = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                db.execute("COMMIT")
            except BaseException:
                # A Ctrl-C can land after COMMIT has run: then there is nothing to undo (and the change stands).
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if found is None:
            raise JobNotFoundError(f"no job {job_id!r} in {self.path}")
        return self._from_row(found) if won else None

    def get(self, job_id: str) -> JobRecord:
        """The job with this id, or with this unique id prefix.

        Raises:
            JobNotFoundError: no job, or the prefix matches several.
        """
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
            if not rows:
                rows = db.execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (job_id + "%",)).fetchall()
        if not rows:
            raise JobNotFoundError(f"no job {job_id!r} in {self.path}")
        if len(rows) > 1:
            raise JobNotFoundError(f"{job_id!r} matches several jobs; give more of the id")
        return self._from_row(rows[0])

    def list(self, limit: int = 100, backend: str | None = None) -> builtins.list[JobRecord]:
        """The newest jobs first."""
        query, args = "SELECT * FROM jobs", []
        if backend:
            query, args = query + " WHERE backend = ?", [backend]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._from_row(r) for r in rows]

    def add_events(self, job_id: str, events: builtins.list[Event]) -> builtins.list[Event]:
        """Store events not seen before; returns the ones that were new."""
        added: builtins.list[Event] = []
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,)).fetchone()
            for ev in events:
                key = ev.key or f"seq-{seq + 1}"
                cur = db.execute(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        seq + 1,
                        key,
                        ev.time,
                        ev.level,
                        ev.kind,
                        redact_text(ev.message),
                        _dump_data(redact(ev.data)),
                    ),
                )
                if cur.rowcount:
                    seq += 1
                    added.append(ev)
            db.execute("COMMIT")
        return added

    def events(self, job_id: str, after: int = 0) -> builtins.list[tuple[int, Event]]:
        """Events of a job with their sequence numbers, oldest first, after sequence ``after``."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after)
            ).fetchall()
        return [
            (
                r["seq"],
                Event(
                    time=r["time"],
                    level=r["level"],
                    kind=r["kind"],
                    message=r["message"],
                    data=_load_data(r["data"]),
                    key=r["key"],
                ),
            )
            for r in rows
        ]

    @staticmethod
    def _to_row_fields(fields: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for k, v in fields.items():
            if k in _JSON_FIELDS:
                row[k] = None if v is None else orjson.dumps(redact(v)).decode()
            elif k in _TEXT_FIELDS and isinstance(v, str):
                row[k] = redact_text(v)
            elif isinstance(v, JobStatus):
                row[k] = v.value
            else:
                row[k] = v
        return row

    def _to_row(self, record: JobRecord) -> dict[str, Any]:
        return self._to_row_fields(record.model_dump(mode="json"))

    @staticmethod
    def _from_row(row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        for k in _JSON_FIELDS:
            if data.get(k) is not None:
                data[k] = orjson.loads(data[k])
        return JobRecord.model_validate(data)


def _add_version_column(db: sqlite3.Connection) -> None:
    """Give a registry written before compare-and-set its ``version`` column (once, under a write lock)."""
    db.execute("BEGIN IMMEDIATE")
    columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    if "version" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
    db.execute("COMMIT")


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nonfinite(v) for v in value)
    return False


def _dump_data(data: dict[str, Any]) -> bytes:
    """An event's data as JSON. A loss of nan or inf is kept as such: orjson would turn it into null, and a
    reader would then show the last finite loss as if training were fine."""
    if _has_nonfinite(data):
        return json.dumps(data, default=str).encode()  # NaN / Infinity literals, which json.loads reads back
    return orjson.dumps(data)


def _load_data(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
