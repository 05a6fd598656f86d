"""Betting selections on the simulated exchange: decimal odds matched the way an exchange does.

The engine's betting convention (docs/instruments-and-accounts.md) is BUY = back, SELL = lay,
price = decimal odds, and a betting book reads like any other: bids are the odds available to
back (best = highest), asks the odds available to lay (best = lowest), bid < ask. But a backer
wants *higher* odds, so a back order at 3.0 matches anything offered to back at 3.0 or more:
the opposite of a BUY limit on a price. The matching engine (``engine.venues.sim``) only knows
prices, so ``OddsVenue`` hands it the odds inverted, ``px' = pivot - px`` (higher odds = lower
px'), with bids and asks swapped: there a back is an ordinary BUY taking asks at or below its
limit, a lay an ordinary SELL. Everything the venue says comes back in odds. The venue's own
record and its accounts (``engine.venues.sim_accounts``, told the pivots) live in the inverted
prices; nothing outside this wrapper sees them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from engine.enums import InstrumentKind
from engine.instruments import Instrument
from engine.messages import (
    BookDelta,
    BookSnapshot,
    NewOrder,
    OrderAccepted,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    Quote,
    ReplaceOrder,
    Trade,
)
from engine.venues.sim import SimExchange

__all__ = ["OddsVenue", "odds_pivots"]

#: the highest decimal odds a betting exchange trades (Betfair's ladder ends at 1000)
MAX_ODDS = 1000.0


def odds_pivots(instruments: Iterable[Instrument]) -> dict[int, int]:
    """instrument id -> the pivot of its inverted prices (past the ladder's top: px' > 0)."""
    return {
        i.instrument_id: round((MAX_ODDS + 1.0) / i.tick_size)
        for i in instruments
        if i.kind == InstrumentKind.BETTING
    }


def _inv(k: int, px: int) -> int:
    return k - px if px else 0  # 0 = no price (a market order, an empty side)


class OddsVenue:
    """A ``SimExchange`` whose betting selections are matched on inverted odds (module doc);
    every other instrument passes through untouched."""

    def __init__(self, inner: SimExchange, pivots: dict[int, int]) -> None:
        self.inner = inner
        self.name = inner.name
        self.pivots = pivots
        if inner._accounts is not None:
            inner._accounts.odds_pivots = dict(pivots)

    # --- in ---------------------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[Any]:
        k = self.pivots.get(order.instrument_id)
        if k is not None:
            order = msgspec.structs.replace(order, px=_inv(k, order.px))
        return self._out(self.inner.submit(order, now_ns))

    def replace(self, rep: ReplaceOrder, now_ns: int) -> list[Any]:
        k = self.pivots.get(rep.instrument_id)
        if k is not None:
            rep = msgspec.structs.replace(rep, new_px=_inv(k, rep.new_px))
        return self._out(self.inner.replace(rep, now_ns))

    def cancel(self, cancel: Any, now_ns: int) -> list[Any]:
        return self._out(self.inner.cancel(cancel, now_ns))

    def poll(self, now_ns: int) -> list[Any]:
        return self._out(self.inner.poll(now_ns))

    def resolve(self, instrument_id: int, resolution: str, now_ns: int) -> list[Any]:
        """The simulator's public settlement (``SimExchange.resolve``), its events in odds."""
        return self._out(self.inner.resolve(instrument_id, resolution, now_ns))

    def on_market_data(self, msg: Any, now_ns: int) -> list[Any]:
        k = self.pivots.get(getattr(msg, "instrument_id", -1))
        if k is not None:
            msg = invert_market_data(msg, k)
        return self._out(self.inner.on_market_data(msg, now_ns))

    # --- out --------------------------------------------------------------------------------
    def _out(self, events: list[Any]) -> list[Any]:
        if not self.pivots:
            return events
        return [self._event(ev) for ev in events]

    def _event(self, ev: Any) -> Any:
        k = self.pivots.get(getattr(ev, "instrument_id", -1))
        if k is None:
            return ev
        tp = type(ev)
        if tp is OrderPartiallyFilled or tp is OrderFilled:
            return msgspec.structs.replace(ev, fill_px=_inv(k, ev.fill_px))
        if tp is OrderAccepted or tp is OrderReplaced:
            return msgspec.structs.replace(ev, px=_inv(k, ev.px))
        return ev

    def open_orders(self) -> list[NewOrder]:
        return [self._order(o) for o in self.inner.open_orders()]

    def _order(self, o: NewOrder) -> NewOrder:
        k = self.pivots.get(o.instrument_id)
        return o if k is None else msgspec.structs.replace(o, px=_inv(k, o.px))

    def fills_since(self, fill_id: int = 0) -> list[Any]:
        return [self._event(f) for f in self.inner.fills_since(fill_id)]

    def query_order(self, client_order_id: int) -> Any:
        r = self.inner.query_order(client_order_id)
        k = self.pivots.get(r.instrument_id) if r is not None else None
        return r if k is None else msgspec.structs.replace(r, px=_inv(k, r.px))

    def takeable(self, instrument_id: int, side: int, max_levels: int = 64) -> list[Any]:
        levels = self.inner.takeable(instrument_id, side, max_levels)
        k = self.pivots.get(instrument_id)
        return levels if k is None else [(_inv(k, px), q) for px, q in levels]

    def __getattr__(self, attr: str) -> Any:  # positions, knows_order, halted, close, ...
        return getattr(self.inner, attr)


def invert_market_data(msg: Any, k: int) -> Any:
    """A betting selection's market data in inverted odds: prices ``k - px``, bids and asks
    swapped (the odds available to back become the asks a back order takes)."""
    tp = type(msg)
    if tp is Quote:
        return msgspec.structs.replace(
            msg,
            bid_px=_inv(k, msg.ask_px),
            bid_qty=msg.ask_qty,
            ask_px=_inv(k, msg.bid_px),
            ask_qty=msg.bid_qty,
        )
    if tp is BookDelta:
        return msgspec.structs.replace(msg, side=-msg.side, px=_inv(k, msg.px))
    if tp is BookSnapshot:
        return msgspec.structs.replace(
            msg,
            bid_px=[k - p for p in msg.ask_px],
            bid_qty=list(msg.ask_qty),
            ask_px=[k - p for p in msg.bid_px],
            ask_qty=list(msg.bid_qty),
        )
    if tp is Trade:
        return msgspec.structs.replace(msg, px=_inv(k, msg.px))
    return msg
