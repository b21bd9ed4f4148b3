"""Data parallelism across the processes that torchrun or ``accelerate launch`` started on one machine.

The engine does not own a distributed runtime: a launcher starts one process per GPU (or several CPU
processes) with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set, :func:`init_from_env` joins them into a
process group (through accelerate's ``PartialState``: nccl on CUDA with ``cuda:LOCAL_RANK`` as each
rank's device, gloo on CPU), and :func:`current` tells the training loop how many ranks there are.

What the loop does with them (see ``loop.py``): every rank plans the same steps from the shared seed,
so every rank runs the same number of steps; each step's examples are split between the ranks
(:func:`split_step`); DDP sums the gradients, each rank's loss being weighted so that the result is
exactly the single-process gradient of the whole step; losses, token counts and the stop request are
all-reduced so every rank takes the same decisions; rank 0 alone writes checkpoints and events.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

from ftkit.errors import ConfigError

# Rank 0 alone writes checkpoints and the model: a slow disk or a merged full model must not make the
# other ranks, waiting in the next collective, give up.
TIMEOUT = timedelta(minutes=60)


def launched_world_size() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class Group:
    """The ranks training together (one rank and no communication when not launched distributed).

    Attributes:
        world_size: processes in the group.
        rank: this process's rank (0 writes the files).
        local_rank: rank on this machine (the GPU index on CUDA).
        local_world_size: processes on this machine (they share its CPU cores).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that writes checkpoints, events and the model."""
        return self.rank == 0

    def _comm_device(self) -> torch.device:
        # nccl only moves CUDA tensors; gloo works on CPU tensors.
        if tdist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (every rank gets the same numbers)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if not self.active:
            return flag
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (picklable objects; one call on every rank)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            tdist.barrier()


def current() -> Group:
    """The group this process trains in: from the initialized process group, else a single rank."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return Group()
    world = tdist.get_world_size()
    return Group(world_size=world, rank=tdist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                 local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def init_from_env(device: str = "auto") -> Group:
    """Join the process group of a torchrun / ``accelerate launch`` start; a single rank otherwise.

    On CUDA each rank uses ``cuda:LOCAL_RANK`` (set as the current device, so ``"cuda"`` means it) and
    nccl; on CPU the ranks talk over gloo. MPS has one device and no collective backend: refused.

    Args:
        device: the configured device (``auto``, ``cpu``, ``cuda``, ``mps``).

    Raises:
        ConfigError: several processes on MPS, or more processes than GPUs on this machine.
    """
    if launched_world_size() <= 1 or not tdist.is_available():
        return Group()
    if tdist.is_initialized():
        return current()
    from .device import resolve_device

    try:
        resolved = resolve_device(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if resolved == "mps":
        raise ConfigError("several training processes cannot share one Apple GPU (MPS): use one process")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if resolved == "cuda" and local_world > torch.cuda.device_count():
        raise ConfigError(f"{local_world} processes were started on this machine but torch sees "
                          f"{torch.cuda.device_count()} CUDA GPUs: start at most one process per GPU")
    from accelerate import PartialState

    PartialState(cpu=resolved == "cpu", backend="nccl" if resolved == "cuda" else "gloo", timeout=TIMEOUT)
    return current()


def shutdown(wait: bool = True) -> None:
    """Leave the process group (a no-op when there is none).

    Args:
        wait: first wait until every rank gets here (while rank 0 saves the model, say). Tearing the
            group down while another rank still uses it can abort the process; after an error the
            other ranks may never come, so do not wait then.
    """
    if tdist.is_available() and tdist.is_initialized():
        if wait:
            tdist.barrier()
        tdist.destroy_process_group()


def split_step(indices: Sequence[int], lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Split one step's examples into ``parts`` shards of similar token counts (longest first, each to
    the lightest shard so far): the ranks' shares of a step, and the passes of a share. Deterministic, so
    every rank computes the same split.

    A shard is empty when the step has fewer examples than ``parts``; the loop gives that rank a
    zero-weight stand-in so it still takes part in the gradient all-reduce.
    """
    shards: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(indices, key=lambda j: (-lengths[j], j)):
        k = min(range(parts), key=lambda p: (load[p], p))
        shards[k].append(i)
        load[k] += lengths[i]
    return shards
