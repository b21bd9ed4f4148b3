"""What ``FineTuneJob.wait(progress=True)`` shows while a job runs: built from events only.

On a terminal it is a rich progress bar (status, steps, loss, elapsed and remaining time), drawn
as soon as waiting starts. When output is not a terminal (``nohup``, a CI log, ``| tee``) a bar
cannot redraw, and rich would print it once, at the end; so plain, timestamped lines are written
instead and flushed at once: one when waiting starts, one per status change, one every
``log_every`` steps, every warning, and a "still <status>" line when nothing else was said for
``heartbeat`` seconds (a model that takes minutes to load is not silence).
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ftkit.events import Event

LINES_PER_RUN = 20  # the default log_every aims at about this many step lines per job
HEARTBEAT_S = 60.0


class JobProgress:
    """A job's progress: a rich bar on a terminal, plain log lines elsewhere.

    Args:
        job_id: shown on the bar and on each line.
        console: where to write; the default writes to stdout (a terminal or not, as stdout is).
        log_every: without a terminal, a line every this many steps; None: about
            ``LINES_PER_RUN`` lines per job once its total is known (every 10 steps before).
        heartbeat: without a terminal, seconds of silence after which a "still <status>" line is written.
    """

    def __init__(
        self,
        job_id: str,
        console: Console | None = None,
        *,
        log_every: int | None = None,
        heartbeat: float = HEARTBEAT_S,
    ) -> None:
        self._console = console or Console(soft_wrap=True)
        self._live = self._console.is_terminal
        self._job_id = job_id
        self._log_every = log_every
        self._heartbeat = heartbeat
        self._status = ""
        self._step: int | None = None
        self._total: int | None = None
        self._loss = ""
        self._logged_step: int | None = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
            console=self._console,
        )
        self._task: TaskID = self._progress.add_task(f"{job_id} starting", total=None, loss="")

    def __enter__(self) -> JobProgress:
        if self._live:
            self._progress.start()
        else:
            self._line(f"{self._job_id}: following the job (a line every {self._every_text()}; Ctrl-C stops following)")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live:
            self._progress.stop()

    def update(self, status: str, events: list[Event], error: str | None = None) -> None:
        """Take new events and the job's status; redraw the bar or write the lines they call for.

        A loss that is nan or inf is shown as such, in red: never the last finite loss as if all were well.
        A failed job's ``error`` is printed once.
        """
        fields: dict[str, Any] = {}
        for ev in events:
            if ev.kind == "metrics":
                d = ev.data
                if d.get("total_steps"):
                    self._total = fields["total"] = int(d["total_steps"])
                if d.get("step") is not None:
                    self._step = fields["completed"] = int(d["step"])
                keys = [k for k in ("train_loss", "valid_loss") if d.get(k) is not None]
                if keys:
                    fields["loss"] = " ".join(_loss(k, d[k], markup=True) for k in keys)
                    self._loss = " ".join(_loss(k, d[k]) for k in keys)
                if not self._live and self._step_due():
                    self._logged_step = self._step
                    self._line(f"{self._job_id}: {self._position()}")
            elif ev.kind == "message" and ev.level in ("warning", "error"):
                self._line(f"[{ev.level}] {ev.message}")
        if status != self._status:
            self._status = status
            fields["description"] = f"[red]{status}[/red]" if status == "failed" else status
            if not self._live:
                ended = status in ("succeeded", "failed", "cancelled") and self._step is not None
                self._line(f"{self._job_id}: {status}" + (f" at {self._position()}" if ended else ""))
            if status == "failed" and error:
                self._line(f"failed: {error}", style="red")
        elif not self._live and time.monotonic() - self._last_line >= self._heartbeat:
            where = f", {self._position()}" if self._step is not None else ""
            self._line(f"{self._job_id}: still {status}{where}")
        if fields and self._live:
            self._progress.update(self._task, **fields)

    # ------------------------------------------------------------------ plain lines

    def _every(self) -> int:
        if self._log_every is not None:
            return max(1, self._log_every)
        return max(1, math.ceil(self._total / LINES_PER_RUN)) if self._total else 10

    def _every_text(self) -> str:
        n = self._log_every
        return f"{n} steps" if n is not None else f"~1/{LINES_PER_RUN} of the steps"

    def _step_due(self) -> bool:
        if self._step is None:
            return False
        if self._logged_step is None or self._step == self._total:
            return self._step != self._logged_step
        return self._step // self._every() > self._logged_step // self._every()  # at multiples of N

    def _position(self) -> str:
        elapsed = time.monotonic() - self._started
        text = f"step {self._step}/{self._total or '?'}"
        if self._total:
            text += f" ({100 * (self._step or 0) / self._total:.0f}%)"
        if self._loss:
            text += f" {self._loss}"
        text += f" elapsed {_duration(elapsed)}"
        if self._total and self._step:
            text += f" eta {_duration(elapsed * (self._total - self._step) / self._step)}"
        return text

    def _line(self, text: str, style: str | None = None) -> None:
        """One timestamped line, flushed now: a redirected stdout is block-buffered, and a log read
        with ``tail -f`` must not wait for 8 KiB of output."""
        if self._live:  # printed above the bar, which rich redraws below
            self._console.print(text, style=style, markup=False, highlight=False)
        else:
            self._console.print(f"{time.strftime('%H:%M:%S')} {text}", style=style, markup=False, highlight=False)
            self._console.file.flush()
        self._last_line = time.monotonic()


def _loss(name: str, value: Any, markup: bool = False) -> str:
    if isinstance(value, int | float) and not math.isfinite(value):
        return f"[bold red]{name}={value}[/bold red]" if markup else f"{name}={value}"
    return f"{name}={value:.4f}" if isinstance(value, int | float) else f"{name}={value}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
