"""The training loop: steps, evaluation, checkpoints, resume, early stopping, data parallelism."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import ConfigError

from . import precision
from .batching import Batch, collate_packed, collate_padded, plan_epoch
from .checkpoint import (
    Position,
    latest_checkpoint,
    load_checkpoint,
    load_trainable,
    restore_rng,
    rng_state,
    save_checkpoint,
    trainable_state,
)
from .device import DevicePlan, apply_plan, plan_device
from .distributed import Group, current, split_step
from .lora_forward import fused_lora_forward
from .loss import Levers, LossComputer
from .precision import autocast, frozen_weights_in
from .settings import (
    CPU_PASS_TOKENS,
    CPU_PASS_TOKENS_FP32,
    IGNORE_INDEX,
    EngineSettings,
    TokenizedExample,
    TrainResult,
    check_loss,
    check_weights,
)

EventSink = Callable[[dict[str, Any]], None]


def _has_target(ex: TokenizedExample) -> bool:
    # Position t predicts labels[t + 1]: the first label can never be a target.
    return any(label != IGNORE_INDEX for label in ex.labels[1:])


def _fingerprint(lengths: Sequence[int], settings: EngineSettings, packed: bool) -> str:
    keys = ("epochs", "batch_tokens", "max_batch_examples", "seed", "max_steps", "learning_rate", "warmup_ratio")
    payload = json.dumps({"lengths": list(lengths), "packed": packed, **{k: getattr(settings, k) for k in keys}})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _target_count(ex: TokenizedExample) -> int:
    return sum(1 for label in ex.labels[1:] if label != IGNORE_INDEX)


def _default_pass_tokens(device: str, autocast_dtype: torch.dtype | None) -> int | None:
    """Tokens per pass when the settings leave it open: on a CPU by precision (fp32 activations are twice the
    bytes), on an accelerator the whole step."""
    if device != "cpu":
        return None
    return CPU_PASS_TOKENS if autocast_dtype is not None else CPU_PASS_TOKENS_FP32


def _gpu_pass_tokens(model: torch.nn.Module, batch_tokens: int, plan: DevicePlan, emit: EventSink) -> int | None:
    """On a GPU, shorter passes when the memory plan says a whole step would not fit the card (None: it fits)."""
    if plan.device != "cuda":
        return None
    from ftkit_hf.memory_plan import gpu_pass_tokens

    capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    tokens, note = gpu_pass_tokens(getattr(model, "config", None), batch_tokens, plan.precision, capacity)
    if note:
        emit({"kind": "message", "message": note})
    return tokens


def _passes(indices: list[int], lengths: Sequence[int], pass_tokens: int | None) -> list[list[int]]:
    """``indices`` (a step, or a rank's share of one) as forward/backward passes of about ``pass_tokens``
    tokens each, of similar sizes; one pass when they fit (or there is nothing, or no limit)."""
    parts = math.ceil(sum(lengths[i] for i in indices) / pass_tokens) if pass_tokens else 1
    if parts <= 1:
        return [indices]
    return [p for p in split_step(indices, lengths, parts) if p]


def _stand_in(ex: TokenizedExample) -> TokenizedExample:
    """Two tokens and one target: what a rank with no example in a step trains on, with weight 0.

    The rank must still run a forward and backward pass so that DDP's gradient all-reduce sees every
    rank; one target makes every trainable weight (the LM head included) take part.
    """
    ids = ex.input_ids[:2]
    return TokenizedExample(ids, [IGNORE_INDEX, ids[1]])


class _StepModule(torch.nn.Module):
    """The loss of a batch as a module's forward pass, so that DDP can wrap it.

    DDP's gradient hooks only act in a backward pass that follows a forward through the DDP wrapper,
    and the engine's loss does not go through ``model.forward`` (it runs the decoder, then the LM head
    on the target positions only).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossComputer) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(batch)


