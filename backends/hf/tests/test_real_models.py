"""The real default models: SmolLM2-135M-Instruct (LoRA, generative) and all-MiniLM-L6-v2 (classification head)."""

from __future__ import annotations

import json

import pytest

import ftkit
from ftkit import JobStatus

pytestmark = pytest.mark.slow


def test_smollm2_lora_few_steps(spam_files, ftkit_home):
    # Named: a classification spec without a model gets the route chosen from the data (the encoder here).
    spec = ftkit.JobSpec(task="classification", model="smollm2-135m", train=spam_files["train"],
                         labels=["ham", "spam"], hyperparameters=ftkit.Hyperparameters(learning_rate=5e-4))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"max_steps": 2, "batch_tokens": 256})
    assert job.spec.model == "smollm2-135m"
    job.start()
    assert job.wait(timeout=600) is JobStatus.SUCCEEDED
    losses = [m["train_loss"] for m in job.metrics()]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    texts = [json.loads(x)["text"] for x in spam_files["test"].read_text().splitlines()][:4]
    for res in job.model().classify(texts):
        assert sum(res.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_minilm_sequence_classification_head(spam_files, ftkit_home):
    spec = ftkit.JobSpec(task="classification", model="all-minilm-l6-v2", train=spam_files["train"],
                         validation=spam_files["valid"], labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(learning_rate=1e-3))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"max_steps": 4})
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    assert json.loads((job.workdir / "model" / "ftkit-hf.json").read_text())["kind"] == "encoder"
    pred = job.model()
    texts = [json.loads(x)["text"] for x in spam_files["test"].read_text().splitlines()]
    res = pred.classify(texts)
    assert len(res) == len(texts)
    for r in res:
        assert set(r.probabilities) == {"ham", "spam"}
        assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_classification_without_a_model_trains_the_routed_encoder_fully(spam_files, ftkit_home):
    # No model named: short SMS texts route to MiniLM with a head, fully fine-tuned (no LoRA adapter saved).
    spec = ftkit.JobSpec(task="classification", train=spam_files["train"], labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"max_steps": 3})
    assert job.spec.model == "auto"
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    route = job.record.manifest["training"]["route"]
    assert (route["model"], route["head"], route["method"]) == ("all-minilm-l6-v2", "sequence_classification", "full")
    saved = job.workdir / "model"
    meta = json.loads((saved / "ftkit-hf.json").read_text())
    assert (meta["kind"], meta["method"], meta["model"]) == ("encoder", "full", "all-minilm-l6-v2")
    assert (saved / "model.safetensors").is_file() and not (saved / "adapter_model.safetensors").exists()
    res = job.model().classify(["WINNER!! Claim your free prize now", "see you at 6"])
    assert all(set(r.probabilities) == {"ham", "spam"} for r in res)
