"""``ftkit estimate``: what training (and evaluating) one data set costs on every backend.

Every backend prices the same work through its own ``estimate_rows()`` (it knows its tokenizer, device,
measured speed or offer, and adds what it can price from the catalogue formulas of
:mod:`ftkit.costs.estimate`, e.g. every catalogued GPU at every provider). The core knows no backend name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ftkit.backend import INSTALL_HINTS, BackendConfig, JobContext, get_backend, installed_backends
from ftkit.costs.estimate import CostSettings, openai_epochs
from ftkit.costs.rows import CostRow, EstimateWork
from ftkit.errors import ConfigError, FtkitError
from ftkit.spec import JobSpec

__all__ = ["CostReport", "CostRow", "EstimateWork", "estimate_all"]


class CostReport(BaseModel):
    """Every row of ``ftkit estimate``, and the work they all price."""

    data: str
    test: str | None
    examples: int
    billed_tokens_per_epoch: int
    epochs: int = Field(description="Epochs every row prices.")
    epochs_source: str
    test_examples: int | None = None
    test_tokens: int | None = None
    rows: list[CostRow]

    def cheapest(self) -> CostRow | None:
        """The row with the lowest total cost (training + evaluation), among rows that price the same epochs."""
        priced = [r for r in self.rows if r.total_usd is not None and r.epochs in (None, self.epochs)]
        return min(priced, key=lambda r: r.total_usd or 0.0) if priced else None


def _settings(spec: JobSpec) -> CostSettings:
    raw = spec.backend_options.get("costs", {})
    try:
        return CostSettings.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"[costs] {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def _backend_spec(name: str, spec: JobSpec) -> tuple[JobSpec, BackendConfig]:
    """The spec as backend ``name`` sees it (its model filled in) and its validated options.

    Raises:
        ConfigError: a bad option in the backend's section (``ftkit create`` refuses the same file).
    """
    be = get_backend(name)
    bspec, raw = spec.for_backend(name)
    try:
        config = be.config_model.model_validate(raw)
    except ValidationError as e:
        if any(err["type"] != "missing" for err in e.errors()):
            be.parse_config(raw)  # raises the ConfigError naming the backend and the option, as `create` does
        # Only required options missing (e.g. no [remote] provider): the catalogue can still price the work,
        # and the backend's own estimate says what is missing.
        config = be.config_model.model_construct(**raw)
    if bspec.model is None:
        bspec = bspec.model_copy(update={"model": be.default_model(bspec.task)})
    return bspec, config


def _epochs(spec: JobSpec, names: list[str], configs: dict[str, tuple[JobSpec, BackendConfig]]) -> tuple[int, str]:
    """One number of epochs for every row: the config's, else the first backend's own plan, else OpenAI's rule."""
    if spec.hyperparameters.epochs:
        return spec.hyperparameters.epochs, "set in the config"
    for name in names:
        if name not in configs:
            continue
        bspec, config = configs[name]
        try:
            planned = get_backend(name).planned_epochs(bspec, config)
        except FtkitError:
            continue
        if planned:
            return planned, f"{name}'s plan for this data; set `epochs` so every backend trains this many"
    return 0, ""


