"""Local emulation of the order types a venue lacks: stop, stop-limit, trailing stop,
trailing-stop-limit, market-if-touched, limit-if-touched (and market-to-limit, converted on
arrival).

Why: a venue that only takes market and limit orders (the simulated exchange, many crypto
venues for some types) would refuse a stop; a strategy should not have to care. Exec keeps such
an order here, watches market data, and when the trigger fires sends the order the stop stands
for — MARKET for a stop or trailing stop, LIMIT at ``px`` for a stop-limit — under the same
client_order_id, announcing it with an ``OrderTriggered`` whose ``emulated`` flag says the
trigger was exec's, not the venue's. The cost is honest and documented: the trigger reacts to
the market data exec receives, one feed latency behind the venue, and the resulting order pays
the order latency on top.

Which price fires a trigger: a buy stop fires when the price it would buy at reaches the stop —
the best ask (``Quote``, ``BookSnapshot``) or a trade print at or above it; a sell stop when the
best bid or a trade is at or below it. BookDeltas are not watched: the feed publishes a Quote
whenever the top of book changes, and that is enough for triggers.

Trailing stops: the stop follows the best price seen since the order was accepted — for a sell,
the highest bid or trade ("high-water mark") minus the trail; for a buy, the lowest ask or
trade plus the trail. The trail is ``stop_px`` ticks when ``stop_px`` > 0 (by amount), else
``algo_params["trail_pct"]`` percent of the mark (by percent). The stop only ever tightens.
Across an exec restart a held order keeps its amended terms (``rearm``) and a trailing one its
mark and level (``on_trail`` reports each move for exec to journal, ``set_trail`` gives it back).
A trailing-stop-limit trails the same way and sends a LIMIT ``algo_params["limit_offset"]``
ticks (default 0) beyond the stop level it fired at (below it for a sell, above for a buy).

If-touched orders fire the other way round from stops: a buy market-if-touched (MIT) or
limit-if-touched (LIT) fires when the price it would buy at falls to ``stop_px`` or below (a
sell when it rises to it or above) and sends a MARKET (MIT) or a LIMIT at ``px`` (LIT).

Market-to-limit is not held: ``market_to_limit`` turns it on arrival into a LIMIT at the
touch (best ask for a buy, best bid for a sell), which takes what is there and rests what is
left at that price, the first fill's price; without a quote to take it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.messages import BookSnapshot, NewOrder, OrderType, Quote, Side, Trade

EMULATABLE = frozenset(
    {
        int(OrderType.STOP),
        int(OrderType.STOP_LIMIT),
        int(OrderType.TRAILING_STOP),
        int(OrderType.TRAILING_STOP_LIMIT),
        int(OrderType.MARKET_IF_TOUCHED),
        int(OrderType.LIMIT_IF_TOUCHED),
    }
)
#: trailing types (the stop follows the market)
_TRAILING = frozenset({int(OrderType.TRAILING_STOP), int(OrderType.TRAILING_STOP_LIMIT)})
#: if-touched types (fire when the price comes to them, not when it runs through them)
_TOUCHED = frozenset({int(OrderType.MARKET_IF_TOUCHED), int(OrderType.LIMIT_IF_TOUCHED)})
#: the types whose triggered order is a LIMIT at ``px``
_LIMIT_AT_PX = frozenset({int(OrderType.STOP_LIMIT), int(OrderType.LIMIT_IF_TOUCHED)})


def emulated_under(policy: Any, order: Any) -> bool:
    """Whether exec emulates ``order``'s type under ``policy`` (``engine.exec_policy``: the
    venue lacks it and emulation is on)."""
    ot = order.order_type
    return ot not in policy.native_types and ot in EMULATABLE and bool(policy.emulate)


def triggered_order(o: NewOrder, stop_px: int, ts: int = 0) -> NewOrder:
    """The order an emulated one becomes when it fires at ``stop_px``: same id, MARKET, or a
    LIMIT at ``px`` (stop-limit, limit-if-touched) or offset from the stop (trailing-stop-
    limit)."""
    ot = o.order_type
    if ot in _LIMIT_AT_PX:
        limit = True
        px = o.px
    elif ot == OrderType.TRAILING_STOP_LIMIT:
        limit = True
        off = int(float(getattr(o, "algo_params", {}).get("limit_offset", 0.0) or 0.0))
        px = max(1, stop_px - off if o.side == Side.SELL else stop_px + off)
    else:
        limit, px = False, 0
    return msgspec.structs.replace(
        o,
        order_type=int(OrderType.LIMIT if limit else OrderType.MARKET),
        px=px,
        stop_px=0,
        ts_origin=ts or o.ts_origin,
    )


def market_to_limit(order: NewOrder, bid: int, ask: int) -> tuple[NewOrder | None, str]:
    """A market-to-limit order as the LIMIT at the touch exec sends; (None, why) without a
    touch to take."""
    px = ask if order.side == Side.BUY else bid
    if px <= 0:
        return None, "market-to-limit needs a quote to take: no best price yet"
    return msgspec.structs.replace(order, order_type=int(OrderType.LIMIT), px=px), ""


@dataclass(slots=True)
class Trigger:
    """A fired trigger: the order to send now, the stop level and the price that fired it."""

    order: NewOrder
    stop_px: int
    trigger_px: int


@dataclass(slots=True)
class _Stop:
    order: NewOrder
    stop_px: int  # current trigger level (0: a trailing stop with no mark yet)
    trail_ticks: int = 0
    trail_frac: float = 0.0
    mark: int = 0  # trailing: best price seen (high for a sell, low for a buy); 0 = none yet


class StopEmulator:
    """Holds emulated stop orders per instrument and fires them from market data."""

    def __init__(self) -> None:
        self._stops: dict[int, dict[int, _Stop]] = {}  # instrument -> coid -> stop
        self._coid_iid: dict[int, int] = {}
        #: last best bid / best ask / trade price per instrument (0 = unknown)
        self.bid: dict[int, int] = {}
        self.ask: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.triggered = 0
        #: called with (coid, mark, stop level) when a trailing order's level moves: exec
        #: journals it (``procs.exec_trails``) so a restart goes on from there (``set_trail``)
        self.on_trail: Callable[[int, int, int], None] | None = None

    def __len__(self) -> int:
        return len(self._coid_iid)

    def __contains__(self, coid: object) -> bool:
        return coid in self._coid_iid

    def stop_px(self, coid: int) -> int | None:
        """The current trigger level of a held order (None if not held)."""
        iid = self._coid_iid.get(coid)
        return None if iid is None else self._stops[iid][coid].stop_px

    def add(self, order: NewOrder) -> str:
        """Hold an order until its trigger fires; returns why it cannot be held ("" if held)."""
        ot = order.order_type
        if ot not in EMULATABLE:
            return f"order type {ot} is not emulated"
        if order.side not in (Side.BUY, Side.SELL):
            return f"invalid side {order.side}"
        if order.qty <= 0:
            return f"qty must be > 0, got {order.qty}"
        if ot in _LIMIT_AT_PX and order.px <= 0:
            return f"{OrderType(ot).name.lower()} needs a limit price > 0, got {order.px}"
        s = _Stop(order, order.stop_px)
        if ot in _TRAILING:
            pct = float(getattr(order, "algo_params", {}).get("trail_pct", 0.0) or 0.0)
            if order.stop_px > 0:
                s.trail_ticks = order.stop_px
            elif math.isfinite(pct) and 0.0 < pct < 100.0:
                s.trail_frac = pct / 100.0
            else:
                return "trailing stop needs stop_px (trail in ticks) > 0 or algo_params trail_pct in (0, 100)"
            s.stop_px = 0
            ref = self._price(order.instrument_id, order.side)
            if ref:
                self._trail(s, ref)
        elif order.stop_px <= 0:
            return f"stop price must be > 0, got {order.stop_px}"
        self._stops.setdefault(order.instrument_id, {})[order.client_order_id] = s
        self._coid_iid[order.client_order_id] = order.instrument_id
        if s.mark and self.on_trail is not None:  # its first level, from the market now
            self.on_trail(order.client_order_id, s.mark, s.stop_px)
        return ""

    def cancel(self, coid: int) -> NewOrder | None:
        """Stop holding an order; its NewOrder, or None if it was not held."""
        iid = self._coid_iid.pop(coid, None)
        if iid is None:
            return None
        return self._stops[iid].pop(coid).order

    def amend(self, coid: int, new_px: int, new_qty: int) -> str:
        """Change a held order: ``new_px`` is the limit price of a stop-limit, the stop price of
        a stop; a trailing stop's level is the market's, so only its quantity changes."""
        iid = self._coid_iid.get(coid)
        if iid is None:
            return "not held"
        if new_qty <= 0:
            return f"new qty must be > 0, got {new_qty}"
        s = self._stops[iid][coid]
        ot = s.order.order_type
        if ot in _TRAILING:
            s.order = msgspec.structs.replace(s.order, qty=new_qty)
        elif new_px <= 0:
            return f"new price must be > 0, got {new_px}"
        elif ot in _LIMIT_AT_PX:
            s.order = msgspec.structs.replace(s.order, px=new_px, qty=new_qty)
        else:
            s.stop_px = new_px
            s.order = msgspec.structs.replace(s.order, stop_px=new_px, qty=new_qty)
        return ""

    def rearm(self, order: NewOrder, leaves: int, amended_px: int = 0) -> str:
        """Hold again, after a restart, an order this emulator held: ``leaves`` lots of it, at
        ``amended_px`` when an amend changed its price (the order table's ``px``, which an
        ``OrderReplaced`` of a held order sets as ``amend`` reads it; 0 or the order's own
        ``px``: not amended). Returns why it cannot be held ("" if held)."""
        coid = order.client_order_id
        why = self.add(msgspec.structs.replace(order, qty=leaves))
        if not why and amended_px > 0 and amended_px != order.px:
            why = self.amend(coid, amended_px, leaves)
            if why:
                self.cancel(coid)
        return why

    def trail_state(self, coid: int) -> tuple[int, int] | None:
        """A held trailing order's (mark, stop level) — what a restart needs to go on trailing
        from where it was (``set_trail``); None if ``coid`` is not a held trailing order."""
        iid = self._coid_iid.get(coid)
        if iid is None:
            return None
        s = self._stops[iid][coid]
        if not (s.trail_ticks or s.trail_frac):
            return None
        return s.mark, s.stop_px

    def set_trail(self, coid: int, mark: int, stop_px: int) -> None:
        """Give a held trailing order back the mark and level it had (``trail_state``); the
        level only ever tightens, so a better one seen since is kept."""
        iid = self._coid_iid.get(coid)
        if iid is None or mark <= 0:
            return
        s = self._stops[iid][coid]
        if not (s.trail_ticks or s.trail_frac):
            return
        sell = s.order.side == Side.SELL
        if s.mark == 0 or (mark > s.mark if sell else mark < s.mark):
            s.mark = mark
        if stop_px > 0 and (
            s.stop_px == 0 or (stop_px > s.stop_px if sell else stop_px < s.stop_px)
        ):
            s.stop_px = stop_px

    def held(self) -> list[NewOrder]:
        return [s.order for stops in self._stops.values() for s in stops.values()]

    # --- market data -----------------------------------------------------------------------------
    def _price(self, iid: int, side: int) -> int:
        """The price a ``side`` order would trade at now (best quote, else last trade)."""
        px = (self.ask if side == Side.BUY else self.bid).get(iid, 0)
        return px or self.last.get(iid, 0)

    @staticmethod
    def _trail(s: _Stop, px: int) -> None:
        """Move a trailing stop's mark to ``px`` if better; the stop follows, never loosens."""
        if s.order.side == Side.SELL:
            if px > s.mark:
                s.mark = px
                stop = (
                    px - s.trail_ticks if s.trail_ticks else math.floor(px * (1.0 - s.trail_frac))
                )
                if stop > s.stop_px:
                    s.stop_px = stop
        elif s.mark == 0 or px < s.mark:
            s.mark = px
            stop = px + s.trail_ticks if s.trail_ticks else math.ceil(px * (1.0 + s.trail_frac))
            if s.stop_px == 0 or stop < s.stop_px:
                s.stop_px = stop

    def on_market_data(self, msg: object, ts_recv: int = 0) -> list[Trigger]:
        """Update prices from a Quote / Trade / BookSnapshot; the triggers that fired."""
        tp = type(msg)
        if tp is Quote:
            iid = msg.instrument_id  # type: ignore[attr-defined]
            bid = msg.bid_px if msg.bid_qty > 0 else 0  # type: ignore[attr-defined]
            ask = msg.ask_px if msg.ask_qty > 0 else 0  # type: ignore[attr-defined]
            self.bid[iid] = bid
            self.ask[iid] = ask
            buy_px, sell_px = ask, bid
        elif tp is Trade:
            iid = msg.instrument_id  # type: ignore[attr-defined]
            px = msg.px  # type: ignore[attr-defined]
            if px <= 0:
                return []
            self.last[iid] = px
            buy_px = sell_px = px
        elif tp is BookSnapshot:
            iid = msg.instrument_id  # type: ignore[attr-defined]
            bid = msg.bid_px[0] if msg.bid_px else 0  # type: ignore[attr-defined]
            ask = msg.ask_px[0] if msg.ask_px else 0  # type: ignore[attr-defined]
            self.bid[iid], self.ask[iid] = bid, ask
            buy_px, sell_px = ask, bid
        else:
            return []
        stops = self._stops.get(iid)
        if not stops:
            return []
        fired: list[Trigger] = []
        for coid, s in list(stops.items()):
            buy = s.order.side == Side.BUY
            px = buy_px if buy else sell_px
            if px <= 0:
                continue
            if s.order.order_type in _TOUCHED:  # comes down to a buy, up to a sell
                buy = not buy
            if s.stop_px and (px >= s.stop_px if buy else px <= s.stop_px):
                del stops[coid]
                del self._coid_iid[coid]
                self.triggered += 1
                fired.append(Trigger(triggered_order(s.order, s.stop_px, ts_recv), s.stop_px, px))
            elif s.trail_ticks or s.trail_frac:
                before = s.stop_px
                self._trail(s, px)
                if s.stop_px != before and self.on_trail is not None:
                    self.on_trail(coid, s.mark, s.stop_px)
        return fired
