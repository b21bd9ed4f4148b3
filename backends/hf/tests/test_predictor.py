"""Exact label scoring: one forward pass, the same numbers as scoring each label separately, sums to one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit_hf.predictor import HFPredictor, parse_label

from ftkit.errors import ConfigError

TEXTS = ["WINNER!! Claim your free prize now, call 0800 123", "See you at lunch?", "ok",
         "URGENT: your account was selected for a cash reward of 1000 pounds, reply YES to claim it today"]


@pytest.fixture(scope="module")
def predictor(tiny_llama_dir: Path) -> HFPredictor:
    return HFPredictor.load(tiny_llama_dir, device="cpu", precision="fp32")


def _brute_force(pred: HFPredictor, text: str, labels: list[str]) -> torch.Tensor:
    """Each label scored in its own plain forward pass over prompt + label (no padding, no custom mask)."""
    prompter = pred._prompter(labels)
    prompt = prompter.prompt_ids(text)
    scores = []
    for lab in labels:
        ans = prompter.label_ids[lab]
        with torch.no_grad():
            logp = torch.log_softmax(pred.model(torch.tensor([prompt + ans])).logits[0].float(), -1)
        scores.append(sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(ans)))
    return torch.softmax(torch.tensor(scores), 0)


@pytest.mark.parametrize("labels", [["ham", "spam"], ["positive", "pos", "negative neutral words"]])
def test_scores_match_separate_forward_passes(predictor: HFPredictor, labels: list[str]):
    # Texts of different lengths share one padded batch: padding and the 4-D mask must not change a score.
    results = predictor.classify(TEXTS, labels=labels)
    for text, res in zip(TEXTS, results, strict=True):
        expected = _brute_force(predictor, text, labels)
        got = torch.tensor([res.probabilities[lab] for lab in labels])
        assert torch.allclose(got, expected, atol=1e-4), (text, got, expected)
        assert res.label == labels[int(expected.argmax())]


def test_probabilities_sum_to_one_for_every_label(predictor: HFPredictor):
    labels = ["ham", "spam", "unsure"]
    for res in predictor.classify(TEXTS * 3, labels=labels):
        assert set(res.probabilities) == set(labels)
        assert sum(res.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in res.probabilities.values())
        assert res.unparseable_mass == 0.0


def test_batching_does_not_change_results(predictor: HFPredictor):
    labels = ["ham", "spam"]
    together = predictor.classify(TEXTS, labels=labels)
    alone = [predictor.classify([t], labels=labels)[0] for t in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert a.probabilities["spam"] == pytest.approx(b.probabilities["spam"], abs=1e-4)


def test_generate_is_batched_and_greedy(predictor: HFPredictor):
    prompts = [[{"role": "user", "content": "Hello"}], "The capital of France is", [{"role": "user", "content": "x"}]]
    a = predictor.generate(prompts, max_new_tokens=5)
    b = [predictor.generate([p], max_new_tokens=5)[0] for p in prompts]
    assert len(a) == 3 and all(isinstance(s, str) for s in a)
    assert a == b


def test_classify_needs_labels(predictor: HFPredictor):
    with pytest.raises(ConfigError, match="at least two labels"):
        predictor.classify(["x"])


def test_parse_label():
    assert parse_label("Spam.", ["ham", "spam"]) == "spam"
    assert parse_label("I think this is ham, not spam", ["ham", "spam"]) == "ham"
    assert parse_label("no idea", ["ham", "spam"]) == "UNPARSEABLE"


def test_packing_layout_does_not_change_scores(predictor: HFPredictor):
    from ftkit_hf.scoring import LabelScorer, pack

    assert sorted(i for row in pack([5, 3, 4, 2], 7) for i in row) == [0, 1, 2, 3]
    assert all(sum([5, 3, 4, 2][i] for i in row) <= 7 for row in pack([5, 3, 4, 2], 7))
    prompter = predictor._prompter(["ham", "spam"])
    prompts = [prompter.prompt_ids(t) for t in TEXTS * 2]
    answers = list(prompter.label_ids.values())
    with torch.inference_mode():
        one_row = LabelScorer(predictor.model, 2, "cpu", row_tokens=4096).score(prompts, answers)
        many_rows = LabelScorer(predictor.model, 2, "cpu", row_tokens=16, batch_tokens=64).score(prompts, answers)
        no_prefix = LabelScorer(predictor.model, 2, "cpu").score(prompts, answers, reuse_prefix=False)
    assert torch.allclose(one_row, many_rows, atol=1e-4)
    assert torch.allclose(one_row, no_prefix, atol=1e-4)


def test_chunks_group_rows_by_width():
    from ftkit_hf.scoring import chunks

    sizes = [300, 40, 40, 40, 40, 30, 30, 20]
    rows = [[0], [1, 2], [3, 4], [5, 6, 7]]
    groups = chunks(rows, sizes, batch_tokens=400)
    assert sorted(sorted(r) for g in groups for r in g) == sorted(sorted(r) for r in rows)
    # The 300-token row is a group of its own; the 80-token rows share groups within the budget.
    assert groups[0] == [[0]]
    for g in groups[1:]:
        assert len(g) * max(sum(sizes[i] for i in r) for r in g) <= 400
    assert len(groups) == 2
