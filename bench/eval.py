"""Evaluation timings at MARS's real sizes: metrics, re-ranking, all-frames feature extraction.

Sizes come from the real MARS split files (``--mars_info``, default ``../shared/data/mars_info``;
a synthetic split of the same sizes when absent, see ``mars_test``): 12180 test tracklets, 1980
queries, the real pids and cameras, and (for extraction) the real tracklet lengths (681,089
test frames). Features are synthetic (identity centre + noise), so the
timings do not depend on a trained model.

- metrics: ``metrics.evaluate`` under both protocols on the [1980, G] distance matrix (and the
  distance computation itself), against the loop the PyTorch code bases use (deep-person-reid
  ``eval_func``, legacy protocol; its mAP is checked equal to ours).
- re-ranking: the k-reciprocal re-ranking every PyTorch re-ID code base copies (Zhong et al.
  2017, numpy; k1=20, k2=6, lambda=0.3) on the 11310 legacy tracklets, as the baseline; plus
  reid_jax's own when ``--rerank_fn module:function`` names it (called as fn(q_feats, g_feats)).
- extraction: all-frames test feature extraction through ``extract.extract_features`` (the
  evaluator's path: host batches -> device -> features -> per-tracklet means) on synthetic uint8
  frames, for the longest prefix of MARS's test tracklets that fits ``--extract_budget_s``;
  also the device-only rate (one resident batch, no transfer) to show what the host side costs.

    .venv/bin/python bench/eval.py [--rerank 1] [--extract 1 --arch resnet50 --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import resource
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import common
import jax
import numpy as np

from reid_jax import parallel
from reid_jax.config_base import base_config
from reid_jax.data import mars, pipeline
from reid_jax.data.mars_lengths import sample_lengths
from reid_jax.evaluation import extract, metrics
from reid_jax.models import embed as embed_lib
from reid_jax.models.reid import make_model
from reid_jax.train.state import TrainState


def mars_test(info_dir: Path) -> SimpleNamespace:
    """pid, camid, is_query and length of MARS's 12180 test tracklets (and where they came from).

    Without the split files (a fresh clone, a GPU machine) the same sizes are synthesised: 870
    junk (-1) and 3248 distractor (0) tracklets, 8062 over 636 ids, 1980 queries, 6 cameras and
    lengths drawn from the embedded MARS length distribution (``mars_lengths``).
    """
    if not (info_dir / "tracks_test_info.mat").is_file():
        rng = np.random.default_rng(0)
        pid = np.concatenate([np.full(870, -1), np.zeros(3248, int), rng.integers(1, 637, 8062)])
        is_query = np.zeros(len(pid), bool)
        is_query[rng.choice(np.flatnonzero(pid > 0), 1980, replace=False)] = True
        return SimpleNamespace(
            pid=pid,
            camid=rng.integers(1, 7, size=len(pid)),
            is_query=is_query,
            length=sample_lengths(rng, len(pid)),
            source=f"synthetic MARS-size split ({info_dir} has no split files)",
        )
    info = mars.read_info(info_dir)
    test = info["track_test_info"]
    is_query = np.zeros(len(test), bool)
    is_query[info["query_IDX"] - 1] = True
    return SimpleNamespace(
        pid=test[:, 2],
        camid=test[:, 3],
        is_query=is_query,
        length=test[:, 1] - test[:, 0] + 1,
        source=f"MARS split files ({info_dir})",
    )


def synthetic_features(pids: np.ndarray, dim: int, noise: float, seed: int = 0) -> np.ndarray:
    """float32 [N, dim]: one random centre per pid (fresh ones for pid 0 / -1) plus noise."""
    rng = np.random.default_rng(seed)
    keys = np.where(pids > 0, pids, -np.arange(1, len(pids) + 1))
    _, inverse = np.unique(keys, return_inverse=True)
    centres = rng.standard_normal((inverse.max() + 1, dim)).astype(np.float32)
    return centres[inverse] + noise * rng.standard_normal((len(pids), dim)).astype(np.float32)


def eval_func_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """deep-person-reid's ``eval_func`` (legacy protocol), as the PyTorch code bases run it."""
    num_q, _ = distmat.shape
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, num_valid_q = [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        orig_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * orig_cmc
        all_ap.append(tmp_cmc.sum() / orig_cmc.sum())
    return np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q, float(np.mean(all_ap))


def re_ranking_numpy(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3):
    """k-reciprocal re-ranking (Zhong et al. 2017) as in the public numpy code; [Q, G] distances."""
    original = np.concatenate(
        [np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0
    )
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    V = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    query_num, all_num = q_g.shape[0], q_g.shape[0] + q_g.shape[1]
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_recip = forward[np.where(backward == i)[0]]
        expansion = k_recip
        for cand in k_recip:
            c_forward = initial_rank[cand, :half]
            c_backward = initial_rank[c_forward, :half]
            c_recip = c_forward[np.where(c_backward == cand)[0]]
            if len(np.intersect1d(c_recip, k_recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original = original[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    del initial_rank
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for j in nonzero:
            rows = inv_index[j]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:query_num, query_num:]


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of fn(), and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def bench_metrics(args: argparse.Namespace, test: SimpleNamespace) -> list[list[str]]:
    """Distance + metrics rows for both protocols, and the PyTorch-way loop on legacy."""
    feats = synthetic_features(test.pid, args.dim, args.noise)
    rows = []
    for protocol in metrics.PROTOCOLS:
        q, g = metrics.query_gallery_indices(test.pid, test.is_query, protocol)
        shape = f"[{len(q)} x {len(g)}]"
        load = f"{common.wait_for_quiet(args.max_load):.2f}"
        dist_s, dist = timed(
            functools.partial(extract.pairwise_distance, feats[q], feats[g], "euclidean"), 3
        )
        ids = (test.pid[q], test.pid[g], test.camid[q], test.camid[g])
        run = functools.partial(metrics.evaluate, dist, *ids, protocol=protocol)
        eval_s, res = timed(run, args.repeats)
        detail = f"mAP {100 * res['mAP']:.2f}%, rank-1 {100 * res['cmc'][0]:.2f}%"
        rows.append(
            [
                f"distances {shape} {args.dim}-d f32",
                common.fmt_spread(dist_s, 1e3),
                "-",
                load,
                "extract.pairwise_distance, euclidean",
            ]
        )
        rows.append(
            [
                f"metrics.evaluate {protocol} {shape}",
                common.fmt_spread(eval_s, 1e3),
                "<= 500 ms (issue 5)",
                load,
                detail,
            ]
        )
        if protocol == "legacy" and args.loop_baseline:
            load = f"{common.wait_for_quiet(args.max_load):.2f}"
            loop_s, (cmc, m_ap) = timed(functools.partial(eval_func_loop, dist, *ids), 1)
            same = abs(m_ap - res["mAP"]) < 1e-6 and abs(cmc[0] - res["cmc"][0]) < 1e-6
            speedup = loop_s[0] / np.median(eval_s)
            detail = f"mAP {100 * m_ap:.2f}% ({'equal' if same else 'DIFFERENT'}); "
            rows.append(
                [
                    f"PyTorch-way eval_func loop, legacy {shape}",
                    common.fmt_spread(loop_s, 1e3),
                    "-",
                    load,
                    detail + f"evaluate is {speedup:.0f}x faster",
                ]
            )
    return rows


def bench_rerank(args: argparse.Namespace, test: SimpleNamespace) -> list[list[str]]:
    """The numpy re-ranking baseline (and reid_jax's, if named) on the legacy tracklets."""
    feats = synthetic_features(test.pid, args.dim, args.noise)
    q, g = metrics.query_gallery_indices(test.pid, test.is_query, "legacy")
    qf, gf = feats[q], feats[g]
    name = f"({len(q) + len(g)} tracklets)"
    load = f"{common.wait_for_quiet(args.max_load):.2f}"
    t0 = time.perf_counter()
    pairs = ((qf, gf), (qf, qf), (gf, gf))
    re_ranking_numpy(*[np.sqrt(extract.pairwise_distance(a, b, "euclidean")) for a, b in pairs])
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    detail = f"k1=20, k2=6, lambda=0.3, incl. distances; process peak RSS {peak:.1f} GiB"
    rows = [
        [f"k-reciprocal re-ranking, numpy baseline {name}", f"{1e3 * secs:.0f}", "-", load, detail]
    ]
    if args.rerank_fn:
        module, attr = args.rerank_fn.split(":")
        fn = getattr(importlib.import_module(module), attr)
        load = f"{common.wait_for_quiet(args.max_load):.2f}"
        secs, _ = timed(lambda: jax.block_until_ready(fn(qf, gf)), args.repeats)
        rows.append(
            [
                f"re-ranking {args.rerank_fn} {name}",
                common.fmt_spread(secs, 1e3),
                "<= 3000 ms (issue 5)",
                load,
                "max includes the first call's compile",
            ]
        )
    return rows


def extract_pipelined(embed, state, batches, num_batches, num_tracklets, mesh, depth=2):
    """extract_features with dispatch-ahead: batch i+depth is sent before batch i is fetched.

    Not in the library: measured here to show what overlapping host and device would give.
    """
    sums = np.zeros((num_tracklets, 0))
    counts = np.zeros(num_tracklets, np.int64)
    pending: collections.deque = collections.deque()

    def drain() -> None:
        nonlocal sums
        out, tracklet, keep = pending.popleft()
        feats = np.asarray(out["features"]).astype(np.float64)
        if sums.shape[1] == 0:
            sums = np.zeros((num_tracklets, feats.shape[1]))
        np.add.at(sums, tracklet[keep], feats[keep])
        np.add.at(counts, tracklet[keep], 1)

    for _ in range(num_batches):
        local = next(batches)
        out = embed(state, parallel.global_batch({"clip": local["clip"]}, mesh))
        pending.append((out, local["tracklet"], local["mask"] > 0))
        if len(pending) > depth:
            drain()
    while pending:
        drain()
    return (sums / counts[:, None]).astype(np.float32)


def bench_extract(args: argparse.Namespace, test: SimpleNamespace) -> list[list[str]]:
    """All-frames extraction frames/s through extract_features on synthetic frames."""
    config = base_config()
    config.model.arch, config.model.dtype = args.arch, args.dtype
    model = make_model(config.model, 625)
    mesh = parallel.make_mesh(config.mesh)
    b, t, h, w = args.extract_batch, args.seq_len, args.height, args.width
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), np.zeros((b, t, h, w, 3), np.float32)
    )
    state = TrainState(
        jax.numpy.zeros((), jax.numpy.int32), variables["params"], variables["batch_stats"], None
    )
    embed = jax.jit(
        functools.partial(embed_lib.embed_step, model=model, feature="bn"),
        out_shardings=parallel.batch_sharding(mesh),
    )
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8) for _ in range(4)]
    t0 = time.perf_counter()
    resident = parallel.global_batch({"clip": pool[0]}, mesh)
    jax.block_until_ready(embed(state, resident))
    compile_s = time.perf_counter() - t0
    chunk_end = np.cumsum(-(-test.length // t))  # chunks up to and including each tracklet

    def run(fn: Any, num_chunks: int) -> tuple[int, int, float]:
        """(tracklets, frames, seconds) for the longest tracklet prefix within num_chunks."""
        m = max(1, int(np.searchsorted(chunk_end, num_chunks, side="right")))
        table = pipeline.eval_chunks(SimpleNamespace(length=test.length[:m]), t, "all", b)
        n = len(table) // b
        batches = (
            {
                "clip": pool[i % len(pool)],
                "tracklet": table[i * b : (i + 1) * b, 0],
                "mask": (table[i * b : (i + 1) * b, 0] >= 0).astype(np.float32),
            }
            for i in range(n)
        )
        t0 = time.perf_counter()
        feats = fn(embed, state, batches, n, m, mesh)
        secs = time.perf_counter() - t0
        assert feats.shape[0] == m and np.isfinite(feats).all()
        return m, int(test.length[:m].sum()), secs

    load = common.wait_for_quiet(args.max_load)
    dev_s, _ = timed(lambda: jax.block_until_ready(embed(state, resident)), 5)
    per_batch = float(np.median(dev_s))
    _, frames, secs = run(extract.extract_features, 4 * b)  # calibration with the real path
    budget_chunks = int(args.extract_budget_s / 2 * frames / secs / t)  # half for each variant
    results = {
        name: run(fn, budget_chunks)
        for name, fn in (
            ("extract_features", extract.extract_features),
            ("dispatch-ahead 2 (bench only)", extract_pipelined),
        )
    }
    total = int(test.length.sum())
    name = f"{args.arch} {args.dtype} {h}x{w} T={t} batch {b} clips"
    rows = []
    for variant, (m, frames, secs) in results.items():
        detail = (
            f"{m} of {len(test.length)} MARS test tracklets, {frames:,} frames in {secs:.1f} s "
            f"(full MARS {total:,} frames: ~{total * secs / frames:.0f} s)"
        )
        rows.append(
            [
                f"all-frames extraction, {variant} ({name})",
                f"{frames / secs:,.0f} frames/s",
                ">= 40,000 frames/s (H200)",
                f"{load:.2f}",
                detail,
            ]
        )
    detail = f"one resident batch, {common.fmt_spread(dev_s, 1e3)} ms; compile {compile_s:.0f} s"
    rows.append(
        [
            f"embed_step device only ({name})",
            f"{b * t / per_batch:,.0f} frames/s",
            "-",
            f"{load:.2f}",
            detail,
        ]
    )
    return rows


def main(argv: list[str] | None = None) -> list[list[str]]:
    """Run the chosen parts and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_info = common.ROOT.parent / "shared" / "data" / "mars_info"
    parser.add_argument("--mars_info", default=str(default_info))
    parser.add_argument("--metrics", type=int, default=1)
    parser.add_argument("--loop_baseline", type=int, default=1, help="time eval_func's loop")
    parser.add_argument("--rerank", type=int, default=1)
    parser.add_argument("--rerank_fn", default="", help="module:function(q_feats, g_feats)")
    parser.add_argument("--extract", type=int, default=0)
    parser.add_argument("--dim", type=int, default=2048, help="feature size (ResNet-50: 2048)")
    parser.add_argument("--noise", type=float, default=3.0, help="noise sd (3: mAP ~68%%)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=4)
    parser.add_argument("--extract_batch", type=int, default=64, help="clips per batch")
    parser.add_argument("--extract_budget_s", type=float, default=60.0)
    parser.add_argument("--max_load", type=float, default=1.5)
    parser.add_argument("--json", default="", help="append the rows here as JSON lines")
    args = parser.parse_args(argv)
    test = mars_test(Path(args.mars_info).resolve())
    rows = []
    if args.metrics:
        rows += bench_metrics(args, test)
    if args.rerank:
        rows += bench_rerank(args, test)
    if args.extract:
        rows += bench_extract(args, test)
    if args.json:
        common.append_json_rows(args.json, "eval", rows)
    print("\n".join(common.machine_lines()))
    print(
        f"MARS test split sizes: {test.source}; synthetic {args.dim}-d features; ms: median "
        f"(min-max) of {args.repeats} runs"
    )
    print(common.markdown_table(["figure", "ms or rate", "goal", "load", "detail"], rows))
    return rows


if __name__ == "__main__":
    main()
