"""How much memory a training run needs, before anything is loaded or rented.

The plan adds up what the engine keeps while it trains (:mod:`ftkit_hf.engine`), from the model's config alone:

* **weights**: the frozen base as the engine holds it. On a GPU in bf16 the worker loads it in bf16 (2 bytes a
  parameter). On a CPU under bf16 the engine keeps the fp32 weights and a bf16 copy for the duration of training
  (:func:`ftkit_hf.engine.precision.frozen_weights_in`): 6 bytes. In fp16 the fp32 weights and an fp16 copy of the
  ``nn.Linear`` weights. QLoRA: NF4 linears (4 bits plus double-quantized block constants) and fp32 embeddings and
  norms (``prepare_model_for_kbit_training`` upcasts them).
* **trainable state**: each trainable parameter (LoRA's A and B, or every weight in full fine-tuning) in fp32, its
  fp32 gradient and AdamW's two fp32 moments: 16 bytes a parameter.
* **activations**: what autograd saves for the backward pass, per token of one forward/backward pass
  (``pass_tokens``), counted tensor by tensor for a Llama-style decoder layer (see :func:`_layer_bytes_per_token`),
  plus one more layer's worth live during the backward pass, the embeddings' output and the final norm.
* **head**: the engine's LM head works on target positions only, in chunks of at most
  :data:`~ftkit_hf.engine.head_loss.CHUNK_LOGITS` logits, and keeps the hidden-state gradient of each target.
* **overhead**: on CUDA the context, cuBLAS workspaces and the caching allocator's slack, which
  ``torch.cuda.max_memory_allocated`` does not see but the card's memory holds (1 GiB). On a CPU, glibc's heap:
  after the first large free it serves blocks up to 32 MiB from the heap instead of fresh mappings (its dynamic
  mmap threshold) and keeps what the backward pass frees, so resident memory peaks at about 1.44x the allocations
  plus ~32 MiB of runtime (fitted on the four runs below; with ``MALLOC_MMAP_THRESHOLD_=65536`` the slack is gone).

Measured on a CPU (a random 4-layer Llama, hidden 256, vocab 8,192, LoRA r=16, one pass per step, 2 steps, in a
fresh process; ``python backends/hf/tests/memory_peak.py PRECISION TOKENS``): allocations (glibc slack switched
off) against :attr:`MemoryPlan.allocated_bytes`: fp32 4,096 tokens 551 MiB measured / 593 predicted, bf16 4,096
425 / 410, fp32 1,024 184 / 169, bf16 2,048 253 / 225 (0.89-1.08x). Peak resident memory against
:attr:`MemoryPlan.total_bytes`: 883 / 887, 639 / 622, 272 / 276, 335 / 356. And SmolLM2-135M in bf16 (the CPU
benchmark, docs/performance.md), one 3,400-token pass against two of 1,700: 6.4 and 4.1 GiB measured for the whole
process (imports and data included, ~0.9 GiB), 4.9 and 3.2 GiB predicted for training.

:func:`fit_memory` is what callers use: the first of (the settings as given, shorter passes, QLoRA) that fits a
device's memory, or a plan that says it does not fit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ftkit.errors import ConfigError

Precision = Literal["bf16", "fp16", "fp32"]
Method = Literal["lora", "qlora", "full"]

GIB = 1 << 30
CUDA_OVERHEAD_BYTES = 1 * GIB  # CUDA context + cuBLAS workspaces + allocator slack (not in max_memory_allocated)
CPU_HEAP_SLACK = 0.44  # glibc keeps freed sub-32-MiB blocks: resident peak ~1.44x the allocations (module docstring)
CPU_RUNTIME_BYTES = 32 << 20  # thread pools, oneDNN scratch, the autograd graph
FIT_FRACTION = 0.92  # of the device's memory a plan may use: the rest is fragmentation and other processes
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes, an 8-bit absmax per 64, an fp32 constant per 256 blocks
MIN_PASS_TOKENS = 256
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelShape(BaseModel):
    """The dimensions of a Llama-style decoder (Llama, Qwen2, Mistral, SmolLM2, ...) that memory depends on."""

    model_config = ConfigDict(frozen=True)

    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    tie_word_embeddings: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> ModelShape:
        """From a ``transformers`` config object or a ``config.json`` mapping.

        Raises:
            ConfigError: the config lacks a field a decoder-only model must have.
        """
        def get(key: str, default: Any = None) -> Any:
            return config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)

        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "vocab_size") if get(k) is None]
        if missing:
            raise ConfigError(f"model config has no {', '.join(missing)}: not a decoder this memory plan knows")
        heads = int(get("num_attention_heads"))
        return cls(hidden_size=get("hidden_size"), intermediate_size=get("intermediate_size"),
                   num_hidden_layers=get("num_hidden_layers"), num_attention_heads=heads,
                   num_key_value_heads=get("num_key_value_heads") or heads, vocab_size=get("vocab_size"),
                   head_dim=get("head_dim") or int(get("hidden_size")) // heads,
                   tie_word_embeddings=bool(get("tie_word_embeddings", True)))

    @classmethod
    def from_model_dir(cls, path: Path) -> ModelShape:
        """From the ``config.json`` of a local model folder.

        Raises:
            ConfigError: no readable ``config.json`` there.
        """
        file = Path(path) / "config.json"
        try:
            return cls.from_config(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file}: cannot read the model config ({exc})") from exc

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear projection of one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' linear projections (what LoRA adapts and QLoRA quantizes)."""
        return self.num_hidden_layers * sum(a * b for a, b in self.projections().values())

    @property
    def other_params(self) -> int:
        """Embeddings, an untied LM head and the norms."""
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embed + (2 * self.num_hidden_layers + 1) * self.hidden_size


