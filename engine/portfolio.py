"""Positions, average cost and P&L from fills.

``Portfolio`` keeps, per instrument, the net position in lots (the sum of signed fills — nothing
else moves it), the average entry price of the open position, realized P&L and fees, plus a cash
account. Two independent books are kept on purpose:

- the *cost* view: realized P&L (average-cost method: a fill that reduces the position realizes
  ``(fill px − avg px) × closed qty``; one that crosses zero closes the old position and opens
  the remainder at the fill price) and unrealized P&L against the mark;
- the *cash* view: every fill moves cash by its notional and fee; equity = cash + positions at
  mark.

They must agree — realized + unrealized − fees = equity − initial cash — and the tests check
that they do, which catches sign and average-price mistakes neither view shows alone.

Money is in the instruments' currency (a single currency is assumed for totals); prices are
ticks and sizes lots, converted with each instrument's tick and lot size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.instruments import Instrument, InstrumentTable
from engine.messages import Bar, BookSnapshot, OrderPartiallyFilled, Quote, Trade


@dataclass(slots=True)
class PositionState:
    """One instrument's position; prices in ticks, money in currency."""

    instrument_id: int
    multiplier: float  # currency per (tick × lot)
    position: int = 0
    avg_px: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    mark: int = 0  # 0: never marked (the last fill price is used)
    last_fill_px: int = 0
    fills: int = 0
    bought: int = 0
    sold: int = 0

    @property
    def mark_px(self) -> int:
        return self.mark if self.mark > 0 else self.last_fill_px

    @property
    def unrealized(self) -> float:
        if self.position == 0:
            return 0.0
        return (self.mark_px - self.avg_px) * self.position * self.multiplier

    @property
    def market_value(self) -> float:
        return self.mark_px * self.position * self.multiplier


class Portfolio:
    """Positions and P&L per instrument, from fill events (see the module docstring)."""

    def __init__(
        self, instruments: InstrumentTable | Iterable[Instrument], initial_cash: float = 0.0
    ) -> None:
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        self.initial_cash = float(initial_cash)
        self.cash = float(initial_cash)
        self.positions: dict[int, PositionState] = {
            ins.instrument_id: PositionState(ins.instrument_id, ins.tick_size * ins.lot_size)
            for ins in self.instruments
        }
        self.fill_count = 0
        self.unknown_fills = 0

    def on_fill(self, ev: OrderPartiallyFilled) -> None:
        """Apply one fill (OrderPartiallyFilled or OrderFilled); other events are ignored."""
        if not isinstance(ev, OrderPartiallyFilled):
            return
        p = self.positions.get(ev.instrument_id)
        if p is None:
            self.unknown_fills += 1
            return
        qty = ev.fill_qty
        if qty <= 0:
            return
        signed = qty if ev.side > 0 else -qty
        px = ev.fill_px
        self.fill_count += 1
        p.fills += 1
        p.last_fill_px = px
        if signed > 0:
            p.bought += qty
        else:
            p.sold += qty
        p.fees += ev.fee
        self.cash -= signed * px * p.multiplier + ev.fee

        pos = p.position
        if pos == 0 or (pos > 0) == (signed > 0):  # opening or adding
            new = pos + signed
            p.avg_px = (p.avg_px * abs(pos) + px * qty) / abs(new)
            p.position = new
            return
        closed = min(qty, abs(pos))
        direction = 1 if pos > 0 else -1
        p.realized += (px - p.avg_px) * closed * direction * p.multiplier
        p.position = pos + signed
        if p.position == 0:
            p.avg_px = 0.0
        elif (p.position > 0) != (pos > 0):  # crossed through zero: the rest opens at px
            p.avg_px = float(px)

    def on_event(self, ev: object) -> None:
        """Convenience: fills update the portfolio, every other event is ignored."""
        self.on_fill(ev)  # type: ignore[arg-type]

    def mark(self, instrument_id: int, px_ticks: int) -> None:
        """Set the mark price (ticks) used for unrealized P&L and equity."""
        p = self.positions.get(instrument_id)
        if p is not None and px_ticks > 0:
            p.mark = int(px_ticks)

    def on_market_data(self, msg: object) -> None:
        """Mark from market data: mid of a quote/snapshot top (rounded down), a trade price, or
        a bar close."""
        if isinstance(msg, Quote):
            if msg.bid_qty > 0 and msg.ask_qty > 0:
                self.mark(msg.instrument_id, (msg.bid_px + msg.ask_px) // 2)
        elif isinstance(msg, Trade):
            self.mark(msg.instrument_id, msg.px)
        elif isinstance(msg, Bar):
            self.mark(msg.instrument_id, msg.close)
        elif isinstance(msg, BookSnapshot) and msg.bid_px and msg.ask_px:
            self.mark(msg.instrument_id, (msg.bid_px[0] + msg.ask_px[0]) // 2)

    # --- views -------------------------------------------------------------------------------
    def position(self, instrument_id: int) -> int:
        p = self.positions.get(instrument_id)
        return 0 if p is None else p.position

    def realized(self) -> float:
        return sum(p.realized for p in self.positions.values())

    def unrealized(self) -> float:
        return sum(p.unrealized for p in self.positions.values())

    def fees(self) -> float:
        return sum(p.fees for p in self.positions.values())

    def equity(self) -> float:
        """Cash plus every position at its mark."""
        return self.cash + sum(p.market_value for p in self.positions.values())

    def net_pnl(self) -> float:
        """Realized + unrealized − fees (equals equity − initial cash)."""
        return self.realized() + self.unrealized() - self.fees()

    def summary(self) -> dict[str, Any]:
        """Totals and one entry per instrument, plain types only (ready for JSON)."""
        per = {
            iid: {
                "position": p.position,
                "avg_px": p.avg_px,
                "mark": p.mark_px,
                "realized": p.realized,
                "unrealized": p.unrealized,
                "fees": p.fees,
                "fills": p.fills,
                "bought": p.bought,
                "sold": p.sold,
            }
            for iid, p in self.positions.items()
        }
        return {
            "positions": {iid: p.position for iid, p in self.positions.items()},
            "realized": self.realized(),
            "unrealized": self.unrealized(),
            "fees": self.fees(),
            "net_pnl": self.net_pnl(),
            "cash": self.cash,
            "equity": self.equity(),
            "fills": self.fill_count,
            "instruments": per,
        }
