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
"""

from __future__ import annotations

import numpy as np


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
