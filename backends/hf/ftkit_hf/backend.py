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
from pathlib import Path
from typing import Any, ClassVar

from ftkit.atomic import atomic_write_text
from ftkit.backend import Backend, BackendConfig, Capabilities, CostEstimate, JobContext, PollResult
from ftkit.costs.catalogue import DEVICE_WATTS
from ftkit.errors import BackendUnavailableError, ConfigError, JobError
from ftkit.events import Event, JobStatus
from ftkit.paths import cache_dir
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec
from ftkit_hf.config import HFConfig
from ftkit_hf.defaults import TrainingPlan, ValidationCarve, carve_validation, plan_training, validation_size
from ftkit_hf.jobfiles import TERMINAL, JobFiles
from ftkit_hf.memory_plan import memory_assumptions
from ftkit_hf.models import DEFAULT_CAUSAL, DEFAULT_ENCODER, ResolvedModel, resolve_model
from ftkit_hf.worker import cancel_file, throughput_key

__all__ = ["HFBackend", "HFConfig", "check_preference"]

_STATUS = {
    "starting": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
# Training FLOPs per token ≈ 4 × parameters for LoRA (forward 2N + backward through activations 2N;
# frozen weights need no weight gradients), 6 × N for full fine-tuning. Sustained FLOP/s per device
# class are rough [guess] figures, calibrated on CPU with the measured ~600 tokens/s of SmolLM2-135M
# (docs/backends/hf.md); a measured speed from an earlier job on this machine replaces them.
_SUSTAINED_FLOPS = {"cpu-bf16": 3.2e11, "cpu-fp32": 1.5e11, "cuda": 1.0e14, "mps": 5e12,
                    "cpu-fp16": 1.5e11}  # fp16 on a CPU: as fp32 (AVX512-FP16 CPUs are faster, others emulate)
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
        """SmolLM2-135M-Instruct for every task (MiniLM is picked by ``head="sequence_classification"``)."""
        return DEFAULT_CAUSAL

    def validation_target(self, spec: JobSpec, config: BackendConfig) -> str | None:
        """``hf:<folder>``: the model's tokenizer, chat template and context decide what is valid."""
        assert isinstance(config, HFConfig)
        return f"hf:{self._model_for(spec, config).path}"

    def describe(self) -> str:
        """E.g. ``CPU, bf16 (AMX), 2 threads``."""
        try:
            from ftkit_hf.engine.device import describe_device

            return describe_device()
        except Exception as e:  # describe() must never fail: it is a listing
            return f"unavailable ({e})"

    def _model_for(self, spec: JobSpec, config: HFConfig) -> ResolvedModel:
        name = spec.model or (DEFAULT_ENCODER if config.head == "sequence_classification" else DEFAULT_CAUSAL)
        return resolve_model(name)

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
        prep = {"model": model, "head": head, "labels": labels, "max_length": max_length, "tokens": tokens}
        prep["plan"] = self._plan(spec, config, lengths, train_dropped)
        return prep

    def _plan(self, spec: JobSpec, config: HFConfig, lengths: list[int], dropped: set[int]) -> TrainingPlan:
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
                             has_validation=spec.validation is not None or carve is not None, validation=carve)

    # ------------------------------------------------------------------ estimate
    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        """Hours from the training tokens and a speed (measured here before, or derived from FLOPs);
        electricity cost from the device's power draw × hours × price per kWh."""
        config = self._config(ctx)
        prep = self._prepare(ctx.spec, config)
        from ftkit_hf.engine.device import plan_device

        processes = _processes(config)
        plan = plan_device(config.device, config.precision, config.threads, processes=processes)
        training: TrainingPlan = prep["plan"]
        epochs = training.epochs
        tokens = round(training.mean_tokens * training.examples) * epochs
        # Printed by `ftkit create` with the other assumptions, and kept in the manifest (merged at the next poll).
        ctx.state["manifest"] = {"training": training.model_dump(mode="json")}
        tps, source = self._speed(prep["model"], config, plan, processes)
        hours = tokens / tps / 3600
        watts = config.power_watts or DEVICE_WATTS.get(plan.device, DEVICE_WATTS["cpu"])
        usd = watts / 1000 * hours * config.usd_per_kwh
        return CostEstimate(
            usd=usd, hours=hours, billed_tokens=tokens,
            assumptions=[
                training.describe(),
                f"{tokens:,} training tokens ({epochs} epoch{'s' if epochs != 1 else ''}"
                f"{', fewer if early stopping ends it' if training.early_stopping_patience else ''}, "
                f"{prep['model'].name} tokenizer)",
                f"{tps:,.0f} tokens/s on {plan.describe()}{f' x {processes} processes' if processes > 1 else ''} "
                f"({source})",
                f"{watts:.0f} W × {hours:.3f} h at ${config.usd_per_kwh}/kWh"
                + (f" (power_watts is for the whole machine, all {processes} processes)" if processes > 1 else "")
                + "; electricity only, hardware not counted",
                # The planned peak memory and whether it fits here (decoders; an encoder's head is small).
                *(memory_assumptions(prep["model"].path, device=plan.device, precision=plan.precision,
                                     method=config.method, lora_rank=config.lora_r, batch_tokens=config.batch_tokens,
                                     pass_tokens=config.pass_tokens)
                  if prep["head"] not in ("sequence_classification", "masked_lm") else []),
            ],
        )

    def _speed(self, model: ResolvedModel, config: HFConfig, plan: Any, processes: int = 1) -> tuple[float, str]:
        if config.tokens_per_second:
            return config.tokens_per_second, "from the config"
        measured = cache_dir() / "hf-throughput.json"
        if measured.is_file():
            try:
                data = json.loads(measured.read_text(encoding="utf-8"))
                key = throughput_key(model.name, plan.describe(), config.method, processes)
                if key in data:
                    return float(data[key]), "measured by an earlier job on this machine"
            except (OSError, ValueError):
                pass
        size = sum(f.stat().st_size for f in model.path.glob("*.safetensors")) or 270e6
        n_params = size / (2 if _stored_bf16(model.path) else 4)
        per_token = (6 if config.method == "full" else 4) * n_params
        key = f"cpu-{plan.precision}" if plan.device == "cpu" else plan.device
        if plan.device == "cpu":  # CPU processes share the machine's cores: no faster than one process
            return _SUSTAINED_FLOPS[key] / per_token, "default for this device class, not measured here"
        return (processes * _SUSTAINED_FLOPS[key] / per_token,
                "default for this device class" + (f" x {processes} GPUs (ideal scaling)" if processes > 1 else "")
                + ", not measured here")

    @staticmethod
    def _config(ctx: JobContext) -> HFConfig:
        if isinstance(ctx.config, HFConfig):
            return ctx.config
        return HFConfig.model_validate(ctx.config.model_dump() if isinstance(ctx.config, BackendConfig) else ctx.config)

    # ------------------------------------------------------------------ lifecycle
    def submit(self, ctx: JobContext) -> str:
        """Copy the data into the job folder, write spec.json and start the worker detached."""
        config = self._config(ctx)
        prep = self._prepare(ctx.spec, config)
        files = JobFiles(ctx.workdir)
        files.data.mkdir(parents=True, exist_ok=True)
        plan: TrainingPlan = prep["plan"]
        data = {}
        for field in ("train", "validation"):
            src = getattr(ctx.spec, field)
            if src is not None:
                dst = files.data / f"{field}.jsonl"
                shutil.copyfile(src, dst)  # the user's file is only read; the worker reads this copy
                data[field] = str(dst.resolve())
        if plan.validation is not None:
            # The carved lines move from the copy of the training file to a validation file of their own.
            data["train"], data["validation"] = (str(p.resolve()) for p in split_lines(
                ctx.spec.train, set(plan.validation.lines), files.data / "train.jsonl",
                files.data / "validation.jsonl"))
        ctx.state["manifest"] = {"training": plan.model_dump(mode="json")}
        if config.start_from is not None:
            # A copy in the job folder: the job does not depend on the earlier job's folder staying there.
            from ftkit_hf.start_adapter import SAVED_NAME, find_adapter

            start = files.data / SAVED_NAME
            shutil.rmtree(start, ignore_errors=True)
            shutil.copytree(find_adapter(config.start_from), start, ignore=shutil.ignore_patterns("merged"))
            config = config.model_copy(update={"start_from": str(start.resolve())})
        spec = {
            "job_id": ctx.id,
            "task": ctx.spec.task,
            "model": prep["model"].name,
            "model_path": str(prep["model"].path),
            "model_kind": prep["model"].kind,
            "head": prep["head"],
            "labels": prep["labels"],
            "preamble": ctx.spec.preamble,
            "max_length": prep["max_length"],
            "train": data["train"],
            "validation": data.get("validation"),
            "hyperparameters": ctx.spec.hyperparameters.model_dump(),
            "training": plan.model_dump(mode="json"),
            "config": config.model_dump(),
        }
        atomic_write_text(files.spec, json.dumps(spec, indent=1))
        pid = self._start_worker(ctx, files, config)
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
        status = _STATUS.get(vendor)
        if status is None:
            return PollResult(status=JobStatus.FAILED, backend_status=vendor, events=events,
                              error=f"unknown worker status {vendor!r}")
        error = st.get("error")
        if vendor not in TERMINAL and not alive:
            step = files.latest_checkpoint_step()
            hint = (f"; a checkpoint at step {step} exists: resume the job to continue from it" if step
                    else "; no checkpoint was written")
            error = f"the worker process died without finishing{hint}. Log tail:\n{files.log_tail()}"
            status, vendor = JobStatus.FAILED, "died"
        model = str(files.model) if status is JobStatus.SUCCEEDED else None
        return PollResult(status=status, backend_status=vendor, events=events, model=model, error=error)

    def _read_events(self, ctx: JobContext, files: JobFiles) -> list[Event]:
        offset = int(ctx.state.get("events_offset", 0))
        line_no = int(ctx.state.get("events_line", 0))
        try:
            with files.events.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        out: list[Event] = []
        end = chunk.rfind(b"\n") + 1  # only complete lines; a half-written one is read next time
        for raw in chunk[:end].splitlines():
            line_no += 1
            try:
                obj = json.loads(raw)
                out.append(Event(time=obj.get("time", time.time()), level=obj.get("level", "info"),
                                 kind=obj.get("kind", "message"), message=obj.get("message", ""),
                                 data=obj.get("data", {}), key=f"line-{line_no}"))
            except (ValueError, TypeError):
                out.append(Event(level="warning", message=f"unreadable event line {line_no}", key=f"line-{line_no}"))
        ctx.state["events_offset"] = offset + end
        ctx.state["events_line"] = line_no
        return out

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
        resolved = resolve_model(model or DEFAULT_CAUSAL)
        if resolved.kind == "encoder":
            raise ConfigError("an encoder has no trained classification head to serve zero-shot; use a causal model")
        return HFPredictor.load(resolved.path, kind="causal", device=cfg.device, precision=cfg.precision)


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
