"""The bag-of-words floor: TF-IDF features and a logistic regression fitted on the job's own training data.

A fine-tuned language model that does not beat this on the same test set has not earned its cost; on
topic-like tasks with a few hundred examples it sometimes does not. The baseline is what a careful
paper reports: word uni- and bigrams (sublinear tf), the regularisation strength chosen by stratified
cross-validation on the training data only, class weights balanced. It fits in seconds on a CPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ftkit.errors import EvaluationError
from ftkit.evaluate.predictions import Prediction, load_reference

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
DESCRIPTION = "TF-IDF word 1-2-grams + logistic regression (C by cross-validation on the training data)"


class BaselineResult(BaseModel):
    """The bag-of-words baseline's scores on the test set, next to the model's.

    Attributes:
        description: what the baseline is.
        train_file: the training data it was fitted on.
        train_examples: how many training examples.
        c: the chosen inverse regularisation strength.
        accuracy: test accuracy.
        macro_f1: test macro-F1.
        ece: expected calibration error of its probabilities.
        model_accuracy: the evaluated model's accuracy on the same examples.
        beaten: the model's accuracy is above the baseline's.
        p_value: exact McNemar p-value of the two sets of answers differing.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = DESCRIPTION
    train_file: str
    train_examples: int
    c: float
    accuracy: float
    macro_f1: float
    ece: float | None
    model_accuracy: float
    beaten: bool
    p_value: float | None

    def sentence(self) -> str:
        """A plain sentence saying whether the model beat the bag-of-words baseline."""
        delta = self.model_accuracy - self.accuracy
        p = f" (McNemar p = {self.p_value:.2g})" if self.p_value is not None else ""
        if self.beaten:
            return (
                f"The model beats the bag-of-words baseline fitted on the same {self.train_examples} training "
                f"examples: accuracy {self.model_accuracy:.3f} against {self.accuracy:.3f} "
                f"({delta:+.3f}){p}."
            )
        return (
            f"The model does NOT beat a bag-of-words baseline (TF-IDF + logistic regression) fitted on the same "
            f"{self.train_examples} training examples: accuracy {self.model_accuracy:.3f} against "
            f"{self.accuracy:.3f} ({delta:+.3f}){p}. The fine-tune adds nothing over the simple model here."
        )


class BowClassifier:
    """A fitted TF-IDF + logistic regression pipeline with the cross-validated C.

    Use :func:`fit_bow`. ``classes`` is the column order of :meth:`predict_proba`.
    """

    def __init__(self, pipeline: Any, c: float, classes: list[str]) -> None:
        self.pipeline = pipeline
        self.c = c
        self.classes = classes

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, one column per label of ``classes``."""
        return np.asarray(self.pipeline.predict_proba(list(texts)))

    def predictions(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> list[Prediction]:
        """Predictions with a probability for every label of ``labels`` (0 for a label never seen in training)."""
        vocab = list(labels) if labels is not None else self.classes
        out = []
        for row in self.predict_proba(texts):
            probs = dict(zip(self.classes, (float(x) for x in row), strict=True))
            p = {lab: probs.get(lab, 0.0) for lab in vocab}
            out.append(Prediction(label=max(p, key=p.__getitem__), probabilities=p))
        return out


def fit_bow(texts: Sequence[str], labels: Sequence[str], seed: int = 0) -> BowClassifier:
    """Fit the baseline; C is picked from :data:`C_GRID` by stratified k-fold accuracy (k <= 5).

    Raises:
        EvaluationError: fewer than two labels, or no texts.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    counts = Counter(labels)
    if len(counts) < 2 or not texts:
        raise EvaluationError("the bag-of-words baseline needs training texts with at least two labels")
    pipe = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ("lr", LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)),
        ]
    )
    folds = min(5, min(counts.values()))
    if folds >= 2:
        search = GridSearchCV(
            pipe,
            {"lr__C": list(C_GRID)},
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            scoring="accuracy",
            n_jobs=1,
        )
        search.fit(list(texts), list(labels))
        fitted, c = search.best_estimator_, float(search.best_params_["lr__C"])
    else:  # a label with a single example: no stratified folds possible, keep the middle of the grid
        c = C_GRID[len(C_GRID) // 2]
        fitted = pipe.set_params(lr__C=c).fit(list(texts), list(labels))
    return BowClassifier(fitted, c, [str(x) for x in fitted.classes_])


def bow_baseline(
    train: str | Path,
    test_texts: Sequence[str],
    test_targets: Sequence[str],
    labels: Sequence[str],
    model_correct: np.ndarray,
    seed: int = 0,
) -> BaselineResult:
    """Fit the baseline on a classification training file and score it on the evaluated test examples.

    Args:
        train: the job's training JSONL (``text`` and ``label`` per line).
        test_texts: the test texts, in the evaluated order.
        test_targets: their true labels.
        labels: the label vocabulary (the report's).
        model_correct: whether the model got each test example right (for accuracy and McNemar).
        seed: the cross-validation seed.

    Raises:
        EvaluationError: the training file is not classification data or holds fewer than two labels.
    """
    from ftkit.evaluate.metrics import classification_metrics, to_arrays
    from ftkit.evaluate.significance import mcnemar_exact

    ref = load_reference(train)
    if ref.task != "classification":
        raise EvaluationError(f"{train}: the bag-of-words baseline needs classification data (text and label)")
    clf = fit_bow(ref.texts, ref.targets, seed=seed)
    preds = clf.predictions(test_texts, labels)
    lp = to_arrays(list(test_targets), preds, list(labels))
    scores = classification_metrics(lp, bootstrap=0)["metrics"]
    ece = scores.get("ece")
    mine = lp.correct
    acc = float(np.mean(mine))
    model_acc = float(np.mean(model_correct))
    p = mcnemar_exact(np.asarray(model_correct, dtype=bool), mine)["p_value"]
    return BaselineResult(
        train_file=str(train),
        train_examples=len(ref.texts),
        c=clf.c,
        accuracy=acc,
        macro_f1=float(scores["macro_f1"]),
        ece=None if ece is None else float(ece),
        model_accuracy=model_acc,
        beaten=model_acc > acc,
        p_value=p,
    )
