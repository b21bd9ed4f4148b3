"""Paired non-inferiority and equivalence tests on accuracy (Tango's score test)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ftkit.errors import EvaluationError
from ftkit.evaluate import compare
from ftkit.evaluate.paired import equivalence, noninferiority, noninferiority_sample_size, tango_z


def _pairs(n_both: int, n_new: int, n_ref: int, n_neither: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    new = np.array([1] * n_both + [1] * n_new + [0] * n_ref + [0] * n_neither, dtype=bool)
    ref = np.array([1] * n_both + [0] * n_new + [1] * n_ref + [0] * n_neither, dtype=bool)
    order = np.random.default_rng(seed).permutation(new.size)
    return new[order], ref[order]


@pytest.mark.parametrize(("n", "p_new_only", "p_ref_only"), [(200, 0.07, 0.12), (80, 0.03, 0.08), (400, 0.15, 0.2)])
def test_type_one_error_at_the_margin_is_close_to_alpha(n: int, p_new_only: float, p_ref_only: float) -> None:
    # The true difference sits exactly on the margin: H0 is true, so the test may reject in about 5 % of samples.
    margin = p_ref_only - p_new_only
    counts = np.random.default_rng(1).multinomial(n, [p_new_only, p_ref_only, 1 - p_new_only - p_ref_only], 4000)
    rejected = np.mean([stats.norm.sf(tango_z(b, c, n, -margin)) < 0.05 for b, c, _ in counts])
    assert 0.03 <= rejected <= 0.065


def test_power_grows_when_the_new_model_is_as_good() -> None:
    counts = np.random.default_rng(2).multinomial(600, [0.08, 0.08, 0.84], 2000)
    rejected = np.mean([stats.norm.sf(tango_z(b, c, 600, -0.05)) < 0.05 for b, c, _ in counts])
    assert rejected > 0.9


def test_verdicts_say_shown_cannot_show_and_worse() -> None:
    shown = noninferiority(*_pairs(240, 20, 10, 30), margin=0.05, new="open", reference="ft")
    assert shown.shown and shown.p_value < 0.05 and shown.lower_bound > -0.05
    assert shown.verdict.startswith("open is not worse than ft by more than 5 points")
    assert shown.difference == pytest.approx(10 / 300)

    small = noninferiority(*_pairs(20, 3, 3, 4), margin=0.05, new="open", reference="ft")
    assert not small.shown and small.n_needed is not None and small.n_needed > 30
    assert small.verdict.startswith("cannot show that open is not worse than ft by more than 5 points with 30")
    assert f"about {small.n_needed} examples would be needed" in small.verdict
    # The estimate of the examples needed is what the formula gives for the observed disagreement.
    assert small.n_needed == noninferiority_sample_size(6 / 30, 0.05)

    worse = noninferiority(*_pairs(200, 5, 60, 35), margin=0.05)
    assert not worse.shown and worse.n_needed is None and "worse than reference by more than" in worse.verdict


def test_lower_bound_is_where_the_test_turns() -> None:
    new, ref = _pairs(240, 15, 12, 33)
    t = noninferiority(new, ref, margin=0.05)
    assert -0.05 < t.lower_bound < 0
    # Testing at a margin just inside the bound does not reject; just outside it does.
    assert noninferiority(new, ref, margin=-t.lower_bound - 1e-3).p_value > 0.05
    assert noninferiority(new, ref, margin=-t.lower_bound + 1e-3).p_value < 0.05


def test_equivalence_is_two_one_sided_tests() -> None:
    new, ref = _pairs(500, 30, 30, 40)
    eq = equivalence(new, ref, margin=0.05)
    low = noninferiority(new, ref, margin=0.05)
    high = noninferiority(ref, new, margin=0.05)
    assert eq.p_value == pytest.approx(max(low.p_value, high.p_value))
    assert eq.shown and eq.upper_bound is not None and eq.lower_bound < 0 < eq.upper_bound
    far = equivalence(*_pairs(200, 60, 5, 35), margin=0.05)
    assert not far.shown and "cannot be shown to be equivalent" in far.verdict


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(EvaluationError, match="same examples"):
        noninferiority(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(EvaluationError, match="margin"):
        noninferiority(np.ones(3, bool), np.ones(3, bool), margin=2)


def test_compare_reports_noninferiority_against_the_reference(tmp_path) -> None:
    import json

    data = tmp_path / "test.jsonl"
    rows = [{"id": str(i), "text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(200)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flip_ref = set(range(0, 200, 10))
    flip_new = set(range(5, 200, 20))

    def preds(name: str, flips: set[int]):
        path = tmp_path / f"{name}.jsonl"
        lines = [
            {"id": r["id"], "prediction": ("b" if r["label"] == "a" else "a") if i in flips else r["label"]}
            for i, r in enumerate(rows)
        ]
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    report = compare(
        {"recorded": preds("recorded", flip_ref), "open": preds("open", flip_new)}, data, bootstrap=0, margin=0.05
    )
    assert report.reference == "recorded" and len(report.verdicts) == 1
    ni = report.pairs[0]["noninferiority"]
    assert (ni["new"], ni["reference"], ni["new_only"], ni["reference_only"]) == ("open", "recorded", 20, 10)
    assert report.verdicts[0] == ni["verdict"] and report.verdicts[0].startswith("open is not worse than recorded")
    assert "Verdict:" in report.to_html() and report.to_dict()["verdicts"] == report.verdicts
    with pytest.raises(EvaluationError, match="reference 'x'"):
        compare({"a": preds("a", set()), "b": preds("b", set())}, data, reference="x", bootstrap=0)
