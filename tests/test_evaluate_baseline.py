"""evaluate() fits a bag-of-words baseline on the training data and says plainly when the model does not beat it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import ftkit
from ftkit.errors import EvaluationError
from ftkit.evaluate import evaluate
from ftkit.evaluate.baseline import fit_bow
from ftkit.testing import FakeBackend
from tests.test_evaluate_report import rows, write


def _terminal(report: ftkit.EvaluationReport) -> str:
    buf = io.StringIO()
    report.print(Console(file=buf, width=200))
    return buf.getvalue()


def test_a_model_worse_than_bag_of_words_is_told_so(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", rows(90, offset=500))
    test = write(tmp_path / "test.jsonl", rows(60))
    always_ham = [{"prediction": "ham", "probabilities": {"ham": 0.6, "spam": 0.4}} for _ in range(60)]
    report = evaluate(always_ham, test, train=train, bootstrap=0)
    b = report.baseline
    assert b is not None and b["train_examples"] == 90 and not b["beaten"]
    # The words separate spam and ham in this data: the baseline does far better than always answering ham.
    assert b["accuracy"] > 0.9 and report.metrics["accuracy"] == pytest.approx(1 / 3)
    assert report.metrics["beats_baseline"] is False
    assert report.metrics["baseline_accuracy"] == b["accuracy"]
    assert report.notes[0].startswith("The model does NOT beat a bag-of-words baseline")
    assert b["p_value"] < 0.001  # McNemar: the two sets of answers differ
    out = _terminal(report)
    assert "bag-of-words baseline" in out and "TF-IDF + logistic regression" in out and "does NOT beat" in out
    assert json.loads(report.to_json())["baseline"]["accuracy"] == b["accuracy"]
    assert "does <b>not</b> beat" in report.to_html()


def test_a_model_that_beats_it_is_told_so_too(tmp_path: Path) -> None:
    # Training labels swapped: the baseline learns the opposite of the truth.
    swapped = [r | {"label": "ham" if r["label"] == "spam" else "spam"} for r in rows(9, offset=500)]
    train = write(tmp_path / "train.jsonl", swapped)
    test = write(tmp_path / "test.jsonl", rows(60))
    perfect = [{"prediction": r["label"], "probabilities": {"ham": float(r["label"] == "ham"),
                                                            "spam": float(r["label"] == "spam")}} for r in rows(60)]
    report = evaluate(perfect, test, train=train, bootstrap=0)
    assert report.metrics["beats_baseline"] is True
    assert report.notes[0].startswith("The model beats the bag-of-words baseline fitted on the same 9 training")
    assert "The model beats TF-IDF" in report.to_html()


def test_a_job_brings_its_own_training_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTKIT_HOME", str(tmp_path / "home"))
    ftkit.register_backend(FakeBackend)
    train = write(tmp_path / "train.jsonl", rows(60, offset=100))
    spec = ftkit.JobSpec(task="classification", train=train, labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="fake", options={"steps": 2, "seconds_per_step": 0.0})
    job.start()
    job.wait(timeout=30, poll_interval=0.01)
    test = write(tmp_path / "test.jsonl", rows(30))
    report = evaluate(job, test, bootstrap=0, progress=False)
    assert report.baseline is not None and report.baseline["train_file"] == str(train)
    assert evaluate(job, test, bootstrap=0, progress=False, baseline=False).baseline is None


def test_without_training_data_there_is_no_baseline(tmp_path: Path) -> None:
    test = write(tmp_path / "test.jsonl", rows(12))
    report = evaluate([{"prediction": r["label"]} for r in rows(12)], test, bootstrap=0)
    assert report.baseline is None and "beats_baseline" not in report.metrics


def test_chat_training_data_is_a_clear_error(tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "ham"}]}) + "\n")
    test = write(tmp_path / "test.jsonl", rows(12))
    with pytest.raises(EvaluationError, match=r"chat\.jsonl: the bag-of-words baseline needs classification data"):
        evaluate([{"prediction": r["label"]} for r in rows(12)], test, train=chat, bootstrap=0)


def test_regularisation_is_chosen_by_cross_validation() -> None:
    data = rows(90, offset=7)
    clf = fit_bow([r["text"] for r in data], [r["label"] for r in data])
    assert clf.c in (0.3, 1.0, 3.0, 10.0, 30.0) and clf.classes == ["ham", "spam"]
    with pytest.raises(EvaluationError, match="at least two labels"):
        fit_bow(["a", "b"], ["x", "x"])
