"""ftkit-hf's training engine: fast, correct LoRA training of causal LMs on CPU, CUDA or MPS.

::

    from ftkit_hf.engine import TokenizedExample, EngineSettings, train, TrainResult, describe_device

    result = train(peft_model, train_examples, valid_examples, EngineSettings(epochs=2),
                   checkpoint_dir=job_dir / "checkpoints", on_event=print)

What makes it fast (each measured in docs/performance.md):

* bf16 autocast where the hardware has native bf16 (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), fp32 elsewhere;
  threads = physical cores;
* examples packed into one row per step with attention kept inside each example (no padding, no
  cross-contamination), token-budget steps;
* the LM head applied only to positions that carry a label, chunked for large vocabularies;
* frozen base weights stored in bf16 during training.

Under torchrun / ``accelerate launch`` (after :func:`ftkit_hf.engine.distributed.init_from_env`) every
rank calls ``train`` with the same arguments and the steps are computed data-parallel: each step's
examples are split between the ranks and DDP combines their gradients into exactly the one-process
step (see ``distributed.py``).

Events passed to ``on_event`` (on rank 0 only):

* ``{"kind": "metrics", "step", "total_steps", "epoch", "train_loss", "learning_rate", "tokens_per_second"}``
  plus ``"valid_loss"`` on evaluation steps;
* ``{"kind": "checkpoint", "step", "path"}``;
* ``{"kind": "message", "message"}``.

A step whose loss is nan or inf ends training with :class:`TrainingDivergedError` ("loss became nan at
step 12"), after a last ``metrics`` event that carries that loss: nothing trained further is worth saving.
"""

from .device import describe_device
from .loop import train
from .loss import Levers
from .settings import EngineSettings, TokenizedExample, TrainingDivergedError, TrainResult

__all__ = [
    "EngineSettings",
    "Levers",
    "TokenizedExample",
    "TrainResult",
    "TrainingDivergedError",
    "describe_device",
    "train",
]
