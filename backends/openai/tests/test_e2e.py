"""End to end through ftkit's public API and the real openai client against the loopback emulator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import openai
import pytest
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import CHAT_SYSTEM_PROMPT, LABELS, texts, write_chat, write_classification, write_preference

import ftkit
from ftkit import FineTuneJob, JobSpec, JobStatus
from ftkit.errors import JobFailedError
from ftkit.predictor import UNPARSEABLE
from ftkit.testing import BackendConformance

pytestmark = pytest.mark.e2e


def _spec(tmp_path: Path, **kw: object) -> JobSpec:
    train = write_classification(tmp_path / "train.jsonl", 45, seed=1)
    val = write_classification(tmp_path / "val.jsonl", 12, seed=2)
    return JobSpec(task="classification", train=train, validation=val, suffix="tickets", **kw)  # type: ignore[arg-type]


def test_classification_end_to_end(tmp_path: Path, emulator: EmulatorServer, no_violations: None) -> None:
    spec = _spec(tmp_path, hyperparameters={"epochs": 2, "seed": 7})
    job = FineTuneJob.create(spec, backend="openai")
    assert job.status is JobStatus.CREATED
    estimate = job.record.estimated_cost
    assert estimate is not None and estimate["usd"] > 0 and estimate["billed_tokens"] > 0

    job.start()
    assert job.backend_job_id and job.backend_job_id.startswith("ftjob-")
    assert job.wait(timeout=60, poll_interval=0.02) is JobStatus.SUCCEEDED

    # A fresh handle from the registry sees everything (another process would too).
    again = FineTuneJob.get(job.id)
    assert again.status is JobStatus.SUCCEEDED
    assert again.record.model and again.record.model.startswith("ft:gpt-4.1-mini-2025-04-14:personal:tickets:")
    messages = [e.message for e in again.events()]
    assert any(m.startswith("Files validated") for m in messages)
    assert any(m.startswith("New fine-tuned model created") for m in messages)
    assert [e for e in again.events() if e.kind == "checkpoint"], "checkpoints become events"

    curve = again.metrics()
    steps = [m["step"] for m in curve]
    assert steps == sorted(steps) and steps[-1] == 8  # 2 epochs × 4 steps (emulator steps_per_epoch=4)
    assert all("train_loss" in m for m in curve)
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert curve[-1]["epoch"] == pytest.approx(2.0)
    assert any("valid_loss" in m for m in curve)
    assert (again.workdir / "results.csv").read_text().startswith("step,")  # decoded from base64

    # Actual cost from trained_tokens: same token count as the estimate (same tokenizer, 2 epochs).
    actual = again.record.actual_cost
    assert actual is not None
    assert actual["billed_tokens"] == estimate["billed_tokens"]
    assert actual["usd"] == pytest.approx(actual["billed_tokens"] * 5.0 / 1e6)

    # The job's openai-side settings: supervised, epochs mapped, metadata carries ftkit's id.
    client = openai.OpenAI()
    remote = client.fine_tuning.jobs.retrieve(job.backend_job_id)
    assert remote.method.type == "supervised"
    assert remote.hyperparameters.n_epochs == 2 and remote.seed == 7
    assert remote.metadata == {"ftkit_job_id": job.id}

    model = again.model()
    assert model.labels == LABELS
    held_out = texts(30, seed=99)
    results = model.classify([t for t, _ in held_out])
    for c in results:
        assert set(c.probabilities) == set(LABELS)
        assert sum(c.probabilities.values()) == pytest.approx(1.0)
        assert 0 < c.unparseable_mass < 0.5
        assert c.label != UNPARSEABLE
    accuracy = sum(c.label == y for c, (_, y) in zip(results, held_out, strict=True)) / len(held_out)
    assert accuracy > 0.8  # the cue words predict the label; majority rate is 1/3
    assert model.generate(["refund for my invoice please"], max_new_tokens=5) == ["billing"]


def test_evaluate_report(tmp_path: Path) -> None:
    job = FineTuneJob.create(_spec(tmp_path), backend="openai").start()
    job.wait(timeout=60, poll_interval=0.02)
    test = write_classification(tmp_path / "test.jsonl", 30, seed=5)
    report = ftkit.evaluate(job.model(), test)
    m = report.metrics
    assert m["accuracy"] > m["majority_rate"] + 0.3
    assert m["p_value_vs_majority"] < 0.01
    assert m["unparseable_rate"] == 0
    assert 0 < m["log_loss"] < 1.1  # real probabilities, not one-hot guesses


def test_random_labels_give_chance_accuracy(tmp_path: Path) -> None:
    """The emulated model learns from its data: labels unrelated to the text are not predictable."""
    rows = texts(45, seed=3)
    shuffled = [lab for _, lab in rows]
    random.Random(0).shuffle(shuffled)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for (t, _), lab in zip(rows, shuffled,
                                                                                                   strict=True)))
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai").start()
    job.wait(timeout=60, poll_interval=0.02)
    held_out = texts(60, seed=11)
    results = job.model().classify([t for t, _ in held_out])
    accuracy = sum(c.label == y for c, (_, y) in zip(results, held_out, strict=True)) / len(held_out)
    assert accuracy < 0.6


def test_dpo_job(tmp_path: Path, no_violations: None) -> None:
    train = write_preference(tmp_path / "pref.jsonl", 20, seed=4)
    spec = JobSpec(task="preference", train=train, model="gpt-4.1-nano-2025-04-14",
                   hyperparameters={"epochs": 1, "batch_size": 2, "learning_rate": 0.5})
    job = FineTuneJob.create(spec, backend="openai", options={"beta": 0.25}).start()
    assert job.wait(timeout=60, poll_interval=0.02) is JobStatus.SUCCEEDED
    remote = openai.OpenAI().fine_tuning.jobs.retrieve(job.backend_job_id)
    assert remote.method.type == "dpo"
    hp = remote.method.dpo.hyperparameters
    assert (hp.beta, hp.batch_size, hp.n_epochs, hp.learning_rate_multiplier) == (0.25, 2, 1, 0.5)
    # The DPO model answers with the preferred outputs.
    assert job.model().generate(["invoice refund charged"], max_new_tokens=4) == ["billing"]


def test_attach_to_existing_job(tmp_path: Path, no_violations: None) -> None:
    client = openai.OpenAI()
    path = write_chat(tmp_path / "chat.jsonl", 15, seed=6)
    f = client.files.create(file=("made-elsewhere.jsonl", path.read_bytes()), purpose="fine-tune")
    remote = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=f.id, suffix="legacy")

    job = FineTuneJob.attach(remote.id, backend="openai")
    assert job.backend_job_id == remote.id
    # A classification-shaped chat file: the spec recovers the labels and the exact system prompt.
    assert job.spec.task == "classification" and job.spec.model == "gpt-4o-mini-2024-07-18"
    assert job.spec.preamble == CHAT_SYSTEM_PROMPT and job.spec.labels == sorted({y for _, y in texts(15, seed=6)})
    fetched = Path(job.spec.train).with_name(f.id + ".jsonl")
    assert fetched.read_bytes() == path.read_bytes()  # training data fetched for evaluation
    rows = [json.loads(x) for x in Path(job.spec.train).read_text().splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == texts(15, seed=6)
    assert job.wait(timeout=60, poll_interval=0.02) is JobStatus.SUCCEEDED
    assert job.metrics() and job.record.actual_cost is not None
    predictor = job.model()
    answers = predictor.generate([[{"role": "user", "content": "crash offline error"}]], max_new_tokens=4)
    assert answers == ["outage"]
    out = predictor.classify(["quote for enterprise plan"], labels=LABELS)
    assert out[0].label == "sales"


def test_too_few_examples_fails_like_openai(tmp_path: Path) -> None:
    train = write_chat(tmp_path / "tiny.jsonl", 5, seed=1)
    # validate=False lets the file past ftkit's own check, to see OpenAI's failure mapped.
    job = FineTuneJob.create(JobSpec(task="chat", train=train), backend="openai", validate=False).start()
    with pytest.raises(JobFailedError, match="invalid_n_examples: Training file has 5 example"):
        job.wait(timeout=30, poll_interval=0.02)
    assert job.status is JobStatus.FAILED
    assert any(e.level == "error" for e in job.events())


def test_bad_format_fails_like_openai(tmp_path: Path) -> None:
    train = tmp_path / "bad.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(12)]  # no assistant turn
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = FineTuneJob.create(JobSpec(task="chat", train=train), backend="openai", validate=False).start()
    with pytest.raises(JobFailedError, match="invalid_training_file"):
        job.wait(timeout=30, poll_interval=0.02)


def test_ftkit_validation_catches_it_first(tmp_path: Path) -> None:
    train = write_chat(tmp_path / "tiny.jsonl", 5, seed=1)
    with pytest.raises(ftkit.DatasetError, match=r"too_few_examples|at least 10"):
        FineTuneJob.create(JobSpec(task="chat", train=train), backend="openai")


def test_pause_resume_cancel(tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.settings.step_seconds = 0.2
    job = FineTuneJob.create(_spec(tmp_path), backend="openai").start()
    while job.refresh() is not JobStatus.RUNNING:
        pass
    job.pause()
    assert job.status is JobStatus.PAUSED
    job.resume()
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert job.cancel() is JobStatus.CANCELLED
    assert FineTuneJob.get(job.id).status is JobStatus.CANCELLED
    messages = [e.message for e in job.events()]
    assert "Fine-tuning job paused" in messages and "Fine-tuning job cancelled" in messages


def test_identical_upload_is_reused(tmp_path: Path) -> None:
    train = write_classification(tmp_path / "unique.jsonl", 33, seed=21)  # content no other test uploads
    spec = JobSpec(task="classification", train=train, hyperparameters={"epochs": 1})
    first = FineTuneJob.create(spec, backend="openai").start()
    second = FineTuneJob.create(spec, backend="openai").start()
    assert first.record.state["train_file"] == second.record.state["train_file"]
    assert first.record.state["train_file_reused"] is False
    assert second.record.state["train_file_reused"] is True
    first.cancel()
    second.cancel()


def test_cancel_of_a_job_that_finishes_meanwhile_reports_how_it_ended(tmp_path: Path, emulator: EmulatorServer) -> None:
    # The race CI once hit: ftkit looks (running), the job finishes, then the cancel arrives and OpenAI says 400.
    job = FineTuneJob.create(_spec(tmp_path), backend="openai").start()
    emulator.inject("delay", path="/v1/fine_tuning/jobs/", method="POST", delay=3.0)
    assert job.cancel() is JobStatus.SUCCEEDED
    assert FineTuneJob.get(job.id).status is JobStatus.SUCCEEDED


def test_a_refused_cancel_of_a_running_job_is_an_error(tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.settings.step_seconds = 0.5
    job = FineTuneJob.create(_spec(tmp_path), backend="openai").start()
    emulator.inject("server_error", path="/v1/fine_tuning/jobs/", method="POST", status=400, count=1)
    with pytest.raises(ftkit.APIError, match="HTTP 400"):
        job.cancel()
    assert job.cancel() is JobStatus.CANCELLED


def test_submit_reconciles_a_job_created_before_a_crash(tmp_path: Path) -> None:
    from ftkit_openai.backend import OpenAIBackend

    job = FineTuneJob.create(_spec(tmp_path), backend="openai")
    be = OpenAIBackend()
    ctx = job._context()
    first = be.submit(ctx)
    ctx.state.pop("openai_job_id")  # as if the process died before the id was recorded
    assert be.submit(ctx) == first


class TestConformance(BackendConformance):
    backend = "openai"
    wait_timeout = 60.0

    def make_spec(self, tmp_path: Path) -> JobSpec:
        train = write_classification(tmp_path / "train.jsonl", 30, seed=8)
        return JobSpec(task="classification", train=train)

    @pytest.fixture(autouse=True)
    def _slow_steps_for_cancel(self, request: pytest.FixtureRequest, emulator: EmulatorServer) -> None:
        # With 10 ms steps the job can finish before the cancel arrives on a loaded machine; cancel then rightly
        # reports SUCCEEDED (tested above). Slower steps keep test_cancel about cancelling a running job.
        if request.node.name == "test_cancel":
            emulator.settings.step_seconds = 0.3
