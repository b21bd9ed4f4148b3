"""Training a sequence-classification head on an encoder (BERT-like models such as MiniLM).

The engine trains causal LMs; an encoder with a classification head is small enough that a plain
loop is the right tool: shuffled padded batches, AdamW with linear warmup/decay, an evaluation and
a checkpoint per epoch (or every N steps), resume from the newest checkpoint, early stopping on
validation loss, and ``should_stop`` polled between steps. Events match the engine's.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftkit_hf.engine.device import apply_plan, plan_device
from ftkit_hf.engine.settings import EngineSettings, TrainResult, check_loss, check_weights


def _batches(rows: list[dict[str, Any]], size: int, pad_id: int, order: list[int]) -> list[dict[str, torch.Tensor]]:
    out = []
    for start in range(0, len(order), size):
        chunk = [rows[i] for i in order[start : start + size]]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[j, : len(r["input_ids"])] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["label"] for r in chunk])})
    return out


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_head(
    model: torch.nn.Module,
    train_rows: list[dict[str, Any]],
    valid_rows: list[dict[str, Any]] | None,
    settings: EngineSettings,
    *,
    checkpoint_dir: Path,
    on_event: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool] = lambda: False,
    pad_id: int = 0,
    batcher: Callable[[list[dict[str, Any]], int, int, list[int], int], list[dict[str, torch.Tensor]]] | None = None,
) -> TrainResult:
    """Train a sequence-classification model; same contract as :func:`ftkit_hf.engine.train`.

    ``batcher(rows, size, pad_id, order, seed)`` builds the batches instead of the labelled padded ones
    (the masked-LM trainer, :mod:`ftkit_hf.mlm`, passes masked batches); ``seed`` is the seed plus the epoch
    for training, a fixed one for validation.
    """
    make = batcher or (lambda rows, size, pad, order, seed: _batches(rows, size, pad, order))
    plan = plan_device(settings.device, settings.precision, settings.threads)
    apply_plan(plan)
    torch.manual_seed(settings.seed)
    model.to(plan.device)
    size = min(settings.max_batch_examples, 32)
    steps_per_epoch = math.ceil(len(train_rows) / size)
    total = settings.max_steps or steps_per_epoch * settings.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    warm = int(total * settings.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    step, best, bad, best_state = 0, math.inf, 0, None
    checkpoint_dir = Path(checkpoint_dir)
    done = sorted((p for p in checkpoint_dir.glob("step-*") if (p / "state.pt").is_file()),
                  key=lambda p: int(p.name[5:]))
    if done:
        state = torch.load(done[-1] / "state.pt", weights_only=False)
        model.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best, bad = state["step"], state["best"], state["bad"]
        on_event({"kind": "message", "message": f"resumed from step {step}"})

    def save(at: int) -> None:
        tmp = checkpoint_dir / f".step-{at}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"trainable": _trainable(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": at, "best": best, "bad": bad}, tmp / "state.pt")
        final = checkpoint_dir / f"step-{at}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        for old in checkpoint_dir.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        on_event({"kind": "checkpoint", "step": at, "path": str(final)})

    def evaluate() -> float | None:
        if not valid_rows:
            return None
        model.eval()
        tot, n = 0.0, 0
        with torch.inference_mode():
            for b in make(valid_rows, 64, pad_id, list(range(len(valid_rows))), settings.seed):
                out = model(**{k: v.to(plan.device) for k, v in b.items()})
                tot += float(out.loss) * len(b["labels"])
                n += len(b["labels"])
        model.train()
        return tot / n

    model.train()
    tokens, seconds, last_loss, stopped, early = 0, 0.0, None, False, False
    eval_every = settings.eval_every or steps_per_epoch
    ckpt_every = settings.checkpoint_every or steps_per_epoch
    while step < total and not (stopped or early):
        epoch = step // steps_per_epoch
        order = list(range(len(train_rows)))
        random.Random(settings.seed + epoch).shuffle(order)
        batches = make(train_rows, size, pad_id, order, settings.seed + epoch)
        for b in batches[step % steps_per_epoch :]:
            if should_stop():
                save(step)
                stopped = True
                break
            t0 = time.perf_counter()
            out = model(**{k: v.to(plan.device) for k, v in b.items()})
            out.loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            tokens += int(b["attention_mask"].sum())
            step += 1
            last_loss = float(out.loss)
            if not math.isfinite(last_loss):
                on_event({"kind": "metrics", "step": step, "total_steps": total, "train_loss": last_loss,
                          "learning_rate": sched.get_last_lr()[0]})
                check_loss(last_loss, step)
            ev: dict[str, Any] = {"kind": "metrics", "step": step, "total_steps": total,
                                  "epoch": step / steps_per_epoch, "train_loss": last_loss,
                                  "learning_rate": sched.get_last_lr()[0],
                                  "tokens_per_second": tokens / seconds if seconds else 0.0}
            if step % eval_every == 0 or step == total:
                vl = evaluate()
                if vl is not None:
                    ev["valid_loss"] = vl
                    if vl < best:
                        best, bad, best_state = vl, 0, _trainable(model)
                    else:
                        bad += 1
                        early = settings.early_stopping_patience is not None and bad >= settings.early_stopping_patience
            on_event(ev)
            if step % ckpt_every == 0 or step == total or early:
                save(step)
            if step >= total or early:
                break
    if best_state is not None and (early or step >= total):
        model.load_state_dict(best_state, strict=False)  # keep the best weights seen on validation
    if not stopped:
        check_weights(((n, p) for n, p in model.named_parameters() if p.requires_grad), step)
    return TrainResult(steps=step, epochs_done=step / steps_per_epoch, final_train_loss=last_loss,
                       best_valid_loss=best if best < math.inf else None, stopped=stopped, early_stopped=early,
                       tokens_per_second=tokens / seconds if seconds else 0.0)
