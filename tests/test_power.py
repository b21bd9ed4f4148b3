"""Power and sample size (ftkit.evaluate.power) against statsmodels, and against simulations of the exact tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from ftkit.errors import ConfigError
from ftkit.evaluate.evidence import mcnemar_one_sided
from ftkit.evaluate.power import (
    achieved_power,
    binomial_min_detectable,
    binomial_power,
    binomial_sample_size,
    min_detectable,
    plan,
    sample_size,
)
from ftkit.evaluate.significance import binomial_p_value, mcnemar_exact

sm_power = pytest.importorskip("statsmodels.stats.power")
sm_prop = pytest.importorskip("statsmodels.stats.proportion")

GRID = [(0.5, 0.05), (0.8, 0.03), (0.9, 0.02), (0.62, 0.1), (0.3, 0.01)]


@pytest.mark.parametrize(("baseline", "delta"), GRID)
@pytest.mark.parametrize("alternative", ["larger", "two-sided"])
def test_one_sample_matches_statsmodels(baseline: float, delta: float, alternative: str) -> None:
    alpha = 0.05 if alternative == "larger" else 0.025  # statsmodels takes alpha per tail
    std_null, std_alt = math.sqrt(baseline * (1 - baseline)), math.sqrt((baseline + delta) * (1 - baseline - delta))
    want = sm_power.normal_sample_size_one_tail(delta, 0.9, alpha, std_null=std_null, std_alternative=std_alt)
    got = sample_size(baseline, delta, power=0.9, alternative=alternative)  # type: ignore[arg-type]
    assert got == math.ceil(want)
    for n in (50, 400, 3000):
        sm = sm_power.normal_power_het(delta, n, 0.05, std_null=std_null, std_alternative=std_alt,
                                       alternative=alternative)
        assert achieved_power(n, baseline, delta, alternative=alternative) == pytest.approx(sm, abs=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize(("baseline", "delta"), GRID)
@pytest.mark.parametrize("alternative", ["larger", "two-sided"])
def test_two_sample_matches_statsmodels(baseline: float, delta: float, alternative: str) -> None:
    want = sm_prop.samplesize_proportions_2indep_onetail(delta, baseline, 0.8, alpha=0.05, alternative=alternative)
    got = sample_size(baseline, delta, design="two-sample", alternative=alternative)  # type: ignore[arg-type]
    assert got == math.ceil(want)
    for n, ratio in ((120, 1.0), (900, 2.0)):
        sm = sm_prop.power_proportions_2indep(delta, baseline, n, ratio=ratio, alpha=0.05, alternative=alternative)
        ours = achieved_power(n, baseline, delta, design="two-sample", ratio=ratio, alternative=alternative)  # type: ignore[arg-type]
        assert ours == pytest.approx(sm.power, abs=1e-12)


def test_min_detectable_inverts_power() -> None:
    for design, kw in (("one-sample", {}), ("two-sample", {}), ("paired", {"discordant": 0.2})):
        mdd = min_detectable(500, 0.7, design=design, **kw)  # type: ignore[arg-type]
        assert mdd is not None and 0 < mdd < 0.3
        assert achieved_power(500, 0.7, mdd, design=design, **kw) == pytest.approx(0.8, abs=1e-6)  # type: ignore[arg-type]
        assert sample_size(0.7, mdd, design=design, **kw) in (500, 501)  # type: ignore[arg-type]
        assert min_detectable(2000, 0.7, design=design, **kw) < mdd  # type: ignore[arg-type,operator]
    # Two models that disagree on 1% of examples can never differ by more than 1%: nothing larger to detect.
    assert min_detectable(20, 0.7, design="paired", discordant=0.01) is None


def test_non_inferiority_margin_is_a_shifted_null() -> None:
    # Showing accuracy > 0.78 when it is truly 0.80 is the one-sample test of 0.78 against 0.80.
    assert sample_size(0.80, 0.0, margin=0.02) == sample_size(0.78, 0.02)
    with pytest.raises(ConfigError, match="non-inferiority"):
        sample_size(0.8, 0.02, design="paired", margin=0.01)


def test_paired_power_by_simulation_of_mcnemar() -> None:
    """At the computed size, McNemar's exact test (as `compare` runs it) rejects about 80% of the time."""
    rng = np.random.default_rng(0)
    delta, psi = 0.05, 0.15
    n = sample_size(0.8, delta, design="paired", discordant=psi, alternative="two-sided")
    p10, p01 = (psi + delta) / 2, (psi - delta) / 2
    sims = 2000
    counts = rng.multinomial(n, [p10, p01, 1 - psi], size=sims)
    pvals = np.array([stats.binomtest(int(min(b, c)), int(b + c), 0.5).pvalue for b, c, _ in counts])
    assert abs((pvals < 0.05).mean() - 0.8) < 0.035  # 3.9 standard errors of 2000 draws
    # ftkit's own McNemar gives the same p-values as this loop.
    b, c, _ = counts[0]
    a = np.array([True] * b + [False] * c + [True] * 5)
    bb = np.array([False] * b + [True] * c + [True] * 5)
    assert mcnemar_exact(a, bb)["p_value"] == pytest.approx(pvals[0])


