"""ScheduledExecution: work one order through an execution algorithm, configured in config.toml.

Why it exists: the execution algorithms (``engine.algos``) are used from strategies through
``ctx.algo``; this strategy is the smallest useful one — "buy 5,000 AAPL over ten minutes,
following this volume curve" — so the algorithms can be run, backtested and compared from the
config alone, and it shows how a strategy hands an order to one::

    [[strategies]]
    id = 3
    path = "engine.strategies.scheduled:ScheduledExecution"
    instruments = ["AAPL"]
    [strategies.params]
    algo = "vwap"               # twap | vwap | iceberg | pov
    side = "buy"                # buy | sell
    qty = 5000                  # lots
    limit_ticks = 0             # 0: no limit (market children); else a limit this many ticks
                                # through the touch at the start (buy: ask + n, sell: bid - n)
    start_after_s = 0.0         # wait this long after the first quote
    curve = [3, 2, 1, 1, 2, 3]  # VWAP only: the volume curve over the window (or `profile`)
    [strategies.params.algo_params]
    duration_s = 600
    slices = 30

``algo_params`` is passed as it is (see each algorithm's module for its keys); ``curve`` becomes
VWAP's ``w0, w1, ...``. The parent is sent once, on the first quote of the strategy's (first)
instrument; ``parent``, ``fills`` and ``ctx.algo_progress`` tell how it went.
"""

from __future__ import annotations

import math
from typing import Any

from engine.messages import AlgoKind, OrderCanceled, OrderExpired, OrderRejected, Quote, Side
from engine.strategies.base import FillEvent, OrderEvent, Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check

_ALGOS = {
    "twap": AlgoKind.TWAP,
    "vwap": AlgoKind.VWAP,
    "iceberg": AlgoKind.ICEBERG,
    "pov": AlgoKind.POV,
}


class ScheduledParams(StrategyParams):
    """``[strategies.params]`` of ``ScheduledExecution`` (the module docstring shows a table)."""

    algo: str = "twap"  # twap | vwap | iceberg | pov
    side: str = "buy"  # buy | sell
    qty: int = 100  # lots
    limit_ticks: int = 0  # 0: no limit; else this many ticks through the touch at the start
    start_after_s: float = 0.0  # wait this long after the first quote
    curve: list[float] | None = None  # VWAP only: the volume curve (becomes w0, w1, ...)
    algo_params: dict[str, float] = {}  # passed to the algorithm as they are

    def __post_init__(self) -> None:
        self.algo = self.algo.lower()
        self.side = self.side.lower()
        check(self.algo in _ALGOS, "algo", f"must be one of {', '.join(_ALGOS)}, not {self.algo!r}")
        check(self.side in ("buy", "sell"), "side", f"must be 'buy' or 'sell', not {self.side!r}")
        check(self.qty > 0, "qty", "must be > 0")
        check(
            math.isfinite(self.start_after_s) and self.start_after_s >= 0,
            "start_after_s",
            "must be >= 0",
        )
        check(
            self.curve is None or self.algo == "vwap",
            "curve",
            "is a VWAP parameter (algo = 'vwap')",
        )


class ScheduledExecution(Strategy):
    Params = ScheduledParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: ScheduledParams = self.p
        self.kind = _ALGOS[p.algo]
        self.side = int(Side.BUY if p.side == "buy" else Side.SELL)
        self.qty = p.qty
        self.limit_ticks = p.limit_ticks
        self.start_after_ns = int(p.start_after_s * 1e9)
        self.algo_params = dict(p.algo_params)
        for i, w in enumerate(p.curve or ()):
            self.algo_params[f"w{i}"] = float(w)
        self.instrument_id = ctx.instrument_ids[0]
        self.first_quote_ns: int | None = None
        self.parent = 0  # the parent's client order id once sent
        self.fills: list[FillEvent] = []
        self.ended: OrderEvent | None = None

    def on_quote(self, q: Quote) -> None:
        if self.parent or q.instrument_id != self.instrument_id:
            return
        if self.first_quote_ns is None:
            self.first_quote_ns = self.ctx.now_ns
        if self.ctx.now_ns - self.first_quote_ns < self.start_after_ns:
            return
        px = None
        if self.limit_ticks:
            touch = q.ask_px if self.side == Side.BUY else q.bid_px
            if touch <= 0:
                return
            px = touch + self.side * self.limit_ticks
        self.parent = self.ctx.algo(
            self.kind, self.instrument_id, self.side, self.qty, self.algo_params, px=px
        )

    def on_fill(self, ev: FillEvent) -> None:
        if ev.client_order_id == self.parent:
            self.fills.append(ev)

    def on_order_event(self, ev: OrderEvent) -> None:
        if ev.client_order_id != self.parent:
            return
        if isinstance(ev, OrderCanceled | OrderExpired | OrderRejected):
            self.ended = ev  # (a refused cancel or replace is another type: the parent goes on)
