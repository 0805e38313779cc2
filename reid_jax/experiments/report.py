"""The ablation's report.md and its plots (tables: ``tables``; statistics: ``stats``).

Comparisons with ``mean`` are paired by seed (same initialisation and data order) with Student-t
95% intervals of the per-seed differences and Holm-adjusted p-values over all comparisons of the
report; an A/A row (``mean`` under an independent seed set) shows the noise floor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reid_jax.data.synth_scene import CORRUPTIONS  # noqa: E402
from reid_jax.experiments import stats, tables  # noqa: E402
from reid_jax.experiments.tables import col, group  # noqa: E402


def plots(groups: dict, rates: list[float], variants: list[str], dest: Path) -> list[str]:
    """mAP per variant and rate (error bars = 95% CI), and AUC per corruption type."""
    names = []
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rates))
    for j, rate in enumerate(rates):
        stats_ = [stats.mean_ci(col(groups.get((rate, v), []), "mAP")) for v in variants]
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
        vals = [stats.mean_ci([r["auc"][k]["auc"] for r in groups.get((rates[0], v), [])])[0]
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
    meta: dict[str, Any], swaps: dict[int, dict[str, dict[str, float]]] | None = None,
    influence: dict[str, dict[str, Any]] | None = None,
) -> Path:  # fmt: skip
    """Write ``workdir/report.md`` and its PNGs; returns the report's path. ``swaps``: seed ->
    the test-time swaps of that seed's `mean` checkpoint; ``influence``: variant -> measures."""
    rates, variants = meta["rates"], meta["variants"]
    groups = group(results)
    comps = tables.comparisons(groups, rates, variants, swaps)
    base = meta["base"]
    d, m = base["data"], base["model"]
    seeds = meta["seeds"]
    if not isinstance(seeds, int):
        seeds = ", ".join(f"{k}: {v}" for k, v in seeds.items())
    oracle = [v[tables.ORACLE]["mAP"] for v in swaps.values()] if swaps else None
    lines = [
        "# Fusion ablation on SynthMARS",
        "",
        f"{len(results)} finished jobs ({len(variants)} variants, seeds per rate {seeds}, "
        f"corruption rates {', '.join(f'{r:g}' for r in rates)}"
        f"{'; learning rates ' + str(meta['lrs']) if meta.get('lrs') else ''}); the jobs took "
        f"{sum(r.get('job_seconds', 0.0) for r in results) / 60:.1f} min in all, this "
        f"invocation {meta['wall_seconds'] / 60:.1f} min. Each job: {m['arch']} width "
        f"{m['width']}, {d['height']}x{d['width']}, T={d['seq_len']}, P x K = {d['p']} x "
        f"{d['k']}, {base['num_epochs']} epochs, SynthMARS {d['synth']['num_ids']} ids per split; "
        "official MARS protocol, all test frames. Means over seeds; mAP with its 95% t interval.",
        "",
        "Corrupted-frame AUC: over pairs (clean frame, corrupted frame) in the same test chunk of "
        "T frames, the fraction where the clean frame got the larger fusion weight (ties 1/2): "
        "0.5 = no preference, as temporal average pooling by construction.",
        "",
        f"## Main table (corruption rate {rates[0]:g})",
        "",
        *tables.main_table(groups, rates[0], variants, oracle),
        "",
        *tables.difference_table(comps, rates),
        "",
        *tables.design_lines(comps, groups, rates),
        "",
    ]
    if swaps:
        lines += [
            f"## Test-time swaps (rate {rates[0]:g}; the `mean` checkpoints, no retraining)",
            "",
            "Each trained `mean` checkpoint's frame features fused at extraction by another "
            "weighting (`reid_jax.experiments.swap`), then its BNNeck and the per-tracklet mean "
            "as in evaluation; differences paired by checkpoint, Holm p in the report's family. "
            "The oracle uses only the clean frames (SynthMARS labels): a bound on what frame "
            "weighting can gain with these features.",
            "",
            *tables.swap_table(swaps, comps),
            "",
        ]
    lines += [f"## Corrupted-frame AUC by corruption type (rate {rates[0]:g})", "",
              *tables.auc_table(groups, rates[0], variants), ""]  # fmt: skip
    if influence:
        lines += [
            f"## Influence per frame (seed 0, rate {rates[0]:g}; `reid_jax.experiments.influence`)",
            "",
            "Means per frame kind: T x the frame's weight (1 = average), T x its leave-one-out "
            "share (how far removing the frame moves the chunk's retrieval feature, relative to "
            "the other frames; 1 = average), and the frame feature's norm (a trivial reference "
            "detector); AUC (any) = how often a clean frame scores above a corrupted one of its "
            "chunk.",
            "",
            *tables.influence_table(influence),
            "",
        ]
    if len(rates) > 1:
        lines += ["## Corruption sweep", "", "mAP (%, 95% CI):", "",
                  *tables.sweep_table(groups, rates, variants, "mAP"), "",
                  "Corrupted-frame AUC (any):", "",
                  *tables.sweep_table(groups, rates, variants, "auc"), ""]  # fmt: skip
    if analyses:
        lines += [
            f"## Feature diagnostics (seed 0, rate {rates[0]:g}; `reid_jax.experiments.analyze`)",
            "",
            "Per-frame backbone features (GAP, L2-normalised). cos = cosine to the tracklet "
            "centre (mean of its frames); cos AUC = how well that cosine ranks clean above "
            "corrupted frames; spread = mean (1 - cosine); window w = cosine between the mean of "
            "w consecutive frames and the centre. Per-run details: `runs/.../analysis/`.",
            "",
            *tables.diagnostics_table(analyses),
            "",
        ]
    if meta.get("lr_choice"):
        lines += ["## Learning rates (chosen on the validation split)", "",
                  "| variant | chosen lr | validation mAP per lr |", "|---|---|---|"]  # fmt: skip
        for v, ch in meta["lr_choice"].items():
            per = ", ".join(f"{lr:g}: {tables.pct(x)}" for lr, x in ch["scores"].items())
            lines.append(f"| {v} | {ch['lr']:g} | {per} |")
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{n}]({n})" for n in plots(groups, rates, variants, workdir)]
    if meta.get("failed"):
        lines += ["", "## Failed jobs", ""]
        lines += [f"- {f['variant']} seed {f['seed']} rate {f['rate']:g}: {f['error']} "
                  f"({f['dir']})" for f in meta["failed"]]  # fmt: skip
    path = workdir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
