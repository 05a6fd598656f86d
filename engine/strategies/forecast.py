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
the same forecasts give the same orders whatever the execution latency.

Stale forecasts (docs/forecasting.md, "Serving guardrails"): a forecast that arrives more than
``max_age_ms`` after the tick it was computed from (strategy clock versus its ``ts_origin``) is
ignored: the engine is behind, and risk would refuse orders that old anyway. And a target rests on
its forecast only while the market has not moved on: once an instrument's quotes are
``stale_bars`` of the forecast's bars (venue clock, ``ts_event`` + ``stale_bars`` x ``bar_ns``;
tick bars: the spacing of its last two forecasts) past it with no newer forecast, the target is
stale, counted, and per ``stale``: "flatten" takes it to 0 (no position on no information),
"hold" keeps it. The infer process stopping, its model refused, bars that stopped closing: each
ends in a stale target rather than a position held forever on an old forecast.

Params: ``ForecastParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
from typing import Any

from engine.messages import Forecast, OrderType, Quote, TimeInForce
from engine.strategies.base import Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check


class ForecastParams(StrategyParams):
    """``[strategies.params]`` of ``ForecastTaker``."""

    size: int = 10  # lots at full conviction
    steps: int = 1  # forecast steps summed into the expected move
    min_edge_bps: float = 0.5  # smaller expected moves give a flat target
    slippage_ticks: int = 2  # how far through the opposite best the IOC order is priced
    max_age_ms: float = 1000.0  # older on arrival (vs ts_origin) is ignored; 0 = no limit. 1000:
    # [risk] max_intent_age_ms's default, past which risk refuses the orders anyway
    stale_bars: float = 3.0  # bars of market (venue clock) a target outlives its forecast; 0 = ever
    stale: str = "flatten"  # flatten | hold: what a stale target does
    source: str = "bar"  # bar | micro: which model's forecasts it trades (the ring carries both
    # when [inference] micro_model_dir is set; a micro forecast has p_up >= 0)

    def __post_init__(self) -> None:
        check(self.size > 0, "size", "must be > 0")
        check(self.source in ("bar", "micro"), "source", 'must be "bar" or "micro"')
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
        check(
            math.isfinite(self.stale_bars) and self.stale_bars >= 0,
            "stale_bars",
            "must be >= 0 (0 = never stale)",
        )
        check(self.stale in ("flatten", "hold"), "stale", 'must be "flatten" or "hold"')


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
        self.stale_bars = p.stale_bars
        self.flatten = p.stale == "flatten"
        self.targets: dict[int, int] = dict.fromkeys(ctx.instrument_ids, 0)
        #: per instrument: the venue time its target goes stale (None: no live forecast)
        self.stale_at: dict[int, int | None] = dict.fromkeys(ctx.instrument_ids)
        self._last_event: dict[int, int] = dict.fromkeys(ctx.instrument_ids, 0)
        self._venue_now: dict[int, int] = dict.fromkeys(ctx.instrument_ids, 0)
        self.forecasts = 0
        self.ignored = 0
        self.stale_count = 0  # targets that went stale
        if not self.stale_bars:
            self.subscriptions = frozenset({"forecast"})  # no quote needed

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

    def _stale_deadline(self, f: Forecast) -> int | None:
        """The venue time past which this forecast's target is stale (None: never known)."""
        if not self.stale_bars or f.ts_event <= 0:
            return None
        last = self._last_event[f.instrument_id]
        self._last_event[f.instrument_id] = f.ts_event
        bar = f.bar_ns or (f.ts_event - last if 0 < last < f.ts_event else 0)
        if bar > 0:
            return f.ts_event + int(self.stale_bars * bar)
        # an event-time model's first forecast (no spacing seen yet): its age limit, if any
        return f.ts_event + self.max_age_ns if self.max_age_ns else None

    def on_forecast(self, f: Forecast) -> None:
        iid = f.instrument_id
        if iid not in self.targets or (f.p_up >= 0) != (self.p.source == "micro"):
            return  # not ours, or another kind of model's
        if self.max_age_ns and self.ctx.now_ns - f.ts_origin > self.max_age_ns:
            self.ignored += 1
            return
        deadline = self._stale_deadline(f)
        if deadline is not None and self._venue_now[iid] > deadline:
            self.ignored += 1  # the market is already past it (a backlog of forecasts)
            return
        want = self.target_for(f)
        if want is None:
            self.ignored += 1
            return
        self.forecasts += 1
        self.stale_at[iid] = deadline
        self._move_to(iid, want)

    def on_quote(self, q: Quote) -> None:
        """The instrument's venue clock; a target past its forecast's deadline goes stale."""
        iid = q.instrument_id
        if iid not in self.targets:
            return
        self._venue_now[iid] = q.ts_event
        deadline = self.stale_at[iid]
        if deadline is None or q.ts_event <= deadline:
            return
        if deadline >= 0:  # -1: stale already, the flattening waits for a market
            self.stale_count += 1
        self.stale_at[iid] = None
        if self.flatten:
            self._move_to(iid, 0)
            if self.targets[iid]:
                self.stale_at[iid] = -1  # no side to take from yet: again at the next quote

    def _move_to(self, iid: int, want: int) -> None:
        """One marketable IOC order for the difference to the target (none without a market:
        the target stays where it was)."""
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
