"""Every fusion inside the whole model's training step, and short training runs of the demo
config (``synth_mars_demo.get_config("tiny")``) on the suite's tiny SynthMARS tree; the evaluation's
per-frame weight dump.

Every fusion is traced through the jitted training step of the tiny model (forward, losses,
backward, Adam: ``jax.eval_shape``, no compilation); the end-to-end runs (data, training,
checkpoint, evaluation) are for the baseline (the suite's shared tiny run, tests/conftest.py) and
the research note's cosine and templet fusions. The other fusions' values and gradients are
checked in test_contract / test_baselines, and each runs through the whole model in
tests/inference/test_export.py (every fusion exported); compiling and running five more trainings
cost ~3 minutes of the suite's 15 for nothing those miss.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import parallel
from reid_jax import run as run_lib
from reid_jax.config_base import load_config_file
from reid_jax.data import builders, pipeline, sampling, transforms
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.fusion import FUSIONS
from reid_jax.jobs.training import train_and_evaluate
from reid_jax.models.reid import make_model
from reid_jax.train import step as step_lib

DEMO = Path(__file__).resolve().parents[2] / "configs" / "synth_mars_demo.py"


def _demo_config():
    return load_config_file(DEMO, "tiny")


@pytest.fixture(scope="module")
def train(tmp_path_factory, tiny_data, trained):
    """``train(method) -> (config, train_and_evaluate's result)``, each method trained once on
    the suite's tiny SynthMARS (``mean``: the shared tiny run, 3 steps)."""
    runs_dir = tmp_path_factory.mktemp("fusion_runs")
    runs = {"mean": (trained[0], trained[2])}

    def run(method: str):
        if method not in runs:
            cfg = _demo_config()
            cfg.num_steps, cfg.eval_every_epochs = 2, 0
            cfg.data.raw_dir, cfg.data.data_dir = tiny_data
            cfg.checkpoint.every_steps, cfg.checkpoint.async_save = 1000, False
            cfg.model.fusion = method
            cfg.lock()
            with jax.default_prng_impl("unsafe_rbg"):  # threefry init compiles slowly on CPU
                runs[method] = cfg, train_and_evaluate(cfg, runs_dir / method)
        return runs[method]

    return run


# The fused feature's width for the tiny ResNet-10 (width 8: 64 output channels): two_branch
# concatenates its branches, the LSTM returns its hidden state (default 512).
C = 64


def _feature_dim(method: str) -> int:
    return {"two_branch": 2 * C, "lstm": 512}.get(method, C)


@pytest.mark.parametrize("method", sorted(FUSIONS))
def test_every_fusion_traces_through_the_training_step(method, tmp_path):
    cfg = _demo_config()
    cfg.model.fusion = method
    run = run_lib.build(cfg, tmp_path, num_classes=8, steps_per_epoch=2)
    assert 512 * cfg.model.width // 64 == C
    step = functools.partial(
        step_lib.train_step, model=run.model, tx=run.tx,
        loss_cfg=step_lib.LossConfig.from_config(cfg.loss),
    )  # fmt: skip
    b = run.clip_shape[0]
    batch = {
        "clip": jax.ShapeDtypeStruct(run.clip_shape, jnp.uint8),
        "label": jax.ShapeDtypeStruct((b,), jnp.int32),
    }
    new, metrics = jax.eval_shape(step, run.abstract_state, batch)
    # The step keeps every leaf of the state (params, BatchNorm statistics, Adam's moments).
    shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
    assert shapes(new) == shapes(run.abstract_state)
    assert run.abstract_state.params["bnneck"]["scale"].shape == (_feature_dim(method),)
    assert {"loss", "loss/ce", "loss/triplet", "grad_norm", "params_finite"} <= set(metrics)
    for name, m in metrics.items():
        assert m.shape == () and m.dtype == jnp.float32, name
    # Every fusion gives per-frame weights, and the step logs their statistics.
    assert {"weights/min", "weights/max", "weights/entropy"} <= set(metrics)


@pytest.mark.parametrize("method", ["mean", "cosine_center", "templet"])
def test_training_run(method, train):
    cfg, out = train(method)
    assert int(out["state"].step) == cfg.num_steps
    (final,) = out["history"]
    assert 0.0 <= final["retrieval/official/mAP"] <= 1.0
    # Evaluation logs the weight stats of the per-frame test weights (T = seq_len frames).
    t = cfg.data.seq_len
    w_min, w_max = final["retrieval/weights/min"], final["retrieval/weights/max"]
    assert 0.0 <= w_min <= 1.0 / t + 1e-6 <= w_max + 2e-6 and w_max <= 1.0 + 1e-6
    assert 0.0 <= final["retrieval/weights/entropy"] <= np.log(t) + 1e-5
    if method == "mean":
        np.testing.assert_allclose([w_min, w_max], [1 / t, 1 / t], rtol=1e-5)
    params = out["state"].params
    assert params["bnneck"]["scale"].shape == (_feature_dim(method),)
    for leaf in jax.tree.leaves(params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_evaluation_dumps_per_frame_weights(train, tmp_path):
    cfg, out = train("cosine_center")
    test_source, index = builders.load_split(cfg.data.name, cfg.data.data_dir, "test")
    train_index = builders.load_split(cfg.data.name, cfg.data.data_dir, "train")[1]
    eval_cfg = cfg.evals.retrieval.copy_and_resolve_references()
    eval_cfg.dump_weights = True
    evaluator = RetrievalEvaluator(
        eval_cfg,
        model=make_model(cfg.model, train_index.num_classes),
        source=test_source,
        index=index,
        data_cfg=cfg.data,
        mesh=parallel.make_mesh(cfg.mesh),
        process=parallel.ProcessSlice(),
        workdir=tmp_path,
    )
    results = dict(evaluator.run(out["state"]))
    dump = np.load(tmp_path / "fusion_weights_step2.npz")
    t = cfg.data.seq_len
    n = len(index.pid)
    weights, offsets, tracklet = dump["weights"], dump["offsets"], dump["tracklet"]
    assert weights.shape == offsets.shape == (len(tracklet), t)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(dump["pid"], index.pid)
    assert dump["row_start"].shape == (n + 1,) and dump["row_start"][-1] == len(tracklet)
    for k in range(n):  # every tracklet: its chunks cover all its frames, as in testing
        rows = slice(dump["row_start"][k], dump["row_start"][k + 1])
        assert np.all(tracklet[rows] == k)
        expected = sampling.all_frames_chunks(int(index.length[k]), t)
        np.testing.assert_array_equal(offsets[rows], expected)
    # The dumped row of one chunk (the last tracklet's last chunk: rows stay aligned across
    # batches) equals the weights the model gives that chunk's clip on its own.
    table = pipeline.eval_chunks(index, t, cfg.data.test_sampling, cfg.data.test_batch_size)
    row = int(np.flatnonzero(table[:, 0] >= 0)[-1])
    d = cfg.data
    load = pipeline.EvalClips(
        source=test_source, index=index, chunks=table, height=d.height, width=d.width,
        transform=transforms.compose(transforms.test_transforms(d.height, d.width)),
    )  # fmt: skip
    clip = np.repeat(load(row)["clip"][None], d.test_batch_size, axis=0)
    alone = np.asarray(evaluator.embed(out["state"], {"clip": clip})["weights"][0])
    np.testing.assert_allclose(weights[-1], alone, rtol=1e-5, atol=1e-7)
    assert tracklet[-1] == table[row, 0] and np.all(offsets[-1] == table[row, 1:])
    assert np.ptp(weights, axis=1).max() > 1e-4  # cosine weights are not all uniform
    np.testing.assert_allclose(results["weights/min"], weights.min(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(results["weights/max"], weights.max(1).mean(), rtol=1e-5)
    assert results["official/mAP"] == pytest.approx(out["history"][-1]["retrieval/official/mAP"])


def test_dump_without_workdir_is_refused(train):
    cfg, _ = train("mean")
    eval_cfg = cfg.evals.retrieval.copy_and_resolve_references()
    eval_cfg.dump_weights = True
    with pytest.raises(ValueError, match="dump_weights"):
        RetrievalEvaluator(
            eval_cfg,
            model=None,
            source=None,
            index=None,
            data_cfg=cfg.data,
            mesh=None,
            process=None,
        )
