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

Params: ``MomentumParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.messages import OrderType, Quote, TimeInForce
from engine.strategies.base import Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check


class MomentumParams(StrategyParams):
    """``[strategies.params]`` of ``MomentumTaker``."""

    fast: int = 10  # fast EMA span, in updates (quotes or book changes)
    slow: int = 40  # slow EMA span; must be > fast
    size: int = 1  # target position, lots (long +size or short -size)
    order: str = "ioc"  # "ioc": marketable limit through the opposite best | "market"
    slippage_ticks: int = 2  # how far through the opposite best an "ioc" order is priced
    warmup: int | None = None  # updates before trading (None: = slow)
    threshold_ticks: float = 0.0  # |fast - slow| needed to change the target (hysteresis)
    notional: float = 0.0  # > 0: the size in the instrument's currency instead of ``size``,
    # in whole lots at the first mid (a real venue's lot is its quantity step, 1e-5 BTC)
    long_only: bool = False  # a falling market is a flat target, never a short (spot venues)
    # > 0: volatility targeting instead of ``size`` / ``notional``: each new target is sized so
    # its sigma over one [risk] return interval is this much money (the risk gate's sigma,
    # window, EWMA or HAR per [risk] volatility: engine.vol_sigma); flat while sigma is unknown
    vol_target: float = 0.0
    # what counts as an update: "book" every quote and book change (deeper levels too), "top"
    # quotes and changes of the best bid / ask only (on an L2 feed: the fast replay skips the
    # deltas below the top without calling the strategy)
    updates_on: str = "book"

    def __post_init__(self) -> None:
        check(
            self.updates_on in ("book", "top"),
            "updates_on",
            f"must be 'book' or 'top', not {self.updates_on!r}",
        )
        check(
            1 <= self.fast < self.slow,
            "fast",
            f"need 1 <= fast < slow, got {self.fast}, {self.slow}",
        )
        check(self.size > 0, "size", "must be > 0")
        self.order = self.order.lower()
        check(
            self.order in ("ioc", "market"),
            "order",
            f"must be 'ioc' or 'market', not {self.order!r}",
        )
        check(self.slippage_ticks >= 0, "slippage_ticks", "must be >= 0")
        check(self.warmup is None or self.warmup >= 0, "warmup", "must be >= 0")
        check(
            math.isfinite(self.notional) and self.notional >= 0,
            "notional",
            "must be >= 0 (0 = size)",
        )
        check(
            math.isfinite(self.vol_target) and self.vol_target >= 0,
            "vol_target",
            "must be >= 0 (0 = size / notional)",
        )
        check(
            math.isfinite(self.threshold_ticks) and self.threshold_ticks >= 0,
            "threshold_ticks",
            "must be >= 0",
        )


@dataclass(slots=True)
class _Signal:
    fast: float = 0.0
    slow: float = 0.0
    n: int = 0
    target: int = 0


class MomentumTaker(Strategy):
    """EMA-crossover taker (see the module docstring for why it ignores fills)."""

    Params = MomentumParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: MomentumParams = self.p
        self.alpha_fast = 2.0 / (p.fast + 1)
        self.alpha_slow = 2.0 / (p.slow + 1)
        self.size = p.size
        self.notional = p.notional
        self.long_only = p.long_only
        self.vol_target = p.vol_target
        self.sizes: dict[int, int] = {}  # per instrument, fixed at its first mid (notional)
        self.use_market = p.order == "market"
        self.slippage_ticks = p.slippage_ticks
        self.warmup = p.slow if p.warmup is None else p.warmup
        self.threshold_ticks = p.threshold_ticks
        self.signals: dict[int, _Signal] = {iid: _Signal() for iid in ctx.instrument_ids}
        if p.updates_on == "top":  # the host dispatches by it (engine.strategies.base)
            self.subscriptions = frozenset({"quote", "top"})

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
        if self.vol_target > 0:
            self.ctx.observe_volatility(instrument_id)  # every mid change: the gate's window
        if s.n == 0:
            s.fast = s.slow = mid
            self.sizes[instrument_id] = self._size(instrument_id, mid)
        else:
            s.fast += self.alpha_fast * (mid - s.fast)
            s.slow += self.alpha_slow * (mid - s.slow)
        s.n += 1
        if s.n <= self.warmup:
            return
        diff = s.fast - s.slow
        if diff > self.threshold_ticks:
            side = 1
        elif diff < -self.threshold_ticks:
            side = 0 if self.long_only else -1
        else:
            return
        if self.vol_target > 0:  # sized at each entry, held while the side holds (no churn)
            if s.target and (s.target > 0) == (side > 0) and side:
                return
            want = side * self.ctx.vol_target_lots(instrument_id, self.vol_target)
        else:
            want = side * self.sizes[instrument_id]
        if want == s.target:
            return
        delta = want - s.target
        s.target = want
        self._take(instrument_id, delta)

    def _size(self, iid: int, mid: float) -> int:
        """The target size in lots: ``size``, or ``notional`` at ``mid`` rounded up to lots."""
        if self.notional <= 0:
            return self.size
        per_lot = self.ctx.instrument(iid).notional(max(1, round(mid)), 1)
        return max(1, math.ceil(self.notional / per_lot - 1e-9))

    def _take(self, iid: int, delta: int) -> None:
        ctx = self.ctx
        qty = abs(delta)
        if self.long_only and delta < 0:
            # sell what was bought, never more: an IOC buy that missed (or filled in part) leaves
            # the target ahead of the position, and selling the target's size would go short
            qty = min(qty, max(0, ctx.position(iid)))
            if not qty:
                return
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
