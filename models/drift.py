"""Live output monitors: is the served model still as good as it was, are its bands calibrated?

Why: a model trained on yesterday's market can silently get worse than doing nothing. At every
bar close the infer process knows the return that actually happened and the one-step-ahead
forecast (and band) it published for that bar one bar earlier.

``DriftMonitor`` keeps the last ``window`` absolute errors of the model and of the naive forecast
(a random walk of the price: a return of 0, the same baseline ``gekko eval`` reports against).
A ratio rule (MAE(model) > MAE(naive) x 1.2) almost never fires on returns: their errors are
mostly noise both forecasts share, so a model that lost all its skill still scores within a few
percent of naive. The test is paired instead (as Diebold–Mariano's): per bar
``d = |e_model| - k |e_naive|`` with ``k = (1 + margin) x reference`` (``reference``: the model's
own MAE ratio to naive in training, from meta.json; 1 without it), and drift when over a full
window ``z = mean(d) / (sd(d) / sqrt(n)) > z_crit``: the model is significantly worse than it was
trained to be. The shared noise cancels in ``d``, so the test has power where the ratio has none.

``CoverageMonitor`` keeps whether each return fell inside the published band (the outermost
quantiles, step 1) and flags a band whose coverage is off its nominal level by more than
``tolerance`` AND by more than ``z_crit`` binomial standard errors.

Each fires once on entering its state and once on leaving it, not on every bar. Everything is
preallocated. ``replay`` is the batch form for backtests: a numba kernel applies many bars'
scores and forecasts in order and stops at any bar where the state may change, so ``check``
decides there exactly as bar by bar would have; both call the same numba rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class DriftStatus:
    """A change of drift state, with the figures that decided it."""

    drifting: bool
    model_mae: float
    naive_mae: float
    margin: float
    samples: int
    z: float = 0.0  # the paired statistic
    z_crit: float = 0.0
    reference: float = 1.0


def reference_ratio(meta: dict) -> float:
    """The model's MAE over the random walk's in its training evaluation (meta.json
    ``metrics.table``); 1.0 when meta does not have both (older or untested models)."""
    rows = (meta.get("metrics") or {}).get("table") or []
    by = {r.get("name"): r.get("mae") for r in rows if isinstance(r, dict)}
    m, n = by.get(meta.get("architecture")), by.get("random walk")
    try:
        ratio = float(m) / float(n)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return 1.0
    return ratio if math.isfinite(ratio) and 0.1 < ratio < 10 else 1.0


class DriftMonitor:
    """Rolling one-step-ahead MAE of the model versus the naive forecast, across instruments."""

    def __init__(
        self,
        n_slots: int,
        window: int = 500,
        margin: float = 0.0,
        z_crit: float = 3.0,
        reference: float = 1.0,
    ) -> None:
        if window <= 1:
            raise ValueError("drift window must be > 1")
        if not (margin >= 0 and math.isfinite(margin)):
            raise ValueError("drift margin must be a finite number >= 0")
        if not (z_crit > 0 and math.isfinite(z_crit)):
            raise ValueError("drift z must be a finite number > 0")
        self.window = window
        self.margin = margin
        self.z_crit = z_crit
        self.reference = reference
        self._model = np.zeros(window, dtype=np.float64)
        self._naive = np.zeros(window, dtype=np.float64)
        self._i = 0
        self.samples = 0  # errors in the window (<= window)
        self._pending = np.full(n_slots, np.nan, dtype=np.float64)
        self.drifting = False

    def on_forecast(self, slot: int, next_ret: float) -> None:
        """The model's forecast of the slot's next bar return (step 1 of the horizon)."""
        self._pending[slot] = next_ret

    def on_bar(self, slot: int, realized_ret: float) -> None:
        """A bar closed with return ``realized_ret``: score the forecast made for it, if any."""
        f = self._pending[slot]
        if math.isnan(f) or not math.isfinite(realized_ret):
            return
        self._pending[slot] = np.nan
        i = self._i
        self._model[i] = abs(realized_ret - f)
        self._naive[i] = abs(realized_ret)
        self._i = i + 1 if i + 1 < self.window else 0
        if self.samples < self.window:
            self.samples += 1

    def on_forecasts(self, slots: np.ndarray, next_rets: np.ndarray) -> None:
        """``on_forecast`` for many slots at once."""
        self._pending[slots] = next_rets

    def on_bars(self, slots: np.ndarray, realized: np.ndarray) -> None:
        """``on_bar`` for many slots at once (the infer process closes them together)."""
        f = self._pending[slots]
        use = ~np.isnan(f) & np.isfinite(realized)
        m = int(np.count_nonzero(use))
        if m == 0:
            return
        r = realized[use].astype(np.float64)
        self._pending[slots[use]] = np.nan
        if m > self.window:  # more scores than the window holds: keep the last ones
            r, f = r[-self.window :], f[use][-self.window :]
            m = self.window
        else:
            f = f[use]
        at = (self._i + np.arange(m)) % self.window
        self._model[at] = np.abs(r - f)
        self._naive[at] = np.abs(r)
        self._i = int((self._i + m) % self.window)
        self.samples = min(self.window, self.samples + m)

    def replay(
        self, valid: np.ndarray, ret: np.ndarray, fc_ok: np.ndarray, fc: np.ndarray, start: int = 0
    ) -> int:
        """Bars ``start..`` of a batch (``[B, n_slots]``: which slots closed a bar and their
        return; which were forecast and the step-1 forecast), as ``on_bars`` then
        ``on_forecasts`` per bar would. Returns the first bar after which the drift state may
        change (call ``check``, then replay from the next bar), or B when none may."""
        st = np.array([self._i, self.samples, int(self.drifting)], dtype=np.int64)
        b = _replay_kernel(
            valid,
            ret,
            fc_ok,
            fc,
            start,
            self._pending,
            self._model,
            self._naive,
            st,
            self._k(),
            self.z_crit,
        )
        self._i, self.samples = int(st[0]), int(st[1])
        return int(b)

    def maes(self) -> tuple[float, float]:
        """(model MAE, naive MAE) over the errors in the window (NaN when empty)."""
        n = self.samples
        if n == 0:
            return math.nan, math.nan
        return float(self._model[:n].mean()), float(self._naive[:n].mean())

    def _k(self) -> float:
        return (1.0 + self.margin) * self.reference

    def z(self) -> float:
        """The paired statistic over the window (NaN under two samples)."""
        n = self.samples
        return float(_paired_z(self._model, self._naive, n, self._k())) if n > 1 else math.nan

    def check(self) -> DriftStatus | None:
        """A ``DriftStatus`` when the drift state changes (only on a full window), else None."""
        if self.samples < self.window:
            return None
        z = self.z()
        now = z > self.z_crit
        if now == self.drifting:
            return None
        self.drifting = now
        m, b = self.maes()
        return DriftStatus(now, m, b, self.margin, self.samples, z, self.z_crit, self.reference)

    def set_reference(self, reference: float) -> None:
        """A new model's training ratio to naive (``reference_ratio``); starts over."""
        self.reference = reference
        self.reset()

    def reset(self) -> None:
        """Start over (a new model was swapped in: its errors are its own)."""
        self._i = 0
        self.samples = 0
        self._pending[:] = np.nan
        self.drifting = False


