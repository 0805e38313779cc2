"""Statistics of the ablation report against hand-computed values and scipy's own Welch test."""

import math

import numpy as np
import pytest
from scipy import stats

from reid_jax.experiments import report


def test_mean_ci_hand_computed():
    m, h = report.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0
    # sd = 1, t(0.975, df=2) = 4.302653
    assert h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(report.mean_ci([0.5])[1])
    assert report.mean_ci([0.5, None, float("nan")])[0] == 0.5


def test_welch_matches_scipy():
    a, b = [0.50, 0.52, 0.55], [0.40, 0.47, 0.41, 0.45]
    d, lo, hi = report.welch_diff(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(np.mean(a) - np.mean(b))
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


def _result(variant, seed, rate, m, auc=0.5):
    kinds = ("occlusion", "truncation", "blur", "switch", "any")
    return {"variant": variant, "seed": seed, "corruption_rate": rate, "mAP": m, "Rank1": m,
            "Rank5": m, "weight_min": 0.25, "weight_entropy": 1.386, "train_seconds": 10.0,
            "auc": {k: {"auc": auc, "pairs": 4} for k in kinds}}  # fmt: skip


def test_difference_table_bolds_only_clear_differences():
    results = [_result("mean", s, 0.1, m) for s, m in enumerate([0.50, 0.51, 0.52])]
    results += [_result("a", s, 0.1, m) for s, m in enumerate([0.60, 0.61, 0.62])]  # clearly up
    results += [_result("b", s, 0.1, m) for s, m in enumerate([0.45, 0.55, 0.52])]  # overlaps
    lines = report.difference_table(report.group(results), [0.1], ["mean", "a", "b"])
    row_a = next(x for x in lines if x.startswith("| a |"))
    row_b = next(x for x in lines if x.startswith("| b |"))
    assert "**+10.0" in row_a
    assert "**" not in row_b


def test_write_report(tmp_path):
    results = [_result(v, s, r, 0.4 + 0.01 * s) for v in ("mean", "templet") for s in range(2)
               for r in (0.15, 0.3)]  # fmt: skip
    meta = {"rates": [0.15, 0.3], "variants": ["mean", "templet"], "seeds": 2,
            "wall_seconds": 60.0, "failed": [], "base": {"num_epochs": 2, "data": {
                "height": 64, "width": 32, "seq_len": 4, "p": 4, "k": 2,
                "synth": {"num_ids": 8}}, "model": {"arch": "resnet18", "width": 8}}}  # fmt: skip
    path = report.write_report(tmp_path, results, {}, meta)
    text = path.read_text()
    assert "| mean | 2 | 40.5 ± 6.4 |" in text  # mean 0.405, t(1)=12.706 * 0.00707
    assert "## Corruption sweep" in text
    assert (tmp_path / "map_by_variant.png").stat().st_size > 1000
    assert (tmp_path / "auc_by_type.png").stat().st_size > 1000
