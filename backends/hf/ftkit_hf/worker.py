"""The training worker: ``python -m ftkit_hf.worker run JOB_DIR``.

It runs detached from the caller. It reads ``JOB_DIR/spec.json``, loads the model and tokenizer,
tokenizes the data (chat template, loss masks), wraps the model with PEFT, and calls the training
engine, which checkpoints and resumes by itself. Progress goes to ``events.jsonl``, the state to
``status.json`` (atomically), the adapter and tokenizer to ``model/``. A ``JOB_DIR/cancel`` file, SIGTERM
or SIGINT asks the engine to stop after the current step; it saves a checkpoint and the status becomes
``cancelled``.

Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) the ranks join one process group and
train data-parallel (see ``ftkit_hf.engine.distributed``): every rank loads the model and tokenizes the
data, the engine splits each step between them, a stop request seen by any rank stops them all at the
same step, and rank 0 alone writes events, status, checkpoints and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.errors import ConfigError, FtkitError
from ftkit_hf.config import HFConfig
from ftkit_hf.protocol import CANCEL, TERMINAL, JobFiles

if TYPE_CHECKING:
    from ftkit_hf.engine.distributed import Group

CANCEL_FILE = CANCEL  # the protocol's name, kept for older imports

_DEFAULT_TARGETS = {
    "attn_mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bert": ["query", "key", "value", "dense"],
}
_BY_MODEL_TYPE = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "gemma", "gemma2", "gemma3",
                     "gemma3_text", "phi3", "olmo", "olmo2", "granite", "smollm3", "cohere"), "attn_mlp"),
    "gpt2": "gpt2", "gpt_neox": "gpt_neox",
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "camembert"), "bert"),
}


def default_target_modules(model_type: str) -> list[str] | str:
    """LoRA targets for an architecture: every attention and MLP projection; peft's "all-linear" otherwise."""
    family = _BY_MODEL_TYPE.get(model_type)
    return list(_DEFAULT_TARGETS[family]) if family else "all-linear"


def cancel_file(job_dir: str | Path) -> Path:
    """The file whose existence asks the worker (every rank of it) to stop after the current step."""
    return Path(job_dir) / CANCEL_FILE


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


