"""The progress bar ``FineTuneJob.wait(progress=True)`` shows: built from events only."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ftkit.events import Event


class JobProgress:
    """A rich progress bar over a job's metrics events (step, total_steps, loss)."""

    def __init__(self, job_id: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
            console=console,
        )
        self._task: TaskID = self._progress.add_task(job_id, total=None, loss="")
        self._status = ""

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, status: str, events: list[Event], error: str | None = None) -> None:
        """Advance the bar with new events and show the job's status.

        A loss that is nan or inf is shown as such, in red: never the last finite loss as if all were well.
        A failed job's ``error`` is printed once, under the bar.
        """
        fields: dict[str, Any] = {}
        for ev in events:
            if ev.kind == "metrics":
                d = ev.data
                if d.get("total_steps"):
                    fields["total"] = d["total_steps"]
                if d.get("step") is not None:
                    fields["completed"] = d["step"]
                loss = [_loss(k, d[k]) for k in ("train_loss", "valid_loss") if d.get(k) is not None]
                if loss:
                    fields["loss"] = " ".join(loss)
            elif ev.kind == "message" and ev.level in ("warning", "error"):
                self._progress.console.print(f"[{ev.level}] {ev.message}", markup=False, highlight=False)
        if status != self._status:
            self._status = status
            fields["description"] = f"[red]{status}[/red]" if status == "failed" else status
            if status == "failed" and error:
                self._progress.console.print(f"failed: {error}", style="red", markup=False, highlight=False)
        if fields:
            self._progress.update(self._task, **fields)


def _loss(name: str, value: Any) -> str:
    if isinstance(value, int | float) and not math.isfinite(value):
        return f"[bold red]{name}={value}[/bold red]"
    return f"{name}={value:.4f}" if isinstance(value, int | float) else f"{name}={value}"
