"""The price catalogue: every number with the date it was seen and where.

Prices move. Each entry carries ``as_of`` and ``source`` so an estimate can print where its
numbers come from, and a user can override any of them in the ``[costs]`` section of the config
(see :class:`ftkit.costs.CostSettings`). Rental prices are ranges: marketplace prices (vast.ai,
RunPod community/spot) float with supply and demand.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftkit.data.targets import OPENAI_ALIASES
from ftkit.errors import ConfigError

# Prices feed the max_cost guard and the estimates: a catalogue number is finite and (but for a few
# marked "0: included") above zero, whether it comes from this file or a user's override.
_PRICES = ConfigDict(frozen=True, allow_inf_nan=False)

_OPENAI_PRICING = (
    "OpenAI pricing page (two copies, one taken after the 2026-05-07 fine-tuning wind-down notice; "
    "the same numbers appear in 2025 copies), via shared/facts/openai-fine-tuning.md §8"
)


class OpenAIPrice(BaseModel):
    """OpenAI fine-tuning prices for one base model, USD per 1M tokens unless marked."""

    model_config = _PRICES

    model: str
    training_per_mtok: float | None = Field(gt=0, description="Training, per 1M billed tokens (None: billed per hour).")
    training_per_hour: float | None = Field(default=None, gt=0, description="Training per hour (RFT only).")
    input_per_mtok: float = Field(gt=0, description="Inference on the fine-tuned model: input.")
    cached_input_per_mtok: float | None = Field(default=None, gt=0, description="Cached input.")
    output_per_mtok: float = Field(gt=0, description="Inference on the fine-tuned model: output.")
    batch_input_per_mtok: float | None = Field(default=None, gt=0, description="Batch API input (fine-tuned model).")
    batch_output_per_mtok: float | None = Field(default=None, gt=0, description="Batch API output (fine-tuned model).")
    as_of: str = "2026-05"
    source: str = _OPENAI_PRICING


OPENAI_PRICES: dict[str, OpenAIPrice] = {
    p.model: p
    for p in [
        OpenAIPrice(
            model="gpt-4.1-2025-04-14",
            training_per_mtok=25.0,
            input_per_mtok=3.0,
            cached_input_per_mtok=0.75,
            output_per_mtok=12.0,
            batch_input_per_mtok=1.5,
            batch_output_per_mtok=6.0,
        ),
        OpenAIPrice(
            model="gpt-4.1-mini-2025-04-14",
            training_per_mtok=5.0,
            input_per_mtok=0.8,
            cached_input_per_mtok=0.2,
            output_per_mtok=3.2,
            batch_input_per_mtok=0.4,
            batch_output_per_mtok=1.6,
        ),
        OpenAIPrice(
            model="gpt-4.1-nano-2025-04-14",
            training_per_mtok=1.5,
            input_per_mtok=0.2,
            cached_input_per_mtok=0.05,
            output_per_mtok=0.8,
            batch_input_per_mtok=0.1,
            batch_output_per_mtok=0.4,
        ),
        # The scraped batch row for gpt-4o-2024-08-06 is not half the standard price: left out as uncertain.
        OpenAIPrice(
            model="gpt-4o-2024-08-06",
            training_per_mtok=25.0,
            input_per_mtok=3.75,
            cached_input_per_mtok=1.875,
            output_per_mtok=15.0,
        ),
        OpenAIPrice(
            model="gpt-4o-mini-2024-07-18",
            training_per_mtok=3.0,
            input_per_mtok=0.3,
            cached_input_per_mtok=0.15,
            output_per_mtok=1.2,
            batch_input_per_mtok=0.15,
            batch_output_per_mtok=0.6,
        ),
        OpenAIPrice(
            model="gpt-3.5-turbo",
            training_per_mtok=8.0,
            input_per_mtok=3.0,
            output_per_mtok=6.0,
            batch_input_per_mtok=1.5,
            batch_output_per_mtok=3.0,
        ),
        OpenAIPrice(model="davinci-002", training_per_mtok=6.0, input_per_mtok=12.0, output_per_mtok=12.0),
        OpenAIPrice(model="babbage-002", training_per_mtok=0.4, input_per_mtok=1.6, output_per_mtok=1.6),
        OpenAIPrice(
            model="o4-mini-2025-04-16",
            training_per_mtok=None,
            training_per_hour=100.0,
            input_per_mtok=4.0,
            cached_input_per_mtok=1.0,
            output_per_mtok=16.0,
            batch_input_per_mtok=2.0,
            batch_output_per_mtok=8.0,
        ),
    ]
}


def openai_price(model: str) -> OpenAIPrice:
    """The price entry of an OpenAI model: a dated name, an alias, or an ``ft:`` model built on one.

    Raises:
        ConfigError: the catalogue has no price for the model (the message lists those it has).
    """
    base = model.removeprefix("ft:").split(":")[0]
    base = OPENAI_ALIASES.get(base, base)
    if base in OPENAI_PRICES:
        return OPENAI_PRICES[base]
    for name in OPENAI_PRICES:  # gpt-3.5-turbo-0125 and friends share one price
        if base.startswith(name):
            return OPENAI_PRICES[name]
    raise ConfigError(f"no OpenAI price for model {model!r}; known: {', '.join(OPENAI_PRICES)}")


class GpuSpec(BaseModel):
    """What a GPU can do and draw: peak dense bf16 throughput and board power."""

    model_config = _PRICES

    name: str
    bf16_tflops: float = Field(gt=0, description="Peak dense bf16 tensor TFLOP/s (no sparsity).")
    watts: float = Field(gt=0, description="Board power (TDP), W.")
    memory_gb: int = Field(gt=0)
    source: str


_NV = "NVIDIA data sheet"
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in [
        GpuSpec(name="H200", bf16_tflops=989, watts=700, memory_gb=141, source=f"{_NV} (same compute as H100 SXM)"),
        GpuSpec(
            name="H100 SXM",
            bf16_tflops=989,
            watts=700,
            memory_gb=80,
            source=f"{_NV}; 798 measured on an 8192³ matmul (facts/performance.md §4.1)",
        ),
        GpuSpec(name="H100 PCIe", bf16_tflops=756, watts=350, memory_gb=80, source=f"{_NV} [unverified]"),
        GpuSpec(name="A100 80GB", bf16_tflops=312, watts=400, memory_gb=80, source=f"{_NV} (SXM; PCIe 300 W)"),
        GpuSpec(name="A100 40GB", bf16_tflops=312, watts=400, memory_gb=40, source=_NV),
        GpuSpec(name="L40S", bf16_tflops=362, watts=350, memory_gb=48, source=f"{_NV}; facts/performance.md §4.3"),
        GpuSpec(name="RTX 6000 Ada", bf16_tflops=364, watts=300, memory_gb=48, source=f"{_NV} [unverified]"),
        GpuSpec(name="RTX A6000", bf16_tflops=154.8, watts=300, memory_gb=48, source="facts/performance.md §4.3"),
        GpuSpec(name="RTX 4090", bf16_tflops=165, watts=450, memory_gb=24, source="facts/performance.md §4.3"),
        GpuSpec(name="RTX 3090", bf16_tflops=71, watts=350, memory_gb=24, source=f"{_NV} [unverified]"),
        GpuSpec(name="A10", bf16_tflops=125, watts=150, memory_gb=24, source=_NV),
        GpuSpec(name="L4", bf16_tflops=121, watts=72, memory_gb=24, source=_NV),
        # No bf16 on Volta and Turing: ftkit trains there in fp16 with loss scaling, so the number is the dense fp16
        # tensor peak.
        GpuSpec(
            name="V100 32GB",
            bf16_tflops=125,
            watts=300,
            memory_gb=32,
            source=f"{_NV}: no bf16, fp16 tensor peak (SXM2; PCIe 112 TFLOP/s at 250 W)",
        ),
        GpuSpec(
            name="V100 16GB",
            bf16_tflops=125,
            watts=300,
            memory_gb=16,
            source=f"{_NV}: no bf16, fp16 tensor peak (SXM2; PCIe 112 TFLOP/s at 250 W)",
        ),
        GpuSpec(name="T4", bf16_tflops=65, watts=70, memory_gb=16, source=f"{_NV}: no bf16, fp16 tensor peak"),
    ]
}


class GpuRate(BaseModel):
    """What renting one GPU costs at one provider: a range in USD per GPU-hour."""

    model_config = _PRICES

    provider: str
    gpu: str
    low: float = Field(gt=0, description="Lowest USD per GPU-hour seen (spot / interruptible / community).")
    high: float = Field(gt=0, description="Highest USD per GPU-hour seen (on-demand / secure).")
    as_of: str
    source: str

    @model_validator(mode="after")
    def _ordered(self) -> GpuRate:
        if self.low > self.high:
            raise ValueError(f"{self.provider} {self.gpu}: low ${self.low}/h is above high ${self.high}/h")
        return self

    @property
    def mid(self) -> float:
        """The middle of the range: what estimates use unless told otherwise."""
        return (self.low + self.high) / 2


_LAMBDA = "techbytes.app 'Serverless GPU Pricing Matrix' (prices verified from Lambda's pricing page)"
_RUNPOD = "deploybase.ai 'RunPod GPU Pricing: 2026' (spot low, on-demand high)"
_VAST = "fairlane.systems 'Vast.ai' marketplace survey (interruptible low, on-demand high)"
_VAST_JUNE = "usagepricing.com Vast.ai blueprint (on-demand marketplace rates)"
GPU_RATES: list[GpuRate] = [
    GpuRate(provider="lambda", gpu="H100 SXM", low=3.78, high=3.78, as_of="2026-05-07", source=_LAMBDA),
    GpuRate(provider="lambda", gpu="H100 PCIe", low=2.86, high=2.86, as_of="2026-05-07", source=_LAMBDA),
    GpuRate(provider="lambda", gpu="A100 40GB", low=1.48, high=1.48, as_of="2026-05-07", source=_LAMBDA),
    GpuRate(provider="lambda", gpu="A10", low=0.86, high=0.86, as_of="2026-05-07", source=_LAMBDA),
    GpuRate(provider="runpod", gpu="H200", low=3.59, high=6.35, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="H100 SXM", low=2.69, high=4.76, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="H100 PCIe", low=1.99, high=3.51, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="A100 80GB", low=1.19, high=2.45, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="L40S", low=0.79, high=1.40, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="RTX 4090", low=0.34, high=0.60, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="RTX 3090", low=0.22, high=0.39, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="runpod", gpu="L4", low=0.44, high=0.78, as_of="2026-03", source=_RUNPOD),
    GpuRate(provider="vast", gpu="H200", low=3.50, high=3.50, as_of="2026-05", source=_VAST),
    GpuRate(provider="vast", gpu="H100 SXM", low=1.85, high=2.50, as_of="2026-05", source=_VAST),
    GpuRate(provider="vast", gpu="A100 80GB", low=0.78, high=1.205, as_of="2026-06", source=f"{_VAST}; {_VAST_JUNE}"),
    GpuRate(provider="vast", gpu="RTX A6000", low=0.55, high=0.55, as_of="2026-05", source=_VAST),
    GpuRate(provider="vast", gpu="RTX 4090", low=0.31, high=0.875, as_of="2026-06", source=f"{_VAST}; {_VAST_JUNE}"),
    GpuRate(provider="vast", gpu="RTX 3090", low=0.18, high=0.30, as_of="2026-05", source=_VAST),
    GpuRate(
        provider="vast",
        gpu="T4",
        low=0.20,
        high=0.76,
        as_of="2026-03",
        source="deploybase.ai 'Tesla T4 Price' (the range across cloud providers, not vast's alone) [unverified]",
    ),
    GpuRate(
        provider="runpod",
        gpu="V100 32GB",
        low=0.29,
        high=0.29,
        as_of="2026",
        source="theneuralbase.com 'RunPod: Pricing per GB' (community V100 32GB rate quoted there) [unverified]",
    ),
]


class ProviderOverhead(BaseModel):
    """What a rented machine costs besides GPU time: start-up and storage."""

    model_config = _PRICES

    provider: str
    startup_minutes: float = Field(gt=0, description="From create to a worker running: boot, image pull, setup.")
    storage_usd_per_gb_month: float = Field(ge=0, description="Disk while the machine exists (0: included).")
    source: str


PROVIDERS: dict[str, ProviderOverhead] = {
    p.provider: p
    for p in [
        ProviderOverhead(
            provider="lambda",
            startup_minutes=10.0,
            storage_usd_per_gb_month=0.0,
            source="238-333 s to active (3rd-party benchmark, facts/remote-gpu-providers.md §3.3) + "
            "~5 min environment setup and base-model download [guess]; disk is in the price",
        ),
        ProviderOverhead(
            provider="runpod",
            startup_minutes=8.0,
            storage_usd_per_gb_month=0.10,
            source="1-5 min to runtime [?] (facts §2.7) + ~5 min setup [guess]; container disk "
            "$0.10/GB/month (facts §2.5)",
        ),
        ProviderOverhead(
            provider="vast",
            startup_minutes=8.0,
            storage_usd_per_gb_month=0.15,
            source="'Loading' ~30 s with cached images, longer on slow hosts (facts §1.8) + ~5 min setup "
            "[guess]; storage is host-set, $0.10-0.20/GB/month typical [guess]",
        ),
        ProviderOverhead(
            provider="ssh",
            startup_minutes=5.0,
            storage_usd_per_gb_month=0.0,
            source="your own machine: setup only [guess]",
        ),
    ]
}


class Electricity(BaseModel):
    """Local running costs: what a kWh costs and what the device draws."""

    model_config = _PRICES

    usd_per_kwh: float = Field(gt=0)
    as_of: str
    source: str


ELECTRICITY = Electricity(
    usd_per_kwh=0.17,
    as_of="2025",
    source="approximate US average residential price (EIA Electric Power Monthly, 2025); set [costs] usd_per_kwh",
)
DEVICE_WATTS: dict[str, float] = {"cpu": 65.0, "mps": 40.0, "cuda": 350.0}
"""Default draw of a local device class, W: a laptop CPU package, an Apple GPU, a desktop GPU [guess]."""

SUSTAINED_FLOPS: dict[str, float] = {
    "cpu-bf16": 3.2e11,
    "cpu-fp32": 1.5e11,
    "cpu-fp16": 1.5e11,  # as fp32: AVX512-FP16 CPUs are faster, others emulate
    "mps": 5e12,
    "cuda": 1.0e14,
}
"""Sustained training FLOP/s per local device class where the device is not catalogued.

