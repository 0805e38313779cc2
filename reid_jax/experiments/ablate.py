"""Fusion ablation: each (corruption rate, variant, seed) an ordinary training job, then a report.

    python -m reid_jax.experiments.ablate --base configs/synth_mars_ablation.py \
        --workdir runs/ablation [--quick]

Defaults: the variants of ``DEFAULT_FUSIONS``, each at the learning rate it does best with on a
validation split carved from the training identities (``--lr_grid``, seed 0), 10 seeds at the
first corruption rate (the main table) and 2 at the others (the sweep), an A/A control (``mean``
under seeds 1000..1009), the test-time swaps on every ``mean`` checkpoint of the first rate, and
the influence measures and diagnostics on seed 0 of every variant. ``--quick``: 2 seeds,
2 control seeds, the first rate only, no grid (a first look, not the study).

Jobs run through ``train_and_evaluate`` (each one scales out like any training job), ``--workers``
at once in spawned processes (default 2; 1 = one after another in this process), in
``WORKDIR/runs/c<rate%>/<variant>/seed<i>``; a job's ``result.json`` is
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

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from reid_jax import files, logs
from reid_jax.data import builders, prepare
from reid_jax.experiments import analyze as analyze_lib
from reid_jax.experiments import chunks as chunks_lib
from reid_jax.experiments import frames, report, tables, validation
from reid_jax.experiments import influence as influence_lib
from reid_jax.experiments import swap as swap_lib
from reid_jax.experiments.pool import JobPool, use_cache
from reid_jax.experiments.variants import Variant, apply_variant, parse_variants
from reid_jax.jobs.training import train_and_evaluate

DEFAULT_FUSIONS = "mean,temporal_attention,cosine_center:mode=flat:tau=0.1,templet:rescale=true"
RESULT = "result.json"
CONTROL_SEED_OFFSET = 1000  # the A/A control's seeds: independent of the variants' 0..n-1
QUICK = {"seeds": 2, "sweep_seeds": 0, "control_seeds": 2}

_BASE = config_flags.DEFINE_config_file("base", None, "Base config of every job.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and report.md go.")
_FUSIONS = flags.DEFINE_string(
    "fusions", DEFAULT_FUSIONS, "Comma-separated variants: fusion[:option=value[:...]]."
)
_SEEDS = flags.DEFINE_integer(
    "seeds", 10, "Seeds per variant at the first rate (config.seed = 0..seeds-1)."
)
_SWEEP_SEEDS = flags.DEFINE_integer("sweep_seeds", 2, "Seeds per variant at the other rates.")
_CONTROL = flags.DEFINE_integer(
    "control_seeds", -1, "A/A control: `mean` under seeds 1000.. at the first rate (-1 = --seeds)."
)
_SWAPS = flags.DEFINE_bool("swaps", True, "Test-time swaps on the `mean` checkpoints.")
_INFLUENCE = flags.DEFINE_bool("influence", True, "Influence measures on seed 0 of each variant.")
_QUICK = flags.DEFINE_bool(
    "quick", False, f"A first look: {QUICK}, the first rate only, no learning-rate grid."
)
_LR_GRID = flags.DEFINE_string(
    "lr_grid",
    "1e-3,3e-3,1e-2",
    "Learning rates tried per variant (seed 0, first rate) on a validation split carved from the "
    "training identities; the best is used for all its jobs ('' = the base config's lr).",
)
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
_WORKERS = flags.DEFINE_integer(
    "workers",
    2,
    "Jobs trained at once, each in its own process (2 on 2 CPU cores: ~1.4x the throughput of "
    "one; 1 = one after another in this process).",
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
    files.atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


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


def run_job(config: Any, variant: Variant, seed: int, rate: float, path: Path,
            label: str | None = None, pair: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one job (resuming it if interrupted) and write its ``result.json`` (``label`` /
    ``pair``: the report's row and pairing key, default the variant's label and the seed)."""
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
        variant=label or variant.label, fusion=variant.fusion, options=dict(variant.options),
        seed=seed, pair=seed if pair is None else pair, corruption_rate=rate,
        job_seconds=seconds, resumed_from=int(out["start_step"]),
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


def _cached(path: Path, name: str, compute: Any) -> Any:
    """``path/name`` if newer than the job's result, else ``compute()`` written there."""
    done = path / name
    if done.is_file() and done.stat().st_mtime >= (path / RESULT).stat().st_mtime:
        return json.loads(done.read_text())
    out = compute()
    _write_json(done, out)
    return out


