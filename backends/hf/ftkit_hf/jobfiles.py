"""The files of one job folder, shared by the worker (writer) and the backend (reader).

``JOB_DIR/spec.json``      what to train (written by the backend)
``JOB_DIR/events.jsonl``   one JSON event per line, appended by the worker
``JOB_DIR/status.json``    the worker's current status, replaced atomically
``JOB_DIR/checkpoints/``   engine checkpoints (``step-N/``)
``JOB_DIR/model/``         the adapter (or full model) and tokenizer once training succeeded
``JOB_DIR/worker.log``     the worker's stdout and stderr
``JOB_DIR/worker.json``    the worker's pid and start time (written by the backend right after it starts it)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text

TERMINAL = ("succeeded", "failed", "cancelled")


class JobFiles:
    """Paths and atomic readers/writers for one job folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.spec = self.root / "spec.json"
        self.events = self.root / "events.jsonl"
        self.status = self.root / "status.json"
        self.checkpoints = self.root / "checkpoints"
        self.model = self.root / "model"
        self.log = self.root / "worker.log"
        self.worker = self.root / "worker.json"
        self.data = self.root / "data"

    def read_spec(self) -> dict[str, Any]:
        """The job's spec as the backend wrote it."""
        return json.loads(self.spec.read_text(encoding="utf-8"))

    def read_status(self) -> dict[str, Any] | None:
        """The last status the worker wrote, or None before it wrote one."""
        try:
            return json.loads(self.status.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_status(self, status: str, **fields: Any) -> None:
        """Replace status.json atomically, keeping fields of the previous status not given now."""
        old = self.read_status() or {}
        new = {**old, **fields, "status": status, "pid": os.getpid(), "updated": time.time()}
        atomic_write_text(self.status, json.dumps(new, indent=1))

    def append_event(self, kind: str, message: str = "", level: str = "info", **data: Any) -> None:
        """Append one event as a single line (one write, so a reader never sees half of it)."""
        line = json.dumps({"time": time.time(), "level": level, "kind": kind, "message": message, "data": data})
        with self.events.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

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
