"""Run in a fresh process by test_memory_plan.py: train a random Llama on CPU, print the measured and predicted peak.

The process's high-water mark of resident memory (``VmHWM``, kept by the kernel, so no sampling gap) minus
its resident memory just before the model is built is the training run's own peak: weights, LoRA and AdamW
state, activations, the LM head's buffers. Not ``ru_maxrss``: Linux carries that across fork and exec, so a
child of a large process (a test run that has loaded a model) reports its parent's size.
Usage: ``python memory_peak.py PRECISION PASS_TOKENS [checkpointing]`` (the last: gradient checkpointing on).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import torch
from ftkit_hf.engine import EngineSettings, train
from ftkit_hf.engine.recompute import enable_gradient_checkpointing
from ftkit_hf.engine.settings import IGNORE_INDEX, TokenizedExample
from ftkit_hf.engine.testing import LORA_TARGETS
from ftkit_hf.memory_plan import ModelShape, plan_memory
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPE: dict[str, Any] = dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
                             max_position_embeddings=4096)


def _high_water_mark() -> int:
    """This process's own peak resident memory in bytes (``VmHWM`` belongs to its address space, not inherited)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main(precision: str, pass_tokens: int, checkpointing: bool = False) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # Four examples of pass_tokens / 4 tokens, the loss on the second half of each: one pass per step.
    length = pass_tokens // 4
    examples = []
    for k in range(8):
        ids = torch.randint(3, SHAPE["vocab_size"], (length,), generator=torch.Generator().manual_seed(k)).tolist()
        examples.append(TokenizedExample(ids, [IGNORE_INDEX] * (length // 2) + ids[length // 2:]))
    before = psutil.Process().memory_info().rss
    cfg = LlamaConfig(**SHAPE)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    if checkpointing:
        assert enable_gradient_checkpointing(model)
    settings = EngineSettings(device="cpu", precision=precision, batch_tokens=pass_tokens, pass_tokens=pass_tokens,
                              max_batch_examples=4, max_steps=2, threads=1)
    with tempfile.TemporaryDirectory() as ckpt:
        losses: list[float] = []
        train(model, examples, None, settings, checkpoint_dir=Path(ckpt),
              on_event=lambda e: losses.append(e["train_loss"]) if e.get("kind") == "metrics" else None)
    peak = _high_water_mark()
    plan = plan_memory(ModelShape.from_config(cfg), device="cpu", precision=precision,  # type: ignore[arg-type]
                       pass_tokens=pass_tokens, target_fraction=0.5, gradient_checkpointing=checkpointing)
    print(json.dumps({"measured_bytes": peak - before, "plan": plan.model_dump(), "losses": losses}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["checkpointing"])
