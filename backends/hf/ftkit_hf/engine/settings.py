"""The engine's inputs and outputs: one tokenized example, the settings, the result."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ftkit.errors import ConfigError, JobFailedError

IGNORE_INDEX = -100
# Tokens per forward/backward pass on a CPU. On the 64-example benchmark (2 cores) two ~1,700-token passes per
# step instead of one: peak memory 6.4 -> 4.1 GiB, 40% fewer fresh pages faulted in, and about the same speed
# (fresh processes: 69.4 and 65.0 s against 69.3 and 68.3 s for the call; in one warm process 0.92x). Laptops with
# 8 GiB of memory are the reason; docs/performance.md has the commands. In fp32 a token's activations take about
# twice the bytes, so its passes are half as long: on a CPU without native bf16, 1,024-token passes gave peak
# memory 6.2 -> 3.8 GiB at the same speed (call 82.3 and 87.4 s against 82.9 and 84.2 s).
CPU_PASS_TOKENS = 2048
CPU_PASS_TOKENS_FP32 = CPU_PASS_TOKENS // 2  # the same activation bytes per pass as bf16


@dataclass
class TokenizedExample:
    """One training example, already tokenized.

    Attributes:
        input_ids: token ids of the whole example (prompt and answer).
        labels: the same length as ``input_ids``; the token id where the loss applies, -100 elsewhere.
    """

    input_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ConfigError(
                f"input_ids and labels differ in length ({len(self.input_ids)} vs {len(self.labels)})"
            )


@dataclass
class EngineSettings:
    """How to train.

    Attributes:
        epochs: passes over the training data.
        learning_rate: peak AdamW learning rate (linear warmup, then linear decay to 0).
        batch_tokens: token budget of one optimizer step (real tokens, no padding counted). Examples are
            packed into a step until the budget or ``max_batch_examples`` is reached; a longer example
            gets a step of its own.
        max_batch_examples: at most this many examples in one step.
        pass_tokens: a step's examples are run in forward/backward passes of about this many tokens, their
            gradients added up before the optimizer step: the same step, with the activation memory of a
            smaller one. None: on a CPU :data:`CPU_PASS_TOKENS` in bf16 and :data:`CPU_PASS_TOKENS_FP32` in fp32
            (~2/3 of the peak memory at about the same speed, see docs/performance.md), the whole step in one
            pass on a GPU.
        seed: fixes the data order (and torch's RNG); the same seed gives the same run.
        precision: ``auto`` (bf16 autocast where the hardware has native bf16; else fp16 with loss scaling on a
            GPU, fp32 on a CPU), ``bf16``, ``fp16``, ``fp32``.
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        warmup_ratio: fraction of the steps spent warming the learning rate up from 0.
        weight_decay: AdamW weight decay.
        max_steps: stop after this many optimizer steps (None: all epochs).
        eval_every: evaluate every N steps (None: at the end of each epoch).
        checkpoint_every: checkpoint every N steps (None: at the end of each epoch).
        early_stopping_patience: stop after this many evaluations without a better validation loss;
            the best trainable weights are restored at the end (None: no early stopping).
        threads: CPU threads (None: one per physical core).
    """

    epochs: int = 1
    learning_rate: float = 2e-4
    batch_tokens: int = 4096
    max_batch_examples: int = 64
    pass_tokens: int | None = None
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_steps: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    early_stopping_patience: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_tokens": self.batch_tokens,
                    "max_batch_examples": self.max_batch_examples}
        for key in ("pass_tokens", "max_steps", "eval_every", "checkpoint_every", "early_stopping_patience",
                    "threads"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"engine setting {key} must be a positive integer, not {value!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"engine setting learning_rate must be > 0, not {self.learning_rate!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"engine setting warmup_ratio must be in [0, 1), not {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"engine setting weight_decay must be >= 0, not {self.weight_decay!r}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"engine setting precision must be auto, bf16, fp16 or fp32, not {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"engine setting device must be auto, cpu, cuda or mps, not {self.device!r}")


@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes:
        steps: optimizer steps done in total (including those before a resume).
        epochs_done: epochs done, fractional when stopped mid-epoch.
        final_train_loss: mean training loss over the last logging window (None if no step ran).
        best_valid_loss: the lowest validation loss seen (None without validation data).
        stopped: ``should_stop()`` asked to stop; a checkpoint was written.
        early_stopped: validation loss stopped improving for ``early_stopping_patience`` evaluations.
        tokens_per_second: real (non-pad) tokens per second of training, evaluation and checkpoints excluded.
    """

    steps: int
    epochs_done: float
    final_train_loss: float | None
    best_valid_loss: float | None
    stopped: bool
    early_stopped: bool
    tokens_per_second: float


class TrainingDivergedError(JobFailedError):
    """The loss or the trained weights became nan or inf: the run cannot produce a usable model."""


def check_loss(loss: float, step: int) -> None:
    """Raise when a step's loss is not a finite number (training has diverged; every later step is garbage).

    Raises:
        TrainingDivergedError: e.g. "loss became nan at step 12".
    """
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"loss became {loss} at step {step}: training diverged (lower the learning rate); no model was saved"
        )


def check_weights(params: Iterable[tuple[str, torch.Tensor]], step: int) -> None:
    """Raise when a trained weight holds nan or inf: checked before a model is declared a success.

    Raises:
        TrainingDivergedError: naming the first bad weight and the step.
    """
    bad = [name for name, p in params if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise TrainingDivergedError(
            f"weights became nan or inf by step {step} ({bad[0]}{more}): training diverged "
            "(lower the learning rate); no model was saved"
        )