class MemoryPlan(BaseModel):
    """Bytes one training process needs at its peak, by what holds them.

    Attributes:
        device: ``cuda`` or ``cpu`` (``mps`` is planned as ``cuda`` without the CUDA overhead).
        precision: the resolved training precision.
        method: ``lora``, ``qlora`` or ``full``.
        pass_tokens: tokens in one forward/backward pass.
        gradient_checkpointing: activations planned as with activation checkpointing per decoder layer.
        parameters: parameters of the model.
        trainable_parameters: parameters trained (LoRA's, or all of them).
        weights_bytes: the frozen (or, in full fine-tuning, trained) weights as held during training.
        trainable_bytes: trainable weights, their gradients and AdamW's moments (fp32, 16 bytes a parameter,
            of which the weights' own 4 are here only for LoRA; in full fine-tuning they are in weights_bytes).
        activation_bytes: what the decoder layers keep for the backward pass, plus one layer's working set.
        head_bytes: the LM head's logits chunks and the targets' hidden-state gradients.
        overhead_bytes: CUDA context and allocator slack, or on a CPU glibc's heap slack and the runtime.
    """

    device: str
    precision: Precision
    method: Method
    pass_tokens: int
    gradient_checkpointing: bool
    parameters: int
    trainable_parameters: int
    weights_bytes: int
    trainable_bytes: int
    activation_bytes: int
    head_bytes: int
    overhead_bytes: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allocated_bytes(self) -> int:
        """The predicted peak of the tensors themselves (what ``torch.cuda.max_memory_allocated`` reports)."""
        return self.weights_bytes + self.trainable_bytes + self.activation_bytes + self.head_bytes

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_bytes(self) -> int:
        """The predicted peak the device must hold: the tensors plus the overhead."""
        return self.allocated_bytes + self.overhead_bytes

    def fits(self, capacity_bytes: int) -> bool:
        """Whether the plan fits a device with ``capacity_bytes`` of memory (using at most 92% of it)."""
        return self.total_bytes <= FIT_FRACTION * capacity_bytes

    def describe(self) -> str:
        """One line, e.g. ``"7.9 GiB: weights 0.9, trainable 0.1, activations 5.6, head 0.3, overhead 1.0"``."""
        parts = {"weights": self.weights_bytes, "trainable": self.trainable_bytes,
                 "activations": self.activation_bytes, "head": self.head_bytes, "overhead": self.overhead_bytes}
        body = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items() if v or k != "overhead")
        head = f"{self.total_bytes / GIB:.1f} GiB ({self.method}, {self.precision}, {self.pass_tokens}-token passes)"
        return f"{head}: {body}"


