"""Our orders at Betfair: what the venue says about each bet, turned into engine events once.

Betfair reports a bet by its cumulative state — matched size ``sm`` at average odds ``avp``,
remaining ``sr``, cancelled ``sc``, lapsed ``sl``, voided ``sv``, status EXECUTABLE ("E") or
EXECUTION_COMPLETE ("EC") — on the order stream, in placeOrders / replaceOrders reports and in
listCurrentOrders. Any of them may arrive late, twice or out of order, so a fill is only ever
the increase of a bet's matched size over what we already booked (its price: the increase of
matched value over the increase of size), and an order ends once. One engine order may be
several bets over its life: a price change is Betfair's replaceOrders, a cancel and a new bet
(the engine order keeps its client order id; ``customerOrderRef`` ties each bet to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from engine.enums import Liquidity, TimeInForce
from engine.instruments import Instrument
from engine.messages import (
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
)
from engine.order_states import OrderStatus
from engine.venues.ccxt_orders import order_prefix, venue_client_id
from engine.venues.reports import OrderStatusReport

__all__ = ["BetState", "Tracked", "OrderBook", "order_prefix", "parse_ref"]


def parse_ref(prefix: str, ref: str) -> int | None:
    """The client order id in our ``customerOrderRef`` (None: not one of ours)."""
    if not ref.startswith(prefix) or len(ref) <= len(prefix):
        return None
    try:
        return int(ref[len(prefix) :].partition("_")[0], 36)
    except ValueError:
        return None


@dataclass(frozen=True)
class BetState:
    """One bet as the venue reports it (decimals as the wire has them)."""

    bet_id: str
    matched: Decimal
    avg_price: Decimal
    remaining: Decimal
    cancelled: Decimal = Decimal(0)
    lapsed: Decimal = Decimal(0)
    voided: Decimal = Decimal(0)
    complete: bool = False


@dataclass
class Tracked:
    order: NewOrder
    ins: Instrument
    market_id: str
    selection_id: int
    ref: str
    px: int
    leaves: int  # lots still working at the venue
    phase: str = "pending"  # pending | open | done | unknown | rejected
    filled: int = 0
    bet_id: str = ""  # the current bet
    venue_order_id: int = 0  # the first bet's id
    booked: dict[str, tuple[int, Decimal]] = field(default_factory=dict)  # bet -> (lots, value)
    replacing: bool = False  # a replaceOrders is in flight: its old bet's end is no end
    end: int = 0  # the OrderStatus it ended with
    since: float = 0.0  # monotonic time it went unknown


class OrderBook:
    """Every order this engine placed at the venue, by client order id."""

    def __init__(self, venue: str, prefix: str, first_fill_id: int = 0) -> None:
        self.venue, self.prefix = venue, prefix
        self.orders: dict[int, Tracked] = {}
        self.by_bet: dict[str, int] = {}
        self.fills: list[OrderPartiallyFilled] = []
        self._fill_id = first_fill_id  # the next fill's id is one more

    def ref(self, coid: int) -> str:
        return venue_client_id(self.prefix, coid)

    def find(self, bet_id: str, ref: str) -> Tracked | None:
        coid = self.by_bet.get(bet_id)
        if coid is None:
            coid = parse_ref(self.prefix, ref)
        return self.orders.get(coid) if coid is not None else None

    def accept(self, t: Tracked, bet_id: str, now_ns: int) -> list[object]:
        """The venue took the order (its first bet)."""
        self.by_bet[bet_id] = t.order.client_order_id
        if t.phase not in ("pending", "unknown"):
            return []
        t.phase, t.bet_id, t.venue_order_id = "open", bet_id, int(bet_id)
        return [OrderAccepted.for_order(t.order, t.venue_order_id, now_ns, now_ns)]

    def switch_bet(self, t: Tracked, bet_id: str, px: int) -> None:
        """A replace put the order's remainder on a new bet at ``px``."""
        self.by_bet[bet_id] = t.order.client_order_id
        t.bet_id, t.px, t.replacing = bet_id, px, False

    def on_bet(
        self, t: Tracked, b: BetState, ts: int, now_ns: int, taker: bool = False
    ) -> list[object]:
        """Events for what ``b`` adds to what we booked of its order (fills, its end);
        ``taker``: ``b`` is the answer to our own placement (what matched at once took)."""
        out: list[object] = []
        if t.phase in ("pending", "unknown"):
            taker = True  # matched before the placement was even answered: it took
            out += self.accept(t, b.bet_id, now_ns)
        self.by_bet.setdefault(b.bet_id, t.order.client_order_id)
        ins = t.ins
        lots = ins.qty_to_lots(b.matched)
        value = b.matched * b.avg_price
        had_lots, had_value = t.booked.get(b.bet_id, (0, Decimal(0)))
        current = b.bet_id == t.bet_id
        if current and t.phase == "open" and not b.complete:
            t.leaves = ins.qty_to_lots(b.remaining)
        if lots > had_lots:
            t.booked[b.bet_id] = (lots, value)
            qty = lots - had_lots
            had_qty = Decimal(had_lots) * Decimal(str(ins.lot_size))
            step = (value - had_value) / (b.matched - had_qty)
            px = ins.px_to_ticks(step)
            t.filled += qty
            self._fill_id += 1
            if current and b.complete:  # what is left of ours is what this fill did not take
                t.leaves = max(t.leaves - qty, 0)
            done = t.phase == "open" and current and b.complete and t.leaves == 0
            done = done and not t.replacing
            kind = OrderFilled if done else OrderPartiallyFilled
            fill = kind(
                t.order.client_order_id,
                t.venue_order_id,
                ins.instrument_id,
                t.order.side,
                px,
                qty,
                t.filled,
                0 if done else t.leaves,
                0.0,  # Betfair charges commission on net market winnings at settlement
                int(Liquidity.TAKER if taker else Liquidity.MAKER),
                self._fill_id,
                t.order.ts_origin,
                ts,
                now_ns,
            )
            self.fills.append(fill)
            out.append(fill)
            if done:
                t.phase, t.end, t.leaves = "done", int(OrderStatus.FILLED), 0
                return out
        if current and b.complete and b.remaining == 0 and t.phase == "open" and not t.replacing:
            if t.order.tif != TimeInForce.GTC:  # what a fill-or-kill leaves is cancelled
                why = "fill or kill: the rest was not matched at once"
                return out + self.end(t, lapsed=False, ts=ts, now_ns=now_ns, why=why)
            out += self.end(t, lapsed=b.lapsed > 0 or b.voided > 0, ts=ts, now_ns=now_ns)
        return out

    def end(self, t: Tracked, *, lapsed: bool, ts: int, now_ns: int, why: str = "") -> list[object]:
        """The order's last working bet is over with ``t.leaves`` unfilled."""
        if t.phase == "done":
            return []
        leaves, t.leaves, t.phase = t.leaves, 0, "done"
        o = t.order
        if t.filled and not leaves:
            t.end = int(OrderStatus.FILLED)
            return []
        if lapsed:
            t.end = int(OrderStatus.EXPIRED)
            return [
                OrderExpired(o.client_order_id, o.instrument_id, leaves, o.ts_origin, ts, now_ns)
            ]
        t.end = int(OrderStatus.CANCELED)
        reason = why or "canceled"
        return [
            OrderCanceled(
                o.client_order_id, o.instrument_id, leaves, reason, o.ts_origin, ts, now_ns
            )
        ]

    # --- queries --------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        out = []
        for t in self.orders.values():
            if t.phase == "open" and t.leaves > 0:
                o = t.order
                out.append(
                    NewOrder(
                        o.client_order_id,
                        o.strategy_id,
                        o.instrument_id,
                        o.side,
                        o.order_type,
                        o.tif,
                        t.px,
                        t.leaves,
                        o.ts_origin,
                        o.ts_approved,
                    )
                )
        return out

    def report(self, t: Tracked) -> OrderStatusReport | None:
        if t.phase in ("rejected", "pending", "unknown"):
            return None
        if t.phase == "open":
            status = OrderStatus.PARTIALLY_FILLED if t.filled else OrderStatus.ACCEPTED
        else:
            status = OrderStatus(t.end or OrderStatus.CANCELED)
        o = t.order
        return OrderStatusReport(
            venue=self.venue,
            client_order_id=o.client_order_id,
            instrument_id=o.instrument_id,
            side=o.side,
            order_type=o.order_type,
            status=int(status),
            px=t.px,
            open_qty=t.leaves if t.phase == "open" else 0,
            filled_qty=t.filled,
            venue_order_id=t.venue_order_id,
        )
