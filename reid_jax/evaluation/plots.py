"""PNG figures of the evaluation job (matplotlib, Agg backend: no display needed).

``cmc_plot``: CMC curves (Rank-1..50) of evaluated checkpoints; ``metrics_plot``: mAP, Rank-1
and mINP against the epoch; ``camera_pair_plot``: the official camera-pair mAP / Rank-1
matrices as annotated heat maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from reid_jax import files
from reid_jax.evaluation.metrics import format_epoch

MAX_CURVES = 8  # CMC curves drawn at most (evenly picked checkpoints, the last one included)


def _pick(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(records) <= n:
        return records
    idx = np.unique(np.linspace(0, len(records) - 1, n).round().astype(int))
    return [records[i] for i in idx]


def cmc_plot(records: list[dict[str, Any]], variant: str, path: str | Path) -> Path:
    """CMC curves of ``variant`` (e.g. "retrieval/official") for up to ``MAX_CURVES``
    checkpoints."""
    records = [r for r in sorted(records, key=lambda r: r["step"]) if variant in r["cmc"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for r in _pick(records, MAX_CURVES):
        cmc = 100.0 * np.asarray(r["cmc"][variant])
        mAP = 100.0 * r["metrics"][variant]["mAP"]
        label = f"epoch {format_epoch(r['epoch'])}: R1 {cmc[0]:.1f}%, mAP {mAP:.1f}%"
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker=".", markersize=3, label=label)
    ax.set(xlabel="rank", ylabel="matching rate (%)", title=f"CMC ({variant} protocol)")
    ax.set_xlim(1, max((len(r["cmc"][variant]) for r in records), default=50))
    ax.grid(alpha=0.3)
    if records:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def metrics_plot(records: list[dict[str, Any]], path: str | Path) -> Path:
    """mAP, Rank-1 and mINP (%) of every variant against the epoch."""
    records = sorted(records, key=lambda r: r["step"])
    variants: list[str] = []
    for r in records:
        variants += [v for v in r["metrics"] if v not in variants]
    names = ("mAP", "Rank1", "mINP")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), dpi=100)
    for ax, name in zip(axes, names):
        for variant in variants:
            pts = [(r["epoch"], 100.0 * r["metrics"][variant][name])
                   for r in records if variant in r["metrics"]]  # fmt: skip
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", markersize=4, label=variant)
        ax.set(xlabel="epoch", ylabel=f"{name} (%)", title=name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def camera_pair_plot(record: dict[str, Any], path: str | Path) -> Path:
    """The record's camera-pair mAP and Rank-1 matrices (query camera x gallery camera)."""
    pairs = record["camera_pairs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=100)
    for ax, key in zip(axes, ("mAP", "rank1")):
        m = np.array([[np.nan if v is None else v for v in row] for row in pairs[key]], float)
        im = ax.imshow(100.0 * m, cmap="viridis", vmin=0, vmax=100)
        cams = np.arange(1, len(m) + 1)
        ax.set_xticks(cams - 1, [f"C{c}" for c in cams])
        ax.set_yticks(cams - 1, [f"C{c}" for c in cams])
        ax.set(xlabel="gallery camera", ylabel="query camera")
        name = "mAP" if key == "mAP" else "Rank-1"
        ax.set_title(f"{name} (%), epoch {format_epoch(record['epoch'])}")
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v < 0.6 else "black")  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    try:
        return files.atomic_write(path, fig.savefig)
    finally:
        plt.close(fig)
