"""Cost formulas for OpenAI, local and rented-GPU training, shared by the backends and ``ftkit estimate``.

Each function returns a :class:`ftkit.CostEstimate` whose ``assumptions`` say how it was computed,
so a backend's ``estimate()`` can call them and the numbers read the same everywhere:

- OpenAI: billed tokens per epoch × epochs × the training price (OpenAI's own formula).
- Local: tokens ÷ tokens per second = hours; hours × watts × price per kWh = dollars.
- Remote: (start-up + tokens ÷ tokens per second) × hourly rate, plus disk for that time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ftkit.backend import CostEstimate
from ftkit.costs.catalogue import (
    DEFAULT_MFU,
    DEVICE_WATTS,
    ELECTRICITY,
    PROVIDERS,
    gpu_rates,
    gpu_spec,
    openai_price,
)
from ftkit.costs.flops import sustained_flops, tokens_per_second
from ftkit.errors import ConfigError

__all__ = [
    "CostSettings",
    "estimate_local",
    "estimate_openai",
    "estimate_openai_inference",
    "estimate_remote",
    "openai_epochs",
    "tokens_per_second",
]

# OpenAI's epoch heuristic for n_epochs="auto" (cookbook, facts/openai-fine-tuning.md §7.6).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

PricePoint = Literal["low", "mid", "high"]


class CostSettings(BaseModel):
    """The ``[costs]`` section of a config: overrides for the catalogue's assumptions.

    Example (``ftkit.toml``)::

        [costs]
        usd_per_kwh = 0.32        # your electricity tariff
        device_watts = 45         # what your laptop draws while training
        gpus = ["RTX 4090", "H100 SXM"]
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # an inf price or speed would void the estimate

    usd_per_kwh: float = Field(default=ELECTRICITY.usd_per_kwh, gt=0, description="Local electricity price, USD/kWh.")
    device_watts: float | None = Field(default=None, gt=0, description="Local device draw while training, W.")
    local_device: Literal["cpu", "cuda", "mps"] = Field(default="cpu", description="Local device class.")
    local_tokens_per_second: float | None = Field(default=None, gt=0, description="Measured local training speed.")
    remote_tokens_per_second: float | None = Field(default=None, gt=0, description="Measured remote training speed.")
    model_parameters: float | None = Field(default=None, gt=0, description="Parameters of the open model.")
    mfu: float = Field(default=DEFAULT_MFU, gt=0, le=1, description="Model FLOP utilisation assumed on GPUs.")
    gpus: list[str] = Field(
        default_factory=lambda: ["RTX 4090", "A100 80GB", "H100 SXM"],
        description="GPU types to price for remote training.",
    )
    providers: list[str] | None = Field(default=None, description="Providers to price (default: all catalogued).")
    price: PricePoint = Field(default="mid", description="Which end of a rental price range to use.")
    startup_minutes: float | None = Field(default=None, ge=0, description="Override the provider's start-up time.")
    disk_gb: float = Field(default=50.0, ge=0, description="Disk rented with the machine, GB.")
    openai_model: str = Field(default="gpt-4.1-mini-2025-04-14", description="OpenAI model to price.")
    eval_output_tokens: int = Field(default=1, ge=0, description="Answer tokens per test example (1 for a label).")


def openai_epochs(n_examples: int, epochs: int | None = None) -> int:
    """The epochs OpenAI trains for: ``epochs`` when set, else its "auto" heuristic.

    Three epochs, raised for small files so examples × epochs ≥ 100, lowered for big ones so
    examples × epochs ≤ 25,000, always within 1..25.
    """
    if epochs is not None:
        return epochs
    if n_examples <= 0:
        raise ConfigError("cannot estimate epochs for an empty training file")
    n = TARGET_EPOCHS
    if n_examples * n < MIN_TARGET_EXAMPLES:
        n = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * n > MAX_TARGET_EXAMPLES:
        n = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return n


