"""Epoch kinds (identities / tracklets) and AP3D's strided frame sampler, against ports of
guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f (``tools/samplers.py``
``RandomIdentitySampler``, ``transforms/temporal_transforms.py`` ``TemporalRandomCrop``)."""

import collections
import random
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reid_jax.data import sampling

MARS_INFO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"


class AP3DRandomIdentitySampler:
    """The anchor's sampler over (index, pid) pairs, python ``random`` as in the anchor."""

    def __init__(self, pids, num_instances=4):
        self.num_instances = num_instances
        self.index_dic = collections.defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_dic[pid].append(index)
        self.pids = list(self.index_dic.keys())
        self.length = 0
        for pid in self.pids:
            num = len(self.index_dic[pid])
            if num < self.num_instances:
                num = self.num_instances
            self.length += num - num % self.num_instances

    def __iter__(self):
        list_container = []
        for pid in self.pids:
            idxs = list(self.index_dic[pid])
            if len(idxs) < self.num_instances:
                idxs = list(np.random.choice(idxs, size=self.num_instances, replace=True))
            random.shuffle(idxs)
            batch_idxs = []
            for idx in idxs:
                batch_idxs.append(idx)
                if len(batch_idxs) == self.num_instances:
                    list_container.append(batch_idxs)
                    batch_idxs = []
        random.shuffle(list_container)
        return iter([i for batch in list_container for i in batch])

    def __len__(self):
        return self.length


def ap3d_temporal_random_crop(frame_indices, size, stride, begin_draw, choice_draw):
    """``TemporalRandomCrop.__call__`` with its random draws passed in."""
    if len(frame_indices) >= size * stride:
        rand_end = len(frame_indices) - (size - 1) * stride - 1
        begin_index = begin_draw(0, rand_end)
        end_index = begin_index + (size - 1) * stride + 1
        return frame_indices[begin_index:end_index:stride]
    index = np.sort(choice_draw(len(frame_indices), size, len(frame_indices) < size))
    return [frame_indices[i] for i in index]


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("counts", [[1, 2, 3, 4, 5, 9, 13, 4, 7, 2], [4] * 8, [30, 1, 6, 6, 6]])
def test_tracklet_epoch_has_ap3d_length_and_chunk_structure(counts):
    labels = _labels(counts)
    p, k = 2, 4
    plan = sampling.tracklet_epoch(labels, p, k, seed=3, epoch=1)
    ap3d = AP3DRandomIdentitySampler(labels.tolist(), k)
    assert plan.shape == (len(ap3d) // (p * k), p * k)  # DataLoader(drop_last=True) batches
    assert sampling.epoch_steps(labels, p, k, "tracklets") == len(ap3d) // (p * k)
    assert len(list(iter(ap3d))) == len(ap3d)  # the port is the anchor's (self-consistent)
    chunks = plan.reshape(-1, k)
    for chunk in chunks:
        assert len(set(labels[chunk])) == 1  # each chunk is k tracklets of one identity
        n = counts[labels[chunk[0]]]
        if n >= k:
            assert len(set(chunk)) == k  # without replacement
    # Every identity's chunk count is at most AP3D's (max(n, k) // k); only the dropped last
    # batch can take chunks away, fewer than p of them.
    per_id = collections.Counter(labels[chunks[:, 0]].tolist())
    full = {i: max(n, k) // k for i, n in enumerate(counts)}
    assert all(per_id[i] <= full[i] for i in full)
    assert sum(full.values()) - len(chunks) < p
    # Deterministic per (seed, epoch); another epoch draws another plan.
    np.testing.assert_array_equal(plan, sampling.tracklet_epoch(labels, p, k, seed=3, epoch=1))
    assert not np.array_equal(plan, sampling.tracklet_epoch(labels, p, k, seed=3, epoch=2))


def test_identity_epoch_steps_unchanged_and_bad_kind_named():
    labels = _labels([3, 3, 3, 3, 3])
    assert sampling.epoch_steps(labels, 2, 4) == sampling.steps_per_epoch(5, 2) == 3
    plan = sampling.epoch_plan(labels, 2, 4, seed=0, epoch_index=0)
    np.testing.assert_array_equal(plan, sampling.pk_epoch(labels, 2, 4, seed=0, epoch=0))
    with pytest.raises(ValueError, match="config.data.epoch='frames'"):
        sampling.epoch_steps(labels, 2, 4, "frames")


@pytest.mark.skipif(not MARS_INFO.is_dir(), reason=f"MARS info files not found at {MARS_INFO}")
def test_real_mars_tracklet_epoch_length():
    info = scipy.io.loadmat(MARS_INFO / "tracks_train_info.mat")["track_train_info"]
    pids = info[:, 2].astype(np.int64)
    labels = np.unique(pids, return_inverse=True)[1]
    ap3d = AP3DRandomIdentitySampler(pids.tolist(), 4)
    steps = sampling.epoch_steps(labels, 8, 4, "tracklets")
    assert steps == len(ap3d) // 32
    assert sampling.epoch_steps(labels, 8, 4, "identities") == 79  # ceil(625 / 8)
    assert steps == 235  # AP3D's MARS epoch: 7532 chunked tracklets / 32, ~3x the identity epoch


@pytest.mark.parametrize("length,t,stride", [(40, 4, 8), (32, 4, 8), (31, 4, 8), (4, 4, 8),
                                             (3, 4, 8), (200, 4, 8), (9, 3, 2)])  # fmt: skip
def test_strided_crop_follows_temporal_random_crop(length, t, stride):
    frames = list(range(length))
    seen_begins = set()
    for seed in range(60):
        got = sampling.strided_crop(length, t, np.random.default_rng(seed), stride)
        assert got.shape == (t,) and np.all(np.diff(got) >= 0) and got.max() < length
        if length >= t * stride:
            begin = int(got[0])
            seen_begins.add(begin)
            expected = ap3d_temporal_random_crop(frames, t, stride, lambda a, b: begin, None)
            np.testing.assert_array_equal(got, expected)
        else:
            expected = ap3d_temporal_random_crop(
                frames, t, stride, None, lambda n, size, replace: got
            )
            np.testing.assert_array_equal(got, expected)
            if length >= t:
                assert len(set(got.tolist())) == t  # distinct frames
    if length >= t * stride:  # randint(0, rand_end) covers every start, both ends included
        assert seen_begins <= set(range(length - (t - 1) * stride))
        if length - (t - 1) * stride <= 20:
            assert seen_begins == set(range(length - (t - 1) * stride))
