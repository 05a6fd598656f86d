"""Exchange-side conditions that stop trading in one instrument until its market is sane again.

Two causes, tracked separately because they end differently:

- the **venue** says so (``ExchangeStatus``: a regulatory halt, the exchange's circuit breaker):
  only the venue lifts it, with an OPEN status (an instrument id of -1 means the whole venue);
- a **flash move**: the mid moved more than ``band`` (a fraction) against any sample of the last
  ``window_ns``. The instrument stays halted while prices keep jumping and resumes once the mid
  has stayed within the band of every sample of a whole window, for ``cooldown_ns`` more — the
  market has found a level.

A bounded price moves in steps, not in proportions (a binary at 0.03 moves 33 % on one tick;
odds are a ladder whose step grows with the odds), so a binary's move is measured in ticks
(``band_ticks``) and a betting selection's in ladder ticks (``band_ladder_ticks``: its position
on Betfair's ladder, ``engine.betting.ladder_position``), and must exceed the relative band too
(its band is the wider of the two: on a market ticking 0.001, ten ticks are noise at 0.50); the
others keep the relative band alone.

The guard is fed sampled mids (``on_prices``, from the risk process's periodic read of the
top-of-book table) rather than every tick, so its cost does not grow with the market data rate.
Per instrument it keeps a ring of the last ``samples`` (time, mid) pairs (the caller sizes it to
cover the window at its sampling rate) in numpy arrays and
scans them with a numba kernel: O(n·SAMPLES) per sample, allocation-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from engine.betting import ladder_positions_ticks, ladder_prices
from engine.enums import InstrumentKind
from engine.instruments import Instrument
from engine.messages import ExchangeStatus, ExchangeStatusKind, InstrumentHalted, InstrumentResumed

SAMPLES = 64

GuardOutput = InstrumentHalted | InstrumentResumed


#: how an instrument's move is measured (``MarketGuard._mode``)
RELATIVE, TICKS, LADDER = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def _ladder_pos(p: float, lad: np.ndarray) -> float:
    """``p`` (ticks) as a position on the ladder ``lad`` (ascending prices in ticks),
    interpolated between its prices, clamped to its ends (``engine.betting.ladder_position``)."""
    m = lad.shape[0]
    if p <= lad[0]:
        return 0.0
    if p >= lad[m - 1]:
        return float(m - 1)
    lo, hi = 0, m - 1  # lad[lo] < p < lad[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if lad[mid] <= p:
            lo = mid
        else:
            hi = mid
    return lo + (p - lad[lo]) / (lad[hi] - lad[lo])


@numba.njit(cache=True, nogil=True)
def _distance(p: float, q: float, mode: int, lad: np.ndarray) -> float:
    """How far ``p`` is from ``q``: relative, in ticks, or in ladder ticks (``mode``)."""
    if mode == TICKS:
        return abs(p - q)
    if mode == LADDER:
        return abs(_ladder_pos(p, lad) - _ladder_pos(q, lad))
    return abs(p - q) / q


@numba.njit(cache=True, nogil=True)
def _scan_and_push(
    px: np.ndarray,
    now: int,
    hist_px: np.ndarray,
    hist_ts: np.ndarray,
    head: np.ndarray,
    window_ns: int,
    bands: np.ndarray,
    moved: np.ndarray,
    ref: np.ndarray,
    mode: np.ndarray,
    ladders: np.ndarray,
    rel: float,
) -> None:
    """For each instrument with a price: ``moved[i]`` if ``px[i]`` is more than ``bands[i]``
    away (``_distance`` by ``mode[i]``; ``ladders[i]`` its ladder; a band of 0: never) from any
    sample younger than ``window_ns`` (``ref[i]`` = the farthest one) — a bounded one also more
    than ``rel`` away relatively (its band is the wider of the two) —; then push ``px[i]`` as
    the newest sample. Returns whether any moved."""
    n, k = hist_px.shape
    any_moved = False
    for i in range(n):
        p = px[i]
        moved[i] = False
        ref[i] = 0.0
        if not p > 0.0:
            continue
        worst = 0.0
        lad = ladders[i if ladders.shape[0] == n else 0]
        floor = rel if mode[i] != RELATIVE else 0.0  # a bounded price: the relative band too
        for s in range(k):
            q = hist_px[i, s]
            if q > 0.0 and now - hist_ts[i, s] <= window_ns:
                if floor > 0.0 and abs(p - q) / q <= floor:
                    continue
                dev = _distance(p, q, mode[i], lad)
                if dev > worst:
                    worst = dev
                    ref[i] = q
        moved[i] = bands[i] > 0.0 and worst > bands[i]
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
        instruments: Sequence[Instrument | None] = (),
        band_ticks: float = 0.0,
        band_ladder_ticks: float = 0.0,
    ) -> None:
        self.n = n
        self.band = float(band)
        # per instrument (``instruments`` by id): how a move is measured and its band
        self._mode = np.full(n, RELATIVE, dtype=np.int64)
        self.bands = np.full(n, self.band)
        betting = [i for i in instruments if i is not None and i.kind == InstrumentKind.BETTING]
        # a betting selection's ladder in its ticks; one dummy row when none (the kernel's shape)
        self._ladders = np.ones((n if betting else 1, len(ladder_prices()) if betting else 2))
        for ins in instruments:
            if ins is None or not 0 <= ins.instrument_id < n:
                continue
            i = ins.instrument_id
            if ins.kind == InstrumentKind.BINARY:
                self._mode[i], self.bands[i] = TICKS, float(band_ticks)
            elif ins.kind == InstrumentKind.BETTING:
                self._mode[i], self.bands[i] = LADDER, float(band_ladder_ticks)
                self._ladders[i] = ladder_positions_ticks(ins.tick_size)
        self.on = bool((self.bands > 0).any())  # a flash-move halt can happen at all
        self.bounded = self._mode != RELATIVE  # measured in (ladder) ticks: risk's price band too
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
        if not self.on:
            return []
        moved = _scan_and_push(
            mids,
            now_ns,
            self._px,
            self._ts,
            self._head,
            self.window_ns,
            self.bands,
            self._moved,
            self._ref,
            self._mode,
            self._ladders,
            self.band,
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
                    why = self._why(i, float(mids[i]))
                    out += self._update(i, now_ns, why, float(mids[i]), float(self._ref[i]))
            elif now_ns - self.calm_since[i] >= self.cooldown_ns:
                self.flash_halted[i] = False
                out += self._update(i, now_ns, "market sane again")
        return out

    def in_ticks(self, i: int) -> bool:
        """Whether instrument ``i`` moves in ticks (a binary; else ladder ticks or relative)."""
        return int(self._mode[i]) == TICKS

    def steps(self, i: int, p: float, q: float) -> float:
        """How far ``p`` is from ``q`` (ticks) for instrument ``i``: in ticks (a binary), ladder
        ticks (a betting selection) or relatively (the others)."""
        lad = self._ladders[i if self._ladders.shape[0] == self.n else 0]
        return float(_distance(p, q, int(self._mode[i]), lad))

    def _why(self, i: int, px: float) -> str:
        """The reason a flash-move halt gives, in the unit its band is in."""
        ref, mode, within = float(self._ref[i]), int(self._mode[i]), self.window_ns / 1e9
        if mode == RELATIVE:
            move = px / ref - 1.0
            return f"flash move {move:+.2%} within {within:g}s (band {self.band:.2%})"
        lad = self._ladders[i if self._ladders.shape[0] == self.n else 0]
        d = _distance(px, ref, mode, lad) * (1 if px >= ref else -1)
        unit = "ticks" if mode == TICKS else "ladder ticks"
        return f"flash move {d:+.1f} {unit} within {within:g}s (band {self.bands[i]:g} {unit})"

    def snapshot(self) -> dict[int, str]:
        """Halted instruments and why (for status displays and the persisted state)."""
        return {i: self.reason[i] for i in np.flatnonzero(self.halted).tolist()}
