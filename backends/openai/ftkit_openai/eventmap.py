"""OpenAI events, checkpoints and result rows as ftkit :class:`~ftkit.events.Event` objects."""

from __future__ import annotations

from typing import Any

from ftkit.events import Event, EventLevel

_LEVELS: dict[str, EventLevel] = {"info": "info", "warn": "warning", "warning": "warning", "error": "error"}
METRIC_KEYS = (
    "step", "total_steps", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
    "full_valid_loss", "full_valid_mean_token_accuracy",
)


def with_epoch(data: dict[str, Any], steps_per_epoch: float | None) -> dict[str, Any]:
    """Add ``epoch`` (fractional) when the number of steps per epoch is known."""
    if steps_per_epoch and "step" in data:
        data["epoch"] = round(float(data["step"]) / steps_per_epoch, 4)
    return data


def job_event(ev: Any, steps_per_epoch: float | None = None) -> Event:
    """One ``fine_tuning.job.event`` (an SDK object) as an ftkit Event keyed by its id."""
    raw = getattr(ev, "data", None)
    data = dict(raw) if isinstance(raw, dict) else {}
    is_metrics = getattr(ev, "type", None) == "metrics"
    if is_metrics:
        data = {k: data[k] for k in METRIC_KEYS if data.get(k) is not None}
        if "step" in data:
            data["step"] = int(data["step"])
        with_epoch(data, steps_per_epoch)
    return Event(
        time=float(ev.created_at),
        level=_LEVELS.get(str(getattr(ev, "level", "info")), "info"),
        kind="metrics" if is_metrics else "message",
        message=str(getattr(ev, "message", "") or ""),
        data=data,
        key=str(ev.id),
    )


def checkpoint_event(ck: Any) -> Event:
    """One ``fine_tuning.job.checkpoint`` as a checkpoint Event."""
    metrics = ck.metrics.model_dump(exclude_none=True) if getattr(ck, "metrics", None) is not None else {}
    return Event(
        time=float(ck.created_at),
        kind="checkpoint",
        message=f"checkpoint at step {ck.step_number}: {ck.fine_tuned_model_checkpoint}",
        data={"step": int(ck.step_number), "model": ck.fine_tuned_model_checkpoint, "metrics": metrics},
        key=str(ck.id),
    )


def result_row_event(row: dict[str, Any], at: float, steps_per_epoch: float | None) -> Event:
    """A results-file row as a metrics Event (used for steps the event stream did not carry)."""
    data = with_epoch(dict(row), steps_per_epoch)
    parts = [f"{k}={v:.4g}" for k, v in data.items() if k in ("train_loss", "valid_loss")]
    return Event(time=at, kind="metrics", message=f"step {row['step']} (results file): " + ", ".join(parts),
                 data=data, key=f"results-step-{row['step']}")
