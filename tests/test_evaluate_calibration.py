"""Calibration: fitted on a holdout or cross-fitted, it repairs an over-confident model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ftkit.errors import EvaluationError
from ftkit.evaluate import Calibrator, cross_fit, evaluate
from ftkit.evaluate.metrics import LabelledPredictions, probability_metrics


def overconfident(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True labels drawn from calibrated probabilities, then reported sharpened (temperature 1/4)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.0, (n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in true_p])
    sharp = np.exp(4 * logits)
    return sharp / sharp.sum(axis=1, keepdims=True), y


def ece(proba: np.ndarray, y: np.ndarray) -> float:
    lp = LabelledPredictions([str(i) for i in range(proba.shape[1])], y, proba.argmax(axis=1), proba)
    return float(probability_metrics(lp)["ece"])


@pytest.mark.parametrize("method", ["platt", "isotonic"])
@pytest.mark.parametrize("k", [2, 3])
def test_holdout_calibration_improves_ece(method: str, k: int) -> None:
    hold_p, hold_y = overconfident(2000, k, seed=1)
    test_p, test_y = overconfident(2000, k, seed=2)
    before = ece(test_p, test_y)
    cal = Calibrator(method).fit(hold_p, hold_y)
    after = cal.transform(test_p)
    assert np.allclose(after.sum(axis=1), 1.0)
    assert before > 0.1
    assert ece(after, test_y) < before / 2


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_cross_fitted_calibration_improves_ece(method: str) -> None:
    p, y = overconfident(1500, 3, seed=3)
    out, cal = cross_fit(p, y, method, folds=5, seed=0)
    assert ece(out, y) < ece(p, y) / 2
    assert cal.fitted


def test_evaluate_reports_before_and_after(tmp_path: Path) -> None:
    p, y = overconfident(600, 2, seed=4)
    labels = ["neg", "pos"]
    data = [{"text": f"t{i}", "label": labels[v]} for i, v in enumerate(y)]
    preds = [{"prediction": labels[int(r.argmax())], "probabilities": {"neg": float(r[0]), "pos": float(r[1])}}
             for r in p]
    report = evaluate(preds, data, calibrate="platt", bootstrap=0)
    cal = report.calibration
    assert cal is not None and cal["method"] == "platt" and "cross-fitted" in cal["fitted_on"]
    assert cal["after"]["ece"] < cal["before"]["ece"]
    assert cal["after"]["log_loss"] < cal["before"]["log_loss"]
    assert report.metrics["calibrated_ece"] == cal["after"]["ece"]
    # The fitted calibrator applies to new predictions and survives a save/load round trip.
    new_p, _ = overconfident(50, 2, seed=5)
    new = [{"prediction": "neg", "probabilities": {"neg": float(r[0]), "pos": float(r[1])}} for r in new_p]
    from ftkit.evaluate.predictions import from_classifications

    fixed = report.calibrator.apply(from_classifications(new))
    report.calibrator.save(tmp_path / "cal.json")
    again = Calibrator.load(tmp_path / "cal.json").apply(from_classifications(new))
    assert [f.probabilities for f in fixed] == [a.probabilities for a in again]
    assert all(f.label == max(f.probabilities, key=f.probabilities.get) for f in fixed)
    # Calibration pulls over-confident probabilities towards the middle.
    assert np.mean([max(f.probabilities.values()) for f in fixed]) < np.mean(new_p.max(axis=1))


def test_holdout_file_for_saved_predictions(tmp_path: Path) -> None:
    import orjson

    def files(name: str, seed: int) -> tuple[Path, Path]:
        p, y = overconfident(400, 2, seed)
        d = tmp_path / f"{name}.jsonl"
        d.write_bytes(b"".join(orjson.dumps({"text": str(i), "label": "ab"[v]}) + b"\n" for i, v in enumerate(y)))
        q = tmp_path / f"{name}-pred.jsonl"
        lines = [{"prediction": "ab"[int(r.argmax())], "probabilities": {"a": float(r[0]), "b": float(r[1])}}
                 for r in p]
        q.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        return d, q

    (hd, hp), (td, tp) = files("hold", 7), files("test", 8)
    report = evaluate(tp, td, calibrate="isotonic", holdout=hd, holdout_predictions=hp, bootstrap=0)
    assert "holdout of 400" in report.calibration["fitted_on"]
    assert report.calibration["after"]["ece"] < report.calibration["before"]["ece"]


def test_calibration_errors() -> None:
    with pytest.raises(EvaluationError, match="unknown calibration method"):
        Calibrator("temperature")  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="not fitted"):
        Calibrator().transform(np.ones((2, 2)) / 2)
    with pytest.raises(EvaluationError, match="needs probabilities"):
        evaluate([{"prediction": "a"}, {"prediction": "b"}] * 3,
                 [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}] * 3, calibrate="platt", bootstrap=0)
