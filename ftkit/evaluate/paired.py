"""Paired accuracy tests: is a new model not worse than a reference, or equivalent to it, on the same examples?

Two models answer the same test set, so their right/wrong answers are paired: only the discordant
examples carry information (``b``: the new model right and the reference wrong; ``c``: the
reverse). The difference in accuracy is ``d = (b - c) / n``.

* **Non-inferiority** tests H0: ``d <= -margin`` against H1: ``d > -margin`` with Tango's score test
  for paired proportions (Tango 1998, *Statistics in Medicine* 17:891-908): the variance of
  ``b - c`` is taken at the restricted maximum-likelihood estimate under H0, which keeps the type-I
  error close to alpha at small samples where the Wald test is too liberal. Rejecting H0 means
  "the new model is not worse by more than ``margin``".
* **Equivalence** (TOST) runs the same one-sided test twice, against ``-margin`` and against
  ``+margin``; the p-value is the larger of the two.
* :func:`noninferiority_sample_size` answers "how many examples would be needed": the normal
  approximation for paired proportions, assuming the models are equally accurate and disagree on
  the share of examples they disagree on here.

McNemar's test (:mod:`ftkit.evaluate.significance`) answers a different question: "do the models
differ?". A large McNemar p-value is not evidence that they are the same; these tests are.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import optimize, stats

from ftkit.errors import EvaluationError

DEFAULT_MARGIN = 0.05
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8


class PairedTest(BaseModel):
    """The outcome of a paired non-inferiority or equivalence test on accuracy.

    Attributes:
        kind: ``noninferiority`` or ``equivalence``.
        new: the name of the model under test.
        reference: the name of the model it is held against.
        n: examples answered by both.
        new_only: examples the new model got right and the reference wrong.
        reference_only: examples the reference got right and the new model wrong.
        accuracy_new: the new model's accuracy.
        accuracy_reference: the reference's accuracy.
        difference: ``accuracy_new - accuracy_reference``.
        lower_bound: the one-sided ``1 - alpha`` lower confidence bound of the difference (Tango).
        upper_bound: for equivalence, the one-sided ``1 - alpha`` upper bound; None otherwise.
        margin: the accuracy loss (a fraction) the test allows.
        alpha: the significance level.
        p_value: Tango's score test p-value (the larger of the two for equivalence).
        shown: whether the claim (not worse / equivalent) is shown at ``alpha``.
        n_needed: about how many examples would show it (None when the observed gap is already beyond the margin).
        verdict: the result in one sentence.
    """

    kind: Literal["noninferiority", "equivalence"]
    new: str
    reference: str
    n: int
    new_only: int
    reference_only: int
    accuracy_new: float
    accuracy_reference: float
    difference: float
    lower_bound: float
    upper_bound: float | None = None
    margin: float
    alpha: float
    p_value: float
    shown: bool
    n_needed: int | None = None
    verdict: str = Field(default="")


def _counts(correct_new: np.ndarray, correct_ref: np.ndarray) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    a = np.asarray(correct_new, dtype=bool)
    r = np.asarray(correct_ref, dtype=bool)
    if a.shape != r.shape or a.ndim != 1:
        raise EvaluationError(f"a paired test needs the same examples for both models ({a.shape} vs {r.shape})")
    if a.size == 0:
        raise EvaluationError("a paired test needs at least one example")
    return int((a & ~r).sum()), int((~a & r).sum()), int(a.size), a, r


def tango_z(new_only: int, reference_only: int, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: ``accuracy_new - accuracy_reference = delta0``.

    Large values favour a difference above ``delta0``. ``delta0`` must lie in (-1, 1).
    """
    b, c = float(new_only), float(reference_only)
    # Restricted MLE of P(reference right, new wrong) under H0 (Tango 1998, eq. 3).
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta0
    qc = -c * delta0 * (1.0 - delta0)
    q21 = (-qb + math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)
    var = n * (2.0 * q21 + delta0 * (1.0 - delta0))
    diff = b - c - n * delta0
    if var <= 0.0:
        return math.inf if diff > 0 else (-math.inf if diff < 0 else 0.0)
    return diff / math.sqrt(var)


def _lower_bound(b: int, c: int, n: int, alpha: float) -> float:
    """The smallest delta0 not rejected by the one-sided test: the ``1 - alpha`` lower confidence bound."""
    z = float(stats.norm.ppf(1.0 - alpha))
    lo, hi = -1.0 + 1e-9, (b - c) / n
    if tango_z(b, c, n, lo) <= z:
        return -1.0
    if tango_z(b, c, n, hi) >= z:  # only when the estimate itself is at the boundary
        return hi
    return float(optimize.brentq(lambda d: tango_z(b, c, n, d) - z, lo, hi, xtol=1e-7))


