"""Recorded prices -> the sample rows the live returns sampler would have taken.

Why: VaR and correlation need ``min_history`` returns, and the risk process samples one return
per ``returns_interval_s``: started cold, it would judge orders without them for
``min_history`` intervals (half an hour at the defaults), after every start and every restart.
The record (PostgreSQL) and a trader's own price files already hold that history; this module
turns such price points into the rows ``engine.risk_stats.ReturnSampler.seed`` takes. It is
pure (arrays in, arrays out): where the points come from is ``procs.risk_history``'s business.

The live sampler reads, at each sample time, every instrument's latest mid (the last one at or
before that time, carried forward while nothing new arrives) and turns consecutive samples into
simple returns. Seeding samples the recorded points the same way on a grid of the same spacing,
``window + 1`` sample times ending at the newest recorded point, so the seeded window holds the
returns the live sampler would hold had it been running all along.
"""

from __future__ import annotations

import numpy as np


def sample_grid(end_ns: int, interval_ns: int, window: int) -> np.ndarray:
    """``window + 1`` sample times (int64 ns, oldest first) spaced ``interval_ns`` apart, the
    last one at ``end_ns``: ``window`` returns between them."""
    if interval_ns <= 0 or window < 1:
        raise ValueError("interval_ns must be > 0 and window >= 1")
    k = np.arange(window, -1, -1, dtype=np.int64)
    return np.int64(end_ns) - k * np.int64(interval_ns)


def last_at_or_before(ts: np.ndarray, px: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The price at each grid time: the last point with ``ts <= t`` (``ts`` ascending), carried
    forward; 0.0 before the first point. Non-positive or non-finite prices are skipped."""
    ts = np.asarray(ts, dtype=np.int64)
    px = np.asarray(px, dtype=np.float64)
    ok = np.isfinite(px) & (px > 0)
    ts, px = ts[ok], px[ok]
    out = np.zeros(len(grid))
    if ts.shape[0] == 0:
        return out
    if ts.shape[0] > 1 and np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, px = ts[order], px[order]
    idx = np.searchsorted(ts, grid, side="right") - 1
    has = idx >= 0
    out[has] = px[idx[has]]
    return out


def returns_available(prices: np.ndarray) -> np.ndarray:
    """Per column of a sample matrix (T × n, 0 = no price yet, carried forward), how many
    returns it yields: intervals with a price at both ends."""
    p = np.asarray(prices, dtype=np.float64)
    if p.shape[0] < 2:
        return np.zeros(p.shape[1] if p.ndim == 2 else 0, dtype=np.int64)
    return np.sum((p[1:] > 0) & (p[:-1] > 0), axis=0, dtype=np.int64)


def fill_newest_first(layers: list[np.ndarray]) -> np.ndarray:
    """Several sources of the same sample matrix, newest source first (0 = no price): each
    sample takes the newest source that has a price there. Why newest first: two runs may cover
    the same times (a simulated clock restarts at 0 in every run); the later one is what the
    market did most recently, and the older one only fills in before it began."""
    if not layers:
        raise ValueError("no layers")
    out = np.array(layers[0], dtype=np.float64, copy=True)
    for layer in layers[1:]:
        gap = out <= 0
        out[gap] = np.asarray(layer, dtype=np.float64)[gap]
    return out
