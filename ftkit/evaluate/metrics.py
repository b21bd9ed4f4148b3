"""Classification and generation metrics, computed with scikit-learn and scipy.

Everything here works on :class:`LabelledPredictions`: integer class indices into one label
vocabulary, ``-1`` for an answer that is not a label (unparseable), and an optional
probability matrix whose columns follow the vocabulary.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from ftkit.errors import EvaluationError
from ftkit.evaluate.predictions import Prediction
from ftkit.evaluate.significance import binomial_p_value
from ftkit.predictor import UNPARSEABLE

UNPARSEABLE_INDEX = -1


@dataclass
class LabelledPredictions:
    """Predictions as arrays over one label vocabulary.

    Attributes:
        labels: the vocabulary; column ``j`` of ``proba`` is ``labels[j]``.
        y_true: true class index per example.
        y_pred: the model's answer per example, ``-1`` where it is not a label.
        proba: (n, k) probabilities summing to one per row, or None when the model gave none.
    """

    labels: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.y_true.shape[0])

    @property
    def correct(self) -> np.ndarray:
        """Boolean array: the answer equals the true label."""
        return self.y_pred == self.y_true


def vocabulary(targets: Sequence[str], predictions: Sequence[Prediction], labels: Sequence[str] | None) -> list[str]:
    """The label vocabulary: ``labels`` when given, else every true label and every probability key."""
    if labels is not None:
        vocab = [str(x) for x in labels]
        if len(set(vocab)) != len(vocab):
            raise EvaluationError("labels contains duplicates")
        unknown = sorted(set(targets) - set(vocab))
        if unknown:
            raise EvaluationError(f"the data has label(s) {unknown} outside labels={vocab}")
        return vocab
    seen = set(targets)
    for p in predictions:
        if p.probabilities:
            seen.update(p.probabilities)
    seen.discard(UNPARSEABLE)
    return sorted(seen, key=_natural_key)


def _natural_key(label: str) -> tuple[int, float, str]:
    """Numbers sort numerically ("2" before "10") and before text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def to_arrays(targets: Sequence[str], predictions: Sequence[Prediction], labels: Sequence[str]) -> LabelledPredictions:
    """Index the true labels and answers; build the probability matrix when every answer has one."""
    if len(targets) != len(predictions):
        raise EvaluationError(f"{len(predictions)} prediction(s) for {len(targets)} example(s)")
    index = {lab: i for i, lab in enumerate(labels)}
    y_true = np.array([index[t] for t in targets], dtype=int)
    y_pred = np.array([index.get(p.label, UNPARSEABLE_INDEX) for p in predictions], dtype=int)
    proba = None
    if predictions and all(p.probabilities for p in predictions):
        proba = np.zeros((len(predictions), len(labels)))
        for r, p in enumerate(predictions):
            assert p.probabilities is not None
            for lab, v in p.probabilities.items():
                if lab in index:
                    proba[r, index[lab]] = v
        sums = proba.sum(axis=1, keepdims=True)
        # Renormalise over the vocabulary (mass on non-labels is reported as the unparseable rate);
        # a row with no mass on any label carries no information: uniform.
        proba = np.where(sums > 0, proba / np.where(sums > 0, sums, 1), 1.0 / len(labels))
    return LabelledPredictions(list(labels), y_true, y_pred, proba)


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def reliability(lp: LabelledPredictions, n_bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """Top-label expected calibration error and the reliability curve.

    Confidence is the highest class probability, and a prediction counts as right when that class
    is the true one. Bins are equal-width on [0, 1] with scikit-learn's ``calibration_curve``
    edges; ECE is the count-weighted mean gap between accuracy and confidence over the bins.
    """
    assert lp.proba is not None
    conf = lp.proba.max(axis=1)
    hit = (lp.proba.argmax(axis=1) == lp.y_true).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], conf)  # the binning calibration_curve uses
    curve = []
    ece = 0.0
    for b in range(n_bins):
        sel = bin_ids == b
        count = int(sel.sum())
        if not count:
            continue
        acc, mean_conf = float(hit[sel].mean()), float(conf[sel].mean())
        ece += count / lp.n * abs(acc - mean_conf)
        curve.append(
            {"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": mean_conf, "accuracy": acc, "count": count}
        )
    return float(ece), curve


