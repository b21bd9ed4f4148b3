"""Checkpoints: everything needed to resume a run exactly where it stopped.

Layout of ``checkpoint_dir/step-N/``:

* ``trainable.safetensors``: the trainable parameters only (the LoRA adapters), by name;
* ``best.safetensors``: the trainable parameters at the best validation loss (with early stopping);
* ``state.pt``: optimizer, scheduler and RNG states;
* ``state.json``: step, data position (epoch, batch index), counters, the run's fingerprint. Written
  last, so a folder with ``state.json`` is complete.

A checkpoint is written into a temporary folder and renamed into place, so a crash never leaves a
half-written ``step-N``. The newest :data:`KEEP` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

KEEP = 3
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Position:
    """Where training stands; saved in ``state.json``.

    Attributes:
        step: optimizer steps done.
        epoch: the epoch of the next batch.
        batch_index: the index of the next batch within ``epoch``.
        fingerprint: identifies data and settings; a checkpoint of another run is refused.
        best_valid_loss: lowest validation loss so far.
        bad_evals: evaluations since the last improvement.
        done: training finished (all steps, or early stopping); resuming only returns the result.
        early_stopped: training ended by early stopping.
        last_train_loss: the last logged mean training loss.
        train_seconds: training time so far (for tokens per second across a resume).
        train_tokens: real tokens trained so far.
    """

    step: int
    epoch: int
    batch_index: int
    fingerprint: str
    best_valid_loss: float | None = None
    bad_evals: int = 0
    done: bool = False
    early_stopped: bool = False
    last_train_loss: float | None = None
    train_seconds: float = 0.0
    train_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def record_validation(self, valid_loss: float, patience: int | None) -> bool:
        """Count one evaluation for early stopping (shared by the SFT and DPO loops).

        Returns:
            True when ``valid_loss`` is the best so far (keep the weights as the best); ``early_stopped`` is set
            once ``patience`` evaluations in a row brought no improvement.
        """
        if self.best_valid_loss is None or valid_loss < self.best_valid_loss:
            self.best_valid_loss, self.bad_evals = valid_loss, 0
            return True
        self.bad_evals += 1
        if patience is not None and self.bad_evals >= patience:
            self.early_stopped = True
        return False


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, detached on CPU."""
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters into ``model``; the names must match exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.device, p.dtype))


def rng_state() -> dict[str, Any]:
    """This process's torch RNG state (CPU, and the current CUDA device's when there is one)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # The current device only: under data parallelism each rank owns one GPU, and reading every
        # device's state would open a context on each of them.
        rng["cuda_device"] = torch.cuda.get_rng_state()
    return rng


def save_checkpoint(checkpoint_dir: Path, position: Position, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    best: dict[str, torch.Tensor] | None, rng_by_rank: list[dict[str, Any]] | None = None,
                    scaler: dict[str, Any] | None = None) -> Path:
    """Write ``checkpoint_dir/step-N`` atomically and prune old checkpoints.

    Args:
        checkpoint_dir: the run's checkpoint folder.
        position: where training stands.
        model: the model whose trainable parameters are saved.
        optimizer: its state is saved.
        scheduler: its state is saved.
        best: trainable parameters at the best validation loss, if kept.
        rng_by_rank: under data parallelism, every rank's :func:`rng_state` (rank 0 writes them all).
        scaler: the fp16 loss scaler's state (:class:`ftkit_hf.engine.precision.LossScaler`), if scaling.

    Returns:
        The path of the new checkpoint.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step-{position.step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{position.step}-", dir=checkpoint_dir))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        state: dict[str, Any] = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                 "rng": rng_by_rank[0] if rng_by_rank else rng_state()}
        if rng_by_rank:
            state["rng_by_rank"] = rng_by_rank
        if scaler:
            state["scaler"] = scaler
        torch.save(state, tmp / "state.pt")
        payload = json.dumps(position.__dict__, indent=1, sort_keys=True)
        (tmp / "state.json").write_text(payload)
        if final.exists():  # the same step saved again (e.g. stop right after a resume)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(checkpoint_dir)
    return final


def _complete(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for child in checkpoint_dir.iterdir() if checkpoint_dir.is_dir() else []:
        match = _STEP_DIR.match(child.name)
        if match and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _prune(checkpoint_dir: Path) -> None:
    for _, path in _complete(checkpoint_dir)[:-KEEP]:
        shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``checkpoint_dir``, or None."""
    found = _complete(checkpoint_dir)
    return found[-1][1] if found else None


@dataclass
class Loaded:
    """A checkpoint read back."""

    position: Position
    trainable: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    state: dict[str, Any]


def load_checkpoint(path: Path) -> Loaded:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    position = Position(**json.loads((path / "state.json").read_text()))
    best_file = path / "best.safetensors"
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return Loaded(position, load_file(str(path / "trainable.safetensors")),
                  load_file(str(best_file)) if best_file.exists() else None, state)


def restore_rng(state: dict[str, Any], rank: int = 0) -> None:
    """Put torch's RNG back where the checkpoint left it (this rank's state when it was saved per rank)."""
    by_rank = state.get("rng_by_rank") or []
    if rank < len(by_rank):
        rng = by_rank[rank]
    elif rank == 0:
        rng = state.get("rng", {})
    else:
        return  # a rank the checkpoint did not have (more processes than before): keep its own seeded state
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda_device" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda_device"])
    elif "cuda" in rng and torch.cuda.is_available():  # checkpoints written before per-device states
        torch.cuda.set_rng_state_all(rng["cuda"])
