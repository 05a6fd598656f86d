"""Conformal calibration of quantile forecasts: split offsets (served) and adaptive (evaluated).

Why: a network trained on pinball loss gives bands whose real coverage drifts from nominal
(75–90 % for a nominal 80 % on the data in docs/forecasting.md). Conformal calibration fixes
that with no model change, from the model's own errors on data it was not fitted to.

- **Split conformal, per quantile level** (``fit_split``): on a held-back calibration block,
  take each level's residuals ``r = y - q̂_τ`` (per horizon step) and shift q̂_τ by their
  empirical τ-quantile, with the finite-sample rank (``ceil((n+1)τ)``-th smallest residual for
  τ ≥ ½, ``floor((n+1)τ)``-th for τ < ½), so ``P(y ≤ q̂_τ + c_τ)`` is about τ for every level
  and the outer band covers about ``τ_last - τ_first`` — exactly so if the calibration and
  later errors are exchangeable. ``gekko train`` stores these offsets in meta.json
  (``to_meta``) and serving adds them to every quantile it outputs (``shift``, in place; the
  levels are sorted again afterwards so the paths stay monotone).
- **Adaptive conformal inference** (``adaptive``, Gibbs & Candès 2021): for time series whose
  error scale changes (volatility clusters, calmer test years) each level's working level τ_t
  is nudged after every realised outcome, ``τ_{t+1} = τ_t + γ·(τ - 1{y_t ≤ q_t})``, and the
  offset is the τ_t-quantile of a rolling window of recent residuals. An h-step forecast is
  only judged h bars later, so step h's feedback arrives with that delay. It needs the realised
  returns: ``adaptive`` runs in the evaluation (`gekko eval`) and ``OnlineAdaptive`` is the same
  one bar at a time, for a server that sees each return (not wired into infer yet: serving
  applies the static split offsets).

numpy only: serving (onnxruntime, no scipy) imports ``offsets_from_meta`` and ``shift``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHOD_SPLIT = "split"


@dataclass(frozen=True)
class Offsets:
    """Additive offsets ``[horizon, n_levels]`` for the quantile outputs of one model."""

    levels: tuple[float, ...]
    offsets: np.ndarray
    n: int  # calibration windows behind them
    method: str = METHOD_SPLIT
    source: str = ""  # which data they were fitted on, in words

    def to_meta(self) -> dict:
        """The ``conformal`` entry of meta.json."""
        return {
            "method": self.method,
            "levels": list(self.levels),
            "offsets": self.offsets.astype(float).tolist(),
            "n_calibration": self.n,
            "source": self.source,
        }


def _rank_quantile(sorted_r: np.ndarray, tau: float) -> np.ndarray:
    """The finite-sample conformal quantile of residuals sorted along axis 0 (see module doc)."""
    n = sorted_r.shape[0]
    k = math.ceil((n + 1) * tau) if tau >= 0.5 else math.floor((n + 1) * tau)
    return sorted_r[min(max(k, 1), n) - 1]


def fit_split(y: np.ndarray, q: np.ndarray, levels: Sequence[float], source: str = "") -> Offsets:
    """Split-conformal offsets from calibration outcomes ``y [n, H]`` and forecasts ``q [n, H, Q]``."""
    levels = tuple(float(t) for t in levels)
    if q.ndim != 3 or q.shape[:2] != y.shape or q.shape[2] != len(levels):
        raise ValueError(f"shapes y {y.shape}, q {q.shape} do not match {len(levels)} levels")
    if y.shape[0] < 1:
        raise ValueError("no calibration windows")
    r = np.sort(y.astype(np.float64)[..., None] - q.astype(np.float64), axis=0)
    off = np.stack([_rank_quantile(r[:, :, k], t) for k, t in enumerate(levels)], axis=-1)
    return Offsets(levels, off, int(y.shape[0]), METHOD_SPLIT, source)


def shift(q: np.ndarray, offsets: np.ndarray, sort: bool = True) -> np.ndarray:
    """Add ``offsets [H, Q]`` to quantiles ``q [batch, H, Q]`` IN PLACE and keep them monotone.

    ``sort=False`` skips the sort when ``keeps_order(offsets)``: monotone quantiles plus offsets
    that do not decrease with the level stay monotone (the sort is most of the cost).
    """
    q += offsets.astype(q.dtype, copy=False)
    if sort:
        q.sort(axis=-1)
    return q


def keeps_order(offsets: np.ndarray) -> bool:
    """Whether ``offsets [H, Q]`` never decrease with the level (then no sort is needed)."""
    return bool(np.all(np.diff(offsets, axis=-1) >= 0))


def calibrated(q: np.ndarray, off: Offsets) -> np.ndarray:
    """A shifted copy of ``q`` (evaluation; serving shifts its own output in place)."""
    return shift(np.array(q, dtype=np.float64), off.offsets)


def offsets_from_meta(meta: dict, horizon: int, levels: Sequence[float]) -> np.ndarray | None:
    """The served offsets ``[horizon, Q]`` float32 from meta.json, or None without any.

    ValueError when they do not fit the model (other levels, another shape, not finite): a
    model must not serve bands calibrated for something else.
    """
    c = meta.get("conformal")
    if not c:
        return None
    if not isinstance(c, dict) or c.get("method") != METHOD_SPLIT:
        raise ValueError(f"conformal: method must be {METHOD_SPLIT!r}, got {c!r:.80}")
    if [float(t) for t in c.get("levels", [])] != [float(t) for t in levels]:
        raise ValueError(f"conformal: levels {c.get('levels')} are not the model's {list(levels)}")
    try:
        off = np.asarray(c.get("offsets"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("conformal: offsets are not a numeric [horizon][levels] table") from None
    if off.shape != (horizon, len(levels)) or not np.isfinite(off).all():
        raise ValueError(
            f"conformal: offsets must be finite, shape ({horizon}, {len(levels)}), are {off.shape}"
        )
    return off.astype(np.float32)


def adaptive(
    y: np.ndarray,
    q: np.ndarray,
    levels: Sequence[float],
    cal_resid: np.ndarray,
    gamma: float = 0.005,
    window: int = 0,
) -> np.ndarray:
    """Adaptive conformal quantiles ``[m, H, Q]`` for one series' test windows in time order.

    ``cal_resid [n, H, Q]`` (``y - q̂`` on the calibration block) seeds the rolling residual
    window (``window`` rows, default n). At window t the offsets come from what was known then:
    step h's outcome of window s is used from window s + h + 1 on (it is the bar that closes
    window s + h + 1's input). ``gamma`` is the step of the level update.
    """
    m, H, Q = q.shape
    tau = np.asarray(levels, dtype=np.float64)
    n = cal_resid.shape[0]
    w = int(window) or n
    if n < 1 or cal_resid.shape[1:] != (H, Q):
        raise ValueError(f"calibration residuals {cal_resid.shape} do not match ({H}, {Q})")
    pool = np.array(cal_resid[-w:], dtype=np.float64)  # ring of the w latest residual rows
    w = pool.shape[0]
    head = 0
    level = np.broadcast_to(tau, (H, Q)).copy()
    out = np.empty((m, H, Q))
    resid = y.astype(np.float64)[..., None] - q
    steps = np.arange(H)
    for t in range(m):
        s = t - steps - 1  # the window whose step-h outcome has just become known
        ok = s >= 0
        if ok.any():
            sh, hh = s[ok], steps[ok]
            pool[head, hh] = resid[sh, hh]
            hit = y[sh, hh][:, None] <= out[sh, hh]  # was y at or below what we issued?
            level[hh] += gamma * (tau - hit)
            head = (head + 1) % w
        srt = np.sort(pool, axis=0)
        rank = np.where(level >= 0.5, np.ceil((w + 1) * level), np.floor((w + 1) * level))
        k = np.clip(rank.astype(np.int64), 1, w) - 1
        out[t] = q[t] + np.take_along_axis(srt, k[None], axis=0)[0]
    out.sort(axis=-1)
    return out


class OnlineAdaptive:
    """``adaptive`` one bar at a time, for a server that sees each return as its bar closes.

    At every bar close call ``observe(ret)`` with the bar's realised return (it judges step h of
    the forecast issued h + 1 bars ago), then ``calibrate(q)`` with that bar's raw quantiles
    ``[H, Q]``: exactly one of each per bar, in that order, so the delays line up. Gives what
    ``adaptive`` gives on the same sequence (a test checks it). State: a few [H, Q] arrays and
    the residual window; per instrument, one instance each.
    """

    def __init__(
        self,
        levels: Sequence[float],
        cal_resid: np.ndarray,
        gamma: float = 0.005,
        window: int = 0,
    ) -> None:
        n, H, Q = cal_resid.shape
        if n < 1 or len(levels) != Q:
            raise ValueError(f"calibration residuals {cal_resid.shape} for {len(levels)} levels")
        self.tau = np.asarray(levels, dtype=np.float64)
        self.gamma = float(gamma)
        self.pool = np.array(cal_resid[-(int(window) or n) :], dtype=np.float64)
        self.head = 0
        self.level = np.broadcast_to(self.tau, (H, Q)).copy()
        self.raw = np.zeros((H, H, Q))  # the last H raw forecasts, ring by issue number
        self.cal = np.zeros((H, H, Q))  # and what was served for them (before sorting)
        self.issued = 0

    def observe(self, ret: float) -> None:
        """The return of the bar that just closed."""
        H = self.level.shape[0]
        judged = min(H, self.issued)
        for h in range(judged):
            k = (self.issued - 1 - h) % H  # issued h + 1 bars ago
            self.pool[self.head, h] = ret - self.raw[k, h]
            self.level[h] += self.gamma * (self.tau - (ret <= self.cal[k, h]))
        if judged:
            self.head = (self.head + 1) % self.pool.shape[0]

    def calibrate(self, q: np.ndarray) -> np.ndarray:
        """Calibrated quantiles ``[H, Q]`` (sorted) for this bar's raw ones."""
        w = self.pool.shape[0]
        srt = np.sort(self.pool, axis=0)
        lv = self.level
        rank = np.where(lv >= 0.5, np.ceil((w + 1) * lv), np.floor((w + 1) * lv))
        k = np.clip(rank.astype(np.int64), 1, w) - 1
        out = q + np.take_along_axis(srt, k[None], axis=0)[0]
        slot = self.issued % self.level.shape[0]
        self.raw[slot] = q
        self.cal[slot] = out
        self.issued += 1
        return np.sort(out, axis=-1)
