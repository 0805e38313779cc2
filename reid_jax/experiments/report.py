"""The ablation's report.md and plots, and the markdown/plots of one run's diagnostics.

Confidence intervals are Student-t 95% intervals over seeds; "differs" compares a variant with
the baseline (``mean`` when present) by Welch's t interval of the difference of means, so it
needs no equal-variance or pairing assumption.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from reid_jax.data.synth_scene import CORRUPTIONS  # noqa: E402

BASELINE = "mean"


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); half-width NaN for fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def welch_diff(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) of the Welch 95% interval; NaN bounds if not computable."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    return diff, diff - half, diff + half


def _pct(m: float, h: float | None = None) -> str:
    if math.isnan(m):
        return "-"
    return f"{100 * m:.1f}" if h is None or math.isnan(h) else f"{100 * m:.1f} ± {100 * h:.1f}"


def _num(m: float, digits: int = 3) -> str:
    return "-" if m is None or math.isnan(m) else f"{m:.{digits}f}"


def group(
    results: list[dict[str, Any]],
) -> dict[tuple[float, str], list[dict[str, Any]]]:
    """(corruption rate, variant) -> its jobs' results, in seed order."""
    out: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        out.setdefault((r["corruption_rate"], r["variant"]), []).append(r)
    return out


def _col(rows: list[dict[str, Any]], key: str) -> list[float]:
    vals = []
    for r in rows:
        v = r["auc"]["any"]["auc"] if key == "auc" else r.get(key)
        vals.append(float("nan") if v is None else float(v))
    return vals


