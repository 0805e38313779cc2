"""grain pipeline: P x K batches, exact resume from iterator state, process sharding, bad JPEGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from reid_jax import parallel
from reid_jax.data import pipeline, sampling
from reid_jax.data.builders import TrackletIndex

H, W, T = 16, 8, 4


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _dataset(lengths, pids, bad=()):
    """In-memory records; frame value encodes (tracklet, frame) so clips can be traced back."""
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    records = []
    for t, n in enumerate(lengths):
        for f in range(n):
            rid = len(records)
            data = b"not a jpeg" if rid in bad else _jpeg(min(255, 10 * t + f))
            records.append({"jpeg": data, "name": f"t{t}f{f}".encode()})
    pids = np.asarray(pids, np.int64)
    index = TrackletIndex(
        start=start,
        length=np.asarray(lengths, np.int64),
        pid=pids,
        camid=np.ones_like(pids),
        is_query=np.zeros(len(pids), bool),
        label=np.unique(pids, return_inverse=True)[1].astype(np.int64),
    )
    return records, index


def _cfg(**kw) -> ConfigDict:
    cfg = dict(
        height=H,
        width=W,
        seq_len=T,
        p=2,
        k=2,
        frame_sampler="restricted_random",
        pad=2,
        flip_p=0.5,
        erase_p=0.5,
        num_workers=0,
        num_threads=0,
        test_sampling="all",
        sample_stride=1,
        epoch="identities",
    )
    cfg.update(kw)
    return ConfigDict(cfg)


LENGTHS = [5, 9, 3, 12, 7, 6, 4, 8]
PIDS = [1, 1, 2, 2, 3, 3, 4, 4]


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_batches_are_p_by_k_and_every_identity_each_epoch():
    records, index = _dataset(LENGTHS, PIDS)
    it = pipeline.train_iterator(records, index, _cfg(), num_steps=4, seed=3)
    batches = _take(it, 4)  # 4 ids / P=2 -> 2 steps per epoch
    for b in batches:
        assert b["clip"].shape == (4, T, H, W, 3) and b["clip"].dtype == np.uint8
        labels = b["label"].reshape(2, 2)
        assert (labels[:, 0] == labels[:, 1]).all() and labels[0, 0] != labels[1, 0]
        assert (index.label[b["tracklet"]] == b["label"]).all()
    for epoch in range(2):
        seen = np.concatenate([b["label"] for b in batches[2 * epoch : 2 * epoch + 2]])
        assert set(seen.tolist()) == {0, 1, 2, 3}


def test_resume_from_iterator_state_gives_the_same_batches():
    records, index = _dataset(LENGTHS, PIDS)
    full = _take(pipeline.train_iterator(records, index, _cfg(), num_steps=5, seed=0), 5)
    it = pipeline.train_iterator(records, index, _cfg(), num_steps=5, seed=0)
    _take(it, 2)
    state = it.get_state()
    resumed = pipeline.train_iterator(records, index, _cfg(), num_steps=5, seed=0)
    resumed.set_state(state)
    for a, b in zip(full[2:], _take(resumed, 3), strict=True):
        np.testing.assert_array_equal(a["clip"], b["clip"])
        np.testing.assert_array_equal(a["tracklet"], b["tracklet"])


def test_processes_split_each_global_batch_without_overlap():
    records, index = _dataset(LENGTHS, PIDS)
    one = _take(pipeline.train_iterator(records, index, _cfg(), num_steps=3, seed=1), 3)
    parts = [
        _take(
            pipeline.train_iterator(
                records,
                index,
                _cfg(),
                num_steps=3,
                seed=1,
                process=parallel.ProcessSlice(p, 2),
            ),
            3,
        )
        for p in range(2)
    ]
    for step in range(3):
        joined = np.concatenate([parts[0][step]["clip"], parts[1][step]["clip"]])
        np.testing.assert_array_equal(joined, one[step]["clip"])


def test_global_item_mapping_is_a_bijection():
    got = sorted(parallel.ProcessSlice(p, 4).global_item(j, 8) for p in range(4) for j in range(6))
    assert got == list(range(24))
    with pytest.raises(ValueError, match="not divisible"):
        parallel.ProcessSlice(0, 3).local_batch(8)


def test_undecodable_frame_is_replaced_and_reported():
    records, index = _dataset([4, 4], [1, 2], bad={1})
    cfg = _cfg(p=2, k=1, frame_sampler="random_window", seq_len=4, pad=0, flip_p=0, erase_p=0)
    it = pipeline.train_iterator(records, index, cfg, num_steps=1, seed=0)
    b = next(it)
    row = int(np.flatnonzero(b["tracklet"] == 0)[0])
    assert pipeline.bad_frame_ids({"bad_frames": b["bad_frames"][row : row + 1]}) == [1]
    # Frame 1 (bad) is replaced by its neighbour frame 0, so frames 0 and 1 are equal.
    np.testing.assert_array_equal(b["clip"][row, 0], b["clip"][row, 1])
    assert abs(int(b["clip"][row, 2].mean()) - 2) <= 2


def test_eval_chunks_cover_every_frame_once_and_pad_to_the_batch():
    _, index = _dataset([5, 9, 3], [1, 2, 3])
    table = pipeline.eval_chunks(index, T, "all", multiple=4)
    assert len(table) % 4 == 0
    real = table[table[:, 0] >= 0]
    for t, n in enumerate([5, 9, 3]):
        frames = real[real[:, 0] == t, 1:].ravel()
        assert set(frames.tolist()) == set(range(n))
        assert len(frames) == T * -(-n // T)
    assert (table[len(real) :, 0] == -1).all()
    with pytest.raises(ValueError, match="test_sampling"):
        pipeline.eval_chunks(index, T, "bogus", multiple=4)


def test_eval_iterator_yields_each_tracklets_frames_with_a_mask():
    records, index = _dataset([5, 9, 3], [1, 2, 3])
    it, n = pipeline.eval_iterator(records, index, _cfg(), global_batch=4)
    batches = _take(it, n)
    tracklet = np.concatenate([b["tracklet"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert (mask == (tracklet >= 0)).all()
    assert sorted(set(tracklet[tracklet >= 0].tolist())) == [0, 1, 2]
    clips = np.concatenate([b["clip"] for b in batches])[tracklet == 1]
    # Tracklet 1's frames encode 10 + f: the chunks show them in order, last one padded.
    means = np.round(clips.reshape(-1, H * W * 3).mean(1)).astype(int)
    np.testing.assert_allclose(means, [10 + min(f, 8) for f in range(12)], atol=2)


def test_tracklet_epochs_and_strided_frames_reach_the_clips():
    """data.epoch="tracklets" and frame_sampler="strided" (AP3D's recipe) drive the iterator:
    the clips follow ``sampling.tracklet_epoch`` and are T frames sample_stride apart."""
    source, index = _dataset([40, 33, 3, 12, 17, 6, 4, 8, 9, 20], [1, 1, 1, 2, 2, 3, 3, 3, 4, 4])
    cfg = _cfg(p=2, k=2, epoch="tracklets", frame_sampler="strided", sample_stride=2, seq_len=2,
               pad=0, flip_p=0, erase_p=0)  # fmt: skip
    steps = sampling.epoch_steps(index.label, 2, 2, "tracklets")
    it = pipeline.train_iterator(source, index, cfg, num_steps=steps, seed=4)
    plan = sampling.tracklet_epoch(index.label, 2, 2, seed=4, epoch=0)
    assert steps == 2  # 3, 2, 3, 2 tracklets -> one chunk of k=2 each -> 2 batches of p=2
    for step in range(steps):
        batch = next(it)
        np.testing.assert_array_equal(batch["tracklet"], plan[step])
        # frame value = 10 * tracklet + frame (capped at 255): the two frames are 2 apart
        values = batch["clip"][:, :, 0, 0, 0].astype(int)
        long = index.length[batch["tracklet"]] >= 4
        assert np.all(np.abs(values[long, 1] - values[long, 0] - 2) <= 2)  # JPEG rounding
    with pytest.raises(ValueError, match="frame_sampler='every'"):
        pipeline.frame_sampler(_cfg(frame_sampler="every"))
    strided = pipeline.frame_sampler(cfg)
    frames = strided(40, 2, np.random.default_rng(0))
    assert frames[1] - frames[0] == 2
