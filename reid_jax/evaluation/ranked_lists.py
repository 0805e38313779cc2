"""Ranked lists for chosen queries: a PNG per query and a small HTML page linking them.

Each PNG shows the query tracklet (a few evenly spaced frames), then its top-10 gallery
tracklets in rank order (middle frame), framed green (match), red (non-match) or grey (junk:
not counted by the protocol, e.g. pid -1 or same identity in the query's camera), with the rank,
distance, identity and camera written under each.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from reid_jax.data import transforms

TOP = 10
QUERY_FRAMES = 4
COLOURS = {"match": "#1a9850", "non-match": "#d73027", "junk": "#9e9e9e", "unlabelled": "#4575b4"}


def choose_queries(spec: str, results: dict[str, Any]) -> list[int]:
    """Query positions (0-based, in query order) from ``spec``: "" none; "auto" = the best,
    two middle and the worst query by AP; or a comma list "0,17,42"."""
    num_q = len(results["AP"])
    if not spec:
        return []
    if spec == "auto":
        order = np.argsort(-np.asarray(results["AP"]), kind="stable")
        picks = [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]]
        return list(dict.fromkeys(int(p) for p in picks))
    try:
        picks = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError as e:
        raise ValueError(f"--ranked_queries={spec!r}: expected 'auto' or '0,17,42'") from e
    bad = [p for p in picks if not 0 <= p < num_q]
    if bad:
        raise ValueError(f"--ranked_queries: {bad} out of range: there are {num_q} queries")
    return picks


def _frame(source: Any, index: Any, tracklet: int, offset: int) -> np.ndarray:
    record = source[int(index.start[tracklet] + offset)]
    try:
        return transforms.decode_jpeg(record["jpeg"])
    except transforms.DecodeError:
        return np.zeros((64, 32, 3), np.uint8)


def label(protocol: str, q_pid: int, q_cam: int, g_pid: int, g_cam: int) -> str:
    """match / non-match / junk of a gallery item for a query under ``protocol``."""
    same = g_pid == q_pid
    if same and g_cam == q_cam:
        return "junk"
    if protocol == "official" and g_pid == -1:
        return "junk"
    return "match" if same else "non-match"


def _who(index: Any, tracklet: int) -> str:
    """A tracklet's caption: its name when the index has ``names`` (one's own footage, see
    reid_jax.search), else its identity and camera."""
    names = getattr(index, "names", None)
    if names is not None:
        return str(names[tracklet])
    return f"id {int(index.pid[tracklet])} cam {int(index.camid[tracklet])}"


def query_figure(source: Any, index: Any, results: dict[str, Any], position: int,
                 protocol: str, path: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Draws one query's ranked list to ``path``; returns the top-10 rows (for the HTML).
    Without "AP" in ``results`` (unlabelled footage) every item is drawn as "unlabelled"."""
    labelled = "AP" in results
    q_rows, g_rows = results["query_rows"], results["gallery_rows"]
    dist = np.asarray(results["distances"][position])
    top = np.argsort(dist, kind="stable")[:TOP]
    qt = int(q_rows[position])
    q_pid, q_cam = int(index.pid[qt]), int(index.camid[qt])
    fig, axes = plt.subplots(1, QUERY_FRAMES + len(top), figsize=(1.25 * (QUERY_FRAMES + TOP), 3.4))
    offsets = np.unique(np.linspace(0, index.length[qt] - 1, QUERY_FRAMES).round().astype(int))
    for ax in axes:
        ax.axis("off")
    for ax, off in zip(axes, offsets):
        ax.imshow(_frame(source, index, qt, int(off)))
        ax.set_title(f"frame {off + 1}", fontsize=7)
    axes[0].text(0, -0.18, f"query {_who(index, qt)}", transform=axes[0].transAxes,
                 fontsize=8, weight="bold")  # fmt: skip
    rows = []
    for rank, col in enumerate(top, start=1):
        gt = int(g_rows[col])
        g_pid, g_cam = int(index.pid[gt]), int(index.camid[gt])
        kind = label(protocol, q_pid, q_cam, g_pid, g_cam) if labelled else "unlabelled"
        ax = axes[QUERY_FRAMES + rank - 1]
        ax.imshow(_frame(source, index, gt, int(index.length[gt]) // 2))
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(COLOURS[kind])
            spine.set_linewidth(5)
        ax.set_title(f"#{rank}  {dist[col]:.3g}", fontsize=7)
        ax.set_xlabel(f"{_who(index, gt)}\n{kind}", fontsize=7, color=COLOURS[kind])
        rows.append({"rank": rank, "tracklet": gt, "pid": g_pid, "cam": g_cam, "kind": kind,
                     "distance": float(dist[col]), "who": _who(index, gt)})  # fmt: skip
    score = "unlabelled"
    if labelled:
        score = f"{protocol} protocol: AP {100 * float(results['AP'][position]):.1f}%"
    fig.suptitle(f"query {position} (tracklet {qt}), {score}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return rows


def write(source: Any, index: Any, results: dict[str, Any], positions: list[int],
          protocol: str, out_dir: str | Path, title: str) -> Path:  # fmt: skip
    """PNG per chosen query plus ``index.html`` in ``out_dir``; returns the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
    parts = [
        head + f"<body><h1>{html.escape(title)}</h1><p>Frames: green = match, red = non-match, "
        "grey = junk (ignored by the protocol), blue = unlabelled (one's own footage).</p>"
    ]
    for position in positions:
        name = f"query_{position}.png"
        rows = query_figure(source, index, results, position, protocol, out_dir / name)
        cells = "".join(
            f"<td style='color:{COLOURS[r['kind']]}'>#{r['rank']} {html.escape(r['who'])} "
            f"({r['kind']}, {r['distance']:.4g})</td>"
            for r in rows
        )
        parts.append(f"<h2>Query {position}</h2><img src='{name}' style='max-width:100%'>"
                     f"<table border='1'><tr>{cells}</tr></table>")  # fmt: skip
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts))
    return path
