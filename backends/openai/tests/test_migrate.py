"""The migration path against the emulator: record, retrain spec, resume, verdict, and one-line errors.

The retraining backend here is ftkit's FakeBackend (a real naive Bayes model trained in-process), so
the workflow's logic runs in seconds; backends/hf/tests/test_migrate_e2e.py trains a real model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import LABELS, texts, write_preference
from typer.testing import CliRunner

from ftkit import FineTuneJob, JobSpec
from ftkit.backend import register_backend
from ftkit.cli import app
from ftkit.errors import EvaluationError, FtkitError
from ftkit.evaluate import evaluate
from ftkit.evaluate.api import job_label
from ftkit.migrate import (
    Migration,
    find_recording,
    record_model,
    retrain_options,
    retrain_spec,
)
from ftkit.testing import FakeBackend

PROMPT = "You route support tickets. Answer billing, outage or sales."


@pytest.fixture(autouse=True)
def _fake_backend() -> None:
    register_backend(FakeBackend)


def _chat_file(path: Path, rows: list[tuple[str, str]], prompt: str = PROMPT) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": prompt},
                                                     {"role": "user", "content": t},
                                                     {"role": "assistant", "content": y}]}) + "\n"
                            for t, y in rows))
    return path


def _hosted_job(tmp_path: Path, n: int = 45, *, train: Path | None = None, method: str = "supervised",
                model: str = "gpt-4.1-mini-2025-04-14") -> object:
    client = openai.OpenAI()
    train = train or _chat_file(tmp_path / "train.jsonl", texts(n, seed=21))
    f = client.files.create(file=(train.name, train.read_bytes()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=model, training_file=f.id, method={"type": method},
                                         hyperparameters={"n_epochs": 2})
    deadline = time.time() + 60
    while job.status not in ("succeeded", "failed") and time.time() < deadline:
        time.sleep(0.02)
        job = client.fine_tuning.jobs.retrieve(job.id)
    return job


def _test_file(tmp_path: Path, n: int = 30, seed: int = 77) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": t, "label": y}) + "\n"
                            for i, (t, y) in enumerate(texts(n, seed=seed))))
    return path


def _chat_requests(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.requests() if r["path"].endswith("/chat/completions"))


def test_attached_classifier_is_scored_under_its_own_prompt(tmp_path: Path) -> None:
    hosted = _hosted_job(tmp_path)
    job = FineTuneJob.attach(hosted.id, backend="openai")
    assert job.spec.preamble == PROMPT and job.spec.labels == LABELS
    report = evaluate(job, _test_file(tmp_path), bootstrap=0)
    assert report.metrics["accuracy"] > 0.85  # under ftkit's default prompt it would be near 1/3


def test_record_is_idempotent_and_survives_shutdown(tmp_path: Path, emulator: EmulatorServer) -> None:
    hosted = _hosted_job(tmp_path)
    job = FineTuneJob.attach(hosted.id, backend="openai")
    test = _test_file(tmp_path)
    before = _chat_requests(emulator)
    rec = record_model(job, test)
    asked = _chat_requests(emulator) - before
    assert asked == 30 and rec.n == 30 and rec.model == hosted.fine_tuned_model
    assert rec.usage["requests"] == 30 and rec.usage["prompt_tokens"] > 0 and rec.preamble == PROMPT
    lines = [json.loads(x) for x in rec.predictions.read_text().splitlines()]
    assert set(lines[0]) >= {"id", "prediction", "probabilities", "raw"}
    assert Path(rec.data_files["train"]).read_bytes() == Path(job.spec.train).read_bytes()
    again = record_model(FineTuneJob.get(job.id), test)
    assert again == rec and _chat_requests(emulator) - before == asked  # no second run

    live = evaluate(job.model(), test, bootstrap=0).metrics["accuracy"]
    emulator.set_model(hosted.fine_tuned_model, shut_down=True)
    recorded = evaluate(FineTuneJob.get(job.id), test, bootstrap=0)
    assert recorded.metrics["accuracy"] == live and "recorded from" in " ".join(recorded.notes)
    (tmp_path / "other").mkdir()
    other = _test_file(tmp_path / "other", 9, seed=5)
    with pytest.raises(EvaluationError, match=r"has no recording on .* and its model cannot answer"):
        evaluate(FineTuneJob.get(job.id), other, bootstrap=0)
    rec.predictions.unlink()
    with pytest.raises(EvaluationError, match="missing its predictions"):
        evaluate(FineTuneJob.get(job.id), test, bootstrap=0)


def test_retrain_spec_maps_settings_and_never_copies_batch_size(tmp_path: Path) -> None:
    hosted = _hosted_job(tmp_path)
    job = FineTuneJob.attach(hosted.id, backend="openai")
    spec, rows = retrain_spec(job, "fake")
    assert (spec.task, spec.labels, spec.preamble, spec.model) == ("classification", LABELS, PROMPT, "naive-bayes")
    assert spec.hyperparameters.epochs == 2 and spec.hyperparameters.batch_size is None
    assert spec.hyperparameters.learning_rate is None and spec.train == job.spec.train
    by = {r.setting: r for r in rows}
    assert by["batch size"].hosted == 1 and by["batch size"].local is None and "not copied" in by["batch size"].why
    assert by["learning rate"].hosted == 1.8 and by["learning rate"].local is None
    assert by["system prompt"].local == PROMPT


def test_migrate_runs_resumes_and_gives_a_verdict(tmp_path: Path, emulator: EmulatorServer) -> None:
    hosted = _hosted_job(tmp_path)
    test = _test_file(tmp_path, 60)
    lines: list[str] = []
    dry = Migration(hosted.id, test, "fake", options={"steps": 3}, say=lines.append)
    before = _chat_requests(emulator)
    plan = dry.plan()
    assert _chat_requests(emulator) == before  # planning asks the model nothing
    steps = {s.name: s for s in plan.steps}
    assert steps["record"].usd and steps["record"].usd > 0 and not steps["record"].done
    assert steps["retrain"].usd == pytest.approx(0.003) and not steps["retrain"].done
    assert plan.spend_usd == pytest.approx(steps["record"].usd + 0.003)
    assert any("batch size: 1 -> None" in x for x in plan.lines())

    stopped = Migration(hosted.id, test, "fake", options={"steps": 3}).run(lambda p: False)
    assert not stopped.finished and _chat_requests(emulator) == before

    result = Migration(hosted.id, test, "fake", options={"steps": 3}).run()
    assert result.finished
    report = json.loads(Path(result.state.report_json).read_text())
    ni = report["pairs"][0]["noninferiority"]
    assert ni["reference"] == hosted.fine_tuned_model and ni["new"] == "fake:naive-bayes"
    # The verdict is what the numbers say.
    assert ni["shown"] == (ni["p_value"] < 0.05)
    assert result.message == report["verdicts"][0] == ni["verdict"]
    acc = report["reports"]
    assert ni["accuracy_new"] == acc["fake:naive-bayes"]["metrics"]["accuracy"]
    assert Path(result.state.report_html).read_text().count("Verdict:") == 1

    # Run again: nothing is recorded or trained twice.
    asked = _chat_requests(emulator)
    jobs = {j.id for j in FineTuneJob.list()}
    again = Migration(hosted.id, test, "fake", options={"steps": 3}).run()
    assert again.finished and again.message == result.message
    assert _chat_requests(emulator) == asked and {j.id for j in FineTuneJob.list()} == jobs
    assert all(s.done for s in again.plan.steps)

    # Another open model is its own retraining job; the recording is shared.
    other = Migration(hosted.id, test, "fake", "naive-bayes-2", options={"steps": 2}).run()
    assert other.finished and other.state.retrain_job not in jobs and _chat_requests(emulator) == asked
    assert set(other.state.retrain_jobs) == {"fake:naive-bayes", "fake:naive-bayes-2"}
    jobs = {j.id for j in FineTuneJob.list()}

    # The hosted model is shut down: compare still works from the recording.
    emulator.set_model(hosted.fine_tuned_model, shut_down=True)
    out = CliRunner().invoke(app, ["compare", result.state.retrain_jobs["fake:naive-bayes"],
                                   result.state.attached_job, "--data",
                                   str(test), "--bootstrap", "0", "--reference", result.state.attached_job,
                                   "--margin", "0.1"])
    assert out.exit_code == 0, out.output
    verdict = next(x for x in out.output.splitlines() if x.startswith("verdict:"))
    # Jobs are named backend:base model (a job is a fine-tune of it), told apart by id when two share one.
    retrained, attached = (job_label(FineTuneJob.get(j)) for j in (result.state.retrain_job, result.state.attached_job))
    assert verdict.split()[1] in (retrained, "cannot") and attached in verdict
    assert result.state.retrain_job == result.state.retrain_jobs["fake:naive-bayes"]
    assert "10 points" in verdict


def test_dpo_jobs_are_recorded_and_the_plan_says_how_to_retrain_them(tmp_path: Path) -> None:
    pref = write_preference(tmp_path / "pref.jsonl", 20, seed=8)
    hosted = _hosted_job(tmp_path, train=pref, method="dpo", model="gpt-4.1-2025-04-14")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}, {"role": "assistant",
                                                                                       "content": y}]}) + "\n"
                            for t, y in texts(6, seed=3)))
    m = Migration(hosted.id, test, "fake")
    plan = m.plan()
    retrain = next(s for s in plan.steps if s.name == "retrain")
    assert retrain.blocked and "no log-probabilities" in retrain.blocked and "create_retrain_job" in retrain.blocked
    result = m.run()
    assert not result.finished and "carries beta and epochs over" in result.message
    assert find_recording(FineTuneJob.get(result.state.attached_job), test) is not None


def test_dpo_fine_tune_retrains_as_preference_pairs_with_its_beta_and_epochs(tmp_path: Path) -> None:
    pref = write_preference(tmp_path / "pref.jsonl", 20, seed=8)
    client = openai.OpenAI()
    f = client.files.create(file=(pref.name, pref.read_bytes()), purpose="fine-tune")
    hosted = client.fine_tuning.jobs.create(
        model="gpt-4.1-2025-04-14", training_file=f.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 3,
                                                           "learning_rate_multiplier": 0.5}}})
    deadline = time.time() + 60
    while hosted.status not in ("succeeded", "failed") and time.time() < deadline:
        time.sleep(0.02)
        hosted = client.fine_tuning.jobs.retrieve(hosted.id)
    job = FineTuneJob.attach(hosted.id, backend="openai")
    assert job.spec.task == "preference"

    spec, rows = retrain_spec(job, "hf")
    mapped = {r.setting: r for r in rows}
    assert spec.task == "preference" and spec.hyperparameters.epochs == 3
    assert (mapped["beta"].hosted, mapped["beta"].local) == (0.25, 0.25)
    assert mapped["learning rate"].hosted == 0.5 and spec.hyperparameters.learning_rate is None
    assert retrain_options(job, "hf") == {"dpo_beta": 0.25}
    assert retrain_options(job, "remote") == {"hf": {"dpo_beta": 0.25}}
    with pytest.raises(FtkitError, match="does not have"):
        retrain_spec(job, "fake")  # no preference tuning there

    # What the user sets wins; the rest is carried over.
    assert retrain_options(job, "hf", {"dpo_beta": 0.5, "max_steps": 1}) == {"dpo_beta": 0.5, "max_steps": 1}
    assert retrain_options(job, "remote", {"hf": {"lora_r": 8}}) == {"hf": {"dpo_beta": 0.25, "lora_r": 8}}


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["migrate", *args])


def test_bad_input_gives_one_clear_line(tmp_path: Path) -> None:
    test = _test_file(tmp_path)
    out = _cli("ftjob-doesnotexist", "--test", str(test), "--backend", "fake", "--dry-run")
    assert out.exit_code == 2 and "no fine-tuning job 'ftjob-doesnotexist'" in out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1

    few = _chat_file(tmp_path / "few.jsonl", texts(4, seed=1))
    failed = _hosted_job(tmp_path, train=few)
    assert failed.status == "failed"
    out = _cli(failed.id, "--test", str(test), "--backend", "fake", "--dry-run")
    assert out.exit_code == 2 and f"openai job {failed.id} failed" in out.output and "Traceback" not in out.output

    hosted = _hosted_job(tmp_path)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"text": "refund please", "label": "refunds"}) + "\n")
    out = _cli(hosted.id, "--test", str(odd), "--backend", "fake", "--dry-run")
    assert out.exit_code == 1 and "'refunds' are not among the model's training labels" in out.output  # data
    out = _cli(hosted.id, "--test", str(tmp_path / "missing.jsonl"), "--backend", "fake", "--dry-run")
    assert out.exit_code == 2 and "no such test file" in out.output
    out = _cli(hosted.id, "--test", str(test), "--backend", "fake")  # not a terminal, no --yes
    assert out.exit_code == 2 and "Pass --yes" in out.output


def test_a_chat_test_file_is_scored_as_classification(tmp_path: Path) -> None:
    hosted = _hosted_job(tmp_path)
    chat_test = _chat_file(tmp_path / "chat_test.jsonl", texts(12, seed=4))
    result = Migration(hosted.id, chat_test, "fake", options={"steps": 2}).run()
    assert result.finished and Path(result.plan.test).name.endswith(".classification.jsonl")
    with pytest.raises(FtkitError, match="no backend named 'nonexistent-backend'"):
        Migration(hosted.id, chat_test, "nonexistent-backend").run()


def test_base_model_is_scored_under_the_specs_preamble(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in texts(12, seed=1)))
    job = FineTuneJob.create(JobSpec(task="classification", train=train, preamble=PROMPT), backend="openai")
    base = job.base_model()
    assert base.preamble == PROMPT and base.labels == LABELS  # the zero-shot baseline sees the training prompt


def test_record_command_attaches_once_and_migrate_reuses_it(tmp_path: Path, emulator: EmulatorServer) -> None:
    hosted = _hosted_job(tmp_path)
    test = _test_file(tmp_path, 12)
    before = _chat_requests(emulator)
    out = CliRunner().invoke(app, ["openai", "record", hosted.id, "--test", str(test), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.stdout)
    assert rec["n"] == 12 and _chat_requests(emulator) - before == 12
    again = CliRunner().invoke(app, ["openai", "record", hosted.id, "--test", str(test)])
    assert again.exit_code == 0 and rec["job_id"] in again.stdout and _chat_requests(emulator) - before == 12
    plan = Migration(hosted.id, test, "fake").plan()
    assert next(s for s in plan.steps if s.name == "record").done  # the recording made by `record` counts
    assert len([j for j in FineTuneJob.list(backend="openai") if j.backend_job_id == hosted.id]) == 1
    bad = CliRunner().invoke(app, ["openai", "record", "ftjob-nope", "--test", str(test)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
