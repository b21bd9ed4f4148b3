"""The one FLOPs model of training and scoring speed, used wherever nothing was measured.

Training a transformer costs about ``4·N`` FLOPs per token with LoRA (forward ``2N`` plus the gradients
through the activations ``2N``; frozen weights need no weight gradients), ``6·N`` with full fine-tuning,
and scoring (a forward pass) ``2·N`` (facts/performance.md §4; attention and the adapters add a few
percent, ignored here). Speed is then a device's sustained FLOP/s divided by that: the sustained figures
per device class are in :data:`ftkit.costs.catalogue.SUSTAINED_FLOPS`, a catalogued GPU's peak times the
assumed utilisation where the GPU is known.
"""

from __future__ import annotations

from ftkit.costs.catalogue import DEFAULT_MFU, GPUS, SUSTAINED_FLOPS, gpu_spec

FLOPS_PER_PARAMETER = {"lora": 4.0, "qlora": 4.0, "full": 6.0, "scoring": 2.0}
"""FLOPs per token per model parameter: training by method, and scoring (forward only)."""


def flops_per_token(parameters: float, method: str = "lora") -> float:
    """FLOPs to train on (or, with ``method="scoring"``, to score) one token."""
    return FLOPS_PER_PARAMETER.get(method, FLOPS_PER_PARAMETER["lora"]) * parameters


def tokens_per_second(parameters: float, flops: float, *, method: str = "lora", mfu: float = 1.0) -> float:
    """Tokens per second from sustained FLOP/s: ``mfu × flops ÷ flops_per_token``."""
    return mfu * flops / flops_per_token(parameters, method)


def sustained_flops(
    device: str, precision: str = "bf16", gpu: str | None = None, mfu: float = DEFAULT_MFU
) -> tuple[float, str]:
    """A device's sustained FLOP/s for training, and where the figure comes from.

    Args:
        device: ``cpu``, ``cuda`` or ``mps``.
        precision: ``bf16``, ``fp16`` or ``fp32`` (matters on CPUs: bf16 runs on AMX / AVX512-BF16 units).
        gpu: the CUDA GPU's name; a catalogued one is priced at ``mfu`` × its peak.
        mfu: model FLOP utilisation on a catalogued GPU.
    """
    if device == "cuda" and gpu:
        known = next((name for name in GPUS if name.lower() in gpu.lower() or gpu.lower() in name.lower()), None)
        if known:
            spec = gpu_spec(known)
            return mfu * spec.bf16_tflops * 1e12, f"{mfu:.0%} of {spec.name}'s {spec.bf16_tflops:g} bf16 TFLOP/s"
    key = f"cpu-{precision}" if device == "cpu" else device
    flops = SUSTAINED_FLOPS.get(key, SUSTAINED_FLOPS["cpu-fp32"])
    return flops, f"{flops / 1e12:g} TFLOP/s sustained, the default for {key} [guess, not measured here]"
