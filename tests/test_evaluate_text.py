"""ftkit.evaluate on a text file: perplexity / masked-token accuracy over documents, bootstrap intervals."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import ftkit
from ftkit.errors import EvaluationError
from ftkit.evaluate.text import text_metrics


class _Scorer:
    """A model that scores each document's characters: NLL 1 nat per character, 'a's predicted right."""

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self.seen: list[str] = []

    def text_scores(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        self.seen.extend(texts)
        return [{"nll": float(len(t)), "tokens": len(t), "correct": t.count("a") if self.masked else None}
                for t in texts]


def _docs(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["aab", "abc", "cccc", "a"]), encoding="utf-8")
    return p


def test_causal_perplexity_is_exp_of_the_mean_nll_over_all_tokens(tmp_path: Path) -> None:
    model = _Scorer(masked=False)
    report = ftkit.evaluate(model, _docs(tmp_path), progress=False, batch_size=3)
    assert model.seen == ["aab", "abc", "cccc", "a"]
    assert report.task == "text" and "masked_token_accuracy" not in report.metrics
    assert report.metrics["mean_nll"] == pytest.approx(1.0) and report.metrics["perplexity"] == pytest.approx(math.e)
    assert report.metrics["documents"] == 4 and report.metrics["scored_tokens"] == 11
    out = Console(record=True, width=120)
    report.print(out)
    assert "perplexity" in out.export_text()


def test_masked_accuracy_pools_tokens_and_resamples_documents() -> None:
    scores = [{"nll": 2.0, "tokens": 10, "correct": 9}, {"nll": 8.0, "tokens": 10, "correct": 1},
              {"nll": 1.0, "tokens": 20, "correct": 10}]
    metrics, ci = text_metrics(scores, n_resamples=2000, seed=0)
    assert metrics["masked_token_accuracy"] == pytest.approx(20 / 40)
    assert metrics["perplexity"] == pytest.approx(math.exp(11 / 40))
    low, high = ci["masked_token_accuracy"]
    # Documents, not tokens, are resampled: the interval spans the documents' very different rates.
    assert low < 0.3 and high > 0.7
    assert ci["perplexity"][0] <= metrics["perplexity"] <= ci["perplexity"][1]


def test_nothing_scored_and_a_model_without_scores_are_errors(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no token"):
        text_metrics([{"nll": 0.0, "tokens": 0}])
    with pytest.raises(EvaluationError, match="cannot score text"):
        ftkit.evaluate([{"prediction": "x"}], _docs(tmp_path), progress=False)
