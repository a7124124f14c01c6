"""Effect sizes with uncertainty: means, standard deviations and paired differences with CIs."""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import stats


def mean_sd(values) -> Dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan")}


def paired_difference(a, b, confidence: float = 0.95) -> Dict[str, float]:
    """Mean of ``a - b`` over paired samples, its t-interval, and Wilcoxon's signed-rank p-value."""
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
    return {"n": n, "mean_diff": mean, "sd_diff": sd, "ci_low": low, "ci_high": high,
            "p_wilcoxon": p, "frac_positive": float((d > 0).mean())}
