"""Identity (P x K) batch sampling and per-tracklet frame sampling, pure numpy.

Epoch definition (the "RandomIdentitySampler" of jiyanggao/Video-Person-ReID, the lineage of this
research): an epoch visits every training identity exactly once as one of the P identities of a
batch, in a random order, so ``steps_per_epoch(num_ids, p) = ceil(num_ids / p)``. When ``num_ids``
is not a multiple of P, the last batch is completed with identities drawn at random (distinct
within that batch) from those already visited earlier in the epoch. (The original PyTorch loader
instead dropped the incomplete last batch with ``drop_last=True``; completing it means no identity
is skipped in any epoch.) Each identity of a batch contributes K tracklets, drawn without
replacement when it has at least K tracklets, else with replacement.

``config.data.epoch = "tracklets"`` counts epochs as guxinqian/AP3D's ``RandomIdentitySampler``
(``tools/samplers.py``, commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f) and TF-CLIP do: every
training tracklet once (``tracklet_epoch``), so their epoch numbers (AP3D: 240 epochs, decay at
60/120/180) can be copied into a config.

Every function is a pure function of its arguments and an explicit ``np.random.Generator`` (or of
``(seed, epoch)``), module-level and therefore picklable for grain worker processes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "FRAME_SAMPLERS",
    "all_frames_chunks",
    "evenly_spaced",
    "EPOCHS",
    "epoch_plan",
    "epoch_steps",
    "pk_epoch",
    "random_window",
    "restricted_random",
    "steps_per_epoch",
    "strided_crop",
    "tracklet_epoch",
]


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def steps_per_epoch(num_ids: int, p: int) -> int:
    """Number of P x K batches in one epoch: ceil(num_ids / p), every identity visited once."""
    _check_positive(num_ids=num_ids, p=p)
    return -(-int(num_ids) // int(p))


def _epoch_identity_rows(ids: np.ndarray, p: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle identities into [steps, p] rows; complete the last row with earlier identities."""
    num_ids = len(ids)
    steps = steps_per_epoch(num_ids, p)
    perm = rng.permutation(ids)
    missing = steps * p - num_ids
    if missing:
        visited = perm[: (steps - 1) * p]  # identities outside the last (incomplete) batch
        perm = np.concatenate([perm, rng.choice(visited, size=missing, replace=False)])
    return perm.reshape(steps, p)


