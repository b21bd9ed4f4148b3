"""FineTuneJob: the one job interface every backend sits behind.

A job is recorded in the registry before anything is spent (``create``), spends only on
``start``, and is followed through ``refresh``/``wait`` from any process, after a restart too::

    job = FineTuneJob.create(spec, backend="hf")   # validates, estimates, records
    job.start()                                   # uploads / launches / trains
    job.wait(progress=True)
    predictor = job.model()
"""

from __future__ import annotations

import builtins
import contextlib
import time
from pathlib import Path
from typing import Any

from ftkit.backend import (
    Backend,
    BackendConfig,
    CostEstimate,
    JobContext,
    PollResult,
    get_backend,
    installed_backends,
)
from ftkit.data.leakage import guard_validation
from ftkit.errors import (
    APIError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigError,
    DatasetError,
    FtkitError,
    JobError,
    JobFailedError,
    JobTimeoutError,
)
from ftkit.events import Event, JobStatus
from ftkit.manifest import build_manifest
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec
from ftkit.store import JobRecord, JobStore, new_job_id

DEFAULT_BACKEND = "hf"
MAX_POLL_FAILURES = 3
_REDACTED = ("<redacted>", "**********")


class FineTuneJob:
    """A fine-tuning job on any backend. Build one with :meth:`create`, :meth:`get` or :meth:`attach`."""

    def __init__(self, record: JobRecord, store: JobStore) -> None:
        self._record = record
        self._store = store
        self._backend_instance: Backend | None = None
        # Options as given in this process, secrets included; the registry only keeps them redacted.
        self._live_options: dict[str, Any] | None = None

    # ----------------------------------------------------------------- constructors

    @classmethod
    def create(
        cls,
        spec: JobSpec | str | Path,
        backend: str | None = None,
        *,
        options: dict[str, Any] | None = None,
        store: JobStore | None = None,
        validate: bool = True,
    ) -> FineTuneJob:
        """Validate the spec and data, estimate the cost and record the job. Spends nothing.

        Args:
            spec: a JobSpec or the path of a TOML/YAML config file.
            backend: backend name; defaults to the spec's ``backend`` or ``hf``.
            options: backend options that override the spec's section for this backend.
            store: the registry; defaults to ``$FTKIT_HOME``.
            validate: check the data files first (on by default).

        Raises:
            ConfigError: the spec or options are invalid, or the estimate exceeds ``max_cost``.
            DatasetError: a data file failed validation (``err.report`` holds every problem), or the
                validation data repeats training inputs and ``spec.allow_overlap`` is not set.
            BackendNotFoundError: no such backend is installed.
        """
        if not isinstance(spec, JobSpec):
            spec = JobSpec.from_file(spec, backend=backend)
        name = backend or spec.backend or DEFAULT_BACKEND
        be = get_backend(name)
        bspec, raw = spec.for_backend(name)
        config = be.parse_config(raw | (options or {}))
        if bspec.task not in be.capabilities.tasks:
            raise ConfigError(f"backend {name!r} does not support task {bspec.task!r}")
        if bspec.model is None:
            bspec = bspec.model_copy(update={"model": be.default_model(bspec.task)})
        if validate:
            bspec = _validate_data(bspec, be.validation_target(bspec, config))
        leakage = guard_validation(bspec.train, bspec.validation, allow=bspec.allow_overlap) if validate else {}
        be.check(bspec, config)

        store = store or JobStore()
        job_id = new_job_id()
        ctx = JobContext(id=job_id, spec=bspec, config=config, workdir=store.job_dir(job_id))
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        estimate = be.estimate(ctx)
        if estimate is not None and bspec.max_cost is not None and estimate.usd > bspec.max_cost:
            raise ConfigError(
                f"estimated cost ${estimate.usd:.2f} exceeds max_cost ${bspec.max_cost:.2f}; "
                "raise max_cost or shrink the job"
            )
        info = installed_backends().get(name)
        record = JobRecord(
            id=job_id,
            backend=name,
            spec=bspec.model_dump(mode="json"),
            options=config.model_dump(mode="json"),
            state=ctx.state,
            estimated_cost=estimate.model_dump() if estimate else None,
            manifest=build_manifest(bspec, name, info.version if info else None) | leakage,
        )
        store.insert(record)
        job = cls(record, store)
        job._backend_instance = be
        job._live_options = raw | (options or {})
        job._record_events([Event(message=f"job created on backend {name!r}", key="created")])
        if estimate is not None:
            job._record_events([_cost_event(estimate, "estimate")])
        return job

    @classmethod
    def get(cls, job_id: str, *, store: JobStore | None = None) -> FineTuneJob:
        """A job from the registry, by id or unique id prefix. Works without its backend installed."""
        store = store or JobStore()
        return cls(store.get(job_id), store)

    @classmethod
    def list(
        cls, *, store: JobStore | None = None, limit: int = 100, backend: str | None = None
    ) -> builtins.list[FineTuneJob]:
        """Jobs in the registry, newest first."""
        store = store or JobStore()
        return [cls(r, store) for r in store.list(limit=limit, backend=backend)]

    @classmethod
    def attach(
        cls,
        backend_job_id: str,
        backend: str,
        *,
        options: dict[str, Any] | None = None,
        store: JobStore | None = None,
    ) -> FineTuneJob:
        """Follow a job created outside ftkit (e.g. an existing OpenAI fine-tune) as a FineTuneJob."""
        be = get_backend(backend)
        if not be.capabilities.supports_attach:
            raise ConfigError(f"backend {backend!r} cannot attach to existing jobs")
        config = be.parse_config(options or {})
        spec = be.attach(backend_job_id, config)
        store = store or JobStore()
        job_id = new_job_id()
        info = installed_backends().get(backend)
        record = JobRecord(
            id=job_id,
            backend=backend,
            backend_job_id=backend_job_id,
            status=JobStatus.QUEUED,
            spec=spec.model_dump(mode="json"),
            options=config.model_dump(mode="json"),
            manifest={"attached": True, "backend": {"name": backend, "version": info.version if info else None}},
        )
        store.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        store.insert(record)
        job = cls(record, store)
        job._backend_instance = be
        job._live_options = options or {}
        job._record_events([Event(message=f"attached to {backend} job {backend_job_id}", key="attached")])
        job.refresh()
        return job

    # ----------------------------------------------------------------- properties

    @property
    def id(self) -> str:
        """ftkit's id of the job."""
        return self._record.id

    @property
    def backend_name(self) -> str:
        """The backend that runs the job."""
        return self._record.backend

    @property
    def backend_job_id(self) -> str | None:
        """The backend's own id (an OpenAI ``ftjob-...``, a local pid...) once started."""
        return self._record.backend_job_id

    @property
    def status(self) -> JobStatus:
        """The status last seen; call :meth:`refresh` to look again."""
        return self._record.status

    @property
    def spec(self) -> JobSpec:
        """The spec as the backend saw it."""
        return JobSpec.model_validate(self._record.spec)

    @property
    def record(self) -> JobRecord:
        """Everything the registry keeps about the job."""
        return self._record

    @property
    def store(self) -> JobStore:
        """The registry the job is kept in."""
        return self._store

    @property
    def workdir(self) -> Path:
        """The job's own folder."""
        return self._store.job_dir(self.id)

    def __repr__(self) -> str:
        return f"FineTuneJob(id={self.id!r}, backend={self.backend_name!r}, status={self.status.value!r})"

    # ----------------------------------------------------------------- actions

    def start(self) -> FineTuneJob:
        """Start the job: this is where money or compute is spent. Returns at once."""
        if self.status is not JobStatus.CREATED:
            raise JobError(f"job {self.id} is {self.status.value}; only a created job can be started")
        be, ctx = self._backend(), self._context()
        # Mark the attempt first: a crash inside submit leaves a record the backend can reconcile by ctx.id.
        ctx.state["submit_started_at"] = time.time()
        self._store.update(self.id, state=ctx.state, status=JobStatus.VALIDATING)
        try:
            backend_job_id = be.submit(ctx)
        except FtkitError as e:
            self._save(ctx, status=JobStatus.FAILED, error=str(e))
            self._record_events([Event(level="error", message=f"start failed: {e}", key="start-failed")])
            raise
        self._save(ctx, backend_job_id=backend_job_id, status=JobStatus.QUEUED)
        self._record_events([Event(message=f"started as {backend_job_id}", key="started")])
        return self

    def refresh(self) -> JobStatus:
        """Ask the backend once for status and new events, and record them."""
        # Another process may have changed the job (cancelled it, polled it): start from the registry.
        self._record = self._store.get(self.id)
        if self._record.backend_job_id is None:
            return self.status
        if self.status.is_terminal and self._record.state.get("final_polled"):
            return self.status
        be, ctx = self._backend(), self._context()
        try:
            result: PollResult = be.poll(ctx)
        except FtkitError:
            self._save(ctx)  # keep what the backend learnt before it failed (cursors, retry counts)
            raise
        self._record_events(result.events)
        fields: dict[str, Any] = {"status": result.status, "backend_status": result.backend_status}
        if result.model:
            fields["model"] = result.model
        if result.error:
            fields["error"] = result.error
        if result.actual_cost is not None and self._record.actual_cost is None:
            fields["actual_cost"] = result.actual_cost.model_dump()
            self._record_events(
                [
                    Event(
                        kind="cost",
                        message=f"actual cost ${result.actual_cost.usd:.4f} ({result.actual_cost.source})",
                        data=result.actual_cost.model_dump(),
                        key="actual-cost",
                    )
                ]
            )
        if result.status.is_terminal:
            ctx.state["final_polled"] = True
        manifest_extra = ctx.state.pop("manifest", None)
        if isinstance(manifest_extra, dict):
            fields["manifest"] = self._record.manifest | manifest_extra
        self._save(ctx, **fields)
        return self.status

    def wait(
        self, progress: bool = False, timeout: float | None = None, poll_interval: float | None = None
    ) -> JobStatus:
        """Follow the job until it ends.

        Args:
            progress: show a progress bar with steps, loss and ETA.
            timeout: seconds to wait at most.
            poll_interval: seconds between polls; defaults to the backend's.

        Returns:
            The final status (``succeeded`` or ``cancelled``).

        Raises:
            JobFailedError: the job failed.
            JobTimeoutError: ``timeout`` ran out first; the job goes on.
        """
        interval = poll_interval if poll_interval is not None else self._backend().capabilities.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = self._last_seq()
        bar = None
        if progress:
            from ftkit.progress import JobProgress

            bar = JobProgress(self.id).__enter__()
        failures = 0
        try:
            while True:
                try:
                    status = self.refresh()
                    failures = 0
                except (APIError, BackendUnavailableError) as e:
                    # One failed look at a long job is no reason to stop following it; three in a row are.
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise
                    self._record_events([Event(level="warning", message=f"poll failed, retrying: {e}")])
                    time.sleep(interval)
                    continue
                if bar is not None:
                    new = self._store.events(self.id, after=seen)
                    if new:
                        seen = new[-1][0]
                    bar.update(status.value, [e for _, e in new])
                if status.is_terminal:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeoutError(f"job {self.id} still {status.value} after {timeout} s")
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        if status is JobStatus.FAILED:
            raise JobFailedError(f"job {self.id} failed: {self._record.error or 'no reason given'}")
        return status

    def cancel(self) -> JobStatus:
        """Stop the job and release what it holds."""
        if self.status.is_terminal:
            return self.status
        if self._record.backend_job_id is not None:
            be, ctx = self._backend(), self._context()
            be.cancel(ctx)
            self._save(ctx)
            self.refresh()
        if not self.status.is_terminal:
            self._store.update(self.id, status=JobStatus.CANCELLED)
            self._record = self._store.get(self.id)
        self._record_events([Event(message="cancelled", key="cancelled")])
        return self.status

    def pause(self) -> None:
        """Pause the job where the backend supports it."""
        be, ctx = self._backend(), self._context()
        be.pause(ctx)
        self._save(ctx)
        self.refresh()

    def resume(self) -> None:
        """Resume a paused job, or restart an interrupted one from its last checkpoint."""
        be, ctx = self._backend(), self._context()
        be.resume(ctx)
        ctx.state.pop("final_polled", None)
        self._save(ctx, status=JobStatus.QUEUED, error=None)
        self.refresh()

    def base_model(self) -> Predictor:
        """A Predictor over the model this job starts from, with the job's options: the zero-shot baseline.

        Scoring it on the same held-out set as :meth:`model` is how a fine-tune proves what it added. The
        labels of a classification spec are set on it, since a base model knows none of its own.
        """
        predictor = self._backend().base_model(self.spec.model, self._context().config)
        if self.spec.labels and hasattr(predictor, "labels"):
            predictor.labels = list(self.spec.labels)
        return predictor

    def model(self) -> Predictor:
        """A Predictor over the fine-tuned model (the job must have succeeded)."""
        if self.status is not JobStatus.SUCCEEDED:
            self.refresh()
        if self.status is not JobStatus.SUCCEEDED:
            raise JobError(f"job {self.id} is {self.status.value}; a model exists only once it has succeeded")
        predictor = self._backend().load_model(self._context())
        # So that evaluate(job.model(), test) checks the test data against this job's data and finds its
        # placebo. Ids, not the job: a predictor may be pickled, and the job holds live options (secrets).
        with contextlib.suppress(AttributeError, TypeError, ValueError):  # slots, frozen or pydantic predictors
            predictor.ftkit_job_ref = (self.id, str(self._store.root))  # type: ignore[attr-defined]
        return predictor

    def placebo(self, seed: int | None = None) -> FineTuneJob:
        """Create (not start) this job's placebo twin: the same spec and options, labels permuted.

        The training and validation labels are permuted within each class (stratified, seeded; see
        :mod:`ftkit.placebo`) and the twin's manifest records the seed and the permutation. Evaluating
        this job then shows real, placebo and majority-class accuracy side by side.

        Args:
            seed: the permutation seed; by default the job's training seed.

        Raises:
            ConfigError: not a classification job, or itself a placebo run.
        """
        from ftkit.placebo import create_placebo

        return create_placebo(self, seed=seed, options=self._context().config.model_dump(), store=self._store)

    # ----------------------------------------------------------------- reading

    def events(self, after: int = 0) -> builtins.list[Event]:
        """Every recorded event, oldest first (after sequence number ``after``)."""
        return [e for _, e in self._store.events(self.id, after=after)]

    def metrics(self) -> builtins.list[dict[str, Any]]:
        """The metrics events' data (step, train_loss, valid_loss...), oldest first: the loss curve."""
        return [{"time": e.time, **e.data} for e in self.events() if e.kind == "metrics"]

    # ----------------------------------------------------------------- internals

    def _backend(self) -> Backend:
        if self._backend_instance is None:
            try:
                self._backend_instance = get_backend(self._record.backend)
            except BackendNotFoundError as e:
                raise BackendNotFoundError(
                    f"job {self.id} was run by backend {self._record.backend!r}, which cannot be loaded here: {e}"
                ) from None
        return self._backend_instance

    def _context(self) -> JobContext:
        be = self._backend()
        stored = {k: v for k, v in self._record.options.items() if v not in _REDACTED and v is not None}
        options = stored if self._live_options is None else self._live_options
        config: BackendConfig = be.parse_config(options)
        return JobContext(
            id=self.id,
            spec=self.spec,
            config=config,
            workdir=self.workdir,
            backend_job_id=self._record.backend_job_id,
            state=dict(self._record.state),
        )

    def _save(self, ctx: JobContext, **fields: Any) -> None:
        self._store.update(self.id, state=ctx.state, **fields)
        self._record = self._store.get(self.id)

    def _record_events(self, events: builtins.list[Event]) -> None:
        if events:
            self._store.add_events(self.id, events)

    def _last_seq(self) -> int:
        rows = self._store.events(self.id)
        return rows[-1][0] if rows else 0


def _cost_event(estimate: CostEstimate, what: str) -> Event:
    return Event(
        kind="cost",
        message=f"{what}: ${estimate.usd:.4f}" + (f", {estimate.hours:.2f} h" if estimate.hours else ""),
        data={"what": what, **estimate.model_dump()},
        key=f"cost-{what}",
    )


def _validate_data(spec: JobSpec, target: str | None) -> JobSpec:
    """Validate the spec's data files for the backend's target; fill in labels when the spec has none."""
    from ftkit.data import Dataset

    labels = spec.labels
    for field in ("train", "validation"):
        path = getattr(spec, field)
        if path is None:
            continue
        ds = Dataset.load(path)
        report = ds.validate(target=target, labels=labels, task=spec.task)
        if report.errors:
            raise DatasetError(report.summary(max_errors=10), report=report)
        if spec.task == "classification" and labels is None:
            labels = sorted(report.label_counts)
    if labels != spec.labels:
        spec = spec.model_copy(update={"labels": labels})
    return spec
