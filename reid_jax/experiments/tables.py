"""The ablation report's tables, from job results (``ablate.summarize``), swaps and influence.

Every comparison with the baseline is paired by seed (``stats.paired_diff``) and its p-value
Holm-adjusted over all the comparisons of the report (``comparisons``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from reid_jax.data.synth_scene import CORRUPTIONS
from reid_jax.experiments import stats

BASELINE = "mean"
CONTROL = "mean (A/A)"  # `mean` under a second, independent set of seeds
ORACLE = "oracle (clean frames only)"
Groups = dict[tuple[float, str], list[dict[str, Any]]]


def pct(m: float, h: float | None = None) -> str:
    if m is None or math.isnan(m):
        return "-"
    return f"{100 * m:.1f}" if h is None or math.isnan(h) else f"{100 * m:.1f} ± {100 * h:.1f}"


def num(m: float | None, digits: int = 3) -> str:
    return "-" if m is None or math.isnan(m) else f"{m:.{digits}f}"


def group(results: list[dict[str, Any]]) -> Groups:
    """(corruption rate, variant) -> its jobs' results, in seed order."""
    out: Groups = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        out.setdefault((r["corruption_rate"], r["variant"]), []).append(r)
    return out


def col(rows: list[dict[str, Any]], key: str) -> list[float]:
    vals = []
    for r in rows:
        v = r["auc"]["any"]["auc"] if key == "auc" else r.get(key)
        vals.append(float("nan") if v is None else float(v))
    return vals


def by_pair(rows: list[dict[str, Any]], key: str = "mAP") -> dict[int, float]:
    """pair key (the seed; the index within the control's seed set) -> value."""
    return {int(r.get("pair", r["seed"])): v for r, v in zip(rows, col(rows, key))}


def comparisons(groups: Groups, rates: Sequence[float], variants: Sequence[str],
                swaps: dict[int, dict[str, dict[str, float]]] | None = None
                ) -> list[dict[str, Any]]:  # fmt: skip
    """Every paired mAP comparison of the report, with Holm-adjusted p ("p_holm"): each trained
    variant against ``mean`` at each rate, the A/A control at the first rate, and each test-time
    swap against the ``mean`` swap (paired by seed: one ``mean`` checkpoint per seed)."""
    base = BASELINE if BASELINE in variants else variants[0]
    out = []
    for rate in rates:
        ref = by_pair(groups.get((rate, base), []))
        for v in [*variants, CONTROL]:
            if v == base or (v == CONTROL and (rate != rates[0] or (rate, v) not in groups)):
                continue
            d = stats.paired_diff(by_pair(groups.get((rate, v), [])), ref)
            out.append({"family": "control" if v == CONTROL else "trained", "rate": rate,
                        "name": v, **d})  # fmt: skip
    if swaps:
        names = list(next(iter(swaps.values())))
        ref = {s: v["mean"]["mAP"] for s, v in swaps.items()}
        for name in names:
            if name != "mean":
                d = stats.paired_diff({s: v[name]["mAP"] for s, v in swaps.items()}, ref)
                out.append({"family": "swap", "rate": rates[0], "name": name, **d})
    for c, p in zip(out, stats.holm([c["p"] for c in out])):
        c["p_holm"] = p
    return out


def _cell(c: dict[str, Any]) -> str:
    if c["n"] == 0:
        return "-"
    if math.isnan(c["low"]):
        return f"{100 * c['diff']:+.1f} (n={c['n']})"
    text = f"{100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
    p = f" ({c['p_holm']:.2g})"
    return f"**{text}**{p}" if c["p_holm"] <= 0.05 else text + p


