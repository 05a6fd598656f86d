"""The execution side of a venue: the one interface exec and reconciliation talk to (DESIGN §6).

A venue is driven like every engine component: calls in, execution events out, time passed in
explicitly (``now_ns``), so the same client runs inside a live process or an inline backtest on a
simulated clock. Its other side, market data, is ``engine.venues.data.MarketDataClient``; the
registry (``engine.venues.registry``) builds both from a ``[[venues]]`` kind.

Shaped after NautilusTrader's ``ExecutionClient`` (requests in, events out, status reports for
reconciliation) and Hummingbot's user-stream and in-flight order trackers: a real client keeps
its own table of orders in flight, turns its user stream into the events below, and hands them
out from ``poll`` without blocking (no network call on the hot loop). ``engine.exec_engine``,
``engine.reconcile``, ``engine.algos.recovery`` and ``procs.recovery`` use only what is here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.messages import CancelOrder, NewOrder, OrderPartiallyFilled, ReplaceOrder
from engine.venues.reports import BalanceReport, FillReport, OrderStatusReport, PositionReport

__all__ = ["ExecutionClient", "Venue", "VenueEvent"]

#: what a venue emits: OrderAccepted / OrderRejected / OrderPartiallyFilled / OrderFilled /
#: OrderCanceled / OrderExpired / OrderReplaced / OrderCancelRejected / OrderReplaceRejected
#: structs from engine.messages
VenueEvent = object


@runtime_checkable
class ExecutionClient(Protocol):
    """Orders to one venue (or a router over several), events back.

    Requests answer with the events due now; later ones come from ``poll``. A venue that does
    its own matching ignores ``on_market_data`` (returns []); the simulated one matches against
    it. An optional ``next_event_ns() -> int | None`` says when the next event is due (the
    inline backtest advances its clock there; ``engine.routing`` has one)."""

    name: str

    # --- requests ------------------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        """Send a new order. Events may come back now or later from ``poll`` (latency)."""
        ...

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        """Cancel an order's open quantity."""
        ...

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        """Change price and open (leaves) quantity."""
        ...

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        """Feed a market-data message (Quote, Trade, BookDelta, BookSnapshot, ExchangeStatus)."""
        ...

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """Events that have become due by ``now_ns`` (latency, expiries, the user stream)."""
        ...

    # --- queries (reconciliation at start: exec asks these before trading resumes) -------------
    def open_orders(self) -> list[NewOrder]:
        """Orders resting at the venue: ``px`` the current price, ``qty`` the open quantity."""
        ...

    def positions(self) -> dict[int, int]:
        """Net position in lots per instrument id, as the venue sees it."""
        ...

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        """Every fill after the venue fill id ``fill_id`` (0 = all), oldest first."""
        ...

    def knows_order(self, client_order_id: int) -> bool:
        """Whether an order with this client order id ever reached the venue."""
        ...

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        """One order's status at the venue (None: never seen, or nothing left to say)."""
        ...

    def balances(self) -> list[BalanceReport]:
        """Cash per currency at the venue."""
        ...

    # --- status reports (``engine.venues.reports``; ``StatusReports`` derives them) -------------
    def order_status_reports(self) -> list[OrderStatusReport]:
        """Every order working at the venue."""
        ...

    def fill_reports(self, since_fill_id: int = 0) -> list[FillReport]:
        """Every fill after ``since_fill_id``, oldest first."""
        ...

    def position_reports(self) -> list[PositionReport]:
        """Net position per instrument that has traded."""
        ...

    def close(self) -> None:
        """Let go of connections and files; the venue's own state outlives it."""
        ...


#: the name the execution side had when it was the only side
Venue = ExecutionClient
