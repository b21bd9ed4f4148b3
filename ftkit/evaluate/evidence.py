"""Evidence a researcher publishes beside the metrics: no leakage, better than a placebo, enough data.

Three sections of an :class:`~ftkit.evaluate.EvaluationReport`, each a plain dict (so ``--json`` holds
them as they are) built here and drawn by :func:`leakage_renderables` and :func:`evidence_renderables` (terminal) and
``html.py``:

- ``leakage``: the test file checked against the job's training and validation data
  (:func:`ftkit.data.leakage.check_leakage`); only for a FineTuneJob, whose data are known.
- ``placebo``: the real model, its placebo twin (same recipe, permuted labels) and the majority class
  side by side, with McNemar's exact one-sided test that the real model beats the placebo.
- ``power``: the smallest gain over the majority rate this test set detects, and the test size the
  observed gain would need (:mod:`ftkit.evaluate.power`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table
from scipy import stats

from ftkit.errors import EvaluationError
from ftkit.evaluate.power import binomial_min_detectable, binomial_sample_size, min_detectable, sample_size

if TYPE_CHECKING:
    from ftkit.evaluate.report import ComparisonReport, EvaluationReport

ALPHA = 0.05
POWER = 0.8


def attach_evidence(
    report: EvaluationReport,
    *,
    job: Any,
    data: str | Path | Sequence[dict[str, Any]],
    placebo: Any,
    options: dict[str, Any],
) -> None:
    """Fill the report's leakage, placebo and power sections where they apply.

    Args:
        report: a freshly computed report.
        job: the FineTuneJob evaluated, or None.
        data: the test data.
        placebo: a placebo model (any source ``evaluate`` takes), False for none, or None (or True):
            the job's newest succeeded placebo twin, when there is one.
        options: ``evaluate`` options to score the placebo with (labels, batch size...).
    """
    from ftkit.evaluate.api import evaluate

    if report.task == "classification" and report.metrics.get("n"):
        report.power = power_section(
            int(report.metrics["n"]), float(report.metrics["majority_rate"]), float(report.metrics["accuracy"])
        )
    if job is not None:
        report.leakage = job_leakage(job, data)
    twin, info = (None if placebo is True else placebo), None
    store = getattr(job, "store", None)
    if twin is None and store is not None and "placebo" not in job.record.manifest:
        from ftkit.placebo import succeeded_placebo

        twin, notes = succeeded_placebo(job, store=store)
        report.notes.extend(notes)
    if twin is None or twin is False or report.task != "classification":
        return
    if hasattr(twin, "record") and isinstance(twin.record.manifest.get("placebo"), dict):
        info = {"id": twin.record.id} | {k: twin.record.manifest["placebo"].get(k) for k in ("of", "seed", "method")}
    name = info["id"] if info else "placebo"
    twin_report = evaluate(twin, data, name=name, placebo=False, **options)
    report.placebo = placebo_section(report, twin_report, info or {"id": None})


def job_leakage(job: Any, data: str | Path | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The test data checked against the job's training and validation files, as a report section."""
    from ftkit.data.leakage import check_leakage
    from ftkit.manifest import file_sha256

    spec = job.spec
    report = check_leakage(
        data if isinstance(data, (str, Path)) else list(data),
        {"train": spec.train, "validation": spec.validation},
        role="test",
    )
    changed = []
    for role, entry in (job.record.manifest.get("data") or {}).items():
        p = Path(entry.get("path", ""))
        if p.is_file() and entry.get("sha256") and file_sha256(p) != entry["sha256"]:
            changed.append(f"{role} file {p} changed since the job was created: compared with its current contents")
    return {
        "leaked": report.leaked,
        "overlapping": report.overlapping,
        "examples": report.examples,
        "fraction": round(report.fraction, 4),
        "summary": report.summary(),
        "notes": changed,
    } | report.model_dump(mode="json", include={"overlaps", "missing"})