def _layer_bytes_per_token(shape: ModelShape, act: int, rank: int, lora_inputs: int) -> int:
    """Bytes autograd saves per token in one decoder layer (LoRA on all projections, frozen base).

    A frozen ``nn.Linear`` saves nothing for its own backward (the input gradient needs only the weight), but
    LoRA's A matrix saves its input. Counted per token, ``act`` bytes an element of an autocast output:

    * two RMSNorms: each keeps its input upcast to fp32 (4h each);
    * LoRA inputs: the normalised hidden state shared by q/k/v and by gate/up, the attention output for o_proj,
      the gated product for down_proj (``lora_inputs`` copies of h where autocast casts them separately);
    * attention: q, k, v and its output (SDPA and the varlen kernels keep them, plus a log-sum-exp per head);
    * MLP: gate and up outputs, SiLU(gate) and the product (4 x intermediate);
    * LoRA's rank-r activations (7 of them).
    """
    h, i, heads = shape.hidden_size, shape.intermediate_size, shape.num_attention_heads
    q, kv = heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim
    norms = 2 * 4 * h
    lora_in = lora_inputs * act * h + act * q  # + o_proj's input; down_proj's is the product counted in the MLP
    attention = act * (2 * q + 2 * kv) + 4 * heads
    mlp = 4 * act * i
    return norms + lora_in + attention + mlp + 7 * rank * act


def _weight_bytes(shape: ModelShape, device: str, precision: Precision, method: Method) -> int:
    linear, other = shape.linear_params, shape.other_params
    if method == "qlora":
        return math.ceil(linear * NF4_BYTES) + 4 * other
    if method == "full":
        # Trained weights in fp32; under autocast each trained matmul weight's low-precision cast is cached
        # for the step (autocast caches casts of leaf tensors that require grad).
        return 4 * (linear + other) + (2 * linear if precision != "fp32" else 0)
    if precision == "fp32":
        return 4 * (linear + other)
    if device == "cpu" and precision == "bf16":
        return 6 * (linear + other)  # fp32 originals kept + bf16 storage of every frozen weight
    if precision == "fp16":
        return 6 * linear + 4 * other  # fp32 load + fp16 copies of the Linear weights only
    return 2 * (linear + other)  # loaded in bf16 on a GPU


