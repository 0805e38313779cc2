"""Fusion ablation: each (corruption rate, variant, seed) an ordinary training job, then a report.

    python -m reid_jax.experiments.ablate --base configs/synth_mars_ablation.py \
        --fusions mean,temporal_attention,cosine_center,cosine_center:tau=0.1,templet,two_branch \
        --seeds 3 --corruption_rates 0.15,0,0.3 --workdir runs/ablation

Jobs run one after another in this process through ``train_and_evaluate`` (each one scales out
like any training job) in ``WORKDIR/runs/c<rate%>/<variant>/seed<i>``; a job's ``result.json`` is
written last, so rerunning the command resumes an interrupted job and skips finished ones. The
first rate is the main table; the others form the corruption sweep. ``--base.<key>=<value>``
overrides the base config for every job. Compiled programs are cached in ``WORKDIR/jax_cache``
(seeds and rates share shapes, so most jobs skip compilation). See docs/experiments.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from reid_jax import logs
from reid_jax.data import builders
from reid_jax.experiments import analyze as analyze_lib
from reid_jax.experiments import frames, report
from reid_jax.experiments.variants import Variant, apply_variant, parse_variants
from reid_jax.train.loop import train_and_evaluate

DEFAULT_FUSIONS = "mean,temporal_attention,cosine_center,cosine_center:tau=0.1,templet,two_branch"
RESULT = "result.json"

_BASE = config_flags.DEFINE_config_file("base", None, "Base config of every job.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and report.md go.")
_FUSIONS = flags.DEFINE_string(
    "fusions", DEFAULT_FUSIONS, "Comma-separated variants: fusion[:option=value[:...]]."
)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per variant (config.seed = 0..seeds-1).")
_RATES = flags.DEFINE_string(
    "corruption_rates",
    "0.15,0,0.3",
    "SynthMARS corruption rates; the first is the main table.",
)
_ANALYZE = flags.DEFINE_bool(
    "analyze",
    True,
    "Run the feature diagnostics on seed 0 of every variant at the first rate.",
)
_CACHE = flags.DEFINE_string(
    "compile_cache",
    "",
    "JAX compilation cache dir ('' = WORKDIR/jax_cache, 'none' = off).",
)
flags.mark_flags_as_required(["base", "workdir"])


def parse_rates(text: str) -> list[float]:
    """``"0.15,0,0.3"`` -> [0.15, 0.0, 0.3]; ValueError naming a bad or repeated rate."""
    rates = []
    for part in text.split(","):
        try:
            rate = float(part)
        except ValueError:
            raise ValueError(f"--corruption_rates: {part!r} is not a number") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--corruption_rates: {rate} is outside [0, 1]")
        if rate in rates:
            raise ValueError(f"--corruption_rates: {rate} given twice")
        rates.append(rate)
    return rates


def rate_tag(rate: float) -> str:
    """Folder tag of a corruption rate: 0.15 -> "c15", 0.075 -> "c7.5"."""
    return f"c{round(rate * 100, 4):g}"


def job_config(base: Any, variant: Variant, seed: int, rate: float) -> Any:
    """The base config with the variant's fusion, the seed and the rate's own data folders."""
    config = base.copy_and_resolve_references()
    apply_variant(config, variant)
    config.seed = seed
    config.data.synth.corruption_rate = rate
    tag = rate_tag(rate)
    config.data.raw_dir = f"{base.data.raw_dir}_{tag}"
    config.data.data_dir = f"{base.data.data_dir}_{tag}"
    config.evals.retrieval.dump_weights = True
    return config


def job_dir(workdir: Path, variant: Variant, seed: int, rate: float) -> Path:
    return workdir / "runs" / rate_tag(rate) / variant.dirname / f"seed{seed}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)


_LABELS: dict[str, np.ndarray] = {}


def test_corruption(config: Any) -> np.ndarray:
    """Corruption label of every test record of the job's data (read once per data folder)."""
    key = config.data.data_dir
    if key not in _LABELS:
        source, _ = builders.load_split(config.data.name, config.data.data_dir, "test")
        _LABELS[key] = frames.record_labels(source, config.data.raw_dir)["corruption"]
    return _LABELS[key]


