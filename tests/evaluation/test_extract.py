"""Feature extraction: chunked equals unchunked, batch-size free, flip TTA, test sampling."""

from __future__ import annotations

import copy
import dataclasses

import jax
import numpy as np
import pytest

from reid_jax import parallel
from reid_jax.data import builders, pipeline, prepare, sampling, transforms
from reid_jax.evaluation import rerank
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.evaluation.extract import pairwise_distance
from reid_jax.models import embed as embed_lib
from reid_jax.models.reid import make_model
from reid_jax.train import optim
from reid_jax.train import state as state_lib

from .conftest import tiny_config
from .test_rerank import ref_re_ranking


@pytest.fixture(scope="module")
def setup(tiny_data):
    """(config, model, random-init state, test source, test index): no training needed."""
    cfg = tiny_config(tiny_data)
    prepare.ensure_prepared(cfg.data)
    d = cfg.data
    train_index = builders.load_split(d.name, d.data_dir, "train")[1]
    source, index = builders.load_split(d.name, d.data_dir, "test")
    model = make_model(cfg.model, train_index.num_classes)
    tx = optim.make_optimizer(cfg.optim, 2, total_steps=3)
    mesh = parallel.make_mesh(cfg.mesh)
    state, _ = state_lib.create(
        jax.random.key(0), model, tx, (2, d.seq_len, d.height, d.width, 3),
        parallel.replicated(mesh),
    )  # fmt: skip
    return cfg, model, state, source, index


def _evaluator(cfg, model, source, index, changes=None):
    """An evaluator of ``cfg`` with ``changes`` ({"data.test_batch_size": 2, ...}) applied."""
    cfg = copy.deepcopy(cfg)
    cfg.lock()  # a misspelt key fails instead of being added
    for key, value in (changes or {}).items():
        *path, name = key.split(".")
        section = cfg
        for part in path:
            section = section[part]
        section[name] = value
    return RetrievalEvaluator(
        cfg.evals.retrieval, model=model, source=source, index=index, data_cfg=cfg.data,
        mesh=parallel.make_mesh(cfg.mesh), process=parallel.ProcessSlice(),
    )  # fmt: skip


def _head(index, n: int = 16):
    """The first ``n`` tracklets of ``index``: extraction tests need no full split."""
    return dataclasses.replace(
        index, **{f.name: getattr(index, f.name)[:n] for f in dataclasses.fields(index)}
    )


def _frames(source, index, t, height, width):
    start, length = int(index.start[t]), int(index.length[t])
    clip = np.stack([transforms.decode_jpeg(source[start + i]["jpeg"]) for i in range(length)])
    return transforms.resize(clip, height, width)


def test_chunked_extraction_equals_unchunked_and_ignores_the_batch_size(setup):
    cfg, model, state, source, index = setup
    index = _head(index, 24)
    d = cfg.data
    small = _evaluator(cfg, model, source, index, {"data.test_batch_size": 2}).features(state)
    large = _evaluator(cfg, model, source, index, {"data.test_batch_size": 16}).features(state)
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-6)
    # Mean fusion and an affine BNNeck commute with averaging: for a tracklet of k * T frames,
    # the mean of its chunk features is the feature of the whole tracklet as ONE clip.
    whole = [t for t in range(len(index.pid)) if index.length[t] % d.seq_len == 0
             and index.length[t] > d.seq_len][:3]  # fmt: skip
    assert whole, "no test tracklet with a multiple of T frames"
    for t in whole:
        clip = _frames(source, index, t, d.height, d.width)[None]
        out = embed_lib.embed_step(state, {"clip": clip}, model=model, feature="bn")
        np.testing.assert_allclose(small[t], np.asarray(out["features"][0]), rtol=1e-4, atol=1e-5)


