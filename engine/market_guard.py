"""Exchange-side conditions that stop trading in one instrument until its market is sane again.

Two causes, tracked separately because they end differently:

- the **venue** says so (``ExchangeStatus``: a regulatory halt, the exchange's circuit breaker):
  only the venue lifts it, with an OPEN status (an instrument id of -1 means the whole venue);
- a **flash move**: the mid moved more than ``band`` (a fraction) against any sample of the last
  ``window_ns``. The instrument stays halted while prices keep jumping and resumes once the mid
  has stayed within the band of every sample of a whole window, for ``cooldown_ns`` more — the
  market has found a level.

The guard is fed sampled mids (``on_prices``, from the risk process's periodic read of the
top-of-book table) rather than every tick, so its cost does not grow with the market data rate.
Per instrument it keeps a ring of the last ``samples`` (time, mid) pairs (the caller sizes it to
cover the window at its sampling rate) in numpy arrays and
scans them with a numba kernel: O(n·SAMPLES) per sample, allocation-free.
"""

from __future__ import annotations

import numba
import numpy as np

from engine.messages import ExchangeStatus, ExchangeStatusKind, InstrumentHalted, InstrumentResumed

SAMPLES = 64

GuardOutput = InstrumentHalted | InstrumentResumed


@numba.njit(cache=True, nogil=True)
def _scan_and_push(
    px: np.ndarray,
    now: int,
    hist_px: np.ndarray,
    hist_ts: np.ndarray,
    head: np.ndarray,
    window_ns: int,
    band: float,
    moved: np.ndarray,
    ref: np.ndarray,
) -> None:
    """For each instrument with a price: ``moved[i]`` if ``px[i]`` is more than ``band`` away
    (relative) from any sample younger than ``window_ns`` (``ref[i]`` = the farthest one); then
    push ``px[i]`` as the newest sample. Returns whether any moved."""
    n, k = hist_px.shape
    any_moved = False
    for i in range(n):
        p = px[i]
        moved[i] = False
        ref[i] = 0.0
        if not p > 0.0:
            continue
        worst = 0.0
        for s in range(k):
            q = hist_px[i, s]
            if q > 0.0 and now - hist_ts[i, s] <= window_ns:
                dev = abs(p - q) / q
                if dev > worst:
                    worst = dev
                    ref[i] = q
        moved[i] = worst > band
        any_moved |= moved[i]
        h = head[i]
        hist_px[i, h] = p
        hist_ts[i, h] = now
        head[i] = (h + 1) % k
    return any_moved


class MarketGuard:
    """Per-instrument halts from venue status and flash moves (see the module docstring)."""

    def __init__(
        self,
        n: int,
        band: float = 0.05,
        window_ns: int = 1_000_000_000,
        cooldown_ns: int = 5_000_000_000,
        samples: int = SAMPLES,
    ) -> None:
        self.n = n
        self.band = float(band)
        self.window_ns = int(window_ns)
        self.cooldown_ns = int(cooldown_ns)
        self.venue_halted = np.zeros(n, dtype=np.bool_)
        self.flash_halted = np.zeros(n, dtype=np.bool_)
        self.halted = np.zeros(n, dtype=np.bool_)  # either: what the gate checks per order
        self.reason = [""] * n
        self.calm_since = np.zeros(n, dtype=np.int64)
        k = max(2, int(samples))  # enough to cover the window at the caller's sampling rate
        self._px = np.zeros((n, k))
        self._ts = np.zeros((n, k), dtype=np.int64)
        self._head = np.zeros(n, dtype=np.int64)
        self._moved = np.zeros(n, dtype=np.bool_)
        self._ref = np.zeros(n)

    def _update(
        self, i: int, now_ns: int, why: str, px: float = 0.0, ref: float = 0.0
    ) -> list[GuardOutput]:
        was = bool(self.halted[i])
        now_halted = bool(self.venue_halted[i] or self.flash_halted[i])
        self.halted[i] = now_halted
        if now_halted and not was:
            self.reason[i] = why
            return [InstrumentHalted(i, why, now_ns, int(round(ref)), int(round(px)))]
        if was and not now_halted:
            self.reason[i] = ""
            return [InstrumentResumed(i, why, now_ns)]
        if now_halted:
            self.reason[i] = why if why else self.reason[i]
        return []

    def on_status(self, msg: ExchangeStatus, now_ns: int) -> list[GuardOutput]:
        """A venue status; unknown instruments and statuses are ignored (returns nothing)."""
        ids = range(self.n) if msg.instrument_id == -1 else (msg.instrument_id,)
        out: list[GuardOutput] = []
        if msg.status == ExchangeStatusKind.OPEN:
            halt = False
        elif msg.status in (ExchangeStatusKind.HALTED, ExchangeStatusKind.CIRCUIT_BREAKER):
            halt = True
        else:
            return out
        kind = ExchangeStatusKind(msg.status).name.lower().replace("_", " ")
        for i in ids:
            if 0 <= i < self.n:
                self.venue_halted[i] = halt
                why = f"venue {kind}" + (f": {msg.reason}" if msg.reason else "")
                if not halt and self.flash_halted[i]:
                    continue  # the venue reopened, but the flash-move halt still holds
                out += self._update(i, now_ns, why)
        return out

    def on_prices(self, mids: np.ndarray, now_ns: int) -> list[GuardOutput]:
        """One sample of mid prices (ticks, 0 where unknown), indexed by instrument id. A band
        of 0 turns flash-move halts off."""
        if not self.band > 0:
            return []
        moved = _scan_and_push(
            mids,
            now_ns,
            self._px,
            self._ts,
            self._head,
            self.window_ns,
            self.band,
            self._moved,
            self._ref,
        )
        if not moved and not self.flash_halted.any():
            return []  # the common case: nothing moved, nothing halted
        return self.decide(mids, now_ns)

    def decide(self, mids: np.ndarray, now_ns: int) -> list[GuardOutput]:
        """The halts the sample just pushed starts or ends (``on_prices``' second half, for a
        caller that pushed the sample itself: ``engine.replay_kernels.flat_refresh``)."""
        out: list[GuardOutput] = []
        for i in np.flatnonzero(self._moved | self.flash_halted):
            i = int(i)
            if self._moved[i]:
                self.calm_since[i] = now_ns
                if not self.flash_halted[i]:
                    self.flash_halted[i] = True
                    move = mids[i] / self._ref[i] - 1.0
                    why = f"flash move {move:+.2%} within {self.window_ns / 1e9:g}s (band {self.band:.2%})"
                    out += self._update(i, now_ns, why, float(mids[i]), float(self._ref[i]))
            elif now_ns - self.calm_since[i] >= self.cooldown_ns:
                self.flash_halted[i] = False
                out += self._update(i, now_ns, "market sane again")
        return out

    def snapshot(self) -> dict[int, str]:
        """Halted instruments and why (for status displays and the persisted state)."""
        return {i: self.reason[i] for i in np.flatnonzero(self.halted).tolist()}
