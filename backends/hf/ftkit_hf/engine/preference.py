"""The training loop for preference pairs (DPO): the SFT loop's steps, checkpoints and events with the DPO loss.

Differences from :func:`ftkit_hf.engine.loop.train`:

* the unit of data is a :class:`~.dpo.PreferencePair`; a step holds up to ``batch_tokens`` real tokens of
  chosen + rejected sequences (``max_batch_examples`` counts pairs), packed into one row as separate segments;
* before the first step the reference log-probabilities of every training and validation pair are computed
  once, with the adapter disabled and under the same precision as training, and cached in
  ``checkpoint_dir/reference-logps.safetensors`` so that a resumed run does not recompute them;
* the step's loss is the mean DPO loss over its pairs (each pass weighted by its share of the pairs);
* ``metrics`` events carry ``reward_margin`` and ``reward_accuracy`` (the fraction of pairs whose chosen
  answer gained more log-likelihood ratio than the rejected one), and on evaluation ``valid_loss``,
  ``valid_reward_margin`` and ``valid_reward_accuracy`` over the validation pairs.

One process only: the data-parallel path of the SFT loop is not wired for pairs (a ConfigError says so).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ftkit.errors import ConfigError

from .batching import plan_epoch
from .checkpoint import (
    Position,
    latest_checkpoint,
    load_checkpoint,
    load_trainable,
    restore_rng,
    save_checkpoint,
    trainable_state,
)
from .device import apply_plan, plan_device
from .distributed import current
from .dpo import DPOSettings, PreferencePair, SequenceLogProbs, collate_pairs, dpo_loss, reference_logps
from .loop import _default_pass_tokens, _pad_id, _passes, linear_schedule
from .lora_forward import fused_lora_forward
from .loss import Levers, LossComputer
from .precision import autocast, frozen_weights_in
from .settings import IGNORE_INDEX, EngineSettings, TrainResult, check_loss, check_weights

EventSink = Callable[[dict[str, Any]], None]
REFERENCE_FILE = "reference-logps.safetensors"


def _has_target(pair: PreferencePair) -> bool:
    return all(any(t != IGNORE_INDEX for t in ex.labels[1:]) for ex in (pair.chosen, pair.rejected))


def _fingerprint(train: Sequence[PreferencePair], settings: EngineSettings, dpo: DPOSettings, packed: bool) -> str:
    keys = ("epochs", "batch_tokens", "max_batch_examples", "seed", "max_steps", "learning_rate", "warmup_ratio")
    digest = hashlib.sha256()
    for pair in train:  # the tokens themselves: the cached reference log-probabilities belong to them
        digest.update(json.dumps([pair.chosen.input_ids, pair.chosen.labels, pair.rejected.input_ids,
                                  pair.rejected.labels]).encode())
    payload = json.dumps({"data": digest.hexdigest(), "packed": packed,
                          "dpo": [dpo.beta, dpo.loss, dpo.label_smoothing, dpo.sft_weight],
                          **{k: getattr(settings, k) for k in keys}})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_reference(path: Path, fingerprint: str, sizes: dict[str, int]) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError):
        return None  # unreadable: recompute
    if meta.get("fingerprint") != fingerprint or {k: v.numel() for k, v in tensors.items()} != sizes:
        return None
    return tensors


def _save_reference(path: Path, fingerprint: str, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"fingerprint": fingerprint})
    os.replace(tmp, path)


def train_preference(model: torch.nn.Module, train_data: Sequence[PreferencePair],
                     valid_data: Sequence[PreferencePair] | None, settings: EngineSettings, dpo: DPOSettings, *,
                     checkpoint_dir: Path, on_event: EventSink, should_stop: Callable[[], bool] = lambda: False,
                     levers: Levers | None = None) -> TrainResult:
    """Train the LoRA adapter of ``model`` with DPO on preference pairs.

    Resumes from the newest complete checkpoint in ``checkpoint_dir``. Deterministic given ``settings.seed``.

    Args:
        model: a ``peft.PeftModel`` over a causal LM; the reference is the same model with the adapter disabled.
        train_data: training pairs.
        valid_data: validation pairs, or None / empty for none.
        settings: how to train (``max_batch_examples`` counts pairs).
        dpo: beta, loss variant, label smoothing.
        checkpoint_dir: where ``step-N`` checkpoints and the cached reference log-probabilities are written.
        on_event: receives ``metrics``, ``checkpoint`` and ``message`` events.
        should_stop: polled between steps; when it returns True a checkpoint is written and train returns.
        levers: speed levers (benchmarks only).

    Returns:
        What was done; ``final_train_loss`` and ``best_valid_loss`` are DPO losses.

    Raises:
        ConfigError: several processes, no pair with targets on both sides, no adapter, or a checkpoint of
            another run.
    """
    levers = levers or Levers()
    if current().active:
        raise ConfigError("preference (DPO) training runs in one process: set num_processes=1")
    plan = plan_device(settings.device, settings.precision, settings.threads)
    apply_plan(plan)
    checkpoint_dir = Path(checkpoint_dir)
    torch.manual_seed(settings.seed)
    model.to(plan.device)
    loss_fn = LossComputer(model, levers)
    seq_logps = SequenceLogProbs(loss_fn)
    pad_id = _pad_id(model)

    pairs = [p for p in train_data if _has_target(p)]
    if len(pairs) < len(train_data):
        on_event({"kind": "message", "message": f"{len(train_data) - len(pairs)} training pairs have an answer "
                                                "without a token to learn and are skipped"})
    if not pairs:
        raise ConfigError("no training pair has answer tokens to learn on both sides")
    valid = [p for p in (valid_data or []) if _has_target(p)]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (was the LoRA adapter attached?)")

    lengths = [p.tokens for p in pairs]
    plans = [plan_epoch(lengths, settings.batch_tokens, settings.max_batch_examples, settings.seed, epoch,
                        sort_by_length=not loss_fn.packed) for epoch in range(settings.epochs)]
    total_steps = sum(len(p) for p in plans)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    fingerprint = _fingerprint(pairs, settings, dpo, loss_fn.packed)

    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=plan.device == "cuda", foreach=plan.device != "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total_steps, math.ceil(total_steps * settings.warmup_ratio)))

    pos = Position(step=0, epoch=0, batch_index=0, fingerprint=fingerprint)
    best: dict[str, torch.Tensor] | None = None
    resume_from = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        loaded = load_checkpoint(resume_from)
        if loaded.position.fingerprint != fingerprint:
            raise ConfigError(f"{resume_from} belongs to a run with other data or settings; "
                              "use an empty checkpoint folder")
        pos, best = loaded.position, loaded.best
        load_trainable(model, loaded.trainable)
        optimizer.load_state_dict(loaded.state["optimizer"])
        scheduler.load_state_dict(loaded.state["scheduler"])
        restore_rng(loaded.state, 0)
        on_event({"kind": "message", "message": f"resumed from {resume_from.name}"})
    else:
        on_event({"kind": "message", "message": f"DPO ({dpo.loss}, beta {dpo.beta}) on {plan.describe()}; "
                                                f"{loss_fn.route}; {total_steps} steps"})

    def result(stopped: bool) -> TrainResult:
        done_epochs = pos.epoch + (pos.batch_index / len(plans[pos.epoch]) if pos.epoch < len(plans) else 0.0)
        return TrainResult(steps=pos.step, epochs_done=round(done_epochs, 4), final_train_loss=pos.last_train_loss,
                           best_valid_loss=pos.best_valid_loss, stopped=stopped, early_stopped=pos.early_stopped,
                           tokens_per_second=pos.train_tokens / pos.train_seconds if pos.train_seconds else 0.0)

    def checkpoint() -> None:
        path = save_checkpoint(checkpoint_dir, pos, model, optimizer, scheduler, best)
        on_event({"kind": "checkpoint", "step": pos.step, "path": str(path)})

    def finish() -> None:
        if best is not None and settings.early_stopping_patience is not None:
            load_trainable(model, best)
            on_event({"kind": "message", "message": f"restored the weights of the best validation loss "
                                                    f"({pos.best_valid_loss:.4f})"})

    if pos.done:
        finish()
        return result(stopped=False)

    def forward_context() -> Any:
        return autocast(plan.device, plan.autocast_dtype)

    def evaluate(ref: torch.Tensor) -> tuple[float, float, float]:
        """Mean DPO loss, mean reward margin and reward accuracy over the validation pairs."""
        model.eval()
        losses, margins = [], []
        try:
            with torch.no_grad():
                for idx in plan_epoch([p.tokens for p in valid], settings.batch_tokens, settings.max_batch_examples,
                                      0, 0, sort_by_length=not loss_fn.packed):
                    batch = collate_pairs([valid[i] for i in idx], loss_fn.packed, pad_id).to(plan.device)
                    with forward_context():
                        sums, counts = seq_logps(batch)
                    out = dpo_loss(sums, _rows(ref, idx).to(sums.device), counts, dpo)
                    losses.append(out.loss.item() * len(idx))
                    margins.append(out.margins.float().cpu())
        finally:
            model.train()
        m = torch.cat(margins)
        return sum(losses) / len(valid), float(m.mean()), float((m > 0).float().mean())

    pass_tokens = settings.pass_tokens or _default_pass_tokens(plan.device, plan.autocast_dtype)
    log_every = max(1, total_steps // 100)
    window: dict[str, float] = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0, "margin": 0.0, "correct": 0.0,
                                "pairs": 0}
    model.train()
    bf16_storage = plan.autocast_dtype if levers.bf16_frozen_weights else None
    with loss_fn.context(), frozen_weights_in(model, bf16_storage), fused_lora_forward(model, levers.fused_lora):
        # The reference log-probabilities, once per pair (cached on disk for a resumed run).
        ref_path = checkpoint_dir / REFERENCE_FILE
        sizes = {"train": 2 * len(pairs), **({"valid": 2 * len(valid)} if valid else {})}
        cached = _load_reference(ref_path, fingerprint, sizes)
        if cached is None:
            started = time.perf_counter()
            cached = {"train": reference_logps(model, seq_logps, pairs, settings.batch_tokens, plan.device, pad_id,
                                               step=forward_context)}
            if valid:
                cached["valid"] = reference_logps(model, seq_logps, valid, settings.batch_tokens, plan.device,
                                                  pad_id, step=forward_context)
            _save_reference(ref_path, fingerprint, cached)
            on_event({"kind": "message", "message": f"reference log-probabilities of {len(pairs) + len(valid)} "
                                                    f"pairs computed in {time.perf_counter() - started:.1f} s"})
        ref_train, ref_valid = cached["train"], cached.get("valid")
        last_checkpoint_step = pos.step if resume_from is not None else -1
        while pos.step < total_steps and pos.epoch < len(plans):
            steps_of_epoch = plans[pos.epoch]
            if pos.batch_index >= len(steps_of_epoch):
                pos.epoch, pos.batch_index = pos.epoch + 1, 0
                continue
            if should_stop():
                checkpoint()
                return result(stopped=True)
            step = steps_of_epoch[pos.batch_index]
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss_sum, margin_sum, correct = 0.0, 0.0, 0.0
            for indices in _passes(step, lengths, pass_tokens):
                batch = collate_pairs([pairs[i] for i in indices], loss_fn.packed, pad_id).to(plan.device)
                with forward_context():
                    sums, counts = seq_logps(batch)
                out = dpo_loss(sums, _rows(ref_train, indices).to(sums.device), counts, dpo)
                # The pass's mean over its pairs, weighted by its share: the step's mean over all its pairs.
                (out.loss * (len(indices) / len(step))).backward()
                loss_sum += out.loss.item() * len(indices)
                margin_sum += float(out.margins.sum())
                correct += float((out.margins > 0).sum())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            step_tokens = sum(lengths[i] for i in step)
            pos.step += 1
            pos.batch_index += 1
            pos.train_seconds += seconds
            pos.train_tokens += step_tokens
            step_loss = loss_sum / len(step)
            if not math.isfinite(step_loss):
                # As in the SFT loop: the bad loss is said at once, then the job fails; a diverged run is a
                # failed run, and the last finite loss must not stand as its latest number.
                on_event({"kind": "metrics", "step": pos.step, "total_steps": total_steps, "train_loss": step_loss,
                          "learning_rate": lr})
                check_loss(step_loss, pos.step)
            for key, value in (("loss", step_loss), ("steps", 1), ("tokens", step_tokens),
                               ("seconds", seconds), ("margin", margin_sum), ("correct", correct),
                               ("pairs", len(step))):
                window[key] += value
            epoch_end = pos.batch_index >= len(steps_of_epoch)
            last = pos.step >= total_steps
            if epoch_end:
                pos.epoch, pos.batch_index = pos.epoch + 1, 0
            do_eval = bool(valid) and (
                (settings.eval_every is not None and pos.step % settings.eval_every == 0)
                or (settings.eval_every is None and epoch_end) or last)
            event: dict[str, Any] | None = None
            if do_eval or last or pos.step % log_every == 0:
                pos.last_train_loss = window["loss"] / window["steps"]
                event = {"kind": "metrics", "step": pos.step, "total_steps": total_steps,
                         "epoch": round(pos.epoch + pos.batch_index / len(plans[min(pos.epoch, len(plans) - 1)]), 4)
                         if not epoch_end else float(pos.epoch),
                         "train_loss": pos.last_train_loss, "learning_rate": lr,
                         "reward_margin": window["margin"] / window["pairs"],
                         "reward_accuracy": window["correct"] / window["pairs"],
                         "tokens_per_second": window["tokens"] / window["seconds"] if window["seconds"] else 0.0}
                window = dict.fromkeys(window, 0.0)
            if do_eval:
                assert event is not None and ref_valid is not None
                valid_loss, valid_margin, valid_accuracy = evaluate(ref_valid)
                event.update(valid_loss=valid_loss, valid_reward_margin=valid_margin,
                             valid_reward_accuracy=valid_accuracy)
                if pos.record_validation(valid_loss, settings.early_stopping_patience) \
                        and settings.early_stopping_patience is not None:
                    best = trainable_state(model)
            if event is not None:
                on_event(event)
            if pos.early_stopped or last:
                pos.done = True
                if pos.early_stopped:
                    on_event({"kind": "message", "message": f"early stopping: no better validation loss in "
                                                            f"{pos.bad_evals} evaluations"})
                checkpoint()
                last_checkpoint_step = pos.step
                break
            if (settings.checkpoint_every is not None and pos.step % settings.checkpoint_every == 0) \
                    or (settings.checkpoint_every is None and epoch_end):
                checkpoint()
                last_checkpoint_step = pos.step
    if not pos.done:
        pos.done = True
        if last_checkpoint_step != pos.step:
            checkpoint()
    finish()
    # The last step's update can break the weights after a finite loss: checked before a success is declared.
    check_weights(((n, p) for n, p in model.named_parameters() if p.requires_grad), pos.step)
    return result(stopped=False)


def _rows(ref: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """The cached reference values of ``indices``' pairs, in chosen₀, rejected₀, chosen₁, ... order."""
    return ref[torch.tensor([2 * i + k for i in indices for k in (0, 1)])]
