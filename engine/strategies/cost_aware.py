"""A cost-aware forecast taker: trades a forecast only when its expected move pays for the trade.

``ForecastTaker`` trades every forecast past a fixed ``min_edge_bps``; on the shipped model that
edge is a tenth of the fees it pays (docs/strategies.md, "Cost-aware forecasts"). This strategy
keeps ``ForecastTaker``'s plumbing (forecast age, stale targets, one marketable IOC order to the
target) and replaces the decision:

- expected move = ``mid x expm1(sum of the point forecast's first steps log returns)``, in ticks;
  conviction = ``|mu| / half the width of the outer quantile band`` over those steps (a forecast
  whose band straddles zero widely is uncertain), required to be at least ``min_conviction``;
- cost of the round trip, in ticks per lot: twice the one-way cost (the exit is assumed to meet
  the same book) of half the spread + the taker fee (the venue's, ``ctx.taker_fees_bps``, unless
  ``taker_fee_bps`` >= 0) + the slippage of walking the visible book for ``size`` lots up to
  the order's limit (best + ``slippage_ticks``; a book too thin there is no trade);
- enter ``size`` lots in the forecast's direction only when ``|move| > margin x cost``;
- exit after ``hold_bars`` forecasts unless the forecast then would enter the same way again
  (the hold renews, no trade), and at once when the forecast's sign turns against the position
  (reversing when the new direction pays for itself);
- turnover: entries only ``min_gap_ms`` apart and at most ``max_trades_per_minute`` /
  ``max_trades_per_hour`` (strategy clock); exits are never held back.

``signal`` chooses what the rule trades, so the controls run through this very code: "model"
(the forecast), "reversed" (the forecast negated: point path and band mirrored), "random" (each
forecast's sign flipped with probability 1/2 from a ``seed``ed generator: the same magnitudes at
the same times, a random direction). An edge that is real beats both controls on the same days.

Params: ``CostAwareParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any

import msgspec

from engine.book import L2Book
from engine.messages import Forecast
from engine.strategies.base import StrategyContext
from engine.strategies.forecast import ForecastParams, ForecastTaker
from engine.strategies.params import check

SIGNALS = ("model", "random", "reversed")
_MINUTE_NS = 60 * 10**9
_HOUR_NS = 3600 * 10**9


class CostAwareParams(ForecastParams):
    """``[strategies.params]`` of ``CostAwareForecast`` (and ``ForecastTaker``'s: size, steps,
    slippage_ticks, max_age_ms, stale_bars, stale)."""

    steps: int = 4  # forecast steps summed into the expected move (the shipped model's horizon)
    min_edge_bps: float = 0.0  # an extra floor on |expected move| (the cost decides first)
    margin: float = 1.0  # enter when expected move > margin x round-trip cost
    hold_bars: int = 0  # forecasts a position is held (0 = steps)
    min_conviction: float = 0.0  # |mu| / half the outer band width, at least this to enter
    taker_fee_bps: float = -1.0  # < 0: the venue's (ctx.taker_fees_bps)
    min_gap_ms: float = 0.0  # between entries (strategy clock); 0 = no limit
    max_trades_per_minute: int = 0  # entries in any 60 s; 0 = no limit
    max_trades_per_hour: int = 0  # entries in any 3600 s; 0 = no limit
    signal: str = "model"  # model | random | reversed (the controls)
    seed: int = 0  # of signal = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(math.isfinite(self.margin) and self.margin >= 0, "margin", "must be >= 0")
        check(self.hold_bars >= 0, "hold_bars", "must be >= 0 (0 = steps)")
        check(
            math.isfinite(self.min_conviction) and self.min_conviction >= 0,
            "min_conviction",
            "must be >= 0",
        )
        check(math.isfinite(self.taker_fee_bps), "taker_fee_bps", "must be a number")
        check(math.isfinite(self.min_gap_ms) and self.min_gap_ms >= 0, "min_gap_ms", "must be >= 0")
        check(self.max_trades_per_minute >= 0, "max_trades_per_minute", "must be >= 0")
        check(self.max_trades_per_hour >= 0, "max_trades_per_hour", "must be >= 0")
        check(self.signal in SIGNALS, "signal", f"must be one of {', '.join(SIGNALS)}")


def transform(f: Forecast, sign: float) -> Forecast:
    """``f`` with its point path times ``sign`` (+1 or -1); a negated band is mirrored, so the
    lowest level stays the lowest path, and a micro forecast's P(up) becomes P(down)."""
    if sign > 0:
        return f
    return msgspec.structs.replace(
        f,
        point=[-x for x in f.point],
        quantiles=[[-x for x in q] for q in reversed(f.quantiles)],
        p_up=1.0 - f.p_up if f.p_up >= 0 else f.p_up,
    )


