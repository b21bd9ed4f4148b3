"""Power and sample size for accuracy: how many test examples a claim needs, and what a test set can show.

Three designs, each a normal approximation of the test ftkit runs on it:

- ``one-sample``: one model's accuracy against a fixed rate (the majority-class rate, a published
  number); the report's exact binomial test. With ``margin`` it is a non-inferiority design: show the
  accuracy is no worse than ``baseline - margin``.
- ``two-sample``: two accuracies measured on different test sets (two independent proportions, the
  null variance pooled), ``n`` per test set.
- ``paired``: two models on the same test set (McNemar's test). Only the examples they disagree on
  count, so the size depends on the share of discordant examples ``discordant`` (Connor 1987): under
  the null the difference of discordant shares has variance ``discordant / n``, under the alternative
  ``(discordant - delta**2) / n``. Models that make the same mistakes need far fewer examples than
  independent ones; when ``discordant`` is unknown, :func:`independent_discordance` gives the value for
  independent errors, which is larger (so the size more cautious) than for two similar fine-tunes.

Every design has the same three questions: :func:`sample_size` (examples needed to detect ``delta``
with probability ``power``), :func:`achieved_power` (that probability with ``n`` examples) and
:func:`min_detectable` (the smallest ``delta`` that ``n`` examples detect with probability ``power``).
All use ``stats.norm`` from scipy; the tests check them against statsmodels and against simulations of
the exact tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import optimize, stats

from ftkit.errors import ConfigError

Design = Literal["one-sample", "two-sample", "paired"]
Alternative = Literal["larger", "two-sided"]


@dataclass(frozen=True)
class _Setting:
    """A design reduced to what the normal approximation needs: the difference and two spreads."""

    diff: float
    std_null: float
    std_alt: float


def independent_discordance(accuracy_a: float, accuracy_b: float) -> float:
    """The share of examples two models disagree on if their errors were independent."""
    return accuracy_a * (1 - accuracy_b) + accuracy_b * (1 - accuracy_a)


def _check_rate(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive), not {value}")


def _setting(
    design: Design, baseline: float, delta: float, margin: float, discordant: float | None, ratio: float
) -> _Setting:
    _check_rate("baseline", baseline)
    if delta + margin <= 0:
        raise ConfigError(f"delta + margin must be above 0 (delta {delta}, margin {margin})")
    target = baseline + delta
    if not 0 < target <= 1:
        raise ConfigError(f"baseline + delta must be in (0, 1], not {target:.4g}")
    if design == "one-sample":
        null = baseline - margin
        _check_rate("baseline - margin", null)
        return _Setting(delta + margin, math.sqrt(null * (1 - null)), math.sqrt(target * (1 - target)))
    if margin:
        raise ConfigError(f"a non-inferiority margin is supported for the one-sample design here, not {design}")
    if design == "two-sample":
        if ratio <= 0:
            raise ConfigError(f"ratio must be above 0, not {ratio}")
        pooled = (target + baseline * ratio) / (1 + ratio)
        std_null = math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
        std_alt = math.sqrt(target * (1 - target) + baseline * (1 - baseline) / ratio)
        return _Setting(delta, std_null, std_alt)
    psi = independent_discordance(target, baseline) if discordant is None else discordant
    if not delta < psi <= 1:
        raise ConfigError(
            f"discordant (the share of examples the models disagree on) must be in (delta, 1], not {psi:.4g}: "
            "two models that differ by delta disagree on at least delta of the examples"
        )
    return _Setting(delta, math.sqrt(psi), math.sqrt(psi - delta**2))


def _z(alpha: float, alternative: Alternative) -> float:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, not {alpha}")
    return float(stats.norm.isf(alpha / 2 if alternative == "two-sided" else alpha))


def _power(s: _Setting, n: float, z: float, alternative: Alternative) -> float:
    shift = math.sqrt(n) * s.diff
    p = float(stats.norm.sf((z * s.std_null - shift) / s.std_alt))
    if alternative == "two-sided":  # the far tail: rejections in the wrong direction count as power too
        p += float(stats.norm.cdf((-z * s.std_null - shift) / s.std_alt))
    return p


def sample_size(
    baseline: float,
    delta: float,
    *,
    design: Design = "one-sample",
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "larger",
    margin: float = 0.0,
    discordant: float | None = None,
    ratio: float = 1.0,
) -> int:
    """Test examples needed to detect an accuracy of ``baseline + delta`` against ``baseline``.

    Example:
        >>> sample_size(0.80, 0.03)                      # one model vs a fixed rate of 0.80
        1055
        >>> sample_size(0.80, 0.03, design="paired", discordant=0.10)

    Args:
        baseline: the rate to beat (one-sample), or the other model's accuracy (two-sample, paired).
        delta: the accuracy difference to detect.
        design: ``one-sample``, ``two-sample`` (per test set) or ``paired`` (one shared test set).
        alpha: the test's significance level.
        power: the wanted probability of detecting ``delta``.
        alternative: ``larger`` (one-sided) or ``two-sided``.
        margin: non-inferiority margin (one-sample): show accuracy above ``baseline - margin``
            when it truly is ``baseline + delta`` (``delta`` may then be 0).
        discordant: paired only: the share of examples the two models disagree on; by default
            :func:`independent_discordance` of the two accuracies.
        ratio: two-sample only: size of the second test set over the first.

    Returns:
        The number of examples (per test set for two-sample), rounded up.

    Raises:
        ConfigError: a rate outside (0, 1), ``delta + margin <= 0``, or ``discordant`` below ``delta``.
    """
    if not 0 < power < 1:
        raise ConfigError(f"power must be between 0 and 1, not {power}")
    s = _setting(design, baseline, delta, margin, discordant, ratio)
    z = _z(alpha, alternative)
    # statsmodels' normal_sample_size_one_tail: the far tail of a two-sided test is left out, as usual.
    n = (max(z * s.std_null - float(stats.norm.isf(power)) * s.std_alt, 0.0) / s.diff) ** 2
    return max(1, math.ceil(n - 1e-9))


def achieved_power(
    n: int,
    baseline: float,
    delta: float,
    *,
    design: Design = "one-sample",
    alpha: float = 0.05,
    alternative: Alternative = "larger",
    margin: float = 0.0,
    discordant: float | None = None,
    ratio: float = 1.0,
) -> float:
    """The probability that ``n`` test examples detect an accuracy difference of ``delta``.

    Arguments as for :func:`sample_size`; ``n`` is per test set for two-sample.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, not {n}")
    return _power(_setting(design, baseline, delta, margin, discordant, ratio), n, _z(alpha, alternative), alternative)