class _Stop:
    """Set by SIGTERM/SIGINT or by the cancel file; polled by the engine between steps.

    Under torchrun the agent forwards SIGTERM to every rank, but not at the same instant; the engine
    all-reduces the answer so that all ranks stop at the same step.
    """

    def __init__(self, cancel: Path | None = None) -> None:
        self.requested = False
        self.cancel = cancel

    def __call__(self) -> bool:
        if not self.requested and self.cancel is not None and self.cancel.exists():
            self.requested = True
        return self.requested

    def install(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run(job_dir: str | Path) -> int:
    """Train the job in ``job_dir``; returns the process exit code (0 also for a clean cancel)."""
    from ftkit_hf.engine.distributed import Group, init_from_env, shutdown

    files = JobFiles(job_dir)
    started = time.monotonic()  # the setup time measured for the next estimate counts from here
    writer = _rank() == 0
    group = Group()
    stop = _Stop(cancel_file(files.root))
    stop.install()
    try:
        spec = files.read_spec()  # validated against the protocol's WorkerJob: a bad field is a ConfigError
        config = HFConfig.model_validate(spec["config"])
        group = init_from_env(config.device)
        writer = group.is_main
        if writer:
            resumed = files.latest_checkpoint_step()
            files.write_status("running", started=time.time(), error=None)
            files.append_event("message", f"worker started (pid {os.getpid()})"
                               + (f", resuming from step {resumed}" if resumed else ""))
        result = _train(spec, config, files, stop, group, started)
        if writer:
            files.write_status(result.pop("status"), **result)
        # The head trainer runs on rank 0 alone: nobody to wait for.
        shutdown(wait=spec["head"] != "sequence_classification")
        return 0
    except FtkitError as e:
        # Every rank meets the same configuration or data error: rank 0 reports it.
        if writer:
            files.append_event("message", str(e), level="error")
            files.write_status("failed", error=str(e))
        print(f"ftkit-hf worker{f' (rank {group.rank})' if group.active else ''}: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc()
        msg = f"{type(e).__name__}: {e}"
        if group.active and not writer:
            # A failure of this rank alone (out of memory on its GPU...): rank 0 is left waiting in a
            # collective until the launcher stops it, so this rank says what happened.
            msg = f"rank {group.rank}: {msg}"
            writer = (files.read_status() or {}).get("status") not in TERMINAL
        if writer:
            files.append_event("message", msg, level="error")
            files.write_status("failed", error=msg)
        return 1
    finally:
        shutdown(wait=False)  # after an error; a no-op when the group was shut down above


def _say_tokenized(files: JobFiles, what: str, tokens: int, dropped: list[int]) -> None:
    """The event that says what was tokenized (pairs or examples), and how many were dropped as too long."""
    extra = f"; dropped {len(dropped)} too long" if dropped else ""
    files.append_event("message", f"tokenized {what} ({tokens} tokens){extra}", train_tokens=tokens)


def _train(spec: dict[str, Any], config: HFConfig, files: JobFiles, stop: _Stop, group: Group,
           started: float) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    from ftkit_hf.engine.device import plan_device

    writer = group.is_main
    resumed = files.latest_checkpoint_step() is not None
    model_path = Path(spec["model_path"])
    if not model_path.is_dir():
        raise ConfigError(f"model path not found: {model_path}")
    plan = plan_device(config.device, config.precision, config.threads, processes=group.local_world_size)
    device = plan.describe() + (f" x {group.world_size} processes" if group.active else "")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_cfg = AutoConfig.from_pretrained(str(model_path))
    use_head = spec["head"] == "sequence_classification"
    use_mlm = spec["head"] == "masked_lm"
    hp = spec["hyperparameters"]
    labels: list[str] | None = spec.get("labels")
    max_length = spec["max_length"]
    if writer:
        files.append_event("message", f"device: {device}")

    from ftkit_hf.engine.settings import EngineSettings

    # The settings the backend chose from the data (ftkit_hf.defaults); a job folder written before them has none.
    chosen = spec.get("training") or {}
    settings = EngineSettings(
        epochs=chosen.get("epochs") or hp.get("epochs") or 1,
        learning_rate=chosen.get("learning_rate") or hp.get("learning_rate")
        or (2e-5 if config.method == "full" else 2e-4),
        batch_tokens=config.batch_tokens,
        max_batch_examples=chosen.get("batch_size") or hp.get("batch_size") or config.max_batch_examples or 64,
        pass_tokens=config.pass_tokens,
        seed=hp.get("seed", 0),
        precision=config.precision,
        device=config.device,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_steps=config.max_steps,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        early_stopping_patience=chosen.get("early_stopping_patience", config.early_stopping_patience),
        threads=config.threads,
    )

    import torch

    # The LoRA weights are initialized from torch's RNG when the adapter is attached, before the engine
    # seeds it: seed here so that a job is reproducible (and every rank starts from the same weights).
    torch.manual_seed(settings.seed)

    def on_event(ev: dict[str, Any]) -> None:
        if not writer:
            return
        ev = dict(ev)
        kind = ev.pop("kind", "message")
        message = str(ev.pop("message", ""))
        level = str(ev.pop("level", "info"))
        if kind == "metrics" and not message:
            parts = [f"step {ev.get('step')}/{ev.get('total_steps')}"]
            for key in ("train_loss", "valid_loss", "reward_accuracy", "valid_reward_accuracy"):
                if ev.get(key) is not None:
                    parts.append(f"{key} {ev[key]:.4f}")
            message = ", ".join(parts)
            files.write_status("running", step=ev.get("step"), total_steps=ev.get("total_steps"))
        elif kind == "checkpoint" and not message:
            message = f"checkpoint at step {ev.get('step')}"
        files.append_event(kind, message, level=level, **ev)

    if use_head:
        from ftkit_hf.examples import prepare_head_file
        from ftkit_hf.seqcls import train_head

        if group.active:
            # The head trainer (small encoders) is a plain one-process loop: rank 0 trains, the others leave.
            if not writer:
                return {"status": "succeeded"}
            files.append_event("message", f"the classification-head trainer uses one process: rank 0 trains, "
                               f"the other {group.world_size - 1} stay idle", level="warning")

        assert labels is not None
        train_rows, _ = prepare_head_file(spec["train"], tokenizer=tokenizer, labels=labels, max_length=max_length)
        valid_rows = None
        if spec.get("validation"):
            valid_rows, _ = prepare_head_file(spec["validation"], tokenizer=tokenizer, labels=labels,
                                              max_length=max_length)
        epoch_tokens = sum(len(r["input_ids"]) for r in train_rows)
        model = _load_head_model(model_path, labels, config, tokenizer.pad_token_id,
                                 lambda note: files.append_event("message", note) if writer and note else None)
        if stop():
            return {"status": "cancelled"}
        loop_started = time.monotonic()
        result = train_head(model, train_rows, valid_rows, settings, checkpoint_dir=files.checkpoints,
                            on_event=on_event, should_stop=stop, pad_id=tokenizer.pad_token_id)
    elif use_mlm:
        from ftkit_hf.mlm import MaskedBatcher, load_mlm_model, prepare_mlm_file
        from ftkit_hf.seqcls import train_head

        train_rows, train_tokens, _ = prepare_mlm_file(spec["train"], tokenizer=tokenizer, max_length=max_length)
        valid_rows = None
        if spec.get("validation"):
            valid_rows, _, _ = prepare_mlm_file(spec["validation"], tokenizer=tokenizer, max_length=max_length)
        if writer:
            _say_tokenized(files, f"{len(train_rows)} text pieces for masked-LM training", train_tokens, [])
        epoch_tokens = train_tokens
        model = load_mlm_model(model_path, config)
        if stop():
            return {"status": "cancelled"}
        loop_started = time.monotonic()
        result = train_head(model, train_rows, valid_rows, settings, checkpoint_dir=files.checkpoints,
                            on_event=on_event, should_stop=stop, pad_id=tokenizer.pad_token_id,
                            batcher=MaskedBatcher(tokenizer, model_cfg.vocab_size))
    elif spec["task"] == "preference":
        from ftkit_hf.engine.dpo import DPOSettings
        from ftkit_hf.engine.preference import train_preference
        from ftkit_hf.preference_data import prepare_preference_file

        pref = {"tokenizer": tokenizer, "max_length": max_length, "overlength": config.overlength,
                "context": getattr(model_cfg, "max_position_embeddings", None)}
        train_pairs = prepare_preference_file(spec["train"], **pref)
        valid_pairs = prepare_preference_file(spec["validation"], **pref) if spec.get("validation") else None
        if writer:
            _say_tokenized(files, f"{len(train_pairs.pairs)} preference pairs", train_pairs.tokens, train_pairs.dropped)
        dpo = DPOSettings(beta=config.dpo_beta, loss=config.dpo_loss, label_smoothing=config.dpo_label_smoothing,
                          sft_weight=config.dpo_sft_weight)
        epoch_tokens = train_pairs.tokens
        model = _load_causal_model(model_path, model_cfg, config, plan, group.active)
        if stop():
            return {"status": "cancelled"}
        loop_started = time.monotonic()
        result = train_preference(model, train_pairs.pairs, valid_pairs.pairs if valid_pairs else None, settings, dpo,
                                  checkpoint_dir=files.checkpoints, on_event=on_event, should_stop=stop)
    else:
        from ftkit_hf.engine import train
        from ftkit_hf.examples import prepare_file

        context = getattr(model_cfg, "max_position_embeddings", None)
        common = {"task": spec["task"], "tokenizer": tokenizer, "labels": labels, "preamble": spec.get("preamble"),
                  "max_length": max_length, "overlength": config.overlength, "context": context}
        train_set = prepare_file(spec["train"], **common)
        valid_set = prepare_file(spec["validation"], **common) if spec.get("validation") else None
        if writer:
            _say_tokenized(files, f"{len(train_set.examples)} training examples", train_set.tokens, train_set.dropped)
        epoch_tokens = train_set.tokens
        longest = max((len(ex.input_ids) for ex in train_set.examples), default=0)
        settings, checkpointing = _memory_choice(spec, config, model_cfg, plan, longest, settings, files, writer)
        model = _load_causal_model(model_path, model_cfg, config, plan, group.active)
        if checkpointing:
            from ftkit_hf.engine.recompute import enable_gradient_checkpointing

            if not enable_gradient_checkpointing(model) and writer:
                files.append_event("message", f"{type(model).__name__} has no gradient checkpointing: training "
                                   "without it", level="warning")
        if group.any(stop()):
            return {"status": "cancelled"}
        loop_started = time.monotonic()
        result = train(model, train_set.examples, valid_set.examples if valid_set else None, settings,
                       checkpoint_dir=files.checkpoints, on_event=on_event, should_stop=stop)
    loop_s = time.monotonic() - loop_started
    summary: dict[str, Any] = {
        "steps": result.steps, "epochs_done": result.epochs_done, "final_train_loss": result.final_train_loss,
        "best_valid_loss": result.best_valid_loss, "early_stopped": result.early_stopped,
        "tokens_per_second": result.tokens_per_second,
    }
    if result.stopped:
        if writer:
            files.append_event("message", f"cancelled at step {result.steps}; checkpoint saved")
        return {"status": "cancelled", "result": summary}
    if writer:
        _save_model(model, tokenizer, spec, config, files, use_head, use_mlm)
        if not resumed:  # a resumed run's steps and seconds cover only part of the job: not a measurement
            # Fixed cost = the process's whole life but the loop: interpreter and torch imports, loading, and saving
            # the model after the loop, as the job's actual time counts them (the load alone left small jobs 1.4x
            # over their estimate).
            _record_speed(spec, config, plan, group.world_size, epoch_tokens * result.epochs_done, result.steps,
                          loop_s, _process_age_s(started) - loop_s)
        files.append_event("message", f"training done: {result.steps} steps, {result.tokens_per_second:.0f} tokens/s"
                           + (" (early stopped)" if result.early_stopped else ""), **summary)
    return {"status": "succeeded", "result": summary, "finished": time.time()}


def _memory_choice(spec: dict[str, Any], config: HFConfig, model_cfg: Any, plan: Any, longest: int,
                   settings: Any, files: JobFiles, writer: bool) -> tuple[Any, bool]:
    """Apply the memory plan's choices (ftkit_hf.memory_plan): the ones the client recorded in the manifest
    (``spec["memory"]``), or, where it could not see this device (a rented machine), decided here.

    Returns:
        The settings with the chosen pass length, and whether to turn gradient checkpointing on.
    """
    import dataclasses

    from ftkit_hf.memory_plan import job_memory_decision

    memory = spec.get("memory")
    if memory is None:
        decision = job_memory_decision(model_cfg, config, device=plan.device, precision=plan.precision,
                                       longest_example=longest)
        memory = decision.manifest() if decision else None
    if memory is None:
        return settings, config.gradient_checkpointing is True
    if writer and memory.get("message"):
        files.append_event("message", memory["message"], level="info" if memory["fits"] else "warning",
                           memory=memory)
    if config.pass_tokens is None and memory.get("pass_tokens"):
        settings = dataclasses.replace(settings, pass_tokens=memory["pass_tokens"])
    return settings, bool(memory["gradient_checkpointing"])


def _load_causal_model(model_path: Path, model_cfg: Any, config: HFConfig, plan: Any, data_parallel: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if config.method == "qlora":
        from ftkit_hf.quant import qlora_kwargs

        kwargs = qlora_kwargs()
    elif plan.device == "cuda" and plan.precision == "bf16" and config.method != "full":
        kwargs["dtype"] = torch.bfloat16  # frozen base in bf16 on GPUs; LoRA weights stay fp32 (peft upcasts)
    else:
        kwargs["dtype"] = torch.float32
    if data_parallel and plan.device == "cuda":
        # Straight onto this rank's GPU (the current device), instead of N copies in host memory first.
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    _start_from(model, model_path, config)
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = config.target_modules or default_target_modules(model_cfg.model_type)
    # peft annotates lora_alpha as int but computes alpha / r in float.
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,  # type: ignore[arg-type]
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _load_head_model(model_path: Path, labels: list[str], config: HFConfig, pad_id: int | None,
                     say: Callable[[str], None] = lambda note: None) -> Any:
    import torch

    from ftkit_hf.pretrained_head import load_head_model

    # A trained classifier (its own label map) keeps its head when the job's labels are its labels.
    model, note = load_head_model(model_path, labels, dtype=torch.float32,
                                  pad_token_id=pad_id)  # decoder models with a head find the last real token by it
    say(note)
    _start_from(model, model_path, config)
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules or default_target_modules(model.config.model_type)
    # peft annotates lora_alpha as int but computes alpha / r in float.
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,  # type: ignore[arg-type]
                      target_modules=targets, bias="none", task_type="SEQ_CLS")
    return get_peft_model(model, lora)  # SEQ_CLS keeps the new classifier head trainable and saved


def _start_from(model: Any, model_path: Path, config: HFConfig) -> None:
    """Merge the ``start_from`` adapter into the freshly loaded base, before this job's adapter is attached."""
    if config.start_from:
        from ftkit_hf.start_adapter import apply_start_adapter

        apply_start_adapter(model, Path(config.start_from), model_path)


def _save_model(model: Any, tokenizer: Any, spec: dict[str, Any], config: HFConfig, files: JobFiles,
                use_head: bool, use_mlm: bool = False) -> None:
    tmp = files.root / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if config.start_from:
        from ftkit_hf.start_adapter import save_copy

        save_copy(Path(config.start_from), tmp)
    kind = "masked_lm" if use_mlm else "encoder" if use_head else "causal"
    meta = {"base_model": spec["model_path"], "model": spec["model"], "kind": kind,
            "method": config.method, "task": spec["task"], "labels": spec.get("labels"),
            "preamble": spec.get("preamble"), "max_length": spec["max_length"]}
    (tmp / "ftkit-hf.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if config.merge_adapter and config.method != "full":
        from ftkit_hf.export import merge_adapter

        merge_adapter(model, tokenizer, tmp / "merged")
    shutil.rmtree(files.model, ignore_errors=True)
    os.replace(tmp, files.model)


def _process_age_s(started: float) -> float:
    """Seconds since this process was created (since ``started``, a monotonic time, if the OS cannot say)."""
    import psutil

    try:
        return max(0.0, time.time() - psutil.Process().create_time())
    except psutil.Error:
        return time.monotonic() - started


def _record_speed(spec: dict[str, Any], config: HFConfig, plan: Any, processes: int, tokens: float, steps: int,
                  loop_s: float, setup_s: float) -> None:
    """Remember how long this job took on this machine, for the next estimate (best effort: never fails the job)."""
    from ftkit_hf.speeds import Measurement, SpeedKey, machine_name, record

    kind = "preference" if spec["task"] == "preference" else spec["head"]
    try:
        key = SpeedKey(machine=machine_name(plan.device, plan.precision, plan.threads), model=spec["model"],
                       method=config.method, kind=kind, processes=processes)
        record(key, Measurement(tokens=max(1, round(tokens)), steps=max(1, steps), train_s=max(loop_s, 1e-3),
                                setup_s=max(0.0, setup_s)))
    except (OSError, ValueError, TimeoutError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m ftkit_hf.worker run JOB_DIR``."""
    parser = argparse.ArgumentParser(prog="python -m ftkit_hf.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train the job in JOB_DIR (resumes from its last checkpoint)")
    p_run.add_argument("job_dir")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return run(args.job_dir)


if __name__ == "__main__":
    sys.exit(main())
