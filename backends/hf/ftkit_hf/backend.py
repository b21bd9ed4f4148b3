"""HFBackend: local fine-tuning in a detached worker process, followed through its job folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ftkit.atomic import atomic_write_text
from ftkit.backend import ActualCost, Backend, BackendConfig, Capabilities, CostEstimate, JobContext, PollResult
from ftkit.costs.catalogue import DEVICE_WATTS
from ftkit.costs.flops import FLOPS_PER_PARAMETER, sustained_flops, tokens_per_second
from ftkit.costs.rows import EstimateWork
from ftkit.data.targets import Target
from ftkit.errors import BackendUnavailableError, ConfigError, JobError
from ftkit.events import Event, JobStatus
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec
from ftkit_hf.config import HFConfig
from ftkit_hf.defaults import (
    AUTO_MODEL,
    Route,
    TrainingPlan,
    ValidationCarve,
    carve_validation,
    choose_route,
    plan_training,
    validation_size,
)
from ftkit_hf.memory_plan import MemoryDecision, job_memory_decision, memory_assumptions
from ftkit_hf.models import DEFAULT_CAUSAL, DEFAULT_ENCODER, ResolvedModel, resolve_model
from ftkit_hf.protocol import BASE_MODEL, TERMINAL, EventCursor, JobFiles, WorkerJob, WorkerStatus
from ftkit_hf.speeds import SpeedKey, TimeModel, fit, machine_name, recall
from ftkit_hf.worker import cancel_file

__all__ = ["HFBackend", "HFConfig", "StagedJob", "check_preference", "job_memory_need", "split_lines", "stage_job"]

DEFAULT_SETUP_S = 10.0
"""Worker start-up without a measurement: importing torch, transformers and peft, tokenizing [guess]."""
SETUP_S_PER_GB = 8.0
"""Loading the weights without a measurement, seconds per GB on disk [guess]."""
UNMEASURED_RANGE = (0.5, 2.0)
"""The range an unmeasured (FLOPs-derived) speed is given: device-class defaults are off by 2x either way."""


class HFBackend(Backend):
    """Fine-tune with transformers + peft on this machine's CPU, CUDA GPU or Apple GPU."""

    name: ClassVar[str] = "hf"
    config_model: ClassVar[type[BackendConfig]] = HFConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        tasks=frozenset({"chat", "classification", "completion", "preference", "text"}),
        supports_resume_from_checkpoint=True,
        supports_classification_head=True,
        needs_network=False,
        spends_money=False,
        poll_interval=1.0,
    )

    # ------------------------------------------------------------------ setup
    def default_model(self, task: str) -> str:
        """``auto`` for classification (the route is chosen from the data), else SmolLM2-135M-Instruct.

        ``auto`` resolves, per job, to all-MiniLM-L6-v2 with a classification head or SmolLM2 generating
        the label (:func:`ftkit_hf.defaults.choose_route`); the choice is printed at create and kept in the
        manifest (``training.route``).
        """
        return AUTO_MODEL if task == "classification" else DEFAULT_CAUSAL

    def validation_target(self, spec: JobSpec, config: BackendConfig) -> str | None:
        """``hf:<folder>``: the model's tokenizer, chat template and context decide what is valid."""
        assert isinstance(config, HFConfig)
        return f"hf:{self._model_for(spec, config).path}"

    def model_target(self, model: str) -> str | None:
        """``hf:<folder>`` of a default name, an alias, a local folder or a ``.gguf`` file (converted once)."""
        return f"hf:{resolve_model(model).path}"

    def make_target(self, rest: str, labels: Sequence[str] | None, preamble: str | None) -> Target | None:
        """``hf:<folder>``: the model's own tokenizer, chat template and context length."""
        from ftkit_hf.target import HFTarget

        return HFTarget(rest, labels, preamble)

    def describe(self) -> str:
        """E.g. ``CPU, bf16 (AMX), 2 threads``."""
        try:
            from ftkit_hf.engine.device import describe_device

            return describe_device()
        except Exception as e:  # describe() must never fail: it is a listing
            return f"unavailable ({e})"

    def _model_for(self, spec: JobSpec, config: HFConfig) -> ResolvedModel:
        route = self._route(spec, config)
        if route is not None:
            return resolve_model(route.model)
        name = spec.model or (DEFAULT_ENCODER if config.head == "sequence_classification" else DEFAULT_CAUSAL)
        return resolve_model(name)

    def _route(self, spec: JobSpec, config: HFConfig) -> Route | None:
        """The model, head and objective for a spec that names no model (``auto``); None when it names one."""
        if spec.model not in (None, AUTO_MODEL):
            return None
        method = config.method if "method" in config.model_fields_set else None
        try:
            encoder = resolve_model(DEFAULT_ENCODER)
        except ConfigError as e:  # the encoder's package is not installed: the decoder, saying why
            return Route(model=DEFAULT_CAUSAL, head="generative", method=method or "lora", source="auto",
                         reason=f"the default encoder is unavailable ({e})")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(encoder.path))
        texts = list(_texts(spec.train)) if spec.task == "classification" else []
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]] if texts else []
        return choose_route(task=spec.task, text_tokens=lengths, config_head=config.head, config_method=method,
                            encoder=DEFAULT_ENCODER, decoder=DEFAULT_CAUSAL)

    def _head(self, spec: JobSpec, config: HFConfig, model: ResolvedModel) -> str:
        if model.kind == "encoder":
            if spec.task == "text":
                return "masked_lm"  # domain adaptation of an encoder: masked-LM training (ftkit_hf.mlm)
            if spec.task != "classification":
                raise ConfigError(f"[hf] model {spec.model!r} is an encoder: it can only train classification "
                                  "or (task='text') masked-LM domain adaptation")
            if config.head == "generative":
                raise ConfigError("[hf] head='generative' needs a causal (decoder) model, not an encoder")
            return "sequence_classification"
        if config.head == "sequence_classification":
            if spec.task != "classification":
                raise ConfigError("[hf] head='sequence_classification' only applies to classification")
            return "sequence_classification"
        return "generative"

    def _max_length(self, model: ResolvedModel, config: HFConfig) -> tuple[int, int | None]:
        cfg = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
        context = cfg.get("max_position_embeddings")
        if config.max_length is not None:
            if context and config.max_length > context:
                raise ConfigError(f"[hf] max_length {config.max_length} exceeds the model's context ({context} tokens)")
            return config.max_length, context
        return min(context or 2048, 2048 if model.kind == "causal" else 512), context

    def check(self, spec: JobSpec, config: BackendConfig) -> None:
        """Resolve (and convert once) the model; refuse QLoRA without CUDA + bitsandbytes; tokenize the data.

        Tokenizing here turns a label outside ``labels`` or an over-long example into a DatasetError
        naming the file and line before anything is started.
        """
        assert isinstance(config, HFConfig)
        if spec.task == "preference":
            check_preference(config, "[hf]")
        processes = _processes(config)
        if config.method == "qlora":
            from ftkit_hf.quant import qlora_unavailable_reason

            reason = qlora_unavailable_reason()
            if reason:
                raise BackendUnavailableError(f"[hf] {reason}")
        prep = self._prepare(spec, config)
        if processes > 1 and prep["head"] == "sequence_classification":
            raise ConfigError("[hf] the classification-head trainer runs in one process: set num_processes=1")
        if processes > 1 and prep["head"] == "masked_lm":
            raise ConfigError("[hf] the masked-LM trainer runs in one process: set num_processes=1")
        if config.start_from is not None:
            from ftkit_hf.start_adapter import check_base, find_adapter

            if config.method == "qlora":
                raise ConfigError("[hf] start_from merges an adapter into the base weights: use method='lora' "
                                  "(a 4-bit QLoRA base cannot take merged weights)")
            check_base(find_adapter(config.start_from), prep["model"].path)

    def _prepare(self, spec: JobSpec, config: HFConfig) -> dict[str, Any]:
        """Everything the worker needs, computed once: model, head, labels, lengths, token counts."""
        from transformers import AutoTokenizer

        from ftkit_hf.examples import infer_labels, prepare_file, prepare_head_file

        route = self._route(spec, config)
        if route is not None and route.method != config.method:
            config = config.model_copy(update={"method": route.method})  # the route's objective, for every step
        model = self._model_for(spec, config)
        head = self._head(spec, config, model)
        max_length, context = self._max_length(model, config)
        labels = spec.labels
        if spec.task == "classification" and labels is None:
            labels = infer_labels(spec.train)
        tok = AutoTokenizer.from_pretrained(str(model.path))
        tokens = {}
        lengths: list[int] = []
        train_dropped: set[int] = set()
        for field in ("train", "validation"):
            path = getattr(spec, field)
            if path is None:
                continue
            field_lengths: list[int]
            dropped: list[int]
            if spec.task == "preference":
                from ftkit_hf.preference_data import prepare_preference_file

                pairs = prepare_preference_file(path, tokenizer=tok, max_length=max_length,
                                                overlength=config.overlength, context=context)
                tokens[field] = pairs.tokens
                field_lengths = [pair.tokens for pair in pairs.pairs]  # a pair costs both of its sequences
                dropped = pairs.dropped
            elif head == "masked_lm":
                from ftkit_hf.mlm import prepare_mlm_file

                _, tokens[field], field_lengths = prepare_mlm_file(path, tokenizer=tok, max_length=max_length)
                dropped = []
            elif head == "sequence_classification":
                assert labels is not None
                rows, tokens[field] = prepare_head_file(path, tokenizer=tok, labels=labels, max_length=max_length)
                field_lengths = [len(r["input_ids"]) for r in rows]
                dropped = []
            else:
                prepared = prepare_file(path, task=spec.task, tokenizer=tok, labels=labels, preamble=spec.preamble,
                                        max_length=max_length, overlength=config.overlength, context=context)
                tokens[field] = prepared.tokens
                # A text document may be several examples (pieces); the plan counts documents (lines).
                field_lengths = prepared.line_tokens or [len(ex.input_ids) for ex in prepared.examples]
                dropped = prepared.dropped
            if field == "train":
                lengths, train_dropped = field_lengths, set(dropped)
        prep = {"model": model, "head": head, "labels": labels, "max_length": max_length, "tokens": tokens,
                "longest": max(lengths, default=0), "config": config}
        prep["plan"] = self._plan(spec, config, lengths, train_dropped, head, route)
        return prep

    def _plan(self, spec: JobSpec, config: HFConfig, lengths: list[int], dropped: set[int], head: str = "generative",
              route: Route | None = None) -> TrainingPlan:
        """The training settings the spec and options leave open, chosen from the data (ftkit_hf.defaults)."""
        from ftkit_hf.examples import read_jsonl

        rows = [(n, obj) for n, obj in read_jsonl(spec.train) if n not in dropped]  # aligned with `lengths`
        carve = None
        size = validation_size(len(rows)) if spec.validation is None and config.carve_validation else 0
        if size:
            labels = [str(obj.get("label")) for _, obj in rows] if spec.task == "classification" else None
            lines = carve_validation([n for n, _ in rows], labels, size, spec.hyperparameters.seed)
            carved = set(lines)
            counts = Counter(str(obj.get("label")) for n, obj in rows if n in carved) if labels else Counter()
            carve = ValidationCarve(seed=spec.hyperparameters.seed, stratified=labels is not None, lines=lines,
                                    train_examples=len(rows) - len(lines), label_counts=dict(sorted(counts.items())))
            lengths = [length for (n, _), length in zip(rows, lengths, strict=True) if n not in carved]
        hp = spec.hyperparameters
        return plan_training(lengths=lengths, method=config.method, spec_epochs=hp.epochs,
                             spec_learning_rate=hp.learning_rate, spec_batch_size=hp.batch_size,
                             config_batch_size=config.max_batch_examples,
                             config_patience=config.early_stopping_patience,
                             has_validation=spec.validation is not None or carve is not None, validation=carve,
                             head=head, route=route)

    # ------------------------------------------------------------------ estimate
    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        """Wall time from a model of the work, calibrated by the jobs measured on this machine and model.

        The work is the plan the job will train with (:mod:`ftkit_hf.defaults`: epochs, batch, steps) over
        this model's tokens; its time is set-up + tokens × seconds per token + steps × seconds per step
        (:mod:`ftkit_hf.speeds`). Electricity cost is the device's power × hours × price per kWh.
        """
        prep = self._prepare(ctx.spec, self._config(ctx))
        config: HFConfig = prep["config"]  # with the route's method when the spec named no model
        training: TrainingPlan = prep["plan"]
        # Printed by `ftkit create` with the other assumptions, and kept in the manifest (merged at the next poll).
        ctx.state["manifest"] = {"training": training.model_dump(mode="json")} | _revision(prep["model"])
        plan, processes = self._device_plan(config)
        epochs = training.epochs
        steps = training.steps_per_epoch * epochs
        epoch_tokens = round(training.mean_tokens * training.examples)
        tokens = epoch_tokens * epochs
        capped = ""
        if config.max_steps is not None and config.max_steps < steps:
            tokens = round(tokens * config.max_steps / steps)
            steps, capped = config.max_steps, f", cut to max_steps={config.max_steps}"
        kind = "preference" if ctx.spec.task == "preference" else prep["head"]
        tm = self.time_model(prep["model"], config, kind)
        seconds = tm.seconds(tokens, steps)
        low_s, high_s = tm.seconds_range(tokens, steps)
        hours = seconds / 3600
        watts = config.power_watts or DEVICE_WATTS.get(plan.device, DEVICE_WATTS["cpu"])
        per_hour = watts / 1000 * config.usd_per_kwh
        where = f"{plan.describe()}{f' x {processes} processes' if processes > 1 else ''}"
        noisy = tm.noisy
        return CostEstimate(
            usd=per_hour * hours, hours=hours, billed_tokens=tokens, epochs=epochs,
            usd_low=per_hour * low_s / 3600 if noisy else None, usd_high=per_hour * high_s / 3600 if noisy else None,
            hours_low=low_s / 3600 if noisy else None, hours_high=high_s / 3600 if noisy else None,
            assumptions=[
                training.describe(),
                f"{tokens:,} training tokens ({epoch_tokens:,}/epoch × {epochs} epoch{'s' if epochs != 1 else ''}"
                f"{', fewer if early stopping ends it' if training.early_stopping_patience else ''}{capped}, "
                f"{prep['model'].name} tokenizer) in {steps:,} steps",
                f"time on {where}: {tm.setup_s:.0f} s set-up + {tokens:,} tokens × {tm.seconds_per_token * 1e3:.3g} ms"
                f" + {steps:,} steps × {tm.seconds_per_step * 1e3:.3g} ms = {seconds / 60:.1f} min "
                f"(≈ {tm.tokens_per_second(tokens / max(1, steps)):,.0f} training tokens/s; {tm.source})",
                *([f"range {low_s / 60:.1f}-{high_s / 60:.1f} min: "
                   + ("the measurements on this machine disagree (a busy machine trains slower)" if tm.measurements
                      else "no job has been measured here yet")] if noisy else []),
                f"{watts:.0f} W × {hours:.3f} h at ${config.usd_per_kwh}/kWh"
                + (f" (power_watts is for the whole machine, all {processes} processes)" if processes > 1 else "")
                + "; electricity only, hardware not counted",
                # The planned peak memory and whether it fits here (decoders; an encoder's head is small).
                *(memory_assumptions(prep["model"].path, device=plan.device, precision=plan.precision,
                                     method=config.method, lora_rank=config.lora_r, batch_tokens=config.batch_tokens,
                                     pass_tokens=config.pass_tokens)
                  if prep["head"] not in ("sequence_classification", "masked_lm") else []),
                # What the job will do about it (gradient checkpointing, shorter passes), as submit records it.
                *([m.message] if (m := _memory_decision(prep, config)) is not None and m.message else []),
            ],
        )

    def planned_epochs(self, spec: JobSpec, config: BackendConfig) -> int | None:
        """The epochs the data-driven plan (:mod:`ftkit_hf.defaults`) picks for this data."""
        assert isinstance(config, HFConfig)
        training: TrainingPlan = self._prepare(spec, config)["plan"]
        return training.epochs

    def estimate_evaluation(self, ctx: JobContext, work: EstimateWork) -> CostEstimate | None:
        """Scoring the test set here: a model load, then the test tokens at scoring speed.

        Scoring is a forward pass (≈2·N FLOPs per token against ≈4·N for LoRA training, ``ftkit.costs.flops``),
        so the scoring speed is the training speed this machine measured (or the FLOPs default) scaled by that.
        """
        if not work.test_tokens:
            return None
        config = self._config(ctx)
        model = self._model_for(ctx.spec, config)
        kind = "preference" if ctx.spec.task == "preference" else self._head(ctx.spec, config, model)
        tm = self.time_model(model, config, kind)
        plan, _ = self._device_plan(config)
        speedup = FLOPS_PER_PARAMETER.get(config.method, 4.0) / FLOPS_PER_PARAMETER["scoring"]
        seconds_per_token = tm.seconds_per_token / speedup
        seconds = tm.setup_s + work.test_tokens * seconds_per_token
        watts = config.power_watts or DEVICE_WATTS.get(plan.device, DEVICE_WATTS["cpu"])
        hours = seconds / 3600
        return CostEstimate(
            usd=watts / 1000 * hours * config.usd_per_kwh,
            hours=hours,
            billed_tokens=work.test_tokens,
            assumptions=[
                f"evaluation: {tm.setup_s:.0f} s model load + {work.test_tokens:,} evaluation tokens (o200k count) at "
                f"{1 / seconds_per_token:,.0f} tokens/s scoring speed (forward pass only: {speedup:g}× the training "
                f"speed; {tm.source}) = {seconds / 60:.1f} min",
                f"evaluation: {watts:.0f} W × {hours:.4f} h at ${config.usd_per_kwh}/kWh",
            ],
        )

    def _device_plan(self, config: HFConfig) -> tuple[Any, int]:
        from ftkit_hf.engine.device import plan_device

        processes = _processes(config)
        return plan_device(config.device, config.precision, config.threads, processes=processes), processes

    def time_model(self, model: ResolvedModel, config: HFConfig, kind: str) -> TimeModel:
        """How long training takes here: the configured speed, the jobs measured on this machine, or FLOPs.

        Args:
            model: the resolved model.
            config: the ``[hf]`` options (device, precision, threads, method, ``tokens_per_second``).
            kind: ``generative``, ``sequence_classification`` or ``preference``.
        """
        plan, processes = self._device_plan(config)
        size_gb = sum(f.stat().st_size for f in model.path.glob("*.safetensors")) / 1e9 or 0.27
        setup = DEFAULT_SETUP_S + SETUP_S_PER_GB * size_gb
        if config.tokens_per_second:
            return TimeModel(seconds_per_token=1 / config.tokens_per_second, seconds_per_step=0.0, setup_s=setup,
                             setup_low_s=setup, setup_high_s=setup,
                             source=f"tokens_per_second from the config; set-up {setup:.0f} s [guess]")
        key = SpeedKey(machine=machine_name(plan.device, plan.precision, plan.threads), model=model.name,
                       method=config.method, kind=kind, processes=processes)
        fitted = fit(recall(key))
        if fitted is not None:
            return fitted
        params = size_gb * 1e9 / (2 if _stored_bf16(model.path) else 4)
        gpu = _gpu_name() if plan.device == "cuda" else None
        flops, how = sustained_flops(plan.device, plan.precision, gpu)
        if plan.device != "cpu":  # CPU processes share the machine's cores: no faster than one process
            flops *= processes
        tps = tokens_per_second(params, flops, method=config.method)
        low, high = UNMEASURED_RANGE
        return TimeModel(seconds_per_token=1 / tps, seconds_per_step=0.0, setup_s=setup, setup_low_s=setup * low,
                         setup_high_s=setup * high, low=low, high=high,
                         source=f"not measured here: {params / 1e6:,.0f}M parameters at {how}; set-up {setup:.0f} s "
                         "[guess]; the first job here calibrates it")

    @staticmethod
    def _config(ctx: JobContext) -> HFConfig:
        if isinstance(ctx.config, HFConfig):
            return ctx.config
        return HFConfig.model_validate(ctx.config.model_dump() if isinstance(ctx.config, BackendConfig) else ctx.config)

    # ------------------------------------------------------------------ lifecycle
    def submit(self, ctx: JobContext) -> str:
        """Copy the data into the job folder, write spec.json and start the worker detached."""
        config = self._config(ctx)
        staged = stage_job(ctx.id, ctx.spec, config, ctx.workdir)
        ctx.state["manifest"] = {"training": staged.job.training} | (
            {"memory": staged.job.memory} if staged.job.memory else {}) | (
            {"model_revision": staged.job.model_revision} if staged.job.model_revision else {})
        pid = self._start_worker(ctx, JobFiles(ctx.workdir), staged.config)
        return f"local-{pid}"

    def _start_worker(self, ctx: JobContext, files: JobFiles, config: HFConfig) -> int:
        worker = ["-m", "ftkit_hf.worker", "run", str(files.root.resolve())]
        processes = _processes(config)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        if processes > 1:
            # This interpreter's torchrun; --standalone picks a free port, so jobs side by side do not collide.
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *worker]
            from ftkit_hf.engine.device import physical_cores

            # The worker sets torch's threads itself; this only keeps torchrun from warning that it sets 1.
            env.setdefault("OMP_NUM_THREADS", str(max(1, physical_cores() // processes)))
        else:
            cmd = [sys.executable, *worker]
        files.write_status("starting", error=None)
        with files.log.open("ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd=str(files.root))
        worker_info = {"pid": proc.pid, "pid_started": _create_time(proc.pid), "started": time.time()}
        # On disk at once: if this process dies before the registry records the pid, find_submitted reads it.
        atomic_write_text(files.worker, json.dumps(worker_info))
        ctx.state.update(worker_info)
        ctx.state.setdefault("events_offset", 0)
        ctx.state.setdefault("events_line", 0)
        return proc.pid

    def find_submitted(self, ctx: JobContext) -> str | None:
        """The worker an interrupted submit started, from ``worker.json`` (or the status the worker wrote)."""
        files = JobFiles(ctx.workdir)
        try:
            info = json.loads(files.worker.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            st = files.read_status() or {}
            if st.get("status") in (None, "starting") or not st.get("pid"):
                return None  # no worker was started: submitting again is safe
            # Killed between starting the worker and writing worker.json: the worker wrote its own pid.
            info = {"pid": st["pid"], "pid_started": _create_time(int(st["pid"])), "started": st.get("started")}
        ctx.state.update(info)
        ctx.state.setdefault("events_offset", 0)
        ctx.state.setdefault("events_line", 0)
        return f"local-{info['pid']}"

    def poll(self, ctx: JobContext) -> PollResult:
        """New events since the last poll, the worker's status, and a dead worker noticed."""
        files = JobFiles(ctx.workdir)
        # Status first, events second: the worker appends its last events before it writes a final status,
        # so a final status read first means the events read after it are complete (this is the last poll).
        st = files.read_status() or {"status": "starting"}
        events = self._read_events(ctx, files)
        alive = st.get("status") in TERMINAL or self._alive(ctx)
        if not alive:
            # The worker may have written its final status and exited since the first read: read again
            # before calling it dead (then the events read after this status are complete again).
            st = files.read_status() or st
            events += self._read_events(ctx, files)
        vendor = st.get("status", "starting")
        known = WorkerStatus.parse(vendor)
        if known is None:
            return PollResult(status=JobStatus.FAILED, backend_status=vendor, events=events,
                              error=f"unknown worker status {vendor!r}")
        status = known.job_status
        error = st.get("error")
        if vendor not in TERMINAL and not alive:
            step = files.latest_checkpoint_step()
            hint = (f"; a checkpoint at step {step} exists: resume the job to continue from it" if step
                    else "; no checkpoint was written")
            error = f"the worker process died without finishing{hint}. Log tail:\n{files.log_tail()}"
            status, vendor = JobStatus.FAILED, "died"
        model = str(files.model) if status is JobStatus.SUCCEEDED else None
        actual = self._actual_cost(ctx, st) if status.is_terminal else None
        return PollResult(status=status, backend_status=vendor, events=events, model=model, error=error,
                          actual_cost=actual)

    def _actual_cost(self, ctx: JobContext, st: dict[str, Any]) -> ActualCost | None:
        """Electricity of the worker's wall time (start to finish, set-up included: what the estimate prices)."""
        started = ctx.state.get("started") or st.get("started")
        if not started:
            return None  # never started: nothing was spent
        finished = float(st.get("finished") or time.time())
        hours = max(0.0, finished - float(started)) / 3600
        config = self._config(ctx)
        plan, processes = self._device_plan(config)
        watts = config.power_watts or DEVICE_WATTS.get(plan.device, DEVICE_WATTS["cpu"])
        return ActualCost(usd=watts / 1000 * hours * config.usd_per_kwh, hours=hours,
                          source=f"{hours * 3600:.0f} s wall time × {watts:.0f} W × ${config.usd_per_kwh}/kWh "
                          f"on {plan.describe()}{f' x {processes} processes' if processes > 1 else ''}")

    def _read_events(self, ctx: JobContext, files: JobFiles) -> list[Event]:
        cursor = EventCursor(offset=int(ctx.state.get("events_offset", 0)), line=int(ctx.state.get("events_line", 0)))
        events, cursor = files.read_events(cursor)
        ctx.state["events_offset"], ctx.state["events_line"] = cursor.offset, cursor.line
        return events

    def _alive(self, ctx: JobContext) -> bool:
        import psutil

        pid = ctx.state.get("pid")
        if not pid:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child, so it does not linger as a zombie
        try:
            proc = psutil.Process(pid)
            if ctx.state.get("pid_started") and abs(proc.create_time() - ctx.state["pid_started"]) > 1:
                return False  # the pid was reused by another process
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def cancel(self, ctx: JobContext) -> None:
        """Ask the worker to stop (cancel file; SIGTERM after 60 s); it checkpoints and writes ``cancelled``.

        The file reaches every rank of a torchrun worker at once and lets torchrun exit cleanly; a
        SIGTERM to torchrun would be forwarded to the ranks with only 30 s before torchrun kills them.
        SIGKILL (the whole process tree) if the worker is still there after 120 s.
        """
        files = JobFiles(ctx.workdir)
        if not self._alive(ctx):
            st = files.read_status() or {}
            if st.get("status") not in TERMINAL:
                files.write_status("cancelled")
            return
        pid = int(ctx.state["pid"])
        atomic_write_text(cancel_file(files.root), f"cancel requested at {time.time():.3f}\n")
        started = time.time()
        while time.time() < started + 60 and self._alive(ctx):  # one training step plus a checkpoint
            time.sleep(0.2)
        if self._alive(ctx):
            _signal_tree(pid, signal.SIGTERM)
            while time.time() < started + 120 and self._alive(ctx):
                time.sleep(0.2)
        if self._alive(ctx):
            _signal_tree(pid, signal.SIGKILL)
            files.write_status("cancelled", error="the worker did not stop within 120 s and was killed")
        elif (files.read_status() or {}).get("status") not in TERMINAL:
            files.write_status("cancelled")

    def resume(self, ctx: JobContext) -> None:
        """Restart the worker; the engine continues from the newest checkpoint."""
        files = JobFiles(ctx.workdir)
        if not files.spec.is_file():
            raise JobError("this job was never started: nothing to resume")
        if self._alive(ctx):
            return
        cancel_file(files.root).unlink(missing_ok=True)  # the request of an earlier cancel is fulfilled
        self._start_worker(ctx, files, self._config(ctx))

    # ------------------------------------------------------------------ models
    def load_model(self, ctx: JobContext) -> Predictor:
        """An HFPredictor over the base model with the trained adapter (merged for speed)."""
        from ftkit_hf.predictor import HFPredictor

        files = JobFiles(ctx.workdir)
        meta_path = files.model / "ftkit-hf.json"
        if not meta_path.is_file():
            raise JobError(f"job {ctx.id} has no trained model yet ({files.model} is missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = self._config(ctx)
        predictor = HFPredictor.load(meta["base_model"], files.model, kind=meta["kind"], labels=meta.get("labels"),
                                     preamble=meta.get("preamble"), device=config.device, precision=config.precision)
        if meta.get("task") == "text":
            predictor.max_length = meta.get("max_length")  # score text in the pieces training cut it into
        return predictor

    def base_model(self, model: str | None, config: BackendConfig) -> Predictor:
        """A predictor over an untrained base model (zero-shot baseline); encoders have no head to use."""
        from ftkit_hf.predictor import HFPredictor

        cfg = config if isinstance(config, HFConfig) else HFConfig()
        # A job whose route was chosen from the data (``auto``) has the decoder as its zero-shot baseline:
        # an encoder's new head knows nothing before training.
        resolved = resolve_model(DEFAULT_CAUSAL if model in (None, AUTO_MODEL) else model)
        if resolved.kind == "encoder":
            raise ConfigError("an encoder has no trained classification head to serve zero-shot; use a causal model")
        return HFPredictor.load(resolved.path, kind="causal", device=cfg.device, precision=cfg.precision)


def _texts(path: Path) -> Iterator[str]:
    """The ``text`` of each parseable line (the route only needs lengths; validation reports bad lines)."""
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                    yield obj["text"]


def split_lines(src: Path, carved: set[int], train: Path, validation: Path) -> tuple[Path, Path]:
    """Write the lines of ``src`` numbered in ``carved`` (1-based) to ``validation``, the others to ``train``.

    Lines are copied as they are (no re-serialisation), atomically; blank lines stay with the training copy.
    """
    kept: list[str] = []
    held: list[str] = []
    with Path(src).open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            text = line if line.endswith("\n") else line + "\n"
            (held if n in carved else kept).append(text)
    atomic_write_text(train, "".join(kept))
    atomic_write_text(validation, "".join(held))
    return train, validation


@dataclass(frozen=True)
class StagedJob:
    """A job folder written for the worker: the ``spec.json`` written, and the base model's folder here."""

    job: WorkerJob
    model_dir: Path
    config: HFConfig
    """The options the worker runs with: as given, with the data-chosen route's method where no model was named."""


def stage_job(job_id: str, spec: JobSpec, config: HFConfig, folder: str | Path, *, portable: bool = False) -> StagedJob:
    """Write the worker's job folder for ``spec``: the data copied into ``data/`` and ``spec.json``.

    The model is resolved and the data tokenized here (the hf backend's own preparation, so a bad
    example fails before anything is started or rented), and the training settings are chosen from
    the data; a validation split carved from the training file is written as a file of its own.

    Args:
        job_id: The ftkit job id.
        spec: The job.
        config: The hf options.
        folder: The job folder (created if missing).
        portable: Paths relative to the folder, with the base model expected in ``base_model/`` (for a
            folder shipped to another machine); otherwise absolute paths on this machine.

    Raises:
        ConfigError, DatasetError: the model or the data cannot be trained as asked.
    """
    prep = HFBackend()._prepare(spec, config)
    config = prep["config"]  # with the route's method when the spec named no model
    files = JobFiles(folder)
    files.data.mkdir(parents=True, exist_ok=True)
    plan: TrainingPlan = prep["plan"]
    copies: dict[str, Path] = {}
    for field in ("train", "validation"):
        src = getattr(spec, field)
        if src is not None:
            copies[field] = files.data / f"{field}.jsonl"
            shutil.copyfile(src, copies[field])  # the user's file is only read; the worker reads this copy
    if plan.validation is not None:
        # The carved lines move from the copy of the training file to a validation file of their own.
        copies["train"], copies["validation"] = split_lines(spec.train, set(plan.validation.lines),
                                                            files.data / "train.jsonl",
                                                            files.data / "validation.jsonl")  # fmt: skip

    def where(path: Path) -> str:
        return path.relative_to(files.root).as_posix() if portable else str(path.resolve())

    if config.start_from is not None:
        # A copy in the job folder: the job does not depend on the earlier job's folder staying there, and a
        # shipped folder carries it.
        from ftkit_hf.start_adapter import SAVED_NAME, find_adapter

        start = files.data / SAVED_NAME
        shutil.rmtree(start, ignore_errors=True)
        shutil.copytree(find_adapter(config.start_from), start, ignore=shutil.ignore_patterns("merged"))
        config = config.model_copy(update={"start_from": where(start)})
    model: ResolvedModel = prep["model"]
    memory = None if portable else _memory_decision(prep, config)  # checkpointing / shorter passes, before loading
    job = WorkerJob(
        job_id=job_id,
        task=spec.task,
        model=model.name,
        model_path=BASE_MODEL if portable else str(model.path),
        model_kind=model.kind,
        head=prep["head"],
        labels=prep["labels"],
        preamble=spec.preamble,
        max_length=prep["max_length"],
        train=where(copies["train"]),
        validation=where(copies["validation"]) if "validation" in copies else None,
        hyperparameters=spec.hyperparameters.model_dump(),
        training=plan.model_dump(mode="json"),
        config=config.model_dump(),
        # Decided here for this machine's device; a shipped job decides on the machine it lands on.
        memory=None if portable or memory is None else memory.manifest(),
        **_revision(model),
    )
    files.write_job(job)
    return StagedJob(job=job, model_dir=Path(model.path), config=config)


def job_memory_need(spec: JobSpec, config: HFConfig) -> dict[str, Any] | None:
    """What the memory plan needs to know of a decoder job before any device is seen: the model's
    ``config.json`` and the longest training example in tokens (None for a classification head, which the plan
    does not cover). The remote backend checks each offer's GPU against it before renting.

    Raises:
        ConfigError, DatasetError: the model or the data cannot be trained as asked.
    """
    prep = HFBackend()._prepare(spec, config)
    if prep["head"] == "sequence_classification":
        return None
    config_file = Path(prep["model"].path) / "config.json"
    return {"model_config": json.loads(config_file.read_text(encoding="utf-8")), "longest": prep["longest"]}


def check_preference(config: HFConfig, where: str) -> None:
    """Refuse the options preference (DPO) training cannot run with (shared with the remote backend).

    Raises:
        ConfigError: full fine-tuning (the reference is the base with the adapter disabled), or several processes.
    """
    if config.method == "full":
        raise ConfigError(f"{where} preference (DPO) training needs method='lora' or 'qlora': the reference is "
                          "the base model with the adapter disabled")
    if _processes(config) > 1:
        raise ConfigError(f"{where} preference (DPO) training runs in one process: set num_processes=1")


def _stored_bf16(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(cfg.get("dtype") or cfg.get("torch_dtype")) == "bfloat16"


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def _gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name())


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _processes(config: HFConfig) -> int:
    """How many training processes the config asks for (``auto``: one per visible CUDA GPU).

    Raises:
        ConfigError: several processes on MPS, or more processes than CUDA GPUs.
    """
    if config.num_processes == "auto":
        return max(1, _gpu_count()) if config.device in ("auto", "cuda") else 1
    n = config.num_processes
    if n > 1:
        from ftkit_hf.engine.device import resolve_device

        try:
            device = resolve_device(config.device)
        except ValueError as e:
            raise ConfigError(f"[hf] {e}") from None
        if device == "mps":
            raise ConfigError("[hf] num_processes > 1 needs CUDA GPUs or device='cpu'; MPS is one device")
        if device == "cuda" and n > _gpu_count():
            raise ConfigError(f"[hf] num_processes={n} but torch sees {_gpu_count()} CUDA GPUs: one process per GPU")
    return n


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal the worker's process group and every descendant (torchrun starts each rank in a session
    of its own, so the ranks are not in the worker's process group)."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(sig)


def _memory_decision(prep: dict[str, Any], config: HFConfig) -> MemoryDecision | None:
    """The memory plan's choices for a decoder job on this machine's device (None for a classification head)."""
    if prep["head"] in ("sequence_classification", "masked_lm"):
        return None
    from ftkit_hf.engine.device import plan_device

    plan = plan_device(config.device, config.precision, config.threads, processes=_processes(config))
    model_config = json.loads((prep["model"].path / "config.json").read_text(encoding="utf-8"))
    return job_memory_decision(model_config, config, device=plan.device, precision=plan.precision,
                               longest_example=prep["longest"])


def _revision(model: ResolvedModel) -> dict[str, Any]:
    """The manifest's pin of a Hub model: its id and the commit trained on (``org/name@<commit>`` asks for it)."""
    if model.revision is None:
        return {}
    repo = model.name.partition("@")[0]
    return {"model_revision": {"repo": repo, "commit": model.revision, "pinned": f"{repo}@{model.revision}"}}
