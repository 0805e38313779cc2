"""A run's evaluation results, one format for every job, in ``WORKDIR/eval/``.

A record is one JSON per evaluated step: ``{"format", "source", "step", "epoch", "settings",
"metrics": {"<evaluator>/<variant>": {metric: value}}, "seconds"}`` (the evaluation job adds
"cmc" and "camera_pairs"). The names are those of ``config.checkpoint.best_metric``, TensorBoard
and results.csv: ``<evaluator>/<variant>/<metric>``, e.g. ``retrieval/official/mAP``. The
training's evaluations are ``train_step_<N>.json``, the evaluation job's ``step_<N>.json``: the
job counts a checkpoint as evaluated when its record has the same ``settings`` (the test-time
options that change the numbers), so a restarted job skips it. Files are written atomically
(temporary file, then rename): a killed job never leaves half a record. Records of format 1 (the
evaluation job's before the training wrote this format: metrics keyed by variant only) are read
as format 2 (``upgrade``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax import files
from reid_jax.evaluation import metrics

EVAL_DIR = "eval"
COLUMNS = ("mAP", "Rank1", "Rank5", "Rank10", "Rank20", "mINP")
FORMAT = 2
SOURCES = {"training": "train_step_", "evaluate": "step_"}  # who evaluated -> file prefix


def eval_dir(workdir: str | Path) -> Path:
    """``WORKDIR/eval``, created if missing."""
    path = Path(workdir) / EVAL_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings(config: Any, names: list[str]) -> dict[str, Any]:
    """The options of the evaluators ``names`` that change their numbers (a record made with
    others is redone)."""
    evals = {}
    for name in names:
        evals[name] = config.evals[name].to_dict()
        evals[name].pop("dump_weights", None)
    d = config.data
    data = {k: d[k] for k in ("name", "split", "test_sampling", "seq_len", "height", "width")}
    return json.loads(json.dumps({"evals": evals, "data": data}, default=list))


def record_path(workdir: str | Path, step: int, source: str = "evaluate") -> Path:
    """Where the record of ``step`` made by ``source`` (``SOURCES``) lives."""
    return eval_dir(workdir) / f"{SOURCES[source]}{step}.json"


def load(
    workdir: str | Path, current: dict[str, Any] | None = None, source: str = "evaluate",
    evaluator: str = "retrieval",
) -> dict[int, dict]:  # fmt: skip
    """Step -> record of every readable record of ``source`` (only those made with ``current``
    settings); format-1 records are read as made by ``evaluator`` (``upgrade``)."""
    out = {}
    for path in sorted((Path(workdir) / EVAL_DIR).glob(f"{SOURCES[source]}*.json")):
        try:
            record = upgrade(json.loads(path.read_text()), evaluator)
            matches = current is None or record["settings"] == current
        except (json.JSONDecodeError, OSError, KeyError, TypeError):
            continue  # unreadable: as if absent (a job evaluates that step again)
        if matches:
            out[int(record["step"])] = record
    return out


def upgrade(record: dict[str, Any], evaluator: str) -> dict[str, Any]:
    """A record of format 1 (the evaluation job's before format 2: metrics, CMC and settings of
    its one evaluator, keyed by variant) as format 2, naming that evaluator."""
    if record.get("format", 1) >= FORMAT:
        return record
    record = dict(record, format=FORMAT, source="evaluate")
    for key in ("metrics", "cmc"):
        if key in record:
            record[key] = {f"{evaluator}/{v}": m for v, m in record[key].items()}
    if "settings" in record:
        record["settings"] = dict(
            record["settings"], evals={evaluator: record["settings"]["evals"]}
        )
    return record


def make_record(step: int, epoch: float, results: dict[str, dict], cfg_settings: dict,
                seconds: dict[str, float], evaluator: str) -> dict[str, Any]:  # fmt: skip
    """The evaluation job's record: scalar metrics per variant of ``evaluator``, CMC curves,
    camera-pair matrices."""
    record = _new("evaluate", step, epoch, cfg_settings, seconds)
    record["cmc"] = {}
    for variant, res in results.items():
        name = f"{evaluator}/{variant}"
        m = {"mAP": res["mAP"], "mINP": res["mINP"], "num_valid_queries": res["num_valid_queries"]}
        for r in (1, 5, 10, 20):
            m[f"Rank{r}"] = float(res["cmc"][r - 1])
        record["metrics"][name] = {k: float(v) for k, v in m.items()}
        record["cmc"][name] = [float(v) for v in res["cmc"]]
        if "camera_pair_mAP" in res:
            record["camera_pairs"] = {
                key: _nan_to_none(np.asarray(res[f"camera_pair_{key}"]))
                for key in ("mAP", "rank1", "queries")
            }
            record["metrics"][name]["camera_pair_mAP_offdiag"] = float(
                res["camera_pair_mAP_offdiag"]
            )
    return record


def scalars_record(step: int, epoch: float, scalars: dict[str, float], cfg_settings: dict,
                   seconds: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """The training's record from its evaluators' ``<evaluator>/<variant>/<metric>`` scalars
    (grouped at the last "/", so ``flat_metrics`` gives the same names back)."""
    record = _new("training", step, epoch, cfg_settings, seconds)
    for key, value in scalars.items():
        group, _, metric = key.rpartition("/")
        record["metrics"].setdefault(group, {})[metric] = float(value)
    return record


def _new(source: str, step: int, epoch: float, cfg_settings: dict, seconds: dict) -> dict:
    return {
        "format": FORMAT, "source": source, "step": int(step), "epoch": float(epoch),
        "settings": cfg_settings, "metrics": {},
        "seconds": {k: round(float(v), 3) for k, v in seconds.items()},
    }  # fmt: skip


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row]
            for row in a.tolist()]  # fmt: skip


def save(workdir: str | Path, record: dict[str, Any]) -> Path:
    """Writes a record (atomically) and returns its path."""
    path = record_path(workdir, record["step"], record["source"])
    files.atomic_write_text(path, json.dumps(record, indent=1))
    return path


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``<evaluator>/<variant>/<metric>`` -> value (the TensorBoard / CSV / best_metric names)."""
    return {f"{v}/{k}": val for v, m in record["metrics"].items() for k, val in m.items()}


