"""The memory plan against measured peaks of real training runs on a CPU, and the choices it makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ftkit_hf.memory_plan import GIB, ModelShape, fit_memory, plan_memory

from ftkit.errors import ConfigError

QWEN_05B = ModelShape(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, vocab_size=151936, head_dim=64, tie_word_embeddings=True)


def _measure(precision: str, tokens: int, *args: str, **env: str) -> dict:
    """Train in a fresh process (memory_peak.py) and return its measured peak and the plan's prediction."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("memory_peak.py")), precision, str(tokens),
                          *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_predicted_allocations_match_a_measured_cpu_run():
    # glibc's heap slack switched off: resident memory is then the tensors themselves, which the plan counts
    # one by one. Four configurations measured 0.89-1.08x of the plan (memory_plan's docstring), but this one
    # measured 1.08x in the development venv and 1.17x in CI's fresh venv (same torch/transformers/peft: what is
    # imported lazily during training counts as its memory); 25% allowed.
    run = _measure("fp32", 1024, MALLOC_MMAP_THRESHOLD_="65536")
    assert run["measured_bytes"] == pytest.approx(run["plan"]["allocated_bytes"], rel=0.25)


@pytest.mark.slow
def test_predicted_total_matches_the_measured_peak_resident_memory():
    # The default allocator, as a user runs it: the plan's CPU overhead (glibc slack + runtime) was fitted on four
    # runs to within 6%; 20% allowed for other glibc versions and thread counts.
    run = _measure("bf16", 2048)
    assert run["measured_bytes"] == pytest.approx(run["plan"]["total_bytes"], rel=0.20)
    assert run["plan"]["activation_bytes"] > run["plan"]["weights_bytes"]  # the test measures activations


@pytest.mark.slow
def test_gradient_checkpointing_lowers_the_measured_peak_and_keeps_the_losses():
    # A random 4-layer Llama, two steps of one packed 2,048-token pass (four examples: the recomputed attention
    # must see the same example boundaries as the forward pass). Measured: 306 MiB -> 171 MiB, losses equal.
    plain = _measure("fp32", 2048, MALLOC_MMAP_THRESHOLD_="65536")
    ckpt = _measure("fp32", 2048, "checkpointing", MALLOC_MMAP_THRESHOLD_="65536")
    assert len(ckpt["losses"]) == 2 and ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-6, abs=0)
    assert ckpt["measured_bytes"] < 0.7 * plain["measured_bytes"]
    assert ckpt["plan"]["gradient_checkpointing"] and \
        ckpt["measured_bytes"] == pytest.approx(ckpt["plan"]["allocated_bytes"], rel=0.25)


def test_weights_and_lora_state_of_qwen25_05b():
    plan = plan_memory(QWEN_05B, device="cuda", precision="bf16", pass_tokens=4096)
    assert plan.parameters == pytest.approx(494e6, rel=0.01)  # Qwen2.5-0.5B's published 0.49B
    assert plan.weights_bytes == 2 * plan.parameters  # loaded in bf16 on a GPU
    # LoRA r=16 on all seven projections: 8.8M parameters, 16 bytes each (weight, gradient, two moments).
    assert plan.trainable_parameters == 8_798_208
    assert plan.trainable_bytes == 16 * 8_798_208
    assert plan.overhead_bytes == GIB
    assert plan.fits(24 * GIB) and not plan.fits(4 * GIB)
    qlora = plan_memory(QWEN_05B, device="cuda", precision="bf16", method="qlora", pass_tokens=4096)
    assert qlora.weights_bytes < plan.weights_bytes
    full = plan_memory(QWEN_05B, device="cuda", precision="bf16", method="full", pass_tokens=4096)
    assert full.trainable_parameters == full.parameters and full.total_bytes > plan.total_bytes


def test_activations_scale_with_the_pass_and_checkpointing_cuts_them():
    small = plan_memory(QWEN_05B, pass_tokens=1024)
    big = plan_memory(QWEN_05B, pass_tokens=4096)
    assert big.activation_bytes == 4 * small.activation_bytes
    assert plan_memory(QWEN_05B, pass_tokens=4096, gradient_checkpointing=True).activation_bytes \
        < big.activation_bytes / 5
    assert plan_memory(QWEN_05B, precision="fp32", pass_tokens=4096).activation_bytes > big.activation_bytes


