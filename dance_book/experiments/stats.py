"""Effect sizes with uncertainty: means, standard deviations and paired differences with CIs.

Two intervals for a paired difference: the mean with its paired t-interval, and, for heavy-tailed
measures (every paired difference of S_F, :data:`~dance_book.experiments.power.ROBUST_MEASURES`), the
Hodges-Lehmann estimate (the median of the Walsh averages) with its distribution-free interval, the
inversion of Wilcoxon's signed-rank test (:func:`hodges_lehmann`). Both keep the pairing: they are
computed on the per-image differences.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Dict

import numpy as np
from scipy import stats


def mean_sd(values) -> Dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan")}


#: Up to this many pairs the signed-rank statistic's null distribution is computed exactly; above, its
#: normal approximation (with continuity correction) is used.
EXACT_SIGNED_RANK_MAX = 400


@lru_cache(maxsize=64)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0 .. n(n+1)/2 under the null (no ties): the coefficients of
    prod_i (1 + x^i) / 2, built one rank at a time."""
    p = np.zeros(n * (n + 1) // 2 + 1)
    p[0] = 1.0
    top = 0
    for i in range(1, n + 1):
        shifted = np.zeros_like(p)
        shifted[i:top + i + 1] = p[:top + 1]
        p = 0.5 * (p + shifted)
        top += i
    return np.minimum(np.cumsum(p), 1.0)


def signed_rank_cdf(n: int, w) -> np.ndarray:
    """P(W+ <= w) of Wilcoxon's signed-rank statistic for ``n`` pairs under the null hypothesis of a
    distribution symmetric about zero (exact up to :data:`EXACT_SIGNED_RANK_MAX` pairs, else normal
    with continuity correction). ``w`` may be an array; values outside the support give 0 or 1.

    Example:
        >>> float(signed_rank_cdf(8, 3))   # 5 of the 256 sign patterns have W+ <= 3
        0.01953125
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of pairs, got {n!r}")
    w = np.floor(np.asarray(w, dtype=float))
    top = n * (n + 1) // 2
    if n <= EXACT_SIGNED_RANK_MAX:
        cdf = _signed_rank_cdf(int(n))
        idx = np.clip(w, 0, top).astype(int)
        return np.where(w < 0, 0.0, cdf[idx])
    mean, sd = top / 2, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return np.where(w < 0, 0.0, np.where(w >= top, 1.0, stats.norm.cdf((w + 0.5 - mean) / sd)))


def hodges_lehmann(d, confidence: float = 0.95) -> Dict[str, float]:
    """The Hodges-Lehmann estimate of the centre of the paired differences ``d`` with its distribution-free
    interval and the signed-rank test of zero.

    * ``hl``: the median of the n(n+1)/2 Walsh averages (d_i + d_j) / 2, i <= j;
    * ``hl_low``, ``hl_high``: the k-th smallest and k-th largest Walsh average, k - 1 the largest w with
      P(W+ <= w) <= (1 - confidence) / 2 under the null (:func:`signed_rank_cdf`): the shifts that
      Wilcoxon's signed-rank test does not reject (Hollander & Wolfe, Nonparametric Statistical
      Methods, 3.6). Exact coverage of at least ``confidence`` for a continuous distribution symmetric
      about its centre, without assuming normality; infinite ends when n is too small for the level;
    * ``hl_confidence``: the coverage achieved (>= ``confidence``, the null distribution is discrete);
    * ``p_signed_rank``: the two-sided p of the signed-rank test of a centre at 0, computed from the
      same Walsh averages (W+ = the number of positive ones, plus half the zeros), so that the interval
      excludes 0 only when the p-value is below 1 - ``confidence``.

    Ties make the null distribution approximate (as for any signed-rank test); an all-zero ``d`` gives
    ``[0, 0]`` and p = 1.

    Example:
        >>> r = hodges_lehmann([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0])
        >>> r["hl"], r["hl_low"], r["hl_high"]
        (4.5, 2.0, 52.5)
    """
    d = np.asarray(d, dtype=float).ravel()
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = d.size
    if n == 0 or not np.all(np.isfinite(d)):
        nan = float("nan")
        return {"hl": nan, "hl_low": nan, "hl_high": nan, "hl_confidence": nan, "p_signed_rank": nan}
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    m = walsh.size
    support = np.arange(m + 1)
    cdf = signed_rank_cdf(n, support)
    ok = np.flatnonzero(cdf <= (1 - confidence) / 2)
    if ok.size:
        k = int(ok[-1]) + 1                     # the interval is [walsh_(k), walsh_(m + 1 - k)], 1-based
        low, high = float(walsh[k - 1]), float(walsh[m - k])
        achieved = float(1 - 2 * cdf[k - 1])
    else:                                       # too few pairs for this level: no finite interval
        low, high, achieved = -math.inf, math.inf, 1.0
    w_plus = float((walsh > 0).sum() + 0.5 * (walsh == 0).sum())
    lower_tail = float(signed_rank_cdf(n, math.floor(w_plus)))
    upper_tail = float(1 - signed_rank_cdf(n, math.ceil(w_plus) - 1))
    p = 1.0 if not np.any(d != 0) else min(1.0, 2 * min(lower_tail, upper_tail))
    return {"hl": float(np.median(walsh)), "hl_low": low, "hl_high": high, "hl_confidence": achieved,
            "p_signed_rank": p}


def paired_difference(a, b, confidence: float = 0.95, robust: bool = False) -> Dict[str, float]:
    """Mean of ``a - b`` over paired samples, its t-interval, and Wilcoxon's signed-rank p-value.

    With ``robust=True`` the row also holds the Hodges-Lehmann estimate of the paired differences with
    its distribution-free interval (:func:`hodges_lehmann`: ``hl``, ``hl_low``, ``hl_high``,
    ``hl_confidence``, ``p_signed_rank``), the reading used for heavy-tailed measures.
    """
    if not isinstance(robust, bool):
        raise TypeError(f"robust must be True or False, got {robust!r}")
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (same shape), got {a.shape} and {b.shape}")
    d = a - b
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n > 1 and sd > 0:
        ci = stats.ttest_rel(a, b).confidence_interval(confidence)  # SciPy's paired t-interval
        low, high = float(ci.low), float(ci.high)
    elif n > 1:  # no spread: the interval is the mean itself
        low = high = mean
    else:
        low = high = float("nan")
    try:
        p = float(stats.wilcoxon(d).pvalue) if n > 1 and np.any(d != 0) else 1.0
    except ValueError:
        p = float("nan")
    out = {"n": n, "mean_diff": mean, "sd_diff": sd, "ci_low": low, "ci_high": high,
           "p_wilcoxon": p, "frac_positive": float((d > 0).mean())}
    if robust:
        out.update(hodges_lehmann(d, confidence))
    return out
