"""``ftkit.evaluate`` and ``ftkit.compare``: one evaluation for base models, OpenAI fine-tunes and LoRAs."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftkit.errors import EvaluationError
from ftkit.evaluate.calibration import Calibrator, Method, cross_fit
from ftkit.evaluate.metrics import (
    LabelledPredictions,
    classification_metrics,
    confident_mistakes,
    generation_metrics,
    probability_metrics,
    to_arrays,
    vocabulary,
)
from ftkit.evaluate.predictions import (
    Prediction,
    Reference,
    from_classifications,
    load_predictions,
    load_reference,
)
from ftkit.evaluate.preference import answer_scorer, preference_metrics
from ftkit.evaluate.report import ComparisonReport, EvaluationReport
from ftkit.evaluate.significance import mcnemar_exact

Source = Any  # a Predictor, a FineTuneJob, a predictions JSONL path, or a list of Classification/dicts


def _is_job(obj: Any) -> bool:
    return all(callable(getattr(obj, a, None)) for a in ("model", "metrics")) and hasattr(obj, "record")


def _is_predictor(obj: Any) -> bool:
    return callable(getattr(obj, "classify", None)) or callable(getattr(obj, "generate", None))


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_batched(
    fn: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any], batch_size: int, progress: bool, what: str
) -> list[Any]:
    """Call ``fn`` on batches of ``items`` with a rich progress bar; check every batch's answer count."""
    out: list[Any] = []
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    else:
        bar = None
    with bar if bar is not None else _null():
        task = bar.add_task(what, total=len(items)) if bar is not None else None
        for chunk in _batches(items, max(1, batch_size)):
            answers = list(fn(chunk))
            if len(answers) != len(chunk):
                raise EvaluationError(f"the model returned {len(answers)} answer(s) for a batch of {len(chunk)}")
            out.extend(answers)
            if bar is not None and task is not None:
                bar.advance(task, len(chunk))
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _predict(
    source: Any, ref: Reference, labels: list[str] | None, batch_size: int, progress: bool, what: str
) -> tuple[list[Prediction] | list[str], list[tuple[float, int]] | None]:
    """Answers of a Predictor, a predictions file or a list of answers for the reference examples."""
    if isinstance(source, (str, Path)):
        return load_predictions(source, ref), None
    if _is_predictor(source):
        if ref.task == "classification":
            vocab = labels or getattr(source, "labels", None) or ref.label_set()
            answers = _run_batched(
                lambda b: source.classify(list(b), labels=vocab), ref.texts, batch_size, progress, what
            )
            return from_classifications(answers), None
        outputs = _run_batched(lambda b: source.generate(list(b)), ref.prompts, batch_size, progress, what)
        losses = None
        scorer = getattr(source, "token_losses", None)
        if callable(scorer):
            # Optional: a Predictor that can score reference answers returns (summed NLL, tokens) each.
            losses = _run_batched(lambda b: scorer(list(b)), ref.conversations, batch_size, progress, "scoring")
        return [str(o) for o in outputs], losses
    if isinstance(source, Sequence):
        preds = from_classifications(source)
        if len(preds) != len(ref):
            raise EvaluationError(f"{len(preds)} prediction(s) for {len(ref)} example(s) in {ref.source}")
        return preds, None
    raise EvaluationError(
        f"cannot evaluate a {type(source).__name__}: give a Predictor, a FineTuneJob, a predictions JSONL path "
        "or a list of predictions"
    )