def main_table(groups: dict, rate: float, variants: list[str]) -> list[str]:
    """The issue's table for one corruption rate (means over seeds; mAP with its 95% CI)."""
    lines = [
        "| variant | seeds | mAP (95% CI) | Rank1 | Rank5 | min weight | weight entropy | "
        "corrupted-frame AUC | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        rows = groups.get((rate, v), [])
        if not rows:
            lines.append(f"| {v} | 0 | (no finished job) | | | | | | |")
            continue
        keys = ("mAP", "Rank1", "Rank5", "weight_min", "weight_entropy", "auc", "train_seconds")
        m = {k: mean_ci(_col(rows, k)) for k in keys}
        lines.append(
            f"| {v} | {len(rows)} | {_pct(*m['mAP'])} | {_pct(m['Rank1'][0])} | "
            f"{_pct(m['Rank5'][0])} | {_num(m['weight_min'][0])} | "
            f"{_num(m['weight_entropy'][0])} | {_num(m['auc'][0])} | {m['train_seconds'][0]:.0f} |"
        )
    return lines


def difference_table(groups: dict, rates: list[float], variants: list[str]) -> list[str]:
    """mAP difference of each variant from the baseline at each rate, Welch 95% interval."""
    base = BASELINE if BASELINE in variants else variants[0]
    lines = [
        f"Difference in mAP from `{base}` (points; Welch 95% interval; **bold** = the interval "
        "excludes 0):",
        "",
        "| variant | " + " | ".join(f"rate {r:g}" for r in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for v in variants:
        if v == base:
            continue
        cells = []
        for rate in rates:
            a, b = (
                _col(groups.get((rate, v), []), "mAP"),
                _col(groups.get((rate, base), []), "mAP"),
            )
            if not a or not b:
                cells.append("-")
                continue
            d, lo, hi = welch_diff(a, b)
            text = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            cells.append(f"**{text}**" if lo > 0 or hi < 0 else text)
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def auc_table(groups: dict, rate: float, variants: list[str]) -> list[str]:
    """Corrupted-frame AUC per corruption type (mean over seeds; 0.5 = no preference)."""
    kinds = (*CORRUPTIONS, "any")
    lines = ["| variant | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for v in variants:
        rows = groups.get((rate, v), [])
        cells = [_num(mean_ci([r["auc"][k]["auc"] for r in rows])[0]) for k in kinds]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def sweep_table(groups: dict, rates: list[float], variants: list[str], key: str) -> list[str]:
    lines = [
        "| variant | " + " | ".join(f"{r:g}" for r in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for v in variants:
        cells = []
        for rate in rates:
            m, h = mean_ci(_col(groups.get((rate, v), []), key))
            cells.append(_pct(m, h) if key == "mAP" else _num(m))
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
            f"| {v} | {_num(c['clean']['mean'], 4)} | "
            + " | ".join(_num(c[k]["mean"], 4) for k in CORRUPTIONS)
            + f" | {_num(r['cos_auc']['any'])} | {_num(r['spread']['between_ids'], 4)} |"
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
            f"| {v} | {_num(c['clean']['mean'])} | "
            + " | ".join(_num(c[k]["mean"]) for k in CORRUPTIONS)
            + f" | {_num(r['cos_auc']['any'])} | {_num(sp['within_tracklet'])} | "
            f"{_num(sp['same_id_cross_camera'])} | {_num(sp['between_ids'])} | "
            f"{_num(w['1'])} / {_num(w['4'])} / {_num(w['16'])} |"
        )
    return lines


def plots(groups: dict, rates: list[float], variants: list[str], dest: Path) -> list[str]:
    """mAP per variant and rate (error bars = 95% CI), and AUC per corruption type."""
    names = []
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rates))
    for j, rate in enumerate(rates):
        stats_ = [mean_ci(_col(groups.get((rate, v), []), "mAP")) for v in variants]
        x = np.arange(len(variants)) + j * width
        ax.bar(x, [100 * m for m, _ in stats_], width,
               yerr=[100 * (0 if math.isnan(h) else h) for _, h in stats_],
               capsize=3, label=f"corruption {rate:g}")  # fmt: skip
    ax.set_xticks(np.arange(len(variants)) + width * (len(rates) - 1) / 2, variants, rotation=20,
                  ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel("official mAP (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest / "map_by_variant.png", dpi=110)
    plt.close(fig)
    names.append("map_by_variant.png")
    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = (*CORRUPTIONS, "any")
    width = 0.8 / len(kinds)
    for j, k in enumerate(kinds):
        vals = [mean_ci([r["auc"][k]["auc"] for r in groups.get((rates[0], v), [])])[0]
                for v in variants]  # fmt: skip
        ax.bar(np.arange(len(variants)) + j * width, vals, width, label=k)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(np.arange(len(variants)) + 0.4 - width / 2, variants, rotation=20, ha="right",
                  fontsize=8)  # fmt: skip
    ax.set_ylabel(f"corrupted-frame AUC (rate {rates[0]:g})")
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    fig.savefig(dest / "auc_by_type.png", dpi=110)
    plt.close(fig)
    names.append("auc_by_type.png")
    return names


def write_report(
    workdir: Path, results: list[dict[str, Any]], analyses: dict[str, dict[str, Any]],
    meta: dict[str, Any],
) -> Path:  # fmt: skip
    """Write ``workdir/report.md`` and its PNGs; returns the report's path."""
    rates, variants = meta["rates"], meta["variants"]
    groups = group(results)
    base = meta["base"]
    d, m = base["data"], base["model"]
    lines = [
        "# Fusion ablation on SynthMARS",
        "",
        f"{len(results)} finished jobs ({len(variants)} variants x {meta['seeds']} seeds x "
        f"corruption rates {', '.join(f'{r:g}' for r in rates)}); the jobs took "
        f"{sum(r.get('job_seconds', 0.0) for r in results) / 60:.1f} min in all, this "
        f"invocation {meta['wall_seconds'] / 60:.1f} min. Each job: {m['arch']} width "
        f"{m['width']}, "
        f"{d['height']}x{d['width']}, T={d['seq_len']}, P x K = {d['p']} x {d['k']}, "
        f"{base['num_epochs']} epochs, SynthMARS {d['synth']['num_ids']} ids per split; official "
        "MARS protocol, all test frames. Means over seeds; mAP with its 95% t interval.",
        "",
        "Corrupted-frame AUC: over pairs (clean frame, corrupted frame) in the same test chunk of "
        "T frames, the fraction where the clean frame got the larger fusion weight (ties 1/2): "
        "0.5 = no preference, as temporal average pooling by construction.",
        "",
        f"## Main table (corruption rate {rates[0]:g})",
        "",
        *main_table(groups, rates[0], variants),
        "",
        *difference_table(groups, rates, variants),
        "",
        f"## Corrupted-frame AUC by corruption type (rate {rates[0]:g})",
        "",
        *auc_table(groups, rates[0], variants),
        "",
    ]
    if len(rates) > 1:
        lines += ["## Corruption sweep", "", "mAP (%, 95% CI):", "",
                  *sweep_table(groups, rates, variants, "mAP"), "", "Corrupted-frame AUC (any):",
                  "", *sweep_table(groups, rates, variants, "auc"), ""]  # fmt: skip
    if analyses:
        lines += [
            f"## Feature diagnostics (seed 0, rate {rates[0]:g}; `reid_jax.experiments.analyze`)",
            "",
            "Per-frame backbone features (GAP, L2-normalised). cos = cosine to the tracklet "
            "centre (mean of its frames); cos AUC = how well that cosine ranks clean above "
            "corrupted frames; spread = mean (1 - cosine); window w = cosine between the mean of "
            "w consecutive frames and the centre. Per-run details: `runs/.../analysis/`.",
            "",
            *diagnostics_table(analyses),
            "",
        ]
    lines += ["## Plots", ""]
    lines += [f"![{n}]({n})" for n in plots(groups, rates, variants, workdir)]
    if meta.get("failed"):
        lines += ["", "## Failed jobs", ""]
        lines += [f"- {f['variant']} seed {f['seed']} rate {f['rate']:g}: {f['error']} "
                  f"({f['dir']})" for f in meta["failed"]]  # fmt: skip
    path = workdir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def analysis_markdown(a: dict[str, Any]) -> str:
    """One run's diagnostics as markdown: the centred view, then the raw one."""
    lines = [
        f"# Feature diagnostics: {a['workdir']} (step {a['step']}, fusion {a['fusion']})",
        "",
        f"{a['frames']} test frames of {a['tracklets']} tracklets (junk excluded).",
        "",
    ]
    for view, title in (("centred", "Centred features (the test frames' mean feature removed)"),
                        ("raw", "Raw features (as the fusion sees them)")):  # fmt: skip
        lines += [f"## {title}", "", *_view_markdown(a[view], 3 if view == "centred" else 5)]
    return "\n".join(lines)


def _view_markdown(a: dict[str, Any], digits: int) -> list[str]:
    c, s, g = a["cos_to_centre"], a["spread"], a["gait"]
    bins = list(zip(g["phase_bins"], g["phase_bins"][1:]))
    num = functools.partial(_num, digits=digits)
    lines = ["| frames | n | cos to centre (mean ± std) | AUC clean vs this |",
             "|---|---|---|---|"]  # fmt: skip
    for k in ("clean", *CORRUPTIONS):
        auc = "" if k == "clean" else _num(a["cos_auc"][k])
        lines.append(
            f"| {k} | {c[k]['frames']} | {num(c[k]['mean'])} ± {num(c[k]['std'])} | {auc} |"
        )
    lines += ["", "| spread (1 - cos) | value |", "|---|---|",
              f"| frames around their tracklet centre | {num(s['within_tracklet'])} |",
              f"| tracklets of one identity, other cameras | {num(s['same_id_cross_camera'])} |",
              f"| identities | {num(s['between_ids'])} |", "",
              "| gait-phase difference | " + " | ".join(
                  f"{lo:.1f}-{hi:.1f}" for lo, hi in bins) + " |",
              "|---|" + "---|" * len(g["cos_by_phase_diff"]),
              "| cosine between two clean frames | " + " | ".join(
                  num(v) for v in g["cos_by_phase_diff"]) + " |", "",
              "| gait phase (cycle) | " + " | ".join(
                  f"{b / len(g['spread_by_phase']):.3g}-" for b in range(len(g["spread_by_phase"])))
              + " |", "|---|" + "---|" * len(g["spread_by_phase"]),
              "| spread of clean frames (1 - cos to centre) | " + " | ".join(
                  num(v) for v in g["spread_by_phase"]) + " |", "",
              "| window w | " + " | ".join(a["window_convergence"]) + " |",
              "|---|" + "---|" * len(a["window_convergence"]),
              "| cos(mean of w frames, centre) | " + " | ".join(
                  num(v) for v in a["window_convergence"].values()) + " |", ""]  # fmt: skip
    return lines


def analysis_plots(a: dict[str, Any], dest: Path) -> None:
    """gait.png: spread over the cycle, similarity by phase difference and by lag;
    window.png: window convergence (both of the centred features)."""
    a = a["centred"]
    g = a["gait"]
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(12, 3.5))
    n = len(g["spread_by_phase"])
    ax0.plot([(b + 0.5) / n for b in range(n)], g["spread_by_phase"], "o-")
    ax0.set_xlabel("gait phase (cycles)")
    ax0.set_ylabel("1 - cos to tracklet centre (clean)")
    mids = [(lo + hi) / 2 for lo, hi in zip(g["phase_bins"], g["phase_bins"][1:])]
    ax1.plot(mids, g["cos_by_phase_diff"], "o-")
    ax1.set_xlabel("gait-phase difference (cycles)")
    ax1.set_ylabel("cosine, two clean frames")
    ax2.plot(range(1, len(g["cos_by_lag"]) + 1), g["cos_by_lag"], "o-")
    ax2.set_xlabel("frame lag")
    fig.tight_layout()
    fig.savefig(dest / "gait.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    w = a["window_convergence"]
    ax.plot([int(k) for k in w], list(w.values()), "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window w (consecutive frames)")
    ax.set_ylabel("cos(window mean, tracklet centre)")
    fig.tight_layout()
    fig.savefig(dest / "window.png", dpi=110)
    plt.close(fig)