def _pad_id(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    return pad if isinstance(pad, int) and pad >= 0 else 0


def _tied_head(model: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """The LM head when it shares its weight with the input embeddings (it must not be stored in fp16 alone)."""
    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    head, emb = (get_out(), get_in()) if callable(get_in) and callable(get_out) else (None, None)
    tied = isinstance(head, torch.nn.Module) and isinstance(emb, torch.nn.Module) \
        and getattr(head, "weight", None) is getattr(emb, "weight", 0)
    return (head,) if tied and head is not None else ()


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup over ``warmup_steps`` (no zero-LR step), then linear decay towards 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


class _Run:
    """State of one call to :func:`train` (kept in one object to keep the loop readable)."""

    def __init__(self, model: torch.nn.Module, settings: EngineSettings, plan: DevicePlan, levers: Levers,
                 group: Group) -> None:
        self.model = model
        self.settings = settings
        self.plan = plan
        self.group = group
        self.loss_fn = LossComputer(model, levers)
        self.levers = levers
        self.pad_id = _pad_id(model)
        self.train_forward: Callable[[Batch], torch.Tensor] = self.loss_fn

    def wrap_data_parallel(self) -> None:
        """Train through DDP (gradients all-reduced during the backward pass) when there are several ranks."""
        if not self.group.active:
            return
        from torch.nn.parallel import DistributedDataParallel

        step = _StepModule(self.model, self.loss_fn)
        # Only the trainable weights are DDP's business: every rank loaded the same frozen base from
        # the same files, so broadcasting it (gigabytes for a 7B model) would be wasted.
        ignored = [f"model.{n}" for n, p in self.model.named_parameters() if not p.requires_grad]
        ignored += [f"model.{n}" for n, _ in self.model.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, ignored)
        cuda = self.plan.device == "cuda"
        self.train_forward = DistributedDataParallel(
            step, device_ids=[torch.cuda.current_device()] if cuda else None,
            # The generic route runs model.forward of an unknown architecture, which may leave weights unused.
            find_unused_parameters=not self.loss_fn.known)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Context of one pass: DDP keeps the gradients local until the step's last pass."""
        no_sync = getattr(self.train_forward, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def collate(self, examples: Sequence[TokenizedExample]) -> Batch:
        batch = collate_packed(examples) if self.loss_fn.packed else collate_padded(examples, self.pad_id)
        return batch.to(self.plan.device)

    def step_loss(self, batch: Batch, train: bool = False) -> torch.Tensor:
        with autocast(self.plan.device, self.plan.autocast_dtype):
            return self.train_forward(batch) if train else self.loss_fn(batch)

    @torch.no_grad()
    def evaluate(self, data: Sequence[TokenizedExample]) -> float:
        """Mean target cross-entropy over ``data`` (weighted by target tokens); with several ranks each
        evaluates every n-th batch and the sums are all-reduced, so all ranks get the same number."""
        was_training = self.model.training
        self.model.eval()
        lengths = [len(ex.input_ids) for ex in data]
        total, count = 0.0, 0
        try:
            steps = plan_epoch(lengths, self.settings.batch_tokens, self.settings.max_batch_examples, 0, 0,
                               sort_by_length=not self.loss_fn.packed)
            for idx in steps[self.group.rank::self.group.world_size]:
                batch = self.collate([data[i] for i in idx])
                if batch.label_tokens == 0:
                    continue
                total += float(self.step_loss(batch)) * batch.label_tokens
                count += batch.label_tokens
        finally:
            self.model.train(was_training)
        total_all, count_all = self.group.sum([total, count])
        return total_all / count_all if count_all else float("nan")


def train(model: torch.nn.Module, train_data: Sequence[TokenizedExample],
          valid_data: Sequence[TokenizedExample] | None, settings: EngineSettings, *, checkpoint_dir: Path,
          on_event: EventSink, should_stop: Callable[[], bool] = lambda: False,
          levers: Levers | None = None) -> TrainResult:
    """Train the trainable parameters of ``model`` (LoRA adapters, usually) on tokenized examples.

    Resumes from the newest complete checkpoint in ``checkpoint_dir`` if there is one. Deterministic given
    ``settings.seed`` (on the same hardware and thread count).

    Under torchrun / ``accelerate launch`` (a process group initialized, e.g. by
    :func:`ftkit_hf.engine.distributed.init_from_env`) every rank calls ``train`` with the same arguments:
    each optimizer step's examples are split between the ranks and DDP combines the gradients, so a
    step is the same step as in one process (``batch_tokens`` is the budget of the whole step), only
    computed in parallel. Rank 0 alone writes checkpoints and receives events.

    Args:
        model: a causal LM module (e.g. a ``peft.PeftModel`` over ``LlamaForCausalLM``); trained in place.
        train_data: training examples.
        valid_data: validation examples, or None / empty for none.
        settings: how to train.
        checkpoint_dir: where ``step-N`` checkpoints are written and resumed from.
        on_event: receives ``metrics``, ``checkpoint`` and ``message`` events (see the package docstring);
            called on rank 0 only.
        should_stop: polled between steps; when it returns True (on any rank) a checkpoint is written and
            train returns, on every rank.
        levers: speed levers (benchmarks only; the defaults are the fast path).

    Returns:
        What was done.

    Raises:
        ConfigError: no example has a target, the model has nothing to train, or the checkpoint folder
            holds a checkpoint of a different run.
    """
    levers = levers or Levers()
    group = current()
    plan = plan_device(settings.device, settings.precision, settings.threads, processes=group.local_world_size)
    apply_plan(plan)
    if plan.device == "cuda" and group.active:
        torch.cuda.set_device(group.local_rank % torch.cuda.device_count())  # "cuda" is this rank's GPU
    checkpoint_dir = Path(checkpoint_dir)
    torch.manual_seed(settings.seed + group.rank)  # ranks draw different dropout masks
    model.to(plan.device)
    run = _Run(model, settings, plan, levers, group)

    def emit(ev: dict[str, Any]) -> None:
        if group.is_main:
            on_event(ev)

    examples = [ex for ex in train_data if _has_target(ex)]
    if len(examples) < len(train_data):
        emit({"kind": "message", "message": f"{len(train_data) - len(examples)} training examples have no "
                                            "target token and are skipped"})
    if not examples:
        raise ConfigError("no training example has a token to learn (all labels are -100)")
    valid = [ex for ex in (valid_data or []) if _has_target(ex)]
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (was the LoRA adapter attached?)")

    lengths = [len(ex.input_ids) for ex in examples]
    plans = [plan_epoch(lengths, settings.batch_tokens, settings.max_batch_examples, settings.seed, epoch,
                        sort_by_length=not run.loss_fn.packed) for epoch in range(settings.epochs)]
    total_steps = sum(len(p) for p in plans)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    fingerprint = _fingerprint(lengths, settings, run.loss_fn.packed)

    optimizer = torch.optim.AdamW([p for _, p in params], lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay, fused=plan.device == "cuda",
                                  foreach=plan.device != "cuda")
    warmup = math.ceil(total_steps * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup))
    scaler = precision.LossScaler(plan.device, plan.autocast_dtype)  # fp16 only; a pass-through otherwise

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
        scaler.load_state_dict(loaded.state.get("scaler", {}))
        restore_rng(loaded.state, group.rank)
        emit({"kind": "message", "message": f"resumed from {resume_from.name}"})
    else:
        where = plan.describe() + (f" x {group.world_size} processes (data parallel)" if group.active else "")
        emit({"kind": "message", "message": f"training on {where}; {run.loss_fn.route}; {total_steps} steps"})

    def result(stopped: bool) -> TrainResult:
        done_epochs = pos.epoch + (pos.batch_index / len(plans[pos.epoch]) if pos.epoch < len(plans) else 0.0)
        return TrainResult(steps=pos.step, epochs_done=round(done_epochs, 4), final_train_loss=pos.last_train_loss,
                           best_valid_loss=pos.best_valid_loss, stopped=stopped, early_stopped=pos.early_stopped,
                           tokens_per_second=pos.train_tokens / pos.train_seconds if pos.train_seconds else 0.0)

    def checkpoint() -> None:
        rngs = group.gather(rng_state()) if group.active else None  # a collective: every rank comes here
        if group.is_main:
            path = save_checkpoint(checkpoint_dir, pos, model, optimizer, scheduler, best, rng_by_rank=rngs,
                                   scaler=scaler.state_dict())
            emit({"kind": "checkpoint", "step": pos.step, "path": str(path)})

    def finish() -> None:
        if best is not None and settings.early_stopping_patience is not None:
            load_trainable(model, best)
            emit({"kind": "message", "message": f"restored the weights of the best validation loss "
                                                f"({pos.best_valid_loss:.4f})"})

    if pos.done:
        finish()
        check_weights(params, pos.step)
        return result(stopped=False)

    run.wrap_data_parallel()
    targets = [_target_count(ex) for ex in examples]  # each pass's share of a step's mean loss
    pass_tokens = settings.pass_tokens or _default_pass_tokens(plan.device, plan.autocast_dtype) \
        or _gpu_pass_tokens(model, settings.batch_tokens, plan, emit)
    log_every = max(1, total_steps // 100)
    window_loss, window_steps, window_tokens, window_seconds = 0.0, 0, 0, 0.0
    last_checkpoint_step = pos.step if resume_from is not None else -1
    model.train()
    bf16_storage = plan.autocast_dtype if levers.bf16_frozen_weights else None
    # In fp16 only the Linear weights (what autocast would cast anyway): fp16 hidden states can overflow.
    storage = frozen_weights_in(model, bf16_storage, linear_only=scaler.enabled,
                                skip=_tied_head(model) if scaler.enabled else ())
    with run.loss_fn.context(), storage, fused_lora_forward(model, levers.fused_lora):
        while pos.step < total_steps and pos.epoch < len(plans):
            steps_of_epoch = plans[pos.epoch]
            if pos.batch_index >= len(steps_of_epoch):
                pos.epoch, pos.batch_index = pos.epoch + 1, 0
                continue
            if group.any(should_stop()):
                checkpoint()
                return result(stopped=True)
            step = steps_of_epoch[pos.batch_index]
            # This rank's share of the step (all of it in one process), in passes of about `pass_tokens`.
            mine = split_step(step, lengths, group.world_size)[group.rank] if group.active else step
            passes = _passes(mine, lengths, pass_tokens)
            step_targets = sum(targets[i] for i in step)
            step_tokens = sum(lengths[i] for i in step)
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
            loss_sum = 0.0  # sum over this rank's targets of their loss
            for k, indices in enumerate(passes):
                batch = run.collate([examples[i] for i in indices] or [_stand_in(examples[step[0]])])
                # A pass whose loss is the mean over its n targets is weighted n * world / N: summed over the
                # passes and averaged over the ranks by DDP, that is the gradient of the step's mean loss over
                # its N targets, as in one pass in one process. A rank with no example trains with weight 0.
                weight = batch.label_tokens * group.world_size / step_targets if indices else 0.0
                with run.accumulating(last=k == len(passes) - 1):
                    loss = run.step_loss(batch, train=True)
                    scaler.scale(loss * weight).backward()
                if indices:
                    loss_sum += loss.detach().item() * batch.label_tokens  # .item() syncs: honest timing
            scaler.step(optimizer)  # skipped (and the loss factor halved) when fp16 gradients overflowed
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # The step's loss over all its targets, the number one process would log.
            loss_value = (group.sum([loss_sum])[0] if group.active else loss_sum) / step_targets
            seconds = time.perf_counter() - started
            pos.step += 1
            pos.batch_index += 1
            pos.train_seconds += seconds
            pos.train_tokens += step_tokens
            if not math.isfinite(loss_value):
                # Said at once with the bad loss itself, then stop: a diverged run is a failed run, and the
                # last finite loss must not stand as its latest number.
                emit({"kind": "metrics", "step": pos.step, "total_steps": total_steps, "train_loss": loss_value,
                      "learning_rate": lr})
                check_loss(loss_value, pos.step)
            window_loss += loss_value
            window_steps += 1
            window_tokens += step_tokens
            window_seconds += seconds
            epoch_end = pos.batch_index >= len(steps_of_epoch)
            last = pos.step >= total_steps
            if epoch_end:
                pos.epoch, pos.batch_index = pos.epoch + 1, 0

            evaluate = bool(valid) and (
                (settings.eval_every is not None and pos.step % settings.eval_every == 0)
                or (settings.eval_every is None and epoch_end) or last)
            event: dict[str, Any] | None = None
            if evaluate or last or pos.step % log_every == 0:
                pos.last_train_loss = window_loss / window_steps
                event = {"kind": "metrics", "step": pos.step, "total_steps": total_steps,
                         "epoch": round(pos.epoch + pos.batch_index / len(plans[min(pos.epoch, len(plans) - 1)]), 4)
                         if not epoch_end else float(pos.epoch),
                         "train_loss": pos.last_train_loss, "learning_rate": lr,
                         "tokens_per_second": window_tokens / window_seconds if window_seconds else 0.0}
                window_loss, window_steps, window_tokens, window_seconds = 0.0, 0, 0, 0.0
            if evaluate:
                valid_loss = run.evaluate(valid)
                assert event is not None
                event["valid_loss"] = valid_loss
                if pos.record_validation(valid_loss, settings.early_stopping_patience) \
                        and settings.early_stopping_patience is not None:
                    best = trainable_state(model)
            if event is not None:
                emit(event)
            if pos.early_stopped or last:
                pos.done = True
                if pos.early_stopped:
                    emit({"kind": "message", "message": f"early stopping: no better validation loss in "
                                                        f"{pos.bad_evals} evaluations"})
                checkpoint()
                last_checkpoint_step = pos.step
                break
            if (settings.checkpoint_every is not None and pos.step % settings.checkpoint_every == 0) \
                    or (settings.checkpoint_every is None and epoch_end):
                checkpoint()
                last_checkpoint_step = pos.step
    if not pos.done:  # ran out of plan without hitting `last` (cannot happen, kept for safety)
        pos.done = True
        if last_checkpoint_step != pos.step:
            checkpoint()
    finish()
    check_weights(params, pos.step)  # the last step's update can break the weights after a finite loss
    return result(stopped=False)
