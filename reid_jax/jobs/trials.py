"""All train/test trials of iLIDS-VID / PRID-2011: mean +- std of every metric over trials.

Trial ``i`` is a separate training run in ``WORKDIR/split_<i>`` (trained with
``--config.data.split=<i>``); each is evaluated like any run (its own ``split_<i>/eval``
records, so a restarted job skips what is done), then every epoch evaluated in ALL trials gets
the mean and the sample standard deviation (ddof=1; 0 for a single trial) across trials in
``WORKDIR/eval/trials.csv`` and ``trials.md``.
"""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax import files
from reid_jax.data import builders, prepare
from reid_jax.evaluation import records
from reid_jax.evaluation.metrics import format_epoch
from reid_jax.jobs.evaluation import Options, evaluate_run

TRIAL_DIR = "split_{}"


def trial_dirs(workdir: str | Path, ids: list[int]) -> dict[int, Path]:
    """Trial -> its workdir; FileNotFoundError listing the trials never trained."""
    dirs = {i: Path(workdir) / TRIAL_DIR.format(i) for i in ids}
    missing = [i for i, d in dirs.items() if not (d / "checkpoints").is_dir()]
    if missing:
        raise FileNotFoundError(
            f"trial(s) {missing} have no checkpoints under {workdir}/split_<i>/checkpoints: train "
            f"each with --config.data.split=<i> --workdir {workdir}/split_<i>"
        )
    return dirs


def aggregate(per_trial: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per epoch evaluated in every trial: {"epoch", "trials", "<evaluator>/<variant>/<metric>":
    (mean, std)} over the trials."""
    by_epoch = [{round(r["epoch"], 6): r for r in recs} for recs in per_trial.values()]
    common = sorted(set.intersection(*(set(b) for b in by_epoch))) if by_epoch else []
    rows = []
    for epoch in common:
        flats = [records.flat_metrics(b[epoch]) for b in by_epoch]
        row: dict[str, Any] = {"epoch": epoch, "trials": len(flats)}
        for key in flats[0]:
            values = np.array([f[key] for f in flats if key in f], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row[key] = (float(values.mean()), std)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], ids: list[int]) -> str:
    """Markdown: one block per variant, cells "mean ± std" in percent."""
    if not rows:
        return "No epoch was evaluated in every trial.\n"
    variants = list(dict.fromkeys(k.rpartition("/")[0] for k in rows[0] if "/" in k))
    blocks = [f"Mean ± std (sample, ddof=1) over {len(ids)} trial(s): {ids}"]
    for variant in variants:
        cols = [c for c in records.COLUMNS if f"{variant}/{c}" in rows[0]]
        lines = [
            f"\n{variant}\n",
            "| epoch | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for row in rows:
            cells = " | ".join(
                f"{100 * row[f'{variant}/{c}'][0]:.1f} ± {100 * row[f'{variant}/{c}'][1]:.1f}%"
                for c in cols
            )
            lines.append(f"| {format_epoch(row['epoch'])} | {cells} |")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """trials.csv: epoch, trials, then <metric>_mean and <metric>_std columns."""
    keys = [k for k in rows[0] if "/" in k] if rows else []
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "trials", *(f"{k}_{s}" for k in keys for s in ("mean", "std"))])
    for row in rows:
        cells = [v for k in keys for v in row[k]]
        w.writerow([format_epoch(row["epoch"], 6), row["trials"], *cells])
    files.atomic_write_text(path, buf.getvalue())


def evaluate_trials(
    config: Any, workdir: str | Path, options: Options, trial_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """Evaluates every trial's run and writes / returns the mean +- std rows."""
    prepare.ensure_prepared(config.data)
    count = builders.num_trials(config.data.name, config.data.data_dir)
    ids = list(range(count)) if not trial_ids else list(trial_ids)
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise ValueError(f"--trial_ids {bad}: {config.data.name} has trials 0..{count - 1}")
    per_trial = {}
    for i, directory in trial_dirs(workdir, ids).items():
        cfg = copy.deepcopy(config)
        cfg.data.split = i
        per_trial[i] = evaluate_run(cfg, directory, options)
    rows = aggregate(per_trial)
    out = records.eval_dir(workdir)
    write_csv(out / "trials.csv", rows)
    text = table(rows, ids)
    files.atomic_write_text(out / "trials.md", text)
    print(text)
    return rows
