"""Identity (P x K) batch sampling and per-tracklet frame sampling, pure numpy.

Epoch definition (the "RandomIdentitySampler" of jiyanggao/Video-Person-ReID, the lineage of this
research): an epoch visits every training identity exactly once as one of the P identities of a
batch, in a random order, so ``steps_per_epoch(num_ids, p) = ceil(num_ids / p)``. When ``num_ids``
is not a multiple of P, the last batch is completed with identities drawn at random (distinct
within that batch) from those already visited earlier in the epoch. (The original PyTorch loader
instead dropped the incomplete last batch with ``drop_last=True``; completing it means no identity
is skipped in any epoch.) Each identity of a batch contributes K tracklets, drawn without
replacement when it has at least K tracklets, else with replacement.

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
    "pk_epoch",
    "random_window",
    "restricted_random",
    "steps_per_epoch",
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


FRAME_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "restricted_random": restricted_random,
    "random_window": random_window,
}
