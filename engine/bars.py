"""Bars from a stream of quotes and trades, for a fixed set of instruments, closed together.

Why here (trading side, not models/): bars are built from the engine's market-data messages,
and the forecasting side only ever sees the finished OHLCV numbers. Every instrument's bar closes
at the same moment so the infer process can run ONE batched model call per close:

- time bars (``bar_ns > 0``): aligned on multiples of ``bar_ns`` of the venue clock
  (``ts_event``); an event past the end of the current bar closes it (and, after a quiet spell,
  the empty bars in between, as flat bars, up to ``max_gap_bars``);
- tick bars (``every_n_ticks > 0``): a bar closes after every N market-data events, counted
  across all instruments.

Prices are the mid of each Quote (always present, unlike trades, and never a bid/ask bounce);
volume is the traded quantity of each Trade. An instrument with no quote in a bar gets a flat bar
at its last mid; one that never had a quote has no bar (``valid`` is False). State is a handful
of preallocated numpy arrays indexed by slot: nothing is allocated per event.

``feed`` is the batch form for backtests: a numba kernel walks arrays of events (time, slot,
mid, traded qty) with exactly the per-event rules above and records every bar it closes
(``ClosedBars``), so a replay of millions of events builds its bars without a Python call per
event. It shares the state above: per-event and batch calls can be mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


class BarAggregator:
    """OHLCV bars per slot; read ``open/high/low/close/volume/valid`` after each close."""

    def __init__(
        self, n_slots: int, bar_ns: int = 0, every_n_ticks: int = 0, max_gap_bars: int = 1000
    ) -> None:
        if (bar_ns > 0) == (every_n_ticks > 0):
            raise ValueError("BarAggregator needs exactly one of bar_ns > 0 or every_n_ticks > 0")
        self.n_slots = n_slots
        self.bar_ns = int(bar_ns)
        self.every_n_ticks = int(every_n_ticks)
        self.max_gap_bars = max(1, int(max_gap_bars))
        # the bar being built
        self._o = np.zeros(n_slots)
        self._h = np.zeros(n_slots)
        self._l = np.zeros(n_slots)
        self._v = np.zeros(n_slots)
        self._has = np.zeros(n_slots, dtype=bool)
        self._last = np.full(n_slots, np.nan)
        # the last closed bar
        self.open = np.zeros(n_slots)
        self.high = np.zeros(n_slots)
        self.low = np.zeros(n_slots)
        self.close = np.zeros(n_slots)
        self.volume = np.zeros(n_slots)
        self.valid = np.zeros(n_slots, dtype=bool)
        self.start_ns = -1  # of the bar being built (-1: no event yet)
        self.closed_start_ns = 0
        self.closed_end_ns = 0
        self._ticks = 0
        self.bars_closed = 0
        self._state = np.zeros(2, dtype=np.int64)  # feed's (start_ns, ticks) in and out

    # --- input -------------------------------------------------------------------------------
    def on_quote(self, slot: int, bid_px: int, ask_px: int) -> None:
        if bid_px > 0 and ask_px > 0:
            self.price(slot, (bid_px + ask_px) * 0.5)

    def price(self, slot: int, px: float) -> None:
        if not self._has[slot]:
            self._has[slot] = True
            self._o[slot] = self._h[slot] = self._l[slot] = px
        elif px > self._h[slot]:
            self._h[slot] = px
        elif px < self._l[slot]:
            self._l[slot] = px
        self._last[slot] = px

    def on_trade(self, slot: int, qty: int) -> None:
        if qty > 0:
            self._v[slot] += qty

    # --- closing -----------------------------------------------------------------------------
    def due(self, ts_ns: int) -> int:
        """Time bars: how many bars close before an event at ``ts_ns`` (call ``close_bar`` that often)."""
        if self.bar_ns <= 0:
            return 0
        if self.start_ns < 0:
            self.start_ns = ts_ns - ts_ns % self.bar_ns
            return 0
        n = (ts_ns - self.start_ns) // self.bar_ns
        if n > self.max_gap_bars:  # a long silence: skip ahead instead of inventing many bars
            self.start_ns = ts_ns - ts_ns % self.bar_ns - self.max_gap_bars * self.bar_ns
            n = self.max_gap_bars
        return max(0, int(n))

    def tick(self, ts_ns: int) -> bool:
        """Tick bars: count one event; True when the bar is complete (then call ``close_bar``)."""
        if self.every_n_ticks <= 0:
            return False
        if self.start_ns < 0:
            self.start_ns = ts_ns
        self._ticks += 1
        return self._ticks >= self.every_n_ticks

    def close_bar(self, end_ns: int | None = None) -> None:
        """Finish the current bar into ``open/high/low/close/volume/valid`` and start the next."""
        start = max(self.start_ns, 0)
        end = start + self.bar_ns if self.bar_ns > 0 else (end_ns if end_ns is not None else start)
        last = self._last
        has = self._has
        self.valid[:] = ~np.isnan(last)
        self.open[:] = np.where(has, self._o, last)
        self.high[:] = np.where(has, self._h, last)
        self.low[:] = np.where(has, self._l, last)
        self.close[:] = last
        self.volume[:] = self._v
        self.closed_start_ns, self.closed_end_ns = start, end
        self.bars_closed += 1
        has[:] = False
        self._v[:] = 0.0
        self._ticks = 0
        self.start_ns = end if self.bar_ns > 0 else -1

    #: ``BarAggregator.close(agg)`` still works for callers written before the method was renamed
    #: (on an instance, ``close`` is the array of close prices)
    close = close_bar  # type: ignore[assignment]

    # --- batches (backtests) -----------------------------------------------------------------
    def feed(
        self,
        ts: np.ndarray,
        slot: np.ndarray,
        mid: np.ndarray,
        qty: np.ndarray,
        out: ClosedBars,
        start: int = 0,
    ) -> int:
        """Events ``start..`` through the per-event rules, every closed bar recorded into ``out``
        (from row 0; ``out.n`` of them). Returns the index of the first event not fed: ``len(ts)``,
        or less when ``out`` is full (feed the rest after reading ``out``).

        ``slot`` is -1 for an instrument without a slot (it still counts and moves time), ``mid``
        NaN where an event gives no price (not a quote with both sides > 0), ``qty`` 0 where it
        trades nothing. A bar closed before event i (time bars) or after it (tick bars) has
        ``out.at`` = i.
        """
        st = self._state
        st[0], st[1] = self.start_ns, self._ticks
        i, n = _feed_kernel(
            ts, slot, mid, qty, start, self.bar_ns, self.every_n_ticks, self.max_gap_bars,
            self._o, self._h, self._l, self._v, self._has, self._last, st,
            out.at, out.start_ns, out.end_ns, out.open, out.high, out.low, out.close,
            out.volume, out.valid,
        )  # fmt: skip
        self.start_ns, self._ticks = int(st[0]), int(st[1])
        out.n = n
        if n:
            self.bars_closed += n
            self.open[:] = out.open[n - 1]
            self.high[:] = out.high[n - 1]
            self.low[:] = out.low[n - 1]
            self.close[:] = out.close[n - 1]
            self.volume[:] = out.volume[n - 1]
            self.valid[:] = out.valid[n - 1]
            self.closed_start_ns = int(out.start_ns[n - 1])
            self.closed_end_ns = int(out.end_ns[n - 1])
        return i


@dataclass
class ClosedBars:
    """Bars ``feed`` closed, one row each (``[capacity, n_slots]`` per column), ``n`` filled."""

    at: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    valid: np.ndarray
    n: int = 0

    @classmethod
    def alloc(cls, capacity: int, n_slots: int) -> ClosedBars:
        """Room for ``capacity`` closes (at least ``max_gap_bars + 2``: one event may close that
        many bars, and ``feed`` never splits an event)."""

        def f() -> np.ndarray:
            return np.zeros((capacity, n_slots))

        return cls(
            np.zeros(capacity, dtype=np.int64),
            np.zeros(capacity, dtype=np.int64),
            np.zeros(capacity, dtype=np.int64),
            f(), f(), f(), f(), f(),
            np.zeros((capacity, n_slots), dtype=np.bool_),
        )  # fmt: skip


@njit(cache=True, nogil=True)
def _close_into(
    k, start, end, o, h, lo, v, has, last, at_i, oat, ost, oend, oo, oh, ol, oc, ov, ova
):  # pragma: no cover - compiled
    """``close_bar`` into output row ``k``."""
    oat[k] = at_i
    ost[k] = start
    oend[k] = end
    for s in range(last.shape[0]):
        x = last[s]
        ova[k, s] = not math.isnan(x)
        if has[s]:
            oo[k, s] = o[s]
            oh[k, s] = h[s]
            ol[k, s] = lo[s]
        else:
            oo[k, s] = x
            oh[k, s] = x
            ol[k, s] = x
        oc[k, s] = x
        ov[k, s] = v[s]
        has[s] = False
        v[s] = 0.0


@njit(cache=True, nogil=True)
def _feed_kernel(
    ts,
    slot,
    mid,
    qty,
    i0,
    bar_ns,
    every_n,
    max_gap,
    o,
    h,
    lo,
    v,
    has,
    last,
    st,
    oat,
    ost,
    oend,
    oo,
    oh,
    ol,
    oc,
    ov,
    ova,
):  # pragma: no cover - compiled
    """``due`` / ``close_bar`` / ``on_quote`` / ``on_trade`` / ``tick`` per event (see feed)."""
    cap = oat.shape[0]
    n = 0
    start_ns, ticks = st[0], st[1]
    i = i0
    while i < ts.shape[0]:
        t = ts[i]
        if bar_ns > 0:
            if start_ns < 0:
                start_ns = t - t % bar_ns
                due = 0
            else:
                due = (t - start_ns) // bar_ns
                if due > max_gap:
                    due = max_gap
            if due < 0:
                due = 0
            if n + due > cap:
                break  # out is full: the caller reads it and feeds on from event i
            if due > 0 and (t - start_ns) // bar_ns > max_gap:  # a long silence: skip ahead
                start_ns = t - t % bar_ns - max_gap * bar_ns
            for _ in range(due):
                s0 = max(start_ns, 0)
                _close_into(
                    n,
                    s0,
                    s0 + bar_ns,
                    o,
                    h,
                    lo,
                    v,
                    has,
                    last,
                    i,
                    oat,
                    ost,
                    oend,
                    oo,
                    oh,
                    ol,
                    oc,
                    ov,
                    ova,
                )
                n += 1
                ticks = 0
                start_ns = s0 + bar_ns
        elif n + 1 > cap:
            break
        s = slot[i]
        if s >= 0:
            px = mid[i]
            if not math.isnan(px):
                if not has[s]:
                    has[s] = True
                    o[s] = px
                    h[s] = px
                    lo[s] = px
                elif px > h[s]:
                    h[s] = px
                elif px < lo[s]:
                    lo[s] = px
                last[s] = px
            q = qty[i]
            if q > 0:
                v[s] += q
        if every_n > 0:
            if start_ns < 0:
                start_ns = t
            ticks += 1
            if ticks >= every_n:
                s0 = max(start_ns, 0)
                _close_into(
                    n, s0, t, o, h, lo, v, has, last, i, oat, ost, oend, oo, oh, ol, oc, ov, ova
                )
                n += 1
                ticks = 0
                start_ns = -1
        i += 1
    st[0] = start_ns
    st[1] = ticks
    return i, n
