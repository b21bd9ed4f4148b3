"""A classical baseline as an ftkit backend: TF-IDF features and logistic regression.

It shows what a third-party backend needs (a config model, capabilities, submit/poll/cancel/
load_model) and gives researchers the baseline a fine-tuned LLM should beat, evaluated with
the same ``ftkit.evaluate`` on the same test file.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
from pydantic import Field

from ftkit import (
    ActualCost,
    Backend,
    BackendConfig,
    Capabilities,
    Classification,
    CostEstimate,
    Event,
    JobContext,
    JobStatus,
    PollResult,
)
from ftkit.atomic import atomic_write_bytes
from ftkit.costs import EstimateWork


class TfidfConfig(BackendConfig):
    """Options of the tfidf backend."""

    ngram_max: int = Field(default=2, ge=1, le=3, description="Longest word n-gram used as a feature.")
    c: float = Field(default=4.0, gt=0, description="Inverse regularisation strength of the logistic regression.")


class TfidfPredictor:
    """A fitted TF-IDF + logistic regression pipeline behind the Predictor protocol."""

    def __init__(self, pipeline: Any, labels: list[str]) -> None:
        self.pipeline = pipeline
        self.labels: list[str] | None = labels

    def generate(self, inputs: Sequence[Any], *, max_new_tokens: int = 256, **kwargs: Any) -> list[str]:
        """The predicted label of each text (or of the last message of each conversation)."""
        texts = [x if isinstance(x, str) else str(x[-1].get("content", "")) for x in inputs]
        return [c.label for c in self.classify(texts)]

    def classify(self, texts: Sequence[str], *, labels: Sequence[str] | None = None) -> list[Classification]:
        """Probabilities of every label from the logistic regression."""
        classes = [str(c) for c in self.pipeline.classes_]
        out = []
        for row in self.pipeline.predict_proba(list(texts)):
            p = {lab: float(row[classes.index(lab)]) if lab in classes else 0.0 for lab in (labels or self.labels)}
            out.append(Classification(label=max(p, key=p.__getitem__), probabilities=p))
        return out


class TfidfBackend(Backend):
    """Trains in the calling process in seconds; free, CPU only."""

    name: ClassVar[str] = "tfidf"
    config_model = TfidfConfig
    capabilities = Capabilities(tasks=frozenset({"classification"}), poll_interval=0.05)

    def default_model(self, task: str) -> str:
        return "tfidf-logreg"

    def describe(self) -> str:
        return "CPU, scikit-learn TF-IDF + logistic regression baseline"

    def estimate(self, ctx: JobContext) -> CostEstimate:
        # `ftkit estimate` shows this as the tfidf row beside the fine-tuning backends (Backend.estimate_rows).
        return CostEstimate(usd=0.0, hours=0.0, assumptions=["runs locally in seconds; no electricity cost counted"])

    def estimate_evaluation(self, ctx: JobContext, work: EstimateWork) -> CostEstimate:
        return CostEstimate(usd=0.0, hours=0.0, assumptions=[
            f"evaluation: {work.test_examples or 0:,} test examples scored by the fitted pipeline in seconds; "
            "no electricity cost counted"])

    def submit(self, ctx: JobContext) -> str:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        cfg = ctx.config
        assert isinstance(cfg, TfidfConfig)
        rows = [orjson.loads(x) for x in ctx.spec.train.read_bytes().splitlines() if x.strip()]
        t0 = time.time()
        pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, cfg.ngram_max), sublinear_tf=True),
                             LogisticRegression(C=cfg.c, max_iter=2000))
        pipe.fit([r["text"] for r in rows], [str(r["label"]) for r in rows])
        atomic_write_bytes(ctx.workdir / "model.pkl", pickle.dumps(pipe))
        from sklearn.metrics import log_loss

        texts, labels = [r["text"] for r in rows], [str(r["label"]) for r in rows]
        ctx.state.update(seconds=time.time() - t0, train_accuracy=float(pipe.score(texts, labels)),
                         train_loss=float(log_loss(labels, pipe.predict_proba(texts), labels=pipe.classes_)))
        return f"tfidf-{ctx.id}"

    def poll(self, ctx: JobContext) -> PollResult:
        data = {"step": 1, "total_steps": 1, "train_loss": ctx.state.get("train_loss"),
                "train_accuracy": ctx.state.get("train_accuracy")}
        events = [Event(kind="metrics", message="fitted", key="fit", data=data)]
        return PollResult(status=JobStatus.SUCCEEDED, backend_status="fitted", events=events,
                          model=str(ctx.workdir / "model.pkl"),
                          actual_cost=ActualCost(usd=0.0, hours=ctx.state.get("seconds", 0) / 3600, source="local"))

    def cancel(self, ctx: JobContext) -> None:
        """Nothing runs after submit returns, so there is nothing to stop."""

    def load_model(self, ctx: JobContext) -> TfidfPredictor:
        pipe = pickle.loads((ctx.workdir / "model.pkl").read_bytes())
        return TfidfPredictor(pipe, list(ctx.spec.labels or [str(c) for c in pipe.classes_]))