The CPU figures are calibrated on ~600 tokens/s of SmolLM2-135M LoRA (bf16 on AMX, 2 cores:
facts/performance.md §5.0, 600 × 4 × 135M ≈ 3.2e11); the GPU figures are [guess]es. A measured
speed replaces them.
"""

CPU_SUSTAINED_FLOPS = SUSTAINED_FLOPS["cpu-bf16"]
"""A CPU's sustained training FLOP/s (bf16), for the catalogue formulas."""

DEFAULT_MFU = 0.10
"""Model FLOP utilisation assumed for LoRA on a rented GPU.

Anchors (facts/performance.md §1, §4, §7.2): HF Trainer + PEFT measured 2-4% on an H100 for a 0.5B
model, Unsloth 8-10%, Surogate 20-25%; ftkit's engine aims at ≥10%. Set ``[costs] mfu`` or
``remote_tokens_per_second`` once a first run has measured it.
"""


# Parameters of common open models (N_matmul, facts/performance.md §4.3, or the model card).
MODEL_PARAMS: dict[str, float] = {
    "smollm2-135m": 135e6,
    "smollm2-360m": 362e6,
    "smollm2-1.7b": 1.71e9,
    "qwen2.5-0.5b": 494e6,
    "qwen2.5-1.5b": 1544e6,
    "qwen3-0.6b": 596e6,
    "qwen3-1.7b": 1720e6,
    "qwen3-4b": 4022e6,
    "qwen3-8b": 7568e6,
    "llama-3.2-1b": 1236e6,
    "llama-3.2-3b": 3213e6,
    "llama-3.1-8b": 7505e6,
    "gemma3-270m": 270e6,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bm])\b", re.I)