def _swaps(path: Path) -> dict[str, dict[str, float]]:
    return _cached(path, "swaps.json", lambda: swap_lib.run_swaps(chunks_lib.extract(path)))


def _influence(path: Path) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        c = chunks_lib.extract(path, keep_maps=True)
        fuse = influence_lib.model_fuse(c.config, c.state)
        return influence_lib.measures(fuse, c.maps, c.gap, c.labels, c.first)

    return _cached(path, "influence.json", compute)


def choose_lr(scores: dict[float, float]) -> float:
    """The learning rate with the best validation mAP (NaN never wins; ties: the first)."""
    best = None
    for lr, score in scores.items():
        if score == score and (best is None or score > scores[best]):
            best = lr
    if best is None:
        raise ValueError(f"no learning rate produced a validation mAP: {scores}")
    return best


def lr_grid_search(base: Any, workdir: Path, variant: Variant, rate: float, grid: list[float],
                   pool: JobPool | None = None) -> dict[str, Any]:  # fmt: skip
    """Train ``variant`` (seed 0) at every lr of ``grid`` on the validation split carved from the
    training identities of the rate's SynthMARS tree; {"lr": the best, "scores": lr -> mAP}."""
    return grid_search(base, workdir, [variant], rate, grid, pool)[variant.label]


