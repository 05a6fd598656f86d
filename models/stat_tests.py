"""Significance tests for forecast comparisons: is one forecaster's loss really lower?

A table of mean losses says who scored lower on this sample; the Diebold–Mariano test says
whether the difference is more than noise, allowing for the autocorrelation that multi-step
forecasts (and volatility losses) carry. We use the Harvey–Leybourne–Newbold small-sample
correction and Student-t tail, as the forecasting literature reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DMResult:
    """``mean_diff`` < 0: the first forecaster's loss is lower. ``p_value`` is two-sided."""

    stat: float
    p_value: float
    mean_diff: float
    n: int

    def verdict(self, alpha: float = 0.05) -> str:
        if not math.isfinite(self.p_value) or self.p_value >= alpha:
            return "no significant difference"
        return "better" if self.mean_diff < 0 else "worse"


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1) -> DMResult:
    """Test equal expected loss of forecasters A and B from their per-point losses.

    The loss differential's long-run variance uses ``horizon - 1`` autocovariances (an
    h-step forecast's errors overlap h - 1 steps); a non-positive estimate falls back to
    the plain variance. Non-finite points are dropped from both series.
    """
    a = np.asarray(loss_a, dtype=np.float64)
    b = np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"loss series differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 3:
        return DMResult(math.nan, math.nan, float(d.mean()) if n else math.nan, n)
    mean = float(d.mean())
    dc = d - mean
    h = max(1, int(horizon))
    var = float(dc @ dc) / n
    for k in range(1, min(h, n)):
        var += 2.0 * float(dc[k:] @ dc[:-k]) / n
    if var <= 0.0:
        var = float(dc @ dc) / n
    if var <= 0.0:  # identical losses everywhere: no evidence either way
        return DMResult(0.0, 1.0, mean, n)
    stat = mean / math.sqrt(var / n)
    # Harvey, Leybourne and Newbold (1997): small-sample correction, t with n - 1 dof
    stat *= math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    from scipy import stats

    p = float(2.0 * stats.t.sf(abs(stat), df=n - 1))
    return DMResult(float(stat), p, mean, n)
