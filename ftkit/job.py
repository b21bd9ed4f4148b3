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

from pydantic import ValidationError

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
from ftkit.data.targets import Target
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
from ftkit.submitter import Submitter, submitting

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
            ConfigError: the spec or options are invalid (a learning rate or ``max_cost`` of inf or nan
                included), or the estimate exceeds ``max_cost``.
            DatasetError: a data file failed validation (``err.report`` holds every problem), or the
                validation data repeats training inputs and ``spec.allow_overlap`` is not set.
            BackendNotFoundError: no such backend is installed.
        """
        spec = _revalidated(spec) if isinstance(spec, JobSpec) else JobSpec.from_file(spec, backend=backend)
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
    #
    # Every status change is a compare-and-set in the registry (JobStore.compare_and_set) against the
    # status read from the registry, never the one this object holds: another process may have cancelled,
    # started or polled the job since. A stored `cancelled` is final for everything but resume().

    def start(self) -> FineTuneJob:
        """Start the job: this is where money or compute is spent. Returns at once.

        A job left ``validating`` by a start that was interrupted (an exception, Ctrl-C, a killed process)
        is reconciled first: followed if the backend has it, submitted again if not.

        Raises:
            JobError: the job is not ``created`` (started, cancelled...) or another live process is starting it.
        """
        self._record = self._store.get(self.id)
        if self.status is JobStatus.VALIDATING:
            self._reconcile_abandoned_submit()
            if self.status is JobStatus.VALIDATING:
                sub = _submitter(self._record)
                who = sub.describe() if sub else "another process"
                raise JobError(f"job {self.id} is being started by {who}; wait for it, or cancel the job")
            if self.status is not JobStatus.CREATED:
                return self  # the interrupted start had reached the backend: the job is running
        if self.status is not JobStatus.CREATED:
            raise JobError(f"job {self.id} is {self.status.value}; only a created job can be started")
        ctx = self._context()
        # Mark the attempt and who makes it before spending: a crash inside submit leaves a record that
        # says who was submitting, so that another process can tell when to reconcile by ctx.id.
        submitter = Submitter.current()
        ctx.state["submit"] = submitter.model_dump()
        won = self._store.compare_and_set(
            self.id,
            expect_status=JobStatus.CREATED,
            status=JobStatus.VALIDATING,
            state=ctx.state,
            error=None,
            backend_status=f"submitting: {submitter.describe()}",  # what `ftkit status` shows meanwhile
        )
        if won is None:
            self._record = self._store.get(self.id)
            raise JobError(f"job {self.id} is {self.status.value}; only a created job can be started")
        self._record = won
        return self._submit(ctx)

    def _submit(self, ctx: JobContext) -> FineTuneJob:
        be = self._backend()
        try:
            with submitting(self.id):
                backend_job_id = be.submit(ctx)
        except FtkitError as e:
            failed = self._store.compare_and_set(
                self.id, expect_status=JobStatus.VALIDATING, status=JobStatus.FAILED, error=str(e), state=ctx.state
            )
            self._record = failed or self._store.get(self.id)
            self._record_events([Event(level="error", message=f"start failed: {e}", key="start-failed")])
            raise
        except BaseException as e:
            # Ctrl-C, SystemExit...: the backend may or may not have the job. Say so in the registry (best
            # effort: the process may be going down), so that the next start()/refresh() reconciles at once.
            with contextlib.suppress(Exception):
                self._mark_interrupted(ctx, e)
            raise
        ctx.backend_job_id = backend_job_id
        won = self._store.compare_and_set(
            self.id,
            expect_status=JobStatus.VALIDATING,
            backend_job_id=backend_job_id,
            status=JobStatus.QUEUED,
            state=ctx.state,
            backend_status=None,
        )
        if won is not None:
            self._record = won
            self._record_events([Event(message=f"started as {backend_job_id}", key="started")])
            return self
        # The job moved on while the backend was creating it: a cancel from another process landed.
        # The backend job it does not want must not run: cancel it at once, and keep the job cancelled.
        self._record = self._store.get(self.id)
        if self._record.backend_job_id == backend_job_id:
            return self  # another process found this very job by its id and recorded it: nothing to undo
        if self.status is not JobStatus.CANCELLED or self._record.backend_job_id is not None:
            # Another process took the job over meanwhile (it took this one for dead): what this submit made goes.
            self._backend().cancel(ctx)
            self._record_events(
                [
                    Event(
                        level="warning",
                        key=f"superseded-{backend_job_id}",
                        message=f"backend job {backend_job_id} was started for a job another process had taken "
                        "over; it was cancelled",
                    )
                ]
            )
            return self
        self._adopt(ctx)
        self._record_events(
            [
                Event(
                    message=f"{self.status.value} while starting: backend job {backend_job_id} is cancelled",
                    key="cancelled-while-starting",
                )
            ]
        )
        self._stop_backend_job(ctx)
        return self

    def _mark_interrupted(self, ctx: JobContext, e: BaseException) -> None:
        sub = _submitter(self._record) or Submitter.current()
        ctx.state["submit"] = sub.model_copy(update={"interrupted": type(e).__name__}).model_dump()
        # Keep what submit had done (uploaded file ids...) so that the next start does not redo it, and mark
        # the submitter gone even on a job cancelled meanwhile: the next cancel() then stops what it left.
        self._adopt(ctx)
        if self.status is JobStatus.VALIDATING:
            status = "submit interrupted"
            self._store.compare_and_set(self.id, expect_status=JobStatus.VALIDATING, backend_status=status)
        self._record_events(
            [
                Event(
                    level="warning",
                    key=f"submit-interrupted-{sub.at}",
                    message=f"start interrupted ({type(e).__name__}) while submitting; start() again to finish "
                    "(the backend is asked first whether it has the job) or cancel() to stop",
                )
            ]
        )

    def _reconcile_abandoned_submit(self) -> None:
        """A ``validating`` job whose submitter is gone: follow the backend job it left, or go back to created."""
        rec = self._record
        if rec.status is not JobStatus.VALIDATING or rec.backend_job_id is not None:
            return
        sub = _submitter(rec)
        if sub is not None and sub.gone(self.id) is not True:
            return  # still in flight (or on another host, where nobody here can tell)
        be, ctx = self._backend(), self._context()
        found = be.find_submitted(ctx)
        who = sub.describe() if sub else "an earlier process"
        if found is not None:
            ctx.backend_job_id = found
            won = self._store.compare_and_set(
                self.id,
                expect_status=JobStatus.VALIDATING,
                expect_version=rec.version,
                status=JobStatus.QUEUED,
                backend_job_id=found,
                state=ctx.state,
                backend_status=None,
            )
            message = f"the start by {who} did not finish, but the backend has the job: following {found}"
        else:
            ctx.state.pop("submit", None)
            won = self._store.compare_and_set(
                self.id,
                expect_status=JobStatus.VALIDATING,
                expect_version=rec.version,
                status=JobStatus.CREATED,
                state=ctx.state,
                backend_status=None,
            )
            message = f"the start by {who} did not reach the backend: the job is created again"
        self._record = won or self._store.get(self.id)
        if won is not None:
            self._record_events([Event(level="warning", message=message, key=f"reconciled-{rec.version}")])

    def refresh(self) -> JobStatus:
        """Ask the backend once for status and new events, and record them.

        The stored status is changed only if no other process changed it since it was read: a job cancelled
        elsewhere stays cancelled, whatever the backend still says (its answer is kept in ``backend_status``).
        """
        for _ in range(5):  # each lost race means another process changed the status: look again
            # Another process may have changed the job (cancelled it, polled it): start from the registry.
            self._record = self._store.get(self.id)
            if self._record.backend_job_id is None:
                self._reconcile_abandoned_submit()
                if self.status is JobStatus.CANCELLED and self._record.state.get("cancel_pending"):
                    # Cancelled while a submit was in flight, and that submitter died before it could stop
                    # the job it created: stop it now.
                    with contextlib.suppress(FtkitError):
                        self._stop_backend_job(self._context())
                if self._record.backend_job_id is None:
                    return self.status
            if self.status.is_terminal and self._record.state.get("final_polled"):
                return self.status
            if self._poll_once():
                break
        return self.status

    def _poll_once(self) -> bool:
        """One poll recorded; False when the job's status changed in the registry meanwhile (nothing written)."""
        seen = self._record
        be, ctx = self._backend(), self._context()
        try:
            result: PollResult = be.poll(ctx)
        except FtkitError:
            # Keep what the backend learnt before it failed (cursors, retry counts), if nobody wrote since.
            self._store.compare_and_set(self.id, expect_version=seen.version, state=ctx.state)
            raise
        self._record_events(result.events)
        fields: dict[str, Any] = {"backend_status": result.backend_status}
        if seen.status.is_terminal:
            # Cancelled in the registry while the backend still had the job: the status stands; the poll
            # only records how the backend job ended.
            if result.status is JobStatus.SUCCEEDED:
                self._record_events(
                    [
                        Event(
                            level="warning",
                            key="finished-after-cancel",
                            message="the backend finished the job before the cancel reached it; it stays "
                            f"{seen.status.value}",
                        )
                    ]
                )
        else:
            fields["status"] = result.status
            if result.model:
                fields["model"] = result.model
            if result.error:
                fields["error"] = result.error
        if result.actual_cost is not None and seen.actual_cost is None:
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
            fields["manifest"] = seen.manifest | manifest_extra
        won = self._store.compare_and_set(self.id, expect_status=seen.status, state=ctx.state, **fields)
        if won is None:
            return False
        self._record = won
        return True

    def wait(
        self,
        progress: bool = False,
        timeout: float | None = None,
        poll_interval: float | None = None,
        log_every: int | None = None,
    ) -> JobStatus:
        """Follow the job until it ends.

        Args:
            progress: show a progress bar with steps, loss and ETA (plain log lines when stdout is not a terminal).
            timeout: seconds to wait at most.
            poll_interval: seconds between polls; defaults to the backend's.
            log_every: with ``progress`` and no terminal, a line every this many steps (default: about 20 per job).

        Returns:
            The final status (``succeeded`` or ``cancelled``).

        Raises:
            JobFailedError: the job failed.
            JobTimeoutError: ``timeout`` ran out first; the job goes on.
            JobError: the job was never started.
        """
        interval = poll_interval if poll_interval is not None else self._backend().capabilities.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = self._last_seq()
        bar = None
        if progress:
            from ftkit.progress import JobProgress

            bar = JobProgress(self.id, log_every=log_every).__enter__()
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
                if status is JobStatus.CREATED:
                    raise JobError(f"job {self.id} is created but not started: call start() first")
                if bar is not None:
                    new = self._store.events(self.id, after=seen)
                    if new:
                        seen = new[-1][0]
                    bar.update(status.value, [e for _, e in new], error=self._record.error)
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
        """Stop the job and release what it holds. Wins over any later start, refresh or wait, in any process.

        A job the backend has is cancelled there first, then the registry is moved to ``cancelled`` by
        compare-and-set from the status read after the backend's answer: a backend that refuses leaves the
        job as it was (the error is raised), and a job that ended before the cancel reached the backend is
        reported as it ended. A job the backend does not have yet (``created``, or a submit in flight or cut
        off) is marked ``cancelled`` in the registry first: a submit in flight in another process sees that
        when the backend answers and cancels the job it created; one cut off is looked up and stopped here.

        Returns:
            ``cancelled``, or how the job had already ended (``succeeded``/``failed``) before the cancel.
        """
        for _ in range(10):  # each round that loses a race re-reads the job; a few always suffice
            self._record = self._store.get(self.id)
            if self.status is JobStatus.CANCELLED and self._record.state.get("cancel_pending"):
                self._stop_backend_job(self._context())  # an earlier cancel left this unfinished
                return self.status
            if self.status.is_terminal:
                return self.status
            submitted = self._record.backend_job_id is not None
            if submitted:
                be, ctx = self._backend(), self._context()
                be.cancel(ctx)
                self._adopt(ctx)
                with contextlib.suppress(FtkitError):
                    self.refresh()  # the backend's answer: cancelled, or how it ended before the cancel
                if self.status.is_terminal:
                    break
            state = {**self._record.state, "cancel_requested_at": time.time()}
            if not submitted:
                state["cancel_pending"] = True  # until whatever an unfinished submit created is stopped
            won = self._store.compare_and_set(
                self.id,
                expect_status=self.status,
                expect_version=self._record.version,
                status=JobStatus.CANCELLED,
                state=state,
            )
            if won is not None:
                self._record = won
                if not submitted:
                    self._stop_backend_job(self._context())
                break
        if self.status is JobStatus.CANCELLED:
            self._record_events([Event(message="cancelled", key="cancelled")])
        return self.status

    def _stop_backend_job(self, ctx: JobContext) -> None:
        """Stop the backend job of a cancelled job: the one recorded, or one an unfinished submit created."""
        be = self._backend()
        if ctx.backend_job_id is None:
            sub = _submitter(self._record)
            if sub is not None and sub.gone(self.id) is False:
                # The submit is still in flight: it will see the cancel when it returns and stop its job.
                # cancel_pending stays, so that a later cancel() or refresh() finishes the work if it dies.
                return
            ctx.backend_job_id = be.find_submitted(ctx)
        if ctx.backend_job_id is not None:
            try:
                be.cancel(ctx)
            except FtkitError as e:
                ctx.state["cancel_pending"] = True  # the next cancel() tries again
                self._adopt(ctx)
                self._record_events(
                    [
                        Event(
                            level="error",
                            key=f"cancel-failed-{time.time()}",
                            message=f"cancelled here, but the backend did not confirm: {e}; cancel again",
                        )
                    ]
                )
                raise
        ctx.state.pop("cancel_pending", None)
        self._adopt(ctx, drop=("cancel_pending",))
        if ctx.backend_job_id is not None:
            with contextlib.suppress(FtkitError):
                self.refresh()  # how the backend job ended, for the record; the status stays

    def _adopt(self, ctx: JobContext, drop: tuple[str, ...] = ()) -> None:
        """Record the backend job id and state of ``ctx`` whatever the job's status is now (another process
        may have changed it): ``ctx.state`` is merged over the stored state, keys in ``drop`` removed."""
        for _ in range(10):
            fresh = self._store.get(self.id)
            state = {k: v for k, v in {**fresh.state, **ctx.state}.items() if k not in drop}
            won = self._store.compare_and_set(
                self.id,
                expect_status=fresh.status,
                expect_version=fresh.version,
                backend_job_id=ctx.backend_job_id or fresh.backend_job_id,
                state=state,
            )
            if won is not None:
                self._record = won
                return
        raise JobError(f"job {self.id} is being written by other processes without pause; try again")

    def pause(self) -> None:
        """Pause the job where the backend supports it.

        Raises:
            ConfigError: the backend cannot pause jobs (``capabilities.supports_pause``); nothing is changed.
        """
        be = self._capable("supports_pause", "pause jobs")
        ctx = self._context()
        be.pause(ctx)
        self._adopt(ctx)
        self.refresh()

    def resume(self) -> None:
        """Resume a paused job, restart an interrupted one from its last checkpoint, or finish an interrupted start.

        Raises:
            JobError: the job was never started, or another live process is starting it.
            ConfigError: the backend cannot do it: resume a paused job (``capabilities.supports_pause``) or
                restart one from its last checkpoint (``capabilities.supports_resume_from_checkpoint``).
        """
        self._record = self._store.get(self.id)
        if self.status in (JobStatus.CREATED, JobStatus.VALIDATING):
            if self.status is JobStatus.CREATED:
                raise JobError(f"job {self.id} was never started: call start()")
            self.start()
            return
        seen = self._record
        if seen.status is JobStatus.PAUSED:
            be = self._capable("supports_pause", "resume paused jobs")
        else:
            be = self._capable(
                "supports_resume_from_checkpoint", f"restart a {seen.status.value} job from a checkpoint"
            )
        ctx = self._context()
        be.resume(ctx)
        ctx.state.pop("final_polled", None)
        ctx.state.pop("cancel_pending", None)
        won = self._store.compare_and_set(
            self.id, expect_status=seen.status, status=JobStatus.QUEUED, error=None, state=ctx.state
        )
        if won is None:
            # Cancelled (or ended) while the backend was restarting it: the restarted run must not go on.
            self._record = self._store.get(self.id)
            self._adopt(ctx)
            if self.status is JobStatus.CANCELLED:
                self._stop_backend_job(ctx)
            return
        self._record = won
        self.refresh()

    def base_model(self) -> Predictor:
        """A Predictor over the model this job starts from, with the job's options: the zero-shot baseline.

        Scoring it on the same held-out set as :meth:`model` is how a fine-tune proves what it added. The
        labels and the preamble (system prompt) of a classification spec are set on it, since a base model
        knows none of its own: the baseline is scored under the prompt the job trains with.
        """
        predictor = self._backend().base_model(self.spec.model, self._context().config)
        if self.spec.labels and hasattr(predictor, "labels"):
            predictor.labels = list(self.spec.labels)
        if self.spec.preamble is not None and hasattr(predictor, "preamble"):
            predictor.preamble = self.spec.preamble  # the prompt the job trains with, so the baseline is comparable
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

    def _capable(self, flag: str, what: str) -> Backend:
        """The backend, once its capabilities say it can do ``what`` (else a ConfigError, nothing changed)."""
        be = self._backend()
        if not getattr(be.capabilities, flag):
            raise ConfigError(f"backend {self._record.backend!r} cannot {what} ({flag} is false); job {self.id} "
                              "is left as it is")  # fmt: skip
        return be

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

    def _record_events(self, events: builtins.list[Event]) -> None:
        if events:
            self._store.add_events(self.id, events)

    def _last_seq(self) -> int:
        rows = self._store.events(self.id)
        return rows[-1][0] if rows else 0


def _revalidated(spec: JobSpec) -> JobSpec:
    """The spec checked again: a JobSpec's fields can be assigned after it was built, unchecked (e.g. an inf
    learning rate), and nothing unchecked may be recorded or started."""
    try:
        return JobSpec.model_validate(spec.model_dump())
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "spec"
        raise ConfigError(f"spec: {where}: {err['msg']}") from None


def _submitter(record: JobRecord) -> Submitter | None:
    raw = record.state.get("submit")
    return Submitter.model_validate(raw) if isinstance(raw, dict) else None


def _cost_event(estimate: CostEstimate, what: str) -> Event:
    return Event(
        kind="cost",
        message=f"{what}: ${estimate.usd:.4f}" + (f", {estimate.hours:.2f} h" if estimate.hours else ""),
        data={"what": what, **estimate.model_dump()},
        key=f"cost-{what}",
    )


def _validate_data(spec: JobSpec, target: str | Target | None) -> JobSpec:
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
