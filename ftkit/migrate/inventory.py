"""What a user has on a hosted fine-tuning service, and how long each model lives: the inventory's data model.

A backend that can list its account's fine-tunes (the openai backend) implements
:class:`InventorySource`; ``ftkit openai inventory`` and :func:`ftkit.migrate.plan_migration`
read entries through it, so the core never imports a vendor SDK.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ftkit.backend import BackendConfig

Task = Literal["classification", "chat", "preference", "completion", "unknown"]


class InventoryEntry(BaseModel):
    """One fine-tuning job (or a fine-tuned model no listed job explains) and its remaining life.

    Attributes:
        job_id: the service's job id (``ftjob-...``); None for a model without a listed job.
        status: the job's status on the service.
        base_model: the model it was tuned from.
        fine_tuned_model: the resulting model name (None until it succeeded).
        method: ``supervised`` or ``dpo``.
        task: what the training file trains, guessed from its lines (see :mod:`ftkit.migrate.recover`).
        task_reason: why the task was guessed so.
        labels: the labels, for a classifier.
        training_file: the training file id.
        validation_file: the validation file id.
        trained_tokens: billed training tokens.
        cost_usd: training cost from ``trained_tokens`` and the price catalogue.
        hyperparameters: the service's resolved hyperparameters.
        created_at: when the job was created (UTC).
        shutdown_date: the day the model stops answering, if known.
        shutdown_source: where that date comes from: ``models API`` or the catalogue entry's source and date.
        days_left: days from today to ``shutdown_date`` (negative once past).
        available: False once the service says the model no longer exists.
    """

    job_id: str | None
    status: str
    base_model: str
    fine_tuned_model: str | None = None
    method: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    task: Task = "unknown"
    task_reason: str = ""
    labels: list[str] | None = None
    training_file: str | None = None
    validation_file: str | None = None
    trained_tokens: int | None = None
    cost_usd: float | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    created_at: dt.datetime | None = None
    shutdown_date: dt.date | None = None
    shutdown_source: str | None = None
    days_left: int | None = None
    available: bool = True

    @property
    def urgency(self) -> tuple[int, int, float]:
        """Sort key: models already gone, then soonest shutdown, then unknown dates; newest first within."""
        gone = 0 if not self.available else 1
        days = self.days_left if self.days_left is not None else 10**6
        created = -(self.created_at.timestamp() if self.created_at else 0.0)
        return gone, days, created


@runtime_checkable
class InventorySource(Protocol):
    """A backend that can list its account's fine-tunes with their lifetimes."""

    def inventory(self, config: BackendConfig, *, today: dt.date | None = None) -> list[InventoryEntry]:
        """Every fine-tuning job and fine-tuned model on the account, most urgent first."""
        ...

    def inventory_entry(
        self, backend_job_id: str, config: BackendConfig, *, today: dt.date | None = None
    ) -> InventoryEntry:
        """One job's entry."""
        ...


def days_until(day: dt.date | None, today: dt.date) -> int | None:
    """Whole days from ``today`` to ``day`` (None when ``day`` is None)."""
    return None if day is None else (day - today).days