def probability_metrics(lp: LabelledPredictions, n_bins: int = 10) -> dict[str, Any]:
    """Log loss, Brier score and ECE (None without probabilities)."""
    if lp.proba is None:
        return {"log_loss": None, "brier": None, "ece": None, "reliability": []}
    k = len(lp.labels)
    ll = skm.log_loss(lp.y_true, lp.proba, labels=list(range(k)))
    if k == 2:
        # scikit-learn's binary Brier score: squared error of the second class's probability.
        brier = skm.brier_score_loss(lp.y_true, lp.proba[:, 1], pos_label=1)
    else:
        brier = skm.brier_score_loss(lp.y_true, lp.proba, labels=list(range(k)))
    ece, curve = reliability(lp, n_bins)
    return {"log_loss": float(ll), "brier": float(brier), "ece": ece, "reliability": curve}


def majority(lp: LabelledPredictions) -> tuple[str, float]:
    """The most frequent true label and its share of the examples."""
    counts = np.bincount(lp.y_true, minlength=len(lp.labels))
    top = int(counts.argmax())
    return lp.labels[top], float(counts[top] / lp.n)


def macro_f1_batched(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 over the last axis, for a whole batch of bootstrap resamples at once.

    The same definition as scikit-learn's ``f1_score(average="macro", labels=range(k),
    zero_division=0)`` (a test checks them against each other); calling scikit-learn a thousand
    times costs seconds, this costs milliseconds.
    """
    f1 = np.zeros(y_true.shape[:-1])
    for c in range(k):
        t, p = y_true == c, y_pred == c
        tp = (t & p).sum(axis=-1)
        denom = t.sum(axis=-1) + p.sum(axis=-1)
        f1 += np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return f1 / k


def bootstrap_ci(
    lp: LabelledPredictions, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (scipy's ``bootstrap``) for accuracy and macro-F1."""
    if n_resamples <= 0 or lp.n < 2:
        return {}
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant statistic (all right) warns about degenerate intervals
        acc = stats.bootstrap(
            (lp.correct.astype(float),),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
        out["accuracy"] = [float(acc.confidence_interval.low), float(acc.confidence_interval.high)]
        k = len(lp.labels)
        f1 = stats.bootstrap(
            (lp.y_true, lp.y_pred),
            lambda t, p, axis=-1: macro_f1_batched(t, p, k),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
        out["macro_f1"] = [float(f1.confidence_interval.low), float(f1.confidence_interval.high)]
    return {k: [v if math.isfinite(v) else float("nan") for v in pair] for k, pair in out.items()}


def is_ordinal(labels: Sequence[str]) -> bool:
    """Labels are ordered when every one reads as a number ("1".."5", "0.5")."""
    try:
        [float(x) for x in labels]
    except ValueError:
        return False
    return True


def rank_correlation(lp: LabelledPredictions, order: Sequence[str]) -> float | None:
    """Spearman correlation between true and predicted rank (unparseable answers left out)."""
    rank = {lab: i for i, lab in enumerate(order)}
    by_index = np.array([rank[lab] for lab in lp.labels])
    ok = lp.y_pred != UNPARSEABLE_INDEX
    if ok.sum() < 3:
        return None
    t, p = by_index[lp.y_true[ok]], by_index[lp.y_pred[ok]]
    if np.all(t == t[0]) or np.all(p == p[0]):
        return None
    return _none_if_nan(float(stats.spearmanr(t, p).statistic))


def classification_metrics(
    lp: LabelledPredictions,
    *,
    ordered: bool | None = None,
    n_bins: int = 10,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every classification metric of one model on one test set.

    Returns a dict with ``metrics`` (flat: accuracy, macro_f1, log_loss, brier, ece,
    majority_rate, p_value_vs_majority, unparseable_rate, spearman...), ``per_class``,
    ``confusion``, ``reliability`` and ``ci``.
    """
    if lp.n == 0:
        raise EvaluationError("no examples to evaluate")
    k = len(lp.labels)
    idx = list(range(k))
    accuracy = float(skm.accuracy_score(lp.y_true, lp.y_pred))
    correct = int(lp.correct.sum())
    maj_label, maj_rate = majority(lp)
    prec, rec, f1, support = skm.precision_recall_fscore_support(lp.y_true, lp.y_pred, labels=idx, zero_division=0)
    per_class = [
        {
            "label": lab,
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, lab in enumerate(lp.labels)
    ]
    unparseable = int((lp.y_pred == UNPARSEABLE_INDEX).sum())
    cols = idx + ([UNPARSEABLE_INDEX] if unparseable else [])
    cm = skm.confusion_matrix(lp.y_true, lp.y_pred, labels=cols)[:k]
    probs = probability_metrics(lp, n_bins)
    order: list[str] | None = None
    if ordered is None and is_ordinal(lp.labels):
        order = sorted(lp.labels, key=float)
    elif ordered:
        order = list(lp.labels)
    metrics: dict[str, Any] = {
        "n": lp.n,
        "accuracy": accuracy,
        "macro_f1": float(skm.f1_score(lp.y_true, lp.y_pred, labels=idx, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(lp.y_true, lp.y_pred, labels=idx, average="weighted", zero_division=0)),
        "log_loss": probs["log_loss"],
        "brier": probs["brier"],
        "ece": probs["ece"],
        "majority_label": maj_label,
        "majority_rate": maj_rate,
        "p_value_vs_majority": binomial_p_value(correct, lp.n, maj_rate),
        "unparseable_rate": unparseable / lp.n,
        "spearman": rank_correlation(lp, order) if order else None,
    }
    ci = bootstrap_ci(lp, bootstrap, seed=seed)
    for name, (lo, hi) in ci.items():
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = lo, hi
    return {
        "metrics": metrics,
        "per_class": per_class,
        "confusion": {
            "rows": list(lp.labels),
            "columns": list(lp.labels) + ([UNPARSEABLE] if unparseable else []),
            "matrix": cm.astype(int).tolist(),
        },
        "reliability": probs["reliability"],
        "ci": ci,
    }


def confident_mistakes(
    lp: LabelledPredictions, texts: Sequence[str], ids: Sequence[str | None], n: int = 10, least: bool = True
) -> list[dict[str, Any]]:
    """The wrong answers the model was least (or most) sure of, with their text.

    Confidence is the probability of the answer given (1.0 for a model without probabilities,
    so then the order is the file order).
    """
    wrong = np.flatnonzero(~lp.correct)
    if lp.proba is not None:
        conf = np.array([lp.proba[i, lp.y_pred[i]] if lp.y_pred[i] >= 0 else lp.proba[i].max() for i in wrong])
    else:
        conf = np.ones(len(wrong))
    order = np.argsort(conf if least else -conf, kind="stable")[:n]
    out = []
    for j in order:
        i = int(wrong[j])
        out.append(
            {
                "index": i,
                "id": ids[i],
                "text": texts[i],
                "true": lp.labels[lp.y_true[i]],
                "predicted": lp.labels[lp.y_pred[i]] if lp.y_pred[i] >= 0 else UNPARSEABLE,
                "confidence": float(conf[j]) if lp.proba is not None else None,
                "p_true": float(lp.proba[i, lp.y_true[i]]) if lp.proba is not None else None,
            }
        )
    return out


def normalise_answer(text: str) -> str:
    """Whitespace-trimmed, case-folded, inner whitespace collapsed: what "exact match" compares."""
    return " ".join(text.split()).casefold()


def generation_metrics(
    targets: Sequence[str], outputs: Sequence[str], token_losses: Sequence[tuple[float, int]] | None = None
) -> dict[str, Any]:
    """Exact match (strict and normalised) and, when scored, the mean token-level loss.

    ``token_losses`` holds (summed negative log-likelihood, token count) of each reference
    answer; the mean is over tokens, and its exponential is the perplexity.
    """
    if len(targets) != len(outputs):
        raise EvaluationError(f"{len(outputs)} output(s) for {len(targets)} example(s)")
    n = len(targets)
    strict = sum(t == o for t, o in zip(targets, outputs, strict=True))
    loose = sum(normalise_answer(t) == normalise_answer(o) for t, o in zip(targets, outputs, strict=True))
    m: dict[str, Any] = {
        "n": n,
        "exact_match": strict / n if n else 0.0,
        "exact_match_normalised": loose / n if n else 0.0,
        "token_loss": None,
        "perplexity": None,
    }
    if token_losses:
        nll = sum(x for x, _ in token_losses)
        tokens = sum(c for _, c in token_losses)
        if tokens:
            m["token_loss"] = nll / tokens
            m["perplexity"] = math.exp(min(nll / tokens, 700.0))
    return m