def plan_memory(shape: ModelShape, *, device: str = "cuda", precision: Precision = "bf16", method: Method = "lora",
                lora_rank: int = 16, lora_targets: Sequence[str] | None = None, pass_tokens: int = 4096,
                target_fraction: float = 1.0, gradient_checkpointing: bool = False) -> MemoryPlan:
    """Predict the peak memory of one training process.

    Args:
        shape: the model's dimensions (:meth:`ModelShape.from_config`).
        device: ``cuda``, ``cpu`` or ``mps``.
        precision: ``bf16``, ``fp16`` or ``fp32`` (resolved, as :func:`ftkit_hf.engine.plan_device` gives it).
        method: ``lora``, ``qlora`` or ``full``.
        lora_rank: LoRA rank.
        lora_targets: adapted projections (None: all seven, the engine's default).
        pass_tokens: tokens in one forward/backward pass (a step's passes run one after the other).
        target_fraction: share of the tokens that carry a loss (the LM head runs on those only); 1.0 is the
            worst case.
        gradient_checkpointing: plan activations as kept per decoder layer input only, recomputed in backward.

    Returns:
        The plan.

    Raises:
        ConfigError: an argument is out of range.
    """
    if pass_tokens < 1 or not 0 < target_fraction <= 1 or lora_rank < 1:
        raise ConfigError("memory plan: pass_tokens and lora_rank must be positive, target_fraction in (0, 1]")
    if method == "qlora" and device != "cuda":
        raise ConfigError("memory plan: QLoRA runs on CUDA only")
    targets = set(lora_targets or _PROJECTIONS)
    proj = shape.projections()
    n_layers = shape.num_hidden_layers
    if method == "full":
        trainable_params = shape.linear_params + shape.other_params
        trainable_bytes = 12 * trainable_params  # gradient + two moments; the fp32 weights are in weights_bytes
        rank = 0
    else:
        trainable_params = n_layers * sum(lora_rank * (a + b) for name, (a, b) in proj.items() if name in targets)
        trainable_bytes = 16 * trainable_params
        rank = lora_rank
    act = 4 if precision == "fp32" else 2
    # The hidden states between layers: bf16 where the weights are (GPU load, or the engine's bf16 storage on a
    # CPU, embeddings included); fp32 in fp32, in fp16 (kept fp32 against overflow) and for QLoRA's fp32 embeddings.
    stream = 2 if precision == "bf16" and method == "lora" else 4
    # Where the stream is not the autocast dtype, each LoRA layer's A matmul casts its own copy of the input.
    lora_inputs = 2 if stream == act else 5
    per_layer = _layer_bytes_per_token(shape, act, rank, lora_inputs)
    if method == "full":
        per_layer += act * (shape.hidden_size + shape.intermediate_size)  # frozen-weight savings do not apply
    # With checkpointing: the layer inputs, plus the layer being recomputed.
    kept = n_layers * stream * shape.hidden_size + per_layer if gradient_checkpointing else n_layers * per_layer
    working = per_layer  # the layer whose gradients are being computed
    edges = stream * shape.hidden_size + 4 * shape.hidden_size  # embeddings' output, final norm's fp32 input
    activation_bytes = pass_tokens * (kept + working + edges)

    from ftkit_hf.engine.head_loss import CHUNK_LOGITS

    targets_n = math.ceil(pass_tokens * target_fraction)
    rows = min(targets_n, max(1, CHUNK_LOGITS // shape.vocab_size))
    logits = rows * shape.vocab_size * (4 if act == 4 else act + 4)  # low-precision chunk + its fp32 copy
    head_bytes = logits + targets_n * shape.hidden_size * (stream + 4)  # gathered hidden states + their gradient
    weights_bytes = _weight_bytes(shape, device, precision, method)
    allocated = weights_bytes + trainable_bytes + activation_bytes + head_bytes
    if device == "cuda":
        overhead = CUDA_OVERHEAD_BYTES
    elif device == "cpu":
        overhead = math.ceil(CPU_HEAP_SLACK * allocated) + CPU_RUNTIME_BYTES
    else:
        overhead = 0
    return MemoryPlan(
        device=device, precision=precision, method=method, pass_tokens=pass_tokens,
        gradient_checkpointing=gradient_checkpointing, parameters=shape.linear_params + shape.other_params,
        trainable_parameters=trainable_params, weights_bytes=weights_bytes, trainable_bytes=trainable_bytes,
        activation_bytes=activation_bytes, head_bytes=head_bytes, overhead_bytes=overhead)


def fit_memory(shape: ModelShape, capacity_bytes: int, *, batch_tokens: int, device: str = "cuda",
               precision: Precision = "bf16", method: Method = "lora", pass_tokens: int | None = None,
               allow_qlora: bool = True, **kwargs: Any) -> MemoryPlan:
    """The first plan that fits ``capacity_bytes``: as configured, then shorter passes, then QLoRA.

    Shorter passes (``pass_tokens``, halved down to 256) train the same step with less activation memory;
    QLoRA (CUDA only) shrinks the weights about 4x. When nothing fits, the plan with the smallest total is
    returned, and its :meth:`MemoryPlan.fits` is False.

    Args:
        shape: the model's dimensions.
        capacity_bytes: the device's memory.
        batch_tokens: tokens of one optimizer step (the longest possible pass).
        device: as in :func:`plan_memory`.
        precision: as in :func:`plan_memory`.
        method: the method asked for; ``full`` is never switched to LoRA (that would change the result).
        pass_tokens: the configured pass length (None: the whole step).
        allow_qlora: may switch ``lora`` to ``qlora`` on CUDA.
        **kwargs: passed to :func:`plan_memory`.

    Returns:
        The chosen plan.
    """
    tokens = min(pass_tokens or batch_tokens, batch_tokens)
    tried: list[MemoryPlan] = []
    methods: list[Method] = [method] + (["qlora"] if allow_qlora and method == "lora" and device == "cuda" else [])
    for m in methods:
        t = tokens
        while True:
            plan = plan_memory(shape, device=device, precision=precision, method=m, pass_tokens=t, **kwargs)
            if plan.fits(capacity_bytes):
                return plan
            tried.append(plan)
            if t <= MIN_PASS_TOKENS:
                break
            t = max(MIN_PASS_TOKENS, t // 2)
    return min(tried, key=lambda p: p.total_bytes)


def device_memory_bytes(device: str) -> int | None:
    """Memory of the training device here: the first GPU's, the machine's RAM for a CPU, None for MPS."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().total)
    return None


def memory_assumptions(model_dir: Path, *, device: str, precision: str, method: str, lora_rank: int,
                       batch_tokens: int, pass_tokens: int | None, capacity_bytes: int | None = None) -> list[str]:
    """The estimate's memory line for a local model folder: the planned peak, and whether it fits here.

    When it does not fit, the line names what would (shorter passes, or QLoRA on CUDA). Empty for a model whose
    config this plan does not describe (an encoder, an unknown layout) and for MPS.

    Args:
        model_dir: the resolved model folder (``config.json`` is read).
        device: the resolved device (``cpu``, ``cuda``, ``mps``).
        precision: the resolved precision (``bf16``, ``fp16``, ``fp32``).
        method: ``lora``, ``qlora`` or ``full``.
        lora_rank: the LoRA rank.
        batch_tokens: tokens of one optimizer step.
        pass_tokens: the configured pass length (None: the engine's default for the device).
        capacity_bytes: the device's memory (None: :func:`device_memory_bytes`).
    """
    from ftkit_hf.engine.settings import CPU_PASS_TOKENS, CPU_PASS_TOKENS_FP32

    if device == "mps":
        return []
    try:
        shape = ModelShape.from_model_dir(model_dir)
    except (ConfigError, ValueError):
        return []
    if pass_tokens is None and device == "cpu":
        pass_tokens = CPU_PASS_TOKENS_FP32 if precision == "fp32" else CPU_PASS_TOKENS
    tokens = min(pass_tokens or batch_tokens, batch_tokens)
    prec: Precision = precision if precision in ("bf16", "fp16", "fp32") else "fp32"  # type: ignore[assignment]
    meth: Method = method if method in ("lora", "qlora", "full") else "lora"  # type: ignore[assignment]
    plan = plan_memory(shape, device=device, precision=prec, method=meth, lora_rank=lora_rank, pass_tokens=tokens)
    capacity = capacity_bytes if capacity_bytes is not None else device_memory_bytes(device)
    line = f"peak memory about {plan.describe()} (ftkit_hf.memory_plan)"
    if capacity is None:
        return [line]
    if plan.fits(capacity):
        return [f"{line}; fits the {capacity / GIB:.0f} GiB here"]
    better = fit_memory(shape, capacity, batch_tokens=batch_tokens, device=device, precision=prec, method=meth,
                        pass_tokens=tokens, lora_rank=lora_rank)
    if not better.fits(capacity):
        return [f"{line}; does NOT fit the {capacity / GIB:.0f} GiB here, not even with 256-token passes"
                + (" or QLoRA" if device == "cuda" and meth == "lora" else "")]
    fix = f"method='qlora', pass_tokens={better.pass_tokens}" if better.method != meth \
        else f"pass_tokens={better.pass_tokens}"
    return [f"{line}; does NOT fit the {capacity / GIB:.0f} GiB here: {fix} would ({better.total_bytes / GIB:.1f} GiB)"]


def gpu_pass_tokens(config: Any, batch_tokens: int, precision: str, capacity_bytes: int) -> tuple[int | None, str]:
    """The pass length the engine uses on a GPU when none is configured: the whole step if the plan fits the card,
    else the longest of the halvings (down to 256 tokens) that fits.

    Args:
        config: the model's ``transformers`` config (None, or one this plan does not describe: the whole step).
        batch_tokens: tokens of one optimizer step.
        precision: the resolved precision.
        capacity_bytes: the GPU's memory.

    Returns:
        The pass length (None: the whole step) and a message for the job log ("" when nothing changed).
    """
    if config is None:
        return None, ""
    try:
        shape = ModelShape.from_config(config)
    except (ConfigError, ValueError):
        return None, ""
    prec: Precision = precision if precision in ("bf16", "fp16", "fp32") else "bf16"  # type: ignore[assignment]
    whole = plan_memory(shape, device="cuda", precision=prec, pass_tokens=batch_tokens)
    if whole.fits(capacity_bytes):
        return None, ""
    plan = fit_memory(shape, capacity_bytes, batch_tokens=batch_tokens, precision=prec, allow_qlora=False)
    if not plan.fits(capacity_bytes):
        gpu = f"{capacity_bytes / GIB:.0f} GiB GPU"
        return MIN_PASS_TOKENS, (f"memory plan: {whole.describe()} does not fit the {gpu}, nor do "
                                 f"{MIN_PASS_TOKENS}-token passes; trying them (QLoRA would be smaller)")
    return plan.pass_tokens, (f"memory plan: a whole {batch_tokens}-token step needs about "
                              f"{whole.total_bytes / GIB:.1f} GiB, more than the {capacity_bytes / GIB:.0f} GiB GPU "
                              f"has: passes of {plan.pass_tokens} tokens (the same step, less memory)")


# ------------------------------------------------------------------------------------------- decisions

# GPUs without native bf16 (compute capability below 8.0): the engine trains on them in fp16 with loss scaling
# (ftkit_hf.engine.device.plan_device asks torch; this table answers before a machine exists, from a name).
_NO_BF16 = re.compile(r"\b(t4|v100|p100|p40|p4|k80|m60|titan ?v|titan ?rtx|quadro ?rtx|q ?rtx|rtx ?20\d0|gtx)\b")


def gpu_precision(gpu_name: str) -> Precision:
    """The precision ``precision='auto'`` trains in on a GPU of this name: fp16 on GPUs without native bf16
    (T4, V100, P100, Turing and older), else bf16.

    Args:
        gpu_name: a catalogue or provider name ("T4", "Tesla V100-SXM2-16GB", "RTX 4090").
    """
    name = re.sub(r"[-_/]", " ", gpu_name.lower())
    return "fp16" if _NO_BF16.search(name) else "bf16"


class MemoryDecision(BaseModel):
    """What a job does about memory on one device, decided from the plan before the model is loaded.

    Recorded in the job's manifest (``memory``) and applied by the worker.

    Attributes:
        capacity_bytes: the device memory planned against (None: unknown, nothing was changed).
        pass_tokens: tokens per forward/backward pass to use (None: the engine's default).
        gradient_checkpointing: recompute each decoder layer in the backward pass instead of keeping its
            activations.
        automatic: ``gradient_checkpointing`` was chosen by the plan (the config said ``auto``).
        fits: the chosen plan fits the device.
        qlora_would_fit: LoRA does not fit but QLoRA (4-bit base, CUDA) would; said, never switched to, since
            it changes the trained model.
        plan: the chosen plan.
        message: one line for the job log and the estimate.
    """

    capacity_bytes: int | None
    pass_tokens: int | None
    gradient_checkpointing: bool
    automatic: bool
    fits: bool
    qlora_would_fit: bool = False
    plan: MemoryPlan | None = None
    message: str = ""

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``memory`` entry: the choices and the planned peak."""
        return {"capacity_bytes": self.capacity_bytes, "pass_tokens": self.pass_tokens,
                "gradient_checkpointing": self.gradient_checkpointing, "automatic": self.automatic,
                "fits": self.fits, "qlora_would_fit": self.qlora_would_fit,
                "precision": self.plan.precision if self.plan else None,
                "planned_total_bytes": self.plan.total_bytes if self.plan else None, "message": self.message}


def _halvings(start: int, floor: int) -> list[int]:
    out = [start]
    while out[-1] > floor:
        out.append(max(floor, out[-1] // 2))
    return out


def decide_memory(shape: ModelShape, capacity_bytes: int | None, *, batch_tokens: int, device: str = "cuda",
                  precision: Precision = "bf16", method: Method = "lora", lora_rank: int = 16,
                  pass_tokens: int | None = None, configured_pass_tokens: bool = False, longest_example: int = 0,
                  gradient_checkpointing: bool | Literal["auto"] = "auto") -> MemoryDecision:
    """Choose pass length and gradient checkpointing so that training fits ``capacity_bytes``.

    In order, the first that fits: the settings as they are; shorter passes (the same step, less activation
    memory; only when ``pass_tokens`` was not configured, and never shorter than the longest example, which one
    pass must hold); gradient checkpointing (about a third more compute, activations cut to the layer inputs),
    with the longest passes that then fit. When nothing fits, the smallest plan is returned with ``fits`` False,
    and ``qlora_would_fit`` says whether ``method='qlora'`` would (CUDA, LoRA only).

    Args:
        shape: the model's dimensions.
        capacity_bytes: the device's memory (None: unknown; the settings are kept as they are).
        batch_tokens: tokens of one optimizer step.
        device: ``cuda``, ``cpu`` or ``mps``.
        precision: the resolved precision.
        method: ``lora``, ``qlora`` or ``full``.
        lora_rank: LoRA rank.
        pass_tokens: the pass length the engine would use (None: the whole step).
        configured_pass_tokens: the user set ``pass_tokens``: it is kept.
        longest_example: tokens of the longest training example (a pass cannot be shorter).
        gradient_checkpointing: ``auto`` (on only when needed), or forced on or off.

    Returns:
        The decision.
    """
    start = min(pass_tokens or batch_tokens, batch_tokens)
    floor = min(start, max(MIN_PASS_TOKENS, longest_example))
    lengths = [start] if configured_pass_tokens else _halvings(start, floor)
    auto = gradient_checkpointing == "auto"
    options = [False, True] if auto else [bool(gradient_checkpointing)]
    kw: dict[str, Any] = {"device": device, "precision": precision, "method": method, "lora_rank": lora_rank}
    tried: list[MemoryPlan] = []
    for ckpt in options:
        for tokens in lengths:
            plan = plan_memory(shape, pass_tokens=tokens, gradient_checkpointing=ckpt, **kw)
            tried.append(plan)
            if capacity_bytes is None or plan.fits(capacity_bytes):
                return _decided(plan, capacity_bytes, start, auto, fits=True)
    assert capacity_bytes is not None
    smallest = min(tried, key=lambda p: p.total_bytes)
    qlora = None
    if method == "lora" and device == "cuda":
        qlora = plan_memory(shape, pass_tokens=lengths[-1], gradient_checkpointing=options[-1],
                            **(kw | {"method": "qlora"}))
    hint = None
    if gradient_checkpointing is False:  # switched off by the user: say whether turning it on would do
        with_ckpt = plan_memory(shape, pass_tokens=lengths[-1], gradient_checkpointing=True, **kw)
        if with_ckpt.fits(capacity_bytes):
            hint = f"gradient_checkpointing=true would ({with_ckpt.total_bytes / GIB:.1f} GiB)"
    if hint is None and qlora is not None and qlora.fits(capacity_bytes):
        hint = f"method='qlora' would ({qlora.total_bytes / GIB:.1f} GiB)"
    return _decided(smallest, capacity_bytes, start, auto, fits=False, hint=hint,
                    qlora_fits=qlora is not None and qlora.fits(capacity_bytes))


def _decided(plan: MemoryPlan, capacity: int | None, start: int, auto: bool, *, fits: bool,
             hint: str | None = None, qlora_fits: bool = False) -> MemoryDecision:
    gib = f"{capacity / GIB:.1f} GiB" if capacity is not None else "unknown memory"
    changed = []
    if plan.pass_tokens != start:
        changed.append(f"passes of {plan.pass_tokens} tokens")
    if plan.gradient_checkpointing and auto:
        changed.append("gradient checkpointing on")
    if not fits:
        msg = f"memory plan: even {plan.describe()} does not fit the {gib} here"
        msg += f"; {hint}" if hint else "; a smaller model, a smaller batch_tokens or a larger device is needed"
    elif changed:
        msg = f"memory plan: {' and '.join(changed)} to fit the {gib} here ({plan.describe()})"
    else:
        msg = ""
    return MemoryDecision(capacity_bytes=capacity, pass_tokens=plan.pass_tokens,
                          gradient_checkpointing=plan.gradient_checkpointing, automatic=auto, fits=fits,
                          qlora_would_fit=qlora_fits, plan=plan, message=msg)


def job_memory_decision(model_config: Mapping[str, Any] | Any, config: Any, *, device: str, precision: str,
                        longest_example: int = 0, capacity_bytes: int | None = None) -> MemoryDecision | None:
    """The memory decision of an hf job (its ``[hf]`` options) on a device, before the model is loaded.

    Args:
        model_config: the model's ``transformers`` config or ``config.json`` mapping.
        config: the job's :class:`ftkit_hf.config.HFConfig`.
        device: the resolved device (``cpu``, ``cuda``, ``mps``).
        precision: the resolved precision.
        longest_example: tokens of the longest training example.
        capacity_bytes: the device's memory (None: ``memory_limit_gb``, else :func:`device_memory_bytes`).

    Returns:
        The decision, or None where the plan does not apply (MPS, a model config it does not describe).
    """
    from ftkit_hf.engine.settings import CPU_PASS_TOKENS, CPU_PASS_TOKENS_FP32

    if device == "mps":
        return None
    try:
        shape = ModelShape.from_config(model_config)
    except (ConfigError, ValueError):
        return None
    if capacity_bytes is None:
        capacity_bytes = int(config.memory_limit_gb * GIB) if config.memory_limit_gb else device_memory_bytes(device)
    pass_tokens = config.pass_tokens
    if pass_tokens is None and device == "cpu":
        pass_tokens = CPU_PASS_TOKENS_FP32 if precision == "fp32" else CPU_PASS_TOKENS
    prec: Precision = precision if precision in ("bf16", "fp16", "fp32") else "fp32"  # type: ignore[assignment]
    return decide_memory(shape, capacity_bytes, batch_tokens=config.batch_tokens, device=device, precision=prec,
                         method=config.method, lora_rank=config.lora_r, pass_tokens=pass_tokens,
                         configured_pass_tokens=config.pass_tokens is not None, longest_example=longest_example,
                         gradient_checkpointing=config.gradient_checkpointing)


def gpu_fit_line(model: str, gpu: str, *, gpu_memory_gb: float | None = None, options: Mapping[str, Any] | None = None,
                 longest_example: int = 0) -> str | None:
    """One estimate line: whether an hf job on ``model`` fits a ``gpu`` (for ``ftkit estimate``'s GPU rows).

    The plan uses the job's ``[hf]`` options (defaults where none), the precision the GPU trains in (fp16 on T4 and
    V100, else bf16) and the memory the catalogue gives the GPU; it may shorten passes or turn gradient
    checkpointing on, as the worker would.

    Args:
        model: a model name or local folder (ftkit-hf's; its ``config.json`` is read, nothing is loaded).
        gpu: a GPU name from :data:`ftkit.costs.catalogue.GPUS`.
        gpu_memory_gb: the GPU's memory (None: the catalogue's).
        options: the job's ``[hf]`` options.
        longest_example: tokens of the longest training example (0: unknown).

    Returns:
        The line, or None when the plan cannot tell (the model folder is not there yet, an encoder, a GPU the
        catalogue lacks).
    """
    from ftkit.costs.catalogue import gpu_spec
    from ftkit_hf.config import HFConfig
    from ftkit_hf.models import resolve_model

    try:
        memory = gpu_memory_gb or gpu_spec(gpu).memory_gb
        path = resolve_model(model, convert=False).path
        model_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        config = HFConfig.model_validate(dict(options or {}))
    except (ConfigError, OSError, ValueError):
        return None
    precision = gpu_precision(gpu) if config.precision == "auto" else config.precision
    decision = job_memory_decision(model_config, config, device="cuda", precision=precision,
                                   longest_example=longest_example, capacity_bytes=int(memory * 10**9))
    if decision is None or decision.plan is None:
        return None
    where = f"a {memory:g} GB {gpu} ({precision})"
    if not decision.fits:
        return f"memory: does NOT fit {where}: {decision.message.removeprefix('memory plan: ')}"
    extra = " with gradient checkpointing" if decision.gradient_checkpointing else ""
    if "passes of" in decision.message:
        extra += f" in {decision.pass_tokens}-token passes"
    return f"memory: fits {where}{extra}, about {decision.plan.total_bytes / GIB:.1f} GiB at the peak"
