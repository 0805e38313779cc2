"""The ablation runner end to end on the tiny config: jobs, AUCs, diagnostics, report, restart."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from reid_jax.experiments import ablate
from reid_jax.experiments.variants import parse_variant, parse_variants

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "configs"))
import synth_mars_ablation  # noqa: E402


def test_rates_and_job_config():
    assert ablate.parse_rates("0.15,0,0.3") == [0.15, 0.0, 0.3]
    for bad, msg in (
        ("x", "'x' is not a number"),
        ("1.5", "outside"),
        ("0.1,0.1", "twice"),
    ):
        with pytest.raises(ValueError, match=msg):
            ablate.parse_rates(bad)
    assert ablate.rate_tag(0.15) == "c15" and ablate.rate_tag(0.0) == "c0"
    base = synth_mars_ablation.get_config()
    c = ablate.job_config(base, parse_variant("cosine_center:tau=0.1"), seed=2, rate=0.3)
    assert (c.model.fusion, c.model.fusion_kwargs.tau, c.seed) == (
        "cosine_center",
        0.1,
        2,
    )
    assert c.data.synth.corruption_rate == 0.3
    assert c.data.raw_dir == "data/synth_mars_ablation_c30"
    assert c.data.data_dir == "data/tfds_ablation_c30"
    assert base.model.fusion == "mean" and base.data.raw_dir == "data/synth_mars_ablation"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    base = synth_mars_ablation.get_config("tiny")
    base.data.raw_dir, base.data.data_dir = str(tmp / "raw"), str(tmp / "tfds")
    variants = parse_variants("mean,cosine_center:mode=flat")
    # No A/A control job (a third training, ~25 s): plan_jobs places it (below) and run_job
    # passes its label and pair through; test_report checks its row from made-up results.
    # Two jobs at once in spawned processes, as `make ablation` runs them (--workers 2).
    out = ablate.run_ablation(base, tmp / "abl", variants, seeds=1, rates=[0.3], control_seeds=0,
                              swaps=True, influence=True, workers=2)  # fmt: skip
    return base, variants, tmp / "abl", out


def test_plan_jobs_seeds_per_rate_and_control():
    variants = parse_variants("mean,templet")
    jobs = ablate.plan_jobs(variants, [0.15, 0.0], seeds=3, sweep_seeds=1, control_seeds=2)
    main = [(v.label, s) for r, v, s, _, _ in jobs if r == 0.15]
    assert main[:6] == [("mean", 0), ("mean", 1), ("mean", 2), ("templet", 0), ("templet", 1),
                        ("templet", 2)]  # fmt: skip
    assert [(v.label, s) for r, v, s, _, _ in jobs if r == 0.0] == [("mean", 0), ("templet", 0)]
    control = [j for j in jobs if j[3] == ablate.tables.CONTROL]
    offset = ablate.CONTROL_SEED_OFFSET
    assert [(r, v.label, s, p) for r, v, s, _, p in control] == [
        (0.15, "mean", offset, 0), (0.15, "mean", offset + 1, 1)]  # fmt: skip


def test_jobs_report_and_diagnostics(ablation):
    base, variants, workdir, out = ablation
    assert not out["failed"]
    by = {r["variant"]: r for r in out["results"]}
    assert set(by) == {"mean", "cosine_center:mode=flat"}
    for r in by.values():
        assert 0.0 <= r["mAP"] <= 1.0 and r["step"] > 0
        assert r["auc"]["any"]["pairs"] > 0
        assert 0.0 <= r["auc"]["any"]["auc"] <= 1.0
    # temporal average pooling ranks nothing: every pair is a tie
    assert by["mean"]["auc"]["any"]["auc"] == 0.5
    assert by["mean"]["weight_min"] == pytest.approx(0.25)
    # the dumped weights of the flat cosine fusion do vary within chunks
    assert by["cosine_center:mode=flat"]["weight_min"] < 0.25
    job = workdir / "runs" / "c30" / "cosine_center-mode=flat" / "seed0"
    assert json.loads((job / "config.json").read_text())["model"]["fusion_kwargs"]["mode"] == "flat"
    analysis = json.loads((job / "analysis" / "analysis.json").read_text())
    assert analysis["frames"] > 0 and set(analysis["centred"]["cos_auc"]) >= {"occlusion", "any"}
    assert (job / "analysis" / "gait.png").is_file()
    text = (workdir / "report.md").read_text()
    assert "| mean | 1 |" in text and "| cosine_center:mode=flat | 1 |" in text
    assert "## Feature diagnostics" in text
    assert (workdir / "map_by_variant.png").is_file()
    # the `mean` swap rebuilds the trained model's own evaluation from the frame features
    swaps = out["swaps"][0]
    assert swaps["mean"]["mAP"] == pytest.approx(by["mean"]["mAP"], abs=1e-3)
    assert set(swaps) == {s.name for s in ablate.swap_lib.SWAPS}
    for name, inf in out["influence"].items():
        assert set(inf) == {"weight_share", "loo_share", "feature_norm"}, name
    shares = out["influence"]["mean"]["weight_share"]["by_kind"]
    assert all(v == pytest.approx(1.0) for v in shares.values() if not np.isnan(v))
    for section in ("## Test-time swaps", "## Influence per frame"):
        assert section in text


def test_restart_skips_finished_jobs(ablation):
    base, variants, workdir, _ = ablation
    kept = workdir / "runs" / "c30" / "mean" / "seed0" / "result.json"
    redo = workdir / "runs" / "c30" / "cosine_center-mode=flat" / "seed0" / "result.json"
    before = kept.stat().st_mtime_ns
    old = json.loads(redo.read_text())
    redo.unlink()  # as if the process died after training, before writing the result
    out = ablate.run_ablation(base, workdir, variants, seeds=1, rates=[0.3], analyze=False)
    assert kept.stat().st_mtime_ns == before
    new = json.loads(redo.read_text())
    assert new["resumed_from"] == old["step"]  # restored the final checkpoint, no retraining
    assert new["mAP"] == old["mAP"]
    assert np.isclose(new["auc"]["any"]["auc"], old["auc"]["any"]["auc"])
    assert len(out["results"]) == 2


def test_a_control_jobs_label_and_pair_reach_its_result(ablation, tmp_path):
    base, variants, workdir, _ = ablation
    done = workdir / "runs" / "c30" / "mean" / "seed0"
    copy = tmp_path / "control"
    shutil.copytree(done, copy)
    (copy / "result.json").unlink()
    config = ablate.job_config(base, variants[0], seed=0, rate=0.3)
    result = ablate.run_job(config, variants[0], 0, 0.3, copy, label=ablate.tables.CONTROL, pair=3)
    assert (result["variant"], result["seed"], result["pair"]) == (ablate.tables.CONTROL, 0, 3)
    assert result["resumed_from"] == json.loads((done / "result.json").read_text())["step"]


def test_rerun_reuses_the_diagnostics(ablation):
    base, variants, workdir, _ = ablation
    done = workdir / "runs" / "c30" / "mean" / "seed0" / "analysis" / "analysis.json"
    before = done.stat().st_mtime_ns
    out = ablate.run_ablation(base, workdir, variants, seeds=1, rates=[0.3])
    assert done.stat().st_mtime_ns == before
    assert out["analyses"]["mean"]["centred"]["cos_auc"].keys() >= {"any"}


def test_job_pool_keeps_order_and_returns_failures_in_place():
    pool = ablate.JobPool(workers=2)  # a builtin as the job: the processes import nothing more
    try:
        out = pool.run(divmod, [(7, 2), (1, 0), (9, 3)])
    finally:
        pool.close()
    assert out[0] == (3, 1) and out[2] == (3, 0) and isinstance(out[1], ZeroDivisionError)
    assert [type(o) for o in ablate.JobPool().run(divmod, [(1, 0)])] == [ZeroDivisionError]
    with pytest.raises(ValueError, match="--workers=0"):
        ablate.JobPool(workers=0)


def test_choose_lr():
    assert ablate.choose_lr({1e-3: 0.2, 3e-3: 0.3, 1e-2: 0.1}) == 3e-3
    assert ablate.choose_lr({1e-3: float("nan"), 3e-3: 0.3, 1e-2: 0.3}) == 3e-3  # ties: first
    with pytest.raises(ValueError, match="no learning rate"):
        ablate.choose_lr({1e-3: float("nan")})


def test_lr_grid_trains_on_a_split_of_the_training_ids(ablation):
    base, _, workdir, _ = ablation
    lr = base.optim.lr
    out = ablate.lr_grid_search(base, workdir, parse_variant("mean"), 0.3, [lr])
    assert out["lr"] == lr and 0.0 <= out["scores"][lr] <= 1.0
    job = workdir / "lr_grid" / "c30" / "mean" / f"lr{lr:g}"
    config = json.loads((job / "config.json").read_text())
    assert config["data"]["raw_dir"].endswith("_c30_val")
    val = json.loads((Path(config["data"]["raw_dir"]) / "info" / "synth_params.json").read_text())
    held_out = val["summary"]["validation_pids"]
    train_ids = range(1, base.data.synth.num_ids + 1)  # SynthMARS: training pids 1..N
    assert held_out and set(held_out) < set(train_ids)
