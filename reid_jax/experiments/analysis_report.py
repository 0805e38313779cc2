"""Markdown and plots of one run's feature diagnostics (``analyze``): the centred view, then raw."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reid_jax.data.synth_scene import CORRUPTIONS  # noqa: E402
from reid_jax.experiments.tables import num as _num  # noqa: E402


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
