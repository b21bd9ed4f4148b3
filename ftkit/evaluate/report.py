"""Evaluation results: one model (:class:`EvaluationReport`) or several side by side
(:class:`ComparisonReport`), each printable as a terminal table, JSON or a self-contained HTML page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field, model_validator
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ftkit.atomic import atomic_write_text

# Metrics shown in tables, in this order, with how to format them.
_SHOWN: list[tuple[str, str]] = [
    ("n", "{:d}"),
    ("accuracy", "{:.4f}"),
    ("macro_f1", "{:.4f}"),
    ("log_loss", "{:.4f}"),
    ("brier", "{:.4f}"),
    ("ece", "{:.4f}"),
    ("majority_rate", "{:.4f}"),
    ("p_value_vs_majority", "{:.3g}"),
    ("unparseable_rate", "{:.4f}"),
    ("spearman", "{:.4f}"),
    ("baseline_accuracy", "{:.4f}"),
    ("baseline_macro_f1", "{:.4f}"),
    ("calibrated_log_loss", "{:.4f}"),
    ("calibrated_brier", "{:.4f}"),
    ("calibrated_ece", "{:.4f}"),
    ("preference_accuracy", "{:.4f}"),
    ("likelihood_accuracy", "{:.4f}"),
    ("reference_likelihood_accuracy", "{:.4f}"),
    ("reward_margin_mean", "{:.4f}"),
    ("reward_margin_median", "{:.4f}"),
    ("exact_match", "{:.4f}"),
    ("exact_match_normalised", "{:.4f}"),
    ("token_loss", "{:.4f}"),
    ("perplexity", "{:.3f}"),
    ("mean_nll", "{:.4f}"),
    ("masked_token_accuracy", "{:.4f}"),
    ("documents", "{:,}"),
    ("scored_tokens", "{:,}"),
    ("cost_estimated_usd", "${:.4f}"),
    ("cost_actual_usd", "${:.4f}"),
    ("cost_estimated_hours", "{:.3f} h"),
    ("cost_actual_hours", "{:.3f} h"),
]


def fmt(value: Any, pattern: str = "{:.4f}") -> str:
    """A metric value for a table: '-' for missing, the pattern otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class EvaluationReport(BaseModel):
    """How one model did on one held-out file.

    Attributes:
        name: the model's name in tables (a job id, a file name, "base"...).
        task: ``classification``, ``generation``, ``preference`` or ``text``.
        data: the reference file.
        labels: the label vocabulary (classification).
        metrics: flat metrics: accuracy, macro_f1, log_loss, brier, ece, majority_rate,
            p_value_vs_majority, unparseable_rate, spearman, bootstrap bounds (``accuracy_ci_low``...),
            calibrated_* after calibration; exact_match, token_loss for generation; preference_accuracy,
            likelihood_accuracy, reward_margin_* for preference (see :mod:`ftkit.evaluate.preference`); cost_*
            when known.
        per_class: precision, recall, F1 and support per label.
        confusion: ``rows`` (true labels), ``columns`` (answers, UNPARSEABLE last when present), ``matrix``.
        reliability: the reliability curve: per bin confidence, accuracy and count.
        ci: confidence intervals, ``{metric: [low, high]}`` (bootstrap; Wilson for preference rates).
        reward_margins: preference with a reference model: each pair's reward margin, in file order.
        least_confident_mistakes / most_confident_mistakes: wrong answers with their text.
        calibration: method, how it was fitted, and the reliability curve after calibration.
        training_curve: the job's metric events (step, train_loss, valid_loss...).
        cost: ``estimated`` / ``actual`` USD and their details, when a job is known.
        leakage: for a job: test examples also in its training or validation data (exact and
            near-duplicate counts, example lines); see :func:`ftkit.data.leakage.check_leakage`.
        placebo: real, placebo and majority-class rows and the test that the real model beats the
            placebo, when the job has a placebo twin (:meth:`ftkit.FineTuneJob.placebo`).
        power: the smallest gain over the majority rate this test set detects, and the size the
            observed gain needs (:mod:`ftkit.evaluate.power`).
        baseline: the bag-of-words baseline fitted on the training data (see
            :class:`ftkit.evaluate.baseline.BaselineResult`): its accuracy, macro-F1, ECE, whether the
            model beats it and McNemar's p-value; None when no training data was given.
        notes: caveats worth reading (no probabilities, majority rate from the test set...).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    task: Literal["classification", "generation", "preference", "text"]
    data: str
    # First after the names: a leak is the first thing a reader of the JSON should see.
    leakage: dict[str, Any] | None = None
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, Any]
    per_class: list[dict[str, Any]] = Field(default_factory=list)
    confusion: dict[str, Any] | None = None
    reliability: list[dict[str, float]] = Field(default_factory=list)
    ci: dict[str, list[float]] = Field(default_factory=dict)
    reward_margins: list[float] = Field(default_factory=list)
    least_confident_mistakes: list[dict[str, Any]] = Field(default_factory=list)
    most_confident_mistakes: list[dict[str, Any]] = Field(default_factory=list)
    calibration: dict[str, Any] | None = None
    training_curve: list[dict[str, Any]] = Field(default_factory=list)
    cost: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    placebo: dict[str, Any] | None = None
    power: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)

    # Arrays behind the numbers (not serialised): plots and McNemar's test need them.
    _arrays: Any = PrivateAttr(default=None)
    _calibrated_proba: Any = PrivateAttr(default=None)
    _calibrator: Any = PrivateAttr(default=None)
    _outputs: list[str] | None = PrivateAttr(default=None)
    _correct: Any = PrivateAttr(default=None)

    @property
    def calibrator(self) -> Any:
        """The fitted :class:`~ftkit.evaluate.Calibrator` when calibration was asked for, else None."""
        return self._calibrator

    @property
    def correct(self) -> Any:
        """Boolean numpy array: which examples this model answered right (for paired tests)."""
        return self._correct

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able data (NaN as null)."""
        return _json_safe(self.model_dump(mode="json"))

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, path: str | Path) -> None:
        """Write the JSON report (atomically)."""
        atomic_write_text(path, self.to_json())

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML report with plots; written atomically when ``path`` is given."""
        from ftkit.evaluate.html import render_report

        page = render_report(self)
        if path is not None:
            atomic_write_text(path, page)
        return page

    def tables(self) -> Group:
        """Rich renderables: leakage first, the metrics, per class, mistakes, placebo and power."""
        from ftkit.evaluate.evidence import evidence_renderables, leakage_renderables

        t = Table(title=f"{self.name} on {self.data}", show_header=True)
        t.add_column("metric")
        t.add_column("value", justify="right")
        for key, pattern in _SHOWN:
            if key in self.metrics and self.metrics[key] is not None:
                value = fmt(self.metrics[key], pattern)
                if key in self.ci:
                    lo, hi = self.ci[key]
                    value += f"  [{fmt(lo)}, {fmt(hi)}]"
                t.add_row(key, value)
        parts: list[Any] = [*leakage_renderables(self), t]
        if self.baseline:
            b = self.baseline
            bt = Table("", "accuracy", "macro-F1", "ECE", title="against a bag-of-words baseline (same training data)")
            bt.add_row(
                self.name,
                fmt(self.metrics.get("accuracy")),
                fmt(self.metrics.get("macro_f1")),
                fmt(self.metrics.get("ece")),
            )
            bt.add_row(
                f"TF-IDF + logistic regression (C={b['c']:g})", fmt(b["accuracy"]), fmt(b["macro_f1"]), fmt(b["ece"])
            )
            parts.append(bt)
        if self.per_class:
            pc = Table("label", "precision", "recall", "f1", "support", title="per class")
            for row in self.per_class:
                pc.add_row(row["label"], fmt(row["precision"]), fmt(row["recall"]), fmt(row["f1"]), str(row["support"]))
            parts.append(pc)
        if self.least_confident_mistakes:
            mt = Table("true", "answer", "confidence", "text", title="least confident mistakes")
            for m in self.least_confident_mistakes[:5]:
                text = m["text"] if len(m["text"]) <= 80 else m["text"][:77] + "..."
                mt.add_row(m["true"], m["predicted"], fmt(m["confidence"]), text)
            parts.append(mt)
        parts.extend(evidence_renderables(self))
        parts.extend(f"note: {n}" for n in self.notes)
        return Group(*parts)

    def print(self, console: Console | None = None) -> None:
        """Print the terminal tables."""
        (console or Console()).print(self.tables())

    def __rich__(self) -> Group:
        return self.tables()


class ComparisonReport(BaseModel):
    """Several models on the same test set: metrics side by side and McNemar's exact test per pair.

    Attributes:
        data: the shared reference file.
        reports: each model's own report, by name, in the order given.
        pairs: for each pair of models, the discordant counts (``a_only``: A right and B wrong) and
            McNemar's exact two-sided p-value; pairs with the reference also hold ``noninferiority``
            and ``equivalence`` (:class:`ftkit.evaluate.paired.PairedTest` as dicts).
        reference: the model the others were held against.
        margin: the accuracy margin of the non-inferiority and equivalence tests.
        verdicts: one sentence per model against the reference ("not worse by more than ...").
    """

    model_config = ConfigDict(extra="forbid")

    data: str
    reports: dict[str, EvaluationReport]
    pairs: list[dict[str, Any]] = Field(default_factory=list)
    reference: str | None = None
    margin: float | None = None
    verdicts: list[str] = Field(default_factory=list)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """``{model name: flat metrics}``."""
        return {name: r.metrics for name, r in self.reports.items()}

    @model_validator(mode="before")
    @classmethod
    def _derived_fields_are_not_input(cls, data: Any) -> Any:
        # A report read back from its JSON carries paired_power, which is computed from the pairs.
        if isinstance(data, dict) and "paired_power" in data:
            data = {k: v for k, v in data.items() if k != "paired_power"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paired_power(self) -> list[dict[str, Any]]:
        """Per pair: the smallest accuracy difference this test set detects with 80% power (McNemar,
        two-sided alpha 0.05, at the pair's observed share of disagreements) and the size the observed
        difference needs."""
        from ftkit.evaluate.evidence import paired_power

        return paired_power(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able data."""
        return _json_safe(self.model_dump(mode="json"))

    def to_json(self, indent: int | None = 2) -> str:
        """The comparison as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML comparison; written atomically when ``path`` is given."""
        from ftkit.evaluate.html import render_comparison

        page = render_comparison(self)
        if path is not None:
            atomic_write_text(path, page)
        return page

    def tables(self) -> Group:
        """Rich renderables: metrics side by side, then the pairwise tests."""
        names = list(self.reports)
        t = Table("metric", *names, title=f"{len(names)} models on {self.data}")
        for key, pattern in _SHOWN:
            values = [r.metrics.get(key) for r in self.reports.values()]
            if any(v is not None for v in values):
                t.add_row(key, *(fmt(v, pattern) for v in values))
        parts: list[Any] = [t]
        if self.pairs:
            p = Table("A", "B", "A right, B wrong", "B right, A wrong", "McNemar p", title="paired tests")
            for row in self.pairs:
                p.add_row(row["a"], row["b"], str(row["a_only"]), str(row["b_only"]), fmt(row["p_value"], "{:.3g}"))
            parts.append(p)
        for verdict in self.verdicts:
            parts.append(Text("verdict: " + verdict))
        if self.paired_power:
            from ftkit.evaluate.evidence import paired_power_table

            parts.append(paired_power_table(self.paired_power))
        return Group(*parts)

    def print(self, console: Console | None = None) -> None:
        """Print the terminal tables."""
        (console or Console()).print(self.tables())

    def __rich__(self) -> Group:
        return self.tables()
