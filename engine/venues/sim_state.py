"""The simulated exchange's per-order, per-instrument and in-flight request state.

Shared by the matching core (``engine.venues.sim``), the market-flow fills
(``engine.venues.sim_flow``) and the durable record (``engine.venues.sim_record``), which
rebuilds these from the record file after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.book import L2Book
from engine.messages import ExchangeStatusKind, NewOrder, Side

__all__ = ["DAY_NS", "SimInstrument", "SimOrder", "SimRequest"]

DAY_NS = 86_400 * 1_000_000_000
#: the key of a venue-wide status (``ExchangeStatus.instrument_id`` -1)
VENUE_KEY = -1
#: sides as plain ints for the jitted book calls (an IntEnum argument costs a numba typeof)
BUY = int(Side.BUY)
SELL = int(Side.SELL)
STATUS_NAMES = {
    int(ExchangeStatusKind.HALTED): "venue halt",
    int(ExchangeStatusKind.CIRCUIT_BREAKER): "exchange circuit breaker",
}


@dataclass(slots=True, eq=False)
class SimOrder:
    """Our order as the venue holds it."""

    order: NewOrder  # as submitted
    venue_order_id: int
    side: int
    px: int  # current limit price (follows replaces); 0 for market orders
    qty: int  # current total quantity = cum + leaves
    cum: int = 0
    leaves: int = 0
    ahead: int = 0  # market size ahead of us at our price level
    prio: int = 0  # time priority: smaller is earlier
    expire_ns: int = 0  # DAY / GTD expiry (0 = none)
    is_open: bool = False


@dataclass(slots=True, eq=False)
class SimInstrument:
    """Per-instrument venue state."""

    tick_size: float
    lot_size: float
    book: L2Book
    #: (side, px) -> size our takers consumed at that level since the market last updated it
    consumed: dict[tuple[int, int], int] = field(default_factory=dict)
    #: (side, px) -> traded size already applied to queues, expected to show up as a decrease
    pending_trades: dict[tuple[int, int], int] = field(default_factory=dict)
    #: (side, px) -> our resting orders at that level in priority order
    resting: dict[tuple[int, int], list[SimOrder]] = field(default_factory=dict)
    seen_trade: bool = False
    last_was_trade: bool = False
    #: why trading is stopped (its own status, else the venue's); "" = open
    halt_reason: str = ""


@dataclass(slots=True)
class SimRequest:
    arrival_ns: int
    seq: int
    msg: Any = field(compare=False)
