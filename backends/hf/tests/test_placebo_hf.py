"""A placebo twin on the hf backend: the worker trains on the permuted labels, the report sets both side by side.

A tiny random Llama learns nothing in two steps, so this checks the plumbing (the permuted file reaches
the worker, the twin keeps the real job's options, evaluation finds the twin), not a training result.
examples/placebo.py runs the real comparison on SmolLM2-135M.
"""

from __future__ import annotations

import json

import pytest

import ftkit
from ftkit import JobStatus

pytestmark = pytest.mark.slow


def test_placebo_twin_trains_on_permuted_labels(spam_files, tiny_llama_dir, ftkit_home):
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=spam_files["train"],
                         validation=spam_files["valid"], labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3, seed=3))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "max_steps": 2, "batch_tokens": 512})
    twin = job.placebo()
    assert twin.record.options == job.record.options and twin.spec.hyperparameters.seed == 3
    for j in (job, twin):
        j.start()
        assert j.wait(timeout=300) is JobStatus.SUCCEEDED

    # The worker's own copy of the training data is the permuted file, label for label.
    permuted = [json.loads(x) for x in (job.workdir / "placebo" / "seed-3" / "train.jsonl").read_text().splitlines()]
    worker = [json.loads(x) for x in (twin.workdir / "data" / "train.jsonl").read_text().splitlines()]
    original = [json.loads(x) for x in spam_files["train"].read_text().splitlines()]
    assert [r["label"] for r in worker] == [r["label"] for r in permuted] != [r["label"] for r in original]
    assert [r["text"] for r in worker] == [r["text"] for r in original]

    report = ftkit.evaluate(job, spam_files["test"], bootstrap=0, progress=False)
    assert report.placebo is not None and report.placebo["job"]["id"] == twin.id
    assert [r["model"] for r in report.placebo["rows"]] == ["real", "placebo", "majority"]
    assert report.leakage is not None and not report.leakage["leaked"]
    assert report.power is not None and report.power["n"] == 16