def min_detectable(
    n: int,
    baseline: float,
    *,
    design: Design = "one-sample",
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "larger",
    margin: float = 0.0,
    discordant: float | None = None,
    ratio: float = 1.0,
) -> float | None:
    """The smallest accuracy difference ``n`` test examples detect with probability ``power``.

    For the paired design ``discordant`` is held fixed (the observed disagreement of two models).

    Returns:
        The difference, or None when no difference up to the largest possible one is detectable.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, not {n}")
    z = _z(alpha, alternative)
    _check_rate("baseline", baseline)
    # The range of differences the design allows: up to accuracy 1, and (paired) below the discordance.
    high = 1 - baseline
    if design == "paired" and discordant is not None:
        high = min(high, discordant)
    low, top = -margin + 1e-9, high - 1e-9

    def gap(delta: float) -> float:
        s = _setting(design, baseline, delta, margin, discordant, ratio)
        return _power(s, n, z, alternative) - power

    if top <= low or gap(top) < 0:
        return None
    return float(optimize.brentq(gap, low, top, xtol=1e-10))


def binomial_power(n: int, baseline: float, delta: float, *, alpha: float = 0.05, margin: float = 0.0) -> float:
    """Power of the one-sided exact binomial test against ``baseline - margin`` (the report's test
    against the majority rate) when the accuracy is ``baseline + delta``: no normal approximation."""
    _setting("one-sample", baseline, delta, margin, None, 1.0)  # checks the arguments
    return float(_binomial_power(np.array([n]), baseline - margin, baseline + delta, alpha)[0])


def _binomial_power(ns: np.ndarray, null: float, target: float, alpha: float) -> np.ndarray:
    # The smallest count k with P(X >= k | null) <= alpha; scipy's discrete isf gives k - 1.
    crit = stats.binom.isf(alpha, ns, null) + 1
    return np.asarray(stats.binom.sf(crit - 1, ns, target), dtype=float)


def binomial_sample_size(
    baseline: float, delta: float, *, alpha: float = 0.05, power: float = 0.8, margin: float = 0.0
) -> int:
    """The smallest test size at which the exact one-sided binomial test reaches ``power``.

    Exact power saw-tooths with ``n`` (the critical count moves in whole steps), so a slightly larger
    test set can fall just below ``power`` again; this is the first size that reaches it, as
    in exact-test sample-size tables.
    """
    approx = sample_size(baseline, delta, alpha=alpha, power=power, margin=margin)
    null, target = baseline - margin, baseline + delta
    start = max(1, approx // 2)
    while True:
        ns = np.arange(start, start + 4096)
        hit = np.flatnonzero(_binomial_power(ns, null, target, alpha) >= power)
        if hit.size:
            return int(ns[hit[0]])
        start += 4096


def binomial_min_detectable(
    n: int, baseline: float, *, alpha: float = 0.05, power: float = 0.8, margin: float = 0.0
) -> float | None:
    """The smallest accuracy gain over ``baseline`` that the exact one-sided binomial test with ``n``
    examples detects with probability ``power`` (None when even an accuracy of 1 is not enough)."""
    _check_rate("baseline", baseline)
    null = baseline - margin
    _check_rate("baseline - margin", null)

    def gap(delta: float) -> float:
        return float(_binomial_power(np.array([n]), null, baseline + delta, alpha)[0]) - power

    low, top = -margin + 1e-12, 1 - baseline
    if gap(top) < 0:
        return None
    if gap(low) >= 0:
        return low
    return float(optimize.brentq(gap, low, top, xtol=1e-10))


class PowerPlan(BaseModel):
    """What ``ftkit power`` prints: the size a claim needs, or what a test set of given size can show."""

    design: Design
    baseline: float
    delta: float | None = Field(default=None, description="The difference to detect.")
    margin: float = 0.0
    alpha: float
    power: float
    alternative: Alternative
    discordant: float | None = None
    n: int | None = Field(default=None, description="Examples needed (or given, for the detectable difference).")
    min_detectable: float | None = Field(default=None, description="Smallest difference n examples detect.")
    achieved_power: float | None = Field(default=None, description="Power with n examples at delta.")
    statement: str = Field(description="The result as a sentence.")


def plan(
    baseline: float,
    delta: float | None = None,
    *,
    n: int | None = None,
    design: Design = "one-sample",
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "larger",
    margin: float = 0.0,
    discordant: float | None = None,
) -> PowerPlan:
    """Sample size for ``delta``, or the detectable difference (and the power at ``delta``) for ``n``.

    Raises:
        ConfigError: neither ``delta`` nor ``n`` is given, or an argument is out of range.
    """
    kw = {"design": design, "alpha": alpha, "alternative": alternative, "margin": margin, "discordant": discordant}
    what = {
        "one-sample": f"accuracy above {baseline - margin:g}" + (" (non-inferiority)" if margin else ""),
        "two-sample": f"a difference from {baseline:g} (two test sets)",
        "paired": f"a difference from {baseline:g} on one shared test set (McNemar)",
    }[design]
    sided = "one-sided" if alternative == "larger" else "two-sided"
    if delta is None and n is None:
        raise ConfigError("give --delta (the difference to detect) or --n (the test set size), or both")
    needed = achieved = mdd = None
    if delta is not None:
        needed = sample_size(baseline, delta, power=power, **kw)  # type: ignore[arg-type]
    if n is not None:
        mdd = min_detectable(n, baseline, power=power, **kw)  # type: ignore[arg-type]
        if delta is not None:
            achieved = achieved_power(n, baseline, delta, **kw)  # type: ignore[arg-type]
    per = " per test set" if design == "two-sample" else ""
    parts = []
    if needed is not None and delta is not None:
        parts.append(
            f"{needed} test examples{per} detect {what} when the true difference is {delta:+g} "
            f"with {power:.0%} power ({sided} alpha {alpha:g})"
        )
    if n is not None:
        if mdd is None:
            parts.append(f"with {n} examples{per} no difference is detectable at {power:.0%} power")
        else:
            parts.append(f"with {n} examples{per} the smallest difference detectable at {power:.0%} power is {mdd:.4f}")
        if achieved is not None:
            parts.append(f"the power at {delta:+g} is {achieved:.1%}")
    return PowerPlan(
        design=design,
        baseline=baseline,
        delta=delta,
        margin=margin,
        alpha=alpha,
        power=power,
        alternative=alternative,
        discordant=discordant,
        n=needed if n is None else n,
        min_detectable=mdd,
        achieved_power=achieved,
        statement="; ".join(parts),
    )