def _calibrate(
    report: EvaluationReport,
    lp: LabelledPredictions,
    method: Method,
    holdout_lp: LabelledPredictions | None,
    folds: int,
    seed: int,
    n_bins: int,
) -> None:
    assert lp.proba is not None
    if holdout_lp is not None:
        if holdout_lp.proba is None:
            raise EvaluationError("the holdout predictions have no probabilities to calibrate on")
        cal = Calibrator(method).fit(holdout_lp.proba, holdout_lp.y_true, lp.labels)
        after, how = cal.transform(lp.proba), f"fitted on a holdout of {holdout_lp.n} examples"
    else:
        after, cal = cross_fit(lp.proba, lp.y_true, method, folds=folds, seed=seed, labels=lp.labels)
        how = f"cross-fitted on the test set ({folds} stratified folds at most)"
    cal_lp = LabelledPredictions(lp.labels, lp.y_true, after.argmax(axis=1), after)
    before_m = probability_metrics(lp, n_bins)
    after_m = probability_metrics(cal_lp, n_bins)
    before_acc = float((lp.proba.argmax(axis=1) == lp.y_true).mean())
    after_acc = float(cal_lp.correct.mean())
    report.calibration = {
        "method": method,
        "fitted_on": how,
        "before": {k: before_m[k] for k in ("log_loss", "brier", "ece")} | {"accuracy": before_acc},
        "after": {k: after_m[k] for k in ("log_loss", "brier", "ece")} | {"accuracy": after_acc},
        "reliability": after_m["reliability"],
    }
    report.metrics |= {
        "calibrated_log_loss": after_m["log_loss"],
        "calibrated_brier": after_m["brier"],
        "calibrated_ece": after_m["ece"],
        "calibrated_accuracy": after_acc,
    }
    report._calibrator = cal
    report._calibrated_proba = after


