"""evaluate() and compare() end to end: a Predictor in batches, saved predictions, jobs, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import ftkit
from ftkit.cli import app
from ftkit.evaluate import ComparisonReport, EvaluationReport, compare, evaluate, write_predictions
from ftkit.evaluate.predictions import Prediction
from ftkit.testing import FakeBackend, FakePredictor

REQUIRED = {"accuracy", "macro_f1", "log_loss", "brier", "ece", "majority_rate", "p_value_vs_majority"}


def rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        if i % 3 == 0:
            out.append({"id": f"x{i}", "text": f"win a free prize now call {i} claim cash", "label": "spam"})
        elif i % 3 == 1:
            out.append({"id": f"x{i}", "text": f"see you at lunch tomorrow {i} with the team", "label": "ham"})
        else:  # ambiguous: words of both classes
            out.append({"id": f"x{i}", "text": f"free lunch tomorrow {i} call the team", "label": "spam"})
    return out


def write(path: Path, items: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in items))
    return path


class CountingPredictor(FakePredictor):
    """The naive Bayes test model, counting how many batches it was asked."""

    calls: list[int]

    def classify(self, texts, *, labels=None):
        self.calls.append(len(texts))
        return super().classify(texts, labels=labels)


@pytest.fixture
def model() -> CountingPredictor:
    train = rows(60, offset=100)
    m = CountingPredictor([r["text"] for r in train], [r["label"] for r in train], ["ham", "spam"])
    m.calls = []
    return m


def test_predictor_is_called_in_batches(tmp_path: Path, model: CountingPredictor) -> None:
    data = write(tmp_path / "test.jsonl", rows(45))
    report = evaluate(model, data, batch_size=20, bootstrap=100, progress=False)
    assert model.calls == [20, 20, 5]
    assert set(report.metrics) >= REQUIRED
    assert all(isinstance(report.metrics[k], float) for k in REQUIRED)
    assert report.labels == ["ham", "spam"]
    assert report.metrics["n"] == 45
    # JSON round trip: the documented flat metrics dict survives.
    again = EvaluationReport.model_validate_json(report.to_json())
    assert again.metrics == report.metrics
    assert json.loads(report.to_json())["per_class"][0]["label"] == "ham"


def test_terminal_table_shows_metrics(tmp_path: Path, model: CountingPredictor) -> None:
    from rich.console import Console

    report = evaluate(model, write(tmp_path / "t.jsonl", rows(30)), bootstrap=0, progress=False)
    console = Console(record=True, width=150)
    report.print(console)
    text = console.export_text()
    for key in ("accuracy", "macro_f1", "p_value_vs_majority", "per class"):
        assert key in text


def test_compare_predictor_and_saved_predictions(tmp_path: Path, model: CountingPredictor) -> None:
    data = write(tmp_path / "test.jsonl", rows(60))
    always_spam = write(tmp_path / "spam.jsonl", [{"id": r["id"], "prediction": "spam"} for r in rows(60)])
    result = compare({"nb": model, "always-spam": always_spam}, data, bootstrap=0, progress=False)
    assert isinstance(result, ComparisonReport)
    assert list(result.metrics) == ["nb", "always-spam"]
    (pair,) = result.pairs
    nb_right = result.reports["nb"].correct
    spam_right = result.reports["always-spam"].correct
    assert pair["a_only"] == int((nb_right & ~spam_right).sum())
    assert pair["b_only"] == int((~nb_right & spam_right).sum())
    assert 0 <= pair["p_value"] <= 1
    assert result.reports["always-spam"].metrics["accuracy"] == pytest.approx(2 / 3)
    assert result.reports["always-spam"].metrics["p_value_vs_majority"] > 0.4  # majority baseline is not better


def _finished_job(tmp_path: Path) -> ftkit.FineTuneJob:
    ftkit.register_backend(FakeBackend)
    spec = ftkit.JobSpec(task="classification", train=write(tmp_path / "train.jsonl", rows(60, offset=100)))
    job = ftkit.FineTuneJob.create(spec, backend="fake", options={"steps": 3, "seconds_per_step": 0.0})
    job.start()
    job.wait(timeout=30, poll_interval=0.01)
    return job


def test_evaluate_a_job_brings_loss_curve_and_costs(tmp_path: Path) -> None:
    job = _finished_job(tmp_path)
    report = evaluate(job, write(tmp_path / "test.jsonl", rows(30)), bootstrap=0, progress=False)
    assert report.name == job.id
    assert [p["step"] for p in report.training_curve] == [1, 2, 3]
    assert report.cost is not None
    assert report.metrics["cost_estimated_usd"] == pytest.approx(0.003)
    assert report.metrics["cost_actual_usd"] == pytest.approx(0.003)
    assert report.job is not None and report.job["backend"] == "fake"


def test_cli_eval_predictions_json_and_html(tmp_path: Path) -> None:
    data = write(tmp_path / "test.jsonl", rows(30))
    preds = [Prediction(label=r["label"] if i % 4 else "ham", probabilities={"ham": 0.3, "spam": 0.7})
             for i, r in enumerate(rows(30))]
    write_predictions(tmp_path / "p.jsonl", preds, [r["id"] for r in rows(30)])
    res = CliRunner().invoke(app, ["eval", "--predictions", str(tmp_path / "p.jsonl"), "--data", str(data),
                                   "--json", "--html", str(tmp_path / "r.html"), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["metrics"]) >= REQUIRED
    assert out["metrics"]["n"] == 30
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "http://" not in page and "https://" not in page  # self-contained


def test_cli_eval_job_and_compare(tmp_path: Path) -> None:
    job = _finished_job(tmp_path)
    data = write(tmp_path / "test.jsonl", rows(30))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--job", job.id, "--data", str(data), "--bootstrap", "0",
                              "--save-predictions", str(tmp_path / "job-preds.jsonl")])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.stdout
    res = runner.invoke(app, ["compare", job.id, str(tmp_path / "job-preds.jsonl"), "--data", str(data), "--json",
                              "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    (pair,) = out["pairs"]
    assert pair["a_only"] == pair["b_only"] == 0  # the saved predictions are the job model's own answers
    assert pair["p_value"] == 1.0


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    data = write(tmp_path / "test.jsonl", rows(3))
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prediction": "spam"}\n{"prediction": \n{"prediction": "ham"}\n')
    res = CliRunner().invoke(app, ["eval", "--predictions", str(bad), "--data", str(data)])
    assert res.exit_code == 1  # the data is wrong (2 is for a command that cannot run as given)
    assert "p.jsonl:2: invalid JSON" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["eval", "--data", str(data)])
    assert res.exit_code == 2 and "exactly one of" in res.output


def test_ftkit_evaluate_is_callable_however_it_was_imported(tmp_path: Path) -> None:
    import ftkit.evaluate.metrics  # binds ftkit.evaluate to the package

    data = write(tmp_path / "t.jsonl", rows(6))
    preds = [{"prediction": r["label"]} for r in rows(6)]
    assert ftkit.evaluate(preds, data, bootstrap=0).metrics["accuracy"] == 1.0
    assert ftkit.compare([preds, preds], data, bootstrap=0).pairs[0]["p_value"] == 1.0


@pytest.mark.slow
def test_cli_eval_real_base_model(tmp_path: Path) -> None:
    """A zero-shot baseline with a real small model (hf backend, SmolLM2-135M on CPU)."""
    from ftkit.backend import installed_backends

    if "hf" not in installed_backends():
        pytest.skip("the hf backend is not installed")
    data = write(tmp_path / "test.jsonl", rows(12))
    res = CliRunner().invoke(app, ["eval", "--base", "hf:smollm2-135m", "--data", str(data), "--json",
                                   "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["name"] == "hf:smollm2-135m"
    assert out["metrics"]["n"] == 12
    assert 0.0 <= out["metrics"]["accuracy"] <= 1.0
    assert out["metrics"]["log_loss"] is not None  # the hf Predictor scores every label exactly