def model_parameters(model: str) -> float:
    """Parameters of a model, from the catalogue or its name ("...-7B", "...135m").

    Raises:
        ConfigError: neither the catalogue nor the name tells; set ``[costs] model_parameters``.
    """
    key = model.lower().rstrip("/").split("/")[-1]
    for name, n in MODEL_PARAMS.items():
        if key.startswith(name) or name in key:
            return n
    m = _SIZE.search(key.replace("_", "-"))
    if m:
        return float(m.group(1)) * (1e9 if m.group(2).lower() == "b" else 1e6)
    raise ConfigError(f"cannot tell the size of model {model!r}; set model_parameters in the [costs] section")


def gpu_spec(name: str) -> GpuSpec:
    """A GPU by name, case- and space-insensitive ("h100 sxm", "RTX4090")."""
    want = name.replace(" ", "").lower()
    for g in GPUS.values():
        if g.name.replace(" ", "").lower() == want:
            return g
    raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")


def gpu_rates(gpu: str | None = None, provider: str | None = None) -> list[GpuRate]:
    """Rental rates, optionally for one GPU and/or one provider."""
    want = gpu_spec(gpu).name if gpu else None
    return [r for r in GPU_RATES if (want is None or r.gpu == want) and (provider is None or r.provider == provider)]