def estimate_all(
    data: str | Path | None = None,
    *,
    config: str | Path | None = None,
    backends: list[str] | None = None,
    test: str | Path | None = None,
    settings: CostSettings | None = None,
) -> CostReport:
    """Price the same work, training ``data`` (and answering ``test``), on every installed backend.

    Every row prices the same number of epochs: the config's ``epochs``, else the plan of the first backend
    listed that plans them from the data (hf), else OpenAI's "auto" rule. Each backend contributes its own
    rows (:meth:`ftkit.Backend.estimate_rows`); the core knows no backend by name.

    Args:
        data: the training JSONL; defaults to the config's ``train``.
        config: a TOML/YAML job config: its model, epochs, backend sections and ``[costs]`` overrides.
        backends: only these backends; one that is not installed gets a row saying so.
        test: a test JSONL to price evaluation on.
        settings: overrides instead of the config's ``[costs]`` section.

    Raises:
        ConfigError: no data, a bad ``[costs]`` section, or a bad option in a backend's section.
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
    target = f"openai:{cs.openai_model}"
    stats = Dataset.load(spec.train).stats(target=target, labels=spec.labels, preamble=spec.preamble)
    test_stats = Dataset.load(test).stats(target=target, labels=spec.labels, preamble=spec.preamble) if test else None
    test_tokens = test_stats.tokens.total if test_stats and test_stats.tokens else None
    n_test = test_stats.examples if test_stats else None

    installed = installed_backends()
    names = backends or [n for n in installed if n != "fake"]
    # Options are checked first, for every backend asked: a misspelled option fails here as `create` fails.
    configs = {name: _backend_spec(name, spec) for name in names if name in installed}
    epochs, epochs_source = _epochs(spec, names, configs)
    if not epochs:
        epochs, epochs_source = openai_epochs(stats.examples), "OpenAI's auto rule for this many examples"
    work = EstimateWork(
        data=spec.train,
        examples=stats.examples,
        billed_tokens_per_epoch=stats.billed_tokens_per_epoch,
        epochs=epochs,
        epochs_source=epochs_source,
        test=Path(test) if test else None,
        test_examples=n_test,
        test_tokens=test_tokens,
        # Evaluation sends each prompt without its answer: the reply tokens are priced as output instead.
        eval_input_tokens=max(0, (test_tokens or 0) - (n_test or 0) * cs.eval_output_tokens),
        eval_output_tokens=(n_test or 0) * cs.eval_output_tokens,
        settings=cs,
    )
    rows: list[CostRow] = []
    for name in names:
        rows += _rows(name, configs.get(name), work, installed)
    return CostReport(
        data=str(spec.train),
        test=str(test) if test else None,
        examples=stats.examples,
        billed_tokens_per_epoch=stats.billed_tokens_per_epoch,
        epochs=epochs,
        epochs_source=epochs_source,
        test_examples=n_test,
        test_tokens=test_tokens,
        rows=rows,
    )


def _rows(
    name: str, configured: tuple[JobSpec, BackendConfig] | None, work: EstimateWork, installed: dict[str, Any]
) -> list[CostRow]:
    """Backend ``name``'s rows, each checked to price ``work``; one row saying why when it gives none."""

    def failed(error: str) -> list[CostRow]:
        return [CostRow(backend=name, target=name, train_usd=None, train_hours=None, source="backend",
                        installed=name in installed, error=error)]  # fmt: skip

    if configured is None:
        hint = INSTALL_HINTS.get(name)
        return failed(
            f"no backend named {name!r} is installed (installed: {', '.join(installed) or 'none'})"
            + (f"; install it with: {hint}" if hint else "")
        )
    bspec, config = configured
    bspec = bspec.model_copy(
        update={"hyperparameters": bspec.hyperparameters.model_copy(update={"epochs": work.epochs})}
    )
    try:
        with tempfile.TemporaryDirectory(prefix="ftkit-estimate-") as tmp:
            ctx = JobContext(id="estimate", spec=bspec, config=config, workdir=Path(tmp))
            rows = get_backend(name).estimate_rows(ctx, work)
    except FtkitError as e:
        return failed(f"the backend's estimate failed: {e}")
    except Exception as e:  # a third-party backend's estimate must not break the table
        return failed(f"the backend's estimate failed: {type(e).__name__}: {e}")
    if not rows:
        return failed("the backend gives no estimate")
    for row in rows:
        if row.epochs is not None and row.epochs != work.epochs:
            row.error = f"prices {row.epochs} epochs, not the {work.epochs} of this comparison: left out of 'cheapest'"
    return rows


def summary_lines(report: CostReport) -> list[str]:
    """The figures every row shares, for the top of ``ftkit estimate``."""
    lines = [
        f"{report.data}: {report.examples:,} examples, {report.billed_tokens_per_epoch:,} billed tokens/epoch",
        f"every row prices {report.epochs} epoch{'s' if report.epochs != 1 else ''} ({report.epochs_source})",
    ]
    if report.test:
        lines.append(f"{report.test}: {report.test_examples:,} test examples, {report.test_tokens or 0:,} tokens")
    best = report.cheapest()
    if best is not None:
        lines.append(f"cheapest: {best.target} ({best.backend}) ${best.total_usd:.4f}")
    return lines


def as_dict(report: CostReport) -> dict[str, Any]:
    """JSON-able form of the report."""
    return report.model_dump(mode="json")
