"""``HFBackend.poll`` reads status.json before events.jsonl, so the worker's last events are never lost.

The worker appends its last event and only then writes its final status; the poll that sees a final status
is the last one (``FineTuneJob`` stops refreshing a finished job). If a poll read the events first and the
worker finished between its two reads, that poll would report the final status without the last event, and
no later poll would pick it up. These tests make the worker finish exactly between the two reads of one
poll, whichever order they come in, without a worker process: the "worker" writes through the same
``JobFiles`` methods the real one uses, and the backend reads the real files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ftkit_hf.backend import HFBackend, HFConfig, _create_time
from ftkit_hf.jobfiles import JobFiles

from ftkit.backend import JobContext, PollResult
from ftkit.events import JobStatus
from ftkit.spec import JobSpec


def _job(tmp_path: Path) -> tuple[JobContext, JobFiles]:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "win cash now", "label": "spam"}\n{"text": "see you at 6", "label": "ham"}\n')
    workdir = tmp_path / "job"
    workdir.mkdir()
    me = os.getpid()
    # The test process stands in for the worker: same pid and start time, so the backend sees it alive.
    state = {"pid": me, "pid_started": _create_time(me), "events_offset": 0, "events_line": 0}
    spec = JobSpec(task="classification", train=train, labels=["ham", "spam"])
    return JobContext(id="poll-order", spec=spec, config=HFConfig(), workdir=workdir, state=state), JobFiles(workdir)


def _finish_between_reads(monkeypatch: pytest.MonkeyPatch, finish: Any) -> dict[str, Any]:
    """Call ``finish()`` once, right after the first of a poll's two reads, once ``armed`` is set."""
    gate: dict[str, Any] = {"armed": False, "fired": False}
    read_status, read_events = JobFiles.read_status, HFBackend._read_events

    def after_first_read() -> None:
        if gate["armed"] and not gate["fired"]:
            gate["fired"] = True
            finish()

    def status_then_maybe_finish(self: JobFiles) -> dict[str, Any] | None:
        out = read_status(self)
        after_first_read()
        return out

    def events_then_maybe_finish(self: HFBackend, ctx: JobContext, files: JobFiles) -> Any:
        out = read_events(self, ctx, files)
        after_first_read()
        return out

    monkeypatch.setattr(JobFiles, "read_status", status_then_maybe_finish)
    monkeypatch.setattr(HFBackend, "_read_events", events_then_maybe_finish)
    return gate


@pytest.mark.parametrize(
    ("final", "last_event", "expected"),
    [
        ("succeeded", {"kind": "message", "message": "training done: 4 steps, 600 tokens/s"}, JobStatus.SUCCEEDED),
        ("failed", {"kind": "message", "message": "RuntimeError: out of memory", "level": "error"}, JobStatus.FAILED),
    ],
)
def test_last_event_survives_a_worker_finishing_mid_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final: str, last_event: dict[str, Any], expected: JobStatus
) -> None:
    ctx, files = _job(tmp_path)
    backend = HFBackend()

    def worker_finishes() -> None:  # the worker's order: last event appended, then the final status
        files.append_event(**last_event)
        files.write_status(final, error="RuntimeError: out of memory" if final == "failed" else None)

    gate = _finish_between_reads(monkeypatch, worker_finishes)

    # The worker's life before the race: started, one metrics event per step.
    files.write_status("running", started=0.0, error=None)
    files.append_event("message", "worker started")
    polls: list[PollResult] = [backend.poll(ctx)]
    for step in (1, 2):
        files.append_event("metrics", f"step {step}/4", step=step, total_steps=4, train_loss=1.0 / step)
        files.write_status("running", step=step, total_steps=4)
    polls.append(backend.poll(ctx))

    gate["armed"] = True
    # Poll the way FineTuneJob.refresh does: until a final status, then never again.
    while not polls[-1].status.is_terminal:
        polls.append(backend.poll(ctx))
        assert len(polls) < 10, "the job never reached a final status"
    assert gate["fired"], "the worker never finished between a poll's two reads: the test did not test anything"

    assert polls[-1].status is expected
    delivered = [(e.key, e.message) for p in polls for e in p.events]
    written = ["worker started", "step 1/4", "step 2/4", last_event["message"]]
    assert delivered == [(f"line-{i}", m) for i, m in enumerate(written, 1)], (
        f"events lost or repeated; statuses seen: {[p.backend_status for p in polls]}"
    )
    assert [p.status for p in polls[:-1]] == [JobStatus.RUNNING] * (len(polls) - 1)
    assert ctx.state["events_line"] == len(written)


def test_a_torn_last_line_is_delivered_by_the_next_poll(tmp_path: Path) -> None:
    """A line caught half-written is left for the next poll, not skipped or split into two events."""
    ctx, files = _job(tmp_path)
    backend = HFBackend()
    files.write_status("running", error=None)
    files.append_event("message", "worker started")
    with files.events.open("a", encoding="utf-8") as f:
        f.write('{"time": 1.0, "level": "info", "kind": "message", "message": "half')
    first = backend.poll(ctx)
    with files.events.open("a", encoding="utf-8") as f:
        f.write(' a line"}\n')
    second = backend.poll(ctx)
    assert [e.message for e in first.events] == ["worker started"]
    assert [(e.key, e.message) for e in second.events] == [("line-2", "half a line")]


def test_a_worker_that_finishes_and_exits_mid_poll_is_not_called_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes its final status and exits after the poll read "running": the poll must not
    conclude from the dead process that the job died (that poll is the last one: it would stick)."""
    ctx, files = _job(tmp_path)
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ctx.state.update(pid=worker.pid, pid_started=_create_time(worker.pid))

    def worker_finishes_and_exits() -> None:
        files.append_event("message", "training done")
        files.write_status("succeeded", error=None)
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(timeout=30)

    files.write_status("running", error=None)
    files.append_event("message", "worker started")
    gate = _finish_between_reads(monkeypatch, worker_finishes_and_exits)
    gate["armed"] = True
    result = HFBackend().poll(ctx)
    assert gate["fired"]
    assert result.status is JobStatus.SUCCEEDED, result.error
    assert [e.message for e in result.events] == ["worker started", "training done"]
