"""Evaluator plug-ins: configured by a dict in ``config.evals``, each yields ``(name, value)``.

``retrieval`` embeds every test tracklet (``config.data.test_sampling``: all frames in chunks,
T evenly spaced frames, or restricted random frames; optional horizontal-flip TTA), ranks the
gallery for each query and reports mAP, Rank-k and mINP under each MARS protocol, optionally
also after average query expansion (``<protocol>+aqe/...``) and k-reciprocal re-ranking
(``<protocol>+rerank/...``), and the official camera-pair matrices (their off-diagonal means).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from reid_jax import parallel
from reid_jax.data import pipeline
from reid_jax.evaluation import metrics, rerank
from reid_jax.evaluation.extract import extract_features, pairwise_distance, tracklet_weights
from reid_jax.models import embed as embed_lib

RANKS = (1, 5, 10, 20)
# "average": each query = mean of itself and its aqe_k nearest gallery items (gallery unchanged);
# "alpha": fast-reid's alpha-weighted expansion of queries and gallery (rerank.py).
AQE_MODES = ("average", "alpha")


def _flip_embed(state: Any, batch: dict[str, jax.Array], *, model, feature: str) -> dict:
    """Mean of the features of each clip and of its horizontal mirror (flip TTA)."""
    out = embed_lib.embed_step(state, batch, model=model, feature=feature)
    mirror = embed_lib.embed_step(
        state, {"clip": batch["clip"][:, :, :, ::-1]}, model=model, feature=feature
    )
    return {**out, "features": (out["features"] + mirror["features"]) / 2.0}


def check_config(cfg: Any) -> None:
    """ValueError naming the first setting of a retrieval entry of ``config.evals`` that cannot
    run; called on the whole config before anything starts (``config_base.check_evals``)."""
    for p in cfg.protocols:
        if p not in metrics.PROTOCOLS:
            raise ValueError(f"evals.protocols: {p!r} is not one of {metrics.PROTOCOLS}")
    if cfg.feature not in ("bn", "raw"):
        raise ValueError(f"evals.feature={cfg.feature!r}: expected 'bn' or 'raw'")
    if cfg.distance not in ("euclidean", "cosine"):
        raise ValueError(f"evals.distance={cfg.distance!r}: expected 'euclidean' or 'cosine'")
    if cfg.aqe_k < 0 or cfg.rerank_k1 < 1 or cfg.rerank_k2 < 1:
        raise ValueError(
            f"evals: aqe_k={cfg.aqe_k} must be >= 0 and rerank_k1={cfg.rerank_k1}"
            f", rerank_k2={cfg.rerank_k2} >= 1"
        )
    if cfg.aqe_mode not in AQE_MODES:
        raise ValueError(f"evals.aqe_mode={cfg.aqe_mode!r}: expected one of {AQE_MODES}")
    if cfg.aqe_times < 1:
        raise ValueError(f"evals.aqe_times={cfg.aqe_times}: expected >= 1")
    if not 0.0 <= cfg.rerank_lambda <= 1.0:
        raise ValueError(f"evals.rerank_lambda={cfg.rerank_lambda}: expected 0..1")


class RetrievalEvaluator:
    """Query/gallery retrieval on the test split, labelled by protocol in every output name."""

    def __init__(
        self, cfg: Any, *, model, source, index, data_cfg, mesh: Mesh, process, workdir=None
    ):
        check_config(cfg)
        if cfg.dump_weights and workdir is None:
            raise ValueError(
                f"config.evals ({cfg.type}) dump_weights=True needs a workdir: pass workdir= "
                "to make_evaluators"
            )
        self.cfg, self.source, self.index, self.workdir = cfg, source, index, workdir
        self.data_cfg, self.mesh, self.process = data_cfg, mesh, process
        self.embed = jax.jit(
            functools.partial(embed_lib.embed_step, model=model, feature=cfg.feature),
            out_shardings=parallel.batch_sharding(mesh),
        )
        self._embed = self.embed
        if cfg.flip:
            self._embed = jax.jit(
                functools.partial(_flip_embed, model=model, feature=cfg.feature),
                out_shardings=parallel.batch_sharding(mesh),
            )

    def features(self, state: Any, weights: list[np.ndarray] | None = None) -> np.ndarray:
        """Every test tracklet's feature (mean over its clips; flip TTA when configured)."""
        batches, num_batches = pipeline.eval_iterator(
            self.source,
            self.index,
            self.data_cfg,
            global_batch=self.data_cfg.test_batch_size,
            process=self.process,
        )
        bad = pipeline.BadFrames(self.source, self.data_cfg.max_bad_frames, "evaluation")
        try:
            return extract_features(
                self._embed, state, bad.watch(batches), num_batches, len(self.index.pid),
                self.mesh, weights,
            )  # fmt: skip
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def variants(self) -> list[str]:
        """Result names: each protocol, plus ``+aqe`` / ``+rerank`` variants when configured."""
        return variants(self.cfg)

    def distances(self, feats: np.ndarray, variant: str) -> tuple[np.ndarray, np.ndarray, Any]:
        """(query rows, gallery rows, [Q, G] distances) of one variant (``variants()``)."""
        protocol, _, post = variant.partition("+")
        if self.cfg.normalize:
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        q, g = metrics.query_gallery_indices(self.index.pid, self.index.is_query, protocol)
        c = self.cfg
        if post == "rerank":  # neighbourhoods over the union of the query and gallery rows
            rows = np.union1d(q, g)
            dist = rerank.k_reciprocal(
                feats[rows], np.searchsorted(rows, q), np.searchsorted(rows, g),
                c.rerank_k1, c.rerank_k2, c.rerank_lambda,
            )  # fmt: skip
            return q, g, dist
        q_feats = feats[q]
        if post == "aqe" and c.aqe_mode == "alpha":  # fast-reid: queries and gallery expanded
            q_feats, g_feats = rerank.alpha_query_expansion(
                feats[q], feats[g], c.aqe_k, c.aqe_alpha, c.aqe_times
            )
            return q, g, pairwise_distance(q_feats, g_feats, c.distance)
        if post == "aqe":
            if c.distance == "cosine":
                feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            q_feats = rerank.average_query_expansion(feats[q], feats[g], c.aqe_k)
        return q, g, pairwise_distance(q_feats, feats[g], c.distance)

    def score(
        self, feats: np.ndarray, camera_pairs: bool | None = None, keep_distances: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Full ``metrics.evaluate`` results per variant (``keep_distances`` adds "distances",
        "query_rows", "gallery_rows" to the first variant's, e.g. for ranked lists);
        camera-pair matrices on the plain official variant."""
        pairs = self.cfg.camera_pairs if camera_pairs is None else camera_pairs
        idx = self.index
        out = {}
        for variant in self.variants():
            q, g, dist = self.distances(feats, variant)
            protocol = variant.partition("+")[0]
            res = metrics.evaluate(
                dist, idx.pid[q], idx.pid[g], idx.camid[q], idx.camid[g], protocol=protocol,
                camera_pairs=pairs and variant == "official",
            )  # fmt: skip
            if keep_distances and not out:
                res.update(distances=dist, query_rows=q, gallery_rows=g)
            out[variant] = res
        return out

    def run(self, state: Any) -> Iterator[tuple[str, float]]:
        weights: list[np.ndarray] = []
        feats = self.features(state, weights)
        if weights:
            yield from self._weights(np.concatenate(weights), int(jax.device_get(state.step)))
        yield from scalars(self.score(feats))

    def _weights(self, weights: np.ndarray, step: int) -> Iterator[tuple[str, float]]:
        """Weight stats over the test chunks; with ``dump_weights``, the per-frame .npz."""
        d = self.data_cfg
        chunks = pipeline.eval_chunks(self.index, d.seq_len, d.test_sampling, d.test_batch_size)
        record = tracklet_weights(chunks[: len(weights)], weights, self.index)
        for key, value in embed_lib.weight_stats(record["weights"]).items():
            yield key, float(value)
        if self.cfg.dump_weights and jax.process_index() == 0:
            path = Path(self.workdir) / f"fusion_weights_step{step}.npz"
            np.savez(path, **record)


def variants(cfg: Any) -> list[str]:
    """Result names of a retrieval entry: each protocol, plus ``+aqe`` / ``+rerank`` variants."""
    out = list(cfg.protocols)
    if cfg.aqe_k > 0:
        out += [f"{p}+aqe" for p in cfg.protocols]
    if cfg.rerank:
        out += [f"{p}+rerank" for p in cfg.protocols]
    return out


def reported_metrics(cfg: Any) -> list[str]:
    """The ranking metrics a retrieval entry reports (``<variant>/mAP``, ``/Rank<k>``, ``/mINP``),
    which ``checkpoint.best_metric`` may name."""
    names = ["mAP", *(f"Rank{r}" for r in RANKS), "mINP"]
    return [f"{v}/{n}" for v in variants(cfg) for n in names]


def scalars(results: dict[str, dict[str, Any]]) -> Iterator[tuple[str, float]]:
    """The scalar outputs of ``RetrievalEvaluator.score``: ``<variant>/mAP``, ``/Rank<k>``,
    ``/mINP``, ``/num_valid_queries`` and the camera-pair off-diagonal means."""
    for variant, res in results.items():
        yield f"{variant}/mAP", float(res["mAP"])
        for r in RANKS:
            yield f"{variant}/Rank{r}", float(res["cmc"][r - 1])
        yield f"{variant}/mINP", float(res["mINP"])
        yield f"{variant}/num_valid_queries", float(res["num_valid_queries"])
        if "camera_pair_mAP" in res:
            yield f"{variant}/camera_pair_mAP_offdiag", float(res["camera_pair_mAP_offdiag"])
            yield f"{variant}/camera_pair_rank1_offdiag", float(res["camera_pair_rank1_offdiag"])


EVALUATORS = {"retrieval": RetrievalEvaluator}


def make_evaluators(evals_cfg: Any, **kwargs) -> dict[str, Any]:
    """One evaluator per entry of ``config.evals`` (name -> dict with a ``type`` key)."""
    out = {}
    for name, cfg in evals_cfg.items():
        if cfg.type not in EVALUATORS:
            raise ValueError(
                f"evals.{name}.type={cfg.type!r}: expected one of {sorted(EVALUATORS)}"
            )
        out[name] = EVALUATORS[cfg.type](cfg, **kwargs)
    return out
