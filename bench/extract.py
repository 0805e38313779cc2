"""Benchmark: test-time feature extraction throughput (frames/s), model alone and end to end.

1. Model: the jitted ``embed_step`` (as the evaluator runs it) on uint8 clips of
   ``--test_batch`` x T frames, with and without flip TTA, for each ``--models`` entry
   (``demo``: the CPU demo's ResNet-18 width 16 at 128x64; ``r50``: ResNet-50 at 256x128, the
   MARS recipe).
2. End to end: ``RetrievalEvaluator.features`` (grain pipeline, JPEG decode, resize, chunking,
   model, per-tracklet averaging) on a MARS-size synthetic test set: 12180 tracklets with MARS's
   length distribution (681k frames in expectation), frames served from memory as JPEG bytes.
   Only the first ``--tracklets`` are extracted; the full-set time is extrapolated from
   frames/s (chunk padding included, as the all-frames sampler pads each tracklet's last chunk).

    python bench/extract.py [--models demo,r50] [--tracklets 200] [--test_batch 64]
"""

from __future__ import annotations

import argparse
import functools
import time

import common
import jax
import numpy as np
import simplejpeg

from reid_jax import parallel
from reid_jax.config_base import base_config
from reid_jax.data import sampling
from reid_jax.data.mars_lengths import sample_lengths
from reid_jax.data.tracklets import TrackletIndex
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.models import embed as embed_lib
from reid_jax.models.reid import make_model
from reid_jax.train import optim
from reid_jax.train import state as state_lib

MODELS = {
    "demo": dict(arch="resnet18", width=16, height=128, width_px=64),
    "r50": dict(arch="resnet50", width=64, height=256, width_px=128),
}
MARS_TEST_TRACKLETS = 12180


def setup(name: str, test_batch: int) -> tuple:
    """(config, model, state) of a model spec with random weights."""
    spec = MODELS[name]
    cfg = base_config()
    cfg.model.arch, cfg.model.width = spec["arch"], spec["width"]
    cfg.data.height, cfg.data.width = spec["height"], spec["width_px"]
    cfg.data.test_batch_size, cfg.data.num_workers = test_batch, 0
    model = make_model(cfg.model, 625)
    tx = optim.make_optimizer(cfg.optim, 100)
    mesh = parallel.make_mesh(cfg.mesh)
    d = cfg.data
    state, _ = state_lib.create(
        jax.random.key(0), model, tx, (2, d.seq_len, d.height, d.width, 3),
        parallel.replicated(mesh),
    )  # fmt: skip
    return cfg, model, state


def model_fps(cfg, model, state, calls: int) -> dict[str, float]:
    """Frames/s of the jitted embedding, plain and with flip TTA (compile excluded)."""
    from reid_jax.evaluation.evaluators import _flip_embed

    d = cfg.data
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (d.test_batch_size, d.seq_len, d.height, d.width, 3), np.uint8)
    out = {}
    for label, fn in (("plain", embed_lib.embed_step), ("flip", _flip_embed)):
        f = jax.jit(functools.partial(fn, model=model, feature="bn"))
        jax.block_until_ready(f(state, {"clip": clip}))
        t0 = time.perf_counter()
        for _ in range(calls):
            res = f(state, {"clip": clip})
        jax.block_until_ready(res)
        out[label] = calls * clip.shape[0] * clip.shape[1] / (time.perf_counter() - t0)
    return out


class MemorySource:
    """Random access to JPEG records: record i is one of a few pre-encoded frames."""

    def __init__(self, num_records: int, height: int, width: int, distinct: int = 32):
        rng = np.random.default_rng(0)
        self.frames = [
            simplejpeg.encode_jpeg(rng.integers(0, 256, (height, width, 3), np.uint8), 90)
            for _ in range(distinct)
        ]
        self.num_records = num_records

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, i: int) -> dict:
        return {"jpeg": self.frames[i % len(self.frames)], "name": f"frame{i}".encode()}


def synthetic_index(num: int, seed: int = 0) -> TrackletIndex:
    """A MARS-size test index: MARS tracklet lengths, 6 cameras, ~1/6 queries."""
    rng = np.random.default_rng(seed)
    length = sample_lengths(rng, num)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    pid = rng.integers(1, 637, num)
    return TrackletIndex(
        start=start, length=length, pid=pid, camid=rng.integers(1, 7, num),
        is_query=rng.random(num) < 0.16, label=np.full(num, -1),
    )  # fmt: skip


def end_to_end(cfg, model, state, tracklets: int) -> dict[str, float]:
    """Frames/s of RetrievalEvaluator.features on the first ``tracklets`` tracklets."""
    full = synthetic_index(MARS_TEST_TRACKLETS)
    sub = TrackletIndex(**{k: getattr(full, k)[:tracklets] for k in
                           ("start", "length", "pid", "camid", "is_query", "label")})  # fmt: skip
    source = MemorySource(int(full.length.sum()), cfg.data.height, cfg.data.width)
    ev = RetrievalEvaluator(
        cfg.evals.retrieval, model=model, source=source, index=sub, data_cfg=cfg.data,
        mesh=parallel.make_mesh(cfg.mesh), process=parallel.ProcessSlice(),
    )  # fmt: skip
    small = TrackletIndex(**{k: getattr(sub, k)[:2] for k in
                             ("start", "length", "pid", "camid", "is_query", "label")})  # fmt: skip
    RetrievalEvaluator(
        cfg.evals.retrieval, model=model, source=source, index=small, data_cfg=cfg.data,
        mesh=parallel.make_mesh(cfg.mesh), process=parallel.ProcessSlice(),
    ).features(state)  # warm-up: compile  # fmt: skip
    t0 = time.perf_counter()
    ev.features(state)
    seconds = time.perf_counter() - t0
    t = cfg.data.seq_len
    padded = sum(len(sampling.all_frames_chunks(int(n), t)) * t for n in sub.length)
    padded_full = sum(-(-int(n) // t) * t for n in full.length)
    fps = padded / seconds
    return {"fps": fps, "frames": int(sub.length.sum()), "padded": padded,
            "full_frames": int(full.length.sum()), "full_padded": padded_full,
            "full_hours": padded_full / fps / 3600}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,r50")
    parser.add_argument("--tracklets", type=int, default=200)
    parser.add_argument("--test_batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    print("\n".join(common.machine_lines()))
    rows = []
    for name in args.models.split(","):
        cfg, model, state = setup(name, args.test_batch)
        load = common.loadavg()
        fps = model_fps(cfg, model, state, args.calls)
        e2e = end_to_end(cfg, model, state, args.tracklets)
        spec = MODELS[name]
        rows.append([
            f"{name} ({spec['arch']} w{spec['width']}, {spec['height']}x{spec['width_px']})",
            f"{fps['plain']:.0f}", f"{fps['flip']:.0f}", f"{e2e['fps']:.0f}",
            f"{e2e['frames']} ({e2e['padded']} with padding)",
            f"{e2e['full_frames']} ({e2e['full_padded']}): {e2e['full_hours']:.2f} h",
            f"{load:.2f}",
        ])  # fmt: skip
    print(f"\ntest batch {args.test_batch} clips x T=4 frames; frames/s count padded frames")
    print(common.markdown_table(
        ["model", "model fps", "model fps, flip TTA", "end-to-end fps", "frames extracted",
         "MARS-size test set (est.)", "load"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