def test_fit_memory_shortens_passes_then_takes_qlora():
    as_is = fit_memory(QWEN_05B, 80 * GIB, batch_tokens=8192)
    assert as_is.pass_tokens == 8192 and as_is.method == "lora"
    shorter = fit_memory(QWEN_05B, 8 * GIB, batch_tokens=8192)
    assert shorter.method == "lora" and shorter.pass_tokens < 8192 and shorter.fits(8 * GIB)
    assert plan_memory(QWEN_05B, pass_tokens=shorter.pass_tokens * 2).fits(8 * GIB) is False
    seven_b = ModelShape(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, head_dim=128, tie_word_embeddings=False)
    t4 = fit_memory(seven_b, 16 * GIB, batch_tokens=4096, precision="fp16")
    assert t4.method == "qlora" and t4.fits(16 * GIB)  # a 7B model on a 16 GB T4 only as QLoRA
    nothing = fit_memory(seven_b, 4 * GIB, batch_tokens=4096)
    assert not nothing.fits(4 * GIB)  # the smallest plan, marked as not fitting
    assert fit_memory(seven_b, 16 * GIB, batch_tokens=4096, device="cpu").method == "lora"  # no QLoRA off CUDA


def test_shapes_from_configs_and_clear_errors(tmp_path: Path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).to_json_file(str(tmp_path / "config.json"))
    shape = ModelShape.from_model_dir(tmp_path)
    assert (shape.hidden_size, shape.num_key_value_heads, shape.head_dim) == (64, 2, 16)
    with pytest.raises(ConfigError, match="no hidden_size"):
        ModelShape.from_config({"vocab_size": 10, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 8})
    with pytest.raises(ConfigError, match=r"config\.json: cannot read"):
        ModelShape.from_model_dir(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="QLoRA runs on CUDA only"):
        plan_memory(QWEN_05B, device="cpu", method="qlora")


def test_the_estimate_line_says_whether_it_fits_and_what_would(tmp_path: Path):
    from ftkit_hf.memory_plan import memory_assumptions

    QWEN_05B_CONFIG = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                       "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                       "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(QWEN_05B_CONFIG))
    kw = dict(device="cuda", precision="bf16", method="lora", lora_rank=16, batch_tokens=8192, pass_tokens=None)
    [fits] = memory_assumptions(tmp_path, capacity_bytes=80 * GIB, **kw)
    assert fits.startswith("peak memory about") and "fits the 80 GiB here" in fits
    [shorter] = memory_assumptions(tmp_path, capacity_bytes=8 * GIB, **kw)
    assert "does NOT fit the 8 GiB here: pass_tokens=" in shorter
    [nothing] = memory_assumptions(tmp_path, capacity_bytes=1 * GIB, **kw)
    assert "not even with 256-token passes or QLoRA" in nothing
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "unknown"}))
    assert memory_assumptions(tmp_path, capacity_bytes=GIB, **kw) == []  # a config it cannot describe: no line


def test_the_engine_shortens_passes_on_a_gpu_only_when_the_step_would_not_fit():
    from ftkit_hf.memory_plan import gpu_pass_tokens
    from transformers import Qwen2Config

    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, vocab_size=151936)
    assert gpu_pass_tokens(cfg, 8192, "bf16", 80 * GIB) == (None, "")  # an H100: the whole step
    tokens, note = gpu_pass_tokens(cfg, 8192, "fp16", 8 * GIB)
    assert tokens is not None and tokens < 8192 and f"passes of {tokens} tokens" in note
    assert plan_memory(QWEN_05B, precision="fp16", pass_tokens=tokens).fits(8 * GIB)
    assert gpu_pass_tokens(cfg, 8192, "bf16", GIB)[0] == 256  # nothing fits: the shortest passes, and says so
    assert gpu_pass_tokens(None, 8192, "bf16", GIB) == (None, "")
