"""Progress while waiting for a job: a bar on a terminal, timestamped lines that stream everywhere else."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from ftkit.events import Event
from ftkit.progress import JobProgress
from tests.helpers import spam_rows, write_jsonl

RUN = (
    "import ftkit, ftkit.cli as c; from ftkit.testing import FakeBackend; ftkit.register_backend(FakeBackend); c.main()"
)


def _metrics(step: int, total: int, loss: float = 0.5) -> Event:
    return Event(kind="metrics", data={"step": step, "total_steps": total, "train_loss": loss})


def _plain() -> Console:
    return Console(file=io.StringIO(), record=True, width=200, force_terminal=False)


def test_plain_lines_every_n_steps_and_status_changes() -> None:
    console = _plain()
    with JobProgress("ftk-x", console=console, log_every=10) as bar:
        bar.update("validating", [])
        bar.update("running", [_metrics(s, 40) for s in range(1, 26)])
        bar.update("running", [_metrics(s, 40, loss=0.25) for s in range(26, 41)])
        bar.update("succeeded", [])
    lines = console.export_text().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ftk-x: ", ln) for ln in lines), lines
    steps = [int(m.group(1)) for ln in lines if (m := re.search(r": step (\d+)/40 \(", ln))]
    assert steps == [1, 10, 20, 30, 40]  # the first step (something at once), then every 10
    assert any("step 40/40 (100%) train_loss=0.2500" in ln and "succeeded" in ln for ln in lines)
    assert [ln.split(": ")[1].split()[0] for ln in lines if re.search(r": (validating|running)", ln)] == [
        "validating",
        "running",
    ]


def test_plain_default_is_about_twenty_lines_and_a_heartbeat() -> None:
    console = _plain()
    with JobProgress("ftk-x", console=console, heartbeat=0.0) as bar:
        bar.update("running", [])
        bar.update("running", [])  # nothing new: a "still running" line rather than silence
        bar.update("running", [_metrics(s, 1000) for s in range(1, 1001)])
    text = console.export_text()
    assert "ftk-x: still running" in text
    assert 20 <= len(re.findall(r": step \d+/1000", text)) <= 22


def test_nan_loss_and_failure_shown_on_a_terminal_and_in_lines() -> None:
    for terminal in (True, False):
        console = Console(file=io.StringIO(), record=True, width=200, force_terminal=terminal)
        with JobProgress("ftk-x", console=console) as bar:
            bar.update("running", [_metrics(2, 9)])
            bar.update("failed", [_metrics(3, 9, loss=math.nan)], error="loss became nan at step 3")
        text = console.export_text()
        assert "failed: loss became nan at step 3" in text
        if terminal:
            assert "3/9 steps train_loss=nan" in text.splitlines()[-1]  # the bad loss, not the last finite one
        else:
            assert "failed at step 3/9 (33%) train_loss=nan" in text


def test_train_without_a_terminal_streams_lines(tmp_path: Path) -> None:
    """``ftkit train`` piped (as under nohup): a first line before any work, then step lines while it runs.

    Before: nothing until ``created`` (after the data checks), and rich drew the bar once, at the end.
    """
    train = write_jsonl(tmp_path / "train.jsonl", spam_rows(20))
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(f'task = "classification"\ntrain = "{train}"\nbackend = "fake"\n'
                   "[fake]\nsteps = 40\nseconds_per_step = 0.1\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", RUN, "train", str(cfg), "--log-every", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    seen: list[tuple[str, bool]] = []  # (line, the process was still running when it arrived)
    for line in proc.stdout:
        seen.append((line.rstrip("\n"), proc.poll() is None))
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    print(f"whole run {time.monotonic() - start:.1f} s")
    lines = [ln for ln, _ in seen]
    assert "checking" in lines[0] and "created" in lines[1]
    live_steps = [ln for ln, running in seen if running and re.search(r": step \d+/40 \(", ln)]
    assert len(live_steps) >= 3, lines  # they arrived while the job ran, not in one block at the end
    assert lines[-1].endswith(": succeeded")
