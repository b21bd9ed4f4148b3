"""A stand-in for ``python -m ftkit_hf.worker run JOB_DIR`` that follows the same file protocol.

It trains nothing: it writes ``status.json`` (running → succeeded/failed), appends metrics events to
``events.jsonl`` once per fake step, and leaves a small ``model/`` folder. The remote backend's tests
use it where the trainer itself is not under test (fast, no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path


def write_status(root: Path, status: str, **fields: object) -> None:
    tmp = root / ".status.tmp"
    tmp.write_text(json.dumps({"status": status, "pid": os.getpid(), "updated": time.time(), **fields}))
    os.replace(tmp, root / "status.json")


def event(root: Path, kind: str, message: str = "", level: str = "info", **data: object) -> None:
    line = json.dumps({"time": time.time(), "level": level, "kind": kind, "message": message, "data": data})
    with (root / "events.jsonl").open("a") as f:
        f.write(line + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run"])
    p.add_argument("job_dir")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.1)
    p.add_argument("--fail-at", type=int, default=None)
    p.add_argument("--die-at", type=int, default=None, help="exit without writing a final status")
    p.add_argument("--require", action="append", default=[], help="a module the worker imports (shipping tests)")
    a = p.parse_args()
    root = Path(a.job_dir).resolve()
    spec = json.loads((root / "spec.json").read_text())
    for module in a.require:
        try:
            imported = importlib.import_module(module)
        except ImportError as e:
            write_status(root, "failed", error=f"cannot import {module}: {e}")
            return 1
        event(root, "message", f"imported {module} from {imported.__file__}")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    write_status(root, "running", started=time.time())
    event(root, "message", f"fake worker started for {spec['job_id']} (pid {os.getpid()})")
    for step in range(1, a.steps + 1):
        if stop["now"]:
            write_status(root, "cancelled")
            event(root, "message", "cancelled")
            return 0
        time.sleep(a.delay)
        if a.die_at == step:
            os._exit(3)
        if a.fail_at == step:
            event(root, "message", "loss is NaN", level="error")
            write_status(root, "failed", error="loss is NaN")
            return 1
        event(root, "metrics", step=step, total_steps=a.steps, train_loss=2.0 / step, epoch=step / a.steps)
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "adapter_model.safetensors").write_bytes(b"fake-adapter" * 100)
    (root / "model" / "ftkit-hf.json").write_text(json.dumps({"kind": "causal", "base_model": "base_model"}))
    write_status(root, "succeeded", finished=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main())
