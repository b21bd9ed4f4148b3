"""The plan of a migration: its stages with their prices, the state kept between runs, and the outcome.

:class:`ftkit.migrate.workflow.Migration` builds a :class:`MigrationPlan` before spending anything
and keeps a :class:`MigrationState` in ``migration.json`` between runs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ftkit.errors import FtkitError
from ftkit.evaluate.predictions import load_reference
from ftkit.migrate.inventory import InventoryEntry
from ftkit.migrate.retrain import MappingRow


class Step(BaseModel):
    """One stage of the plan: what it does, what it costs, whether it is done."""

    name: str
    what: str
    usd: float | None = None
    hours: float | None = None
    spends: bool = False
    done: bool = False
    blocked: str | None = None
    assumptions: list[str] = Field(default_factory=list)


class MigrationState(BaseModel):
    """What a migration has done so far (``migration.json``)."""

    hosted_job: str
    attached_job: str | None = None
    retrain_job: str | None = None
    retrain_jobs: dict[str, str] = Field(default_factory=dict)  # "backend:model" -> job id, one per open model
    test_file: str | None = None
    scored_test: str | None = None
    report_html: str | None = None
    report_json: str | None = None
    verdict: str | None = None


class MigrationPlan(BaseModel):
    """What ``migrate`` will do, with the cost of each stage, before it spends anything."""

    hosted_job: str
    entry: InventoryEntry
    backend: str
    model: str
    test: str
    folder: str
    steps: list[Step]
    mapping: list[MappingRow] = Field(default_factory=list)

    @property
    def spend_usd(self) -> float:
        """Dollars the stages not yet done will spend (stages without a price count as 0)."""
        return sum(s.usd or 0.0 for s in self.steps if s.spends and not s.done)

    @property
    def needs_spending(self) -> bool:
        """Whether a stage that spends money or compute is still to run."""
        return any(s.spends and not s.done and not s.blocked for s in self.steps)

    def lines(self) -> list[str]:
        """The plan in words, one line per stage, then the mapping."""
        e = self.entry
        source = (e.shutdown_source or "").split(":")[0]  # the catalogue's full source is in the entry
        left = "unknown" if e.shutdown_date is None else f"{e.shutdown_date} ({e.days_left} days left, from {source})"
        out = [
            f"Migrating {self.hosted_job} ({e.fine_tuned_model}, {e.method}, task {e.task}) "
            f"to {self.backend}:{self.model}",
            f"  hosted model shuts down: {left}",
            f"  test file: {self.test}",
            f"  state: {self.folder}",
        ]
        for i, s in enumerate(self.steps, start=1):
            cost = "" if s.usd is None else f" ${s.usd:.4f}"
            cost += "" if not s.hours else f", {s.hours:.2f} h"
            mark = "done" if s.done else ("BLOCKED" if s.blocked else "to do")
            out.append(f"  {i}. {s.name} [{mark}]{cost}: {s.what}")
            if s.blocked:
                out.append(f"     ! {s.blocked}")
            out.extend(f"     - {a}" for a in s.assumptions)
        if self.mapping:
            out.append("  retraining settings (hosted -> local):")
            for m in self.mapping:
                out.append(f"     {m.setting}: {m.hosted!r} -> {m.local!r} ({m.why})")
        return out


class MigrationResult(BaseModel):
    """How a migration run ended."""

    plan: MigrationPlan
    state: MigrationState
    finished: bool
    message: str


def estimate_recording(entry: InventoryEntry, test: Path, preamble: str | None, labels: list[str] | None) -> Step:
    """The price of asking the hosted model once per test example (synchronous chat completions)."""
    from ftkit.costs.estimate import estimate_openai_inference
    from ftkit.data.convert import render_preamble
    from ftkit.data.tokens import encoding_for_model, get_encoding

    ref = load_reference(test)
    step = Step(
        name="record",
        spends=True,
        what=f"ask {entry.fine_tuned_model} once per test example ({len(ref)}) and keep its answers",
    )
    try:
        enc = get_encoding(encoding_for_model(entry.base_model))
        system = len(enc.encode_ordinary(render_preamble(labels or [], preamble))) if labels else 0
        inputs = sum(system + len(enc.encode_ordinary(t)) + 11 for t in ref.texts)  # 11: chat framing tokens
        if ref.task == "classification":
            outputs = len(ref) * max(len(enc.encode_ordinary(x)) for x in (labels or ref.label_set()))
        else:
            outputs = sum(len(enc.encode_ordinary(t)) for t in ref.targets)
        est = estimate_openai_inference(inputs, outputs, entry.fine_tuned_model or entry.base_model)
        step.usd, step.assumptions = est.usd, est.assumptions
    except (FtkitError, KeyError, ValueError) as e:
        step.assumptions = [f"no price: {e}"]
    return step
