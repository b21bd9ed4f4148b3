"""``ftkit migrate``: move a hosted fine-tune to an open model in one resumable run.

Stages, each kept as a job in the registry or a file, so running again resumes where it stopped::

    1. inventory   the hosted job's entry: status, task, shutdown date             (reads the API)
    2. attach      the hosted job as a FineTuneJob, its data downloaded             (registry record)
    3. record      the hosted model's answers on the test file: a recorded model   (spends: inference)
    4. retrain     the equivalent spec on hf / remote, trained                      (spends: compute)
    5. evaluate    the open model's answers on the same test file, recorded too     (local inference)
    6. report      compare: metrics, McNemar, non-inferiority verdict; HTML + JSON  (file)

State lives in ``$FTKIT_HOME/migrations/<hosted job id>/migration.json`` (written atomically after
every stage): the ids of the attached and the retraining job and the report's paths. Nothing is
spent before :meth:`Migration.plan` has priced the stages and ``confirm`` has accepted the plan.
A retraining job that is still running (the worker goes on when this process is killed) is
followed, one that died is resumed from its last checkpoint; a recording is never made twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text
from ftkit.backend import get_backend
from ftkit.errors import APIError, ConfigError, EvaluationError
from ftkit.evaluate.paired import DEFAULT_MARGIN
from ftkit.evaluate.predictions import load_reference
from ftkit.events import JobStatus
from ftkit.migrate.inventory import InventoryEntry
from ftkit.migrate.plan import MigrationPlan, MigrationResult, MigrationState, Step, estimate_recording
from ftkit.migrate.record import attach_once, check_labels, file_sha256, find_recording, record_model
from ftkit.migrate.recover import chat_to_classification, recover_task
from ftkit.migrate.retrain import MappingRow, create_retrain_job, retrain_spec
from ftkit.store import JobStore

__all__ = ["Migration", "MigrationPlan", "MigrationResult", "MigrationState", "Step"]

SOURCE_BACKEND = "openai"


# The side-by-side verdict needs both models scored on one test file; for preference pairs that means
# log-probabilities of given answers, which OpenAI's API does not return.
DPO_WORKFLOW = (
    "this is a DPO (preference) fine-tune: the workflow's side-by-side comparison cannot score it (OpenAI "
    "returns no log-probabilities of given answers, so the hosted model has no preference accuracy); it was "
    "recorded on the test file. Retrain it with ftkit.migrate.create_retrain_job(FineTuneJob.attach({job!r}), "
    "{backend!r}), which carries beta and epochs over (docs/backends/hf.md), and evaluate the open model on "
    "preference pairs with ftkit.evaluate"
)


class Migration:
    """One hosted fine-tune on its way to an open model. Build it, look at :meth:`plan`, then :meth:`run`.

    Args:
        hosted_job: the hosted job id (``ftjob-...``).
        test: the labelled test file both models are judged on (classification text/label lines, or the
            same chat shape as the training data).
        backend: where to retrain: ``hf`` (this machine) or ``remote`` (a rented GPU).
        model: the open model; defaults to the backend's default.
        options: options of the retraining backend (e.g. ``{"max_steps": 100}`` or a remote provider).
        source_options: options of the hosted backend (key, base URL).
        margin: the accuracy loss the non-inferiority test allows.
        learning_rate: an absolute learning rate for the retraining (default: the backend's).
        store: the registry; defaults to ``$FTKIT_HOME``.
        today: the day shutdown dates are counted from.
        say: called with each progress line.
    """

    def __init__(
        self,
        hosted_job: str,
        test: str | Path,
        backend: str = "hf",
        model: str | None = None,
        *,
        options: dict[str, Any] | None = None,
        source_options: dict[str, Any] | None = None,
        margin: float = DEFAULT_MARGIN,
        learning_rate: float | None = None,
        store: JobStore | None = None,
        today: dt.date | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.hosted_job = hosted_job
        self.test = Path(test).expanduser()
        self.backend = backend
        self.model = model
        self.options = options or {}
        self.source_options = source_options or {}
        self.margin = margin
        self.learning_rate = learning_rate
        self.store = store or JobStore()
        self.today = today
        self.say = say or (lambda _line: None)
        self.folder = self.store.root / "migrations" / hosted_job
        self.state = self._load_state()
        self._attached: Any = None
        self._retrain: Any = None

    # ------------------------------------------------------------------ state

    def _load_state(self) -> MigrationState:
        path = self.folder / "migration.json"
        if path.is_file():
            return MigrationState.model_validate_json(path.read_text(encoding="utf-8"))
        return MigrationState(hosted_job=self.hosted_job)

    def _save(self) -> None:
        atomic_write_text(self.folder / "migration.json", self.state.model_dump_json(indent=2))

    # ------------------------------------------------------------------ stages

    def _entry(self) -> InventoryEntry:
        be = get_backend(SOURCE_BACKEND)
        lookup = getattr(be, "inventory_entry", None)
        if not callable(lookup):
            raise ConfigError(f"the {SOURCE_BACKEND} backend cannot list its fine-tunes; update ftkit-{SOURCE_BACKEND}")
        try:
            entry: InventoryEntry = lookup(self.hosted_job, be.parse_config(self.source_options), today=self.today)
        except APIError as e:
            if e.status_code == 404:
                raise ConfigError(f"no fine-tuning job {self.hosted_job!r} on this {SOURCE_BACKEND} account") from None
            raise
        if entry.status == "failed":
            raise ConfigError(
                f"{SOURCE_BACKEND} job {self.hosted_job} failed: it has no model to record or move; "
                "fix its data and train it on an open model directly (ftkit.FineTuneJob.create)"
            )
        if entry.status != "succeeded" or not entry.fine_tuned_model:
            raise ConfigError(
                f"{SOURCE_BACKEND} job {self.hosted_job} is {entry.status}; migrate it once it has succeeded"
            )
        return entry

    def _attach(self) -> Any:
        from ftkit.job import FineTuneJob

        if self._attached is None:
            if self.state.attached_job:
                self._attached = FineTuneJob.get(self.state.attached_job, store=self.store)
            else:
                self._attached = attach_once(
                    self.hosted_job, SOURCE_BACKEND, options=self.source_options, store=self.store
                )
                self.state.attached_job = self._attached.id
                self._save()
                self.say(f"attached {self.hosted_job} as {self._attached.id}")
        return self._attached

    def _scored_test(self, job: Any) -> Path:
        """The test file as the models are scored on it: classification lines for a classifier."""
        if not self.test.is_file():
            raise ConfigError(f"{self.test}: no such test file")
        ref = load_reference(self.test)
        path = self.test
        if job.spec.task == "classification" and ref.task == "generation":
            recovered = recover_task(self.test)
            if recovered.task != "classification":
                raise EvaluationError(
                    f"{self.test}: the model is a classifier but this chat file is not "
                    f"classification-shaped ({recovered.reason})"
                )
            if (recovered.system_prompt or "") != (job.spec.preamble or ""):
                self.say(
                    f"note: {self.test} has another system prompt than the training data; "
                    "both models are scored under the training prompt"
                )
            path = self.folder / f"test-{file_sha256(self.test)[:12]}.classification.jsonl"
            if not path.is_file():
                chat_to_classification(self.test, path)
            ref = load_reference(path)
        elif job.spec.task != "classification" and ref.task == "classification":
            raise EvaluationError(
                f"{self.test}: text/label lines, but {self.hosted_job} was trained on free chat; "
                "give a chat test file whose last message is the reference answer"
            )
        check_labels(ref, job.spec.labels)
        return path

    def _retrain_job(self, attached: Any) -> Any:
        from ftkit.job import FineTuneJob

        if self._retrain is None:
            # One retraining job per open model: another --model (or backend) trains anew, the same one resumes.
            key = f"{self.backend}:{self.model or get_backend(self.backend).default_model(attached.spec.task)}"
            known = self.state.retrain_jobs.get(key)
            if known:
                self._retrain = FineTuneJob.get(known, store=self.store)
            else:
                self._retrain = create_retrain_job(
                    attached,
                    self.backend,
                    self.model,
                    options=self.options,
                    learning_rate=self.learning_rate,
                    store=self.store,
                )
                self.state.retrain_jobs[key] = self._retrain.id
            self.state.retrain_job = self._retrain.id
            self._save()
        return self._retrain

    # ------------------------------------------------------------------ plan and run

    def plan(self) -> MigrationPlan:
        """Look everything up and price the stages still to do. Spends nothing.

        Attaching (a registry record and the data download) and recording the retraining job (validated,
        estimated, not started) happen here, since the prices depend on them; both are free and are reused
        by :meth:`run`.

        Raises:
            ConfigError: unknown or failed hosted job, unusable backend or model.
            EvaluationError: a test file that does not fit the model (its labels, its format).
        """
        entry = self._entry()
        attached = self._attach()
        test = self._scored_test(attached)
        self.state.test_file, self.state.scored_test = str(self.test), str(test)
        self._save()
        steps = [
            Step(
                name="inventory", what=f"{entry.job_id}: {entry.status}, {entry.method}, task {entry.task}", done=True
            ),
            Step(name="attach", what=f"registry job {attached.id}, training data downloaded", done=True),
        ]
        recorded = find_recording(attached, test)
        rec_step = estimate_recording(entry, test, attached.spec.preamble, attached.spec.labels)
        rec_step.done = recorded is not None
        if recorded is None and not entry.available:
            rec_step.blocked = (
                f"{entry.fine_tuned_model} no longer answers and was not recorded on this test file; "
                "there is nothing to compare the open model against"
            )
        steps.append(rec_step)
        mapping: list[MappingRow] = []
        model = self.model or "-"
        if entry.method == "dpo" or attached.spec.task == "preference":
            steps.append(
                Step(
                    name="retrain",
                    what="train the same data on an open model",
                    spends=True,
                    blocked=DPO_WORKFLOW.format(job=entry.job_id, backend=self.backend),
                )
            )
        else:
            _, mapping = retrain_spec(attached, self.backend, self.model, learning_rate=self.learning_rate)
            job = self._retrain_job(attached)
            model = str(job.spec.model)
            est = job.record.estimated_cost or {}
            done = job.status is JobStatus.SUCCEEDED
            steps.append(
                Step(
                    name="retrain",
                    spends=True,
                    done=done,
                    usd=est.get("usd"),
                    hours=est.get("hours"),
                    what=f"{self.backend} job {job.id} trains {model} ({job.status.value})",
                    assumptions=list(est.get("assumptions") or []),
                )
            )
            steps.append(
                Step(
                    name="evaluate",
                    done=find_recording(job, test) is not None,
                    what=f"the open model answers the {len(load_reference(test))} test examples "
                    f"({'this machine' if self.backend == 'hf' else 'its backend'})",
                )
            )
        steps.append(
            Step(
                name="report",
                done=bool(self.state.report_json and Path(self.state.report_json).is_file()),
                what=f"compare both, non-inferiority margin {self.margin * 100:g} points; HTML and JSON "
                f"in {self.folder}",
            )
        )
        return MigrationPlan(
            hosted_job=self.hosted_job,
            entry=entry,
            backend=self.backend,
            model=model,
            test=str(test),
            folder=str(self.folder),
            steps=steps,
            mapping=mapping,
        )

    def run(
        self,
        confirm: Callable[[MigrationPlan], bool] | None = None,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,
    ) -> MigrationResult:
        """Plan, ask ``confirm`` (when anything is left to spend), then run the stages not yet done.

        Args:
            confirm: shown the plan; return False to stop before spending. None accepts.
            poll_interval: seconds between looks at the retraining job.
            timeout: seconds to wait for the retraining at most (it goes on afterwards; run again to resume).
        """
        plan = self.plan()
        for line in plan.lines():
            self.say(line)
        if plan.needs_spending and confirm is not None and not confirm(plan):
            return MigrationResult(plan=plan, state=self.state, finished=False, message="stopped before spending")
        attached = self._attach()
        test = Path(plan.test)
        steps = {s.name: s for s in plan.steps}
        if steps["record"].blocked:
            raise ConfigError(steps["record"].blocked)
        rec = record_model(attached, test)
        self.say(f"recorded {rec.model} on {rec.n} examples: {rec.folder}")
        if steps["retrain"].blocked:
            return MigrationResult(plan=plan, state=self.state, finished=False, message=steps["retrain"].blocked)
        job = self._retrain_job(attached)
        self._train(job, poll_interval, timeout)
        new_rec = record_model(job, test)
        self.say(f"recorded the open model's answers: {new_rec.folder}")
        verdict = self._report(plan, attached, job, test)
        return MigrationResult(plan=plan, state=self.state, finished=True, message=verdict)

    def _train(self, job: Any, poll_interval: float | None, timeout: float | None) -> None:
        status = job.refresh()
        if status is JobStatus.SUCCEEDED:
            return
        if status is JobStatus.CREATED:
            self.say(f"training {job.spec.model} on {self.backend} as {job.id}")
            job.start()
        elif status in (JobStatus.FAILED, JobStatus.CANCELLED):
            if not get_backend(job.backend_name).capabilities.supports_resume_from_checkpoint:
                raise ConfigError(f"retraining job {job.id} {status.value}: {job.record.error or 'no reason given'}")
            self.say(f"retraining job {job.id} {status.value}; resuming from its last checkpoint")
            job.resume()
        else:
            self.say(f"retraining job {job.id} is {status.value}; following it")
        job.wait(progress=False, timeout=timeout, poll_interval=poll_interval)

    def _report(self, plan: MigrationPlan, attached: Any, job: Any, test: Path) -> str:
        from ftkit.evaluate import compare

        hosted_name = plan.entry.fine_tuned_model or attached.id
        open_name = f"{self.backend}:{job.spec.model}"
        report = compare(
            {hosted_name: attached, open_name: job}, test, reference=hosted_name, margin=self.margin, progress=False
        )
        html, js = self.folder / "report.html", self.folder / "report.json"
        report.to_html(html)
        atomic_write_text(js, report.to_json())
        self.state.report_html, self.state.report_json = str(html), str(js)
        self.state.verdict = report.verdicts[0] if report.verdicts else None
        self._save()
        self.say(f"report: {html} and {js}")
        verdict = self.state.verdict or "no verdict (the models were not compared on accuracy)"
        self.say("verdict: " + verdict)
        return verdict
