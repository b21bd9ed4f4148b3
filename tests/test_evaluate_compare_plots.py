"""Comparison reports: models named by backend and model, loss on epochs when steps differ, log cost axis."""

from __future__ import annotations

from pathlib import Path

import pytest

import ftkit
from ftkit.evaluate import compare
from ftkit.evaluate.plots import cost_figure, loss_axis, loss_figure
from ftkit.testing import FakeBackend
from tests.test_evaluate_report import rows, write


def _curve(total: int, epochs: int, with_epoch: bool = True) -> list[dict[str, float]]:
    points = [{"step": s, "total_steps": total, "train_loss": 1 / s} for s in range(1, total + 1)]
    return [p | {"epoch": p["step"] * epochs / total} for p in points] if with_epoch else points


def test_loss_on_epochs_when_steps_differ() -> None:
    """Before: always against step, so a 30-step OpenAI job and a 600-step hf job were not comparable."""
    curves = {"openai:gpt-4.1-mini": _curve(30, 3), "hf:smollm2-135m": _curve(600, 3)}
    assert loss_axis(curves) == "epoch"
    ax = loss_figure(curves).axes[0]
    assert ax.get_xlabel() == "epoch"
    assert [max(line.get_xdata()) for line in ax.get_lines()] == [3.0, 3.0]  # both end at epoch 3
    same = {"a": _curve(30, 3), "b": _curve(30, 1)}
    assert loss_axis(same) == "step" and loss_figure(same).axes[0].get_xlabel() == "step"
    no_epochs = {"a": _curve(10, 1, with_epoch=False), "b": _curve(40, 1, with_epoch=False)}
    ax = loss_figure(no_epochs).axes[0]
    assert loss_axis(no_epochs) == "share" and [max(line.get_xdata()) for line in ax.get_lines()] == [1.0, 1.0]


def test_cost_axis_is_logarithmic_across_orders_of_magnitude() -> None:
    """Before: linear, so a $0.002 local job beside a $12 hosted one drew as no bar at all."""
    far = cost_figure({"hf:smollm2-135m": {"estimated": 0.002, "actual": 0.0019},
                       "openai:gpt-4.1": {"estimated": 12.0, "actual": None}})  # fmt: skip
    ax = far.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "USD (log scale)"
    labels = [t.get_text() for t in ax.texts]
    assert "$0.002" in labels and "$12.00" in labels and "-" in labels  # every bar says its amount
    near = cost_figure({"a": {"estimated": 1.0, "actual": 2.0}, "b": {"estimated": 3.0, "actual": 4.0}})
    assert near.axes[0].get_yscale() == "linear"


def _job(tmp_path: Path, name: str, model: str, steps: int) -> ftkit.FineTuneJob:
    spec = ftkit.JobSpec(task="classification", model=model, train=write(tmp_path / f"{name}.jsonl", rows(60, 100)))
    job = ftkit.FineTuneJob.create(spec, backend="fake", options={"steps": steps, "seconds_per_step": 0.0})
    job.start()
    job.wait(timeout=30, poll_interval=0.01)
    return job


def test_compare_names_jobs_by_backend_and_model(tmp_path: Path) -> None:
    """Before: tables, plots and verdicts named each model by its job id (``ftk-20261207-102956-313615``)."""
    ftkit.register_backend(FakeBackend)
    small, big = _job(tmp_path, "a", "nb-small", 3), _job(tmp_path, "b", "nb-big", 5)
    data = write(tmp_path / "test.jsonl", rows(20))
    result = compare([small, big], data, bootstrap=0, progress=False, reference=big.id)
    assert list(result.reports) == ["fake:nb-small", "fake:nb-big"]
    assert result.reference == "fake:nb-big"  # a job id still names the reference
    assert "fake:nb-small" in result.verdicts[0]
    again = _job(tmp_path, "c", "nb-small", 3)
    twins = compare([small, again], data, bootstrap=0, progress=False)
    assert list(twins.reports) == [f"fake:nb-small ({small.id})", f"fake:nb-small ({again.id})"]
    with pytest.raises(ftkit.EvaluationError, match="reference 'nope'"):
        compare([small, big], data, bootstrap=0, progress=False, reference="nope")