def estimate_openai(
    billed_tokens_per_epoch: int, n_examples: int, model: str, epochs: int | None = None
) -> CostEstimate:
    """OpenAI training cost: billed tokens per epoch × epochs × price per token.

    Args:
        billed_tokens_per_epoch: tokens OpenAI bills for one pass (``ftkit stats --target openai:MODEL``).
        n_examples: training examples (for the epoch heuristic).
        model: the base model (dated name, alias or ``ft:`` model).
        epochs: the epochs asked for; None applies OpenAI's "auto" heuristic.

    Raises:
        ConfigError: no price for the model, or it is billed per hour (RFT).
    """
    price = openai_price(model)
    n_epochs = openai_epochs(n_examples, epochs)
    if price.training_per_mtok is None:
        raise ConfigError(
            f"{price.model} is billed per training hour (${price.training_per_hour}/h): "
            "its cost depends on wall time, which cannot be estimated from tokens"
        )
    billed = billed_tokens_per_epoch * n_epochs
    usd = billed * price.training_per_mtok / 1e6
    how = "given" if epochs is not None else f"OpenAI's auto heuristic for {n_examples} examples"
    return CostEstimate(
        usd=usd,
        hours=None,
        billed_tokens=billed,
        assumptions=[
            f"{billed_tokens_per_epoch:,} billed tokens/epoch × {n_epochs} epochs ({how}) = {billed:,} tokens",
            f"${price.training_per_mtok}/1M training tokens for {price.model} (as of {price.as_of}; {price.source})",
            "wall time is OpenAI's queue plus training: not estimated",
        ],
    )


def estimate_openai_inference(
    input_tokens: int, output_tokens: int, model: str, *, batch: bool = False
) -> CostEstimate:
    """Cost of answering a test set with a fine-tuned OpenAI model (synchronous or Batch API)."""
    price = openai_price(model)
    if batch and price.batch_input_per_mtok is not None and price.batch_output_per_mtok is not None:
        inp, out, how = price.batch_input_per_mtok, price.batch_output_per_mtok, "Batch API"
    else:
        inp, out, how = price.input_per_mtok, price.output_per_mtok, "synchronous"
    usd = (input_tokens * inp + output_tokens * out) / 1e6
    return CostEstimate(
        usd=usd,
        hours=None,
        billed_tokens=input_tokens + output_tokens,
        assumptions=[
            f"{input_tokens:,} input tokens × ${inp}/1M + {output_tokens:,} output tokens × ${out}/1M "
            f"({how} price of fine-tuned {price.model}, as of {price.as_of})"
        ],
    )


def estimate_local(
    tokens: int,
    tokens_per_second: float,
    watts: float,
    usd_per_kwh: float,
    *,
    speed_source: str = "given",
    what: str = "training",
) -> CostEstimate:
    """Local training (or, with ``what="evaluation"``, scoring): hours from the speed, dollars from the
    electricity used (hardware not counted)."""
    if tokens_per_second <= 0:
        raise ConfigError("tokens_per_second must be positive")
    hours = tokens / tokens_per_second / 3600
    usd = watts / 1000 * hours * usd_per_kwh
    return CostEstimate(
        usd=usd,
        hours=hours,
        billed_tokens=tokens,
        assumptions=[
            f"{tokens:,} {what} tokens at {tokens_per_second:,.0f} tokens/s ({speed_source}) = {hours:.3f} h",
            f"{watts:.0f} W × {hours:.3f} h × ${usd_per_kwh}/kWh; electricity only, hardware not counted",
        ],
    )


