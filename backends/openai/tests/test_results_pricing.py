"""Results files, prices, the epoch heuristic and label scoring: the pure parts."""

from __future__ import annotations

import base64
import math

import pytest
from ftkit_openai import pricing
from ftkit_openai.results import parse_results
from ftkit_openai.scoring import classify_choice, first_tokens, parse_label

from ftkit.data.tokens import get_encoding

CSV = b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,1.52347,0.0,,\n2,1.1,0.5,1.3,0.4\n"


@pytest.mark.parametrize("content", [CSV, base64.b64encode(CSV), base64.b64encode(CSV) + b"\n"])
def test_results_plain_or_base64(content: bytes) -> None:
    rows = parse_results(content)
    assert rows == [
        {"step": 1, "train_loss": 1.52347, "train_mean_token_accuracy": 0.0},
        {"step": 2, "train_loss": 1.1, "train_mean_token_accuracy": 0.5, "valid_loss": 1.3,
         "valid_mean_token_accuracy": 0.4},
    ]


def test_results_tolerate_extra_and_missing_columns() -> None:
    content = b"step,train_loss,full_valid_loss,new_column\n3,0.5,0.7,abc\n1,0.9,,\n"
    assert parse_results(content) == [{"step": 1, "train_loss": 0.9}, {"step": 3, "train_loss": 0.5,
                                                                          "full_valid_loss": 0.7}]


@pytest.mark.parametrize(("n", "epochs"), [(5, 20), (10, 10), (20, 5), (34, 3), (100, 3), (10_000, 2), (1, 25)])
def test_default_epochs_follow_the_cookbook(n: int, epochs: int) -> None:
    assert pricing.default_epochs(n) == epochs


def test_prices() -> None:
    # The guide's worked example: 100,000 tokens × 3 epochs on gpt-4o-mini at $3/1M ≈ $0.90.
    assert pricing.training_cost("gpt-4o-mini-2024-07-18", 300_000) == pytest.approx(0.90)
    assert pricing.training_cost("ft:gpt-4.1-mini-2025-04-14:org:x:abc12345", 1_000_000) == 5.0
    assert pricing.training_cost("gpt-4.1-nano", 1_000_000) == 1.5
    assert pricing.training_cost("o4-mini-2025-04-16", 1_000) is None  # billed per hour
    assert pricing.inference_cost("gpt-4.1-mini-2025-04-14", 1_000_000, 0, batch=True) == 0.4
    assert pricing.PRICES_AS_OF and "pricing" in pricing.PRICES_SOURCE


def _choice(content: str, alternatives: list[tuple[str, float]]) -> dict:
    top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alternatives]
    return {"message": {"content": content},
            "logprobs": {"content": [{"token": alternatives[0][0], "logprob": top[0]["logprob"], "bytes": None,
                                      "top_logprobs": top}]}}


def test_logprob_scoring_renormalises_and_reports_unparseable_mass() -> None:
    labels = ["positive", "negative"]
    starts = first_tokens(labels, get_encoding("o200k_base"))
    c = classify_choice(_choice("positive", [("positive", 0.6), (" Negative", 0.2), ("I", 0.1)]), labels, starts)
    assert c.label == "positive"
    assert c.probabilities["positive"] == pytest.approx(0.75)
    assert c.unparseable_mass == pytest.approx(0.2)


def test_shared_first_token_uses_the_answer() -> None:
    labels = ["very good", "very bad", "ok"]
    enc = get_encoding("o200k_base")
    starts = first_tokens(labels, enc)
    c = classify_choice(_choice("very bad", [("very", 0.8), ("ok", 0.2)]), labels, starts)
    assert c.label == "very bad" and c.probabilities["very bad"] == pytest.approx(0.8)


def test_whole_label_alternatives_count_for_their_label() -> None:
    """A server that scores labels exactly (ftkit serve) reports each label as one alternative; labels that share
    a first token, or span several tokens, keep their own probability."""
    labels = ["very good", "very bad", "ok"]
    starts = first_tokens(labels, get_encoding("o200k_base"))
    c = classify_choice(_choice("very bad", [("very bad", 0.5), ("very good", 0.3), ("ok", 0.2)]), labels, starts)
    assert c.probabilities == pytest.approx({"very bad": 0.5, "very good": 0.3, "ok": 0.2})
    assert c.unparseable_mass == pytest.approx(0.0)


def test_parse_label() -> None:
    assert parse_label(" Billing.", ["billing", "sales"]) == "billing"
    assert parse_label("Label: sales", ["billing", "sales"]) == "sales"
    assert parse_label("I think billing", ["billing", "sales"]) is None


def test_prices_agree_with_the_core_catalogue() -> None:
    """ftkit.costs keeps its own copy of this table; the two must not drift apart."""
    catalogue = pytest.importorskip("ftkit.costs.catalogue")
    assert set(catalogue.OPENAI_PRICES) == set(pricing.PRICES)
    for model, core in catalogue.OPENAI_PRICES.items():
        mine = pricing.PRICES[model]
        assert (mine.training, mine.training_per_hour, mine.input, mine.cached_input, mine.output, mine.batch_input,
                mine.batch_output) == (core.training_per_mtok, core.training_per_hour, core.input_per_mtok,
                                       core.cached_input_per_mtok, core.output_per_mtok, core.batch_input_per_mtok,
                                       core.batch_output_per_mtok), model
