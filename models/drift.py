"""Live error monitor: is the served model still better than the naive forecast?

Why: a model trained on yesterday's market can silently get worse than doing nothing. At every
bar close the infer process knows the return that actually happened and the one-step-ahead
forecast it published for that bar one bar earlier. It keeps the last ``window`` absolute errors
of the model and of the naive forecast (a random walk of the price: a return of 0, the same
baseline ``gekko eval`` reports against) and raises a drift event when

    MAE(model) > MAE(naive) * (1 + margin)

over a full window. The event fires once on entering drift and once on leaving it (hysteresis
through the full window), not on every bar. Everything is preallocated: two float64 rings and a
pending forecast per instrument.

``replay`` is the batch form for backtests: a numba kernel applies many bars' scores and
forecasts in order and stops at any bar where the state may change, so ``check`` (numpy, the
one rule) decides there exactly as it would have bar by bar.
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


class DriftMonitor:
    """Rolling one-step-ahead MAE of the model versus the naive forecast, across instruments."""

    def __init__(self, n_slots: int, window: int = 500, margin: float = 0.2) -> None:
        if window <= 0:
            raise ValueError("drift window must be > 0")
        if not (margin >= 0 and math.isfinite(margin)):
            raise ValueError("drift margin must be a finite number >= 0")
        self.window = window
        self.margin = margin
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
            valid, ret, fc_ok, fc, start, self._pending, self._model, self._naive, st, self.margin
        )
        self._i, self.samples = int(st[0]), int(st[1])
        return int(b)

    def maes(self) -> tuple[float, float]:
        """(model MAE, naive MAE) over the errors in the window (NaN when empty)."""
        n = self.samples
        if n == 0:
            return math.nan, math.nan
        return float(self._model[:n].mean()), float(self._naive[:n].mean())

    def check(self) -> DriftStatus | None:
        """A ``DriftStatus`` when the drift state changes (only on a full window), else None."""
        if self.samples < self.window:
            return None
        m, b = self.maes()
        now = m > b * (1.0 + self.margin)
        if now == self.drifting:
            return None
        self.drifting = now
        return DriftStatus(now, m, b, self.margin, self.samples)

    def reset(self) -> None:
        """Start over (a new model was swapped in: its errors are its own)."""
        self._i = 0
        self.samples = 0
        self._pending[:] = np.nan
        self.drifting = False


@njit(cache=True, nogil=True)
def _replay_kernel(
    valid, ret, fc_ok, fc, start, pending, model, naive, st, margin
):  # pragma: no cover - compiled
    """``replay``'s loop. The state may change where the in-order means (close to numpy's
    pairwise ones, not always equal) differ from the state, or nearly tie: stop there."""
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
        if samples >= window:
            m = 0.0
            n = 0.0
            for k in range(window):
                m += model[k]
                n += naive[k]
            lhs, rhs = m / window, n / window * (1.0 + margin)
            if (lhs > rhs) != drifting or abs(lhs - rhs) < 1e-9 * max(abs(lhs), abs(rhs)):
                break
        b += 1
    st[0], st[1] = i, samples
    return b