def pk_epoch(labels: np.ndarray, p: int, k: int, seed: int, epoch: int) -> np.ndarray:
    """Tracklet indices of one epoch of P x K batches: int64 [steps_per_epoch, p*k].

    Row = one batch of p distinct identities, each contributing k consecutive entries.
    Deterministic from (seed, epoch); different epochs draw different batches.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    _check_positive(p=p, k=k)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed} epoch={epoch}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0 (junk/distractors excluded), got {labels.min()}")
    ids, counts = np.unique(labels, return_counts=True)
    if len(ids) < p:
        raise ValueError(f"P x K sampling needs at least p={p} identities, labels have {len(ids)}")

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    rows = _epoch_identity_rows(ids, p, rng)

    order = np.argsort(labels, kind="stable")  # tracklets grouped by identity
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = {int(i): n for n, i in enumerate(ids)}
    out = np.empty((rows.shape[0], p * k), dtype=np.int64)
    for step, row in enumerate(rows):
        for j, ident in enumerate(row):
            n = slot[int(ident)]
            members = order[starts[n] : starts[n] + counts[n]]
            pick = rng.choice(members, size=k, replace=bool(counts[n] < k))
            out[step, j * k : (j + 1) * k] = pick
    return out


def _tracklet_chunk_count(counts: np.ndarray, k: int) -> int:
    """AP3D's ``RandomIdentitySampler.__len__`` / k: an identity with n tracklets gives
    max(n, k) // k chunks of k."""
    return int(np.sum(np.maximum(counts, k) // k))


def tracklet_epoch(labels: np.ndarray, p: int, k: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch of AP3D's ``RandomIdentitySampler`` batched by its ``DataLoader(batch_size=p*k,
    drop_last=True)``: int64 [steps, p*k] tracklet indices.

    Each identity's tracklets are shuffled (an identity with fewer than k tracklets draws k with
    replacement) and cut into chunks of k (a remainder < k is dropped); all chunks are shuffled
    and every p consecutive chunks make a batch (the last incomplete batch is dropped). As in
    AP3D, two chunks of one identity may share a batch. Deterministic from (seed, epoch).
    """
    labels = np.asarray(labels)
    _check_positive(p=p, k=k)
    ids = np.unique(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    chunks = []
    for ident in ids:
        members = np.flatnonzero(labels == ident)
        if len(members) < k:
            members = rng.choice(members, size=k, replace=True)
        members = rng.permutation(members)
        whole = len(members) // k * k
        chunks.extend(members[:whole].reshape(-1, k))
    chunks = np.stack(chunks)[rng.permutation(len(chunks))]
    steps = len(chunks) // p
    if steps < 1:
        raise ValueError(f"a tracklet epoch gives {len(chunks)} chunks of k={k}, fewer than p={p}")
    return chunks[: steps * p].reshape(steps, p * k).astype(np.int64)


# config.data.epoch -> (plan of one epoch, its number of steps)
EPOCHS: dict[str, Callable[..., np.ndarray]] = {"identities": pk_epoch, "tracklets": tracklet_epoch}


def to_steps(epochs: float, steps_per_epoch: int) -> int:
    """``epochs`` as whole steps, rounded: the one epoch -> step conversion (the schedule, the
    optimiser's warmup / decay / cosine length, checkpoint selection, the evaluation job)."""
    return round(float(epochs) * steps_per_epoch)


def epoch_steps(labels: np.ndarray, p: int, k: int, epoch: str = "identities") -> int:
    """Steps of one epoch of kind ``epoch`` (``EPOCHS``): ceil(ids / p) for "identities",
    AP3D's floor(sum over ids of max(n, k) // k / p) for "tracklets". The one conversion of an
    epoch count into steps that every caller uses."""
    if epoch not in EPOCHS:
        raise ValueError(f"config.data.epoch={epoch!r}: expected one of {sorted(EPOCHS)}")
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if epoch == "identities":
        return steps_per_epoch(len(counts), p)
    return _tracklet_chunk_count(counts, k) // p


def epoch_plan(
    labels: np.ndarray, p: int, k: int, seed: int, epoch_index: int, epoch: str = "identities"
) -> np.ndarray:
    """The [steps, p*k] tracklet plan of epoch ``epoch_index`` for the epoch kind ``epoch``."""
    if epoch not in EPOCHS:
        raise ValueError(f"config.data.epoch={epoch!r}: expected one of {sorted(EPOCHS)}")
    return EPOCHS[epoch](labels, p, k, seed, epoch_index)


def restricted_random(length: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """Training frames: one random frame from each of t near-equal chunks of [0, length), sorted.

    Restricted random sampling (Li et al. 2018); if length < t, t sorted draws with replacement.
    """
    _check_positive(length=length, t=t)
    if length < t:
        return np.sort(rng.integers(0, length, size=t)).astype(np.int64)
    bounds = (np.arange(t + 1, dtype=np.int64) * length) // t  # every chunk non-empty
    return rng.integers(bounds[:-1], bounds[1:]).astype(np.int64)


def random_window(length: int, t: int, rng: np.random.Generator, stride: int = 1) -> np.ndarray:
    """Training frames: t frames `stride` apart from a random start; too short -> repeat last."""
    _check_positive(length=length, t=t, stride=stride)
    span = (t - 1) * stride + 1
    start = int(rng.integers(0, length - span + 1)) if length >= span else 0
    return np.minimum(start + np.arange(t, dtype=np.int64) * stride, length - 1)


def strided_crop(length: int, t: int, rng: np.random.Generator, stride: int = 8) -> np.ndarray:
    """Training frames as AP3D's ``TemporalRandomCrop(size=t, stride)``
    (``transforms/temporal_transforms.py``, commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f):
    t frames ``stride`` apart from a uniformly random start when length >= t * stride; else t
    distinct random frames, sorted, when length >= t; else t sorted draws with replacement."""
    _check_positive(length=length, t=t, stride=stride)
    if length >= t * stride:
        begin = int(rng.integers(0, length - (t - 1) * stride))  # randint(0, rand_end) inclusive
        return begin + np.arange(t, dtype=np.int64) * stride
    return np.sort(rng.choice(length, size=t, replace=length < t)).astype(np.int64)


def evenly_spaced(length: int, t: int) -> np.ndarray:
    """Test frames: the centre frame of each of t equal chunks; deterministic, sorted."""
    _check_positive(length=length, t=t)
    return ((2 * np.arange(t, dtype=np.int64) + 1) * length) // (2 * t)


def all_frames_chunks(length: int, t: int) -> np.ndarray:
    """Test frames: [ceil(length/t), t] consecutive chunks covering every frame once.

    The last chunk is padded by repeating the tracklet's last frame, so any length is testable
    in bounded memory, one t-frame chunk at a time.
    """
    _check_positive(length=length, t=t)
    n = -(-length // t)
    return np.minimum(np.arange(n * t, dtype=np.int64), length - 1).reshape(n, t)


# config.data.frame_sampler -> f(length, t, rng[, stride]); those taking ``stride`` get
# config.data.sample_stride.
FRAME_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "restricted_random": restricted_random,
    "random_window": random_window,
    "strided": strided_crop,
}
STRIDED_SAMPLERS = ("random_window", "strided")
