"""Bad jobs are refused at create time with clear ftkit errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit_hf.backend import HFBackend, HFConfig

import ftkit
from ftkit.errors import BackendUnavailableError, ConfigError, DatasetError


def _spec(train: Path, model: str, **kw) -> ftkit.JobSpec:
    return ftkit.JobSpec(task="classification", model=model, train=train, labels=["ham", "spam"], **kw)


def test_label_not_in_labels(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    train = write_rows(tmp_path / "t.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "eggs"}])
    with pytest.raises(DatasetError, match=r"t\.jsonl:2.*eggs"):
        HFBackend().check(_spec(train, str(tiny_llama_dir)), HFConfig())
    with pytest.raises(DatasetError, match="eggs"):
        ftkit.FineTuneJob.create(_spec(train, str(tiny_llama_dir)), backend="hf")


def test_example_longer_than_the_context(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    long_text = "spam " * 800  # > 512, the tiny model's context
    train = write_rows(tmp_path / "t.jsonl", [{"text": "short", "label": "ham"}, {"text": long_text, "label": "spam"}])
    with pytest.raises(DatasetError, match=r"t\.jsonl:2: example is \d+ tokens, longer than max_length 512"):
        HFBackend().check(_spec(train, str(tiny_llama_dir)), HFConfig())
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        HFBackend().check(_spec(train, str(tiny_llama_dir)), HFConfig(max_length=4096))
    # overlength="drop" trains on what fits instead.
    HFBackend().check(_spec(train, str(tiny_llama_dir)), HFConfig(overlength="drop"))


def test_missing_model_path(tmp_path, ftkit_home, write_rows):
    train = write_rows(tmp_path / "t.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "spam"}])
    with pytest.raises(ConfigError, match="model path not found"):
        ftkit.FineTuneJob.create(_spec(train, str(tmp_path / "nowhere")), backend="hf", validate=False)
    with pytest.raises(ConfigError, match=r"'meta-llama/Llama-3\.2-1B' is not in the local Hugging Face cache"):
        ftkit.FineTuneJob.create(_spec(train, "meta-llama/Llama-3.2-1B"), backend="hf", validate=False)


def test_qlora_without_cuda_is_a_clear_message(tmp_path, tiny_llama_dir, write_rows):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    train = write_rows(tmp_path / "t.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "spam"}])
    with pytest.raises(BackendUnavailableError, match="QLoRA needs a CUDA GPU"):
        HFBackend().check(_spec(train, str(tiny_llama_dir)), HFConfig(method="qlora"))


def test_unknown_option_names_the_backend():
    with pytest.raises(ConfigError, match=r"\[hf\] lora_rank"):
        HFBackend().parse_config({"lora_rank": 8})


def test_estimate_states_its_assumptions(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    train = write_rows(tmp_path / "t.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "spam"}] * 5)
    job = ftkit.FineTuneJob.create(_spec(train, str(tiny_llama_dir)), backend="hf",
                                   options={"tokens_per_second": 100.0, "power_watts": 100.0})
    est = job.record.estimated_cost
    assert est["billed_tokens"] > 0
    # The configured speed prices the tokens; the worker's set-up (imports, model load) comes on top.
    (line,) = [a for a in est["assumptions"] if " s set-up + " in a]
    setup = float(line.split(": ", 1)[1].split(" s set-up")[0])
    assert setup > 0
    assert est["hours"] == pytest.approx((setup + est["billed_tokens"] / 100) / 3600, rel=0.01)
    assert est["usd"] == pytest.approx(0.1 * est["hours"] * 0.17, rel=1e-3)
    assert any("tokens/s" in a for a in est["assumptions"])
    # The memory plan: the planned peak for this model on this machine's CPU, and that it fits.
    memory = [a for a in est["assumptions"] if a.startswith("peak memory about")]
    assert len(memory) == 1 and "fits the" in memory[0] and "lora" in memory[0]
    assert job.status is ftkit.JobStatus.CREATED  # nothing started


def test_describe_names_the_device():
    assert any(k in HFBackend().describe() for k in ("CPU", "CUDA", "MPS"))
