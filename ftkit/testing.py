"""Test kit shipped with ftkit: a FakeBackend and a conformance suite every backend can run.

``FakeBackend`` trains a real (tiny) multinomial naive Bayes classifier instead of a language
model, and moves through the status sequence over configurable time, so core features, CLIs
and plugins can be tested in milliseconds without a GPU or an API key. Its "service" keeps each
job in a file of the job's folder, keyed by ftkit's job id as a real service keys by idempotency
key: it outlives the process that submitted, so crashes and cancels from other processes are real.

``BackendConformance`` is a pytest mixin: a backend's test suite subclasses it, provides a
spec and options, and gets the same lifecycle checks every backend must pass::

    class TestMyBackend(BackendConformance):
        backend = "mine"
        def make_spec(self, tmp_path): ...
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import Field

from ftkit.atomic import atomic_write_bytes
from ftkit.backend import ActualCost, Backend, BackendConfig, Capabilities, CostEstimate, JobContext, PollResult
from ftkit.data.formats import label_str
from ftkit.errors import APIError
from ftkit.events import Event, JobStatus
from ftkit.predictor import Classification, Messages, Predictor
from ftkit.spec import JobSpec


class FakeConfig(BackendConfig):
    """Options of the fake backend."""

    steps: int = Field(default=5, ge=1, description="Training steps to simulate.")
    seconds_per_step: float = Field(default=0.02, ge=0, description="Wall time per simulated step.")
    fail_at_step: int | None = Field(default=None, description="Fail the job when this step is reached.")
    usd_per_step: float = Field(default=0.001, ge=0, description="Simulated price per step.")
    failed_polls: int = Field(default=0, ge=0, description="Answer this many polls with a transient API error.")
    upload_seconds: float = Field(
        default=0.0, ge=0, description="Wall time submit takes before the service has the job (an upload)."
    )
    submit_seconds: float = Field(
        default=0.0, ge=0, description="Wall time submit takes after the service has the job (a window for races)."
    )


class FakePredictor:
    """Naive Bayes over word counts, fitted on the job's training file: real, tiny and fast."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], vocab: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.naive_bayes import MultinomialNB

        self.labels: list[str] | None = list(vocab)
        self._vec = CountVectorizer()
        self._nb = MultinomialNB().fit(self._vec.fit_transform(texts), list(labels))

    def generate(self, inputs: Sequence[str | Messages], *, max_new_tokens: int = 256, **kwargs: Any) -> list[str]:
        """Answer with the predicted label of the last user text."""
        texts = [x if isinstance(x, str) else str(x[-1].get("content", "")) for x in inputs]
        return [c.label for c in self.classify(texts)]

    def classify(self, texts: Sequence[str], *, labels: Sequence[str] | None = None) -> list[Classification]:
        """Class probabilities from the naive Bayes model, over every label."""
        vocab = list(labels or self.labels or [])
        proba = self._nb.predict_proba(self._vec.transform(list(texts)))
        classes = [str(c) for c in self._nb.classes_]
        out = []
        for row in proba:
            p = {lab: float(row[classes.index(lab)]) if lab in classes else 0.0 for lab in vocab}
            total = sum(p.values()) or 1.0
            p = {k: v / total for k, v in p.items()}
            out.append(Classification(label=max(p, key=lambda k: p[k]), probabilities=p))
        return out


class FakeBackend(Backend):
    """A backend for tests: simulated progress over time, a real naive Bayes model at the end."""

    name: ClassVar[str] = "fake"
    config_model = FakeConfig
    capabilities = Capabilities(tasks=frozenset({"classification"}), poll_interval=0.01, supports_pause=False)

    def default_model(self, task: str) -> str:
        return "naive-bayes"

    def estimate(self, ctx: JobContext) -> CostEstimate:
        cfg = ctx.config
        assert isinstance(cfg, FakeConfig)
        return CostEstimate(
            usd=cfg.steps * cfg.usd_per_step,
            hours=cfg.steps * cfg.seconds_per_step / 3600,
            assumptions=[f"{cfg.steps} steps at ${cfg.usd_per_step}/step"],
        )

    def describe(self) -> str:
        return "in-process test double (naive Bayes)"

    def submit(self, ctx: JobContext) -> str:
        cfg = ctx.config
        assert isinstance(cfg, FakeConfig)
        found = self.find_submitted(ctx)
        if found is not None:  # the service already has this job: submitting twice creates nothing
            return found
        time.sleep(cfg.upload_seconds)
        ctx.state["started"] = time.time()
        _write_service(ctx, {"id": f"fake-{ctx.id}", "started": ctx.state["started"], "cancelled": False})
        time.sleep(cfg.submit_seconds)  # the service has the job; the answer is still on its way
        return f"fake-{ctx.id}"

    def find_submitted(self, ctx: JobContext) -> str | None:
        service = _read_service(ctx)
        if service is None:
            return None
        ctx.state["started"] = service["started"]
        return str(service["id"])

    def poll(self, ctx: JobContext) -> PollResult:
        cfg = ctx.config
        assert isinstance(cfg, FakeConfig)
        if int(ctx.state.get("polls_failed", 0)) < cfg.failed_polls:
            ctx.state["polls_failed"] = int(ctx.state.get("polls_failed", 0)) + 1
            raise APIError("simulated 503 from the fake service", status_code=503)
        if ctx.state.get("cancelled") or (_read_service(ctx) or {}).get("cancelled"):
            return PollResult(status=JobStatus.CANCELLED, backend_status="cancelled")
        elapsed = time.time() - float(ctx.state["started"])
        per = max(cfg.seconds_per_step, 1e-9)
        step = min(cfg.steps, int(elapsed / per))
        events = [
            Event(
                kind="metrics",
                message=f"step {s}/{cfg.steps}",
                key=f"step-{s}",
                data={"step": s, "total_steps": cfg.steps, "train_loss": round(math.exp(-s / cfg.steps), 4)},
            )
            for s in range(int(ctx.state.get("step", 0)) + 1, step + 1)
        ]
        ctx.state["step"] = step
        if cfg.fail_at_step is not None and step >= cfg.fail_at_step:
            return PollResult(
                status=JobStatus.FAILED,
                backend_status="failed",
                events=events,
                error=f"simulated failure at step {cfg.fail_at_step}",
            )
        if step < cfg.steps:
            return PollResult(status=JobStatus.RUNNING, backend_status="running", events=events)
        return PollResult(
            status=JobStatus.SUCCEEDED,
            backend_status="done",
            events=events,
            model=f"nb:{ctx.id}",
            actual_cost=ActualCost(usd=cfg.steps * cfg.usd_per_step, source="simulated steps"),
        )

    def cancel(self, ctx: JobContext) -> None:
        ctx.state["cancelled"] = True
        service = _read_service(ctx)
        if service is not None:
            _write_service(ctx, service | {"cancelled": True})

    def load_model(self, ctx: JobContext) -> Predictor:
        rows = [orjson.loads(line) for line in Path(ctx.spec.train).read_bytes().splitlines() if line.strip()]
        vocab = ctx.spec.labels or sorted({label_str(r["label"]) for r in rows})
        return FakePredictor([r["text"] for r in rows], [label_str(r["label"]) for r in rows], vocab)


