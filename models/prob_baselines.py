"""Baselines that give quantiles, so a model's bands have something honest to beat.

Every baseline sees only what was known at the forecast origin (the bar before window i's
first target, ``first_target[i] - 1``) and the training part of its series:

- **random walk**: no move expected; its spread is the climatology — the empirical quantiles
  of the training returns (the predictive distribution of a random walk with i.i.d. steps).
- **drift naive** (Hyndman's drift method on the log price): the mean return of the whole
  history up to the origin, flat over the horizon, with the training returns' demeaned
  quantiles around it.
- **EWMA Gaussian**: no move expected, N(0, σ²) with σ the RiskMetrics (λ = 0.94) volatility at
  the origin: the band the issue found the learned quantiles no better than.

statsforecast's models (AutoARIMA, AutoETS, Theta) are in models/stat_baselines.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.probabilistic import ewma_sigma, gaussian_quantiles

EWMA_LAMBDA = 0.94


def drift_point(ret: np.ndarray, first_target: np.ndarray, horizon: int) -> np.ndarray:
    """Drift naive point forecasts ``[m, H]``: the mean of ``ret[1 : first_target[i]]``.

    ``ret[0]`` is the series' first bar (no previous close: 0 by construction) and is left out.
    """
    c = np.concatenate([[0.0], np.cumsum(ret.astype(np.float64))])
    end = first_target.astype(np.int64)  # returns 1 .. end-1 are known at the origin
    n = np.maximum(end - 1, 1)
    mean = np.where(end > 1, (c[end] - c[np.minimum(end, 1)]) / n, 0.0)
    return np.repeat(mean[:, None], horizon, axis=1)


def quantile_baselines(
    ret: np.ndarray,
    first_target: np.ndarray,
    train_end: int,
    horizon: int,
    levels: Sequence[float],
    sigma: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Quantile forecasts ``[m, H, Q]`` of the baselines above for windows whose first targets
    are ``ret[first_target]``; ``train_end`` is the end (exclusive) of the training returns.
    ``sigma`` (the series' ``ewma_sigma(ret)``) may be passed in when several blocks share it.
    """
    m = first_target.size
    tau = np.asarray(levels, dtype=np.float64)
    train = ret[1:train_end].astype(np.float64)
    if train.size == 0:
        raise ValueError("no training returns for the quantile baselines")
    clim = np.quantile(train, tau)
    spread = np.quantile(train - train.mean(), tau)
    drift = drift_point(ret, first_target, 1)[:, 0]
    sig = ewma_sigma(ret, EWMA_LAMBDA) if sigma is None else sigma
    s0 = sig[np.maximum(first_target - 1, 0)]
    return {
        "random walk": np.broadcast_to(clim, (m, horizon, tau.size)).copy(),
        "drift naive": (drift[:, None, None] + spread[None, None, :]).repeat(horizon, axis=1),
        "EWMA Gaussian": gaussian_quantiles(np.zeros((m, horizon)), s0[:, None], tau),
    }
