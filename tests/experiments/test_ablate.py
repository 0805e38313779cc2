"""The ablation runner end to end on the tiny config: jobs, AUCs, diagnostics, report, restart."""

import json
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
    out = ablate.run_ablation(base, tmp / "abl", variants, seeds=1, rates=[0.3])
    return base, variants, tmp / "abl", out


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


def test_rerun_reuses_the_diagnostics(ablation):
    base, variants, workdir, _ = ablation
    done = workdir / "runs" / "c30" / "mean" / "seed0" / "analysis" / "analysis.json"
    before = done.stat().st_mtime_ns
    out = ablate.run_ablation(base, workdir, variants, seeds=1, rates=[0.3])
    assert done.stat().st_mtime_ns == before
    assert out["analyses"]["mean"]["centred"]["cos_auc"].keys() >= {"any"}
