"""OpenAIBackend: OpenAI hosted fine-tuning (supervised and DPO) behind ftkit's Backend ABC.

``submit`` uploads the data (reusing identical uploads) and creates the job with
``metadata.ftkit_job_id`` set to ftkit's id, so a crash between "created" and "recorded" is
reconciled on the next ``submit`` by listing jobs with that metadata. ``poll`` reads the job,
the events new since the last poll (newest first, paged until the last event seen), and once the
job has succeeded, its checkpoints, results file and ``trained_tokens`` (the actual cost).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from ftkit.atomic import atomic_write_bytes, atomic_write_text
from ftkit.backend import Backend, BackendConfig, Capabilities, CostEstimate, JobContext, PollResult
from ftkit.costs.rows import EstimateWork
from ftkit.data.targets import OPENAI_ALIASES
from ftkit.errors import APIError, BackendUnavailableError, ConfigError
from ftkit.events import Event, JobStatus
from ftkit.migrate.inventory import InventoryEntry
from ftkit.migrate.recover import chat_to_classification, recover_task
from ftkit.predictor import Predictor
from ftkit.spec import Hyperparameters, JobSpec
from ftkit_openai import pricing, sunset
from ftkit_openai.client import OpenAIAPI
from ftkit_openai.config import OpenAIConfig
from ftkit_openai.eventmap import checkpoint_event, job_event, result_row_event
from ftkit_openai.files import upload
from ftkit_openai.inventory import method_hyperparameters
from ftkit_openai.predictor import OpenAIPredictor
from ftkit_openai.results import decode_results, parse_results
from ftkit_openai.statuses import STATUS_TABLE, TERMINAL

DEFAULT_MODEL = "gpt-4.1-mini-2025-04-14"
EVENT_PAGE = 100


class OpenAIBackend(Backend):
    """Fine-tuning on OpenAI (or any service that speaks its API, such as the loopback emulator)."""

    name: ClassVar[str] = "openai"
    config_model: ClassVar[type[BackendConfig]] = OpenAIConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        tasks=frozenset({"chat", "classification", "completion", "preference"}),
        supports_pause=True,
        supports_attach=True,
        needs_network=True,
        spends_money=True,
        poll_interval=10.0,
    )

    def __init__(self) -> None:
        self._session_key: Any = None

    def parse_config(self, options: dict[str, Any]) -> BackendConfig:
        """Validate options; an ``api_key`` option is remembered by this instance only.

        The registry never stores the key, so the config rebuilt from the record lacks it: the
        same job handle keeps using the key it was given, any other process reads OPENAI_API_KEY.
        """
        config = _cfg(super().parse_config(options))
        if config.api_key is not None:
            self._session_key = config.api_key
        elif self._session_key is not None:
            config = config.model_copy(update={"api_key": self._session_key})
        return config

    # ------------------------------------------------------------------ before spending

    def default_model(self, task: str) -> str:
        return DEFAULT_MODEL

    def validation_target(self, spec: JobSpec, config: BackendConfig) -> str | None:
        return f"openai:{spec.model or DEFAULT_MODEL}"

    def model_target(self, model: str) -> str | None:
        """``openai:<dated model>``: an alias (``gpt-4o-mini``) becomes the snapshot OpenAI trains."""
        return f"openai:{OPENAI_ALIASES.get(model, model)}"

    def describe(self) -> str:
        closed = sunset.creation_closed(sunset.today())
        return "OpenAI hosted fine-tuning" + (" (new jobs closed since 2027-01-06; models still usable)"
                                              if closed else f" (new jobs until {sunset.FINE_TUNING_CUTOFF})")

    def check(self, spec: JobSpec, config: BackendConfig) -> None:
        cfg = _cfg(config)
        on = sunset.today(cfg.today)
        if sunset.creation_closed(on):
            raise BackendUnavailableError(sunset.closed_message(on))
        method = _method(spec, cfg)
        if (method == "dpo") != (spec.task == "preference"):
            raise ConfigError(f"[openai] method {method!r} does not fit task {spec.task!r}: "
                              "dpo trains on preference data, supervised on the other tasks")
        if cfg.beta is not None and method != "dpo":
            raise ConfigError("[openai] beta applies to the dpo method only")
        hp = spec.hyperparameters
        if hp.epochs is not None and hp.epochs > 50:
            raise ConfigError(f"[openai] OpenAI takes 1..50 epochs, not {hp.epochs}")
        if hp.batch_size is not None and hp.batch_size > 256:
            raise ConfigError(f"[openai] OpenAI takes a batch size of 1..256, not {hp.batch_size}")
        if len(cfg.metadata) > 15:
            raise ConfigError("[openai] at most 15 metadata pairs (ftkit adds ftkit_job_id as the 16th)")

    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        from ftkit.data import Dataset

        spec, model = ctx.spec, ctx.spec.model or DEFAULT_MODEL
        price = pricing.price_of(model)
        stats = Dataset.stats(Dataset.load(spec.train), f"openai:{model}", labels=spec.labels,
                              preamble=spec.preamble)
        epochs = spec.hyperparameters.epochs or pricing.default_epochs(stats.examples)
        tokens = stats.billed_tokens_per_epoch * epochs
        assumptions = [
            f"{stats.examples} examples, {stats.billed_tokens_per_epoch} billed tokens per epoch "
            f"({stats.tokenizer}, examples capped at {stats.limit} tokens)",
            f"{epochs} epochs" + ("" if spec.hyperparameters.epochs else " (OpenAI's auto heuristic)"),
            f"prices as of {pricing.PRICES_AS_OF}: {pricing.PRICES_SOURCE}",
        ]
        if price is None or price.training is None:
            assumptions.append(f"no per-token training price known for {model}")
            return CostEstimate(usd=0.0, billed_tokens=tokens, assumptions=assumptions, epochs=epochs)
        if spec.task == "preference":
            assumptions.append("DPO billed like SFT on input + preferred output tokens (UNCERTAIN)")
        usd = price.training * tokens / 1_000_000
        assumptions.append(f"${price.training:g} per 1M training tokens for {pricing.base_model_of(model)}")
        return CostEstimate(usd=round(usd, 6), billed_tokens=tokens, assumptions=assumptions, epochs=epochs)

    def estimate_evaluation(self, ctx: JobContext, work: EstimateWork) -> CostEstimate | None:
        """Answering the test set with the fine-tuned model through the Batch API (half the synchronous price)."""
        from ftkit.costs.estimate import estimate_openai_inference
        from ftkit.costs.rows import as_evaluation

        model = ctx.spec.model or DEFAULT_MODEL
        try:
            return as_evaluation(
                estimate_openai_inference(work.eval_input_tokens, work.eval_output_tokens, model, batch=True)
            )
        except ConfigError:
            return None  # no catalogued inference price for this model: training is still priced

    # ------------------------------------------------------------------ spending

    def submit(self, ctx: JobContext) -> str:
        cfg = _cfg(ctx.config)
        on = sunset.today(cfg.today)
        if sunset.creation_closed(on):
            raise BackendUnavailableError(sunset.closed_message(on))
        if ctx.state.get("openai_job_id"):
            return str(ctx.state["openai_job_id"])
        api = OpenAIAPI(cfg)
        existing = self._find_by_ftkit_id(api, ctx.id)
        if existing is not None:  # a previous submit created it and crashed before recording
            ctx.state["openai_job_id"] = existing
            return existing
        for field in ("train", "validation"):
            path = getattr(ctx.spec, field)
            if path is not None and f"{field}_file" not in ctx.state:
                content = self._training_bytes(ctx, Path(path))
                file_id, reused = upload(api, content, Path(path).name, "fine-tune", cfg.reuse_files)
                ctx.state[f"{field}_file"] = file_id
                ctx.state[f"{field}_file_reused"] = reused
        body = self._create_body(ctx, cfg)
        try:
            job = api.call(api.client.fine_tuning.jobs.create, **body)
        except APIError as e:
            if sunset.is_sunset_refusal(e.status_code, e.code, str(e)):
                raise BackendUnavailableError(sunset.refused_message(str(e))) from None
            raise
        ctx.state["openai_job_id"] = job.id
        return str(job.id)

    def find_submitted(self, ctx: JobContext) -> str | None:
        """The OpenAI job an interrupted submit created, found by its ``metadata.ftkit_job_id``."""
        found = self._find_by_ftkit_id(OpenAIAPI(_cfg(ctx.config)), ctx.id)
        if found is not None:
            ctx.state["openai_job_id"] = found
        return found

    def _create_body(self, ctx: JobContext, cfg: OpenAIConfig) -> dict[str, Any]:
        spec = ctx.spec
        method = _method(spec, cfg)
        hp = _hyperparameters(spec.hyperparameters, cfg, method)
        body: dict[str, Any] = {
            "model": spec.model or DEFAULT_MODEL,
            "training_file": ctx.state["train_file"],
            "method": {"type": method, method: {"hyperparameters": hp}},
            "seed": spec.hyperparameters.seed,
            "metadata": {**cfg.metadata, "ftkit_job_id": ctx.id},
        }
        if ctx.state.get("validation_file"):
            body["validation_file"] = ctx.state["validation_file"]
        if spec.suffix:
            body["suffix"] = spec.suffix
        return body

    def _training_bytes(self, ctx: JobContext, path: Path) -> bytes:
        """The file as OpenAI must see it: classification data becomes chat with the shared prompt."""
        if ctx.spec.task != "classification":
            return path.read_bytes()
        import orjson

        from ftkit.data import Dataset, classification_to_chat

        labels = ctx.spec.labels or Dataset.load(path).labels()
        rows = [orjson.dumps(classification_to_chat(o, labels, ctx.spec.preamble)) + b"\n"
                for o in Dataset.load(path)]
        data = b"".join(rows)
        atomic_write_bytes(ctx.workdir / f"{path.stem}.chat.jsonl", data)  # kept beside the job for inspection
        return data

    @staticmethod
    def _find_by_ftkit_id(api: OpenAIAPI, ftkit_id: str) -> str | None:
        page = api.call(api.client.fine_tuning.jobs.list, metadata={"ftkit_job_id": ftkit_id}, limit=10)
        for job in page.data:
            if (job.metadata or {}).get("ftkit_job_id") == ftkit_id:
                return str(job.id)
        return None

    # ------------------------------------------------------------------ following

    def poll(self, ctx: JobContext) -> PollResult:
        cfg = _cfg(ctx.config)
        api = OpenAIAPI(cfg)
        job_id = ctx.backend_job_id or ctx.state["openai_job_id"]
        job = api.call(api.client.fine_tuning.jobs.retrieve, job_id)
        n_epochs = job.hyperparameters.n_epochs if job.hyperparameters else None
        if isinstance(n_epochs, int):
            ctx.state["n_epochs"] = n_epochs
        raw = self._new_events(api, ctx, job_id)
        for e in raw:
            data = e.data if isinstance(e.data, dict) else {}
            if getattr(e, "type", None) == "metrics" and data.get("total_steps"):
                ctx.state["total_steps"] = int(data["total_steps"])
            if getattr(e, "type", None) == "metrics" and data.get("step") is not None:
                ctx.state["last_step"] = max(int(ctx.state.get("last_step", 0)), int(data["step"]))
        steps_per_epoch = _steps_per_epoch(ctx)
        events = [job_event(e, steps_per_epoch) for e in raw]
        status = STATUS_TABLE.get(job.status)
        if status is None:
            status = JobStatus(ctx.state.get("last_status", JobStatus.QUEUED.value))
            events.append(Event(level="error", message=f"unknown OpenAI job status {job.status!r}; "
                                                         "ftkit keeps the last known status",
                                key=f"unknown-status-{job.status}"))
        ctx.state["last_status"] = status.value
        result = PollResult(status=status, backend_status=job.status, events=events)
        if status is JobStatus.FAILED:
            err = job.error
            code = getattr(err, "code", None) if err else None
            message = getattr(err, "message", None) if err else None
            param = getattr(err, "param", None) if err else None
            result.error = f"{code or 'error'}: {message or 'OpenAI gave no reason'}" + (f" ({param})" if param else "")
        if status is JobStatus.SUCCEEDED:
            result.model = job.fine_tuned_model
            ctx.state["fine_tuned_model"] = job.fine_tuned_model
            if not ctx.state.get("finalized"):
                result.events.extend(self._finalize(api, ctx, job, steps_per_epoch))
            if job.trained_tokens is not None:
                usd = pricing.training_cost(job.model, job.trained_tokens)
                if usd is not None:
                    from ftkit.backend import ActualCost

                    result.actual_cost = ActualCost(
                        usd=round(usd, 6), billed_tokens=job.trained_tokens,
                        source=f"trained_tokens × ${pricing.price_of(job.model).training:g}/1M "  # type: ignore[union-attr]
                               f"({pricing.base_model_of(job.model)}, prices as of {pricing.PRICES_AS_OF})",
                    )
        return result

    def _new_events(self, api: OpenAIAPI, ctx: JobContext, job_id: str) -> list[Any]:
        """Events since the last one seen, oldest first (the API lists newest first)."""
        last = ctx.state.get("last_event_id")
        fresh: list[Any] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": EVENT_PAGE}
            if after:
                kwargs["after"] = after
            page = api.call(api.client.fine_tuning.jobs.list_events, job_id, **kwargs)
            stop = False
            for ev in page.data:
                if ev.id == last:
                    stop = True
                    break
                fresh.append(ev)
            if stop or not page.has_more or not page.data:
                break
            after = page.data[-1].id
        fresh.reverse()
        if fresh:
            ctx.state["last_event_id"] = fresh[-1].id
        return fresh

    def _finalize(self, api: OpenAIAPI, ctx: JobContext, job: Any, steps_per_epoch: float | None) -> list[Event]:
        """Checkpoints and the results file, once the job has succeeded."""
        events: list[Event] = []
        for ck in reversed(api.call(api.client.fine_tuning.jobs.checkpoints.list, job.id, limit=100).data):
            events.append(checkpoint_event(ck))
        seen = int(ctx.state.get("last_step", 0))
        for file_id in job.result_files or []:
            content = api.call(api.client.files.content, file_id).read()
            atomic_write_text(ctx.workdir / "results.csv", decode_results(content))
            at = float(job.finished_at or job.created_at)
            # Steps the event stream did not carry (old jobs, attach) come from the results file.
            events.extend(result_row_event(r, at, steps_per_epoch) for r in parse_results(content) if r["step"] > seen)
        ctx.state["finalized"] = True
        ctx.state["manifest"] = {"openai": {"fine_tuned_model": job.fine_tuned_model,
                                            "trained_tokens": job.trained_tokens,
                                            # The method's own (DPO's beta lives only there).
                                            "hyperparameters": method_hyperparameters(job) or None}}
        return events

    # ------------------------------------------------------------------ actions

    def cancel(self, ctx: JobContext) -> None:
        api = OpenAIAPI(_cfg(ctx.config))
        job_id = ctx.backend_job_id or ctx.state.get("openai_job_id")
        if job_id:
            job = api.call(api.client.fine_tuning.jobs.retrieve, job_id)
            if job.status in TERMINAL:
                return
            try:
                api.call(api.client.fine_tuning.jobs.cancel, job_id)
            except APIError as e:
                # The job can finish between the look and the cancel; OpenAI then answers 400. That is not a
                # failure of cancel: the job is over either way, and the next refresh records how it ended.
                if e.status_code != 400:
                    raise
                if api.call(api.client.fine_tuning.jobs.retrieve, job_id).status not in TERMINAL:
                    raise

    def pause(self, ctx: JobContext) -> None:
        api = OpenAIAPI(_cfg(ctx.config))
        api.call(api.client.fine_tuning.jobs.pause, ctx.backend_job_id or ctx.state["openai_job_id"])

    def resume(self, ctx: JobContext) -> None:
        api = OpenAIAPI(_cfg(ctx.config))
        api.call(api.client.fine_tuning.jobs.resume, ctx.backend_job_id or ctx.state["openai_job_id"])
        ctx.state.pop("finalized", None)

    def load_model(self, ctx: JobContext) -> Predictor:
        model = ctx.state.get("fine_tuned_model")
        if not model:
            raise APIError(f"job {ctx.id} has no fine-tuned model yet")
        return OpenAIPredictor(model, _cfg(ctx.config), labels=ctx.spec.labels, preamble=ctx.spec.preamble)

    def base_model(self, model: str | None, config: BackendConfig) -> Predictor:
        return OpenAIPredictor(model or DEFAULT_MODEL, _cfg(config))

    def list_remote_jobs(self, config: BackendConfig, limit: int = 20) -> list[dict[str, Any]]:
        """Fine-tuning jobs on the OpenAI account, newest first (to find one to attach to)."""
        api = OpenAIAPI(_cfg(config))
        page = api.call(api.client.fine_tuning.jobs.list, limit=min(limit, 100))
        return [
            {"id": j.id, "status": j.status, "model": j.model, "fine_tuned_model": j.fine_tuned_model,
             "created_at": j.created_at, "metadata": j.metadata}
            for j in page.data[:limit]
        ]

    def inventory(self, config: BackendConfig, *, today: dt.date | None = None) -> list[InventoryEntry]:
        """Every fine-tuning job and fine-tuned model on the account with its shutdown date, most urgent first."""
        from ftkit_openai.inventory import inventory

        return inventory(_cfg(config), today=today)

    def inventory_entry(self, backend_job_id: str, config: BackendConfig, *,
                        today: dt.date | None = None) -> InventoryEntry:
        """One job's inventory entry (task, cost, shutdown date)."""
        from ftkit_openai.inventory import entry_for_job

        api = OpenAIAPI(_cfg(config))
        job = api.call(api.client.fine_tuning.jobs.retrieve, backend_job_id)
        return entry_for_job(api, job, sunset.today(today))

    def attach(self, backend_job_id: str, config: BackendConfig) -> JobSpec:
        """A spec describing an existing OpenAI job; its training file is downloaded to ftkit's cache.

        A classification-shaped chat file (one system prompt, one user message and one of a few short answers
        per line) becomes a ``classification`` spec with the labels and the exact system prompt as its
        ``preamble``, so the attached model is scored under the prompt it was trained with.
        """
        from ftkit_openai.inventory import training_file_path

        cfg = _cfg(config)
        api = OpenAIAPI(cfg)
        job = api.call(api.client.fine_tuning.jobs.retrieve, backend_job_id)
        method = job.method.type if job.method is not None else "supervised"
        paths: dict[str, Path | None] = {"train": None, "validation": None}
        for field, file_id in (("train", job.training_file), ("validation", job.validation_file)):
            if file_id:
                paths[field] = training_file_path(api, file_id)
        hp = job.hyperparameters
        epochs = hp.n_epochs if hp is not None and isinstance(hp.n_epochs, int) else None
        batch = hp.batch_size if hp is not None and isinstance(hp.batch_size, int) else None
        suffix = (job.model_extra or {}).get("user_provided_suffix") or None
        if paths["train"] is None:
            raise ConfigError(f"OpenAI job {backend_job_id} has no training file")
        common: dict[str, Any] = {"model": job.model, "suffix": suffix, "backend": "openai",
                  "hyperparameters": Hyperparameters(epochs=epochs, batch_size=batch, seed=job.seed or 0)}
        if method != "dpo":
            recovered = recover_task(paths["train"])
            if recovered.task == "classification":
                # A classifier: its labels and exact system prompt, so that scoring it (and retraining the same
                # data elsewhere) uses the prompt it was trained with; the chat files convert losslessly back.
                files: dict[str, Path | None] = {}
                for field, path in paths.items():
                    files[field] = None
                    if path is not None:
                        dest = path.with_name(path.stem + ".classification.jsonl")
                        chat_to_classification(path, dest)
                        files[field] = dest
                return JobSpec(task="classification", train=files["train"] or paths["train"],
                               validation=files["validation"], labels=recovered.labels, preamble=recovered.preamble,
                               **common)
        return JobSpec(task="preference" if method == "dpo" else "chat", train=paths["train"],
                       validation=paths["validation"], **common)


def _cfg(config: BackendConfig) -> OpenAIConfig:
    if not isinstance(config, OpenAIConfig):
        raise ConfigError("the openai backend needs an OpenAIConfig")
    return config


def _method(spec: JobSpec, cfg: OpenAIConfig) -> str:
    return cfg.method or ("dpo" if spec.task == "preference" else "supervised")


def _hyperparameters(hp: Hyperparameters, cfg: OpenAIConfig, method: str) -> dict[str, Any]:
    """The common hyperparameters in OpenAI's terms; "auto" where unset."""
    lr = cfg.learning_rate_multiplier if cfg.learning_rate_multiplier is not None else hp.learning_rate
    out: dict[str, Any] = {
        "n_epochs": hp.epochs if hp.epochs is not None else "auto",
        "batch_size": hp.batch_size if hp.batch_size is not None else "auto",
        "learning_rate_multiplier": lr if lr is not None else "auto",
    }
    if method == "dpo":
        out["beta"] = cfg.beta if cfg.beta is not None else "auto"
    return out


def _steps_per_epoch(ctx: JobContext) -> float | None:
    total, epochs = ctx.state.get("total_steps"), ctx.state.get("n_epochs")
    if total and epochs:
        return float(total) / float(epochs)
    return None