def noninferiority_sample_size(
    discordance: float,
    margin: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    difference: float = 0.0,
) -> int | None:
    """About how many paired examples show non-inferiority with the given power.

    Normal approximation for paired proportions: ``n = (z_{1-alpha} + z_{power})^2 (psi - d^2) / (d + margin)^2``
    where ``psi`` is the share of examples the models disagree on and ``d`` the true difference.

    Returns:
        The number of examples, or None when ``difference <= -margin`` (no sample size can show it).
    """
    if difference <= -margin:
        return None
    za, zb = stats.norm.ppf(1.0 - alpha), stats.norm.ppf(power)
    psi = max(discordance, difference * difference + 1e-6)
    return max(1, math.ceil((za + zb) ** 2 * (psi - difference**2) / (difference + margin) ** 2))


def _points(x: float) -> str:
    return f"{x * 100:.3g} point" + ("" if abs(x * 100) == 1 else "s")


def noninferiority(
    correct_new: np.ndarray,
    correct_ref: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    new: str = "new",
    reference: str = "reference",
    power: float = DEFAULT_POWER,
) -> PairedTest:
    """Is the new model not worse than the reference by more than ``margin`` (accuracy, paired)?

    Args:
        correct_new: per example, whether the new model answered right.
        correct_ref: per example, whether the reference answered right (same examples, same order).
        margin: the accuracy loss allowed, as a fraction (0.05 = five points).
        alpha: one-sided significance level.
        new: the new model's name, for the verdict.
        reference: the reference's name.
        power: the power assumed when estimating the examples needed.

    Raises:
        EvaluationError: the arrays differ in length, or margin/alpha are out of range.
    """
    if not 0 < margin < 1:
        raise EvaluationError(f"the non-inferiority margin must be a fraction in (0, 1), not {margin!r}")
    if not 0 < alpha < 0.5:
        raise EvaluationError(f"alpha must be in (0, 0.5), not {alpha!r}")
    b, c, n, a, r = _counts(correct_new, correct_ref)
    z = tango_z(b, c, n, -margin)
    p = float(stats.norm.sf(z))
    d = (b - c) / n
    shown = p < alpha
    # Past the margin already, no sample size helps; otherwise assume equal accuracy (the hoped-for truth).
    need = None if shown or d <= -margin else noninferiority_sample_size((b + c) / n, margin, alpha=alpha, power=power)
    test = PairedTest(
        kind="noninferiority",
        new=new,
        reference=reference,
        n=n,
        new_only=b,
        reference_only=c,
        accuracy_new=float(a.mean()),
        accuracy_reference=float(r.mean()),
        difference=d,
        lower_bound=_lower_bound(b, c, n, alpha),
        margin=margin,
        alpha=alpha,
        p_value=p,
        shown=shown,
        n_needed=need,
    )
    test.verdict = _noninferiority_sentence(test)
    return test


def _noninferiority_sentence(t: PairedTest) -> str:
    stats_part = (
        f"accuracy {t.accuracy_new:.1%} vs {t.accuracy_reference:.1%}, difference "
        f"{t.difference * 100:+.1f} points, {1 - t.alpha:.0%} lower bound {t.lower_bound * 100:+.1f}; "
        f"Tango's paired test p = {t.p_value:.3g}"
    )
    if t.shown:
        return (
            f"{t.new} is not worse than {t.reference} by more than {_points(t.margin)} ({stats_part}, {t.n} examples)."
        )
    if t.n_needed is None:
        return (
            f"{t.new} is worse than {t.reference} by more than the {_points(t.margin)} margin on these "
            f"{t.n} examples ({stats_part}); more examples would not show it is not worse."
        )
    return (
        f"cannot show that {t.new} is not worse than {t.reference} by more than {_points(t.margin)} with "
        f"{t.n} examples ({stats_part}); about {t.n_needed} examples would be needed if the two models were "
        f"equally accurate and disagreed as often as here."
    )


def equivalence(
    correct_new: np.ndarray,
    correct_ref: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    new: str = "new",
    reference: str = "reference",
) -> PairedTest:
    """Two one-sided tests (TOST): is the accuracy difference within ``±margin``?

    Both one-sided tests are Tango's score test of :func:`noninferiority`, once against
    ``-margin`` and once (with the models swapped) against ``+margin``.
    """
    low = noninferiority(correct_new, correct_ref, margin=margin, alpha=alpha, new=new, reference=reference)
    high = noninferiority(correct_ref, correct_new, margin=margin, alpha=alpha, new=reference, reference=new)
    p = max(low.p_value, high.p_value)
    shown = p < alpha
    upper = -high.lower_bound
    test = low.model_copy(
        update={"kind": "equivalence", "p_value": p, "shown": shown, "n_needed": None, "upper_bound": upper}
    )
    word = "is" if shown else "cannot be shown to be"
    test.verdict = (
        f"{new} {word} equivalent to {reference} within ±{_points(margin)} "
        f"(difference {test.difference * 100:+.1f} points, {1 - 2 * alpha:.0%} interval "
        f"[{test.lower_bound * 100:+.1f}, {upper * 100:+.1f}]; TOST p = {p:.3g}, "
        f"{test.n} examples)."
    )
    return test
