"""``ftkit estimate``: what training (and evaluating) one data set costs on every backend.

Each installed backend's own ``estimate()`` is asked first (it knows its tokenizer, device or
chosen offer); the catalogue formulas in :mod:`ftkit.costs.estimate` fill in where a backend has
none, and price the alternatives (every catalogued GPU and provider for remote training).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ftkit.backend import CostEstimate, JobContext, get_backend, installed_backends
from ftkit.costs.catalogue import gpu_rates, model_parameters
from ftkit.costs.estimate import (
    CostSettings,
    estimate_local,
    estimate_openai,
    estimate_openai_inference,
    estimate_remote,
    local_speed,
    local_watts,
    remote_speed,
)
from ftkit.errors import ConfigError, FtkitError
from ftkit.spec import JobSpec

KNOWN_KINDS = ("openai", "hf", "remote")
DEFAULT_OPEN_MODEL = "smollm2-135m"
DEFAULT_LOCAL_EPOCHS = 3
EVAL_SPEEDUP = 2.0
"""Scoring a test example is a forward pass only: ≈2·N FLOPs/token against ≈4·N for LoRA training."""


class CostRow(BaseModel):
    """One way to train the data set, with its cost."""

    backend: str
    target: str = Field(description="What is priced: a model, a device, a GPU at a provider.")
    train_usd: float | None
    train_hours: float | None
    eval_usd: float | None = None
    eval_hours: float | None = None
    total_usd: float | None = None
    source: str = Field(description="'backend' (the backend's own estimate) or 'catalogue'.")
    installed: bool = True
    assumptions: list[str] = Field(default_factory=list)
    error: str | None = None


class CostReport(BaseModel):
    """Every row of ``ftkit estimate``, and the data figures they share."""

    data: str
    test: str | None
    examples: int
    billed_tokens_per_epoch: int
    test_examples: int | None = None
    test_tokens: int | None = None
    rows: list[CostRow]

    def cheapest(self) -> CostRow | None:
        """The row with the lowest total cost (training + evaluation), ignoring rows without one."""
        priced = [r for r in self.rows if r.total_usd is not None]
        return min(priced, key=lambda r: r.total_usd or 0.0) if priced else None


def _settings(spec: JobSpec) -> CostSettings:
    raw = spec.backend_options.get("costs", {})
    try:
        return CostSettings.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"[costs] {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def _backend_estimate(name: str, spec: JobSpec) -> tuple[CostEstimate | None, str]:
    """The backend's own estimate (computed in a throwaway job folder) and the model it priced."""
    be = get_backend(name)
    bspec, raw = spec.for_backend(name)
    config = be.parse_config(raw)
    if bspec.model is None:
        bspec = bspec.model_copy(update={"model": be.default_model(bspec.task)})
    with tempfile.TemporaryDirectory(prefix="ftkit-estimate-") as tmp:
        est = be.estimate(JobContext(id="estimate", spec=bspec, config=config, workdir=Path(tmp)))
    return est, str(bspec.model)


def _gpu_memory_line(model: str, gpu: str, hf_options: dict[str, Any] | None) -> list[str]:
    """ftkit-hf's memory plan for ``model`` on ``gpu`` (fits, with what, or not), where ftkit-hf is installed."""
    try:
        from ftkit_hf.memory_plan import gpu_fit_line
    except ImportError:
        return []
    line = gpu_fit_line(model, gpu, options=hf_options)
    return [line] if line else []


def _total(row: CostRow) -> CostRow:
    if row.train_usd is not None:
        row.total_usd = row.train_usd + (row.eval_usd or 0.0)
    return row


def _catalogue_row(
    backend: str,
    target: str,
    train: CostEstimate,
    evaluation: CostEstimate | None,
    installed: bool,
    assumptions: list[str],
    error: str | None,
) -> CostRow:
    """A row priced by the catalogue formulas: ``train``, plus ``evaluation`` when a test set is priced."""
    row = CostRow(
        backend=backend,
        target=target,
        train_usd=train.usd,
        train_hours=train.hours,
        source="catalogue",
        installed=installed,
        assumptions=assumptions + train.assumptions,
        error=error,
    )
    return _add_evaluation(row, evaluation)


def _add_evaluation(row: CostRow, evaluation: CostEstimate | None) -> CostRow:
    """Add answering the test set (its assumptions already worded for the table) to ``row``; total it."""
    if evaluation is not None:
        row.eval_usd, row.eval_hours = evaluation.usd, evaluation.hours
        row.assumptions += evaluation.assumptions
    return _total(row)


