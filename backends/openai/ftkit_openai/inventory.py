"""The OpenAI account's fine-tunes: every job and fine-tuned model, its task, cost and remaining life.

For each job the training file is downloaded once (to ftkit's cache, as ``attach`` does) to guess
the task from its lines. The shutdown date comes from the models API's ``shutdown_date`` (the
fine-tuned model's, else its base model's) where the API gives one, else from the dated, sourced
table in ftkit's cost catalogue (:data:`ftkit.costs.catalogue.OPENAI_SHUTDOWNS`); each entry says
which. A fine-tuned model the models API no longer knows is reported as gone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_bytes
from ftkit.costs.catalogue import openai_shutdown
from ftkit.errors import APIError, DatasetError
from ftkit.migrate.inventory import InventoryEntry, days_until
from ftkit.migrate.recover import recover_task
from ftkit_openai import pricing, sunset
from ftkit_openai.client import OpenAIAPI
from ftkit_openai.config import OpenAIConfig

PAGE = 100
MODELS_API = "models API"


def training_file_path(api: OpenAIAPI, file_id: str) -> Path:
    """The file's content in ftkit's cache (downloaded on first use); the path ``attach`` uses too."""
    from ftkit.paths import cache_dir

    dest = cache_dir() / "openai-files" / f"{file_id}.jsonl"
    if not dest.exists():
        atomic_write_bytes(dest, api.call(api.client.files.content, file_id).read())
    return dest


def _parse_date(value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).date()
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def model_shutdown(api: OpenAIAPI, model: str) -> tuple[dt.date | None, str | None, bool]:
    """(shutdown date, its source, whether the model still exists) for a model name.

    The models API's ``shutdown_date`` of the model, else of its base model; else the catalogue's.
    """
    names = [model] + ([model.split(":")[1]] if model.startswith("ft:") else [])
    available = True
    for i, name in enumerate(names):
        try:
            obj = api.call(api.client.models.retrieve, name)
        except APIError as e:
            if e.status_code != 404:
                raise
            if i == 0:
                available = False
            continue
        day = _parse_date(getattr(obj, "shutdown_date", None) or (obj.model_extra or {}).get("shutdown_date"))
        if day is not None:
            return day, MODELS_API + ("" if i == 0 else f" (base model {name})"), available
    entry = openai_shutdown(model)
    if entry is not None:
        return dt.date.fromisoformat(entry.date), f"ftkit catalogue, as of {entry.as_of}: {entry.source}", available
    return None, None, available


def _all_jobs(api: OpenAIAPI) -> list[Any]:
    jobs: list[Any] = []
    after: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE}
        if after:
            kwargs["after"] = after
        page = api.call(api.client.fine_tuning.jobs.list, **kwargs)
        jobs.extend(page.data)
        if not page.has_more or not page.data:
            return jobs
        after = page.data[-1].id


def method_hyperparameters(job: Any) -> dict[str, Any]:
    """A job's resolved hyperparameters, from its method's (with DPO's ``beta``), else the legacy top level."""
    method = getattr(job, "method", None)
    kind = getattr(method, "type", None) or "supervised"
    inner = getattr(getattr(method, kind, None), "hyperparameters", None) if method is not None else None
    hp = inner or job.hyperparameters
    return {k: v for k, v in (hp.model_dump() if hp is not None else {}).items() if v is not None}


def entry_for_job(api: OpenAIAPI, job: Any, today: dt.date) -> InventoryEntry:
    """One job's inventory entry (downloads its training file to the cache to guess the task)."""
    method: Any = (job.method.type if job.method is not None else None) or "supervised"
    entry = InventoryEntry(
        job_id=job.id, status=job.status, base_model=job.model, fine_tuned_model=job.fine_tuned_model, method=method,
        training_file=job.training_file, validation_file=job.validation_file, trained_tokens=job.trained_tokens,
        hyperparameters=method_hyperparameters(job), created_at=dt.datetime.fromtimestamp(job.created_at, dt.UTC),
    )
    if job.trained_tokens is not None:
        entry.cost_usd = pricing.training_cost(job.model, job.trained_tokens)
    if job.training_file:
        try:
            recovered = recover_task(training_file_path(api, job.training_file))
            entry.task, entry.task_reason, entry.labels = recovered.task, recovered.reason, recovered.labels
        except (APIError, DatasetError) as e:
            entry.task_reason = f"training file not readable: {e}"
    entry.shutdown_date, entry.shutdown_source, entry.available = model_shutdown(
        api, job.fine_tuned_model or job.model)
    entry.days_left = days_until(entry.shutdown_date, today)
    return entry


def inventory(config: OpenAIConfig, *, today: dt.date | None = None) -> list[InventoryEntry]:
    """Every fine-tuning job and fine-tuned model on the account, most urgent first.

    Args:
        config: the openai backend's options (key, base URL).
        today: the day to count from; defaults to ``$FTKIT_TODAY`` or today (UTC).
    """
    on = sunset.today(today)
    api = OpenAIAPI(config)
    entries = [entry_for_job(api, job, on) for job in _all_jobs(api)]
    known = {e.fine_tuned_model for e in entries if e.fine_tuned_model}
    for model in api.call(api.client.models.list).data:
        name = str(model.id)
        if name.startswith("ft:") and ":ckpt-step-" not in name and name not in known:
            day, source, available = model_shutdown(api, name)
            entries.append(InventoryEntry(
                job_id=None, status="succeeded", base_model=name.split(":")[1], fine_tuned_model=name,
                task_reason="no fine-tuning job on this account lists this model", shutdown_date=day,
                shutdown_source=source, days_left=days_until(day, on), available=available,
                created_at=dt.datetime.fromtimestamp(model.created, dt.UTC) if model.created else None,
            ))
    return sorted(entries, key=lambda e: e.urgency)
