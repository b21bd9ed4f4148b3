"""A fine-tuned language model as a scikit-learn classifier.

``TextClassifier`` runs a :class:`ftkit.FineTuneJob` on any backend inside ``fit``, so a fine-tuned
LLM drops into ``cross_val_predict``, ``CalibratedClassifierCV``, ``GridSearchCV`` and pipelines::

    from sklearn.model_selection import cross_val_predict
    clf = ftkit.TextClassifier(backend="hf", model="smollm2-135m", epochs=2, lora_r=8)
    proba = cross_val_predict(clf, texts, labels, cv=5, method="predict_proba")

Keyword arguments that are :class:`ftkit.Hyperparameters` fields (``epochs``, ``learning_rate``,
``batch_size``, ``seed``) go to the spec; every other keyword is a backend option (``lora_r``...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ftkit.atomic import atomic_write_bytes
from ftkit.errors import ConfigError
from ftkit.spec import Hyperparameters

_FIXED = ("backend", "model", "labels", "preamble", "timeout")


class TextClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier that fine-tunes a language model with ftkit.

    Args:
        backend: the ftkit backend that trains (``hf``, ``openai``, ``remote``... or ``fake`` in tests).
        model: the base model; None lets the backend choose.
        labels: the label vocabulary (and ``classes_`` order); default: the sorted labels seen in ``fit``.
        preamble: the system prompt used to turn texts into chat examples.
        timeout: seconds to wait for training at most (None: no limit).
        **hyperparameters: ``epochs``, ``learning_rate``, ``batch_size``, ``seed`` and backend options.

    Attributes:
        classes_: the labels, in the column order of :meth:`predict_proba`.
        job_id_: the registry id of the job that trained the fitted model.
        predictor_: the fitted model's :class:`ftkit.Predictor`.
    """

    def __init__(
        self,
        backend: str = "hf",
        model: str | None = None,
        labels: Sequence[str] | None = None,
        preamble: str | None = None,
        timeout: float | None = None,
        **hyperparameters: Any,
    ) -> None:
        self.backend = backend
        self.model = model
        self.labels = labels
        self.preamble = preamble
        self.timeout = timeout
        self.hyperparameters = dict(hyperparameters)

    # scikit-learn finds parameters by introspecting __init__, which cannot see **hyperparameters;
    # these two methods expose them so clone(), GridSearchCV and set_params see every setting.
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every constructor argument, the keyword hyperparameters included."""
        return {**{k: getattr(self, k) for k in _FIXED}, **self.hyperparameters}

    def set_params(self, **params: Any) -> TextClassifier:
        """Change settings; an unknown name becomes a hyperparameter or backend option."""
        for key, value in params.items():
            if key in _FIXED:
                setattr(self, key, value)
            else:
                self.hyperparameters[key] = value
        return self

    def _spec_parts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = set(Hyperparameters.model_fields)
        hyper = {k: v for k, v in self.hyperparameters.items() if k in fields}
        options = {k: v for k, v in self.hyperparameters.items() if k not in fields}
        return hyper, options

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> TextClassifier:
        """Fine-tune on texts ``X`` with labels ``y`` (a FineTuneJob on the configured backend).

        Raises:
            ConfigError: inputs of different lengths, fewer than two labels, or labels outside ``labels``.
            JobFailedError / JobTimeoutError: training failed or ran past ``timeout``.
        """
        from ftkit.job import FineTuneJob
        from ftkit.spec import JobSpec
        from ftkit.store import JobStore

        texts = [str(t) for t in X]
        targets = [_label(v) for v in y]
        # Train on string labels; hand back the caller's own values (ints stay ints) in classes_.
        originals: dict[str, Any] = {}
        for v in y:
            originals.setdefault(_label(v), v.item() if isinstance(v, np.generic) else v)
        if len(texts) != len(targets):
            raise ConfigError(f"X has {len(texts)} texts but y has {len(targets)} labels")
        vocab = [str(x) for x in self.labels] if self.labels is not None else sorted(set(targets))
        unknown = sorted(set(targets) - set(vocab))
        if unknown:
            raise ConfigError(f"y has label(s) {unknown} outside labels={vocab}")
        if len(vocab) < 2:
            raise ConfigError("a classifier needs at least two labels")
        store = JobStore()
        body = b"".join(orjson.dumps({"text": t, "label": lab}) + b"\n" for t, lab in zip(texts, targets, strict=True))
        # Named by content: the job's spec points at this file for as long as the job is kept.
        path = store.root / "sklearn" / f"train-{hashlib.sha256(body).hexdigest()[:16]}.jsonl"
        if not path.exists():
            atomic_write_bytes(path, body)
        hyper, options = self._spec_parts()
        spec = JobSpec(
            task="classification",
            model=self.model,
            train=Path(path),
            labels=vocab,
            preamble=self.preamble,
            hyperparameters=Hyperparameters(**hyper),
            backend_options={self.backend: options} if options else {},
        )
        job = FineTuneJob.create(spec, backend=self.backend, store=store)
        job.start()
        job.wait(timeout=self.timeout)
        self.job_id_ = job.id
        self.predictor_ = job.model()
        self._vocab = vocab
        self.classes_ = np.array([originals.get(lab, lab) for lab in vocab])
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (n, len(classes_)), columns in ``classes_`` order."""
        check_is_fitted(self, "predictor_")
        labels = self._vocab
        answers = self.predictor_.classify([str(t) for t in X], labels=labels)
        proba = np.array([[a.probabilities.get(lab, 0.0) for lab in labels] for a in answers], dtype=float)
        sums = proba.sum(axis=1, keepdims=True)
        return np.where(sums > 0, proba / np.where(sums > 0, sums, 1), 1.0 / len(labels))

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """The most probable label of each text."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _label(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)
