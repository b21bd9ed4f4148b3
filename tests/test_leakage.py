"""The leakage guard: validation against training at create, test against a job's data at evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ftkit
from ftkit import FineTuneJob, JobSpec, register_backend
from ftkit.data import Dataset
from ftkit.data.leakage import check_leakage
from ftkit.errors import DatasetError
from ftkit.testing import FakeBackend, FakePredictor
from tests.helpers import chat, spam_rows, write_jsonl

register_backend(FakeBackend)


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    """Distinct labelled examples with ids."""
    return [{"id": f"r{i}", **r} for i, r in enumerate(spam_rows(start + n)[start:], start=start)]


def spec(train: Path, validation: Path | None, **kw: object) -> JobSpec:
    return JobSpec(task="classification", train=train, validation=validation, **kw)  # type: ignore[arg-type]


def test_same_file_is_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(40))
    with pytest.raises(DatasetError, match="the validation file is the train file") as e:
        FineTuneJob.create(spec(train, train), backend="fake")
    assert "allow_overlap" in str(e.value) and "40 exact" in str(e.value)


def test_byte_identical_copy_is_the_same_file(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(40))
    copy = tmp_path / "valid.jsonl"
    copy.write_bytes(train.read_bytes())
    report = check_leakage(copy, {"train": train}, role="validation")
    assert report.overlaps[0].same_file and report.overlapping == 40


def test_reordered_copy_is_refused(tmp_path: Path) -> None:
    data = rows(40)
    train = write_jsonl(tmp_path / "train.jsonl", data)
    valid = write_jsonl(tmp_path / "valid.jsonl", data[::-1])
    report = check_leakage(valid, {"train": train}, role="validation")
    (o,) = report.overlaps
    assert not o.same_file and (o.exact, o.near) == (40, 0) and report.fraction == 1.0
    assert (o.examples[0].line, o.examples[0].other_line, o.examples[0].id) == (1, 40, "r39")
    with pytest.raises(DatasetError, match="40 of 40 validation example"):
        FineTuneJob.create(spec(train, valid), backend="fake")


def test_ten_percent_overlap_counts_near_duplicates_apart(tmp_path: Path) -> None:
    train_rows = rows(100)
    fresh = rows(45, start=100)
    # 10% of a 50-example validation file comes from training: 3 as they are, 2 re-cased and re-spaced.
    leaked = [train_rows[7], train_rows[20], train_rows[33]]
    near = [dict(train_rows[50], text="  " + str(train_rows[50]["text"]).upper()),
            dict(train_rows[61], text=str(train_rows[61]["text"]).replace(" ", "\t "))]
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", [*fresh[:20], *leaked, *fresh[20:], *near])
    report = check_leakage(valid, {"train": train}, role="validation")
    (o,) = report.overlaps
    assert report.examples == 50 and report.overlapping == 5 and report.fraction == 0.1
    assert (o.exact, o.near) == (3, 2)
    assert [(e.kind, e.line, e.other_line) for e in o.examples] == [
        ("exact", 21, 8), ("exact", 22, 21), ("exact", 23, 34), ("near", 49, 51), ("near", 50, 62)]
    with pytest.raises(DatasetError, match=r"5 of 50 validation example.*\(3 exact, 2 only after normalising"):
        FineTuneJob.create(spec(train, valid), backend="fake")
    # `stats --test` counts the same overlap (it uses the same normalisation).
    assert Dataset.load(train).stats(test=valid).overlap["overlapping"] == 5  # type: ignore[index]

    # A deliberate overlap is allowed and recorded in the manifest.
    job = FineTuneJob.create(spec(train, valid, allow_overlap=True), backend="fake")
    entry = job.record.manifest["leakage"]["validation_vs_train"]
    assert entry == {"examples": 50, "same_file": False, "exact": 3, "near": 2, "lines": [21, 22, 23, 49, 50],
                     "allowed": True}
    assert job.spec.allow_overlap


def test_clean_validation_is_recorded_too(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(40))
    valid = write_jsonl(tmp_path / "valid.jsonl", rows(10, start=40))
    job = FineTuneJob.create(spec(train, valid), backend="fake")
    assert job.record.manifest["leakage"]["validation_vs_train"]["exact"] == 0
    assert "leakage" not in FineTuneJob.create(spec(train, None), backend="fake").record.manifest


def test_chat_inputs_compare_before_the_answer(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat(f"question {i}", "yes") for i in range(12)])
    # Same question with another answer: the input leaked. Re-spaced question: near. New question: clean.
    test = write_jsonl(tmp_path / "test.jsonl", [chat("question 3", "no"), chat("QUESTION   4", "yes"),
                                                 chat("question 99", "yes")])
    (o,) = check_leakage(test, {"train": train}).overlaps
    assert (o.exact, o.near) == (1, 1) and o.examples[0].text == "question 3"


def test_rows_missing_reference_is_noted(tmp_path: Path) -> None:
    report = check_leakage(rows(3), {"train": tmp_path / "gone.jsonl", "validation": None})
    assert report.examples == 3 and not report.leaked and report.missing == [str(tmp_path / "gone.jsonl")]
    assert "no such file" in report.summary()


def _trained_job(tmp_path: Path) -> tuple[FineTuneJob, Path]:
    train_rows = rows(120)
    train = write_jsonl(tmp_path / "train.jsonl", train_rows[:100])
    valid = write_jsonl(tmp_path / "valid.jsonl", train_rows[100:])
    job = FineTuneJob.create(spec(train, valid), backend="fake", options={"steps": 2, "seconds_per_step": 0.0})
    job.start()
    job.wait(timeout=30)
    # The test file repeats two training examples and one validation example (re-cased).
    test_rows = [*rows(30, start=200), train_rows[4], train_rows[9],
                 dict(train_rows[105], text=str(train_rows[105]["text"]).title())]
    return job, write_jsonl(tmp_path / "test.jsonl", test_rows)


def test_evaluate_puts_leakage_first(tmp_path: Path) -> None:
    job, test = _trained_job(tmp_path)
    report = ftkit.evaluate(job, test, bootstrap=0)
    lk = report.leakage
    assert lk is not None and lk["leaked"] and lk["overlapping"] == 3 and lk["examples"] == 33
    by_role = {o["role"]: o for o in lk["overlaps"]}
    assert (by_role["train"]["exact"], by_role["train"]["near"]) == (2, 0)
    assert (by_role["validation"]["exact"], by_role["validation"]["near"]) == (0, 1)
    assert [e["id"] for e in by_role["train"]["examples"]] == ["r4", "r9"]
    d = report.to_dict()
    assert list(d)[:4] == ["name", "task", "data", "leakage"]
    first = report.tables().renderables[0]
    assert isinstance(first, str) and first.startswith("[bold red]LEAKAGE:") and "3 of 33" in first
    page = report.to_html()
    assert page.index('class="leak"') < page.index("<h2>Metrics</h2>") and "r9" in page


def test_evaluate_clean_test_says_so(tmp_path: Path) -> None:
    job, leaky = _trained_job(tmp_path)
    clean = write_jsonl(tmp_path / "clean.jsonl", rows(20, start=300))
    report = ftkit.evaluate(job, clean, bootstrap=0)
    assert report.leakage is not None and not report.leakage["leaked"]
    assert 'class="clean"' in report.to_html()
    # The job's model knows its job; a predictor built by hand has no known training data.
    assert ftkit.evaluate(job.model(), leaky, bootstrap=0).leakage["overlapping"] == 3  # type: ignore[index]
    bare = FakePredictor(["see you soon", "claim cash now"], ["ham", "spam"], ["ham", "spam"])
    assert ftkit.evaluate(bare, clean, bootstrap=0).leakage is None


def test_evaluate_notes_a_training_file_changed_since(tmp_path: Path) -> None:
    job, test = _trained_job(tmp_path)
    with open(job.spec.train, "ab") as f:
        f.write(json.dumps({"text": "added later", "label": "ham"}).encode() + b"\n")
    lk = ftkit.evaluate(job, test, bootstrap=0).leakage
    assert lk is not None and any("changed since the job was created" in n for n in lk["notes"])


RUN = ("import ftkit, ftkit.cli as c; from ftkit.testing import FakeBackend; "
       "ftkit.register_backend(FakeBackend); c.main()")


def test_cli_eval_json_and_train_refusal(tmp_path: Path) -> None:
    job, test = _trained_job(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run([sys.executable, "-c", RUN, "eval", "--job", job.id, "--data", str(test), "--json",
                        "--bootstrap", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["leakage"]["overlapping"] == 3
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(f'task = "classification"\ntrain = "{job.spec.train}"\nvalidation = "{job.spec.train}"\n'
                   'backend = "fake"\n')
    r = subprocess.run([sys.executable, "-c", RUN, "train", str(cfg), "--no-wait"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 1 and "the validation file is the train file" in r.stderr and "Traceback" not in r.stderr
