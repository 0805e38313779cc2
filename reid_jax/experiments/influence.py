"""Influence that counts magnitude: how much each frame moves the fused feature, per corruption.

A weight says how a fusion ranks frames, not how much a frame changes its output (a pairwise
cosine weighting ranks corrupted frames low with weight differences of ~1e-5; templet's "weights"
are not the coefficients of a convex combination). Per frame of every test chunk:
- ``T x weight share``: T w_t (1 = an average frame's weight);
- ``T x leave-one-out share``: with g the fused feature of the chunk and g_{-t} that of the chunk
  without frame t, T |g - g_{-t}| / sum_s |g - g_{-s}| (1 = an average frame's influence);
- the frame feature's norm (GAP of the backbone map), a trivial reference detector.
Each is averaged per corruption kind, and each gives a corrupted-frame AUC within chunks
(``frames.pairwise_auc``: clean frames should get more weight / influence).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.data.synth_scene import CORRUPTIONS
from reid_jax.experiments import frames
from reid_jax.fusion import make_fusion

Fuse = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # maps -> (fused, weights [B,T])


def weight_share(weights: np.ndarray) -> np.ndarray:
    """T x each frame's weight [M,T]."""
    return weights.shape[1] * np.asarray(weights, np.float64)


def loo_share(full: np.ndarray, loo: np.ndarray) -> np.ndarray:
    """T |g - g_{-t}| / sum_s |g - g_{-s}| [M,T] from full [M,D] and loo [M,T,D]; 1 where no
    frame moves g at all."""
    moved = np.linalg.norm(loo - full[:, None, :], axis=-1)
    total = moved.sum(axis=1, keepdims=True)
    t = loo.shape[1]
    return np.where(total > 0, t * moved / np.where(total > 0, total, 1.0), 1.0)


def by_kind(values: np.ndarray, labels: np.ndarray, first: np.ndarray) -> dict[str, float]:
    """Mean of per-frame ``values`` [M,T] for clean frames and each corruption kind (junk and
    repeated frames left out; NaN where a kind has no frame)."""
    out = {}
    for kind in ("clean", *CORRUPTIONS):
        sel = (labels == kind) & first
        out[kind] = float(values[sel].mean()) if sel.any() else float("nan")
    return out


def aucs(values: np.ndarray, labels: np.ndarray, first: np.ndarray) -> dict[str, float]:
    """Corrupted-frame AUC of ``values`` within chunks, per kind and "any" (higher = clean)."""
    clean = (labels == "clean") & first
    out = {}
    for kind in (*CORRUPTIONS, "any"):
        bad = (np.isin(labels, CORRUPTIONS) if kind == "any" else labels == kind) & first
        out[kind] = frames.pairwise_auc(np.asarray(values, np.float64), clean, bad)[0]
    return out


def measures(fuse: Fuse, maps: np.ndarray, gap: np.ndarray, labels: np.ndarray,
             first: np.ndarray, batch: int = 64) -> dict[str, Any]:  # fmt: skip
    """All three measures of chunks ``maps`` [M,T,h,w,C] under ``fuse``: per kind and AUCs."""
    t = maps.shape[1]
    fused, weights, loo = [], [], []
    for s in range(0, len(maps), batch):
        x = maps[s : s + batch]
        g, w = fuse(x)
        fused.append(g)
        weights.append(w)
        loo.append(np.stack([fuse(np.delete(x, j, axis=1))[0] for j in range(t)], axis=1))
    fused, weights, loo = np.concatenate(fused), np.concatenate(weights), np.concatenate(loo)
    values = {
        "weight_share": weight_share(weights),
        "loo_share": loo_share(fused, loo),
        "feature_norm": np.linalg.norm(gap, axis=-1),
    }
    return {name: {"by_kind": by_kind(v, labels, first), "auc": aucs(v, labels, first)}
            for name, v in values.items()}  # fmt: skip


def model_fuse(config: Any, state: Any) -> Fuse:
    """The run's own fusion (and BNNeck when retrieval uses it) as ``Fuse`` on numpy maps."""
    from reid_jax.experiments.chunks import bnneck  # noqa: PLC0415

    module = make_fusion(config.model.fusion, **config.model.fusion_kwargs)
    variables = {"params": state.params.get("fusion", {})}
    apply = jax.jit(lambda v, m: module.apply(v, m, False))
    use_bn = config.evals.retrieval.feature == "bn"

    def fuse(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, aux = apply(variables, jnp.asarray(maps, jnp.float32))
        w = np.asarray(aux.get("frame_weights", aux["weights"]), np.float64)
        out = np.asarray(out, np.float64)
        return (bnneck(out, state) if use_bn else out), w

    return fuse