def _local_evaluation(test_tokens: int, train_tps: float, cs: CostSettings) -> CostEstimate:
    """Scoring the test set on this machine: electricity at ``EVAL_SPEEDUP`` × the training speed."""
    ev = estimate_local(
        test_tokens,
        train_tps * EVAL_SPEEDUP,
        local_watts(cs),
        cs.usd_per_kwh,
        speed_source=f"{EVAL_SPEEDUP:g}× training speed: forward pass only",
    )
    return ev.model_copy(update={"assumptions": ["evaluation: " + a for a in ev.assumptions]})


def _remote_evaluation(test_tokens: int | None, train_tps: float, train: CostEstimate) -> CostEstimate:
    """Scoring the test set on the rented machine, at the training run's average hourly cost."""
    per_hour = train.usd / train.hours if train.hours else 0.0
    eval_tps = train_tps * EVAL_SPEEDUP
    hours = (test_tokens or 0) / eval_tps / 3600
    return CostEstimate(
        usd=per_hour * hours,
        hours=hours,
        assumptions=[
            f"evaluation on the same machine: {test_tokens:,} tokens at "
            f"{eval_tps:,.0f} tokens/s (forward only) = {hours:.4f} h"
        ],
    )


def estimate_all(
    data: str | Path | None = None,
    *,
    config: str | Path | None = None,
    backends: list[str] | None = None,
    test: str | Path | None = None,
    settings: CostSettings | None = None,
) -> CostReport:
    """Price training ``data`` (and answering ``test``) on every installed backend.

    Args:
        data: the training JSONL; defaults to the config's ``train``.
        config: a TOML/YAML job config: its model, epochs, backend sections and ``[costs]`` overrides.
        backends: only these backends; a known one that is not installed is priced from the catalogue.
        test: a test JSONL to price evaluation on.
        settings: overrides instead of the config's ``[costs]`` section.

    Raises:
        ConfigError: no data, or a bad ``[costs]`` section.
        DatasetError: the data file cannot be read.
    """
    from ftkit.data import Dataset

    if config is not None:
        spec = JobSpec.from_file(config)
        if data is not None:
            spec = spec.model_copy(update={"train": Path(data)})
    elif data is not None:
        first = next(iter(Dataset.load(data)), {})
        is_classification = "label" in first and "messages" not in first
        spec = JobSpec(task="classification" if is_classification else "chat", train=Path(data))
    else:
        raise ConfigError("give a data file or a config with `train`")
    cs = settings or _settings(spec)
    openai_model = spec.backend_options.get("openai", {}).get("model") or cs.openai_model
    target = f"openai:{openai_model}"
    stats = Dataset.load(spec.train).stats(target=target, labels=spec.labels, preamble=spec.preamble)
    test_stats = Dataset.load(test).stats(target=target, labels=spec.labels, preamble=spec.preamble) if test else None
    test_tokens = test_stats.tokens.total if test_stats and test_stats.tokens else None
    n_test = test_stats.examples if test_stats else None
    # Evaluation sends each prompt without its answer: the reply tokens are priced as output instead.
    eval_in = max(0, (test_tokens or 0) - (n_test or 0) * cs.eval_output_tokens)
    eval_out = (n_test or 0) * cs.eval_output_tokens

    installed = installed_backends()
    names = backends or [n for n in installed if n != "fake"] or list(KNOWN_KINDS)
    epochs = spec.hyperparameters.epochs
    local_epochs = epochs or DEFAULT_LOCAL_EPOCHS
    tokens = stats.billed_tokens_per_epoch * local_epochs
    rows: list[CostRow] = []
    for name in names:
        own: CostEstimate | None = None
        error = None
        own_model = ""
        if name in installed:
            try:
                own, own_model = _backend_estimate(name, spec)
            except FtkitError as e:
                error = f"the backend's own estimate failed: {e}"
            except Exception as e:  # a third-party backend's estimate must not break the table
                error = f"the backend's own estimate failed: {type(e).__name__}: {e}"
        if own is not None:
            row = CostRow(
                backend=name,
                target=own_model or name,
                train_usd=own.usd,
                train_hours=own.hours,
                source="backend",
                assumptions=list(own.assumptions),
            )
            rows.append(_total(row))
        if name == "openai":
            if own is None:
                try:
                    est = estimate_openai(stats.billed_tokens_per_epoch, stats.examples, openai_model, epochs)
                    rows.append(
                        _total(
                            CostRow(
                                backend=name,
                                target=openai_model,
                                train_usd=est.usd,
                                train_hours=None,
                                source="catalogue",
                                installed=name in installed,
                                assumptions=est.assumptions,
                                error=error,
                            )
                        )
                    )
                except ConfigError as e:
                    rows.append(
                        CostRow(
                            backend=name,
                            target=openai_model,
                            train_usd=None,
                            train_hours=None,
                            source="catalogue",
                            installed=name in installed,
                            error=str(e),
                        )
                    )
            if n_test and rows and rows[-1].backend == name and rows[-1].train_usd is not None:
                inf = estimate_openai_inference(eval_in, eval_out, openai_model, batch=True)
                rows[-1].eval_usd, rows[-1].eval_hours = inf.usd, None
                rows[-1].assumptions += ["evaluation: " + a for a in inf.assumptions]
                _total(rows[-1])
        elif name in ("hf", "remote"):
            model = spec.for_backend(name)[0].model or DEFAULT_OPEN_MODEL
            try:
                params = cs.model_parameters or model_parameters(model)
            except ConfigError as e:
                if own is None:
                    rows.append(
                        CostRow(
                            backend=name,
                            target=model,
                            train_usd=None,
                            train_hours=None,
                            source="catalogue",
                            installed=name in installed,
                            error=str(e),
                        )
                    )
                continue
            base = [
                f"{stats.billed_tokens_per_epoch:,} tokens/epoch (o200k count of the chat-formatted examples) × "
                f"{local_epochs} epochs" + ("" if epochs else " (default when the config sets none)")
            ]
            if name == "hf":
                tps, how = local_speed(params, cs)
                if own is None:
                    est = estimate_local(tokens, tps, local_watts(cs), cs.usd_per_kwh, speed_source=how)
                    evaluation = _local_evaluation(test_tokens or 0, tps, cs) if n_test else None
                    target = f"{model} on local {cs.local_device}"
                    rows.append(_catalogue_row(name, target, est, evaluation, name in installed, base, error))
                elif n_test and rows[-1].train_hours is not None:
                    # The backend's own row: its training figures, evaluation at the catalogue's local speed.
                    _add_evaluation(rows[-1], _local_evaluation(test_tokens or 0, tps, cs))
            else:
                for gpu in cs.gpus:
                    for rate in gpu_rates(gpu):
                        if cs.providers and rate.provider not in cs.providers:
                            continue
                        tps, how = remote_speed(params, gpu, cs)
                        est = estimate_remote(
                            tokens,
                            tps,
                            gpu,
                            rate.provider,
                            startup_minutes=cs.startup_minutes,
                            disk_gb=cs.disk_gb,
                            price=cs.price,
                            speed_source=how,
                        )
                        evaluation = _remote_evaluation(test_tokens, tps, est) if n_test else None
                        target = f"{model} on {rate.gpu} at {rate.provider}"
                        memory = _gpu_memory_line(model, rate.gpu, spec.backend_options.get("remote", {}).get("hf"))
                        rows.append(
                            _catalogue_row(name, target, est, evaluation, name in installed, base + memory, error)
                        )
        elif own is None:
            rows.append(
                CostRow(
                    backend=name,
                    target=name,
                    train_usd=None,
                    train_hours=None,
                    source="backend",
                    installed=name in installed,
                    error=error
                    or (
                        "the backend gives no estimate; the catalogue has no formula for it"
                        if name in installed
                        else f"no backend named {name!r} is installed (installed: {', '.join(installed) or 'none'})"
                    ),
                )
            )
    return CostReport(
        data=str(spec.train),
        test=str(test) if test else None,
        examples=stats.examples,
        billed_tokens_per_epoch=stats.billed_tokens_per_epoch,
        test_examples=n_test,
        test_tokens=test_tokens,
        rows=rows,
    )


def summary_lines(report: CostReport) -> list[str]:
    """The figures every row shares, for the top of ``ftkit estimate``."""
    lines = [f"{report.data}: {report.examples:,} examples, {report.billed_tokens_per_epoch:,} billed tokens/epoch"]
    if report.test:
        lines.append(f"{report.test}: {report.test_examples:,} test examples, {report.test_tokens or 0:,} tokens")
    best = report.cheapest()
    if best is not None:
        lines.append(f"cheapest: {best.target} ({best.backend}) ${best.total_usd:.4f}")
    return lines


def as_dict(report: CostReport) -> dict[str, Any]:
    """JSON-able form of the report."""
    return report.model_dump(mode="json")
