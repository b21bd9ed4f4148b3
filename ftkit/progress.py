"""The progress bar ``FineTuneJob.wait(progress=True)`` shows: built from events only."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ftkit.events import Event


class JobProgress:
    """A rich progress bar over a job's metrics events (step, total_steps, loss)."""

    def __init__(self, job_id: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(job_id, total=None, loss="")
        self._status = ""

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, status: str, events: list[Event]) -> None:
        """Advance the bar with new events and show the job's status."""
        fields: dict[str, Any] = {}
        for ev in events:
            if ev.kind == "metrics":
                d = ev.data
                if d.get("total_steps"):
                    fields["total"] = d["total_steps"]
                if d.get("step") is not None:
                    fields["completed"] = d["step"]
                loss = [f"{k}={d[k]:.4f}" for k in ("train_loss", "valid_loss") if d.get(k) is not None]
                if loss:
                    fields["loss"] = " ".join(loss)
            elif ev.kind == "message" and ev.level in ("warning", "error"):
                self._progress.console.print(f"[{ev.level}] {ev.message}")
        if status != self._status:
            self._status = status
            fields["description"] = status
        if fields:
            self._progress.update(self._task, **fields)
