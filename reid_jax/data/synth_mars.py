"""SynthMARS: a procedurally rendered video re-ID dataset in MARS's exact on-disk format.

Layout (same as MARS, so one reader serves both): ``bbox_train/<pid4>/<pid4>C<c>T<t4>F<f3>.jpg``,
``bbox_test/...`` (junk pid -1 in ``00-1``, distractors pid 0 in ``0000``), ``info/train_name.txt``,
``info/test_name.txt``, ``info/tracks_{train,test}_info.mat`` (int32 Nx4 [start, end, pid, cam],
1-based inclusive rows of the sorted name lists) and ``info/query_IDX.mat`` (uint16 1xQ).
Extra: ``info/synth_frames.csv`` (per-frame corruption/gait/viewpoint labels, never read by
training) and ``info/synth_params.json`` (parameters + summary; written last = completion mark).

Split plan: ``num_ids`` training identities (pids 1..N) and as many different test identities
(pids N+1..2N). Each identity is seen by 2-6 of the 6 cameras (drawn with MARS's camera
frequencies) with 1-2 tracklets per camera (~6 tracklets/id; MARS has ~13). The test split adds
distractors (pid 0, one tracklet each, fresh people) and junk (pid -1, background-only or badly
cropped fragments) in MARS's proportions (3248 and 870 per 8062 identity tracklets); one query
per (test pid, camera). Lengths follow the real MARS distribution times ``length_scale``.
Rendering: synth_render.py (people) and synth_scene.py (cameras, corruptions, frame loop).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io as sio

from reid_jax.data.mars_lengths import sample_lengths
from reid_jax.data.synth_scene import CORRUPTIONS, render_tracklet, resolve_difficulty

FORMAT_VERSION = 1
CAMERA_WEIGHTS = np.array([1816, 1957, 1321, 750, 1880, 574], np.float64)  # MARS train cams
DISTRACTORS_PER_ID_TRACKLET = 3248 / 8062
JUNK_PER_ID_TRACKLET = 870 / 8062
JPEG_QUALITY = 90
MARKER = ".synth_mars_incomplete"
CSV_FIELDS = ("name", "split", "pid", "camera", "tracklet", "frame", "kind", "corruption",
              "gait_phase", "viewpoint", "other_id", "is_query")  # fmt: skip
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: reid_jax SynthMARS"


def _folder(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


def plan_tracklets(
    num_ids: int, seed: int, length_scale: float, min_length: int
) -> dict[str, list[dict[str, Any]]]:
    """Deterministic split plan: per split, tracklets sorted by name prefix (MARS row order)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    p = CAMERA_WEIGHTS / CAMERA_WEIGHTS.sum()
    plan: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    counters: dict[tuple[str, int, int], int] = {}

    def add(split: str, pid: int, cam: int, kind: str, key: int, keys: range) -> dict:
        t = counters[(split, pid, cam)] = counters.get((split, pid, cam), 0) + 1
        prefix = f"{_folder(pid)}C{cam}T{t:04d}"
        trk = dict(split=split, pid=pid, cam=cam, tracklet=t, kind=kind, key=key,
                   switch_keys=keys, prefix=prefix, query=False)  # fmt: skip
        plan[split].append(trk)
        return trk

    for split, lo in (("train", 1), ("test", num_ids + 1)):
        keys = range(lo, lo + num_ids)
        for pid in keys:
            cams = np.sort(rng.choice(6, int(rng.integers(2, 7)), replace=False, p=p)) + 1
            for cam in cams:
                group = [add(split, pid, int(cam), "identity", pid, keys)
                         for _ in range(int(rng.integers(1, 3)))]  # fmt: skip
                if split == "test":
                    group[int(rng.integers(len(group)))]["query"] = True
    n_id = len(plan["test"])
    test_keys = range(num_ids + 1, 2 * num_ids + 1)
    for j in range(max(1, round(n_id * DISTRACTORS_PER_ID_TRACKLET))):
        add("test", 0, int(rng.choice(6, p=p)) + 1, "distractor", 1_000_000 + j, test_keys)
    for j in range(max(1, round(n_id * JUNK_PER_ID_TRACKLET))):
        add("test", -1, int(rng.choice(6, p=p)) + 1, "junk", 2_000_000 + j, test_keys)
    index = 0
    for split in ("train", "test"):
        lengths = sample_lengths(rng, len(plan[split]), length_scale, min_length)
        for trk, n in zip(plan[split], lengths):
            trk["length"], trk["index"] = int(n), index
            index += 1
        plan[split].sort(key=lambda r: r["prefix"])
    return plan


