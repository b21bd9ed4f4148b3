"""Significance tests: is a model better than always answering the majority class, and do two
models answering the same test set differ? Both are exact tests built on scipy's ``binomtest``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ftkit.errors import EvaluationError


def binomial_p_value(correct: int, n: int, rate: float) -> float:
    """One-sided exact binomial test that accuracy exceeds ``rate``.

    Args:
        correct: examples answered right.
        n: examples in all.
        rate: the accuracy to beat, usually the majority-class rate of the test set.

    Returns:
        P(X ≥ correct) for X ~ Binomial(n, rate): small means the model beats ``rate``.
    """
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(correct), int(n), min(max(rate, 0.0), 1.0), alternative="greater").pvalue)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on two models' right/wrong answers to the same examples.

    Only the discordant pairs matter: ``a_only`` (A right, B wrong) and ``b_only``. Under the null
    hypothesis they are Binomial(a_only + b_only, 1/2); the two-sided exact p-value is scipy's
    ``binomtest`` on them (1.0 when the models never disagree).

    Raises:
        EvaluationError: the two arrays do not cover the same examples.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise EvaluationError(f"McNemar needs the same examples for both models ({a.shape[0]} vs {b.shape[0]})")
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(stats.binomtest(min(a_only, b_only), discordant, 0.5).pvalue)
    return {
        "a_only": a_only,
        "b_only": b_only,
        "both": int((a & b).sum()),
        "neither": int((~a & ~b).sum()),
        "p_value": p,
    }
