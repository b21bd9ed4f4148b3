"""The worker protocol: the one contract between ``python -m ftkit_hf.worker`` and whoever runs it.

The hf backend follows a worker over local files, the remote backend follows the same worker over
SFTP; both read and write the folder only through this module, so the protocol is written once.

Layout of a job folder (names relative to it, so the folder can live anywhere)::

    spec.json      what to train, a WorkerJob                 written once, atomically, by the runner
    data/          the training (and validation) JSONL copies written by the runner
    events.jsonl   one JSON event per line                     appended by the worker, one write per line
    status.json    the worker's state, {"status": WorkerStatus, ...}  replaced atomically by the worker
    checkpoints/   engine checkpoints (``step-N/``)             the worker
    model/         the adapter (or full model) and tokenizer   renamed into place by the worker at the end
    worker.log     the worker's stdout and stderr               the runner redirects them there
    worker.json    pid and start time of a local worker          the hf backend, right after starting it
    base_model/    the base model, in a folder shipped to another machine (``model_path`` names it)
    cancel         present: stop after this step and checkpoint  the runner

Ordering, which readers rely on: the worker appends its last events *before* it writes a final
status. A reader that reads ``status.json`` first and ``events.jsonl`` second therefore has every
event once it has seen a final status. ``events.jsonl`` is read from a byte offset kept by the
reader (an :class:`EventCursor`); a torn last line (the worker is mid-write, or a copy caught it
half-way) is left for the next read, so no event is lost or read twice.
"""

from __future__ import annotations

import enum
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftkit.atomic import atomic_write_text
from ftkit.errors import ConfigError
from ftkit.events import Event, JobStatus

__all__ = [
    "BASE_MODEL",
    "CANCEL",
    "CHECKPOINTS",
    "DATA",
    "EVENTS",
    "LOG",
    "MODEL",
    "SPEC",
    "STATUS",
    "TERMINAL",
    "WORKER",
    "EventCursor",
    "JobFiles",
    "WorkerJob",
    "WorkerStatus",
    "parse_events",
    "parse_status",
]

# File names inside a job folder.
SPEC = "spec.json"
EVENTS = "events.jsonl"
STATUS = "status.json"
CHECKPOINTS = "checkpoints"
MODEL = "model"
LOG = "worker.log"
WORKER = "worker.json"
DATA = "data"
CANCEL = "cancel"
BASE_MODEL = "base_model"


class WorkerStatus(enum.StrEnum):
    """The ``status`` field of ``status.json``, and the job status each one means."""

    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def job_status(self) -> JobStatus:
        """The job status this worker status maps to."""
        return _JOB_STATUS[self]

    @property
    def is_terminal(self) -> bool:
        """True once the worker has nothing more to do."""
        return self.job_status.is_terminal

    @classmethod
    def parse(cls, value: object) -> WorkerStatus | None:
        """The status named ``value``, or None for a value the protocol does not know."""
        try:
            return cls(str(value))
        except ValueError:
            return None


_JOB_STATUS = {
    WorkerStatus.STARTING: JobStatus.QUEUED,
    WorkerStatus.RUNNING: JobStatus.RUNNING,
    WorkerStatus.SUCCEEDED: JobStatus.SUCCEEDED,
    WorkerStatus.FAILED: JobStatus.FAILED,
    WorkerStatus.CANCELLED: JobStatus.CANCELLED,
}
TERMINAL: frozenset[str] = frozenset(s.value for s in WorkerStatus if s.is_terminal)


class WorkerJob(BaseModel):
    """``spec.json``: everything the worker needs, resolved by the runner before anything is started.

    Paths (``model_path``, ``train``, ``validation``) are absolute for a local job and relative to
    the job folder for one shipped to another machine; the worker runs in the job folder either way.
    """

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="The ftkit job id.")
    task: Literal["chat", "classification", "completion", "preference", "text"] = Field(description="What is trained.")
    model: str = Field(description="The model's name as the user gave it, resolved (for events and metadata).")
    model_path: str = Field(description="The base model's folder (relative: shipped with the job folder).")
    model_kind: Literal["causal", "encoder"] = Field(description="Decoder (causal LM) or encoder.")
    head: Literal["generative", "sequence_classification", "masked_lm"] = Field(
        description="How it is trained: generative (decoders), a classification head, or masked-LM (encoders, text)."
    )
    labels: list[str] | None = Field(default=None, description="Class labels in order (classification).")
    preamble: str | None = Field(default=None, description="The classification preamble.")
    max_length: int = Field(gt=0, description="Longest sequence in tokens.")
    train: str = Field(description="The training JSONL file.")
    validation: str | None = Field(default=None, description="The validation JSONL file, if any.")
    hyperparameters: dict[str, Any] = Field(description="The JobSpec's hyperparameters, as given.")
    training: dict[str, Any] = Field(default_factory=dict, description="The settings chosen from the data.")
    config: dict[str, Any] = Field(description="The HFConfig options.")
    memory: dict[str, Any] | None = Field(
        default=None, description="The memory plan's choices made by the client (None: the worker decides)."
    )
    model_revision: dict[str, Any] | None = Field(
        default=None, description="A Hub model's pin: repo, commit, 'repo@commit' (None for a local folder)."
    )


