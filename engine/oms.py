"""The order table: the execution side's record of every order's life cycle.

Each order sent to a venue gets one ``OrderRecord`` keyed by ``client_order_id``, moved through
its states by the venue's execution events:

    SUBMITTED → ACCEPTED → PARTIALLY_FILLED → FILLED
         │          │  ↘ REPLACED (live, new px/qty) ↗ │
         └──────────┴──→ CANCELED / EXPIRED / REJECTED  (terminal)

Venues and networks misbehave: a fill arrives for an order we never sent, the same fill is
delivered twice after a reconnect, a fill or an ack trails a cancel. A trading engine must not
crash on that, and must not pass it on either — a duplicated fill forwarded to risk and the
portfolio doubles a position. ``apply`` therefore returns whether an event is consistent (forward
it) or an anomaly (drop it); anomalies are counted by kind in ``anomalies`` so monitoring sees
them. Counted kinds: ``fill_unknown_order``, ``duplicate_fill``, ``fill_after_terminal``,
``overfill`` (forwarded: the fill is real, the quantity bookkeeping is not), ``event_unknown_order``,
``event_after_terminal``, ``duplicate_ack``. A refused cancel/replace that arrives after the order
ended (it crossed the fill: a normal race) is dropped and counted in ``late_request_rejects``.

A cancel or replace the venue cannot do is answered with an ``OrderRejected`` whose reason starts
with ``"cancel rejected:"`` / ``"replace rejected:"`` (the vocabulary has no cancel-reject message;
``engine.venues.sim`` uses this convention). Such a reject answers the *request*: the order itself
lives on, so it is forwarded without changing the order's state (``is_request_reject``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from engine.messages import (
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
)

#: reason prefixes of an OrderRejected that refuses a cancel/replace request, not the order
REQUEST_REJECT_PREFIXES = ("cancel rejected:", "replace rejected:")


def is_request_reject(ev: object) -> bool:
    """True for an OrderRejected that answers a cancel or replace: the order is unchanged."""
    return isinstance(ev, OrderRejected) and ev.reason.startswith(REQUEST_REJECT_PREFIXES)


class OrderState(IntEnum):
    SUBMITTED = 1
    ACCEPTED = 2
    PARTIALLY_FILLED = 3
    FILLED = 4
    CANCELED = 5
    REJECTED = 6
    REPLACED = 7
    EXPIRED = 8


TERMINAL_STATES = frozenset(
    {OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED, OrderState.EXPIRED}
)


@dataclass(slots=True)
class OrderRecord:
    """One order as execution knows it. ``px``/``qty`` follow replaces; ``order`` is the original."""

    order: NewOrder
    state: OrderState
    px: int
    qty: int
    leaves_qty: int
    submitted_ns: int
    cum_qty: int = 0
    notional_ticks: int = 0  # sum of fill_px * fill_qty, for the average price
    fees: float = 0.0
    venue_order_id: int = 0
    fill_ids: set[int] = field(default_factory=set)
    updated_ns: int = 0
    reason: str = ""

    @property
    def client_order_id(self) -> int:
        return self.order.client_order_id

    @property
    def instrument_id(self) -> int:
        return self.order.instrument_id

    @property
    def side(self) -> int:
        return self.order.side

    @property
    def is_open(self) -> bool:
        return self.state not in TERMINAL_STATES

    @property
    def avg_px(self) -> float:
        """Average fill price in ticks (0.0 before the first fill)."""
        return self.notional_ticks / self.cum_qty if self.cum_qty else 0.0


class OrderTable:
    """Orders by client_order_id and their states (see the module docstring)."""

    def __init__(self) -> None:
        self.orders: dict[int, OrderRecord] = {}
        self._open: dict[int, OrderRecord] = {}
        self.anomalies: dict[str, int] = {}
        #: refusals of cancels/replaces that crossed the order's end (dropped, not anomalies)
        self.late_request_rejects = 0

    def __len__(self) -> int:
        return len(self.orders)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self.orders

    def get(self, client_order_id: int) -> OrderRecord | None:
        return self.orders.get(client_order_id)

    def open_orders(self) -> list[OrderRecord]:
        """Orders not yet in a terminal state, in submission order."""
        return list(self._open.values())

    @property
    def open_count(self) -> int:
        """Orders not yet in a terminal state."""
        return len(self._open)

    def state(self, client_order_id: int) -> OrderState | None:
        r = self.orders.get(client_order_id)
        return None if r is None else r.state

    def _count(self, kind: str) -> None:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1

    @property
    def anomaly_count(self) -> int:
        return sum(self.anomalies.values())

    # --- transitions -------------------------------------------------------------------------
    def add(self, order: NewOrder, now_ns: int) -> OrderRecord | None:
        """Record a new order as SUBMITTED; None (and nothing changed) if the id is known."""
        if order.client_order_id in self.orders:
            return None
        r = OrderRecord(
            order=order,
            state=OrderState.SUBMITTED,
            px=order.px,
            qty=order.qty,
            leaves_qty=order.qty,
            submitted_ns=now_ns,
            updated_ns=now_ns,
        )
        self.orders[order.client_order_id] = r
        self._open[order.client_order_id] = r
        return r

    def _terminate(self, r: OrderRecord, state: OrderState) -> None:
        r.state = state
        self._open.pop(r.client_order_id, None)

    def apply(self, ev: object) -> bool:
        """Apply one execution event; True if consistent (forward it), False if an anomaly."""
        coid = ev.client_order_id  # type: ignore[attr-defined]
        r = self.orders.get(coid)
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            if r is None:
                self._count("fill_unknown_order")
                return False
            if ev.fill_id and ev.fill_id in r.fill_ids:
                self._count("duplicate_fill")
                return False
            if not r.is_open:
                self._count("fill_after_terminal")
                return False
            if ev.fill_id:
                r.fill_ids.add(ev.fill_id)
            r.cum_qty += ev.fill_qty
            r.notional_ticks += ev.fill_px * ev.fill_qty
            r.fees += ev.fee
            r.leaves_qty = max(0, ev.leaves_qty)
            r.updated_ns = ev.ts_recv
            if ev.venue_order_id:
                r.venue_order_id = ev.venue_order_id
            if r.cum_qty > r.qty:
                self._count("overfill")
            if isinstance(ev, OrderFilled) or ev.leaves_qty <= 0:
                self._terminate(r, OrderState.FILLED)
            else:
                r.state = OrderState.PARTIALLY_FILLED
            return True

        if r is None:
            self._count("event_unknown_order")
            return False
        if not r.is_open:
            if is_request_reject(ev):
                # a cancel/replace that crossed the order's fill or cancel: a normal race
                self.late_request_rejects += 1
            else:
                self._count("event_after_terminal")
            return False
        r.updated_ns = getattr(ev, "ts_recv", r.updated_ns)
        if isinstance(ev, OrderAccepted):
            if r.state != OrderState.SUBMITTED:
                self._count("duplicate_ack")
                return False
            r.state = OrderState.ACCEPTED
            r.venue_order_id = ev.venue_order_id
            return True
        if isinstance(ev, OrderReplaced):
            r.px = ev.px
            r.leaves_qty = ev.qty
            r.qty = r.cum_qty + ev.qty
            r.state = OrderState.REPLACED
            return True
        if isinstance(ev, OrderCanceled):
            r.leaves_qty = 0
            r.reason = ev.reason
            self._terminate(r, OrderState.CANCELED)
            return True
        if isinstance(ev, OrderExpired):
            r.leaves_qty = 0
            self._terminate(r, OrderState.EXPIRED)
            return True
        if isinstance(ev, OrderRejected):
            if ev.reason.startswith(REQUEST_REJECT_PREFIXES):
                return True  # the request failed; the order is as it was
            r.leaves_qty = 0
            r.reason = ev.reason
            self._terminate(r, OrderState.REJECTED)
            return True
        self._count("unknown_event")
        return False