def test_flip_tta_averages_the_mirrored_clip(setup, monkeypatch):
    cfg, model, state, source, index = setup
    index = _head(index)
    plain = _evaluator(cfg, model, source, index).features(state)
    tta = _evaluator(cfg, model, source, index, {"evals.retrieval.flip": True}).features(state)
    original = transforms.test_transforms

    def mirrored(height, width):  # the frames mirrored left-right (axis 2 of [T, H, W, C])
        return [*original(height, width), lambda clip, rng: clip[:, :, ::-1]]

    monkeypatch.setattr(pipeline.transforms, "test_transforms", mirrored)
    mirror = _evaluator(cfg, model, source, index).features(state)
    np.testing.assert_allclose(tta, (plain + mirror) / 2, rtol=1e-4, atol=1e-5)
    assert np.abs(plain - mirror).max() > 1e-3  # the mirror really changes the features


def test_test_sampling_modes(setup):
    cfg, model, state, source, index = setup
    t = cfg.data.seq_len
    rr = pipeline.eval_chunks(index, t, "restricted_random", multiple=1, seed=3)
    assert len(rr) == len(index.pid) and (rr[:, 0] == np.arange(len(index.pid))).all()
    for row, length in zip(rr, index.length):
        bounds = np.arange(t + 1) * length // t
        if length >= t:  # one frame from each of T equal chunks
            assert np.all((row[1:] >= bounds[:-1]) & (row[1:] < bounds[1:]))
        assert np.all(np.diff(row[1:]) >= 0) and row[1:].max() < length
    np.testing.assert_array_equal(
        rr, pipeline.eval_chunks(index, t, "restricted_random", multiple=1, seed=3)
    )
    assert not np.array_equal(rr, pipeline.eval_chunks(index, t, "restricted_random", 1, seed=4))
    evenly = pipeline.eval_chunks(index, t, "evenly", multiple=1)
    np.testing.assert_array_equal(evenly[5, 1:], sampling.evenly_spaced(int(index.length[5]), t))
    feats = _evaluator(cfg, model, source, index, {"data.test_sampling": "restricted_random"})
    assert np.isfinite(feats.features(state)).all()


def test_pairwise_distances():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    expected = ((q[:, None] - g[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean"), expected, rtol=1e-5)
    cos = 1 - (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine"), cos, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="distance='manhattan'"):
        pairwise_distance(q, g, "manhattan")


def test_evaluator_variants_use_the_protocol_split(setup):
    cfg, model, _, source, index = setup
    changes = {"evals.retrieval.aqe_k": 2, "evals.retrieval.rerank": True}
    ev = _evaluator(cfg, model, source, index, changes)
    assert ev.variants() == ["official", "legacy", "appended", "official+aqe", "legacy+aqe",
                             "appended+aqe", "official+rerank", "legacy+rerank",
                             "appended+rerank"]  # fmt: skip
    feats = np.random.default_rng(0).normal(size=(len(index.pid), 6)).astype(np.float32)
    q, g, dist = ev.distances(feats, "legacy+rerank")  # the authors' re_ranking(query, gallery)
    assert not np.isin(q, g).any() and not (index.pid[g] == -1).any()
    np.testing.assert_allclose(dist, ref_re_ranking(feats[q], feats[g], 20, 6, 0.3), atol=1e-5)
    q, g, dist = ev.distances(feats, "official+aqe")  # gallery = every test tracklet
    assert len(g) == len(index.pid)
    d0 = ((feats[q][:, None] - feats[None]) ** 2).sum(-1)
    top = np.argsort(d0, axis=1, kind="stable")[:, :2]
    expanded = (feats[q] + feats[top].sum(1)) / 3
    np.testing.assert_allclose(dist, ((expanded[:, None] - feats[None]) ** 2).sum(-1), atol=1e-4)
    q, g, dist = ev.distances(feats, "appended")  # the queries are part of the gallery
    assert np.isin(q, g).all() and not (index.pid[g] == -1).any()
    alpha = _evaluator(cfg, model, source, index, {**changes, "evals.retrieval.aqe_mode": "alpha"})
    q, g, dist = alpha.distances(feats, "legacy+aqe")  # fast-reid: both sides expanded
    eq, eg = rerank.alpha_query_expansion(feats[q], feats[g], 2, 3.0)
    np.testing.assert_allclose(dist, ((eq[:, None] - eg[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)
    scores = ev.score(feats, camera_pairs=True)
    assert set(scores) == set(ev.variants()) and "camera_pair_mAP" in scores["official"]
    assert "camera_pair_mAP" not in scores["official+rerank"]
