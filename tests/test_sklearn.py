"""TextClassifier inside scikit-learn's tools, trained through FineTuneJob on the fake backend."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, cross_val_predict

import ftkit
from ftkit.errors import ConfigError
from ftkit.sklearn import TextClassifier
from ftkit.testing import FakeBackend

FAST = {"steps": 2, "seconds_per_step": 0.0}


@pytest.fixture(autouse=True)
def _fake_backend() -> None:
    ftkit.register_backend(FakeBackend)


def corpus(n: int = 48) -> tuple[list[str], np.ndarray]:
    texts, y = [], []
    for i in range(n):
        if i % 2:
            texts.append(f"win a free prize now call {i} claim cash")
        else:
            texts.append(f"see you at lunch tomorrow {i} with the team")
        y.append(i % 2)
    return texts, np.array(y)


def test_params_round_trip_through_clone() -> None:
    clf = TextClassifier(backend="fake", labels=["0", "1"], epochs=2, **FAST)
    params = clf.get_params()
    assert params == {"backend": "fake", "model": None, "labels": ["0", "1"], "preamble": None, "timeout": None,
                      "epochs": 2, **FAST}
    copy = clone(clf)
    assert copy.get_params() == params and copy is not clf
    copy.set_params(epochs=3, model="naive-bayes", steps=4)
    assert copy.get_params()["epochs"] == 3 and copy.model == "naive-bayes" and copy.hyperparameters["steps"] == 4
    assert clf.get_params()["epochs"] == 2  # the original is untouched


def test_fit_predict_score_and_registry() -> None:
    texts, y = corpus()
    clf = TextClassifier(backend="fake", epochs=1, **FAST).fit(texts, y)
    assert clf.classes_.tolist() == [0, 1]  # the caller's label values come back
    assert clf.predict(texts[:4]).tolist() == [0, 1, 0, 1]
    assert clf.score(texts, y) == 1.0
    job = ftkit.FineTuneJob.get(clf.job_id_)
    assert job.status is ftkit.JobStatus.SUCCEEDED
    assert job.spec.hyperparameters.epochs == 1
    assert job.record.options["steps"] == 2


def test_predict_proba_columns_follow_classes() -> None:
    texts, y = corpus()
    labels = np.where(y == 1, "spam", "ham")
    clf = TextClassifier(backend="fake", labels=["spam", "ham"], **FAST).fit(texts, labels)
    assert clf.classes_.tolist() == ["spam", "ham"]
    proba = clf.predict_proba(["win a free prize now call claim cash"])
    assert proba.shape == (1, 2)
    assert proba[0, 0] > 0.9  # column 0 is "spam", as classes_ says
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_cross_val_predict_calibration_and_grid_search() -> None:
    texts, y = corpus()
    clf = TextClassifier(backend="fake", **FAST)
    proba = cross_val_predict(clf, texts, y, cv=3, method="predict_proba")
    assert proba.shape == (48, 2)
    assert (proba.argmax(axis=1) == y).mean() == 1.0
    calibrated = CalibratedClassifierCV(clf, cv=2, method="sigmoid").fit(texts, y)
    assert calibrated.predict_proba(texts[:2]).shape == (2, 2)
    grid = GridSearchCV(clf, {"steps": [1, 2]}, cv=2).fit(texts, y)
    assert grid.best_params_["steps"] in (1, 2)
    assert len(ftkit.FineTuneJob.list()) >= 3 + 2 + 4 + 1


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="outside labels"):
        TextClassifier(backend="fake", labels=["a", "b"], **FAST).fit(["x", "y"], ["a", "c"])
    with pytest.raises(ConfigError, match="2 texts but y has 1"):
        TextClassifier(backend="fake", **FAST).fit(["x", "y"], ["a"])
    with pytest.raises(ConfigError, match="at least two labels"):
        TextClassifier(backend="fake", **FAST).fit(["x", "y"], ["a", "a"])
