"""Preference evaluation: the metrics from answer log-probabilities, and evaluate()/compare() on a preference file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ftkit
from ftkit.errors import EvaluationError
from ftkit.evaluate.preference import preference_metrics, wilson


def test_wilson_interval_matches_the_textbook_value() -> None:
    low, high = wilson(np.array([True] * 8 + [False] * 2))
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Wilson 95% for 8/10


def test_metrics_with_and_without_a_reference() -> None:
    chosen = np.array([-1.0, -2.0, -3.0, -1.0])
    rejected = np.array([-2.0, -1.0, -4.0, -1.5])
    metrics, ci, correct, margins = preference_metrics(chosen, rejected, None, None)
    assert metrics["likelihood_accuracy"] == metrics["preference_accuracy"] == 0.75
    assert margins is None and correct.tolist() == [True, False, True, True]
    ref_c = np.array([-1.0, -3.0, -2.0, -1.0])
    ref_r = np.array([-1.0, -1.0, -4.0, -1.0])
    metrics, ci, correct, margins = preference_metrics(chosen, rejected, ref_c, ref_r)
    assert margins is not None and margins.tolist() == [1.0, 1.0, -1.0, 0.5]
    assert metrics["preference_accuracy"] == 0.75 and metrics["reward_margin_mean"] == pytest.approx(0.375)
    assert metrics["reference_likelihood_accuracy"] == 0.25
    assert ci["preference_accuracy"][0] < 0.75 < ci["preference_accuracy"][1]


class _Scorer:
    """A Predictor that scores answers by a fixed table: stands in for a model's log-probabilities."""

    labels = None

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def generate(self, inputs: Sequence[Any], *, max_new_tokens: int = 256, **kwargs: Any) -> list[str]:
        raise AssertionError("preference evaluation scores answers, it does not generate")

    def answer_logprobs(self, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        return [self.table[c[-1]["content"]] for c in conversations]


def _pref_file(tmp_path: Path) -> Path:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good{i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad{i}"}],
        }
        for i in range(3)
    ]
    path = tmp_path / "pref.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_and_compare_on_a_preference_file(tmp_path: Path) -> None:
    data = _pref_file(tmp_path)
    base = _Scorer({"good0": -5, "bad0": -4, "good1": -5, "bad1": -4, "good2": -3, "bad2": -4})
    tuned = _Scorer({"good0": -3, "bad0": -4, "good1": -5, "bad1": -3, "good2": -2, "bad2": -4})
    report = ftkit.evaluate(tuned, data, reference=base, name="tuned")
    assert report.task == "preference"
    # margins: (+2 - 0), (0 - +1), (+1 - 0)
    assert report.reward_margins == [2.0, -1.0, 1.0]
    assert report.metrics["preference_accuracy"] == pytest.approx(2 / 3)
    assert report.metrics["likelihood_accuracy"] == pytest.approx(2 / 3)
    assert "preference_accuracy" in report.ci
    cmp = ftkit.compare({"base": base, "tuned": tuned}, data)
    assert cmp.pairs[0]["accuracy_a"] == pytest.approx(1 / 3) and cmp.pairs[0]["accuracy_b"] == pytest.approx(2 / 3)
    report.to_html()  # renders without classification parts


def test_a_model_that_cannot_score_is_a_clear_error(tmp_path: Path) -> None:
    class Generator:
        labels = None

        def generate(self, inputs: Sequence[Any], **kwargs: Any) -> list[str]:
            return ["x"] * len(inputs)

    with pytest.raises(EvaluationError, match="cannot score answers"):
        ftkit.evaluate(Generator(), _pref_file(tmp_path))


def test_bad_preference_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    row = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [],
        "non_preferred_output": [],
    }
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=r"bad.jsonl:1: 'preferred_output'"):
        ftkit.evaluate(_Scorer({}), path)
