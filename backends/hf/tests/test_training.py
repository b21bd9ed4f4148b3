"""Real training in the detached worker: a tiny random Llama (SmolLM2 tokenizer) on SMS spam, on CPU.

Covers the whole path: FineTuneJob → HFBackend.submit → worker process → engine → events/status/model,
then cancel, and resume after the worker is killed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import ftkit
from ftkit import JobStatus

pytestmark = pytest.mark.slow


def _job(spam_files, model: Path, **options) -> ftkit.FineTuneJob:
    spec = ftkit.JobSpec(task="classification", model=str(model), train=spam_files["train"],
                         validation=spam_files["valid"], labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    return ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", **options})


def _wait_for_event(job: ftkit.FineTuneJob, kind: str, timeout: float = 240) -> dict:
    path = job.workdir / "events.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file():
            for line in path.read_text().splitlines():
                ev = json.loads(line)
                if ev["kind"] == kind:
                    return ev
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout} s; log:\n{(job.workdir / 'worker.log').read_text()}")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_train_then_classify(spam_files, tiny_llama_dir, ftkit_home):
    job = _job(spam_files, tiny_llama_dir, max_steps=3, batch_tokens=512, merge_adapter=True, lora_alpha=24.0,
               lora_dropout=0.1)
    t = time.time()
    job.start()
    assert time.time() - t < 10  # start() returns at once; training runs in the worker
    assert job.backend_job_id.startswith("local-")
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    metrics = job.metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["train_loss"] > 0 and m["tokens_per_second"] > 0 and "learning_rate" in m for m in metrics)
    assert metrics[-1].get("valid_loss") is not None
    model_dir = job.workdir / "model"
    assert (model_dir / "adapter_config.json").is_file() and (model_dir / "tokenizer_config.json").is_file()
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert (adapter["lora_alpha"], adapter["lora_dropout"]) == (24.0, 0.1)  # the options reach the adapter
    status = json.loads((job.workdir / "status.json").read_text())
    assert status["status"] == "succeeded" and status["result"]["steps"] == 3

    pred = job.model()
    assert pred.labels == ["ham", "spam"]
    texts = [json.loads(x)["text"] for x in spam_files["test"].read_text().splitlines()]
    for res in pred.classify(texts):
        assert sum(res.probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    # The merged model is a plain transformers model that gives the same scores without peft.
    from ftkit_hf.predictor import HFPredictor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = model_dir / "merged"
    plain = HFPredictor(AutoModelForCausalLM.from_pretrained(str(merged)), AutoTokenizer.from_pretrained(str(merged)),
                        labels=["ham", "spam"])
    a, b = pred.classify(texts[:4]), plain.classify(texts[:4])
    for x, y in zip(a, b, strict=True):
        assert x.probabilities["spam"] == pytest.approx(y.probabilities["spam"], abs=2e-2)


def test_cancel_stops_cleanly_with_a_checkpoint(spam_files, tiny_llama_dir, ftkit_home):
    job = _job(spam_files, tiny_llama_dir, max_steps=10_000, batch_tokens=128, checkpoint_every=1000)
    job.start()
    _wait_for_event(job, "metrics")
    pid = job.record.state["pid"]
    assert job.cancel() is JobStatus.CANCELLED
    assert not _alive(pid)
    status = json.loads((job.workdir / "status.json").read_text())
    assert status["status"] == "cancelled"
    assert any(p.name.startswith("step-") for p in (job.workdir / "checkpoints").iterdir())
    assert not (job.workdir / "model").exists()


def test_killed_job_resumes_from_its_last_checkpoint(spam_files, tiny_llama_dir, ftkit_home):
    job = _job(spam_files, tiny_llama_dir, batch_tokens=128, max_batch_examples=1, checkpoint_every=4)
    job.start()
    ckpt = _wait_for_event(job, "checkpoint")
    pid = job.record.state["pid"]
    os.killpg(pid, signal.SIGKILL)  # no chance to save anything more
    deadline = time.time() + 30
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert job.refresh() is JobStatus.FAILED
    assert "died" in job.record.error and "resume" in job.record.error

    job.resume()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    messages = [e.message for e in job.events()]
    assert any("resuming from step" in m for m in messages), messages
    steps = [m["step"] for m in job.metrics()]
    # After the resume, steps continue after the checkpoint instead of starting over at 1.
    restart = steps.index(ckpt["data"]["step"] + 1, steps.index(ckpt["data"]["step"]) + 1)
    assert steps[restart - 1] >= ckpt["data"]["step"]
    assert steps[-1] == json.loads((job.workdir / "status.json").read_text())["result"]["steps"]