def mcnemar_one_sided(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test that model A is right more often than model B on the same examples.

    Under the null the examples only A gets right (``a_only``) are Binomial(a_only + b_only, 1/2);
    the p-value is scipy's one-sided ``binomtest`` on them (1.0 when the models never disagree).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0
    if a_only + b_only:
        p = float(stats.binomtest(a_only, a_only + b_only, 0.5, alternative="greater").pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def placebo_section(real: EvaluationReport, placebo: EvaluationReport, job: dict[str, Any]) -> dict[str, Any]:
    """Real, placebo and majority-class rows side by side, and whether the real model beats the placebo."""
    from sklearn.metrics import f1_score

    lp = real._arrays
    if lp is None or placebo.correct is None or len(placebo.correct) != len(real.correct):
        raise EvaluationError("the placebo must be evaluated on the same classification test set")
    top = int(np.bincount(lp.y_true, minlength=len(lp.labels)).argmax())
    always = np.full_like(lp.y_true, top)
    majority_f1 = float(
        f1_score(lp.y_true, always, labels=list(range(len(lp.labels))), average="macro", zero_division=0)
    )
    test = mcnemar_one_sided(real.correct, placebo.correct)
    m = real.metrics
    beats = test["p_value"] < ALPHA
    return {
        "job": job,
        "rows": [
            {"model": "real", "name": real.name, "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1")},
            {
                "model": "placebo",
                "name": placebo.name,
                "accuracy": placebo.metrics.get("accuracy"),
                "macro_f1": placebo.metrics.get("macro_f1"),
            },
            {
                "model": "majority",
                "name": f"always {m.get('majority_label')!r}",
                "accuracy": m.get("majority_rate"),
                "macro_f1": majority_f1,
            },
        ],
        "real_only_right": test["a_only"],
        "placebo_only_right": test["b_only"],
        "p_value_real_beats_placebo": test["p_value"],
        "p_value_placebo_beats_majority": placebo.metrics.get("p_value_vs_majority"),
        "real_beats_placebo": beats,
        "statement": (
            f"the real model {'beats' if beats else 'does not beat'} its placebo at alpha {ALPHA:g} "
            f"(McNemar exact one-sided p = {test['p_value']:.3g}: {test['a_only']} examples only the real model "
            f"gets right, {test['b_only']} only the placebo)"
        ),
    }


def power_section(n: int, majority_rate: float, accuracy: float) -> dict[str, Any] | None:
    """What this test set's size can show about beating the majority-class rate (one-sided, as the report's test)."""
    if n < 1 or not 0 < majority_rate < 1:
        return None
    # Exact binomial power: the report's test against the majority rate is the exact binomial test.
    mdd = binomial_min_detectable(n, majority_rate, alpha=ALPHA, power=POWER)
    gain = accuracy - majority_rate
    needed = binomial_sample_size(majority_rate, gain, alpha=ALPHA, power=POWER) if gain > 0 else None
    lines = [
        f"with {n} test examples, a gain over the majority rate {majority_rate:.4f} is detected with {POWER:.0%} "
        + (f"power from {mdd:.4f} up" if mdd is not None else "power at no size")
        + f" (exact one-sided binomial test, alpha {ALPHA:g})"
    ]
    if needed is not None:
        lines.append(
            f"the observed gain {gain:+.4f} needs {needed} test examples to be detected with {POWER:.0%} power"
        )
    return {
        "alpha": ALPHA,
        "power": POWER,
        "n": n,
        "baseline": majority_rate,
        "min_detectable_gain": mdd,
        "observed_gain": gain,
        "n_for_observed_gain": needed,
        "lines": lines,
    }


def paired_power(c: ComparisonReport) -> list[dict[str, Any]]:
    """Per pair of compared models: the smallest accuracy difference their test set detects (McNemar).

    The share of examples the two models disagree on is taken from the test set itself.
    """
    out = []
    for pair in c.pairs:
        n = pair.get("a_only", 0) + pair.get("b_only", 0) + pair.get("both", 0) + pair.get("neither", 0)
        acc_a, acc_b = pair.get("accuracy_a"), pair.get("accuracy_b")
        if not n or acc_a is None or acc_b is None:
            continue
        psi = (pair["a_only"] + pair["b_only"]) / n
        low, high = sorted((float(acc_a), float(acc_b)))
        row: dict[str, Any] = {"a": pair["a"], "b": pair["b"], "n": n, "discordant": psi}
        if 0 < low < 1 and psi > 0:
            kw: dict[str, Any] = {"design": "paired", "discordant": psi, "alpha": ALPHA, "alternative": "two-sided"}
            row["min_detectable_difference"] = min_detectable(n, low, power=POWER, **kw)
            diff = high - low
            row["n_for_observed_difference"] = (
                sample_size(low, diff, power=POWER, **kw) if 0 < diff < psi and high <= 1 else None
            )
        out.append(row)
    return out


def leakage_renderables(r: EvaluationReport) -> list[Any]:
    """Terminal lines of the leakage section, shown above everything else."""
    parts: list[Any] = []
    if r.leakage is not None:
        if r.leakage["leaked"]:
            parts.append(
                f"[bold red]LEAKAGE:[/bold red] {r.leakage['overlapping']} of {r.leakage['examples']} test "
                "examples are in the job's training or validation data"
            )
            parts.extend(f"  {line}" for line in r.leakage["summary"].splitlines())
        else:
            parts.append(
                f"no leakage: none of the {r.leakage['examples']} test examples is in the job's training "
                "or validation data (exact or after normalising whitespace/case)"
            )
        parts.extend(f"  note: {n}" for n in r.leakage.get("notes", []))
    return parts


def evidence_renderables(r: EvaluationReport) -> list[Any]:
    """Terminal renderables of the placebo and power sections, shown after the metrics."""
    from ftkit.evaluate.report import fmt

    parts: list[Any] = []
    if r.placebo is not None:
        t = Table("", "model", "accuracy", "macro-F1", title="real vs placebo vs majority class")
        for row in r.placebo["rows"]:
            t.add_row(row["model"], row["name"], fmt(row["accuracy"]), fmt(row["macro_f1"]))
        parts.extend([t, r.placebo["statement"]])
    if r.power is not None:
        parts.extend(f"power: {line}" for line in r.power["lines"])
    return parts


def paired_power_table(rows: list[dict[str, Any]]) -> Table:
    """The per-pair detectable differences as a terminal table."""
    from ftkit.evaluate.report import fmt

    t = Table(
        "A",
        "B",
        "disagree",
        "detectable difference",
        "n for observed difference",
        title=f"what this test set can detect ({POWER:.0%} power, McNemar, two-sided alpha {ALPHA:g})",
    )
    for row in rows:
        t.add_row(
            row["a"],
            row["b"],
            fmt(row["discordant"]),
            fmt(row.get("min_detectable_difference")),
            fmt(row.get("n_for_observed_difference"), "{:d}"),
        )
    return t
