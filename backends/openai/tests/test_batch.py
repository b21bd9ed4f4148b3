"""Classification through the Batch API gives the same answers as synchronous calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit_openai import OpenAIConfig, OpenAIPredictor
from ftkit_openai.batch import build_input
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import LABELS, texts, write_classification

from ftkit import FineTuneJob, JobSpec


def test_batch_matches_synchronous(tmp_path: Path, emulator: EmulatorServer, no_violations: None) -> None:
    train = write_classification(tmp_path / "train.jsonl", 30, seed=41)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai").start()
    job.wait(timeout=30, poll_interval=0.02)
    sync = job.model()
    held_out = [t for t, _ in texts(12, seed=42)]
    expected = sync.classify(held_out)

    model = str(job.record.model)
    batched = OpenAIPredictor(model, OpenAIConfig(use_batch=True, batch_poll_interval=0.05), labels=LABELS)
    got = batched.classify(held_out)
    assert [c.label for c in got] == [c.label for c in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities)
    # One synchronous probe (does the model accept logprobs?), then the rest at half price.
    per_request = sync.usage["usd"] / sync.usage["requests"]
    assert batched.usage["requests"] == len(held_out)
    assert batched.usage["usd"] == pytest.approx(per_request * (1 + (len(held_out) - 1) / 2), rel=0.1)
    paths = [r["path"] for r in emulator.requests()]
    assert "/batches" in paths


def test_batch_input_lines() -> None:
    lines = build_input([{"model": "m", "messages": []}, {"model": "m", "messages": []}]).decode().splitlines()
    assert len(lines) == 2 and '"custom_id": "req-1"' in lines[1] and '"/v1/chat/completions"' in lines[0]
