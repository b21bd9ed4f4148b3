"""HFConfig: every option of the hf backend, validated (unknown keys are errors)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ftkit.backend import BackendConfig
from ftkit.costs.catalogue import ELECTRICITY


class HFConfig(BackendConfig):
    """Options of the local Hugging Face backend (the ``[hf]`` section of ``ftkit.toml``)."""

    zero_allowed: ClassVar[dict[str, str]] = {
        "lora_dropout": "0 turns dropout off (the default, and the fastest)",
        "warmup_ratio": "0 starts at the full learning rate",
        "weight_decay": "0 turns weight decay off",
        "dpo_label_smoothing": "0 is plain DPO (no assumed label noise)",
        "dpo_sft_weight": "0 trains on the preferences only",
    }

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Where to train: auto picks CUDA, then MPS, then CPU."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="auto: bf16 on CUDA and on CPUs with native bf16 (AMX/AVX512-BF16); fp16 with loss "
        "scaling on GPUs without bf16 (T4, V100); else fp32."
    )
    method: Literal["lora", "qlora", "full"] = Field(
        default="lora", description="LoRA adapters, QLoRA (4-bit base, CUDA + bitsandbytes), or full fine-tuning."
    )
    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha/r).")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA input (0 is fastest).")
    target_modules: list[str] | None = Field(
        default=None, description="Modules to adapt; None picks all attention and MLP projections of the architecture."
    )
    head: Literal["auto", "generative", "sequence_classification"] = Field(
        default="auto",
        description="Classification as label generation (decoders) or with a classification head (auto for encoders).",
    )
    max_length: int | None = Field(
        default=None, ge=8, description="Longest example in tokens; None: the model's context, at most 2048."
    )
    overlength: Literal["error", "drop"] = Field(
        default="error", description="What to do with an example longer than max_length."
    )
    batch_tokens: int = Field(
        default=4096, ge=64,
        description="Real-token budget of one optimizer step (a cap for long examples; packing removes padding).",
    )
    max_batch_examples: int | None = Field(
        default=None, ge=1,
        description="At most this many examples per step; None: chosen from the data (about n/32, 4 to 64).",
    )
    pass_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Tokens per forward/backward pass; a step's passes add their gradients (the same step, "
        "less memory). None: on a CPU 2048 in bf16, 1024 in fp32; the whole step on a GPU.",
    )
    gradient_checkpointing: Literal["auto"] | bool = Field(
        default="auto",
        description="Recompute each decoder layer in the backward pass instead of keeping its activations (about "
        "a third more compute, far less memory). auto: on only when the memory plan says the step does not fit "
        "the device even in the shortest passes; the choice is recorded in the job's manifest (memory).",
    )
    memory_limit_gb: float | None = Field(
        default=None, gt=0,
        description="Plan training to fit this much device memory (GiB) instead of all the device has (a GPU "
        "shared with other processes); None: the GPU's memory, or the machine's RAM on a CPU.",
    )
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Fraction of steps warming up the LR.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    eval_every: int | None = Field(default=None, ge=1, description="Evaluate every N steps; None: once per epoch.")
    checkpoint_every: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps; None: once per epoch."
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1,
        description="Stop after this many evaluations without a better validation loss (best weights kept); "
        "None: 1 when there is validation data and more than one epoch.",
    )
    carve_validation: bool = Field(
        default=True,
        description="Without a validation file, set ~10% of the training examples aside (seeded, stratified by "
        "label, at least 12, at most 200; none below 60 examples) for early stopping; the lines are recorded.",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads; None: one per physical core.")
    dpo_beta: float = Field(
        default=0.1, gt=0, description="task='preference': DPO beta, how far the tuned model may move from the base "
        "(higher: less far). OpenAI's DPO beta means the same."
    )
    dpo_loss: Literal["sigmoid", "ipo", "robust"] = Field(
        default="sigmoid", description="task='preference': sigmoid (DPO, cDPO with label smoothing), ipo, or "
        "robust (rDPO); the formulas of TRL's DPOTrainer."
    )
    dpo_label_smoothing: float = Field(
        default=0.0, ge=0, lt=0.5, description="task='preference': assumed fraction of flipped preference labels "
        "(sigmoid and robust losses)."
    )
    dpo_sft_weight: float = Field(
        default=0.0, ge=0, description="task='preference': weight of an SFT term (mean NLL of the preferred answers) "
        "trained in the same job (RPO; TRL's loss_type=['sigmoid', 'sft'])."
    )
    start_from: str | None = Field(
        default=None,
        description="Start from an earlier hf job's adapter on the same base model (a job id, its job folder or "
        "model folder), typically a task='text' domain adaptation: merged into the base before this job's own "
        "LoRA adapter (docs/backends/hf.md, domain adaptation).",
    )
    merge_adapter: bool = Field(
        default=False, description="Also save the base model with the adapter merged in, under model/merged/."
    )
    num_processes: int | Literal["auto"] = Field(
        default=1,
        description="Training processes on this machine, data parallel (one per GPU); above 1 the worker runs "
        "under `python -m torch.distributed.run --standalone`. auto: one per visible CUDA GPU (1 without GPUs).",
    )
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="Training speed for the estimate; None: measured here before, or a default."
    )
    power_watts: float | None = Field(
        default=None,
        gt=0,
        description="Power draw for the electricity estimate; None: 65 W CPU, 350 W GPU, 40 W MPS "
        "(ftkit.costs.catalogue.DEVICE_WATTS).",
    )
    usd_per_kwh: float = Field(
        default=ELECTRICITY.usd_per_kwh,
        gt=0,
        description="Electricity price, USD/kWh (default: ftkit.costs' US average, 2025).",
    )

    @field_validator("num_processes")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("num_processes must be at least 1 (or 'auto')")
        return value
