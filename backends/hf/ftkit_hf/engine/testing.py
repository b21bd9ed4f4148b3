"""Small real models and data for tests of the engine and of code built on it (no downloads).

The models are real transformers architectures with random weights, small enough that a training step
takes milliseconds on a CPU, wrapped in a real PEFT LoRA adapter.
"""

from __future__ import annotations

import random

import torch

from .settings import IGNORE_INDEX, TokenizedExample

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_causal_lm(arch: str = "llama", vocab: int = 256, seed: int = 0) -> torch.nn.Module:
    """A 2-layer random-init causal LM: ``llama``, ``qwen2`` or ``gpt2`` (an architecture the engine does
    not special-case, so it takes the generic route)."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig, Qwen2Config

    torch.manual_seed(seed)
    cfg: PretrainedConfig
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                          max_position_embeddings=512)
    elif arch == "qwen2":
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                          max_position_embeddings=512)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=512, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")


def tiny_lora_model(arch: str = "llama", vocab: int = 256, seed: int = 0, rank: int = 8) -> torch.nn.Module:
    """:func:`tiny_causal_lm` wrapped in a PEFT LoRA adapter on all linear projections.

    The adapter's B matrices are randomised (PEFT starts them at zero) so that the adapter already
    changes the outputs and gradients reach every LoRA weight from the first step.
    """
    from peft import LoraConfig, get_peft_model

    base = tiny_causal_lm(arch, vocab, seed)
    targets = ["c_attn", "c_proj", "c_fc"] if arch == "gpt2" else LORA_TARGETS
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def synthetic_examples(n: int, vocab: int = 256, min_len: int = 6, max_len: int = 60, seed: int = 0,
                       prompt_fraction: float = 0.5) -> list[TokenizedExample]:
    """Random-token examples of random lengths; the first ``prompt_fraction`` of each carries no loss."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        cut = int(length * prompt_fraction)
        out.append(TokenizedExample(ids, [IGNORE_INDEX] * cut + ids[cut:]))
    return out
