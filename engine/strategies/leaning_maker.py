"""A market maker that leans its quotes on the order-book model's direction forecast.

A taker cannot pay for the micro signal (docs/strategies.md, "Cost-aware forecasts"): the next
mid change is a tick or two, the spread several. A maker is paid the spread instead, and what
costs it is adverse selection: being filled just before the price moves through its quote.
Leaning the fair price toward where the model says the mid goes next,

    fair = microprice (or mid) + ``lean_ticks`` x (2 P(up) - 1),

makes the quote the move would run over less likely to fill and the other one more likely.
Everything else is ``MarketMaker``'s (inventory skew, cap, re-quote threshold, never crossing).

Only micro forecasts (``p_up`` >= 0) lean it; one older than ``max_age_ms`` on the strategy
clock (from its ``ts_event``) leans nothing. ``signal`` runs the controls through this very
code: "model", "reversed" (P(down) for P(up)), "random" (each forecast's P(up) or P(down) with
probability 1/2, from ``seed``), "none" (no lean: the plain maker).

Params: ``LeaningParams`` below.
"""

from __future__ import annotations

import math
import random
from typing import Any

from engine.messages import Forecast
from engine.strategies.base import StrategyContext
from engine.strategies.market_maker import MarketMaker, MarketMakerParams
from engine.strategies.params import check

SIGNALS = ("model", "reversed", "random", "none")


class LeaningParams(MarketMakerParams):
    """``[strategies.params]`` of ``LeaningMarketMaker`` (and ``MarketMaker``'s)."""

    lean_ticks: float = 2.0  # fair moves this far at P(up) = 1 (and the other way at 0)
    max_age_ms: float = 1000.0  # a forecast older than this leans nothing
    signal: str = "model"  # model | reversed | random | none (the controls)
    seed: int = 0  # of signal = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(math.isfinite(self.lean_ticks) and self.lean_ticks >= 0, "lean_ticks", "must be >= 0")
        check(math.isfinite(self.max_age_ms) and self.max_age_ms > 0, "max_age_ms", "must be > 0")
        check(self.signal in SIGNALS, "signal", f"must be one of {', '.join(SIGNALS)}")


class LeaningMarketMaker(MarketMaker):
    """``MarketMaker`` with its fair price leaned on the micro forecast (module docstring)."""

    Params = LeaningParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: LeaningParams = self.p
        self.lean_ticks = p.lean_ticks
        self.max_age_ns = int(p.max_age_ms * 1e6)
        self._rng = random.Random(p.seed)
        # per instrument: (P(up) as the signal has it, the forecast's venue time)
        self.latest: dict[int, tuple[float, int]] = {}
        self.forecasts = 0

    def on_forecast(self, f: Forecast) -> None:
        iid = f.instrument_id
        if f.p_up < 0 or iid not in self.state or self.p.signal == "none":
            return
        p = f.p_up
        if self.p.signal == "reversed" or (self.p.signal == "random" and self._rng.random() < 0.5):
            p = 1.0 - p
        self.forecasts += 1
        self.latest[iid] = (p, f.ts_event or f.ts_origin)
        self.update(iid)

    def lean(self, instrument_id: int) -> float:
        """Ticks the fair price moves for the latest fresh forecast (0: none)."""
        got = self.latest.get(instrument_id)
        if got is None or self.ctx.now_ns - got[1] > self.max_age_ns:
            return 0.0
        return self.lean_ticks * (2.0 * got[0] - 1.0)

    def fair(self, instrument_id: int) -> float | None:
        base = super().fair(instrument_id)
        return None if base is None else base + self.lean(instrument_id)
