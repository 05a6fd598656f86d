"""Probabilistic scores of quantile forecasts: pinball loss, CRPS, coverage, width; seed spread.

Why: a point error (MAE, MSE) cannot tell a calibrated band from an over-confident one, and the
models here are trained to give quantiles. The scores below judge the whole predictive
distribution as forecasters report it, and the seed summary keeps one lucky seed from standing
for a model (docs/forecasting.md, "Probabilistic evaluation and calibration", shows the tables).

- Pinball (quantile) loss at level τ: ``max(τ·(y - q), (τ - 1)·(y - q))``; its mean over many
  levels is a proper score of the distribution those levels describe.
- CRPS from a quantile set: CRPS = 2·∫₀¹ pinball_τ dτ, approximated by a quadrature over the
  given levels (each level weighs the width of the τ-cell around it, cells split half way
  between neighbours and closed at 0 and 1). Exact in the limit of a fine, even grid; with the
  three default levels (0.1, 0.5, 0.9) it is coarse, and the table says which levels it used.
- Coverage of the band between two quantiles and its mean width (units of the target).
- Gaussian quantiles (a point and a sigma) for the EWMA-volatility band baseline; numpy and the
  standard library only (no scipy), so serving-side code may import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def pinball(y: np.ndarray, q: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Pinball loss of quantile forecasts ``q [..., Q]`` for outcomes ``y [...]``: ``[..., Q]``."""
    tau = np.asarray(levels, dtype=np.float64)
    if q.shape[-1] != tau.size:
        raise ValueError(f"{q.shape[-1]} quantile columns for {tau.size} levels")
    d = np.asarray(y, dtype=np.float64)[..., None] - np.asarray(q, dtype=np.float64)
    return np.maximum(tau * d, (tau - 1.0) * d)


def crps_weights(levels: Sequence[float]) -> np.ndarray:
    """Quadrature weights (sum 1) of the levels for the CRPS integral over τ in (0, 1)."""
    tau = np.asarray(levels, dtype=np.float64)
    if tau.size == 0 or np.any(np.diff(tau) <= 0) or tau[0] <= 0 or tau[-1] >= 1:
        raise ValueError("levels must be increasing and strictly between 0 and 1")
    edges = np.concatenate([[0.0], (tau[1:] + tau[:-1]) / 2.0, [1.0]])
    return np.diff(edges)


def crps(y: np.ndarray, q: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """CRPS of each forecast ``q [..., Q]`` (quantile approximation, see module doc): ``[...]``."""
    return 2.0 * pinball(y, q, levels) @ crps_weights(levels)


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of outcomes inside ``[lo, hi]`` (NaN when there are none)."""
    y = np.asarray(y)
    if y.size == 0:
        return math.nan
    return float(((y >= lo) & (y <= hi)).mean())


def gaussian_quantiles(mean: np.ndarray, sigma: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles ``[..., Q]`` of N(mean, sigma²), broadcasting ``mean`` and ``sigma``."""
    z = np.array([NormalDist().inv_cdf(float(t)) for t in levels])
    m = np.asarray(mean, dtype=np.float64)[..., None]
    return m + np.asarray(sigma, dtype=np.float64)[..., None] * z


def ewma_sigma(ret: np.ndarray, lam: float = 0.94, warmup: int = 20) -> np.ndarray:
    """RiskMetrics volatility known at the end of each bar: ``out[t]`` uses ``ret[: t + 1]``.

    Started from the mean square of the first ``warmup`` returns (the first bars of a series
    are its only history; the estimate forgets them at rate λ).
    """
    r = np.asarray(ret, dtype=np.float64)
    out = np.empty(r.size)
    if r.size == 0:
        return out
    var = float(np.mean(r[:warmup] ** 2))
    for t in range(r.size):
        var = lam * var + (1.0 - lam) * r[t] * r[t]
        out[t] = var
    return np.sqrt(out)


@dataclass(frozen=True)
class ProbScore:
    """One forecaster's probabilistic scores over the pooled test windows."""

    name: str
    pinball: float  # mean over windows, horizon steps and levels
    crps: float  # mean over windows and horizon steps
    coverage: float  # share inside the outer band (first to last level)
    nominal: float  # what that share should be
    width: float  # mean width of the outer band
    n: int
    level_error: float = math.nan  # worst |share at or below q_τ - τ| over the levels
    observed: tuple[float, ...] = ()  # share at or below each level (the calibration plot)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def prob_score(name: str, y: np.ndarray, q: np.ndarray, levels: Sequence[float]) -> ProbScore:
    """Scores of quantile forecasts ``q [m, H, Q]`` against outcomes ``y [m, H]``."""
    lo, hi = q[..., 0], q[..., -1]
    obs = level_coverage(y, q)
    return ProbScore(
        name=name,
        pinball=float(pinball(y, q, levels).mean()),
        crps=float(crps(y, q, levels).mean()),
        coverage=coverage(y, lo, hi),
        nominal=float(levels[-1] - levels[0]),
        width=float(np.mean(hi - lo)),
        n=int(y.shape[0]),
        level_error=float(np.max(np.abs(obs - np.asarray(levels)))),
        observed=tuple(float(v) for v in obs),
    )


def level_coverage(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Share of outcomes at or below each quantile ``[Q]``: a calibrated level τ gives τ."""
    return (np.asarray(y)[..., None] <= q).reshape(-1, q.shape[-1]).mean(axis=0)


@dataclass(frozen=True)
class SeedSummary:
    """A score over several seeds: mean ± sample standard deviation, and the range."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return fmt_spread(self)


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean ± spread of one score over seeds (std is 0 for a single seed; NaNs are dropped)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return SeedSummary(math.nan, math.nan, math.nan, math.nan, 0)
    std = float(v.std(ddof=1)) if v.size > 1 and v.max() > v.min() else 0.0
    return SeedSummary(float(v.mean()), std, float(v.min()), float(v.max()), int(v.size))


def fmt_spread(s: SeedSummary, fmt: str = ".3g", scale: float = 1.0) -> str:
    """``mean ± std`` (or the bare value for one seed) in ``fmt``, times ``scale``."""
    if s.n == 0:
        return "-"
    m = format(s.mean * scale, fmt)
    return m if s.n == 1 else f"{m} ± {format(s.std * scale, fmt)}"
