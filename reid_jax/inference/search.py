"""Gallery search over embedded footage (``folders.Features``): distances
(the evaluation's ``pairwise_distance`` and k-reciprocal re-ranking), a CSV of each query's top-k
and the evaluation's ranked-list views (PNG per query + index.html), drawn "unlabelled".
"""

from __future__ import annotations

import csv
import dataclasses
import types
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax.evaluation import ranked_lists, rerank
from reid_jax.evaluation.extract import pairwise_distance
from reid_jax.inference import folders
from reid_jax.inference.folders import Features


def check_comparable(query: Features, gallery: Features) -> None:
    """ValueError unless both were embedded by the same checkpoint (features of different
    weights live in different spaces)."""
    q, g = (
        (Path(query.workdir).resolve(), query.step),
        (Path(gallery.workdir).resolve(), gallery.step),
    )
    if q != g:
        raise ValueError(
            f"query features come from {q[0]} step {q[1]} but the gallery's from {g[0]} step "
            f"{g[1]}: embed both with the same run and checkpoint"
        )


def distances(
    query: np.ndarray, gallery: np.ndarray, metric: str, rerank_k: tuple[int, int, float] | None
) -> np.ndarray:
    """[Q, G] distances: ``metric`` ("cosine" or "euclidean", as the evaluation computes them),
    or with ``rerank_k`` = (k1, k2, lambda) k-reciprocal re-ranking over queries and gallery."""
    if rerank_k is None:
        return pairwise_distance(query, gallery, metric)
    both = np.concatenate([query, gallery])
    q_rows, g_rows = np.arange(len(query)), len(query) + np.arange(len(gallery))
    return rerank.k_reciprocal(both, q_rows, g_rows, *rerank_k)


def write_csv(path: Path, query: Features, gallery: Features, dist: np.ndarray, top_k: int) -> None:
    """``query,rank,gallery,distance``: each query's ``top_k`` nearest gallery tracklets."""
    order = np.argsort(dist, axis=1, kind="stable")[:, :top_k]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "rank", "gallery", "distance"])
        for qi, cols in enumerate(order):
            for rank, gi in enumerate(cols, start=1):
                writer.writerow([query.names[qi], rank, gallery.names[gi], f"{dist[qi, gi]:.6g}"])


def draw(out: Path, query: Features, gallery: Features, dist: np.ndarray, title: str,
         positions: list[int]) -> Path:  # fmt: skip
    """The evaluation's ranked-list PNGs + index.html for the queries at ``positions``."""
    lengths = np.concatenate([query.lengths, gallery.lengths])
    source = folders.FileSource(tuple(str(f) for f in np.concatenate([query.files, gallery.files])))
    index = types.SimpleNamespace(
        **dataclasses.asdict(folders.unlabelled_index(lengths)),
        names=np.concatenate([query.names, gallery.names]),
    )
    results: dict[str, Any] = {
        "distances": dist,
        "query_rows": np.arange(len(query.names)),
        "gallery_rows": len(query.names) + np.arange(len(gallery.names)),
    }
    return ranked_lists.write(source, index, results, positions, "unlabelled", out, title)