def _service_file(ctx: JobContext) -> Path:
    return ctx.workdir / "fake-service.json"


def _read_service(ctx: JobContext) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = orjson.loads(_service_file(ctx).read_bytes())
    except FileNotFoundError:
        return None
    return data


def _write_service(ctx: JobContext, data: dict[str, Any]) -> None:
    atomic_write_bytes(_service_file(ctx), orjson.dumps(data))


class BackendConformance:
    """Lifecycle checks every backend must pass. Subclass in a pytest module.

    Set ``backend`` and ``options``, and implement :meth:`make_spec`. Set ``wait_timeout`` to
    bound how long a real training run may take. Besides a run and a cancel, it checks that the
    declared :class:`~ftkit.backend.Capabilities` match the methods the backend implements, and that
    ``FineTuneJob`` refuses an operation the backend does not declare.
    """

    backend: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    wait_timeout: ClassVar[float] = 600.0

    def make_spec(self, tmp_path: Path) -> JobSpec:
        """A small classification spec this backend can run quickly."""
        raise NotImplementedError

    def test_lifecycle(self, tmp_path: Path, monkeypatch: Any) -> None:
        from ftkit.job import FineTuneJob
        from ftkit.store import JobStore

        store = JobStore(tmp_path / "home")
        job = FineTuneJob.create(self.make_spec(tmp_path), backend=self.backend, options=self.options, store=store)
        assert job.status is JobStatus.CREATED
        job.start()
        assert job.wait(timeout=self.wait_timeout) is JobStatus.SUCCEEDED
        again = FineTuneJob.get(job.id, store=store)
        assert again.status is JobStatus.SUCCEEDED
        assert any(m.get("train_loss") is not None for m in again.metrics())
        spec = again.spec
        assert spec.labels
        texts = [orjson.loads(line)["text"] for line in Path(spec.train).read_bytes().splitlines()[:4]]
        for c in again.model().classify(texts):
            assert c.label in spec.labels
            assert set(c.probabilities) == set(spec.labels)
            assert abs(sum(c.probabilities.values()) - 1.0) < 1e-6

    def test_capabilities_match_the_methods(self) -> None:
        """A declared capability has its method; an operation without one is not declared."""
        from ftkit.backend import get_backend

        be = get_backend(self.backend)
        caps = be.capabilities

        def overrides(method: str) -> bool:
            return getattr(type(be), method) is not getattr(Backend, method)

        assert caps.tasks, "a backend trains at least one task"
        assert caps.supports_pause == overrides("pause"), "supports_pause and pause() disagree"
        assert caps.supports_attach == overrides("attach"), "supports_attach and attach() disagree"
        if caps.supports_pause or caps.supports_resume_from_checkpoint:
            assert overrides("resume"), "a backend that can pause or resume from a checkpoint implements resume()"
        else:
            assert not overrides("resume"), "resume() is implemented but no capability declares it"

    def test_unsupported_operations_are_refused(self, tmp_path: Path) -> None:
        """``FineTuneJob`` refuses, with a ConfigError and nothing changed, what the capabilities leave out."""
        import pytest

        from ftkit.backend import get_backend
        from ftkit.errors import ConfigError
        from ftkit.job import FineTuneJob
        from ftkit.store import JobStore

        caps = get_backend(self.backend).capabilities
        if caps.supports_pause:
            pytest.skip(f"{self.backend} supports pause, the one optional operation a created job can be asked for")
        store = JobStore(tmp_path / "home")
        job = FineTuneJob.create(self.make_spec(tmp_path), backend=self.backend, options=self.options, store=store)
        with pytest.raises(ConfigError, match="cannot pause jobs"):
            job.pause()
        assert FineTuneJob.get(job.id, store=store).status is JobStatus.CREATED

    def test_cancel(self, tmp_path: Path) -> None:
        from ftkit.job import FineTuneJob
        from ftkit.store import JobStore

        store = JobStore(tmp_path / "home")
        job = FineTuneJob.create(self.make_spec(tmp_path), backend=self.backend, options=self.options, store=store)
        job.start()
        assert job.cancel() is JobStatus.CANCELLED
        assert FineTuneJob.get(job.id, store=store).status is JobStatus.CANCELLED
