"""Embedded MARS tracklet-length distribution (quantile table), so SynthMARS needs no shared/ files.

The table holds percentiles of ``end - start + 1`` over all 20478 rows of the real
``tracks_train_info.mat`` and ``tracks_test_info.mat`` (numpy ``percentile``, linear method),
with extra points in both tails. Lengths are drawn by inverse-CDF interpolation.
"""

from __future__ import annotations

import numpy as np

# Percent levels (0..100) and the matching MARS tracklet lengths (frames).
MARS_LENGTH_PERCENTS = np.array(
    [0, 0.25, 0.5, 0.75]
    + list(range(1, 100))
    + [99.25, 99.5, 99.75, 99.9, 99.95, 100],
    dtype=np.float64,
)
MARS_LENGTH_QUANTILES = np.array(
    [
        2, 6, 6, 7, 7, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 13, 14, 14, 14, 14, 15, 15,
        15, 16, 16, 17, 17, 17, 18, 18, 18, 19, 19, 20, 20, 20, 20, 21, 22, 23, 24, 24, 25,
        26, 27, 27, 28, 29, 30, 30, 30, 31, 33, 34, 35, 36, 37, 39, 40, 40, 42, 44, 46, 48,
        50, 50, 54, 56, 58, 60, 60, 65, 68, 70, 73, 76, 79, 81, 85, 88, 90, 93, 97, 100, 100,
        100, 105, 110, 115, 120, 125, 130, 138, 145, 150, 160, 170, 179, 191, 207, 234.5,
        280, 300.4, 326.6, 403.2, 495.2, 624.5, 920,
    ],
    dtype=np.float64,
)  # fmt: skip

# Facts about the real files, kept for reference and checked by the tests.
MARS_NUM_TRACKLETS = 20478
MARS_MEDIAN_LENGTH = 33.0
MARS_MEAN_LENGTH = 58.16
MAX_FRAMES = 999  # F<frame3> in MARS names allows at most 999 frames per tracklet.


def sample_lengths(
    rng: np.random.Generator, n: int, length_scale: float = 1.0, min_length: int = 1
) -> np.ndarray:
    """Draw ``n`` tracklet lengths from the MARS distribution, scaled and clipped to [min, 999]."""
    if length_scale <= 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")
    u = rng.random(n) * 100.0
    raw = np.interp(u, MARS_LENGTH_PERCENTS, MARS_LENGTH_QUANTILES) * length_scale
    return np.clip(np.rint(raw), max(1, min_length), MAX_FRAMES).astype(np.int64)