def grid_search(base: Any, workdir: Path, variants: list[Variant], rate: float,
                grid: list[float], pool: JobPool | None = None
                ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``lr_grid_search`` of every variant, the jobs of all of them run through ``pool``."""
    scores: dict[str, dict[float, float]] = {v.label: {} for v in variants}
    tasks, keys = [], []
    for variant in variants:
        main = job_config(base, variant, 0, rate)
        prepare.ensure_prepared(main.data)  # renders the source tree if this is the first job
        for lr in grid:
            config = main.copy_and_resolve_references()
            config.data.raw_dir = f"{main.data.raw_dir}_val"
            config.data.data_dir = f"{main.data.data_dir}_val"
            config.optim.lr = lr
            validation.carve(main.data.raw_dir, config.data.raw_dir)
            prepare.ensure_prepared(config.data)  # here, not by two jobs at once
            path = workdir / "lr_grid" / rate_tag(rate) / variant.dirname / f"lr{lr:g}"
            if (path / RESULT).is_file():
                result = json.loads((path / RESULT).read_text())
                scores[variant.label][lr] = _score(result)
                continue
            logging.info("lr grid: %s lr %g -> %s", variant.label, lr, path)
            tasks.append((config, variant, 0, rate, path))
            keys.append((variant.label, lr))
    for (label, lr), out in zip(keys, (pool or JobPool()).run(run_job, tasks)):
        if isinstance(out, Exception):
            raise out
        scores[label][lr] = _score(out)
    return {label: {"lr": choose_lr(s), "scores": s} for label, s in scores.items()}


def _score(result: dict[str, Any]) -> float:
    return float("nan") if result["mAP"] is None else result["mAP"]


def plan_jobs(variants: list[Variant], rates: list[float], seeds: int, sweep_seeds: int,
              control_seeds: int) -> list[tuple[float, Variant, int, str, int]]:  # fmt: skip
    """(rate, variant, seed, report label, pair key) of every job: ``seeds`` per variant at the
    first rate, ``sweep_seeds`` at the others, and the A/A control (``mean`` under seeds
    CONTROL_SEED_OFFSET + i, pair i) at the first rate."""
    jobs = []
    for k, rate in enumerate(rates):
        n = seeds if k == 0 else sweep_seeds
        jobs += [(rate, v, s, v.label, s) for v in variants for s in range(n)]
    mean = parse_variants("mean")[0]
    jobs += [(rates[0], mean, CONTROL_SEED_OFFSET + i, tables.CONTROL, i)
             for i in range(control_seeds)]  # fmt: skip
    return jobs


def run_ablation(
    base: Any,
    workdir: str | Path,
    variants: list[Variant],
    seeds: int,
    rates: list[float],
    analyze: bool = True,
    sweep_seeds: int | None = None,
    control_seeds: int = 0,
    swaps: bool = False,
    influence: bool = False,
    lr_grid: list[float] | None = None,
    workers: int = 1,
    cache: str = "none",
) -> dict[str, Any]:
    """Run (or resume) every job (``plan_jobs``; ``workers`` at once, ``JobPool``), the
    diagnostics, the test-time swaps on the `mean` checkpoints of the first rate, the influence
    measures, and write the report."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if seeds < 1:
        raise ValueError(f"--seeds={seeds}: need at least 1")
    sweep_seeds = seeds if sweep_seeds is None else sweep_seeds
    if sweep_seeds < 1:
        rates = rates[:1]
    jobs = plan_jobs(variants, rates, seeds, sweep_seeds, control_seeds)
    results, failed = [], []
    t0 = time.monotonic()
    pool = JobPool(workers, cache)
    try:
        lr_choice = grid_search(base, workdir, variants, rates[0], lr_grid, pool) if lr_grid else {}
        tasks, todo = [], []
        for i, (rate, variant, seed, label, pair) in enumerate(jobs):
            path = job_dir(workdir, variant, seed, rate)
            if (path / RESULT).is_file():
                results.append(json.loads((path / RESULT).read_text()))
                continue
            logging.info("ablation job %d/%d queued: %s seed %d rate %g -> %s",
                         i + 1, len(jobs), variant.label, seed, rate, path)  # fmt: skip
            config = job_config(base, variant, seed, rate)
            if variant.label in lr_choice:
                config.optim.lr = lr_choice[variant.label]["lr"]
            prepare.ensure_prepared(config.data)  # each rate's data once, before any job
            tasks.append((config, variant, seed, rate, path, label, pair))
            todo.append((variant, seed, rate, path))
        outcomes = pool.run(run_job, tasks)
    finally:
        pool.close()
    for (variant, seed, rate, path), out in zip(todo, outcomes):
        if not isinstance(out, Exception):
            results.append(out)
            continue
        logging.error("ablation job %s failed", path, exc_info=out)  # with its traceback
        (path / "error.txt").write_text(f"{type(out).__name__}: {out}\n")
        failed.append({"variant": variant.label, "seed": seed, "rate": rate,
                       "error": f"{type(out).__name__}: {out}", "dir": str(path)})  # fmt: skip
    analyses = {}
    if analyze:
        for variant in variants:
            path = job_dir(workdir, variant, 0, rates[0])
            if (path / RESULT).is_file():
                analyses[variant.label] = _analysis(path)
    swap_results, influences = {}, {}
    for rate, variant, seed, label, _ in jobs:
        path = job_dir(workdir, variant, seed, rate)
        if rate != rates[0] or not (path / RESULT).is_file():
            continue
        try:
            if swaps and label == "mean":
                swap_results[seed] = _swaps(path)
            if influence and seed == 0 and label == variant.label:
                influences[label] = _influence(path)
        except Exception as e:  # a diagnostic must not lose the report
            logging.exception("swaps / influence of %s failed", path)
            if influence and seed == 0 and label == variant.label:
                influences[label] = {"error": f"{type(e).__name__}: {e}"}
    counts = {f"{r:g}": seeds if k == 0 else sweep_seeds for k, r in enumerate(rates)}
    meta = {"base": base.to_dict(), "rates": rates, "seeds": counts,
            "variants": [v.label for v in variants], "wall_seconds": time.monotonic() - t0,
            "failed": failed, "lr_choice": lr_choice}  # fmt: skip
    path = report.write_report(workdir, results, analyses, meta, swap_results, influences)
    logging.info("report: %s", path)
    return {"results": results, "failed": failed, "analyses": analyses, "report": path,
            "swaps": swap_results, "influence": influences}  # fmt: skip


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    workdir = Path(_WORKDIR.value)
    cache = _CACHE.value or str(workdir / "jax_cache")
    use_cache(cache)
    try:
        variants = parse_variants(_FUSIONS.value)
        rates = parse_rates(_RATES.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    try:
        grid = [float(x) for x in _LR_GRID.value.split(",") if x.strip()]
    except ValueError as e:
        raise app.UsageError(f"--lr_grid={_LR_GRID.value!r}: {e}") from None
    seeds, sweep, control = _SEEDS.value, _SWEEP_SEEDS.value, _CONTROL.value
    if _QUICK.value:
        seeds, sweep, control = QUICK["seeds"], QUICK["sweep_seeds"], QUICK["control_seeds"]
        grid = []
    out = run_ablation(
        _BASE.value, workdir, variants, seeds, rates, _ANALYZE.value, sweep_seeds=sweep,
        control_seeds=seeds if control < 0 else control, swaps=_SWAPS.value,
        influence=_INFLUENCE.value, lr_grid=grid or None, workers=_WORKERS.value, cache=cache,
    )  # fmt: skip
    print((workdir / "report.md").read_text())
    if out["failed"]:
        print(
            f"{len(out['failed'])} job(s) failed: see error.txt in their folders",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=logs.parse_flags)