def difference_table(comps: list[dict[str, Any]], rates: Sequence[float]) -> list[str]:
    """Paired mAP differences from ``mean`` per rate: mean [95% t interval] (Holm p)."""
    lines = [
        f"Difference in mAP from `{BASELINE}` (points): mean of the per-seed differences "
        "[95% t interval] (Holm-adjusted p over all comparisons of this report); **bold** = "
        "adjusted p <= 0.05. The A/A row compares `mean` with `mean` under an independent seed "
        "set: the noise floor.",
        "",
        "| variant | " + " | ".join(f"rate {r:g}" for r in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    names = [c["name"] for c in comps if c["family"] != "swap"]
    for name in dict.fromkeys(names):
        cells = []
        for rate in rates:
            c = next((c for c in comps if c["name"] == name and c["rate"] == rate
                      and c["family"] != "swap"), None)  # fmt: skip
            cells.append("-" if c is None else _cell(c))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def design_lines(comps: list[dict[str, Any]], groups: Groups, rates: Sequence[float]) -> list[str]:
    """The detectable difference of each design: 80% power, paired t-test, at alpha = 0.05 and
    at Holm's strictest step (0.05 / m), with the sd of the A/A differences (first rate) or the
    root mean square of the comparisons' sds (other rates)."""
    m = max(1, sum(not math.isnan(c["p"]) for c in comps))
    lines = [f"Detectable difference (80% power, paired t-test; {m} comparisons in the Holm "
             "family):", ""]  # fmt: skip
    for rate in rates:
        n = max((len(rows) for (r, v), rows in groups.items() if r == rate and v != CONTROL),
                default=0)  # fmt: skip
        control = [c for c in comps if c["family"] == "control" and c["rate"] == rate]
        sds = [c["sd"] for c in comps if c["rate"] == rate and c["family"] == "trained"
               and not math.isnan(c["sd"])]  # fmt: skip
        if control and not math.isnan(control[0]["sd"]):
            sd, where = control[0]["sd"], "A/A"
        elif sds:
            sd, where = float(np.sqrt(np.mean(np.square(sds)))), "rms of the variants'"
        else:
            lines.append(f"- rate {rate:g}: {n} seeds, too few pairs to estimate")
            continue
        d1 = stats.detectable_difference(n, sd)
        dm = stats.detectable_difference(n, sd, alpha=0.05 / m)
        lines.append(f"- rate {rate:g}: {n} seeds, sd of paired differences {100 * sd:.1f} "
                     f"points ({where}): {100 * d1:.1f} points at alpha 0.05, {100 * dm:.1f} at "
                     f"0.05/{m}")  # fmt: skip
    return lines


def main_table(groups: Groups, rate: float, variants: Sequence[str],
               oracle: list[float] | None = None) -> list[str]:  # fmt: skip
    """One corruption rate: means over seeds (mAP with its 95% t interval); the A/A control and
    the oracle (clean frames of the `mean` checkpoints) as extra rows."""
    lines = [
        "| variant | seeds | mAP (95% CI) | Rank1 | Rank5 | min weight | weight entropy | "
        "corrupted-frame AUC | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in [*variants, CONTROL]:
        rows = groups.get((rate, v), [])
        if not rows:
            if v != CONTROL:
                lines.append(f"| {v} | 0 | (no finished job) | | | | | | |")
            continue
        keys = ("mAP", "Rank1", "Rank5", "weight_min", "weight_entropy", "auc", "train_seconds")
        m = {k: stats.mean_ci(col(rows, k)) for k in keys}
        lines.append(
            f"| {v} | {len(rows)} | {pct(*m['mAP'])} | {pct(m['Rank1'][0])} | "
            f"{pct(m['Rank5'][0])} | {num(m['weight_min'][0])} | "
            f"{num(m['weight_entropy'][0])} | {num(m['auc'][0])} | {m['train_seconds'][0]:.0f} |"
        )
    if oracle:
        lines.append(f"| {ORACLE}, `mean` checkpoints | {len(oracle)} | "
                     f"{pct(*stats.mean_ci(oracle))} | | | | | 1 | 0 |")  # fmt: skip
    return lines


def swap_table(swaps: dict[int, dict[str, dict[str, float]]], comps: list[dict[str, Any]]
               ) -> list[str]:  # fmt: skip
    """Test-time swaps on the `mean` checkpoints: mAP, Rank-1 and the paired difference."""
    names = list(next(iter(swaps.values())))
    lines = ["| weighting at test time | checkpoints | mAP (95% CI) | Rank1 | "
             "difference from `mean` (points, Holm p) |", "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        m = stats.mean_ci([v[name]["mAP"] for v in swaps.values()])
        r1 = stats.mean_ci([v[name]["Rank1"] for v in swaps.values()])[0]
        c = next((c for c in comps if c["family"] == "swap" and c["name"] == name), None)
        lines.append(f"| {name} | {len(swaps)} | {pct(*m)} | {pct(r1)} | "
                     f"{'' if c is None else _cell(c)} |")  # fmt: skip
    return lines


MEASURES = {"weight_share": "T x weight share", "loo_share": "T x leave-one-out share",
            "feature_norm": "frame feature norm"}  # fmt: skip


def influence_table(influence: dict[str, dict[str, Any]]) -> list[str]:
    """Per variant and measure: mean per frame kind, and the corrupted-frame AUC (any)."""
    kinds = ("clean", *CORRUPTIONS)
    lines = ["| variant (seed 0) | measure | " + " | ".join(kinds) + " | AUC (any) |",
             "|---|---|" + "---|" * (len(kinds) + 1)]  # fmt: skip
    for v, inf in influence.items():
        if "error" in inf:
            lines.append(f"| {v} | ({inf['error']}) |" + " |" * (len(kinds) + 1))
            continue
        for key, title in MEASURES.items():
            k = inf[key]
            lines.append(f"| {v} | {title} | " + " | ".join(num(k["by_kind"][x]) for x in kinds)
                         + f" | {num(k['auc']['any'])} |")  # fmt: skip
    return lines


def auc_table(groups: Groups, rate: float, variants: Sequence[str]) -> list[str]:
    """Corrupted-frame AUC per corruption type (mean over seeds; 0.5 = no preference)."""
    kinds = (*CORRUPTIONS, "any")
    lines = ["| variant | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for v in variants:
        rows = groups.get((rate, v), [])
        cells = [num(stats.mean_ci([r["auc"][k]["auc"] for r in rows])[0]) for k in kinds]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def sweep_table(groups: Groups, rates: Sequence[float], variants: Sequence[str], key: str
                ) -> list[str]:  # fmt: skip
    lines = ["| variant | " + " | ".join(f"{r:g}" for r in rates) + " |",
             "|---|" + "---|" * len(rates)]  # fmt: skip
    for v in variants:
        cells = []
        for rate in rates:
            rows = groups.get((rate, v), [])
            m, h = stats.mean_ci(col(rows, key))
            cells.append((pct(m, h) if key == "mAP" else num(m)) + f" (n={len(rows)})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def diagnostics_table(analyses: dict[str, dict[str, Any]]) -> list[str]:
    """Two tables: the raw features (what a fusion weighs) and the centred ones."""
    lines = [
        "Raw features (as the fusion sees them; 4 decimals):",
        "",
        "| variant (seed 0) | cos clean | " + " | ".join(f"cos {k}" for k in CORRUPTIONS)
        + " | cos AUC (any) | spread between ids |",
        "|---|" + "---|" * (len(CORRUPTIONS) + 3),
    ]  # fmt: skip
    for v, a in analyses.items():
        r = a["raw"]
        c = r["cos_to_centre"]
        lines.append(
            f"| {v} | {num(c['clean']['mean'], 4)} | "
            + " | ".join(num(c[k]["mean"], 4) for k in CORRUPTIONS)
            + f" | {num(r['cos_auc']['any'])} | {num(r['spread']['between_ids'], 4)} |"
        )
    lines += [
        "",
        "Centred features (the mean feature of the test frames removed):",
        "",
        "| variant (seed 0) | cos clean | " + " | ".join(f"cos {k}" for k in CORRUPTIONS)
        + " | cos AUC (any) | spread within tracklet | same id, other camera | between ids | "
        "window 1 / 4 / 16 |",
        "|---|" + "---|" * (len(CORRUPTIONS) + 6),
    ]  # fmt: skip
    for v, a in analyses.items():
        r = a["centred"]
        c, w, sp = r["cos_to_centre"], r["window_convergence"], r["spread"]
        lines.append(
            f"| {v} | {num(c['clean']['mean'])} | "
            + " | ".join(num(c[k]["mean"]) for k in CORRUPTIONS)
            + f" | {num(r['cos_auc']['any'])} | {num(sp['within_tracklet'])} | "
            f"{num(sp['same_id_cross_camera'])} | {num(sp['between_ids'])} | "
            f"{num(w['1'])} / {num(w['4'])} / {num(w['16'])} |"
        )
    return lines