@njit(cache=True, nogil=True)
def _paired_z(model, naive, n, k):  # pragma: no cover - compiled
    """z of ``d = model - k naive`` over the first ``n`` entries (two passes: no cancellation);
    +-inf when every d is equal and not 0 (a constant forecast on a still market)."""
    s = 0.0
    for j in range(n):
        s += model[j] - k * naive[j]
    mean = s / n
    ss = 0.0
    for j in range(n):
        e = model[j] - k * naive[j] - mean
        ss += e * e
    sd = math.sqrt(ss / (n - 1))
    if sd <= 1e-12 * max(abs(mean), 1e-300):
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / (sd / math.sqrt(n))


@njit(cache=True, nogil=True)
def _replay_kernel(
    valid, ret, fc_ok, fc, start, pending, model, naive, st, k, z_crit
):  # pragma: no cover - compiled
    """``replay``'s loop; stops where the rule (``_paired_z``, as ``check``) changes the state."""
    window = model.shape[0]
    i, samples, drifting = st[0], st[1], st[2] != 0
    b = start
    while b < valid.shape[0]:
        for s in range(valid.shape[1]):
            if valid[b, s]:
                f = pending[s]
                r = np.float64(ret[b, s])
                if not math.isnan(f) and math.isfinite(r):
                    pending[s] = np.nan
                    model[i] = abs(r - f)
                    naive[i] = abs(r)
                    i = i + 1 if i + 1 < window else 0
                    if samples < window:
                        samples += 1
        for s in range(valid.shape[1]):
            if fc_ok[b, s]:
                pending[s] = fc[b, s]
        if samples >= window and (_paired_z(model, naive, window, k) > z_crit) != drifting:
            break
        b += 1
    st[0], st[1] = i, samples
    return b


@dataclass(frozen=True)
class CoverageStatus:
    """A change of the band's calibration state, with the figures that decided it."""

    miscalibrated: bool
    coverage: float
    nominal: float
    tolerance: float
    samples: int
    z: float
    z_crit: float


