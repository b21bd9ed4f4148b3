"""Metrics against scikit-learn and scipy on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from ftkit.evaluate import binomial_p_value, evaluate, mcnemar_exact
from ftkit.evaluate.metrics import (
    LabelledPredictions,
    classification_metrics,
    generation_metrics,
    macro_f1_batched,
    to_arrays,
)
from ftkit.evaluate.predictions import Prediction
from ftkit.predictor import UNPARSEABLE


def random_case(n: int, k: int, seed: int) -> tuple[list[str], list[str], list[Prediction], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(k)]
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += rng.uniform(0, 1, n)  # better than chance, not perfect
    proba /= proba.sum(axis=1, keepdims=True)
    preds = [Prediction(label=labels[int(p.argmax())], probabilities=dict(zip(labels, map(float, p), strict=True)))
             for p in proba]
    return labels, [labels[i] for i in y], preds, y, proba


@pytest.mark.parametrize(("n", "k", "seed"), [(200, 2, 0), (300, 3, 1), (150, 5, 2)])
def test_metrics_match_sklearn(n: int, k: int, seed: int) -> None:
    labels, targets, preds, y, proba = random_case(n, k, seed)
    lp = to_arrays(targets, preds, labels)
    out = classification_metrics(lp, bootstrap=200, seed=seed)
    m = out["metrics"]
    y_pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, y_pred, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=list(range(k))))
    if k == 2:
        assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]))
    else:
        assert m["brier"] == pytest.approx(np.mean(np.sum((proba - np.eye(k)[y]) ** 2, axis=1)))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, y_pred, labels=list(range(k)), zero_division=0)
    for i, row in enumerate(out["per_class"]):
        assert row["label"] == labels[i]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (prec[i], rec[i], f1[i], sup[i]))
    assert out["confusion"]["matrix"] == skm.confusion_matrix(y, y_pred, labels=list(range(k))).tolist()
    majority = np.bincount(y, minlength=k).max() / n
    assert m["majority_rate"] == pytest.approx(majority)
    correct = int((y_pred == y).sum())
    # Independent of binomtest: P(X >= correct) from the binomial survival function.
    assert m["p_value_vs_majority"] == pytest.approx(stats.binom.sf(correct - 1, n, majority), rel=1e-9)
    lo, hi = out["ci"]["accuracy"]
    assert lo <= m["accuracy"] <= hi and hi - lo < 0.3
    lo, hi = out["ci"]["macro_f1"]
    assert lo <= m["macro_f1"] <= hi


def test_reliability_curve_and_ece_use_sklearn_bins() -> None:
    labels, targets, preds, y, proba = random_case(500, 3, 7)
    out = classification_metrics(to_arrays(targets, preds, labels), bootstrap=0)
    conf, hit = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=10, strategy="uniform")
    curve = out["reliability"]
    assert [b["accuracy"] for b in curve] == pytest.approx(prob_true)
    assert [b["confidence"] for b in curve] == pytest.approx(prob_pred)
    counts = np.array([b["count"] for b in curve])
    assert counts.sum() == 500
    expected_ece = float(np.sum(counts / 500 * np.abs(prob_true - prob_pred)))
    assert out["metrics"]["ece"] == pytest.approx(expected_ece)


def test_macro_f1_batched_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    for k in (2, 3, 6):
        t = rng.integers(0, k, (20, 50))
        p = np.where(rng.random((20, 50)) < 0.1, -1, rng.integers(0, k, (20, 50)))  # some unparseable
        got = macro_f1_batched(t, p, k)
        want = [skm.f1_score(t[i], p[i], labels=list(range(k)), average="macro", zero_division=0) for i in range(20)]
        assert got == pytest.approx(want)


@pytest.mark.parametrize(("k", "n", "rate"), [(61, 100, 0.5), (40, 100, 0.5), (9, 10, 0.7), (0, 5, 0.2)])
def test_binomial_p_value_against_scipy(k: int, n: int, rate: float) -> None:
    assert binomial_p_value(k, n, rate) == pytest.approx(stats.binom.sf(k - 1, n, rate), rel=1e-9)


def test_mcnemar_exact_against_scipy() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        a, b = rng.random(80) < 0.7, rng.random(80) < 0.6
        res = mcnemar_exact(a, b)
        b_only, c_only = int((a & ~b).sum()), int((~a & b).sum())
        assert (res["a_only"], res["b_only"]) == (b_only, c_only)
        expected = min(1.0, 2 * stats.binom.cdf(min(b_only, c_only), b_only + c_only, 0.5))
        assert res["p_value"] == pytest.approx(expected, rel=1e-9)
    same = np.ones(10, dtype=bool)
    assert mcnemar_exact(same, same)["p_value"] == 1.0


def test_unparseable_answers_and_rank_correlation() -> None:
    labels = ["1", "2", "3", "4", "5"]
    rng = np.random.default_rng(11)
    y = rng.integers(0, 5, 120)
    noisy = np.clip(y + rng.integers(-1, 2, 120), 0, 4)
    preds = [Prediction(label=labels[v]) for v in noisy]
    for i in range(0, 120, 10):
        preds[i] = Prediction(label="no idea")  # not a label
    lp = to_arrays([labels[v] for v in y], preds, labels)
    out = classification_metrics(lp, bootstrap=0)
    m = out["metrics"]
    assert m["unparseable_rate"] == pytest.approx(12 / 120)
    assert out["confusion"]["columns"][-1] == UNPARSEABLE
    assert sum(row[-1] for row in out["confusion"]["matrix"]) == 12
    ok = lp.y_pred >= 0
    assert m["spearman"] == pytest.approx(stats.spearmanr(y[ok], noisy[ok]).statistic)
    assert m["log_loss"] is None and m["ece"] is None  # no probabilities given


def test_least_confident_mistakes_come_with_text(tmp_path) -> None:
    data = [{"text": f"example {i}", "label": "a" if i % 2 else "b"} for i in range(6)]
    preds = [{"prediction": "a", "probabilities": {"a": 0.5 + i / 20, "b": 0.5 - i / 20}} for i in range(6)]
    report = evaluate(preds, data, bootstrap=0)
    mistakes = report.least_confident_mistakes
    assert [m["text"] for m in mistakes] == ["example 0", "example 2", "example 4"]
    assert [m["confidence"] for m in mistakes] == pytest.approx([0.5, 0.6, 0.7])
    assert report.most_confident_mistakes[0]["text"] == "example 4"


def test_generation_exact_match_and_token_loss() -> None:
    class Echo:
        """Answers with the user's text upper-cased; scores a fixed loss per answer token."""

        labels = None

        def generate(self, inputs, *, max_new_tokens=256, **kwargs):
            return [x[-1]["content"].upper() for x in inputs]

        def classify(self, texts, *, labels=None):
            raise AssertionError("not a classifier")

        def token_losses(self, conversations):
            return [(0.5 * len(c[-1]["content"].split()), len(c[-1]["content"].split())) for c in conversations]

    data = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
            for u, a in [("hi", "HI"), ("yes", "no"), ("ok then", "ok  THEN")]]
    report = evaluate(Echo(), data)
    assert report.task == "generation"
    assert report.metrics["exact_match"] == pytest.approx(1 / 3)
    assert report.metrics["exact_match_normalised"] == pytest.approx(2 / 3)
    assert report.metrics["token_loss"] == pytest.approx(0.5)
    assert report.metrics["perplexity"] == pytest.approx(np.exp(0.5))
    assert generation_metrics(["a"], ["a"])["token_loss"] is None


def test_labelled_predictions_renormalise_partial_probabilities() -> None:
    preds = [Prediction(label="a", probabilities={"a": 0.3, "b": 0.1}), Prediction(label="b", probabilities={"x": 1})]
    lp: LabelledPredictions = to_arrays(["a", "b"], preds, ["a", "b"])
    assert lp.proba is not None
    assert lp.proba[0].tolist() == pytest.approx([0.75, 0.25])
    assert lp.proba[1].tolist() == pytest.approx([0.5, 0.5])