def test_paired_default_discordance_is_independent_errors() -> None:
    # Independent errors: the paired size is close to two independent test sets of the same size.
    paired = sample_size(0.8, 0.03, design="paired")
    assert abs(paired - sample_size(0.8, 0.03, design="two-sample")) / paired < 0.01
    # Similar models (few disagreements) need far fewer examples.
    assert sample_size(0.8, 0.03, design="paired", discordant=0.08) < paired / 3


def test_exact_binomial_power_by_simulation() -> None:
    """The exact power and size of the report's test against a rate, checked by running that test."""
    rng = np.random.default_rng(1)
    n = binomial_sample_size(0.8, 0.05)
    assert binomial_power(n, 0.8, 0.05) >= 0.8 > binomial_power(n - 1, 0.8, 0.05)  # the first size that reaches it
    correct = rng.binomial(n, 0.85, size=3000)
    pvals = np.array([binomial_p_value(int(k), n, 0.8) for k in correct])
    assert abs((pvals < 0.05).mean() - binomial_power(n, 0.8, 0.05)) < 0.03
    mdd = binomial_min_detectable(n, 0.8)
    assert mdd is not None and binomial_power(n, 0.8, mdd) == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("n", [40, 300])
def test_type_one_error_near_alpha(n: int) -> None:
    """Under the null, the exact tests the report runs reject at most alpha of the time, and not far less."""
    rng = np.random.default_rng(n)
    sims = 4000
    correct = rng.binomial(n, 0.7, size=sims)
    rate = np.mean([binomial_p_value(int(k), n, 0.7) < 0.05 for k in correct])
    # Discrete exact tests are conservative: the attained size is below alpha (0.026-0.05 at these n).
    assert 0.015 < rate <= 0.05 + 0.011
    # McNemar one-sided (real beats placebo): two equally good models with 20% disagreements.
    rejections = 0
    for _ in range(sims):
        k = rng.multinomial(n, [0.1, 0.1, 0.8])
        a = np.r_[np.ones(k[0], bool), np.zeros(k[1], bool), np.ones(k[2], bool)]
        b = np.r_[np.zeros(k[0], bool), np.ones(k[1], bool), np.ones(k[2], bool)]
        rejections += mcnemar_one_sided(a, b)["p_value"] < 0.05
    assert 0.01 < rejections / sims <= 0.05 + 0.011


def test_paired_power_in_comparisons_uses_observed_disagreement() -> None:
    from ftkit.evaluate.report import ComparisonReport

    pair = {"a": "lora", "b": "base", "a_only": 30, "b_only": 10, "both": 150, "neither": 10, "p_value": 0.002,
            "accuracy_a": 0.9, "accuracy_b": 0.8}
    c = ComparisonReport(data="test.jsonl", reports={}, pairs=[pair])
    (row,) = c.paired_power
    assert row["discordant"] == pytest.approx(0.2)
    kw = {"design": "paired", "discordant": 0.2, "alternative": "two-sided"}
    assert row["min_detectable_difference"] == pytest.approx(min_detectable(200, 0.8, **kw))  # type: ignore[arg-type]
    assert row["n_for_observed_difference"] == sample_size(0.8, 0.1, **kw)  # type: ignore[arg-type]
    assert c.to_dict()["paired_power"] == [row]
    assert ComparisonReport.model_validate_json(c.to_json()).pairs == [pair]  # read back from its JSON


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 1.2, "delta": 0.1}, "baseline must be between 0 and 1"),
        ({"baseline": 0.95, "delta": 0.1}, "baseline \\+ delta"),
        ({"baseline": 0.8, "delta": -0.01}, "delta \\+ margin must be above 0"),
        ({"baseline": 0.8, "delta": 0.05, "design": "paired", "discordant": 0.04}, "discordant"),
        ({"baseline": 0.8, "delta": 0.05, "alpha": 0}, "alpha"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sample_size(**kwargs)  # type: ignore[arg-type]


def test_plan_and_cli() -> None:
    p = plan(0.8, 0.03, n=500)
    assert p.n == 500 and p.min_detectable == pytest.approx(min_detectable(500, 0.8))
    assert p.achieved_power == pytest.approx(achieved_power(500, 0.8, 0.03))
    r = subprocess.run([sys.executable, "-m", "ftkit.cli", "power", "--baseline", "0.80", "--delta", "0.03", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == sample_size(0.8, 0.03) and out["exact_binomial_n"] == binomial_sample_size(0.8, 0.03)
    r = subprocess.run([sys.executable, "-m", "ftkit.cli", "power", "--baseline", "0.8", "--delta", "0.05",
                        "--design", "paired", "--discordant", "0.02"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "discordant" in r.stderr and "Traceback" not in r.stderr