def _render_job(job: dict[str, Any]) -> tuple[int, list[tuple]]:
    """Worker: render one tracklet, write its JPEGs, return its sidecar rows (CSV_FIELDS order)."""
    folder = Path(job["dir"])
    rows = []
    for f, (img, meta) in enumerate(render_tracklet(job), start=1):
        name = f"{job['prefix']}F{f:03d}.jpg"
        img.save(folder / name, "JPEG", quality=JPEG_QUALITY)
        kind = f"junk_{meta['junk']}" if job["kind"] == "junk" else job["kind"]
        rows.append((name, job["split"], job["pid"], job["cam"], job["tracklet"], f, kind,
                     meta["corruption"], meta["gait_phase"], meta["viewpoint"], meta["other_id"],
                     int(job["query"])))  # fmt: skip
    return job["order"], rows


def _savemat(path: Path, name: str, arr: np.ndarray) -> None:
    """scipy savemat with a fixed header text (scipy stamps the time), so files are reproducible."""
    buf = io.BytesIO()
    sio.savemat(buf, {name: arr})
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


def _count_jpgs(root: Path) -> dict[str, int]:
    return {s: sum(len(fs) for _, _, fs in os.walk(root / f"bbox_{s}")) for s in ("train", "test")}


def _check_out_dir(out: Path, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the stored summary if ``out`` holds this exact complete tree; clean up an
    interrupted one; raise ValueError for anything else that is non-empty."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return None
    pfile = out / "info" / "synth_params.json"
    if (out / MARKER).exists():
        print(f"SynthMARS: {out} holds an interrupted generation; regenerating", file=sys.stderr)
    elif pfile.exists():
        stored = json.loads(pfile.read_text())
        if stored.get("params") != json.loads(json.dumps(params)):
            raise ValueError(
                f"{out} holds a SynthMARS tree with other parameters {stored.get('params')}; "
                f"expected {dict(params)}: delete it or choose another --out"
            )
        summary = stored["summary"]
        found = _count_jpgs(out)
        if found == {"train": summary["train_frames"], "test": summary["test_frames"]}:
            return summary
        print(f"SynthMARS: {out} is missing frames {found}; regenerating", file=sys.stderr)
    else:
        raise ValueError(
            f"out_dir {out} is not empty and is not a SynthMARS tree (no info/synth_params.json "
            f"or {MARKER}); refusing to overwrite it"
        )
    for sub in ("bbox_train", "bbox_test", "info"):
        shutil.rmtree(out / sub, ignore_errors=True)
    return None


def _run_jobs(jobs: list[dict], num_workers: int, progress: bool) -> list[list[tuple]]:
    """Render all jobs (in a spawn Pool when num_workers > 1), reporting progress to stderr."""
    results: list[list[tuple]] = [[] for _ in jobs]
    total, done, frames, last = len(jobs), 0, 0, 0.0

    def report(final: bool = False) -> None:
        nonlocal last
        if progress and (final or time.monotonic() - last > 0.5):
            last = time.monotonic()
            pct = 100.0 * done / max(1, total)
            end = "\n" if final else ""
            print(f"\rSynthMARS: {done}/{total} tracklets, {frames} frames ({pct:.0f}%)",
                  end=end, file=sys.stderr, flush=True)  # fmt: skip

    if num_workers <= 1:
        stream, pool = map(_render_job, jobs), None
    else:
        pool = mp.get_context("spawn").Pool(num_workers)
        chunk = max(1, min(16, total // (num_workers * 8)))
        stream = pool.imap_unordered(_render_job, jobs, chunksize=chunk)
    try:
        for order, rows in stream:
            results[order] = rows
            done, frames = done + 1, frames + len(rows)
            report()
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    report(final=True)
    return results


def generate(
    out_dir: str | Path,
    num_ids: int = 100,
    height: int = 256,
    width: int = 128,
    corruption_rate: float = 0.1,
    seed: int = 0,
    length_scale: float = 0.25,
    min_length: int = 4,
    num_workers: int | None = None,
    progress: bool = True,
    difficulty: str | Mapping[str, float] = "medium",
) -> dict[str, Any]:
    """Write a SynthMARS tree to ``out_dir`` (or reuse an identical complete one); returns
    summary counts plus ``out_dir``, ``generated`` (False when reused) and ``seconds``."""
    if not 1 <= num_ids <= 4999:
        raise ValueError(f"num_ids must be in [1, 4999] (pids are 4 digits), got {num_ids}")
    if height < 16 or width < 8:
        raise ValueError(f"height/width must be >= 16/8, got {height}x{width}")
    if not 0.0 <= corruption_rate <= 1.0:
        raise ValueError(f"corruption_rate must be in [0, 1], got {corruption_rate}")
    if length_scale <= 0 or not 1 <= min_length <= 999:
        raise ValueError(f"need length_scale > 0 and 1 <= min_length <= 999, got "
                         f"{length_scale}, {min_length}")  # fmt: skip
    t0 = time.monotonic()
    out = Path(out_dir)
    diff = resolve_difficulty(difficulty)
    params = dict(format_version=FORMAT_VERSION, num_ids=num_ids, height=height, width=width,
                  corruption_rate=corruption_rate, seed=seed, length_scale=length_scale,
                  min_length=min_length, difficulty=diff)  # fmt: skip
    stored = _check_out_dir(out, params)
    if stored is not None:
        return dict(stored, out_dir=str(out), generated=False, seconds=time.monotonic() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(params))
    plan = plan_tracklets(num_ids, seed, length_scale, min_length)
    jobs = []
    for split in ("train", "test"):
        for trk in plan[split]:
            folder = out / f"bbox_{split}" / _folder(trk["pid"])
            folder.mkdir(parents=True, exist_ok=True)
            job = dict(trk, order=len(jobs), dir=str(folder), seed=seed, diff=diff)
            jobs.append(dict(job, height=height, width=width, corruption_rate=corruption_rate))
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs)))
    results = _run_jobs(sorted(jobs, key=lambda j: -j["length"]), workers, progress)
    summary = _write_info(out / "info", plan, results, num_ids)
    (out / "info" / "synth_params.json").write_text(
        json.dumps(dict(params=params, summary=summary), indent=1, sort_keys=True)
    )
    (out / MARKER).unlink()
    return dict(summary, out_dir=str(out), generated=True, seconds=time.monotonic() - t0)


