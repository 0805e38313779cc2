"""The evaluator settings and checkpoint.best_metric are checked with the rest of the config,
before any data is prepared (not at the first evaluation, hours in)."""

from __future__ import annotations

import pytest

from reid_jax import config_base
from reid_jax.config_base import ConfigError

from .conftest import tiny_config


def test_best_metric_must_be_reported_by_an_evaluator():
    c = config_base.base_config()
    config_base.check_evals(c)  # the default: retrieval/official/mAP
    for ok in ("retrieval/legacy/Rank5", "retrieval/official/mINP"):
        c.checkpoint.best_metric = ok
        config_base.check_evals(c)
    c.checkpoint.best_metric = "retrieval/official+rerank/mAP"
    with pytest.raises(ConfigError, match=r"best_metric='retrieval/official\+rerank/mAP': no ev"):
        config_base.check_evals(c)  # re-ranking is off by default
    c.evals.retrieval.rerank = True
    config_base.check_evals(c)
    c.checkpoint.best_metric = "retrieval/offical/mAP"
    with pytest.raises(ConfigError, match="expected one of retrieval/official/mAP, "):
        config_base.check_evals(c)


def test_an_evaluator_setting_that_cannot_run_is_named_with_its_entry():
    c = config_base.base_config()
    c.evals.retrieval.protocols = ("official", "mars")
    with pytest.raises(ConfigError, match=r"^config.evals.retrieval.protocols: 'mars' is not"):
        config_base.check_evals(c)
    c = config_base.base_config()
    c.evals.retrieval.type = "ranking"
    with pytest.raises(ConfigError, match=r"config.evals.retrieval.type='ranking': expected one"):
        config_base.check_evals(c)


def test_protocols_must_be_the_datasets():
    """official / appended are MARS's (its MATLAB code; the papers' test() appends queries on
    MARS only); the other datasets are scored with legacy, as their configs do."""
    from reid_jax.data import builders  # noqa: PLC0415

    c = config_base.base_config()
    for name in ("mars", "synth_mars"):
        c.data.name = name
        config_base.check_evals(c)  # all three protocols
    c.data.name = "ilidsvid"
    with pytest.raises(
        ConfigError,
        match=r"^config.evals.retrieval.protocols=\('official', 'legacy', 'appended'\): "
        r"\['official', 'appended'\] not a protocol of ilidsvid; expected a subset of "
        r"\('legacy',\)",
    ):
        config_base.check_evals(c)
    c.evals.retrieval.protocols = ("legacy",)
    c.checkpoint.best_metric = "retrieval/legacy/mAP"
    for name in ("ilidsvid", "prid2011", "duke_video"):
        c.data.name = name
        config_base.check_evals(c)
    assert set(builders.DATASETS) == {"mars", "synth_mars", "ilidsvid", "prid2011", "duke_video"}
    c.data.name = "mars2"
    with pytest.raises(ConfigError, match=r"^config.data.name='mars2': expected one of \['duke"):
        config_base.check_evals(c)


def test_a_bad_best_metric_fails_before_data_preparation(tmp_path):
    from reid_jax.jobs.training import train_and_evaluate  # noqa: PLC0415 (heavy)

    cfg = tiny_config((str(tmp_path / "raw"), str(tmp_path / "tfds")))
    cfg.checkpoint.best_metric = "retrieval/official/map"
    with pytest.raises(ConfigError, match="best_metric='retrieval/official/map'"):
        train_and_evaluate(cfg, tmp_path / "run")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "tfds").exists()