class EventCursor(BaseModel):
    """Where a reader of ``events.jsonl`` is: the byte offset after the last complete line, and its number."""

    offset: int = Field(default=0, ge=0)
    line: int = Field(default=0, ge=0)


def parse_events(chunk: bytes, cursor: EventCursor) -> tuple[list[Event], EventCursor]:
    """The events in ``chunk`` (the bytes of ``events.jsonl`` from ``cursor.offset``) and the cursor after them.

    Only complete lines are read: a torn last line stays for the next read. A line that is not a JSON
    object becomes a warning event naming its line number. Each event's key is ``line-N``, so a
    reader that reads a line twice (after a crash before saving its cursor) records it once.
    """
    import jsonlines

    end = chunk.rfind(b"\n") + 1
    line_no = cursor.line
    out: list[Event] = []
    # The stdlib parser: the worker's events carry NaN/Infinity (a diverged loss); orjson, which jsonlines
    # prefers when installed, refuses them.
    reader = jsonlines.Reader(chunk[:end].splitlines(), loads=json.loads)
    while True:
        try:
            obj = reader.read(type=dict)
        except EOFError:
            break
        except jsonlines.InvalidLineError:
            obj = None
        line_no += 1
        key = f"line-{line_no}"
        try:
            if obj is None:
                raise ValueError("not a JSON object")
            out.append(Event(time=obj.get("time", time.time()), level=obj.get("level", "info"),
                             kind=obj.get("kind", "message"), message=obj.get("message", ""),
                             data=obj.get("data") or {}, key=key))  # fmt: skip
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            out.append(Event(level="warning", message=f"unreadable event line {line_no}", key=key))
    return out, EventCursor(offset=cursor.offset + end, line=line_no)


def parse_status(raw: bytes | str | None) -> dict[str, Any] | None:
    """``status.json``'s content, or None when there is none yet (or a non-atomic copy caught it mid-write)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class JobFiles:
    """One job folder on this machine: its paths, and the atomic writes and offset reads of the protocol."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.spec = self.root / SPEC
        self.events = self.root / EVENTS
        self.status = self.root / STATUS
        self.checkpoints = self.root / CHECKPOINTS
        self.model = self.root / MODEL
        self.log = self.root / LOG
        self.worker = self.root / WORKER
        self.data = self.root / DATA
        self.cancel = self.root / CANCEL

    # ------------------------------------------------------------------ the runner's side
    def write_job(self, job: WorkerJob) -> None:
        """Write ``spec.json`` atomically."""
        atomic_write_text(self.spec, job.model_dump_json(indent=1))

    def read_events(self, cursor: EventCursor) -> tuple[list[Event], EventCursor]:
        """New events since ``cursor`` (none before the worker wrote any) and the cursor after them."""
        try:
            with self.events.open("rb") as f:
                f.seek(cursor.offset)
                chunk = f.read()
        except FileNotFoundError:
            return [], cursor
        return parse_events(chunk, cursor)

    def read_status(self) -> dict[str, Any] | None:
        """The last status the worker wrote, or None before it wrote one."""
        try:
            return parse_status(self.status.read_bytes())
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ the worker's side
    def read_job(self) -> WorkerJob:
        """The job to train.

        Raises:
            ConfigError: ``spec.json`` is missing or does not follow the protocol (naming the field).
        """
        from pydantic import ValidationError

        try:
            return WorkerJob.model_validate_json(self.spec.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{self.spec}: missing; the job folder was not written by ftkit") from None
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"])) or "(file)"
            raise ConfigError(f"{self.spec}: {where}: {err['msg']}") from None

    def read_spec(self) -> dict[str, Any]:
        """The job's spec as plain JSON (validated as a :class:`WorkerJob`)."""
        return self.read_job().model_dump(mode="json")

    def write_status(self, status: str, **fields: Any) -> None:
        """Replace status.json atomically, keeping fields of the previous status not given now."""
        old = self.read_status() or {}
        new = {**old, **fields, "status": str(status), "pid": os.getpid(), "updated": time.time()}
        atomic_write_text(self.status, json.dumps(new, indent=1))

    def append_event(self, kind: str, message: str = "", level: str = "info", **data: Any) -> None:
        """Append one event as a single line (one write, so a reader never sees half of it)."""
        line = json.dumps({"time": time.time(), "level": level, "kind": kind, "message": message, "data": data})
        with self.events.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    # ------------------------------------------------------------------ both
    def log_tail(self, n_bytes: int = 2000) -> str:
        """The end of the worker's log, for error messages."""
        try:
            with self.log.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_bytes))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def latest_checkpoint_step(self) -> int | None:
        """The newest checkpoint's step, or None."""
        names = [p.name.split("-", 1)[1] for p in self.checkpoints.glob("step-*")]
        steps = [int(n) for n in names if n.isdigit()]
        return max(steps) if steps else None
