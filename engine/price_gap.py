"""Price-gap protection for market orders: the recent mids per instrument, by receive time.

A MARKET order is refused when the mid moved more than the band (``[exec] price_gap_bps``)
between the tick that caused it (its ``ts_origin``; or its ``px`` when the strategy set one as
the price it saw) and now: the decision was made on a market that is gone. A bounded price
moves in steps, not in a proportion (one tick of a binary at 0.03 is 33 %; odds are a ladder), so
a binary's move is measured in ticks (``price_gap_ticks``) and a betting selection's in ladder
ticks (``price_gap_ladder_ticks``: 2.00 -> 1.98 is 2, 3.00 -> 2.95 is 1), and refused only past
the relative band as well (on a market ticking 0.001 a few ticks are noise). Kept apart from
``engine.exec_engine`` because it is one small job with its own state (a bounded history per
instrument, looked up by time).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

from engine.betting import ladder_position
from engine.enums import InstrumentKind
from engine.instruments import Instrument
from engine.messages import NewOrder, Quote

#: mids kept per instrument for the price-gap check (looked up by an order's ts_origin)
MID_HISTORY = 256


class PriceGapGuard:
    """The last ``MID_HISTORY`` two-sided mids of each instrument and the check against them."""

    def __init__(self) -> None:
        self._mids: dict[int, tuple[deque[int], deque[int]]] = {}  # iid -> (ts, mid)

    def note(self, q: Quote) -> None:
        if q.bid_qty <= 0 or q.ask_qty <= 0 or q.bid_px <= 0 or q.ask_px <= 0:
            return
        h = self._mids.get(q.instrument_id)
        if h is None:
            h = self._mids[q.instrument_id] = (deque(maxlen=MID_HISTORY), deque(maxlen=MID_HISTORY))
        h[0].append(q.ts_recv)
        h[1].append(q.bid_px + q.ask_px)  # 2 x mid: integer ticks, ratios are unchanged

    def why(
        self,
        order: NewOrder,
        band_bps: float,
        ins: Instrument | None = None,
        band_ticks: float = 0.0,
        band_ladder_ticks: float = 0.0,
    ) -> str:
        """Why a market order is refused by the price-gap check ("" if it is not): a move over
        ``band_bps``; a binary's over ``band_ticks`` ticks too, a betting selection's over
        ``band_ladder_ticks`` ladder ticks too (a band of 0 turns that part off). A bounded
        price's band is the wider of its two: one tick at 0.35 is 285 bps, while on a market
        ticking 0.001 a few ticks are noise."""
        kind = ins.kind if ins is not None else InstrumentKind.SPOT
        bounded = kind in (InstrumentKind.BINARY, InstrumentKind.BETTING)
        band = band_bps
        if bounded:
            band = band_ticks if kind == InstrumentKind.BINARY else band_ladder_ticks
        if not band > 0:
            return ""
        h = self._mids.get(order.instrument_id)
        if not h or not h[1]:
            return ""
        now2 = h[1][-1]
        if order.px > 0:
            ref2 = 2 * order.px
        else:
            k = bisect_right(h[0], order.ts_origin) - 1
            if k < 0:
                return ""  # older than the history: nothing to compare with
            ref2 = h[1][k]
        if kind == InstrumentKind.BINARY:
            moved, unit = abs(now2 - ref2) / 2.0, "ticks"
        elif kind == InstrumentKind.BETTING:
            assert ins is not None
            moved = abs(
                ladder_position(now2 / 2, ins.tick_size) - ladder_position(ref2 / 2, ins.tick_size)
            )
            unit = "ladder ticks"
        else:
            moved, unit = abs(now2 - ref2) * 1e4 / ref2, "bps"
        if bounded and band_bps > 0 and abs(now2 - ref2) * 1e4 / ref2 <= band_bps:
            return ""  # within the relative band: the wider of the two
        if moved > band:
            return (
                f"price gap: mid moved {moved:.1f} {unit} since the intent (band {band:g} {unit})"
            )
        return ""
