"""Evaluator plug-ins: configured by a dict in ``config.evals``, each yields ``(name, value)``.

``retrieval`` embeds every test tracklet (all frames in chunks, or T evenly spaced frames),
ranks the gallery for each query and reports mAP, Rank-k and mINP under each MARS protocol.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from reid_jax import parallel
from reid_jax.data import pipeline
from reid_jax.evaluation import metrics
from reid_jax.evaluation.extract import extract_features, pairwise_distance
from reid_jax.train import step as step_lib

RANKS = (1, 5, 10, 20)


class RetrievalEvaluator:
    """Query/gallery retrieval on the test split, labelled by protocol in every output name."""

    def __init__(self, cfg: Any, *, model, source, index, data_cfg, mesh: Mesh, process):
        for p in cfg.protocols:
            if p not in metrics.PROTOCOLS:
                raise ValueError(f"evals.protocols: {p!r} is not one of {metrics.PROTOCOLS}")
        if cfg.feature not in ("bn", "raw"):
            raise ValueError(f"evals.feature={cfg.feature!r}: expected 'bn' or 'raw'")
        self.cfg, self.source, self.index = cfg, source, index
        self.data_cfg, self.mesh, self.process = data_cfg, mesh, process
        self.embed = jax.jit(
            functools.partial(step_lib.embed_step, model=model, feature=cfg.feature),
            out_shardings=parallel.batch_sharding(mesh),
        )

    def features(self, state: Any) -> np.ndarray:
        batches, num_batches = pipeline.eval_iterator(
            self.source,
            self.index,
            self.data_cfg,
            global_batch=self.data_cfg.test_batch_size,
            process=self.process,
        )
        try:
            return extract_features(
                self.embed, state, batches, num_batches, len(self.index.pid), self.mesh
            )
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def run(self, state: Any) -> Iterator[tuple[str, float]]:
        feats = self.features(state)
        if self.cfg.normalize:
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        idx = self.index
        for protocol in self.cfg.protocols:
            q, g = metrics.query_gallery_indices(idx.pid, idx.is_query, protocol)
            dist = pairwise_distance(feats[q], feats[g], self.cfg.distance)
            res = metrics.evaluate(
                dist, idx.pid[q], idx.pid[g], idx.camid[q], idx.camid[g], protocol=protocol
            )
            yield f"{protocol}/mAP", float(res["mAP"])
            for r in RANKS:
                yield f"{protocol}/Rank{r}", float(res["cmc"][r - 1])
            yield f"{protocol}/mINP", float(res["mINP"])
            yield f"{protocol}/num_valid_queries", float(res["num_valid_queries"])


EVALUATORS = {"retrieval": RetrievalEvaluator}


def make_evaluators(evals_cfg: Any, **kwargs) -> dict[str, Any]:
    """One evaluator per entry of ``config.evals`` (name -> dict with a ``type`` key)."""
    out = {}
    for name, cfg in evals_cfg.items():
        if cfg.type not in EVALUATORS:
            raise ValueError(f"evals.{name}.type={cfg.type!r}: expected one of {sorted(EVALUATORS)}")
        out[name] = EVALUATORS[cfg.type](cfg, **kwargs)
    return out
