"""The ablation report's tables: paired differences with Holm, the A/A row, design, swaps."""

import math

import pytest
from scipy import stats as sps

from reid_jax.experiments import report, stats, tables

KINDS = ("occlusion", "truncation", "blur", "switch", "any")


def _result(variant, seed, rate, m, auc=0.5, pair=None):
    return {"variant": variant, "seed": seed, "pair": seed if pair is None else pair,
            "corruption_rate": rate, "mAP": m, "Rank1": m, "Rank5": m, "weight_min": 0.25,
            "weight_entropy": 1.386, "train_seconds": 10.0,
            "auc": {k: {"auc": auc, "pairs": 4} for k in KINDS}}  # fmt: skip


def test_differences_are_paired_by_seed_and_holm_adjusted():
    base = [0.40, 0.50, 0.60, 0.45]  # a large seed effect, shared by the variants
    results = [_result("mean", s, 0.1, m) for s, m in enumerate(base)]
    results += [_result("a", s, 0.1, m + 0.02 + 0.001 * s) for s, m in enumerate(base)]
    results += [_result("b", s, 0.1, m + d) for s, (m, d) in
                enumerate(zip(base, [0.03, -0.02, 0.01, -0.01]))]  # fmt: skip
    results += [_result(tables.CONTROL, 1000 + i, 0.1, m, pair=i)
                for i, m in enumerate([0.55, 0.42, 0.47, 0.58])]  # fmt: skip
    groups = tables.group(results)
    comps = tables.comparisons(groups, [0.1], ["mean", "a", "b"])
    by = {c["name"]: c for c in comps}
    assert set(by) == {"a", "b", tables.CONTROL}
    ref = sps.ttest_rel([m + 0.02 + 0.001 * s for s, m in enumerate(base)], base)
    assert by["a"]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    ps = [by[k]["p"] for k in ("a", "b", tables.CONTROL)]
    assert [by[k]["p_holm"] for k in ("a", "b", tables.CONTROL)] == pytest.approx(stats.holm(ps))
    lines = tables.difference_table(comps, [0.1])
    row_a = next(x for x in lines if x.startswith("| a |"))
    row_b = next(x for x in lines if x.startswith("| b |"))
    assert "**+2.2" in row_a  # Welch would not resolve +2 points under this seed spread
    assert stats.welch_diff([r["mAP"] for r in groups[(0.1, "a")]], base)[1] < 0
    assert "**" not in row_b
    assert any(x.startswith(f"| {tables.CONTROL} |") for x in lines)
    design = tables.design_lines(comps, groups, [0.1])
    sd = by[tables.CONTROL]["sd"]
    want = 100 * stats.detectable_difference(4, sd)
    assert f"{want:.1f} points at alpha 0.05" in design[-1] and "(A/A)" in design[-1]


def _swaps():
    out = {}
    for s in range(3):
        out[s] = {
            "mean": {"mAP": 0.40 + 0.1 * s, "Rank1": 0.5},
            tables.ORACLE: {"mAP": 0.45 + 0.1 * s, "Rank1": 0.6},
            "flat tau=0.1": {"mAP": 0.40 + 0.1 * s + 0.001 * (s - 1), "Rank1": 0.5},
        }
    return out  # fmt: skip


def test_swap_rows_and_oracle_row():
    swaps = _swaps()
    results = [_result("mean", s, 0.1, 0.4 + 0.1 * s) for s in range(3)]
    comps = tables.comparisons(tables.group(results), [0.1], ["mean"], swaps)
    oracle = next(c for c in comps if c["name"] == tables.ORACLE)
    assert oracle["family"] == "swap" and oracle["diff"] == pytest.approx(0.05)
    assert oracle["p"] < 1e-10  # the same +5 points on every checkpoint
    lines = tables.swap_table(swaps, comps)
    assert any(x.startswith(f"| {tables.ORACLE} | 3 | 55.0 ± 24.8 |") for x in lines)
    main = tables.main_table(tables.group(results), 0.1, ["mean"], [0.45, 0.55, 0.65])
    assert main[-1].startswith(f"| {tables.ORACLE}, `mean` checkpoints | 3 | 55.0 ± 24.8 |")


def test_influence_table_lists_every_measure():
    kinds = ("clean", "occlusion", "truncation", "blur", "switch")
    one = {"by_kind": dict.fromkeys(kinds, 1.0), "auc": {"any": 0.5}}
    inf = {"mean": {k: one for k in tables.MEASURES}, "templet": {"error": "boom"}}
    lines = tables.influence_table(inf)
    assert sum(x.startswith("| mean |") for x in lines) == 3
    assert any("T x leave-one-out share" in x for x in lines)
    assert any("(boom)" in x for x in lines)


def test_write_report(tmp_path):
    results = [_result(v, s, r, 0.4 + 0.01 * s) for v in ("mean", "templet") for s in range(2)
               for r in (0.15, 0.3)]  # fmt: skip
    results += [_result(tables.CONTROL, 1000 + i, 0.15, 0.41, pair=i) for i in range(2)]
    meta = {"rates": [0.15, 0.3], "variants": ["mean", "templet"], "seeds": {"0.15": 2, "0.3": 2},
            "wall_seconds": 60.0, "failed": [], "base": {"num_epochs": 2, "data": {
                "height": 64, "width": 32, "seq_len": 4, "p": 4, "k": 2,
                "synth": {"num_ids": 8}}, "model": {"arch": "resnet18", "width": 8}}}  # fmt: skip
    kinds = ("clean", "occlusion", "truncation", "blur", "switch")
    one = {"by_kind": dict.fromkeys(kinds, 1.0), "auc": {"any": 0.5}}
    path = report.write_report(tmp_path, results, {}, meta, _swaps(),
                               {"mean": {k: one for k in tables.MEASURES}})  # fmt: skip
    text = path.read_text()
    assert "| mean | 2 | 40.5 ± 6.4 |" in text  # mean 0.405, t(1)=12.706 * 0.00707
    assert f"| {tables.CONTROL} | 2 |" in text
    for section in ("## Test-time swaps", "## Influence per frame", "## Corruption sweep",
                    "Detectable difference"):  # fmt: skip
        assert section in text
    assert (tmp_path / "map_by_variant.png").stat().st_size > 1000
    assert not math.isnan(stats.mean_ci([0.4, 0.41])[1])
