"""The memory plan's choices before anything is loaded: shorter passes, then gradient checkpointing, and a
QLoRA suggestion; recorded in the manifest and applied by the worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit_hf.memory_plan import FIT_FRACTION, GIB, MIN_PASS_TOKENS, ModelShape, decide_memory, plan_memory

import ftkit
from ftkit import JobStatus

QWEN_05B = ModelShape(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, vocab_size=151936, head_dim=64, tie_word_embeddings=True)
LLAMA_8B = ModelShape(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, head_dim=128, tie_word_embeddings=False)


def test_a_step_that_fits_is_left_alone():
    d = decide_memory(QWEN_05B, 80 * GIB, batch_tokens=8192, longest_example=100)
    assert d.fits and not d.gradient_checkpointing and d.pass_tokens == 8192 and d.message == ""


def test_shorter_passes_come_first_then_checkpointing_when_one_example_fills_the_pass():
    short = decide_memory(QWEN_05B, 6 * GIB, batch_tokens=8192, longest_example=300)
    assert short.fits and not short.gradient_checkpointing and short.pass_tokens < 8192
    assert "passes of" in short.message
    # A 4,096-token example cannot be split: only checkpointing makes the step fit, with whole-step passes.
    ckpt = decide_memory(QWEN_05B, 6 * GIB, batch_tokens=8192, longest_example=4096)
    assert ckpt.fits and ckpt.gradient_checkpointing and ckpt.automatic and ckpt.pass_tokens == 8192
    assert "gradient checkpointing on" in ckpt.message
    assert not plan_memory(QWEN_05B, pass_tokens=4096).fits(6 * GIB)  # without it, not even one example fits
    assert ckpt.manifest()["planned_total_bytes"] <= FIT_FRACTION * 6 * GIB


def test_the_user_overrides_the_switch_and_is_told_what_would_fit():
    off = decide_memory(QWEN_05B, 6 * GIB, batch_tokens=8192, longest_example=4096, gradient_checkpointing=False)
    assert not off.fits and not off.gradient_checkpointing
    assert "gradient_checkpointing=true would" in off.message
    on = decide_memory(QWEN_05B, 80 * GIB, batch_tokens=8192, gradient_checkpointing=True)
    assert on.fits and on.gradient_checkpointing and not on.automatic
    kept = decide_memory(QWEN_05B, 6 * GIB, batch_tokens=8192, pass_tokens=8192, configured_pass_tokens=True,
                         gradient_checkpointing=False)
    assert kept.pass_tokens == 8192  # a configured pass length is never changed


def test_qlora_is_suggested_on_cuda_never_switched_to():
    d = decide_memory(LLAMA_8B, 16 * GIB, batch_tokens=4096, precision="fp16", longest_example=2048)
    assert not d.fits and d.qlora_would_fit and d.plan is not None and d.plan.method == "lora"
    assert "method='qlora' would" in d.message
    cpu = decide_memory(LLAMA_8B, 16 * GIB, batch_tokens=4096, device="cpu", precision="fp32")
    assert not cpu.fits and not cpu.qlora_would_fit  # no QLoRA off CUDA
    assert decide_memory(LLAMA_8B, None, batch_tokens=4096).fits  # unknown memory: nothing changed


@pytest.mark.slow
def test_a_job_turns_checkpointing_on_records_it_and_trains(spam_files, tiny_llama_dir, ftkit_home):
    # A memory limit between the tiny model's plans with and without checkpointing at the shortest passes:
    # the decision must take both levers (passes and checkpointing), record them, and the worker apply them.
    shape = ModelShape.from_model_dir(tiny_llama_dir)
    kw = dict(device="cpu", precision="fp32", pass_tokens=MIN_PASS_TOKENS)
    without = plan_memory(shape, **kw).total_bytes
    with_ckpt = plan_memory(shape, gradient_checkpointing=True, **kw).total_bytes
    assert with_ckpt < without
    limit_gb = (with_ckpt + without) / 2 / FIT_FRACTION / GIB
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=spam_files["train"],
                         labels=["ham", "spam"], hyperparameters=ftkit.Hyperparameters(epochs=1))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={
        "device": "cpu", "precision": "fp32", "max_steps": 2, "batch_tokens": 512, "memory_limit_gb": limit_gb})
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    memory = ftkit.FineTuneJob.get(job.id).record.manifest["memory"]
    assert memory["gradient_checkpointing"] and memory["automatic"] and memory["fits"]
    assert memory["pass_tokens"] == MIN_PASS_TOKENS
    events = [json.loads(x) for x in (job.workdir / "events.jsonl").read_text().splitlines()]
    assert any("gradient checkpointing on" in e["message"] for e in events)
    spec_file = json.loads((Path(job.workdir) / "spec.json").read_text())
    assert spec_file["memory"] == memory  # what the worker applied is what the manifest says


BIG_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120,
              "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
              "num_key_value_heads": 40, "vocab_size": 49152, "max_position_embeddings": 4096,
              "tie_word_embeddings": False}  # Llama-2-13B's dimensions: ~26 GB of bf16 weights


def test_ftkit_estimate_says_which_gpus_the_model_fits(tmp_path: Path, smollm2_tokenizer, spam_files):
    from ftkit.costs import estimate_all

    model = tmp_path / "big"
    smollm2_tokenizer.save_pretrained(str(model))
    (model / "config.json").write_text(json.dumps(BIG_CONFIG))
    config = tmp_path / "ftkit.toml"
    config.write_text(f'task = "classification"\nmodel = "{model}"\ntrain = "{spam_files["train"]}"\n'
                      'labels = ["ham", "spam"]\n[costs]\ngpus = ["RTX 4090", "A100 80GB", "T4"]\n'
                      "model_parameters = 13e9\n")
    report = estimate_all(config=config, backends=["remote"])
    lines = {row.target: [a for a in row.assumptions if a.startswith("memory:")] for row in report.rows}
    small = [v for k, v in lines.items() if "RTX 4090" in k]
    big = [v for k, v in lines.items() if "A100 80GB" in k]
    assert small and all(v and v[0].startswith("memory: does NOT fit a 24 GB RTX 4090 (bf16)") for v in small)
    assert big and all(v and v[0].startswith("memory: fits a 80 GB A100 80GB (bf16)") for v in big)
    t4 = [v for k, v in lines.items() if " T4 " in k]
    assert t4 and all("(fp16)" in v[0] and "method='qlora' would" in v[0] for v in t4)  # T4: fp16, no bf16


def test_the_catalogue_gpus_without_bf16_train_in_fp16():
    from ftkit_hf.memory_plan import gpu_precision

    from ftkit.costs.catalogue import GPUS, gpu_rates

    fp16 = {name for name in GPUS if gpu_precision(name) == "fp16"}
    assert fp16 == {"T4", "V100 16GB", "V100 32GB"}  # Turing and Volta: no bf16; Ampere and later have it
    assert gpu_rates("T4") and gpu_rates("V100 32GB")  # priced, with their sources and dates
    assert all(r.source and r.as_of for r in gpu_rates("T4") + gpu_rates("V100 32GB"))
    # The names providers use for the same cards.
    assert {gpu_precision(n) for n in ("Tesla T4", "Tesla V100-SXM2-16GB", "V100 PCIe", "RTX 2080 Ti")} == {"fp16"}
    assert {gpu_precision(n) for n in ("A100 SXM4", "RTX 4090", "L4", "H100 80GB HBM3", "A10G")} == {"bf16"}