# ---------------------------------------------------------------------------------------------- model lifetimes

_SHUTDOWN_SOURCE = (
    "third-party reports of OpenAI's deprecation schedule (2026), via shared/facts/openai-fine-tuning.md §1, "
    "marked UNCERTAIN there; the models API's shutdown_date, where it gives one, takes precedence"
)


class ModelShutdown(BaseModel):
    """When an OpenAI base snapshot (and with it every fine-tune built on it) stops answering."""

    model_config = ConfigDict(frozen=True)

    model: str
    date: str = Field(description="ISO date from which the model no longer answers.")
    as_of: str = "2026-11"
    source: str = _SHUTDOWN_SOURCE


OPENAI_SHUTDOWNS: dict[str, ModelShutdown] = {
    s.model: s
    for s in [
        ModelShutdown(model="gpt-4.1-nano-2025-04-14", date="2026-10-23"),
        ModelShutdown(model="gpt-4o-2024-08-06", date="2027-01-14"),
        ModelShutdown(model="gpt-4o-mini-2024-07-18", date="2027-01-14"),
        ModelShutdown(model="gpt-4.1-2025-04-14", date="2027-01-14"),
        ModelShutdown(model="gpt-4.1-mini-2025-04-14", date="2027-01-14"),
    ]
}


def openai_shutdown(model: str) -> ModelShutdown | None:
    """The catalogue's shutdown date for a base model, an alias, or an ``ft:`` model built on one; None if unknown."""
    base = model.removeprefix("ft:").split(":")[0]
    return OPENAI_SHUTDOWNS.get(OPENAI_ALIASES.get(base, base))