def estimate_remote(
    tokens: int,
    tokens_per_second: float,
    gpu: str,
    provider: str,
    *,
    startup_minutes: float | None = None,
    disk_gb: float = 50.0,
    usd_per_hour: float | None = None,
    price: PricePoint = "mid",
    gpus: int = 1,
    speed_source: str = "given",
) -> CostEstimate:
    """Rented-GPU training: (start-up + training time) × hourly rate, plus disk for that time.

    Args:
        tokens: training tokens (all epochs).
        tokens_per_second: training speed on this GPU (all GPUs together).
        gpu: GPU type, e.g. "H100 SXM" (see ``ftkit.costs.GPUS``).
        provider: ``vast``, ``runpod``, ``lambda`` or ``ssh``.
        startup_minutes: boot + setup time billed before training; defaults to the provider's.
        disk_gb: disk rented with the machine.
        usd_per_hour: a known price per GPU-hour (e.g. the offer picked); default: the catalogue range.
        price: which end of the catalogue range to use.
        gpus: GPUs rented.

    Raises:
        ConfigError: unknown provider, or no catalogued rate and no ``usd_per_hour``.
    """
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
    over = PROVIDERS[provider]
    spec = gpu_spec(gpu)
    notes = []
    if usd_per_hour is None:
        rates = gpu_rates(spec.name, provider)
        if not rates:
            raise ConfigError(f"no catalogued {spec.name} rate at {provider}; pass usd_per_hour")
        rate = rates[0]
        usd_per_hour = {"low": rate.low, "mid": rate.mid, "high": rate.high}[price]
        notes.append(
            f"{spec.name} at {provider}: ${rate.low}-{rate.high}/GPU-h, using {price} ${usd_per_hour:.3f} "
            f"(as of {rate.as_of}; {rate.source})"
        )
    else:
        notes.append(f"{spec.name} at {provider}: ${usd_per_hour}/GPU-h (given)")
    start = over.startup_minutes if startup_minutes is None else startup_minutes
    train_hours = tokens / tokens_per_second / 3600
    hours = train_hours + start / 60
    gpu_usd = usd_per_hour * gpus * hours
    disk_usd = disk_gb * over.storage_usd_per_gb_month / 720 * hours
    return CostEstimate(
        usd=gpu_usd + disk_usd,
        hours=hours,
        billed_tokens=tokens,
        assumptions=[
            f"{tokens:,} training tokens at {tokens_per_second:,.0f} tokens/s ({speed_source}) = {train_hours:.3f} h",
            f"+ {start:g} min start-up ({over.source})",
            *notes,
            f"{gpus} GPU × {hours:.3f} h = ${gpu_usd:.4f}; disk {disk_gb:g} GB × "
            f"${over.storage_usd_per_gb_month}/GB-month for {hours:.3f} h = ${disk_usd:.4f}",
        ],
    )


def local_speed(parameters: float, settings: CostSettings, method: str = "lora") -> tuple[float, str]:
    """Local training tokens/s: the configured figure, or one derived from the device class."""
    if settings.local_tokens_per_second:
        return settings.local_tokens_per_second, "from [costs] local_tokens_per_second"
    flops, what = sustained_flops(settings.local_device)
    return tokens_per_second(parameters, flops, method=method), f"{what}, {parameters / 1e6:,.0f}M parameters"


def local_watts(settings: CostSettings) -> float:
    """The local device's draw: configured, or the device class default."""
    return settings.device_watts or DEVICE_WATTS[settings.local_device]


def remote_speed(parameters: float, gpu: str, settings: CostSettings, method: str = "lora") -> tuple[float, str]:
    """Remote training tokens/s: the configured figure, or FLOPs at the assumed utilisation."""
    if settings.remote_tokens_per_second:
        return settings.remote_tokens_per_second, "from [costs] remote_tokens_per_second"
    spec = gpu_spec(gpu)
    tps = tokens_per_second(parameters, spec.bf16_tflops * 1e12, method=method, mfu=settings.mfu)
    how = (
        f"{settings.mfu:.0%} of {spec.name}'s {spec.bf16_tflops:g} bf16 TFLOP/s, {parameters / 1e6:,.0f}M params; "
        "HF Trainer+PEFT reaches 2-4%, tuned engines 8-25%: set [costs] mfu once measured"
    )
    return tps, how
