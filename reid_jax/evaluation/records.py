"""The evaluation job's records in ``WORKDIR/eval/``: one JSON per checkpoint, results.csv, tables.

A checkpoint counts as evaluated when ``step_<N>.json`` exists with the same evaluation
``settings`` (the test-time options that change the numbers); a restarted job skips it. Files
are written atomically (temporary file, then rename), so a killed job never leaves half a record.
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


def eval_dir(workdir: str | Path) -> Path:
    """``WORKDIR/eval``, created if missing."""
    path = Path(workdir) / EVAL_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings(config: Any) -> dict[str, Any]:
    """The options that change evaluation numbers (a record made with others is redone)."""
    ev = config.evals.retrieval.to_dict()
    ev.pop("dump_weights", None)
    d = config.data
    data = {k: d[k] for k in ("name", "split", "test_sampling", "seq_len", "height", "width")}
    return json.loads(json.dumps({"evals": ev, "data": data}, default=list))


def record_path(workdir: str | Path, step: int) -> Path:
    """Where the record of ``step`` lives."""
    return eval_dir(workdir) / f"step_{step}.json"


def load(workdir: str | Path, current: dict[str, Any] | None = None) -> dict[int, dict]:
    """Step -> record of every readable record (only those made with ``current`` settings)."""
    out = {}
    for path in sorted(eval_dir(workdir).glob("step_*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if current is None or record.get("settings") == current:
            out[int(record["step"])] = record
    return out


def make_record(step: int, epoch: float, results: dict[str, dict], cfg_settings: dict,
                seconds: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """A JSON-ready record: scalar metrics per variant, CMC curves, camera-pair matrices."""
    record: dict[str, Any] = {"step": step, "epoch": epoch, "settings": cfg_settings}
    record["metrics"] = {}
    record["cmc"] = {}
    for variant, res in results.items():
        m = {"mAP": res["mAP"], "mINP": res["mINP"], "num_valid_queries": res["num_valid_queries"]}
        for r in (1, 5, 10, 20):
            m[f"Rank{r}"] = float(res["cmc"][r - 1])
        record["metrics"][variant] = {k: float(v) for k, v in m.items()}
        record["cmc"][variant] = [float(v) for v in res["cmc"]]
        if "camera_pair_mAP" in res:
            record["camera_pairs"] = {
                key: _nan_to_none(np.asarray(res[f"camera_pair_{key}"]))
                for key in ("mAP", "rank1", "queries")
            }
            record["metrics"][variant]["camera_pair_mAP_offdiag"] = float(
                res["camera_pair_mAP_offdiag"]
            )
    record["seconds"] = {k: round(float(v), 3) for k, v in seconds.items()}
    return record


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row]
            for row in a.tolist()]  # fmt: skip


def save(workdir: str | Path, record: dict[str, Any]) -> Path:
    """Writes a record (atomically) and returns its path."""
    path = record_path(workdir, record["step"])
    files.atomic_write_text(path, json.dumps(record, indent=1))
    return path


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``<variant>/<metric>`` -> value (the TensorBoard / CSV names)."""
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
        variants += [v for v in record["metrics"] if v not in variants]
    blocks = []
    for variant in variants:
        protocol, _, post = variant.partition("+")
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
