"""VWAP: slices that follow the market's volume profile over the window.

A VWAP order matches the volume-weighted average price by trading when the market trades: the
share of the parent filled by time ``t`` should equal the share of the window's volume that the
market usually trades by ``t``. That share comes from a *volume profile*:

- a curve given with the order: ``w0, w1, ..., w{n-1}`` (relative weights of ``n`` equal parts
  of the window; any non-negative numbers, not all zero);
- a built-in curve, ``profile = VwapProfile.FLAT / U_SHAPE / FRONT / BACK`` (spanning the window;
  ``U_SHAPE`` is the classic intraday shape, heavy at the open and the close);
- the volume recorded from the market's own trades, ``profile = VwapProfile.RECORDED``: the
  engine sums the traded quantity per time-of-day bucket (``AlgoEngine(volume_buckets=...,
  volume_period_ns=...)``, or seeded from a recorded trade file with ``AlgoEngine.load_volume``)
  and the window takes the share of each bucket it covers. A window whose hours saw no recorded
  volume is rejected rather than silently traded flat. The profile is frozen when the parent is
  accepted and written to exec's algo log with it, so a restarted exec resumes the same schedule.

Scheduling is TWAP's (``engine.algos.twap``: ``slices`` default 20, ``randomize``, catch-up,
end of window) with slice ``k`` aiming at ``floor(qty * F(t_{k+1}))``, where ``F`` is the
profile's cumulative share and ``t_{k+1}`` the end of the slice's interval.

Tolerance: with enough liquidity inside the parent's limit, the filled quantity just before
slice ``k`` is ``floor(qty * F(t_k))``; in general it lags that by at most what the book could
not supply, and the next slice catches up.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np

from engine.algos.base import AlgoParamError, Parent, num
from engine.algos.twap import _KEYS as _TWAP_KEYS
from engine.algos.twap import TwapAlgo
from engine.messages import AlgoKind

MAX_CURVE_POINTS = 256


class VwapProfile(IntEnum):
    """``algo_params["profile"]`` values."""

    RECORDED = 0
    FLAT = 1
    U_SHAPE = 2
    FRONT = 3
    BACK = 4


#: built-in curves, spanning the window
CURVES: dict[int, tuple[float, ...]] = {
    VwapProfile.FLAT: (1.0,),
    VwapProfile.U_SHAPE: (2.0, 1.4, 1.1, 0.9, 0.8, 0.8, 0.9, 1.1, 1.4, 2.0),
    VwapProfile.FRONT: (10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0),
    VwapProfile.BACK: (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
}

_KEYS = (_TWAP_KEYS | {"profile"}) | {f"w{i}" for i in range(MAX_CURVE_POINTS)}


class VolumeProfile:
    """A volume density, constant within each of ``len(weights)`` equal buckets of a period that
    repeats from ``origin_ns`` (a day from UTC midnight for recorded volume; the window itself
    for a curve). Cumulative shares are exact integrals of that step function."""

    def __init__(
        self, weights: Sequence[float] | np.ndarray, period_ns: int, origin_ns: int = 0
    ) -> None:
        w = np.array(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0:
            raise ValueError("a volume profile needs at least one weight")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("volume profile weights must be finite and >= 0")
        if period_ns < len(w):
            raise ValueError("period_ns must be at least one ns per bucket")
        self.weights = w
        self.period_ns = int(period_ns)
        self.origin_ns = int(origin_ns)
        self.bucket_ns = self.period_ns / len(w)
        self._cum: np.ndarray | None = None

    @classmethod
    def empty(cls, buckets: int, period_ns: int) -> VolumeProfile:
        return cls(np.zeros(buckets), period_ns)

    def copy(self) -> VolumeProfile:
        return VolumeProfile(self.weights.copy(), self.period_ns, self.origin_ns)

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    def add(self, ts_ns: int, qty: float) -> None:
        """Record ``qty`` traded at ``ts_ns``."""
        i = min(
            int(((ts_ns - self.origin_ns) % self.period_ns) // self.bucket_ns),
            len(self.weights) - 1,
        )
        self.weights[i] += qty
        self._cum = None

    def add_many(self, ts_ns: np.ndarray, qty: np.ndarray) -> None:
        """``add`` for each ``(ts_ns[j], qty[j])`` in order (the same buckets: numpy's floor
        division of an int by a float is Python's; ``np.add.at`` adds one by one, in order)."""
        i = ((ts_ns.astype(np.int64) - self.origin_ns) % self.period_ns) // self.bucket_ns
        np.add.at(self.weights, np.minimum(i.astype(np.int64), len(self.weights) - 1), qty)
        self._cum = None

    def integral(self, t_ns: int) -> float:
        """Volume from ``origin_ns`` to ``t_ns`` (the step function integrated)."""
        if self._cum is None:
            self._cum = np.concatenate(([0.0], np.cumsum(self.weights)))
        full, rem = divmod(t_ns - self.origin_ns, self.period_ns)
        n = len(self.weights)
        b = min(int(rem // self.bucket_ns), n - 1)
        part = (rem - b * self.bucket_ns) / self.bucket_ns
        return full * float(self._cum[n]) + float(self._cum[b]) + float(self.weights[b]) * part

    def fraction(self, start_ns: int, t_ns: int, end_ns: int) -> float:
        """Share of the ``[start, end]`` volume traded by ``t`` (0 before start, 1 after end)."""
        if t_ns <= start_ns:
            return 0.0
        if t_ns >= end_ns:
            return 1.0
        base = self.integral(start_ns)
        total = self.integral(end_ns) - base
        if total <= 0:
            return (t_ns - start_ns) / (end_ns - start_ns)
        return min(1.0, max(0.0, (self.integral(t_ns) - base) / total))


class VwapAlgo(TwapAlgo):
    kind = AlgoKind.VWAP
    name = "vwap"
    keys = frozenset(_KEYS)
    default_slices = 20

    def __init__(self, engine: Any, parent: Parent, now_ns: int) -> None:
        super().__init__(engine, parent, now_ns)
        params = parent.order.algo_params
        span = self.end_ns - self.start_ns
        curve = [k for k in params if k[0] == "w" and k[1:].isdigit()]
        if curve:
            if "profile" in params:
                raise AlgoParamError(
                    f"{self.name}: give a curve (w0, w1, ...) or profile, not both"
                )
            n = len(curve)
            missing = [f"w{i}" for i in range(n) if f"w{i}" not in params]
            if missing:
                raise AlgoParamError(
                    f"{self.name}: curve points must be w0..w{n - 1}; missing {missing[0]}"
                )
            weights = [num(params, f"w{i}", self.name, lo=0.0) for i in range(n)]
            if sum(weights) <= 0:
                raise AlgoParamError(f"{self.name}: the curve's weights are all zero")
            self.profile = VolumeProfile(weights, span, self.start_ns)
        else:
            kind = num(params, "profile", self.name, float(VwapProfile.FLAT))
            if kind != int(kind) or int(kind) not in set(VwapProfile):
                names = ", ".join(f"{p.value}={p.name}" for p in VwapProfile)
                raise AlgoParamError(f"{self.name}: unknown profile {kind} ({names})")
            if int(kind) == VwapProfile.RECORDED and parent.saved_profile is not None:
                # rebuilt after a restart: the profile it was accepted with, from the algo log
                weights, period_ns, origin_ns = parent.saved_profile
                try:
                    self.profile = VolumeProfile(weights, period_ns, origin_ns)
                except ValueError as exc:
                    raise AlgoParamError(
                        f"{self.name}: the logged profile is unusable: {exc}"
                    ) from None
            elif int(kind) == VwapProfile.RECORDED:
                rec = engine.recorded_volume(parent.instrument_id)
                if rec is None or rec.integral(self.end_ns) - rec.integral(self.start_ns) <= 0:
                    raise AlgoParamError(
                        f"{self.name}: no volume recorded for instrument {parent.instrument_id} "
                        "in the window's time of day; use a curve or a built-in profile"
                    )
                self.profile = rec.copy()  # the schedule must not move as new trades come in
                # ... nor after a restart: the algo log keeps it (``AlgoEngine.submit``)
                parent.saved_profile = (
                    self.profile.weights.tolist(),
                    self.profile.period_ns,
                    self.profile.origin_ns,
                )
            else:
                self.profile = VolumeProfile(CURVES[int(kind)], span, self.start_ns)
        step = span / self.slices
        #: the profile's cumulative share at the end of each slice's interval
        self.shares = [
            self.profile.fraction(self.start_ns, self.start_ns + round((k + 1) * step), self.end_ns)
            for k in range(self.slices)
        ]
        self.shares[-1] = 1.0

    def share(self, k: int) -> float:
        return self.shares[k]

    def base_target(self, k: int) -> int:
        return int(self.parent.qty * self.shares[k] + 1e-9)  # 0.3 * 100 is 29.999...96

    def expected_share(self, t_ns: int) -> float:
        """The profile's cumulative share at ``t_ns`` (what the tracking is measured against)."""
        return self.profile.fraction(self.start_ns, t_ns, self.end_ns)
