"""Conformal calibration of quantile forecasts: split offsets and adaptive conformal (ACI).

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
  one bar at a time, per instrument, for a server that sees each return: the infer process
  and its backtest batch path with ``[inference] conformal = "adaptive"`` (seeded with the
  calibration residuals meta.json keeps, ``residuals_from_meta``). docs/forecasting.md,
  "Probabilistic evaluation and calibration", has the figures.

numpy and numba only: serving (onnxruntime, no scipy) imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

METHOD_SPLIT = "split"
#: the adaptive step: Gibbs & Candès (2021) use 0.005; the evaluation's and serving's default
ACI_GAMMA = 0.005
#: calibration residual rows meta.json keeps for ACI (the latest ones)
MAX_RESIDUALS = 1000


@dataclass(frozen=True)
class Offsets:
    """Additive offsets ``[horizon, n_levels]`` for the quantile outputs of one model."""

    levels: tuple[float, ...]
    offsets: np.ndarray
    n: int  # calibration windows behind them
    method: str = METHOD_SPLIT
    source: str = ""  # which data they were fitted on, in words
    residuals: np.ndarray | None = None  # ``y - q̂`` [n, H, Q] in time order: seeds ACI

    def to_meta(self) -> dict:
        """The ``conformal`` entry of meta.json; with the last ``MAX_RESIDUALS`` calibration
        residuals (7 significant digits), what ``[inference] conformal = "adaptive"`` starts
        from (``residuals_from_meta``)."""
        out = {
            "method": self.method,
            "levels": list(self.levels),
            "offsets": self.offsets.astype(float).tolist(),
            "n_calibration": self.n,
            "source": self.source,
        }
        if self.residuals is not None:
            r = self.residuals[-MAX_RESIDUALS:]
            out["residuals"] = [[[float(f"{v:.7g}") for v in c] for c in row] for row in r]
        return out


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
    resid = y.astype(np.float64)[..., None] - q.astype(np.float64)
    r = np.sort(resid, axis=0)
    off = np.stack([_rank_quantile(r[:, :, k], t) for k, t in enumerate(levels)], axis=-1)
    return Offsets(levels, off, int(y.shape[0]), METHOD_SPLIT, source, resid)


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


def residuals_from_meta(meta: dict, horizon: int, levels: Sequence[float]) -> np.ndarray | None:
    """The stored calibration residuals ``[n, horizon, Q]`` (float64), or None when meta.json
    has none (a model trained before they were stored, or with ``--conformal none``).

    ValueError when they do not fit the model (shape, not finite), as ``offsets_from_meta``.
    """
    c = meta.get("conformal")
    if not isinstance(c, dict) or c.get("residuals") is None:
        return None
    try:
        r = np.asarray(c["residuals"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "conformal: residuals are not a numeric [n][horizon][levels] table"
        ) from None
    if r.ndim != 3 or r.shape[0] < 1 or r.shape[1:] != (horizon, len(levels)):
        raise ValueError(
            f"conformal: residuals must have shape (n, {horizon}, {len(levels)}), are {r.shape}"
        )
    if not np.isfinite(r).all():
        raise ValueError("conformal: residuals must be finite")
    return r


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
    """``adaptive`` one bar at a time, per instrument: what a server runs as outcomes arrive.

    Single series (``n_slots=1``, the evaluation's form): at every bar close call
    ``observe(ret)`` with the bar's realised return (it judges step h of the forecast issued
    h + 1 bars ago), then ``calibrate(q)`` with that bar's raw quantiles ``[H, Q]``; gives what
    ``adaptive`` gives on the same sequence (a test checks it).

    Serving (``procs/infer.py``, live and in backtests): one state per instrument slot, because
    ACI's guarantee is about the miss rate of the sequence it is fed and each instrument has its
    own error scale and regime (pooled, a calm instrument's over-coverage would hide a volatile
    one's misses). ``observe_bars`` takes one bar close of every slot, ``calibrate_rows`` that
    close's model outputs (in place), ``replay`` many closes at once; all three are the one
    kernel ``_aci_kernel``. Steps count the slot's valid bars: a close without a bar for the
    slot moves nothing, a forecast re-issued on the same window replaces the earlier one, and a
    slot with no forecast for a bar judges nothing for it. Every slot starts from the same
    calibration residuals, so its first offsets are the train-time ones.

    State per slot: the residual window (time order, ring) and its per-column sorted copy
    (kept sorted by one removal and one insertion per judged outcome: the same numbers a full
    sort gives), the working levels, the last H raw and served forecasts. Also, per slot, the
    step-1 band's hits over the outcomes judged: the served band and the counterfactual band of
    ``fixed`` offsets (``coverage``), so a user sees what the adaptation changes.
    """

    def __init__(
        self,
        levels: Sequence[float],
        cal_resid: np.ndarray,
        gamma: float = ACI_GAMMA,
        window: int = 0,
        n_slots: int = 1,
        fixed: np.ndarray | None = None,
    ) -> None:
        cal_resid = np.asarray(cal_resid, dtype=np.float64)
        if cal_resid.ndim != 3 or cal_resid.shape[0] < 1 or cal_resid.shape[2] != len(levels):
            raise ValueError(f"calibration residuals {cal_resid.shape} for {len(levels)} levels")
        if not np.isfinite(cal_resid).all():
            raise ValueError("calibration residuals must be finite")
        if not (math.isfinite(gamma) and 0 < gamma < 1):
            raise ValueError(f"gamma must be within (0, 1), not {gamma!r}")
        _, H, Q = cal_resid.shape
        S = int(n_slots)
        seed = cal_resid[-(int(window) or cal_resid.shape[0]) :]
        w = seed.shape[0]
        self.tau = np.asarray(levels, dtype=np.float64)
        self.gamma = float(gamma)
        self.pool = np.broadcast_to(seed, (S, w, H, Q)).copy()
        srt = np.sort(seed, axis=0).transpose(1, 2, 0)  # [H, Q, w]: each column sorted
        self.srt = np.broadcast_to(srt, (S, H, Q, w)).copy()
        self.head = np.zeros(S, dtype=np.int64)
        self.level = np.broadcast_to(self.tau, (S, H, Q)).copy()
        self.raw = np.zeros((S, H, H, Q))  # the last H raw forecasts, ring by issue number
        self.cal = np.zeros((S, H, H, Q))  # and what was served for them (before sorting)
        self.issued_at = np.full((S, H), -1, dtype=np.int64)  # the bar count each was issued at
        self.count = np.zeros(S, dtype=np.int64)  # valid bars seen per slot
        self.fixed = np.zeros((H, Q)) if fixed is None else np.asarray(fixed, dtype=np.float64)
        self.hits = np.zeros((S, 3), dtype=np.int64)  # step-1 outcomes judged, in served, in fixed

    @property
    def n_slots(self) -> int:
        return int(self.count.shape[0])

    def observe(self, ret: float) -> None:
        """The return of the bar that just closed (single series)."""
        self.observe_bars(np.ones(1, dtype=np.bool_), np.array([ret], dtype=np.float64))

    def calibrate(self, q: np.ndarray) -> np.ndarray:
        """Calibrated quantiles ``[H, Q]`` (sorted) for this bar's raw ones (single series)."""
        out = np.array(q, dtype=np.float64)[None]
        self.calibrate_rows(np.zeros(1, dtype=np.int64), out)
        return out[0]

    def observe_bars(self, valid: np.ndarray, ret: np.ndarray) -> None:
        """One bar close: which slots closed a bar (``[S]``) and their returns (``[S]``)."""
        none = np.zeros(0, dtype=np.int64)
        q = np.zeros((0, *self.level.shape[1:]))
        self._kernel(valid[None], ret[None], none, none, q, np.zeros(0, dtype=np.bool_))

    def calibrate_rows(
        self, slots: np.ndarray, q: np.ndarray, ok: np.ndarray | None = None
    ) -> np.ndarray:
        """This close's raw quantiles ``q [k, H, Q]`` of ``slots [k]`` calibrated IN PLACE
        (sorted along the levels); rows not ``ok`` (default: not finite) are left alone."""
        S = self.n_slots
        ok = np.isfinite(q).all(axis=(1, 2)) if ok is None else ok
        self._kernel(
            np.zeros((1, S), dtype=np.bool_),
            np.zeros((1, S)),
            np.zeros(len(slots), dtype=np.int64),
            np.asarray(slots, dtype=np.int64),
            q,
            np.asarray(ok, dtype=np.bool_),
        )
        return q

    def replay(
        self,
        valid: np.ndarray,
        ret: np.ndarray,
        rb: np.ndarray,
        rs: np.ndarray,
        q: np.ndarray,
        ok: np.ndarray,
    ) -> np.ndarray:
        """Many closes in order (``valid``/``ret`` ``[B, S]``), each observed and then its
        forecast rows calibrated: row i is close ``rb[i]`` (ascending), slot ``rs[i]``; ``q``
        ``[k, H, Q]`` in place, rows not ``ok`` left alone. What close-by-close calls give."""
        self._kernel(
            valid,
            ret,
            np.asarray(rb, dtype=np.int64),
            np.asarray(rs, dtype=np.int64),
            q,
            np.asarray(ok, dtype=np.bool_),
        )
        return q

    def _kernel(self, valid, ret, rb, rs, q, ok) -> None:  # type: ignore[no-untyped-def]
        _aci_kernel(
            np.ascontiguousarray(valid, dtype=np.bool_),
            np.ascontiguousarray(ret, dtype=np.float64),
            rb,
            rs,
            q,
            ok,
            self.tau,
            self.gamma,
            self.fixed,
            self.pool,
            self.srt,
            self.head,
            self.level,
            self.raw,
            self.cal,
            self.issued_at,
            self.count,
            self.hits,
        )

    def offsets(self, slot: int = 0) -> np.ndarray:
        """The offsets ``[H, Q]`` the slot's next forecast gets (before the sort)."""
        w = self.pool.shape[1]
        lv = self.level[slot]
        rank = np.where(lv >= 0.5, np.ceil((w + 1) * lv), np.floor((w + 1) * lv))
        k = np.clip(rank.astype(np.int64), 1, w) - 1
        return np.take_along_axis(self.srt[slot], k[..., None], axis=-1)[..., 0]

    def coverage(self) -> tuple[float, float, int]:
        """Step-1 coverage of the served band and of the fixed offsets' band over every
        outcome judged so far, all slots (NaN, NaN, 0 before the first)."""
        n, a, f = (int(v) for v in self.hits.sum(axis=0))
        return (a / n, f / n, n) if n else (math.nan, math.nan, 0)


@njit(cache=True, nogil=True)
def _resort(col, old, new):  # pragma: no cover - compiled
    """Replace one ``old`` value of the sorted ``col`` by ``new``, keeping it sorted."""
    n = col.shape[0]
    i = np.searchsorted(col, old)  # col[i] == old: it was put there by this same code
    if new >= old:
        j = i
        while j + 1 < n and col[j + 1] < new:
            col[j] = col[j + 1]
            j += 1
    else:
        j = i
        while j > 0 and col[j - 1] > new:
            col[j] = col[j - 1]
            j -= 1
    col[j] = new


@njit(cache=True, nogil=True)
def _aci_kernel(
    valid, ret, rb, rs, q, ok, tau, gamma, fixed, pool, srt, head, level, raw, cal, issued_at,
    count, hits,
):  # pragma: no cover - compiled  # fmt: skip
    """``OnlineAdaptive``'s one implementation: per close b, observe every valid slot's return
    (judge step h of the forecast issued h + 1 of its bars ago), then calibrate close b's rows."""
    H, Q = level.shape[1], level.shape[2]
    w = pool.shape[1]
    j = 0
    for b in range(valid.shape[0]):
        for s in range(valid.shape[1]):
            if not valid[b, s]:
                continue
            count[s] += 1
            r = ret[b, s]
            if not math.isfinite(r):
                continue
            judged = False
            for h in range(H):
                n_issue = count[s] - 1 - h
                if n_issue < 0:
                    break
                k = n_issue % H
                if issued_at[s, k] != n_issue:
                    continue
                judged = True
                for c in range(Q):
                    new = r - raw[s, k, h, c]
                    old = pool[s, head[s], h, c]
                    pool[s, head[s], h, c] = new
                    _resort(srt[s, h, c], old, new)
                    level[s, h, c] += gamma * (tau[c] - (1.0 if r <= cal[s, k, h, c] else 0.0))
                if h == 0:  # the step-1 band: served (outer levels, sorted) and fixed offsets'
                    lo, hi = cal[s, k, 0, 0], cal[s, k, 0, 0]
                    flo = raw[s, k, 0, 0] + fixed[0, 0]
                    fhi = flo
                    for c in range(1, Q):
                        lo, hi = min(lo, cal[s, k, 0, c]), max(hi, cal[s, k, 0, c])
                        v = raw[s, k, 0, c] + fixed[0, c]
                        flo, fhi = min(flo, v), max(fhi, v)
                    hits[s, 0] += 1
                    hits[s, 1] += 1 if lo <= r <= hi else 0
                    hits[s, 2] += 1 if flo <= r <= fhi else 0
            if judged:
                head[s] = (head[s] + 1) % w
        while j < rb.shape[0] and rb[j] == b:
            s = rs[j]
            if ok[j]:
                k = count[s] % H
                issued_at[s, k] = count[s]
                for h in range(H):
                    for c in range(Q):
                        lv = level[s, h, c]
                        rank = math.ceil((w + 1) * lv) if lv >= 0.5 else math.floor((w + 1) * lv)
                        i = min(max(rank, 1), w) - 1
                        v = np.float64(q[j, h, c])
                        raw[s, k, h, c] = v
                        cal[s, k, h, c] = v + srt[s, h, c, i]
                    row = np.sort(cal[s, k, h, :])
                    for c in range(Q):
                        q[j, h, c] = row[c]
            j += 1