def write_csv(workdir: str | Path, records: list[dict[str, Any]]) -> Path:
    """``results.csv``: one row per evaluated checkpoint (step order), a column per metric."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in flat_metrics(record) if k not in keys]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "epoch", *keys])
    for record in sorted(records, key=lambda r: r["step"]):
        flat, epoch = flat_metrics(record), metrics.format_epoch(record["epoch"], 6)
        writer.writerow([record["step"], epoch, *(flat.get(k, "") for k in keys)])
    path = eval_dir(workdir) / "results.csv"
    files.atomic_write_text(path, buf.getvalue())
    return path


def tables(records: list[dict[str, Any]], rerank: str = "") -> str:
    """The research note's table (epoch | mAP | Rank1 | Rank5) plus Rank10, Rank20 and mINP,
    one block per variant, each naming its protocol (and the post-processing, if any)."""
    records = sorted(records, key=lambda r: r["step"])
    variants: list[str] = []
    for record in records:
        variants += [v for v, m in record["metrics"].items() if "mAP" in m and v not in variants]
    blocks = []
    for variant in variants:
        protocol, _, post = variant.rpartition("/")[2].partition("+")
        rows = []
        for r in records:
            if variant in r["metrics"]:
                m = r["metrics"][variant]
                ranks = {k.lower(): v for k, v in m.items() if k.startswith("Rank")}
                rows.append({"epoch": r["epoch"], "mAP": m["mAP"], "mINP": m["mINP"],
                             **ranks})  # fmt: skip
        title = {"aqe": "After average query expansion:", "rerank": f"After re-ranking{rerank}:"}
        blocks.append(
            metrics.format_table(rows, protocol, ("Rank10", "Rank20", "mINP"), title.get(post, ""))
        )
    return "\n".join(blocks)
