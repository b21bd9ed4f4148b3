"""Saving a LoRA-trained model as a plain transformers model (adapter merged into the base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.errors import ConfigError


def merge_adapter(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """Fold the LoRA weights of a PEFT model into its base and save it with the tokenizer.

    The result loads with ``AutoModelForCausalLM.from_pretrained(out)`` (or the sequence-
    classification class) and needs neither peft nor ftkit.
    """
    import torch

    if not hasattr(model, "merge_and_unload"):
        raise ConfigError("this model has no adapter to merge (was it trained with method='full'?)")
    merged = model.merge_and_unload()
    out = Path(out)
    merged.to(torch.bfloat16 if _is_bf16_safe(merged) else torch.float32).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def merge_job_model(model_dir: str | Path, out: str | Path) -> Path:
    """Merge the adapter a finished job left in ``model_dir`` into its base model; save to ``out``."""
    import json

    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{model_dir} holds no LoRA adapter (adapter_config.json missing)")
    meta = json.loads((model_dir / "ftkit-hf.json").read_text(encoding="utf-8"))
    auto = AutoPeftModelForSequenceClassification if meta.get("kind") == "encoder" else AutoPeftModelForCausalLM
    model = auto.from_pretrained(str(model_dir))
    return merge_adapter(model, AutoTokenizer.from_pretrained(str(model_dir)), out)


def _is_bf16_safe(model: Any) -> bool:
    # Keep what the base was stored in: default models are stored in bf16, user models may be fp32.
    dtype = getattr(model.config, "torch_dtype", None) or getattr(model.config, "dtype", None)
    return str(dtype).endswith("bfloat16")
