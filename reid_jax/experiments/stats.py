"""Statistics of the ablation report: t intervals, paired per-seed differences, Holm, power.

Variants are paired by seed (same initialisation and data order), so a variant is compared with
the baseline through the per-seed differences d_i = x_i - base_i: mean(d) with its Student-t 95%
interval over the pairs and the two-sided p-value of the paired t-test. The report's p-values are
Holm-adjusted over all its comparisons (a family-wise error rate of 5%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)


def mean_ci(values: Sequence[float | None]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); half-width NaN for fewer than 2 values."""
    x = _finite(values)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def welch_diff(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) of the Welch 95% interval; NaN bounds if not computable."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    return diff, diff - half, diff + half


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, float]:
    """Paired comparison of a and b (pair key -> value; only keys in both count, NaNs dropped).

    Returns {"n", "diff" (mean of a_i - b_i), "low", "high" (95% t interval), "p" (two-sided
    paired t-test), "sd" (sd of the differences)}; interval and p NaN below 2 pairs, and for
    differences that are all equal p is 0 (if non-zero) or 1."""
    keys = sorted(k for k in set(a) & set(b) if not (math.isnan(a[k]) or math.isnan(b[k])))
    d = np.asarray([a[k] - b[k] for k in keys], np.float64)
    nan = float("nan")
    if len(d) == 0:
        return {"n": 0, "diff": nan, "low": nan, "high": nan, "p": nan, "sd": nan}
    mean = float(d.mean())
    if len(d) < 2:
        return {"n": 1, "diff": mean, "low": nan, "high": nan, "p": nan, "sd": nan}
    sd = float(d.std(ddof=1))
    if sd == 0:
        return {"n": len(d), "diff": mean, "low": mean, "high": mean,
                "p": 1.0 if mean == 0 else 0.0, "sd": 0.0}  # fmt: skip
    se = sd / math.sqrt(len(d))
    half = stats.t.ppf(0.975, len(d) - 1) * se
    p = 2 * stats.t.sf(abs(mean) / se, len(d) - 1)
    return {"n": len(d), "diff": mean, "low": mean - half, "high": mean + half, "p": float(p),
            "sd": sd}  # fmt: skip


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order; NaN stays NaN and is not counted).

    Sorted ascending, p_(i) is multiplied by (m - i) (i from 0), made monotone, capped at 1:
    a comparison is significant at family-wise level alpha when its adjusted p <= alpha."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out.tolist()


def detectable_difference(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test on n pairs with difference sd
    detects with probability ``power`` at level ``alpha`` (exact, noncentral t); NaN if n < 2."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def achieved(delta: float) -> float:
        nc = delta / (sd / math.sqrt(n))
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)

    lo, hi = 0.0, sd * 100.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if achieved(mid) < power else (lo, mid)
    return 0.5 * (lo + hi)
