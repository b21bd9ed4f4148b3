"""The rows of ``ftkit estimate``: the work every row prices, a priced row, and the catalogue-priced rows
that backends contribute through :meth:`ftkit.Backend.estimate_rows`.

The core builds one :class:`EstimateWork` (the data, its tokens, one number of epochs, the test set) and asks
every backend for its rows; it never needs to know which backend is which. A backend prices the work with its
own knowledge (tokenizer, device, measured speed, an offer) and, where it has alternatives it cannot try here
(every catalogued GPU at every provider), with the shared catalogue formulas in :mod:`ftkit.costs.estimate`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from ftkit.backend import CostEstimate
from ftkit.costs.catalogue import gpu_rates
from ftkit.costs.estimate import CostSettings, estimate_local, estimate_remote, local_watts, remote_speed

EVAL_SPEEDUP = 2.0
"""Scoring a token is a forward pass: ≈2·N FLOPs against ≈4·N for LoRA training (ftkit.costs.flops)."""


class EstimateWork(BaseModel):
    """The work one comparison prices: the same for every row.

    Attributes:
        data: the training file.
        examples: training examples.
        billed_tokens_per_epoch: o200k tokens of one pass over the chat-formatted examples.
        epochs: passes over the data, the same for every row.
        epochs_source: where ``epochs`` comes from (the config, or which backend's plan).
        test: the test file, when evaluation is priced.
        test_examples: examples in it.
        test_tokens: its o200k tokens (prompts and answers).
        eval_input_tokens: prompt tokens sent to score the test set.
        eval_output_tokens: answer tokens produced.
        settings: the ``[costs]`` overrides.
    """

    data: Path
    examples: int
    billed_tokens_per_epoch: int
    epochs: int
    epochs_source: str
    test: Path | None = None
    test_examples: int | None = None
    test_tokens: int | None = None
    eval_input_tokens: int = 0
    eval_output_tokens: int = 0
    settings: CostSettings = Field(default_factory=CostSettings)

    @property
    def tokens(self) -> int:
        """o200k training tokens of all epochs."""
        return self.billed_tokens_per_epoch * self.epochs

    def work_line(self) -> str:
        """The assumption every catalogue row shares."""
        return (
            f"{self.billed_tokens_per_epoch:,} tokens/epoch (o200k count of the chat-formatted examples) × "
            f"{self.epochs} epochs ({self.epochs_source})"
        )


class CostRow(BaseModel):
    """One way to train the data set, with its cost (and a range where the speed is uncertain)."""

    backend: str
    target: str = Field(description="What is priced: a model, a device, a GPU at a provider.")
    train_usd: float | None
    train_hours: float | None
    eval_usd: float | None = None
    eval_hours: float | None = None
    total_usd: float | None = None
    usd_low: float | None = Field(default=None, description="Low end of the training cost when it is a range.")
    usd_high: float | None = Field(default=None, description="High end of the training cost when it is a range.")
    hours_low: float | None = None
    hours_high: float | None = None
    epochs: int | None = Field(default=None, description="Epochs this row priced (None: the backend did not say).")
    source: str = Field(description="'backend' (the backend's own estimate) or 'catalogue'.")
    installed: bool = True
    assumptions: list[str] = Field(default_factory=list)
    error: str | None = None

    def add_evaluation(self, evaluation: CostEstimate | None) -> CostRow:
        """Add answering the test set (its assumptions already worded as evaluation) and total the row."""
        if evaluation is not None:
            self.eval_usd, self.eval_hours = evaluation.usd, evaluation.hours
            self.assumptions += evaluation.assumptions
        if self.train_usd is not None:
            self.total_usd = self.train_usd + (self.eval_usd or 0.0)
        return self


def row_from_estimate(
    backend: str, target: str, estimate: CostEstimate, *, source: str = "backend", assumptions: list[str] | None = None
) -> CostRow:
    """A row from a :class:`CostEstimate` (its range and epochs carried over)."""
    return CostRow(
        backend=backend,
        target=target,
        train_usd=estimate.usd,
        train_hours=estimate.hours,
        usd_low=estimate.usd_low,
        usd_high=estimate.usd_high,
        hours_low=estimate.hours_low,
        hours_high=estimate.hours_high,
        epochs=estimate.epochs,
        source=source,
        assumptions=[*(assumptions or []), *estimate.assumptions],
    ).add_evaluation(None)


def as_evaluation(estimate: CostEstimate) -> CostEstimate:
    """The same estimate with every assumption marked as evaluation's."""
    return estimate.model_copy(update={"assumptions": ["evaluation: " + a for a in estimate.assumptions]})


def rented_gpu_rows(
    backend: str,
    model: str,
    parameters: float,
    work: EstimateWork,
    gpu_notes: Callable[[str], list[str]] | None = None,
) -> list[CostRow]:
    """The work priced on every catalogued GPU at every provider (``[costs] gpus``, ``providers``, ``price``).

    Evaluation runs on the same machine at scoring speed (:data:`EVAL_SPEEDUP` × the training speed).
    ``gpu_notes(gpu)`` adds the backend's own lines for a GPU (e.g. whether the job fits its memory).
    """
    cs = work.settings
    rows = []
    for gpu in cs.gpus:
        for rate in gpu_rates(gpu):
            if cs.providers and rate.provider not in cs.providers:
                continue
            tps, how = remote_speed(parameters, gpu, cs)
            est = estimate_remote(
                work.tokens,
                tps,
                gpu,
                rate.provider,
                startup_minutes=cs.startup_minutes,
                disk_gb=cs.disk_gb,
                price=cs.price,
                speed_source=how,
            ).model_copy(update={"epochs": work.epochs})
            row = row_from_estimate(
                backend, f"{model} on {rate.gpu} at {rate.provider}", est, source="catalogue",
                assumptions=[work.work_line(), *(gpu_notes(rate.gpu) if gpu_notes else [])],
            )  # fmt: skip
            evaluation = None
            if work.test_tokens:
                per_hour = est.usd / est.hours if est.hours else 0.0
                eval_tps = tps * EVAL_SPEEDUP
                hours = work.test_tokens / eval_tps / 3600
                evaluation = CostEstimate(
                    usd=per_hour * hours,
                    hours=hours,
                    assumptions=[
                        f"evaluation on the same machine: {work.test_tokens:,} evaluation tokens at "
                        f"{eval_tps:,.0f} tokens/s (scoring: forward pass only, {EVAL_SPEEDUP:g}× training) "
                        f"= {hours:.4f} h"
                    ],
                )
            rows.append(row.add_evaluation(evaluation))
    return rows


def local_evaluation(test_tokens: int, scoring_tps: float, settings: CostSettings, how: str) -> CostEstimate:
    """Scoring the test set on this machine: electricity at the scoring speed."""
    return as_evaluation(
        estimate_local(test_tokens, scoring_tps, local_watts(settings), settings.usd_per_kwh, speed_source=how,
                       what="evaluation")
    )  # fmt: skip
