"""Preference evaluation: does a model prefer the preferred answers of a held-out preference file?

Each line of a preference file (OpenAI's DPO format) holds a conversation and two answers. A model that can
score answers (``answer_logprobs``: the summed log-probability of a conversation's final assistant message)
gives each answer a log-probability ``log π(y | x)``. Two questions are asked of it:

* ``likelihood_accuracy``: how often ``log π(preferred) > log π(non-preferred)``: meaningful for any model,
  the base model included;
* with a ``reference`` model (for a DPO fine-tune, its base): the reward margin
  ``[log π(preferred) - log π_ref(preferred)] - [log π(non-preferred) - log π_ref(non-preferred)]``, DPO's
  implicit reward difference (with β = 1), and ``preference_accuracy``, how often it is positive: the tuned
  model raised the preferred answer's likelihood ratio over the reference more than the other one's.
  Without a reference, ``preference_accuracy`` is the likelihood accuracy.

Rates come with Wilson 95% intervals (exact for small test sets, unlike a normal approximation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ftkit.errors import EvaluationError


def wilson(hits: np.ndarray) -> list[float]:
    """The Wilson 95% interval of the rate of ``True`` in ``hits``."""
    ci = binomtest(int(hits.sum()), int(hits.size)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def answer_scorer(source: Any, what: str) -> Callable[[Sequence[list[dict[str, Any]]]], list[float]]:
    """The source's ``answer_logprobs``, or an EvaluationError saying it has none."""
    scorer = getattr(source, "answer_logprobs", None)
    if not callable(scorer):
        raise EvaluationError(
            f"{what} cannot score answers (no answer_logprobs): preference evaluation needs log-probabilities, "
            "which the hf backend's models give and OpenAI's API does not"
        )
    return scorer


def preference_metrics(
    chosen: np.ndarray, rejected: np.ndarray, ref_chosen: np.ndarray | None, ref_rejected: np.ndarray | None
) -> tuple[dict[str, Any], dict[str, list[float]], np.ndarray, np.ndarray | None]:
    """Metrics of one model's answer log-probabilities on a preference test set.

    Args:
        chosen: log-probability of each preferred answer under the model.
        rejected: the same for each non-preferred answer.
        ref_chosen: the preferred answers under the reference model, or None for no reference.
        ref_rejected: the non-preferred answers under the reference, or None.

    Returns:
        ``(metrics, ci, correct, margins)``: flat metrics, Wilson intervals by metric, which pairs count as
        right (for paired tests), and the reward margins (None without a reference).
    """
    if chosen.size == 0:
        raise EvaluationError("the preference test set is empty")
    likelihood = chosen > rejected
    metrics: dict[str, Any] = {
        "n": int(chosen.size),
        "likelihood_accuracy": float(likelihood.mean()),
        "logprob_gap_mean": float((chosen - rejected).mean()),
    }
    ci = {"likelihood_accuracy": wilson(likelihood)}
    margins = None
    correct = likelihood
    if ref_chosen is not None and ref_rejected is not None:
        margins = (chosen - ref_chosen) - (rejected - ref_rejected)
        correct = margins > 0
        quantiles = np.quantile(margins, [0.1, 0.5, 0.9])
        metrics |= {
            "reward_margin_mean": float(margins.mean()),
            "reward_margin_p10": float(quantiles[0]),
            "reward_margin_median": float(quantiles[1]),
            "reward_margin_p90": float(quantiles[2]),
            "reference_likelihood_accuracy": float((ref_chosen > ref_rejected).mean()),
        }
    metrics["preference_accuracy"] = float(correct.mean())
    ci["preference_accuracy"] = wilson(correct)
    metrics["preference_accuracy_ci_low"], metrics["preference_accuracy_ci_high"] = ci["preference_accuracy"]
    return metrics, ci, correct, margins
