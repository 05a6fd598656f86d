"""A two-sided market maker: one bid and one ask around a fair price, skewed by inventory.

How it quotes (per instrument it trades):

- **fair price** = the microprice (size-weighted mid, which leans toward where the price is about
  to go) or the plain mid (``use_microprice = false``), in ticks;
- **reservation price** = fair − ``skew_ticks_per_lot`` × position: when long, both quotes move
  down so the ask is more likely to be hit and the bid less, which pulls inventory back to zero;
- **quotes** = bid at ⌊reservation − ``half_spread_ticks``⌋, ask at ⌈reservation +
  ``half_spread_ticks``⌉, each ``size`` lots, clamped so they never cross the market (a maker that
  crosses pays the taker fee and gets adverse selection for free);
- **inventory cap**: the side that would take |position| beyond ``max_inventory`` lots, counting
  every other open order of ours on that side and the quote in full, is not quoted (and
  canceled if it rests);
- **re-quoting**: resting quotes are moved with a replace only when the reservation price has moved
  by at least ``requote_ticks`` since the last quote. Re-quoting on every tick would burn order
  rate limits and lose queue priority for nothing; the threshold is the knob between staleness
  and churn. A quote is never replaced while the venue has not acknowledged it or while a
  previous replace/cancel is in flight (at most one request per order in flight).

It reacts to market data (quotes and book changes) and to its own fills (a fill moves the
inventory skew and empties a side). It does not react to rejects: re-sending on a reject would
loop against a risk limit; the next tick retries.

Params: ``MarketMakerParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.messages import OrderFlag, Quote, Side
from engine.strategies.base import FillEvent, Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check


class MarketMakerParams(StrategyParams):
    """``[strategies.params]`` of ``MarketMaker`` (ticks and lots of each instrument)."""

    half_spread_ticks: float = 2.0  # quotes sit this far from the reservation price
    size: int = 1  # lots per quote
    skew_ticks_per_lot: float = 0.0  # reservation price moves this much per lot held
    max_inventory: int = 10  # lots; the side that would go past it is not quoted
    requote_ticks: float = 1.0  # re-quote once the reservation price moved this much
    use_microprice: bool = True  # fair price: microprice (true) or mid (false)
    post_only: bool = False  # quotes carry the POST_ONLY flag

    def __post_init__(self) -> None:
        check(
            math.isfinite(self.half_spread_ticks) and self.half_spread_ticks >= 0,
            "half_spread_ticks",
            "must be >= 0",
        )
        check(self.size > 0, "size", "must be > 0")
        check(math.isfinite(self.skew_ticks_per_lot), "skew_ticks_per_lot", "must be finite")
        check(self.max_inventory >= 0, "max_inventory", "must be >= 0")
        check(
            math.isfinite(self.requote_ticks) and self.requote_ticks > 0,
            "requote_ticks",
            "must be > 0",
        )


@dataclass(slots=True)
class _Quoting:
    """Per-instrument state: our two orders and the reservation price they were set at."""

    bid_coid: int = 0
    ask_coid: int = 0
    last_fair: float | None = None


class MarketMaker(Strategy):
    """Quotes both sides of every instrument it trades (see the module docstring)."""

    Params = MarketMakerParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: MarketMakerParams = self.p
        self.half_spread_ticks = p.half_spread_ticks
        self.size = p.size
        self.skew_ticks_per_lot = p.skew_ticks_per_lot
        self.max_inventory = p.max_inventory
        self.requote_ticks = p.requote_ticks
        self.use_microprice = p.use_microprice
        self.flags = int(OrderFlag.POST_ONLY) if p.post_only else 0
        self.state: dict[int, _Quoting] = {iid: _Quoting() for iid in ctx.instrument_ids}

    # --- callbacks ---------------------------------------------------------------------------
    def on_quote(self, q: Quote) -> None:
        self.update(q.instrument_id)

    def on_book(self, instrument_id: int) -> None:
        self.update(instrument_id)

    def on_fill(self, ev: FillEvent) -> None:
        self.update(ev.instrument_id)

    def on_stop(self) -> None:
        self.ctx.cancel_all()

    # --- quoting -----------------------------------------------------------------------------
    def fair(self, instrument_id: int) -> float | None:
        """Fair price in ticks before inventory skew."""
        if self.use_microprice:
            return self.ctx.microprice(instrument_id)
        return self.ctx.mid(instrument_id)

    def targets(self, instrument_id: int) -> tuple[float, int, int] | None:
        """(reservation price, bid px, ask px) for the current market and inventory."""
        ctx = self.ctx
        fair = self.fair(instrument_id)
        bid = ctx.best_bid(instrument_id)
        ask = ctx.best_ask(instrument_id)
        if fair is None or bid is None or ask is None:
            return None
        res = fair - self.skew_ticks_per_lot * ctx.position(instrument_id)
        bid_px = math.floor(res - self.half_spread_ticks + 1e-9)
        ask_px = math.ceil(res + self.half_spread_ticks - 1e-9)
        if ask_px <= bid_px:
            ask_px = bid_px + 1
        bid_px = min(bid_px, ask[0] - 1)  # never cross the market
        ask_px = max(ask_px, bid[0] + 1)
        return res, bid_px, ask_px

    def update(self, instrument_id: int) -> None:
        """Bring our two quotes in line with the current targets."""
        st = self.state.get(instrument_id)
        if st is None:
            return
        t = self.targets(instrument_id)
        if t is None:
            return
        res, bid_px, ask_px = t
        pos = self.ctx.position(instrument_id)
        moved = st.last_fair is None or abs(res - st.last_fair) >= self.requote_ticks
        # worst case: the position, every other open order on that side, and this quote in full
        buy = pos + self._other_open(instrument_id, Side.BUY, st.bid_coid) + self.size
        sell = pos - self._other_open(instrument_id, Side.SELL, st.ask_coid) - self.size
        in_sync = True
        in_sync &= self._side(st, instrument_id, Side.BUY, bid_px, buy <= self.max_inventory, moved)
        in_sync &= self._side(
            st, instrument_id, Side.SELL, ask_px, sell >= -self.max_inventory, moved
        )
        if moved and in_sync:
            st.last_fair = res

    def _other_open(self, iid: int, side: Side, quote_coid: int) -> int:
        """Open lots on ``side`` of ``iid`` besides our quote there (one still being canceled,
        one left from before a re-quote): they count against ``max_inventory`` too."""
        return sum(
            o.leaves_qty
            for o in self.ctx.open_orders.values()
            if o.instrument_id == iid and o.side == side and o.client_order_id != quote_coid
        )

    def _side(
        self, st: _Quoting, iid: int, side: Side, px: int, allowed: bool, moved: bool
    ) -> bool:
        """Manage one side; False when a request in flight kept it from reaching the target."""
        ctx = self.ctx
        coid = st.bid_coid if side == Side.BUY else st.ask_coid
        o = ctx.open_orders.get(coid) if coid else None
        if not allowed:
            if o is not None and not o.pending_cancel:
                ctx.cancel(coid)
            return True
        if o is None:
            if px <= 0:
                return True
            if side == Side.BUY:
                st.bid_coid = ctx.buy(iid, self.size, px, flags=self.flags)
            else:
                st.ask_coid = ctx.sell(iid, self.size, px, flags=self.flags)
            return True
        if not moved or (o.px == px and o.leaves_qty == self.size):
            return True
        if not o.accepted or o.pending_replace or o.pending_cancel or px <= 0:
            return False
        ctx.replace(coid, px, self.size)
        return True
