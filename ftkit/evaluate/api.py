"""``ftkit.evaluate`` and ``ftkit.compare``: one evaluation for base models, OpenAI fine-tunes and LoRAs."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftkit.errors import BackendError, EvaluationError, FtkitError
from ftkit.evaluate.baseline import bow_baseline
from ftkit.evaluate.calibration import Calibrator, Method, cross_fit
from ftkit.evaluate.evidence import attach_evidence
from ftkit.evaluate.metrics import (
    LabelledPredictions,
    classification_metrics,
    confident_mistakes,
    generation_metrics,
    probability_metrics,
    to_arrays,
    vocabulary,
)
from ftkit.evaluate.paired import DEFAULT_ALPHA, DEFAULT_MARGIN, equivalence, noninferiority
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
from ftkit.evaluate.text import text_metrics, text_scorer

Source = Any  # a Predictor, a FineTuneJob, a predictions JSONL path, or a list of Classification/dicts


def _is_job(obj: Any) -> bool:
    return all(callable(getattr(obj, a, None)) for a in ("model", "metrics")) and hasattr(obj, "record")


def _job_of(predictor: Any) -> Any:
    """The job a predictor came from (``FineTuneJob.model()`` tags it with the job's id), or None."""
    ref = getattr(predictor, "ftkit_job_ref", None)
    if not (isinstance(ref, tuple) and len(ref) == 2):
        return None
    from ftkit.job import FineTuneJob
    from ftkit.store import JobStore

    try:
        return FineTuneJob.get(ref[0], store=JobStore(ref[1]))
    except FtkitError:
        return None


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
            "estimated_hours": est.get("hours") if est else None,
            "actual_hours": act.get("hours") if act else None,
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


def _job_source(job: Any, data: Any) -> tuple[Any, str | None, str | None]:
    """A job's recorded predictions on this test file where it has them, else its model.

    Returns (source, a note for the report, what to say if the model then fails to answer).
    """
    from ftkit.migrate.record import find_recording, recordings

    if isinstance(data, (str, Path)):
        rec = find_recording(job, data)
        if rec is not None:
            note = f"answers recorded from {rec.model} on {rec.recorded_at} (no model was called)"
            return rec.predictions, note, None
    known = recordings(job)
    hint = None
    if known:
        on = ", ".join(sorted({r.test_file for r in known}))
        hint = f"job {job.record.id} has no recording on {data} (it has recordings on: {on}) and its model"
    return job.model(), None, hint


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
    placebo: Source | bool | None = None,
    train: str | Path | None = None,
    baseline: bool = True,
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
        placebo: a placebo model to set beside this one (any source above), False for none; by
            default a FineTuneJob's newest succeeded placebo twin (:meth:`FineTuneJob.placebo`).
            A FineTuneJob, or a model from ``job.model()``, is also checked for leakage: test examples
            in its training or validation data.
        train: the training data (classification JSONL) for the bag-of-words baseline; a FineTuneJob's own
            training file by default.
        baseline: fit a TF-IDF + logistic regression baseline on ``train`` and report it beside the model,
            saying plainly when the model does not beat it (classification only; seconds on a CPU).
        reference: preference files only: the model whose likelihood ratios the model's are measured against
            (a Predictor or FineTuneJob that can score answers); for a FineTuneJob it defaults to the job's base
            model. See :mod:`ftkit.evaluate.preference`.

    Raises:
        EvaluationError: predictions and data do not fit together (file:line in the message), ``train``
            is not classification data, or a preference file comes with a model that cannot score answers.
    """
    source = predictor_or_predictions
    curve: list[dict[str, Any]] = []
    cost = job_info = None
    recorded_note = missing_hint = None
    # A job, or the model of one: its data are known, so leakage can be checked and a placebo found.
    job = source if _is_job(source) else _job_of(source)
    if _is_job(source):
        curve, cost, job_info = _job_details(source)
        job_train = source.record.spec.get("train")
        if train is None and job_train and source.record.spec.get("task") == "classification":
            train = job_train
        name = name or job_info["id"]
        source, recorded_note, missing_hint = _job_source(source, data)
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
    if ref.task == "text":
        report = _evaluate_text(source, ref, name, batch_size, show, bootstrap, seed)
        report.training_curve, report.cost, report.job = curve, cost, job_info
        return report
    try:
        answers, losses = _predict(
            source, ref, list(labels) if labels else None, batch_size, show, f"evaluating {name}"
        )
    except BackendError as e:
        if missing_hint is None:
            raise
        raise EvaluationError(f"{missing_hint} cannot answer: {e}") from None

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
        if baseline and train is not None:
            _add_baseline(report, Path(train), ref, vocab, lp, seed)
    if recorded_note:
        report.notes.append(recorded_note)
    options = {"ordered": ordered, "batch_size": batch_size, "progress": progress, "bootstrap": 0, "seed": seed}
    attach_evidence(report, job=job, data=data, placebo=placebo, options=options | {"labels": labels})
    report.training_curve = curve
    report.cost = cost
    report.job = job_info
    if cost:
        report.metrics["cost_estimated_usd"] = cost["estimated_usd"]
        report.metrics["cost_actual_usd"] = cost["actual_usd"]
        report.metrics["cost_estimated_hours"] = cost["estimated_hours"]
        report.metrics["cost_actual_hours"] = cost["actual_hours"]
    return report


def _add_baseline(
    report: EvaluationReport, train: Path, ref: Any, vocab: list[str], lp: LabelledPredictions, seed: int
) -> None:
    """Fit the bag-of-words baseline on ``train``, put it beside the model and say whether the model beats it."""
    if not train.is_file():
        report.notes.append(f"bag-of-words baseline not computed: the training file {train} is gone")
        return
    result = bow_baseline(train, ref.texts, ref.targets, vocab, lp.correct, seed=seed)
    report.baseline = result.model_dump()
    report.metrics |= {
        "baseline_accuracy": result.accuracy,
        "baseline_macro_f1": result.macro_f1,
        "baseline_ece": result.ece,
        "beats_baseline": result.beaten,
    }
    report.notes.insert(0, result.sentence())


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


def job_label(job: Any) -> str:
    """A job as a comparison names it: ``backend:model`` (``hf:smollm2-135m``), what a reader compares."""
    rec = job.record
    return f"{rec.backend}:{rec.spec.get('model') or 'default'}"  # the base model; None: the backend's default


def _evaluate_text(
    source: Source, ref: Reference, name: str, batch_size: int, progress: bool, bootstrap: int, seed: int
) -> EvaluationReport:
    """Perplexity (causal LMs) or masked-token accuracy (masked LMs) on unlabelled documents; see
    :mod:`ftkit.evaluate.text`."""
    if _is_job(source):
        source = source.model()
    scorer = text_scorer(source, name)
    scores = _run_batched(lambda b: scorer(list(b)), ref.texts, batch_size, progress, "scoring")
    metrics, ci = text_metrics(scores, n_resamples=bootstrap, seed=seed)
    report = EvaluationReport(name=name, task="text", data=ref.source, metrics=metrics, ci=ci)
    if "masked_token_accuracy" in metrics:
        report.notes.append(
            "masked_token_accuracy: share of the masked tokens (15% of each document's real tokens, all replaced by "
            "[MASK], seeded per document: the same positions for every model) predicted exactly; perplexity is that "
            "of the masked tokens"
        )
    else:
        report.notes.append("perplexity: exp of the mean negative log-likelihood of every token given the ones before")
    report.notes.append("95% intervals: percentile bootstrap over documents (tokens of a document are not independent)")
    return report


def _names(models: Mapping[str, Source] | Sequence[Source]) -> list[tuple[str, Source]]:
    """A name per model: given, or ``backend:model`` for a job, a file's stem, ``model<i>`` otherwise.

    Two jobs of the same backend and model are told apart by their ids.
    """
    if isinstance(models, Mapping):
        return [(str(k), v) for k, v in models.items()]
    labels = [job_label(m) for m in models if _is_job(m)]
    out: list[tuple[str, Source]] = []
    seen: set[str] = set()
    for i, m in enumerate(models):
        if isinstance(m, EvaluationReport):
            base = m.name
        elif _is_job(m):
            base = job_label(m)
            if labels.count(base) > 1:
                base = f"{base} ({m.record.id})"
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
    return m.get(
        "accuracy",
        m.get("exact_match", m.get("preference_accuracy", m.get("masked_token_accuracy", m.get("perplexity")))),
    )


def compare(
    models: Mapping[str, Source] | Sequence[Source],
    data: str | Path | Sequence[dict[str, Any]],
    labels: Sequence[str] | None = None,
    *,
    reference: str | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    **kwargs: Any,
) -> ComparisonReport:
    """Evaluate several models on the same test set: metrics side by side and paired tests per pair.

    Every pair gets McNemar's exact test ("do they differ?"). Every pair with the reference model also
    gets Tango's paired non-inferiority test ("is the other model not worse than the reference by more
    than ``margin``?") and the equivalence test (TOST, within ``±margin``), each with a one-sentence
    verdict in ``report.verdicts``.

    Args:
        models: ``{name: model}`` or a list; each a Predictor, FineTuneJob, predictions path or an
            :class:`EvaluationReport` already computed on ``data``.
        data: the shared reference file or rows.
        labels: the shared label vocabulary.
        reference: the name (or, for a job, its id) of the model the others must not be worse than;
            defaults to the first. Jobs given as a list are named ``backend:model``.
        margin: the accuracy loss the non-inferiority and equivalence tests allow (0.05 = five points).
        alpha: the one-sided significance level of those tests.
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
    ref_name = reference if reference is not None else next(iter(reports))
    if ref_name not in reports:  # a job named by its id (``ftkit compare ... --reference ftk-...``)
        ref_name = next((n for n, m in named if _is_job(m) and m.record.id == ref_name), ref_name)
    if ref_name not in reports:
        raise EvaluationError(f"reference {ref_name!r} is not one of the models compared: {', '.join(reports)}")
    pairs = []
    verdicts: list[str] = []
    for (a, ra), (b, rb) in itertools.combinations(reports.items(), 2):
        if ra.correct is None or rb.correct is None:
            continue
        test = mcnemar_exact(ra.correct, rb.correct)
        row: dict[str, Any] = {
            "a": a,
            "b": b,
            **test,
            "accuracy_a": _headline(ra),
            "accuracy_b": _headline(rb),
        }
        if ref_name in (a, b):
            new, rn = (b, rb) if a == ref_name else (a, ra)
            ni = noninferiority(
                rn.correct, reports[ref_name].correct, margin=margin, alpha=alpha, new=new, reference=ref_name
            )
            eq = equivalence(
                rn.correct, reports[ref_name].correct, margin=margin, alpha=alpha, new=new, reference=ref_name
            )
            row["noninferiority"] = ni.model_dump()
            row["equivalence"] = eq.model_dump()
            verdicts.append(ni.verdict)
        pairs.append(row)
    first = next(iter(reports.values()))
    return ComparisonReport(
        data=first.data, reports=reports, pairs=pairs, reference=ref_name, margin=margin, verdicts=verdicts
    )
