"""A forecast taker: trades the model's forecasts (``Forecast`` messages from the infer process).

Direction comes from the point forecast, size from the forecast's uncertainty:

- expected move ``mu`` = the sum of the point forecast's first ``steps`` log returns;
- uncertainty = the width between the lowest and highest quantile over the same steps (summed
  per step: an upper bound of the width of the sum, so the strategy errs toward smaller size);
- conviction = ``|mu| / (width / 2)``, capped at 1: a forecast whose whole band is on one side of
  zero gets the full ``size``; one whose band straddles zero widely gets a fraction;
- target position = ``sign(mu) * round(size * conviction)``, or 0 when ``|mu|`` is under
  ``min_edge_bps`` (not worth the spread). The difference to the previous target is sent as one
  marketable IOC limit order, like ``MomentumTaker``.

Like ``MomentumTaker`` it decides from its inputs and its own target only — not from fills — so
the same forecasts give the same orders whatever the execution latency. A forecast older than
``max_age_ms`` (by the strategy clock versus the forecast's ``ts_recv``) is ignored.

Params: ``ForecastParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
from typing import Any

from engine.messages import Forecast, OrderType, TimeInForce
from engine.strategies.base import Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check


class ForecastParams(StrategyParams):
    """``[strategies.params]`` of ``ForecastTaker``."""

    size: int = 10  # lots at full conviction
    steps: int = 1  # forecast steps summed into the expected move
    min_edge_bps: float = 0.5  # smaller expected moves give a flat target
    slippage_ticks: int = 2  # how far through the opposite best the IOC order is priced
    max_age_ms: float = 0.0  # forecasts older than this are ignored (0 = no limit)

    def __post_init__(self) -> None:
        check(self.size > 0, "size", "must be > 0")
        check(self.steps > 0, "steps", "must be > 0")
        check(
            math.isfinite(self.min_edge_bps) and self.min_edge_bps >= 0,
            "min_edge_bps",
            "must be >= 0",
        )
        check(self.slippage_ticks >= 0, "slippage_ticks", "must be >= 0")
        check(
            math.isfinite(self.max_age_ms) and self.max_age_ms >= 0,
            "max_age_ms",
            "must be >= 0 (0 = no limit)",
        )


class ForecastTaker(Strategy):
    """Takes toward a target position set by each forecast (see the module docstring)."""

    Params = ForecastParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: ForecastParams = self.p
        self.size = p.size
        self.steps = p.steps
        self.min_edge = p.min_edge_bps * 1e-4
        self.slippage_ticks = p.slippage_ticks
        self.max_age_ns = int(p.max_age_ms * 1e6)
        self.targets: dict[int, int] = dict.fromkeys(ctx.instrument_ids, 0)
        self.forecasts = 0
        self.ignored = 0

    def target_for(self, f: Forecast) -> int | None:
        """The position this forecast asks for (None: the forecast is unusable)."""
        n = min(self.steps, len(f.point))
        if n == 0:
            return None
        mu = math.fsum(f.point[:n])
        if not math.isfinite(mu):
            return None
        if abs(mu) < self.min_edge:
            return 0
        conviction = 1.0
        if len(f.quantiles) >= 2:
            lo, hi = f.quantiles[0], f.quantiles[-1]
            width = math.fsum(hi[:n]) - math.fsum(lo[:n])
            if math.isfinite(width) and width > 0:
                conviction = min(1.0, abs(mu) / (width / 2.0))
        qty = round(self.size * conviction)
        return qty if mu > 0 else -qty

    def on_forecast(self, f: Forecast) -> None:
        iid = f.instrument_id
        if iid not in self.targets:
            return
        if self.max_age_ns and self.ctx.now_ns - f.ts_recv > self.max_age_ns:
            self.ignored += 1
            return
        want = self.target_for(f)
        if want is None:
            self.ignored += 1
            return
        self.forecasts += 1
        delta = want - self.targets[iid]
        if delta == 0:
            return
        ctx = self.ctx
        if delta > 0:
            ask = ctx.best_ask(iid)
            if ask is None:
                return  # no market to take from: the target stays where it was
            ctx.buy(iid, delta, ask[0] + self.slippage_ticks, OrderType.LIMIT, TimeInForce.IOC)
        else:
            bid = ctx.best_bid(iid)
            if bid is None:
                return
            ctx.sell(
                iid, -delta, max(1, bid[0] - self.slippage_ticks), OrderType.LIMIT, TimeInForce.IOC
            )
        self.targets[iid] = want
