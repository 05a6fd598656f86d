"""The one interface every venue adapter implements (DESIGN §6).

A venue is driven like every engine component: calls in, execution events out, time passed in
explicitly (``now_ns``), so the same adapter runs inside a live process or an inline backtest on a
simulated clock. Market data reaches a venue that needs it (the simulated exchange matches our
orders against the market's book) through ``on_market_data``.
"""

from __future__ import annotations

from typing import Protocol

from engine.messages import CancelOrder, NewOrder, OrderPartiallyFilled, ReplaceOrder

#: what a venue emits: OrderAccepted / OrderRejected / OrderPartiallyFilled / OrderFilled /
#: OrderCanceled / OrderExpired / OrderReplaced structs from engine.messages
VenueEvent = object


class Venue(Protocol):
    name: str

    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        """Send a new order. Events may come back now or later from ``poll`` (latency)."""
        ...

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]: ...

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]: ...

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        """Feed a market-data message (Quote, Trade, BookDelta, BookSnapshot)."""
        ...

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """Events that have become due by ``now_ns`` (latency model, expiries)."""
        ...

    def open_orders(self) -> list[NewOrder]:
        """Orders resting at the venue (for reconciliation)."""
        ...

    def positions(self) -> dict[int, int]:
        """Net position in lots per instrument id, as the venue sees it."""
        ...

    # --- reconciliation at start (exec asks these before trading resumes) ----------------------
    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        """Every fill after the venue fill id ``fill_id`` (0 = all), oldest first."""
        ...

    def knows_order(self, client_order_id: int) -> bool:
        """Whether an order with this client order id ever reached the venue."""
        ...
