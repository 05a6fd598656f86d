"""The execution engine: approved orders in, venue calls out, execution events back.

``ExecEngine`` is the exec process's state machine (DESIGN §2). It owns the venue adapter and the
order table (``engine.oms.OrderTable``), and every event it returns has passed through the table:
consistent events are forwarded (to strategies, risk, portfolio, recorder), anomalies are dropped
and counted there.

Idempotency: a ``NewOrder`` whose ``client_order_id`` is already in the table is never sent again.
Orders can be delivered twice — the risk process restarts and replays its ring, a consumer
re-reads after a crash — and a second venue order would double the exposure, so the resend is
counted (``duplicates``) and answered with nothing: the first order's events are the answer.

Only market and limit orders are supported for now; anything else is rejected here with an
``OrderRejected`` rather than passed to a venue that may interpret it differently.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderRejected,
    OrderType,
    ReplaceOrder,
)
from engine.oms import OrderState, OrderTable
from engine.venues.base import Venue

SUPPORTED_ORDER_TYPES = frozenset({int(OrderType.MARKET), int(OrderType.LIMIT)})


class ExecEngine:
    """Sends orders to one venue and filters its events through the order table."""

    def __init__(self, venue: Venue, instruments: InstrumentTable | Iterable[Instrument]) -> None:
        self.venue = venue
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        self.table = OrderTable()
        self.duplicates = 0  # NewOrders resent with a known client_order_id
        self.ignored_requests = 0  # cancels/replaces for unknown or finished orders
        self.sent = 0  # NewOrders passed to the venue

    # --- orders ------------------------------------------------------------------------------
    def on_order(self, order: NewOrder | CancelOrder | ReplaceOrder, now_ns: int) -> list[object]:
        """Act on an approved order; returns the (filtered) events the venue answered with."""
        if isinstance(order, NewOrder):
            return self._new(order, now_ns)
        if isinstance(order, CancelOrder):
            r = self.table.get(order.client_order_id)
            if r is None or not r.is_open:
                # nothing to cancel: unknown, or already filled/canceled (a normal race)
                self.ignored_requests += 1
                return []
            return self._filter(self.venue.cancel(order, now_ns))
        if isinstance(order, ReplaceOrder):
            r = self.table.get(order.client_order_id)
            if r is None or not r.is_open:
                self.ignored_requests += 1
                return []
            return self._filter(self.venue.replace(order, now_ns))
        raise TypeError(f"not an order: {type(order).__name__}")

    def _new(self, order: NewOrder, now_ns: int) -> list[object]:
        r = self.table.add(order, now_ns)
        if r is None:
            self.duplicates += 1
            return []
        reason = ""
        if order.order_type not in SUPPORTED_ORDER_TYPES:
            reason = f"unsupported order type {order.order_type}"
        elif order.instrument_id not in self.instruments:
            reason = f"unknown instrument {order.instrument_id}"
        if reason:
            ev = OrderRejected(
                client_order_id=order.client_order_id,
                instrument_id=order.instrument_id,
                reason=f"exec: {reason}",
                ts_origin=order.ts_origin,
                ts_event=now_ns,
                ts_recv=now_ns,
            )
            return self._filter([ev])
        self.sent += 1
        return self._filter(self.venue.submit(order, now_ns))

    def cancel_all(self, now_ns: int) -> list[object]:
        """Cancel every order the table considers open (shutdown, kill switch at exec level)."""
        out: list[object] = []
        for r in self.table.open_orders():
            cancel = CancelOrder(
                client_order_id=r.client_order_id,
                strategy_id=r.order.strategy_id,
                instrument_id=r.instrument_id,
                ts_origin=now_ns,
                ts_approved=now_ns,
            )
            out += self._filter(self.venue.cancel(cancel, now_ns))
        return out

    # --- the venue's clock -------------------------------------------------------------------
    def on_market_data(self, msg: object, now_ns: int) -> list[object]:
        """Feed market data to the venue (a simulated venue matches our orders against it)."""
        return self._filter(self.venue.on_market_data(msg, now_ns))

    def poll(self, now_ns: int) -> list[object]:
        """Events that became due at the venue by ``now_ns``."""
        return self._filter(self.venue.poll(now_ns))

    def _filter(self, events: list[object]) -> list[object]:
        apply = self.table.apply
        return [ev for ev in events if apply(ev)]

    # --- views -------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        return [r.order for r in self.table.open_orders()]

    def state(self, client_order_id: int) -> OrderState | None:
        return self.table.state(client_order_id)

    @property
    def anomalies(self) -> dict[str, int]:
        return self.table.anomalies