def _write_info(info: Path, plan, results, num_ids: int) -> dict[str, Any]:
    """Write the MARS info files and the sidecar CSV; return the summary counts."""
    info.mkdir(parents=True, exist_ok=True)
    rows = [r for res in results for r in res]
    summary: dict[str, Any] = dict(num_ids=num_ids)
    offset = 0
    for split in ("train", "test"):
        trks = plan[split]
        split_rows = results[offset : offset + len(trks)]
        offset += len(trks)
        names = [r[0] for res in split_rows for r in res]
        if names != sorted(names):
            raise RuntimeError(f"internal error: {split} names are not in sorted order")
        (info / f"{split}_name.txt").write_text("".join(n + "\n" for n in names))
        table, start = np.zeros((len(trks), 4), np.int32), 1
        for i, trk in enumerate(trks):
            table[i] = (start, start + trk["length"] - 1, trk["pid"], trk["cam"])
            start += trk["length"]
        _savemat(info / f"tracks_{split}_info.mat", f"track_{split}_info", table)
        pids = {t["pid"] for t in trks if t["pid"] > 0}
        summary.update({f"{split}_ids": len(pids), f"{split}_tracklets": len(trks),
                        f"{split}_frames": len(names)})  # fmt: skip
    test = plan["test"]
    query = np.array([[i + 1 for i, t in enumerate(test) if t["query"]]], np.uint16)
    if len(test) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(test)} test tracklets do not fit query_IDX's uint16 rows")
    _savemat(info / "query_IDX.mat", "query_IDX", query)
    with open(info / "synth_frames.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        writer.writerows(rows)
    col = CSV_FIELDS.index("corruption")
    counts = {c: sum(r[col] == c for r in rows) for c in CORRUPTIONS}
    summary.update(queries=int(query.shape[1]),
                   distractor_tracklets=sum(t["pid"] == 0 for t in test),
                   junk_tracklets=sum(t["pid"] == -1 for t in test),
                   corrupted_frames=sum(counts.values()), corruption_counts=counts)  # fmt: skip
    return summary


def _main(argv: list[str]) -> None:
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}")
    f = flags.FLAGS
    summary = generate(f.out, num_ids=f.num_ids, height=f.height, width=f.width,
                       corruption_rate=f.corruption_rate, seed=f.seed,
                       length_scale=f.length_scale, min_length=f.min_length,
                       num_workers=f.num_workers, difficulty=f.difficulty)  # fmt: skip
    print(json.dumps(summary, indent=1))


def main() -> None:
    """CLI entry point: ``python -m reid_jax.data.synth_mars --out DIR [--num_ids N] ...``."""
    from absl import app, flags

    flags.DEFINE_string("out", None, "Output directory (MARS layout).", required=True)
    flags.DEFINE_integer("num_ids", 100, "Training identities (test gets as many others).")
    flags.DEFINE_integer("height", 256, "Frame height in pixels.")
    flags.DEFINE_integer("width", 128, "Frame width in pixels.")
    flags.DEFINE_float("corruption_rate", 0.1, "Fraction of corrupted frames.")
    flags.DEFINE_integer("seed", 0, "Random seed (output is a pure function of it).")
    flags.DEFINE_float("length_scale", 0.25, "Multiplier on MARS tracklet lengths.")
    flags.DEFINE_integer("min_length", 4, "Minimum tracklet length in frames.")
    flags.DEFINE_integer("num_workers", None, "Worker processes (default: all cores).")
    flags.DEFINE_enum("difficulty", "medium", ["easy", "medium", "hard"], "Difficulty preset.")
    app.run(_main)


if __name__ == "__main__":
    main()
