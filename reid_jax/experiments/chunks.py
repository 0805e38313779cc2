"""Backbone maps of every test chunk of a trained run, with the chunks' tracklets and records.

The test-time swaps (``swap``) and the influence measures (``influence``) start from the same
thing: the per-frame backbone maps a fusion receives, chunk by chunk, as the evaluator feeds it
(``test_sampling=all``: consecutive T-frame windows, the last one repeating the last frame).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax import run as run_lib
from reid_jax.data import pipeline
from reid_jax.data.transforms import normalize
from reid_jax.experiments import frames
from reid_jax.models.resnet import BN_EPSILON, make_resnet


@dataclasses.dataclass
class Chunks:
    """A run's test chunks: ``maps`` [M,T,h,w,C] float32 (or None), ``gap`` [M,T,C] (their
    spatial means), ``tracklet`` [M], ``records`` [M,T] (record index of every frame),
    ``first`` [M,T] (False on a repeated frame), ``labels`` [M,T] (SynthMARS corruption label),
    and the run's pieces the swaps and the influence need."""

    gap: np.ndarray
    tracklet: np.ndarray
    records: np.ndarray
    first: np.ndarray
    labels: np.ndarray
    index: Any
    config: Any
    state: Any
    maps: np.ndarray | None = None


def backbone_maps(state: Any, clips: jax.Array, *, model: Any) -> jax.Array:
    """[B,T,H,W,3] uint8 clips -> backbone maps [B,T,h,w,C] float32."""
    backbone = make_resnet(model.arch, width=model.width, last_stride=model.last_stride,
                           dtype=model.dtype)  # fmt: skip
    b, t = clips.shape[:2]
    x = normalize(clips, xp=jnp).reshape((b * t, *clips.shape[2:]))
    variables = {"params": state.params["backbone"],
                 "batch_stats": state.batch_stats["backbone"]}  # fmt: skip
    maps = backbone.apply(variables, x, False).astype(jnp.float32)
    return maps.reshape((b, t, *maps.shape[1:]))


def map_test_chunks(
    run: run_lib.Run,
    state: Any,
    fn: Callable[..., jax.Array],
    collect: Callable[[np.ndarray], None],
) -> np.ndarray:
    """Runs jitted ``fn(state, clips, model=...)`` on every test chunk (all frames, T at a time)
    and hands each batch's output to ``collect``; returns the chunk table (padding rows have
    tracklet -1)."""
    d = run.config.data.copy_and_resolve_references()
    d.test_sampling = "all"
    batch = d.test_batch_size
    table = pipeline.eval_chunks(run.test_index, d.seq_len, "all", batch)
    it, num_batches = pipeline.eval_iterator(
        run.test_source, run.test_index, d, global_batch=batch, process=run.process
    )
    embed = jax.jit(functools.partial(fn, model=run.model))
    try:
        for _ in range(num_batches):
            collect(np.asarray(embed(state, next(it)["clip"])))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return table


def extract(workdir: str | Path, keep_maps: bool = False, step: int | None = None) -> Chunks:
    """Restore ``workdir``'s checkpoint (default: the last) and embed every test chunk."""
    run, state, _ = run_lib.restore_latest(workdir, step=step)
    config = run.config
    maps, gaps = [], []

    def collect(m: np.ndarray) -> None:
        gaps.append(m.mean(axis=(2, 3)))
        if keep_maps:
            maps.append(m)

    table = map_test_chunks(run, state, backbone_maps, collect)
    keep = table[:, 0] >= 0
    table = table[keep]
    dump = {"tracklet": table[:, 0], "offsets": table[:, 1:], "start": run.test_index.start}
    records, first = frames.chunk_records(dump)
    labels = frames.record_labels(run.test_source, config.data.raw_dir)["corruption"][records]
    return Chunks(
        gap=np.concatenate(gaps)[keep], tracklet=table[:, 0], records=records, first=first,
        labels=labels, index=run.test_index, config=config, state=state,
        maps=np.concatenate(maps)[keep] if keep_maps else None,
    )  # fmt: skip


def bnneck(features: np.ndarray, state: Any) -> np.ndarray:
    """The model's BNNeck at inference: (x - running mean) / sqrt(running var + eps) * scale."""
    stats = state.batch_stats["bnneck"]
    scale = np.asarray(state.params["bnneck"]["scale"], np.float64)
    mean, var = np.asarray(stats["mean"], np.float64), np.asarray(stats["var"], np.float64)
    return ((features - mean) / np.sqrt(var + BN_EPSILON) * scale).astype(np.float32)