def summarize(history: list[dict[str, float]], dump: dict[str, np.ndarray], labels: np.ndarray
              ) -> dict[str, Any]:  # fmt: skip
    """The job's figures: the last evaluation's metrics and weight statistics, and the AUCs."""
    last = history[-1]
    out = {"step": int(last["step"]), "epoch": float(last["epoch"])}
    names = {"official/mAP": "mAP", "official/Rank1": "Rank1", "official/Rank5": "Rank5",
             "official/Rank10": "Rank10", "official/mINP": "mINP", "legacy/mAP": "legacy_mAP",
             "legacy/Rank1": "legacy_Rank1", "weights/min": "weight_min",
             "weights/max": "weight_max", "weights/entropy": "weight_entropy"}  # fmt: skip
    for src, dst in names.items():
        value = last.get(f"retrieval/{src}")
        out[dst] = None if value is None else float(value)
    out["auc"] = frames.corrupted_frame_auc(dump, labels)
    out["eval_seconds"] = float(sum(h.get("eval_seconds", 0.0) for h in history))
    return out


def run_job(config: Any, variant: Variant, seed: int, rate: float, path: Path) -> dict[str, Any]:
    """Train one job (resuming it if interrupted) and write its ``result.json``."""
    path.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    out = train_and_evaluate(config, path)
    if out["preempted"]:
        raise KeyboardInterrupt(f"job {path} was preempted; rerun the ablation to resume")
    seconds = time.monotonic() - t0
    history = out["history"]
    if not history:
        raise RuntimeError(f"{path}: the job finished without an evaluation (check eval_every)")
    dump_path = path / f"fusion_weights_step{int(history[-1]['step'])}.npz"
    with np.load(dump_path) as z:
        dump = dict(z)
    result = summarize(history, dump, test_corruption(config))
    result.update(
        variant=variant.label, fusion=variant.fusion, options=dict(variant.options), seed=seed,
        corruption_rate=rate, job_seconds=seconds, resumed_from=int(out["start_step"]),
    )  # fmt: skip
    result["train_seconds"] = seconds - result["eval_seconds"]
    _write_json(path / RESULT, result)
    return result


def _analysis(path: Path) -> dict[str, Any]:
    """The run's diagnostics: reused when newer than its result and in the current format."""
    done = path / "analysis" / "analysis.json"
    if done.is_file() and done.stat().st_mtime >= (path / RESULT).stat().st_mtime:
        out = json.loads(done.read_text())
        if "centred" in out:
            return out
    return analyze_lib.analyze_run(path)


def run_ablation(
    base: Any,
    workdir: str | Path,
    variants: list[Variant],
    seeds: int,
    rates: list[float],
    analyze: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every job, the diagnostics, and write ``WORKDIR/report.md``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if seeds < 1:
        raise ValueError(f"--seeds={seeds}: need at least 1")
    jobs = [(r, v, s) for r in rates for v in variants for s in range(seeds)]
    results, failed = [], []
    t0 = time.monotonic()
    for i, (rate, variant, seed) in enumerate(jobs):
        path = job_dir(workdir, variant, seed, rate)
        if (path / RESULT).is_file():
            results.append(json.loads((path / RESULT).read_text()))
            continue
        logging.info("ablation job %d/%d: %s seed %d rate %g -> %s",
                     i + 1, len(jobs), variant.label, seed, rate, path)  # fmt: skip
        try:
            results.append(
                run_job(job_config(base, variant, seed, rate), variant, seed, rate, path)
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # one broken variant must not lose the others' hours
            logging.exception("ablation job %s failed", path)
            (path / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
            failed.append({"variant": variant.label, "seed": seed, "rate": rate,
                           "error": f"{type(e).__name__}: {e}", "dir": str(path)})  # fmt: skip
    analyses = {}
    if analyze:
        for variant in variants:
            path = job_dir(workdir, variant, 0, rates[0])
            if (path / RESULT).is_file():
                analyses[variant.label] = _analysis(path)
    meta = {"base": base.to_dict(), "rates": rates, "seeds": seeds,
            "variants": [v.label for v in variants], "wall_seconds": time.monotonic() - t0,
            "failed": failed}  # fmt: skip
    path = report.write_report(workdir, results, analyses, meta)
    logging.info("report: %s", path)
    return {"results": results, "failed": failed, "analyses": analyses, "report": path}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    workdir = Path(_WORKDIR.value)
    cache = _CACHE.value or str(workdir / "jax_cache")
    if cache != "none":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        variants = parse_variants(_FUSIONS.value)
        rates = parse_rates(_RATES.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    out = run_ablation(_BASE.value, workdir, variants, _SEEDS.value, rates, _ANALYZE.value)
    print((workdir / "report.md").read_text())
    if out["failed"]:
        print(
            f"{len(out['failed'])} job(s) failed: see error.txt in their folders",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
