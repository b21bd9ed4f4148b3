"""Post-hoc calibration of class probabilities: Platt scaling or isotonic regression.

A :class:`Calibrator` is fitted one-vs-rest, one scikit-learn model per class (binary problems:
one model on the second class), then rows are renormalised. It is fitted on a holdout set; when
only the test set is given, :func:`cross_fit` fits on k-1 folds and applies to the remaining
fold, so no example is calibrated by a model that saw it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from ftkit.atomic import atomic_write_text
from ftkit.errors import EvaluationError
from ftkit.evaluate.predictions import Prediction

Method = Literal["platt", "isotonic"]
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """Maps a model's class probabilities to calibrated ones.

    Example:
        >>> cal = Calibrator("isotonic").fit(holdout_proba, holdout_y, labels=["neg", "pos"])
        >>> fixed = cal.transform(test_proba)           # or cal.apply(predictions)
        >>> cal.save("calibrator.json"); Calibrator.load("calibrator.json")

    Args:
        method: ``platt`` (logistic regression on the log-odds) or ``isotonic``.
    """

    def __init__(self, method: Method = "platt") -> None:
        if method not in ("platt", "isotonic"):
            raise EvaluationError(f"unknown calibration method {method!r}; use 'platt' or 'isotonic'")
        self.method: Method = method
        self.labels: list[str] | None = None
        self._params: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        state = f"labels={self.labels}" if self.labels else "unfitted"
        return f"Calibrator({self.method!r}, {state})"

    def _columns(self, k: int) -> list[int]:
        return [1] if k == 2 else list(range(k))

    def fit(self, proba: np.ndarray, y: Sequence[int] | np.ndarray, labels: Sequence[str] | None = None) -> Calibrator:
        """Fit on probabilities ``proba`` (n, k) and true class indices ``y``.

        Raises:
            EvaluationError: shapes disagree or there are fewer than two classes.
        """
        proba = np.asarray(proba, dtype=float)
        y = np.asarray(y, dtype=int)
        if proba.ndim != 2 or proba.shape[0] != y.shape[0] or proba.shape[1] < 2:
            raise EvaluationError(f"calibration needs an (n, k≥2) probability matrix for n labels, got {proba.shape}")
        k = proba.shape[1]
        self.labels = list(labels) if labels is not None else [str(i) for i in range(k)]
        self._params = []
        for j in self._columns(k):
            target = (y == j).astype(int)
            if target.min() == target.max():
                # Only one outcome seen for this class: keep its probabilities as they are.
                self._params.append({"kind": "identity"})
            elif self.method == "platt":
                lr = LogisticRegression(C=1e6, solver="lbfgs").fit(_logit(proba[:, j])[:, None], target)
                self._params.append({"kind": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
            else:
                iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, j], target)
                self._params.append(
                    {"kind": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
                )
        return self

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` (or :meth:`load`) has run."""
        return bool(self._params)

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, rows summing to one, columns in the fitted label order."""
        if not self.fitted:
            raise EvaluationError("the calibrator is not fitted; call fit() first")
        proba = np.asarray(proba, dtype=float)
        k = proba.shape[1]
        if self.labels is not None and k != len(self.labels):
            raise EvaluationError(f"calibrator was fitted on {len(self.labels)} classes, got {k} columns")
        out = proba.copy()
        for j, par in zip(self._columns(k), self._params, strict=True):
            if par["kind"] == "platt":
                z = par["a"] * _logit(proba[:, j]) + par["b"]
                out[:, j] = 1.0 / (1.0 + np.exp(-z))
            elif par["kind"] == "isotonic":
                out[:, j] = np.interp(proba[:, j], par["x"], par["y"])
        if k == 2:
            out[:, 0] = 1.0 - out[:, 1]
            return np.clip(out, 0.0, 1.0)
        out = np.clip(out, _EPS, None)
        return out / out.sum(axis=1, keepdims=True)

    def apply(self, predictions: Sequence[Prediction]) -> list[Prediction]:
        """Calibrate saved predictions (probabilities keyed by label); the answer becomes the most probable label."""
        if self.labels is None:
            raise EvaluationError("the calibrator is not fitted; call fit() first")
        labels = self.labels
        rows = []
        for i, p in enumerate(predictions):
            if not p.probabilities:
                raise EvaluationError(f"prediction {i} has no probabilities to calibrate")
            rows.append([p.probabilities.get(lab, 0.0) for lab in labels])
        matrix = np.asarray(rows, dtype=float)
        sums = matrix.sum(axis=1, keepdims=True)
        matrix = np.where(sums > 0, matrix / np.where(sums > 0, sums, 1), 1.0 / len(labels))
        fixed = self.transform(matrix)
        return [
            Prediction(
                label=labels[int(row.argmax())],
                probabilities=dict(zip(labels, map(float, row), strict=True)),
                raw=p.raw,
            )
            for row, p in zip(fixed, predictions, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (method, labels, fitted parameters)."""
        return {"method": self.method, "labels": self.labels, "params": self._params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict` output."""
        try:
            cal = cls(data["method"])
            cal.labels = list(data["labels"])
            cal._params = list(data["params"])
        except (KeyError, TypeError) as e:
            raise EvaluationError(f"not a saved calibrator: missing {e}") from None
        return cal

    def save(self, path: str | Path) -> None:
        """Write the calibrator as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        """Read a calibrator written by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise EvaluationError(f"{path}: cannot read calibrator: {e}") from None


def cross_fit(
    proba: np.ndarray,
    y: np.ndarray,
    method: Method = "platt",
    folds: int = 5,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, Calibrator]:
    """Out-of-fold calibrated probabilities, and a calibrator fitted on all examples for later use.

    Folds are stratified; the number of folds shrinks to the size of the rarest class (at least 2).
    """
    y = np.asarray(y, dtype=int)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_folds = int(min(folds, counts.min())) if counts.size else 0
    if n_folds < 2:
        raise EvaluationError("cross-fitted calibration needs at least two examples of every class present")
    out = np.empty_like(np.asarray(proba, dtype=float))
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(proba, y):
        out[test] = Calibrator(method).fit(proba[train], y[train], labels).transform(proba[test])
    return out, Calibrator(method).fit(proba, y, labels)