def _job_details(job: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    rec = job.record
    curve = [m for m in job.metrics() if m.get("train_loss") is not None or m.get("valid_loss") is not None]
    est, act = rec.estimated_cost, rec.actual_cost
    cost = None
    if est or act:
        cost = {
            "estimated_usd": est.get("usd") if est else None,
            "actual_usd": act.get("usd") if act else None,
            "estimated": est,
            "actual": act,
        }
    info = {
        "id": rec.id,
        "backend": rec.backend,
        "model": rec.model or rec.spec.get("model"),
        "status": getattr(rec.status, "value", str(rec.status)),
    }
    return curve, cost, info


def evaluate(
    predictor_or_predictions: Source,
    data: str | Path | Sequence[dict[str, Any]],
    labels: Sequence[str] | None = None,
    *,
    name: str | None = None,
    ordered: bool | None = None,
    calibrate: Method | None = None,
    holdout: str | Path | Sequence[dict[str, Any]] | None = None,
    holdout_predictions: str | Path | None = None,
    folds: int = 5,
    batch_size: int = 32,
    progress: bool | None = None,
    bootstrap: int = 1000,
    n_bins: int = 10,
    mistakes: int = 10,
    seed: int = 0,
    reference: Source | None = None,
) -> EvaluationReport:
    """Judge a model on a held-out file.

    Example:
        >>> report = ftkit.evaluate(job.model(), "test.jsonl", calibrate="isotonic")
        >>> report.metrics["accuracy"], report.metrics["p_value_vs_majority"]
        >>> report.print(); report.to_html("report.html")

    Args:
        predictor_or_predictions: a Predictor (called in batches), a FineTuneJob (its model, loss curve
            and costs), a predictions JSONL path (lines ``{"prediction", "probabilities"?, "id"?}``,
            aligned by id or by line) or a list of Classification / prediction dicts.
        data: the reference JSONL (classification ``text``/``label``, or chat for generation) or its rows.
        labels: the label vocabulary; defaults to the Predictor's labels or those in the data.
        name: the model's name in tables.
        ordered: labels are ordered (Spearman correlation); None: when every label is a number.
        calibrate: ``platt`` or ``isotonic`` to fit a calibrator and report metrics before and after.
        holdout: reference data to fit the calibrator on; without it, calibration is cross-fitted.
        holdout_predictions: the model's predictions on ``holdout`` when the model is a file of predictions.
        folds: folds for cross-fitted calibration.
        batch_size: examples per Predictor call.
        progress: show a progress bar (default: when stderr is a terminal).
        bootstrap: bootstrap resamples for confidence intervals (0 turns them off).
        n_bins: bins of the reliability curve and ECE.
        mistakes: how many least/most confident mistakes to keep.
        seed: seed for bootstrap and calibration folds.
        reference: preference files only: the model whose likelihood ratios the model's are measured against
            (a Predictor or FineTuneJob that can score answers); for a FineTuneJob it defaults to the job's base
            model. See :mod:`ftkit.evaluate.preference`.

    Raises:
        EvaluationError: predictions and data do not fit together (file:line in the message), or a preference
            file with a model that cannot score answers.
    """
    source = predictor_or_predictions
    curve: list[dict[str, Any]] = []
    cost = job_info = None
    if _is_job(source):
        curve, cost, job_info = _job_details(source)
        name = name or job_info["id"]
        source = source.model()
    if name is None:
        if isinstance(source, (str, Path)):
            name = Path(source).stem
        else:
            name = type(source).__name__ if _is_predictor(source) else "predictions"
    show = sys.stderr.isatty() if progress is None else progress
    ref = load_reference(data)
    if ref.task == "preference":
        if reference is None and _is_job(predictor_or_predictions):
            reference = predictor_or_predictions.base_model()
        report = _evaluate_preference(source, reference, ref, name, batch_size, show)
        report.training_curve, report.cost, report.job = curve, cost, job_info
        return report
    answers, losses = _predict(source, ref, list(labels) if labels else None, batch_size, show, f"evaluating {name}")

    if ref.task == "generation":
        outputs = [a.label if isinstance(a, Prediction) else str(a) for a in answers]
        report = EvaluationReport(
            name=name, task="generation", data=ref.source, metrics=generation_metrics(ref.targets, outputs, losses)
        )
        report._outputs = outputs
        report._correct = np.array([t == o for t, o in zip(ref.targets, outputs, strict=True)], dtype=bool)
        if losses is None:
            report.notes.append("token-level loss needs a Predictor that can score (token_losses); not computed")
    else:
        preds = [a for a in answers if isinstance(a, Prediction)]
        given = labels if labels else (getattr(source, "labels", None) if _is_predictor(source) else None)
        vocab = vocabulary(ref.targets, preds, given)
        lp = to_arrays(ref.targets, preds, vocab)
        result = classification_metrics(lp, ordered=ordered, n_bins=n_bins, bootstrap=bootstrap, seed=seed)
        report = EvaluationReport(
            name=name,
            task="classification",
            data=ref.source,
            labels=vocab,
            metrics=result["metrics"],
            per_class=result["per_class"],
            confusion=result["confusion"],
            reliability=result["reliability"],
            ci=result["ci"],
            least_confident_mistakes=confident_mistakes(lp, ref.texts, ref.ids, mistakes, least=True),
            most_confident_mistakes=confident_mistakes(lp, ref.texts, ref.ids, mistakes, least=False)
            if lp.proba is not None
            else [],
        )
        report._arrays = lp
        report._correct = lp.correct
        report.notes.append(
            f"majority_rate is the share of the most frequent label in this test set "
            f"({result['metrics']['majority_label']!r}); p_value_vs_majority is a one-sided exact binomial test"
        )
        if lp.proba is None:
            report.notes.append("the predictions carry no probabilities: log loss, Brier and ECE are not computed")
        if calibrate:
            if lp.proba is None:
                raise EvaluationError("calibration needs probabilities; these predictions have none")
            holdout_lp = None
            if holdout is not None:
                href = load_reference(holdout)
                hsource = holdout_predictions if holdout_predictions is not None else source
                if isinstance(hsource, Sequence) and not isinstance(hsource, (str, Path)):
                    raise EvaluationError("give holdout_predictions (a JSONL path) to calibrate saved predictions")
                hans, _ = _predict(hsource, href, vocab, batch_size, show, "holdout")
                holdout_lp = to_arrays(href.targets, [a for a in hans if isinstance(a, Prediction)], vocab)
            _calibrate(report, lp, calibrate, holdout_lp, folds, seed, n_bins)
    report.training_curve = curve
    report.cost = cost
    report.job = job_info
    if cost:
        report.metrics["cost_estimated_usd"] = cost["estimated_usd"]
        report.metrics["cost_actual_usd"] = cost["actual_usd"]
    return report


def _evaluate_preference(
    source: Source, reference: Source | None, ref: Reference, name: str, batch_size: int, progress: bool
) -> EvaluationReport:
    """Score both answers of every pair under the model (and the reference); see :mod:`ftkit.evaluate.preference`."""
    chosen_convs = [[*p, {"role": "assistant", "content": a}] for p, a in zip(ref.prompts, ref.targets, strict=True)]
    rejected_convs = [[*p, {"role": "assistant", "content": a}] for p, a in zip(ref.prompts, ref.rejected, strict=True)]

    def scores(model: Source, what: str) -> tuple[np.ndarray, np.ndarray]:
        if _is_job(model):
            model = model.model()
        scorer = answer_scorer(model, what)
        both = _run_batched(lambda b: scorer(list(b)), chosen_convs + rejected_convs, batch_size, progress, "scoring")
        values = np.asarray(both, dtype=float)
        return values[: len(ref)], values[len(ref) :]

    chosen, rejected = scores(source, name)
    ref_chosen = ref_rejected = None
    if reference is not None:
        ref_chosen, ref_rejected = scores(reference, "the reference model")
    metrics, ci, correct, margins = preference_metrics(chosen, rejected, ref_chosen, ref_rejected)
    report = EvaluationReport(name=name, task="preference", data=ref.source, metrics=metrics, ci=ci)
    report._correct = correct
    if margins is not None:
        report.reward_margins = [float(m) for m in margins]
        report.notes.append(
            "preference_accuracy: share of pairs whose reward margin (the model's log-likelihood ratio to the "
            "reference, preferred minus non-preferred) is positive; Wilson 95% intervals"
        )
    else:
        report.notes.append(
            "no reference model: preference_accuracy is the share of pairs where the preferred answer is more "
            "likely (likelihood_accuracy); give reference= for DPO's reward accuracy and margins"
        )
    return report


def _names(models: Mapping[str, Source] | Sequence[Source]) -> list[tuple[str, Source]]:
    if isinstance(models, Mapping):
        return [(str(k), v) for k, v in models.items()]
    out: list[tuple[str, Source]] = []
    seen: set[str] = set()
    for i, m in enumerate(models):
        if isinstance(m, EvaluationReport):
            base = m.name
        elif _is_job(m):
            base = m.record.id
        elif isinstance(m, (str, Path)):
            base = Path(m).stem
        else:
            base = f"model{i + 1}"
        name, k = base, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append((name, m))
    return out


def _headline(report: EvaluationReport) -> Any:
    m = report.metrics
    return m.get("accuracy", m.get("exact_match", m.get("preference_accuracy")))


def compare(
    models: Mapping[str, Source] | Sequence[Source],
    data: str | Path | Sequence[dict[str, Any]],
    labels: Sequence[str] | None = None,
    **kwargs: Any,
) -> ComparisonReport:
    """Evaluate several models on the same test set: metrics side by side and McNemar's exact test per pair.

    Args:
        models: ``{name: model}`` or a list; each a Predictor, FineTuneJob, predictions path or an
            :class:`EvaluationReport` already computed on ``data``.
        data: the shared reference file or rows.
        labels: the shared label vocabulary.
        **kwargs: passed to :func:`evaluate` (calibrate, bootstrap, progress...).

    Raises:
        EvaluationError: fewer than two models, or reports computed on different test sets.
    """
    named = _names(models)
    if len(named) < 2:
        raise EvaluationError("compare needs at least two models")
    reports: dict[str, EvaluationReport] = {}
    for name, m in named:
        if isinstance(m, EvaluationReport):
            reports[name] = m
        else:
            reports[name] = evaluate(m, data, labels, name=name, **kwargs)
    sizes = {int(r.metrics.get("n") or 0) for r in reports.values()}
    if len(sizes) != 1:
        raise EvaluationError(f"the models were evaluated on test sets of different sizes: {sorted(sizes)}")
    pairs = []
    for (a, ra), (b, rb) in itertools.combinations(reports.items(), 2):
        if ra.correct is None or rb.correct is None:
            continue
        test = mcnemar_exact(ra.correct, rb.correct)
        pairs.append(
            {
                "a": a,
                "b": b,
                **test,
                "accuracy_a": _headline(ra),
                "accuracy_b": _headline(rb),
            }
        )
    first = next(iter(reports.values()))
    return ComparisonReport(data=first.data, reports=reports, pairs=pairs)
