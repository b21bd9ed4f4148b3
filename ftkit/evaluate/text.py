"""Held-out evaluation of domain adaptation on unlabelled text: perplexity, masked-token accuracy.

A model that can score text (``text_scores``: the hf backend's models) returns, for each document, the summed
negative log-likelihood of its scored tokens, how many tokens were scored and, for a masked LM, how many
masked tokens it predicted exactly:

* a causal LM scores every token given the ones before it (the first excepted): ``perplexity`` is
  ``exp(sum NLL / sum tokens)`` over the whole test file, ``mean_nll`` the exponent (nats per token);
* a masked LM scores 15% of the real tokens of each document, replaced by ``[MASK]`` with a seeded generator
  (the same positions for every model): ``masked_token_accuracy`` is the share predicted exactly, and
  ``perplexity`` the masked tokens' perplexity.

Tokens of one document are not independent, so the 95% intervals resample documents (a percentile bootstrap
over documents, scipy's ``bootstrap``), not tokens. Perplexities of models with different tokenizers are not
comparable (they count different tokens).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from ftkit.errors import EvaluationError

TextScores = Callable[[Sequence[str]], list[dict[str, Any]]]


def text_scorer(source: Any, what: str) -> TextScores:
    """The source's ``text_scores``, or an EvaluationError saying it has none."""
    scorer = getattr(source, "text_scores", None)
    if not callable(scorer):
        raise EvaluationError(
            f"{what} cannot score text (no text_scores): perplexity and masked-token accuracy need the model's "
            "token probabilities, which the hf backend's models give and OpenAI's API does not"
        )
    return scorer


def text_metrics(
    scores: Sequence[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Perplexity (and masked-token accuracy) over documents, with document-bootstrap 95% intervals.

    Args:
        scores: one ``{"nll", "tokens", "correct"?}`` per document (``correct`` for masked LMs).
        n_resamples: bootstrap resamples (0: no intervals).
        seed: the bootstrap's seed.

    Raises:
        EvaluationError: no token was scored.
    """
    nll = np.array([float(s["nll"]) for s in scores])
    tokens = np.array([int(s["tokens"]) for s in scores], dtype=float)
    if tokens.sum() == 0:
        raise EvaluationError("no token of the test file was scored (empty or too short documents)")
    masked = all(s.get("correct") is not None for s in scores)
    metrics: dict[str, Any] = {
        "documents": len(scores),
        "scored_tokens": int(tokens.sum()),
        "mean_nll": float(nll.sum() / tokens.sum()),
        "perplexity": float(np.exp(nll.sum() / tokens.sum())),
    }
    ci: dict[str, list[float]] = {}
    correct = np.array([float(s.get("correct") or 0) for s in scores])
    if masked:
        metrics["masked_token_accuracy"] = float(correct.sum() / tokens.sum())
    if n_resamples > 0 and len(scores) >= 2:
        rng = np.random.default_rng(seed)

        def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.asarray(a.sum(axis=axis) / np.maximum(b.sum(axis=axis), 1))

        def interval(a: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> list[float]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a constant statistic warns about a degenerate interval
                res = stats.bootstrap(
                    (a, tokens),
                    lambda x, y, axis=-1: transform(ratio(x, y, axis)),
                    paired=True,
                    vectorized=True,
                    n_resamples=n_resamples,
                    method="percentile",
                    rng=rng,
                )
            return [float(res.confidence_interval.low), float(res.confidence_interval.high)]

        ci["perplexity"] = interval(nll, np.exp)
        ci["mean_nll"] = interval(nll, lambda x: x)
        if masked:
            ci["masked_token_accuracy"] = interval(correct, lambda x: x)
        for key, (low, high) in ci.items():
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = low, high
    return metrics, ci
