"""Benchmark: k-reciprocal re-ranking of MARS's legacy set (1980 queries + 9330 gallery =
11310 tracklets), wall time, CPU time, stages and peak memory; plus the official-protocol
metrics (1980 x 12180) for reference.

    python bench/rerank.py [--dims 128,512,2048] [--rounds 3] [--max_load 0]

Identities and cameras are MARS's own (``../shared/data/mars_info``; synthetic ids of the same
sizes when absent); features are synthetic: an identity centre plus noise, scaled so plain
retrieval is MARS-like (legacy mAP ~0.7). Each dimension runs in a fresh process so its peak
RSS is its own; "peak RSS delta" is the peak minus the RSS just before the call (features, JAX
runtime and compiled code excluded). Target (issue 5): <= 3 s and <= 2 GB on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np

MARS_INFO = common.ROOT / ".." / "shared" / "data" / "mars_info"


def mars_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(pids, cameras, is_query) of MARS's 12180 test tracklets, and where they came from."""
    try:
        import scipy.io

        info = scipy.io.loadmat(MARS_INFO / "tracks_test_info.mat")["track_test_info"]
        query = scipy.io.loadmat(MARS_INFO / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1
        pids, cams = info[:, 2].astype(np.int64), info[:, 3].astype(np.int64)
        source = f"MARS split files ({MARS_INFO.resolve()})"
    except (FileNotFoundError, OSError):
        rng = np.random.default_rng(0)
        pids = np.concatenate([np.full(870, -1), np.zeros(3248, int), rng.integers(1, 637, 8062)])
        cams = rng.integers(1, 7, size=12180)
        query = rng.choice(np.flatnonzero(pids > 0), 1980, replace=False)
        source = "synthetic ids (MARS split files not found)"
    is_query = np.zeros(len(pids), bool)
    is_query[query] = True
    return pids, cams, is_query, source


def features(pids: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """An identity centre plus noise per tracklet (distractors, junk: a centre of their own);
    the noise grows with the dimension so plain retrieval stays MARS-like (legacy mAP ~0.7-0.9)."""
    rng = np.random.default_rng(seed)
    noise = 1.3 * (dim / 128) ** 0.3
    centres = rng.normal(size=(pids.max() + 1, dim))
    own = rng.normal(size=(len(pids), dim))
    base = np.where((pids > 0)[:, None], centres[np.maximum(pids, 0)], own)
    return (base + noise * rng.normal(size=(len(pids), dim))).astype(np.float32)


def rss_gb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e9


def one(dim: int, rounds: int) -> dict:
    """Measure in this process (a fresh one per dimension)."""
    from reid_jax.evaluation import metrics, rerank
    from reid_jax.evaluation.extract import pairwise_distance

    pids, cams, is_query, _ = mars_split()
    q = np.flatnonzero(is_query)
    g = np.flatnonzero(~is_query & (pids != -1))
    rows = np.concatenate([q, g])
    feats = features(pids[rows], dim)
    nq = len(q)
    rerank.re_ranking(feats[:50], feats[50:300])  # compile the small shapes off the clock
    before = rss_gb()
    walls, cpus, stages = [], [], []
    for _ in range(rounds):
        timings: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        dist = rerank.k_reciprocal(feats, np.arange(nq), nq + np.arange(len(g)), timings=timings)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        stages.append(timings)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    plain = pairwise_distance(feats[:nq], feats[nq:], "euclidean")
    args = (pids[q], pids[g], cams[q], cams[g])
    out = {
        "dim": dim, "walls": walls, "cpus": cpus, "peak_gb": peak, "delta_gb": peak - before,
        "stages": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
        "map_rerank": metrics.evaluate(dist, *args, protocol="legacy")["mAP"],
        "map_plain": metrics.evaluate(plain, *args, protocol="legacy")["mAP"],
    }  # fmt: skip
    return out


def official_metrics(rounds: int) -> list[float]:
    """Seconds of metrics.evaluate, official protocol, 1980 x 12180 float32 distances."""
    from reid_jax.evaluation import metrics
    from reid_jax.evaluation.extract import pairwise_distance

    pids, cams, is_query, _ = mars_split()
    feats = features(pids, 128)
    q = np.flatnonzero(is_query)
    dist = pairwise_distance(feats[q], feats, "euclidean")
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        metrics.evaluate(dist, pids[q], pids, cams[q], cams, "official", camera_pairs=True)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="128,512,2048")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max_load", type=float, default=0.0, help="wait for a load below this")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rounds)))
        return
    print("\n".join(common.machine_lines()))
    print(f"data: {mars_split()[3]}")
    rows = []
    for dim in [int(d) for d in args.dims.split(",")]:
        load = common.wait_for_quiet(args.max_load)
        cmd = [sys.executable, __file__, "--one", str(dim), "--rounds", str(args.rounds)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        maps = f"{100 * r['map_plain']:.1f} -> {100 * r['map_rerank']:.1f}"
        rows.append([dim, common.fmt_spread(r["walls"], digits=2),
                     common.fmt_spread(r["cpus"], digits=2), stages,
                     f"{r['peak_gb']:.2f} / {r['delta_gb']:.2f}", maps, f"{load:.2f}"])  # fmt: skip
    print("\nk-reciprocal re-ranking, N = 11310 (k1=20, k2=6, lambda=0.3), median (min-max) s:")
    print(common.markdown_table(
        ["dim", "wall s", "CPU s", "stages (median s)", "peak RSS / delta GB",
         "legacy mAP plain -> reranked %", "load"], rows))  # fmt: skip
    load = common.loadavg()
    secs = official_metrics(args.rounds)
    print(f"\nofficial protocol 1980 x 12180 (+ camera-pair matrices): "
          f"{common.fmt_spread(secs, digits=3)} s at load {load:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