class CoverageMonitor:
    """Rolling share of returns inside the published band (outermost quantiles, step 1)."""

    def __init__(
        self, n_slots: int, window: int = 500, tolerance: float = 0.05, z_crit: float = 3.0
    ) -> None:
        if window <= 1:
            raise ValueError("coverage window must be > 1")
        if not (0 <= tolerance < 1 and z_crit > 0 and math.isfinite(z_crit)):
            raise ValueError("coverage tolerance must be in [0, 1), z > 0")
        self.window = window
        self.tolerance = tolerance
        self.z_crit = z_crit
        self.nominal = math.nan  # set_levels: NaN = no band, nothing monitored
        self._hits = np.zeros(window, dtype=np.uint8)
        self._lo = np.full(n_slots, np.nan)
        self._hi = np.full(n_slots, np.nan)
        self._i = 0
        self.samples = 0
        self.miscalibrated = False

    def set_levels(self, levels: tuple[float, ...] | list[float]) -> None:
        """The served model's quantile levels (its band is the outermost two); starts over."""
        self.nominal = float(levels[-1] - levels[0]) if len(levels) >= 2 else math.nan
        self.reset()

    def on_forecasts(self, slots: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Each slot's band for its next bar's return."""
        self._lo[slots] = lo
        self._hi[slots] = hi

    def on_bars(self, slots: np.ndarray, realized: np.ndarray) -> None:
        """Bars closed: score the band each slot had pending (in slot order)."""
        lo = self._lo[slots]
        use = ~np.isnan(lo) & np.isfinite(realized)
        if not use.any():
            return
        s, r = slots[use], realized[use].astype(np.float64)
        hit = ((r >= lo[use]) & (r <= self._hi[s])).astype(np.uint8)
        self._lo[s] = np.nan
        self._hi[s] = np.nan
        m = len(hit)
        if m > self.window:
            hit, m = hit[-self.window :], self.window
        at = (self._i + np.arange(m)) % self.window
        self._hits[at] = hit
        self._i = int((self._i + m) % self.window)
        self.samples = min(self.window, self.samples + m)

    def coverage(self) -> float:
        n = self.samples
        return float(self._hits[:n].sum()) / n if n else math.nan

    def check(self) -> CoverageStatus | None:
        """A ``CoverageStatus`` when the calibration state changes (full window only)."""
        if self.samples < self.window or math.isnan(self.nominal):
            return None
        off, z = _coverage_off(self._hits, self.window, self.nominal, self.tolerance, self.z_crit)
        if off == self.miscalibrated:
            return None
        self.miscalibrated = off
        return CoverageStatus(
            off,
            self.coverage(),
            self.nominal,
            self.tolerance,
            self.samples,
            float(z),
            self.z_crit,
        )

    def replay(
        self,
        valid: np.ndarray,
        ret: np.ndarray,
        fc_ok: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        start: int = 0,
    ) -> int:
        """``DriftMonitor.replay`` for the band: bars ``start..`` of ``[B, n_slots]`` arrays;
        returns the first bar after which the state may change, or B."""
        if math.isnan(self.nominal):
            return valid.shape[0]  # nothing monitored; pending bands do not matter
        st = np.array([self._i, self.samples, int(self.miscalibrated)], dtype=np.int64)
        b = _coverage_kernel(
            valid, ret, fc_ok, lo, hi, start, self._lo, self._hi, self._hits, st,
            self.nominal, self.tolerance, self.z_crit,
        )  # fmt: skip
        self._i, self.samples = int(st[0]), int(st[1])
        return int(b)

    def reset(self) -> None:
        self._i = 0
        self.samples = 0
        self._lo[:] = np.nan
        self._hi[:] = np.nan
        self.miscalibrated = False


@njit(cache=True, nogil=True)
def _coverage_off(hits, n, nominal, tolerance, z_crit):  # pragma: no cover - compiled
    """(miscalibrated, z) of ``n`` hit flags against ``nominal``: off by more than the
    tolerance and by more than ``z_crit`` binomial standard errors."""
    h = 0
    for j in range(n):
        h += hits[j]
    cov = h / n
    se = math.sqrt(max(nominal * (1.0 - nominal), 1e-12) / n)
    z = (cov - nominal) / se
    return abs(cov - nominal) > tolerance and abs(z) > z_crit, z


@njit(cache=True, nogil=True)
def _coverage_kernel(
    valid, ret, fc_ok, lo, hi, start, p_lo, p_hi, hits, st, nominal, tolerance, z_crit
):  # pragma: no cover - compiled
    """``CoverageMonitor.replay``'s loop (``on_bars`` then ``on_forecasts`` per bar)."""
    window = hits.shape[0]
    i, samples, off = st[0], st[1], st[2] != 0
    b = start
    while b < valid.shape[0]:
        for s in range(valid.shape[1]):
            if valid[b, s]:
                r = np.float64(ret[b, s])
                if not math.isnan(p_lo[s]) and math.isfinite(r):
                    hits[i] = 1 if p_lo[s] <= r <= p_hi[s] else 0
                    p_lo[s] = np.nan
                    p_hi[s] = np.nan
                    i = i + 1 if i + 1 < window else 0
                    if samples < window:
                        samples += 1
        for s in range(valid.shape[1]):
            if fc_ok[b, s]:
                p_lo[s] = lo[b, s]
                p_hi[s] = hi[b, s]
        if samples >= window and _coverage_off(hits, window, nominal, tolerance, z_crit)[0] != off:
            break
        b += 1
    st[0], st[1] = i, samples
    return b
