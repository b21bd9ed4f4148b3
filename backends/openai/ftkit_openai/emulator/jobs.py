"""The fine-tuning job state machine of the emulator.

A job moves ``validating_files → queued → running → succeeded`` (or ``failed`` when its data
fails validation), one status every ``status_seconds``, then one training step every
``step_seconds``. Time is evaluated lazily: every request first advances each job to "now", and
events get the time they would have happened at. ``pause`` freezes the step clock; ``resume``
goes through ``queued`` again; ``cancel`` ends any job that has not ended.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ftkit_openai.emulator.settings import EmulatorSettings
from ftkit_openai.emulator.training import LossCurve, check_training_data, count_tokens, resolve_hyperparameters

TERMINAL = ("succeeded", "failed", "cancelled")
KEEP_CHECKPOINTS = 3  # OpenAI keeps the checkpoints of the last 3 epochs


@dataclass
class Job:
    """One emulated fine-tuning job and everything it has produced."""

    id: str
    model: str
    training_file: str
    validation_file: str | None
    method: str
    hyperparameters: dict[str, Any]
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]] | None
    created_at: float
    status: str = "validating_files"
    phase_started: float = 0.0
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    finished_at: float | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    n_examples: int = 0
    billing_tokens: int = 0
    curve: LossCurve | None = None
    has_validation: bool = False
    results_rows: list[dict[str, Any]] = field(default_factory=list)


class JobRunner:
    """Advances jobs through time; owned by :class:`ftkit_openai.emulator.state.State` under its lock."""

    def __init__(self, state: Any) -> None:
        self.state = state  # the State: files, ids, settings

    @property
    def settings(self) -> EmulatorSettings:
        return self.state.settings

    # ------------------------------------------------------------------ transitions

    def event(self, job: Job, at: float, message: str, level: str = "info", data: dict[str, Any] | None = None,
              kind: str = "message") -> None:
        """Record an event that happened at ``at``."""
        job.events.append({
            "object": "fine_tuning.job.event",
            "id": self.state.new_id("ftevent-", 24),
            "created_at": int(at),
            "level": level,
            "message": message,
            "data": data if data is not None else {},
            "type": kind,
        })

    def advance(self, job: Job, now: float) -> None:
        """Apply every transition that is due by ``now``."""
        s = self.settings
        while job.status not in TERMINAL and job.status != "paused":
            if job.status == "validating_files":
                due = job.phase_started + s.status_seconds
                if due > now:
                    return
                self._validate(job, due)
            elif job.status == "queued":
                due = job.phase_started + s.status_seconds + s.queue_seconds
                if due > now:
                    return
                job.status, job.phase_started = "running", due
                job.estimated_finish = int(due + (job.total_steps - job.step + 1) * s.step_seconds)
                self.event(job, due, "Fine-tuning job started" if job.step == 0 else "Fine-tuning job resumed")
            elif job.status == "running":
                due = job.phase_started + s.step_seconds
                if due > now:
                    return
                job.phase_started = due
                if job.step < job.total_steps:
                    self._step(job, due)
                else:
                    self._succeed(job, due)

    def _validate(self, job: Job, at: float) -> None:
        train = self.state.files[job.training_file]
        check = check_training_data(train.content, job.method, "training_file")
        if check.error_code is None and job.validation_file:
            vcheck = check_training_data(self.state.files[job.validation_file].content, job.method, "validation_file")
            if vcheck.error_code is not None:
                check.error_code, check.error_message = vcheck.error_code, vcheck.error_message
            job.has_validation = True
        if check.error_code is not None:
            param = "validation_file" if check.error_code == "invalid_validation_file" else "training_file"
            job.status, job.finished_at = "failed", at
            job.error = {"code": check.error_code, "message": check.error_message, "param": param}
            self.event(job, at, check.error_message or "", level="error")
            self.event(job, at, "The job has failed", level="error")
            return
        job.n_examples = len(check.examples)
        job.hyperparameters = resolve_hyperparameters(job.hyperparameters, job.n_examples, job.method)
        hp = job.hyperparameters
        job.steps_per_epoch = s_p_e = self.settings.steps_per_epoch or math.ceil(job.n_examples / hp["batch_size"])
        job.total_steps = s_p_e * hp["n_epochs"]
        job.billing_tokens = sum(count_tokens(job.model.removeprefix("ft:").split(":")[0], check.examples))
        job.curve = LossCurve(f"{job.id}:{job.seed}", job.total_steps, job.n_examples)
        job.status, job.phase_started = "queued", at
        self.event(job, at, "Files validated, moving job to queued state")

    def _step(self, job: Job, at: float) -> None:
        assert job.curve is not None
        job.step += 1
        n, total = job.step, job.total_steps
        loss = job.curve.train_loss(n)
        data: dict[str, Any] = {"step": n, "total_steps": total, "train_loss": loss,
                                "train_mean_token_accuracy": job.curve.accuracy(loss)}
        message = f"Step {n}/{total}: training loss={loss:.2f}"
        row: dict[str, Any] = {"step": n, "train_loss": loss, "train_accuracy": data["train_mean_token_accuracy"],
                               "valid_loss": None, "valid_mean_token_accuracy": None}
        if job.has_validation and (n % max(1, job.steps_per_epoch // 2) == 0 or n == total):
            vloss = job.curve.valid_loss(n)
            data.update(valid_loss=vloss, valid_mean_token_accuracy=job.curve.accuracy(vloss))
            row.update(valid_loss=vloss, valid_mean_token_accuracy=data["valid_mean_token_accuracy"])
            message += f", validation loss={vloss:.2f}"
            if n == total:
                full = round(vloss * 0.97, 5)
                data.update(full_valid_loss=full, full_valid_mean_token_accuracy=job.curve.accuracy(full))
                message += f", full validation loss={full:.2f}"
        job.results_rows.append(row)
        self.event(job, at, message, data=data, kind="metrics")
        if n % job.steps_per_epoch == 0:
            self._checkpoint(job, at, data)

    def _checkpoint(self, job: Job, at: float, data: dict[str, Any]) -> None:
        if job.fine_tuned_model is None:
            job.fine_tuned_model = self._model_name(job)
        metrics = {k: float(v) for k, v in data.items() if k != "total_steps"}
        job.checkpoints.append({
            "object": "fine_tuning.job.checkpoint",
            "id": self.state.new_id("ftckpt_", 24),
            "created_at": int(at),
            "fine_tuned_model_checkpoint": f"{job.fine_tuned_model}:ckpt-step-{job.step}",
            "fine_tuning_job_id": job.id,
            "metrics": metrics,
            "step_number": job.step,
        })
        self.state.models[f"{job.fine_tuned_model}:ckpt-step-{job.step}"] = job.id
        self.event(job, at, f"Checkpoint created at step {job.step}")

    def _model_name(self, job: Job) -> str:
        base = job.model
        if base.startswith("ft:"):
            base = base.split(":")[1]
        return f"ft:{base}:{self.settings.org_slug}:{job.suffix or ''}:{self.state.new_id('', 8)}"

    def _succeed(self, job: Job, at: float) -> None:
        if job.fine_tuned_model is None:
            job.fine_tuned_model = self._model_name(job)
        # Only the last epochs' checkpoints are kept; the final model is the last one.
        for ck in job.checkpoints[:-KEEP_CHECKPOINTS]:
            self.state.models.pop(ck["fine_tuned_model_checkpoint"], None)
        job.checkpoints = job.checkpoints[-KEEP_CHECKPOINTS:]
        self.state.models[job.fine_tuned_model] = job.id
        job.trained_tokens = job.billing_tokens * int(job.hyperparameters["n_epochs"])
        csv = _results_csv(job.results_rows).encode()
        content = base64.b64encode(csv) if self.settings.results_base64 else csv
        f = self.state.add_file("step_metrics.csv", "fine-tune-results", content, at)
        job.result_files = [f.id]
        job.status, job.finished_at, job.estimated_finish = "succeeded", at, None
        self.event(job, at, f"New fine-tuned model created: {job.fine_tuned_model}")
        self.event(job, at, "The job has successfully completed")

    # ------------------------------------------------------------------ actions

    def cancel(self, job: Job, now: float) -> None:
        job.status, job.finished_at, job.estimated_finish = "cancelled", now, None
        self.event(job, now, "Fine-tuning job cancelled")

    def pause(self, job: Job, now: float) -> None:
        job.status, job.estimated_finish = "paused", None
        self.event(job, now, "Fine-tuning job paused")

    def resume(self, job: Job, now: float) -> None:
        job.status, job.phase_started = "queued", now
        self.event(job, now, "Fine-tuning job resume requested, moving job to queued state")

    # ------------------------------------------------------------------ JSON

    def to_json(self, job: Job) -> dict[str, Any]:
        """The FineTuningJob object, with every field the spec lists plus the server's extras."""
        hp = job.hyperparameters
        shown = {k: hp.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        method_hp = dict(shown)
        if job.method == "dpo":
            method_hp["beta"] = hp.get("beta", "auto")
        error = job.error
        if error is None and not self.settings.healthy_error_null:
            error = {"code": None, "message": None, "param": None}
        return {
            "object": "fine_tuning.job",
            "id": job.id,
            "model": job.model,
            "created_at": int(job.created_at),
            "finished_at": int(job.finished_at) if job.finished_at is not None else None,
            "fine_tuned_model": job.fine_tuned_model if job.status == "succeeded" else None,
            "organization_id": self.settings.organization_id,
            "result_files": list(job.result_files),
            "status": job.status,
            "validation_file": job.validation_file,
            "training_file": job.training_file,
            "hyperparameters": shown,
            "trained_tokens": job.trained_tokens,
            "error": error,
            "user_provided_suffix": job.suffix,
            "seed": job.seed,
            "estimated_finish": int(job.estimated_finish) if job.estimated_finish is not None else None,
            "integrations": job.integrations,
            "metadata": job.metadata,
            "method": {"type": job.method, job.method: {"hyperparameters": method_hp}},
            "usage_metrics": None,
            "shared_with_openai": False,
        }


def _results_csv(rows: list[dict[str, Any]]) -> str:
    cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r[c]) for c in cols))
    return "\n".join(lines) + "\n"


def now() -> float:
    """The emulator's clock (a function so tests could replace it)."""
    return time.time()
