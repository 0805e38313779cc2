"""Tests for P x K identity sampling and per-tracklet frame samplers."""

from pathlib import Path

import numpy as np
import pytest

from reid_jax.data import sampling
from reid_jax.data.sampling import (
    FRAME_SAMPLERS,
    all_frames_chunks,
    evenly_spaced,
    pk_epoch,
    random_window,
    restricted_random,
    steps_per_epoch,
)

MARS_INFO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"


def _labels_with_counts(counts):
    """Labels where identity i has counts[i] tracklets, interleaved so indices are not grouped."""
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    return np.random.default_rng(123).permutation(labels)


def _check_epoch(labels, batches, p, k):
    """Invariants every epoch must satisfy; returns the identity of each (batch, slot)."""
    counts = np.bincount(labels)
    assert batches.dtype == np.int64
    assert batches.shape == (-(-len(np.unique(labels)) // p), p * k)
    assert batches.min() >= 0 and batches.max() < len(labels)
    ids = labels[batches].reshape(len(batches), p, k)
    # k consecutive entries per identity, p distinct identities per batch
    assert (ids == ids[:, :, :1]).all()
    ids = ids[:, :, 0]
    for row, batch in zip(ids, batches.reshape(len(batches), p, k)):
        assert len(set(row.tolist())) == p
        for ident, group in zip(row, batch):
            if counts[ident] >= k:  # without replacement when enough tracklets
                assert len(set(group.tolist())) == k
            else:  # with replacement: only the identity's own tracklets, all of them possible
                assert set(group.tolist()) <= set(np.flatnonzero(labels == ident).tolist())
    # every identity appears in the epoch
    assert set(ids.ravel().tolist()) == set(np.unique(labels).tolist())
    return ids


def test_steps_per_epoch_values():
    assert steps_per_epoch(12, 4) == 3
    assert steps_per_epoch(13, 4) == 4
    assert steps_per_epoch(625, 8) == 79
    assert steps_per_epoch(3, 3) == 1
    with pytest.raises(ValueError, match="p"):
        steps_per_epoch(10, 0)


def test_pk_epoch_multiple_of_p_visits_each_identity_once():
    labels = _labels_with_counts([5, 1, 3, 8, 2, 6, 4, 7, 3, 9, 2, 5])  # 12 ids
    p, k = 4, 3
    for epoch in range(3):
        ids = _check_epoch(labels, pk_epoch(labels, p, k, seed=0, epoch=epoch), p, k)
        assert sorted(ids.ravel().tolist()) == list(range(12))  # each exactly once


def test_pk_epoch_not_multiple_of_p_completes_last_batch():
    labels = _labels_with_counts([5, 1, 3, 8, 2, 6, 4, 7, 3, 9])  # 10 ids, p=4 -> 3 steps
    p, k = 4, 2
    for epoch in range(5):
        ids = _check_epoch(labels, pk_epoch(labels, p, k, seed=7, epoch=epoch), p, k)
        per_id = np.bincount(ids.ravel(), minlength=10)
        # 12 slots, 10 identities: all once, exactly 2 of them twice (the fillers)
        assert per_id.min() == 1 and per_id.sum() == 12 and (per_id == 2).sum() == 2
        # fillers are identities that already appeared in an earlier batch of the epoch
        earlier = set(ids[:-1].ravel().tolist())
        assert set(np.flatnonzero(per_id == 2).tolist()) <= earlier


def test_pk_epoch_few_tracklets_use_replacement():
    labels = np.array([0, 1, 1, 2, 2, 2])  # id 0 has a single tracklet
    batches = pk_epoch(labels, p=3, k=4, seed=1, epoch=0)
    assert batches.shape == (1, 12)
    groups = batches.reshape(3, 4)
    groups_by_id = {int(labels[g[0]]): g for g in groups}
    np.testing.assert_array_equal(groups_by_id[0], [0, 0, 0, 0])
    assert set(groups_by_id[1].tolist()) <= {1, 2}
    assert set(groups_by_id[2].tolist()) <= {3, 4, 5}


def test_pk_epoch_deterministic_and_epochs_differ():
    labels = _labels_with_counts([6] * 20)
    a = pk_epoch(labels, 4, 4, seed=3, epoch=2)
    np.testing.assert_array_equal(a, pk_epoch(labels, 4, 4, seed=3, epoch=2))
    assert not np.array_equal(a, pk_epoch(labels, 4, 4, seed=3, epoch=3))
    assert not np.array_equal(a, pk_epoch(labels, 4, 4, seed=4, epoch=2))


def test_pk_epoch_non_contiguous_labels():
    labels = np.array([3, 3, 9, 9, 9, 40, 40])
    ids = _check_epoch(labels, pk_epoch(labels, 2, 2, seed=0, epoch=0), 2, 2)
    assert set(ids.ravel().tolist()) == {3, 9, 40}


def test_pk_epoch_errors():
    with pytest.raises(ValueError, match="at least p=4 identities"):
        pk_epoch(np.array([0, 0, 1, 1, 2]), p=4, k=2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="1-D integer"):
        pk_epoch(np.zeros((2, 3), dtype=np.int64), p=1, k=1, seed=0, epoch=0)
    with pytest.raises(ValueError, match=">= 0"):
        pk_epoch(np.array([0, -1, 1]), p=2, k=1, seed=0, epoch=0)
    with pytest.raises(ValueError, match="k must be"):
        pk_epoch(np.array([0, 1]), p=2, k=0, seed=0, epoch=0)


@pytest.mark.skipif(not MARS_INFO.is_dir(), reason=f"MARS split files not found at {MARS_INFO}")
def test_pk_epoch_on_real_mars_train_split():
    scipy_io = pytest.importorskip("scipy.io")
    info = scipy_io.loadmat(str(MARS_INFO / "tracks_train_info.mat"))["track_train_info"]
    _, labels = np.unique(info[:, 2], return_inverse=True)
    batches = pk_epoch(labels, p=8, k=4, seed=0, epoch=0)
    assert batches.shape == (79, 32)  # 625 identities
    ids = _check_epoch(labels, batches, 8, 4)
    assert (np.bincount(ids.ravel()) >= 1).all()


# ---------------------------------------------------------------- frame samplers


def test_restricted_random_one_frame_per_hand_computed_chunk():
    # length 10, t 4: chunks [0,2) [2,5) [5,7) [7,10)
    chunks = [(0, 2), (2, 5), (5, 7), (7, 10)]
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(300):
        idx = restricted_random(10, 4, rng)
        assert idx.shape == (4,) and idx.dtype == np.int64
        for i, (lo, hi) in zip(idx, chunks):
            assert lo <= i < hi
        seen.update(idx.tolist())
    assert seen == set(range(10))  # every frame reachable


@pytest.mark.parametrize("length,t", [(4, 4), (5, 4), (17, 8), (100, 6), (920, 8)])
def test_restricted_random_sorted_in_range_near_equal_chunks(length, t):
    rng = np.random.default_rng(length)
    bounds = [(i * length) // t for i in range(t + 1)]
    sizes = np.diff(bounds)
    assert sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    for _ in range(20):
        idx = restricted_random(length, t, rng)
        assert (np.diff(idx) > 0).all()  # strictly increasing: one per distinct chunk
        assert idx.min() >= 0 and idx.max() < length
        assert [int(np.searchsorted(bounds, i, side="right")) - 1 for i in idx] == list(range(t))


def test_restricted_random_shorter_than_t():
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = restricted_random(3, 8, rng)
        assert idx.shape == (8,)
        assert (np.diff(idx) >= 0).all() and idx.min() >= 0 and idx.max() <= 2
    assert restricted_random(1, 4, rng).tolist() == [0, 0, 0, 0]


def test_random_window_consecutive_and_random_start():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = random_window(10, 4, rng)
        np.testing.assert_array_equal(np.diff(idx), [1, 1, 1])
        assert 0 <= idx[0] and idx[-1] <= 9
        starts.add(int(idx[0]))
    assert starts == set(range(7))
    idx = random_window(20, 4, rng, stride=3)
    np.testing.assert_array_equal(np.diff(idx), [3, 3, 3])
    assert idx[-1] <= 19


def test_random_window_too_short_repeats_last_frame():
    rng = np.random.default_rng(0)
    assert random_window(3, 5, rng).tolist() == [0, 1, 2, 2, 2]
    assert random_window(5, 4, rng, stride=2).tolist() == [0, 2, 4, 4]
    assert random_window(1, 3, rng).tolist() == [0, 0, 0]


def test_evenly_spaced_hand_values():
    assert evenly_spaced(8, 4).tolist() == [1, 3, 5, 7]
    assert evenly_spaced(10, 4).tolist() == [1, 3, 6, 8]
    assert evenly_spaced(2, 4).tolist() == [0, 0, 1, 1]
    assert evenly_spaced(1, 3).tolist() == [0, 0, 0]
    idx = evenly_spaced(920, 8)
    assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < 920


def test_all_frames_chunks_hand_values():
    np.testing.assert_array_equal(
        all_frames_chunks(10, 4), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    )
    np.testing.assert_array_equal(all_frames_chunks(2, 4), [[0, 1, 1, 1]])
    np.testing.assert_array_equal(all_frames_chunks(4, 4), [[0, 1, 2, 3]])


@pytest.mark.parametrize("length,t", [(920, 4), (920, 8), (919, 8), (1, 4), (37, 5)])
def test_all_frames_chunks_covers_every_frame_once(length, t):
    chunks = all_frames_chunks(length, t)
    n = -(-length // t)
    assert chunks.shape == (n, t) and chunks.dtype == np.int64
    flat = chunks.ravel()
    np.testing.assert_array_equal(flat[:length], np.arange(length))  # consecutive, each once
    assert (flat[length:] == length - 1).all()  # padding repeats the last frame
    assert len(flat) - length < t


def test_frame_samplers_registry_and_errors():
    assert set(FRAME_SAMPLERS) == {"restricted_random", "random_window", "strided"}
    rng = np.random.default_rng(0)
    for fn in FRAME_SAMPLERS.values():
        idx = fn(50, 6, rng)
        assert idx.shape == (6,) and idx.max() < 50
    # explicit rng: identical generators give identical draws
    a = restricted_random(50, 6, np.random.default_rng(5))
    np.testing.assert_array_equal(a, restricted_random(50, 6, np.random.default_rng(5)))
    for bad in (lambda: restricted_random(0, 4, rng), lambda: evenly_spaced(5, 0)):
        with pytest.raises(ValueError, match="positive integer"):
            bad()
    with pytest.raises(ValueError, match="stride"):
        random_window(10, 2, rng, stride=0)
    assert sampling.__doc__ and "ceil(num_ids / p)" in sampling.__doc__
