"""A momentum taker: fast/slow EMA crossover of the mid, long or short a fixed size.

Per instrument it keeps two exponential moving averages of the mid price (in ticks), updated on
every quote or book change. After ``warmup`` updates, when the fast EMA is above the slow one by
more than ``threshold_ticks`` the target position is ``+size``; below by more than that, ``-size``;
in between, the target is unchanged (hysteresis, so noise around the crossing does not flip-flop).
When the target changes it sends the difference as one taking order: a marketable IOC limit
(``order = "ioc"``: priced ``slippage_ticks`` through the opposite best, so it takes what is there
and never chases the book) or a plain market order (``order = "market"``).

Why the decisions ignore fills, positions and order events: the position a fill produces arrives
after the execution latency, so a strategy that reads it decides differently depending on how
fast the venue answered — the same market data would give different orders in a backtest with
1 ms latency, one with 10 ms, and the live engine. This one decides from market data and its own
*target* position only, so the same market data always yields the same orders (ids, sides, sizes,
prices) whatever the latency; that makes backtests reproducible and live-vs-backtest comparisons
meaningful. The price of that choice: if an IOC order is not (fully) filled the actual position
lags the target until the next crossing; the difference is visible in the portfolio and risk,
which track real fills.

Params: ``fast`` (10, EMA span in updates), ``slow`` (40), ``size`` (1), ``order`` ("ioc"),
``slippage_ticks`` (2), ``warmup`` (= ``slow``), ``threshold_ticks`` (0.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.messages import OrderType, Quote, TimeInForce
from engine.strategies.base import Strategy, StrategyContext


@dataclass(slots=True)
class _Signal:
    fast: float = 0.0
    slow: float = 0.0
    n: int = 0
    target: int = 0


class MomentumTaker(Strategy):
    """EMA-crossover taker (see the module docstring for why it ignores fills)."""

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p = self.params
        fast = int(p.get("fast", 10))
        slow = int(p.get("slow", 40))
        if not 1 <= fast < slow:
            raise ValueError(f"MomentumTaker: need 1 <= fast < slow, got fast={fast} slow={slow}")
        self.alpha_fast = 2.0 / (fast + 1)
        self.alpha_slow = 2.0 / (slow + 1)
        self.size = int(p.get("size", 1))
        if self.size <= 0:
            raise ValueError("MomentumTaker: size must be > 0")
        order = str(p.get("order", "ioc")).lower()
        if order not in ("ioc", "market"):
            raise ValueError(f"MomentumTaker: order must be 'ioc' or 'market', got {order!r}")
        self.use_market = order == "market"
        self.slippage_ticks = int(p.get("slippage_ticks", 2))
        self.warmup = int(p.get("warmup", slow))
        self.threshold_ticks = float(p.get("threshold_ticks", 0.0))
        self.signals: dict[int, _Signal] = {iid: _Signal() for iid in ctx.instrument_ids}

    def on_quote(self, q: Quote) -> None:
        self.update(q.instrument_id)

    def on_book(self, instrument_id: int) -> None:
        self.update(instrument_id)

    def target(self, instrument_id: int) -> int:
        """The position this strategy has decided to hold (not necessarily the filled one)."""
        return self.signals[instrument_id].target

    def update(self, instrument_id: int) -> None:
        s = self.signals.get(instrument_id)
        mid = self.ctx.mid(instrument_id)
        if s is None or mid is None:
            return
        if s.n == 0:
            s.fast = s.slow = mid
        else:
            s.fast += self.alpha_fast * (mid - s.fast)
            s.slow += self.alpha_slow * (mid - s.slow)
        s.n += 1
        if s.n <= self.warmup:
            return
        diff = s.fast - s.slow
        if diff > self.threshold_ticks:
            want = self.size
        elif diff < -self.threshold_ticks:
            want = -self.size
        else:
            return
        if want == s.target:
            return
        delta = want - s.target
        s.target = want
        self._take(instrument_id, delta)

    def _take(self, iid: int, delta: int) -> None:
        ctx = self.ctx
        qty = abs(delta)
        if self.use_market:
            if delta > 0:
                ctx.buy(iid, qty)
            else:
                ctx.sell(iid, qty)
            return
        if delta > 0:
            ask = ctx.best_ask(iid)
            assert ask is not None  # a mid exists, so both sides do
            ctx.buy(iid, qty, ask[0] + self.slippage_ticks, OrderType.LIMIT, TimeInForce.IOC)
        else:
            bid = ctx.best_bid(iid)
            assert bid is not None
            px = max(1, bid[0] - self.slippage_ticks)
            ctx.sell(iid, qty, px, OrderType.LIMIT, TimeInForce.IOC)