class CostAwareForecast(ForecastTaker):
    """Enters only when the expected move beats the full cost (see the module docstring)."""

    Params = CostAwareParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: CostAwareParams = self.p
        self.hold_bars = p.hold_bars or p.steps
        self.min_gap_ns = int(p.min_gap_ms * 1e6)
        self._rng = random.Random(p.seed)
        ids = ctx.instrument_ids
        self.held: dict[int, int] = dict.fromkeys(ids, 0)  # forecasts since the entry
        self._entries: deque[int] = deque()  # entry times (strategy clock), the last hour
        self.last_entry_ns: int | None = None
        # what was decided and why (for tests and perf/cost_aware_controls.py)
        self.entries = 0
        self.exits = 0
        self.renewed = 0
        self.below_cost = 0  # forecasts whose expected move did not pay for the trade
        self.throttled = 0  # entries the turnover limits held back
        self.thin = 0  # no price to enter at: a side empty, or too thin within the limit
        self.last_cost: float | None = None  # ticks per lot, the last one computed

    def on_start(self) -> None:
        if self.p.taker_fee_bps < 0:
            unknown = [i for i in self.ctx.instrument_ids if i not in self.ctx.taker_fees_bps]
            if unknown:
                raise ValueError(
                    f"CostAwareForecast: no venue taker fee known for instruments {unknown}; "
                    "set params.taker_fee_bps"
                )

    # --- the signal ------------------------------------------------------------------------
    def signal_of(self, f: Forecast) -> Forecast:
        """The forecast the rule trades: the model's, reversed, or with a random sign."""
        s = self.p.signal
        if s == "reversed":
            return transform(f, -1.0)
        if s == "random":
            return transform(f, 1.0 if self._rng.random() < 0.5 else -1.0)
        return f

    # --- the cost --------------------------------------------------------------------------
    def fee_bps(self, iid: int) -> float | None:
        fee = self.p.taker_fee_bps
        return fee if fee >= 0 else self.ctx.taker_fees_bps.get(iid)

    def walk(self, iid: int, side: int, qty: int) -> float | None:
        """Average fill price (ticks) of taking ``qty`` on ``side`` through the visible book up
        to best + ``slippage_ticks``; None when it cannot fill there."""
        best = self.ctx.best_ask(iid) if side > 0 else self.ctx.best_bid(iid)
        if best is None:
            return None
        limit = best[0] + side * self.slippage_ticks
        book = self.ctx.book(iid)
        levels = book.n_levels(-side) if type(book) is L2Book else 0
        if levels == 0:  # quotes only: the top is all that is visible
            return float(best[0]) if best[1] >= qty else None
        left, paid = qty, 0.0
        for i in range(levels):
            px, q = book.level(-side, i)  # an ask is a level of the sell side
            if (px - limit) * side > 0:
                break
            take = min(left, q)
            paid += take * px
            left -= take
            if left == 0:
                return paid / qty
        return None

    def round_trip_cost(self, iid: int, side: int, qty: int) -> float | None:
        """Ticks per lot of entering ``qty`` on ``side`` and leaving again (twice the one way:
        half spread + taker fee + slippage past the touch); None: no price for it."""
        bid, ask, fee = self.ctx.best_bid(iid), self.ctx.best_ask(iid), self.fee_bps(iid)
        avg = self.walk(iid, side, qty)
        if bid is None or ask is None or fee is None or avg is None:
            return None
        half_spread = (ask[0] - bid[0]) / 2.0
        touch = ask[0] if side > 0 else bid[0]
        one_way = half_spread + fee * 1e-4 * avg + abs(avg - touch)
        return 2.0 * one_way

    # --- the decision ----------------------------------------------------------------------
    def entry_for(self, f: Forecast) -> int:
        """The signed entry this (transformed) forecast pays for, before turnover: 0 if none."""
        iid = f.instrument_id
        n = min(self.steps, len(f.point))
        mu = math.fsum(f.point[:n]) if n else math.nan
        mid = self.ctx.mid(iid)
        if not math.isfinite(mu) or mid is None or mu == 0 or abs(mu) < self.min_edge:
            return 0
        if len(f.quantiles) >= 2 and self.p.min_conviction > 0:
            width = math.fsum(f.quantiles[-1][:n]) - math.fsum(f.quantiles[0][:n])
            if math.isfinite(width) and width > 0 and abs(mu) / (width / 2) < self.p.min_conviction:
                return 0
        side = 1 if mu > 0 else -1
        cost = self.round_trip_cost(iid, side, self.size)
        self.last_cost = cost
        if cost is None:
            self.thin += 1
            return 0
        if abs(mid * math.expm1(mu)) <= self.p.margin * cost:
            self.below_cost += 1
            return 0
        return side * self.size

    def turnover_ok(self) -> bool:
        """May an entry go out now (``min_gap_ms``, ``max_trades_per_minute`` / ``_hour``)?"""
        now, p = self.ctx.now_ns, self.p
        while self._entries and now - self._entries[0] >= _HOUR_NS:
            self._entries.popleft()
        last = self.last_entry_ns
        if self.min_gap_ns and last is not None and now - last < self.min_gap_ns:
            return False
        if p.max_trades_per_hour and len(self._entries) >= p.max_trades_per_hour:
            return False
        if p.max_trades_per_minute:
            in_minute = sum(1 for t in self._entries if now - t < _MINUTE_NS)
            if in_minute >= p.max_trades_per_minute:
                return False
        return True

    def target_for(self, f: Forecast) -> int | None:
        """The position this forecast asks for (``ForecastTaker.on_forecast`` moves to it)."""
        if not f.point:
            return None
        f = self.signal_of(f)
        iid = f.instrument_id
        cur = self.targets[iid]
        mu = math.fsum(f.point[: min(self.steps, len(f.point))])
        if not math.isfinite(mu):
            return None
        if cur != 0:
            self.held[iid] += 1
            against = mu * cur < 0
            if not against and self.held[iid] < self.hold_bars:
                return cur  # holding: no new cost is paid, none is priced
        want = self.entry_for(f)
        if cur != 0 and want == cur:
            self.held[iid] = 0  # the hold is up but the forecast would enter again: renew
            self.renewed += 1
            return cur
        if want != 0 and not self.turnover_ok():
            self.throttled += 1
            want = 0
        return want

    def _move_to(self, iid: int, want: int) -> None:
        """``ForecastTaker``'s order to the target, with the book-keeping of entries and exits
        (a stale target flattened by ``ForecastTaker`` is an exit too)."""
        before = self.targets[iid]
        super()._move_to(iid, want)
        after = self.targets[iid]
        if after == before:
            return
        if before != 0:
            self.exits += 1
        if after != 0:
            self.entries += 1
            self.held[iid] = 0
            self.last_entry_ns = self.ctx.now_ns
            self._entries.append(self.ctx.now_ns)
