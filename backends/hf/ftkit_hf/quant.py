"""QLoRA: a 4-bit NF4 base model via bitsandbytes (CUDA only)."""

from __future__ import annotations

import importlib.util
from typing import Any

from ftkit.errors import BackendUnavailableError


def qlora_unavailable_reason() -> str | None:
    """Why QLoRA cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return ("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
                "Use method='lora' (or 'full') on CPU and MPS.")
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs the bitsandbytes package: pip install bitsandbytes (or use method='lora')."
    return None


def qlora_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that load the base in 4-bit NF4 with bf16 compute."""
    reason = qlora_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    import torch
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": quant, "dtype": torch.bfloat16, "device_map": {"": 0}}
