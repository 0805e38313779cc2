"""Report statistics against hand values and scipy's own tests."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from reid_jax.experiments import stats


def test_mean_ci_hand_computed():
    m, h = stats.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0
    assert h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # sd 1, t(0.975, 2)
    assert math.isnan(stats.mean_ci([0.5])[1])
    assert stats.mean_ci([0.5, None, float("nan")])[0] == 0.5


def test_paired_diff_matches_scipy_and_pairs_by_key():
    a = {0: 0.50, 1: 0.61, 2: 0.55, 3: 0.40, 7: 9.0}  # key 7 has no partner: ignored
    b = {0: 0.45, 1: 0.52, 2: 0.56, 3: 0.33, 5: 0.0}
    out = stats.paired_diff(a, b)
    x, y = [0.50, 0.61, 0.55, 0.40], [0.45, 0.52, 0.56, 0.33]
    ref = sps.ttest_rel(x, y)
    ci = ref.confidence_interval(0.95)
    assert out["n"] == 4
    assert out["diff"] == pytest.approx(np.mean(np.subtract(x, y)))
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # pairing removes a shared seed effect that Welch's interval keeps
    seed = np.array([0.0, 0.1, -0.1, 0.2, -0.2])
    base, var = dict(enumerate(0.3 + seed)), dict(enumerate(0.32 + seed + [0, 1e-3, 0, -1e-3, 0]))
    assert stats.paired_diff(var, base)["p"] < 1e-4
    lo_w, hi_w = stats.welch_diff(list(var.values()), list(base.values()))[1:]
    assert lo_w < 0 < hi_w
    assert stats.paired_diff({0: 1.0}, {0: 0.5})["n"] == 1
    assert math.isnan(stats.paired_diff({0: 1.0}, {0: 0.5})["p"])


def test_holm_hand_computed():
    # sorted 0.01, 0.02, 0.04 x (3, 2, 1) = 0.03, 0.04, 0.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    out = stats.holm([0.01, float("nan"), 0.03])  # NaN not counted: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.03)


def test_welch_matches_scipy():
    a, b = [0.50, 0.52, 0.55], [0.40, 0.47, 0.41, 0.45]
    d, lo, hi = stats.welch_diff(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_detectable_difference_has_the_stated_power():
    for n in (3, 10):
        delta = stats.detectable_difference(n, sd=0.05)
        # simulate: paired t-tests on n differences ~ N(delta, 0.05) reject ~80% of the time
        rng = np.random.default_rng(n)
        d = rng.normal(delta, 0.05, size=(20000, n))
        p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
        assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.015)
    # more pairs, smaller detectable difference; the normal approximation for large n
    assert stats.detectable_difference(10, 1.0) < stats.detectable_difference(3, 1.0)
    big = stats.detectable_difference(2000, 1.0)
    assert big == pytest.approx((1.959964 + 0.841621) / math.sqrt(2000), rel=2e-3)
    assert math.isnan(stats.detectable_difference(1, 1.0))
