"""What a venue says about its orders, fills, positions and balances: typed status reports.

Reconciliation must not be written once per venue. As NautilusTrader's execution clients do,
every execution client answers the same questions with the same structs (an order's status, a
fill, a position, a balance), and ``engine.reconcile`` compares those with the record. A venue
whose API has fewer questions (no closed-order history, no per-order query) still answers them:
``StatusReports`` derives the reports from the four queries every client has (``open_orders``,
``fills_since``, ``positions``, ``knows_order``); a client with better answers overrides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from engine.messages import NewOrder, OrderFilled, OrderPartiallyFilled
from engine.order_states import OrderStatus

__all__ = [
    "BalanceReport",
    "FillReport",
    "OrderStatusReport",
    "PositionReport",
    "StatusReports",
]

_R: dict[str, Any] = {"frozen": True, "kw_only": True}


class OrderStatusReport(msgspec.Struct, **_R):
    """One order as the venue has it. ``status`` is an ``engine.order_states.OrderStatus``;
    ``open_qty`` lots still working, ``filled_qty`` lots filled; ``px`` the current limit price
    in ticks (0: a market order). ``venue_order_id`` 0: the venue did not say."""

    venue: str
    client_order_id: int
    instrument_id: int
    side: int
    order_type: int
    status: int
    px: int
    open_qty: int
    filled_qty: int
    venue_order_id: int = 0


class FillReport(msgspec.Struct, **_R):
    """One execution at the venue (``fill_id`` increases per venue; ``fee`` in quote currency,
    positive = paid; ``liquidity`` an ``engine.messages.Liquidity``)."""

    venue: str
    fill_id: int
    client_order_id: int
    venue_order_id: int
    instrument_id: int
    side: int
    px: int
    qty: int
    fee: float
    liquidity: int
    ts_event: int

    @classmethod
    def from_fill(cls, venue: str, f: OrderPartiallyFilled) -> FillReport:
        """The report of a fill event (``OrderFilled`` included)."""
        return cls(
            venue=venue,
            fill_id=f.fill_id,
            client_order_id=f.client_order_id,
            venue_order_id=f.venue_order_id,
            instrument_id=f.instrument_id,
            side=f.side,
            px=f.fill_px,
            qty=f.fill_qty,
            fee=f.fee,
            liquidity=f.liquidity,
            ts_event=f.ts_event,
        )


class PositionReport(msgspec.Struct, **_R):
    """Net position in lots of one instrument at the venue (signed: > 0 long)."""

    venue: str
    instrument_id: int
    qty: int


class BalanceReport(msgspec.Struct, **_R):
    """Cash of one currency at the venue (``free`` = not tied up in open orders)."""

    venue: str
    currency: str
    total: float
    free: float


def _order_report(
    venue: str, o: NewOrder, status: int, open_qty: int, fills: Sequence[OrderPartiallyFilled]
) -> OrderStatusReport:
    return OrderStatusReport(
        venue=venue,
        client_order_id=o.client_order_id,
        instrument_id=o.instrument_id,
        side=o.side,
        order_type=o.order_type,
        status=status,
        px=o.px,
        open_qty=open_qty,
        filled_qty=sum(f.fill_qty for f in fills),
        venue_order_id=fills[-1].venue_order_id if fills else 0,
    )


class StatusReports:
    """Mixin: the reports from the core queries (see the module docstring).

    A closed order is reported from its fills: FILLED after an ``OrderFilled``, otherwise
    CANCELED (the core queries cannot tell a cancel from an expiry or a reject; a client that
    can overrides ``query_order``)."""

    name: str
    # and the core queries of ``engine.venues.base.ExecutionClient``: open_orders,
    # fills_since, positions, knows_order (no stubs here: a stub would shadow a delegating
    # ``__getattr__``)

    def order_status_reports(self) -> list[OrderStatusReport]:
        """Every order working at the venue."""
        fills: dict[int, list[OrderPartiallyFilled]] = {}
        for f in self.fills_since(0):
            fills.setdefault(f.client_order_id, []).append(f)
        out = []
        for o in self.open_orders():
            mine = fills.get(o.client_order_id, [])
            status = OrderStatus.PARTIALLY_FILLED if mine else OrderStatus.ACCEPTED
            out.append(_order_report(self.name, o, int(status), o.qty, mine))
        return out

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        """The order's status at the venue (None: the venue never saw it, or cannot say)."""
        for r in self.order_status_reports():
            if r.client_order_id == client_order_id:
                return r
        if not self.knows_order(client_order_id):
            return None
        mine = [f for f in self.fills_since(0) if f.client_order_id == client_order_id]
        if not mine:
            return None  # refused or canceled before any fill: nothing left to describe it
        last = mine[-1]
        status = OrderStatus.FILLED if type(last) is OrderFilled else OrderStatus.CANCELED
        return OrderStatusReport(
            venue=self.name,
            client_order_id=client_order_id,
            instrument_id=last.instrument_id,
            side=last.side,
            order_type=0,
            status=int(status),
            px=last.fill_px,
            open_qty=0,
            filled_qty=sum(f.fill_qty for f in mine),
            venue_order_id=last.venue_order_id,
        )

    def fill_reports(self, since_fill_id: int = 0) -> list[FillReport]:
        """Every fill after ``since_fill_id``, oldest first."""
        return [FillReport.from_fill(self.name, f) for f in self.fills_since(since_fill_id)]

    def position_reports(self) -> list[PositionReport]:
        """The venue's net position per instrument that has traded."""
        return [
            PositionReport(venue=self.name, instrument_id=iid, qty=q)
            for iid, q in sorted(self.positions().items())
        ]

    def balances(self) -> list[BalanceReport]:
        """Cash per currency; a venue that keeps no cash (the simulated one) has none."""
        return []

    def close(self) -> None:
        """Let go of the venue's connections and files (nothing by default)."""
