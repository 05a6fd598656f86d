"""Acting on next-mid-change forecasts through the simulated exchange, after every cost.

A direction that is right 65 % of the time is worth nothing if the move it calls is smaller than
the spread and fees paid to act on it. This replays an event stream's touch into ``SimExchange``
(its matching, latency and fees) and trades the cost-aware rule: enter only when the expected
move of the mid beats the whole round trip (the spread crossed in and out, two taker fees, a
margin), hold until the mid has changed (the forecast's horizon) or ``max_hold_ns``, and leave at
least ``min_gap_ns`` between entries. The same rule run on shuffled and on reversed forecasts is
the control that says whether an edge is real.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.enums import OrderType, Side, TimeInForce
from engine.instruments import Instrument
from engine.messages import NewOrder, OrderPartiallyFilled, Quote
from engine.venues.sim import SimExchange


@dataclass(frozen=True)
class CostRule:
    """``expected_move``: mean absolute change of the mid at its next change (price units,
    from the training block); ``margin``: how much the expected edge must exceed the cost."""

    expected_move: float
    taker_fee_bps: float = 0.3
    margin: float = 1.0  # 0: no cost check (then ``conviction`` alone decides)
    conviction: float = 0.0  # trade only when |P(up) - 0.5| >= this
    qty: int = 100
    max_hold_ns: int = 5 * 10**9
    min_gap_ns: int = 10**8
    latency_ns: int = 0


@dataclass
class PnL:
    name: str
    trades: int  # round trips
    gross: float  # currency, before fees
    fees: float
    net: float
    hit_rate: float  # round trips that made money net of fees

    @property
    def per_trade(self) -> float:
        return self.net / self.trades if self.trades else 0.0


def simulate(
    name: str,
    ts: np.ndarray,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
    p_up: np.ndarray,
    tick_size: float,
    rule: CostRule,
    lot_size: float = 1.0,
) -> PnL:
    """Trade the rule over one stream's touch (1-D arrays: the best level after each event);
    prices are integers of ``tick_size`` currency. An order decided at an event reaches the
    venue ``latency_ns`` later, at the first event from then on, as an IOC at the price decided
    (the book may have moved away: then it does not fill)."""
    ins = Instrument(instrument_id=1, symbol="X", tick_size=tick_size, lot_size=lot_size)
    venue = SimExchange([ins], taker_fee_bps=rule.taker_fee_bps, seed=0)
    book = _Book(venue, tick_size * lot_size)
    entry_ts, entry_mid, last_entry = 0, 0.0, -(10**18)
    pending: tuple[int, int, int, int] | None = None  # (due ns, side, px, qty)
    trips: list[float] = []
    open_cash = 0.0
    for i in range(len(ts)):
        t = int(ts[i])
        book.quote(t, int(bid_px[i]), int(bid_sz[i]), int(ask_px[i]), int(ask_sz[i]))
        if pending is not None:
            if t < pending[0]:
                continue
            was = book.pos
            book.take(pending[1], pending[2], pending[3], t)
            pending = None
            if was == 0 and book.pos:
                entry_ts, entry_mid, last_entry = t, 0.5 * (bid_px[i] + ask_px[i]), t
            elif was and book.pos == 0:
                trips.append(book.cash - open_cash)
        if bid_sz[i] <= 0 or ask_sz[i] <= 0 or ask_px[i] <= bid_px[i]:
            continue
        mid = 0.5 * (bid_px[i] + ask_px[i])
        due = t + rule.latency_ns
        if book.pos:
            if mid != entry_mid or t - entry_ts >= rule.max_hold_ns:
                side = Side.SELL if book.pos > 0 else Side.BUY
                pending = (due, side, int(bid_px[i] if book.pos > 0 else ask_px[i]), abs(book.pos))
            continue
        spread = float(ask_px[i] - bid_px[i])
        fee = 2 * rule.taker_fee_bps * 1e-4 * mid
        edge = (2 * p_up[i] - 1) * rule.expected_move
        if abs(p_up[i] - 0.5) < rule.conviction or edge == 0.0:
            continue
        if abs(edge) <= rule.margin * (spread + fee) or t - last_entry < rule.min_gap_ns:
            continue
        side = Side.BUY if edge > 0 else Side.SELL
        open_cash = book.cash
        pending = (due, side, int(ask_px[i] if side == Side.BUY else bid_px[i]), rule.qty)
    gross = book.gross
    if book.pos:  # still open at the end: marked at the last mid (no exit cost: flattering)
        mark = book.pos * 0.5 * (bid_px[-1] + ask_px[-1]) * tick_size * lot_size
        gross += mark
        trips.append(book.cash + mark - open_cash)
    wins = sum(1 for x in trips if x > 0)
    return PnL(
        name, len(trips), gross, book.fees, gross - book.fees, wins / len(trips) if trips else 0.0
    )


class _Book:
    """The venue, its quotes, and our position and cash from its fills."""

    def __init__(self, venue: SimExchange, unit: float) -> None:
        self.venue = venue
        self.tick = unit  # currency per (price unit x size unit)
        self.gross = 0.0  # cash from fills, before fees
        self.fees = 0.0
        self.pos = 0
        self.coid = 0

    @property
    def cash(self) -> float:
        return self.gross - self.fees

    def quote(self, t: int, bp: int, bs: int, ap: int, az: int) -> None:
        self._book(self.venue.on_market_data(Quote(1, bp, bs, ap, az, t, t), t))

    def take(self, side: int, px: int, qty: int, t: int) -> None:
        self.coid += 1
        order = NewOrder(self.coid, 1, 1, side, OrderType.LIMIT, TimeInForce.IOC, px, qty, t, t)
        self._book(self.venue.submit(order, t))

    def _book(self, events: list) -> None:
        for e in events:
            if isinstance(e, OrderPartiallyFilled):
                self.gross -= e.side * e.fill_px * e.fill_qty * self.tick
                self.fees += e.fee
                self.pos += e.side * e.fill_qty
