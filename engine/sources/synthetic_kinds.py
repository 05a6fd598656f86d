"""Price grids of the synthetic market for instrument kinds whose prices are not just positive.

``engine.sources.synthetic`` drives every instrument by a latent random walk ``x`` and builds a
book around the mid it implies. For spot, perpetuals, futures and FX pairs the mid is
``exp(x)`` (any positive price; an FX pair simply starts at its configured rate, on its
five-decimal tick). Two kinds bound their prices, and a book outside the bounds could not exist
on their venues:

- a binary contract prices a probability: ``mid = 1 / (1 + exp(-x))`` (the walk is in log-odds,
  so the price approaches 0 and 1 but never reaches them), every level within one tick of each
  end (``BinaryGrid``);
- a betting selection prices decimal odds on Betfair's ladder: ``odds = 1 + exp(x)`` (1.01 up to
  1000), the touch and every level on ladder prices, the spread in ladder steps
  (``OddsGrid``): bids are the odds available to back, asks the odds available to lay.
"""

from __future__ import annotations

import math

from engine.betting import MAX_ODDS, MIN_ODDS, ladder_step, ladder_ticks
from engine.enums import InstrumentKind

__all__ = ["BinaryGrid", "OddsGrid", "grid_for"]


class BinaryGrid:
    """Prices in (0, 1): ticks 1 .. ``top`` (``top`` = one tick below 1)."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.top = round(1.0 / tick) - 1
        if self.top < 2:
            raise ValueError(f"a binary contract needs a tick well below 1, got {tick}")

    def latent(self, price: float) -> float:
        if not 0.0 < price < 1.0:
            raise ValueError(f"a binary contract starts at a probability in (0, 1), got {price}")
        return math.log(price / (1.0 - price))

    def mid(self, x: float) -> float:
        """The mid in ticks for the latent log-odds ``x``."""
        return 1.0 / (1.0 + math.exp(-x)) / self.tick

    def touch(self, x: float, spread: int) -> tuple[int, int]:
        spread = min(spread, self.top - 1)
        bb = math.floor(self.mid(x) - spread * 0.5 + 0.5)
        bb = min(max(bb, 1), self.top - spread)
        return bb, bb + spread

    def ladder(self, touch: int, direction: int, levels: int, gap: int) -> list[int]:
        px = [touch]
        if direction < 0:
            p = ((touch - 1) // gap) * gap
            while len(px) < levels and p > 0:
                px.append(p)
                p -= gap
        else:
            p = ((touch + 1 + gap - 1) // gap) * gap
            while len(px) < levels and p <= self.top:
                px.append(p)
                p += gap
        return px


class OddsGrid:
    """Decimal odds on the betting ladder (ticks of ``tick``, 0.01 in practice)."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.lo = ladder_ticks(MIN_ODDS, tick)
        self.hi = ladder_ticks(MAX_ODDS, tick)

    def latent(self, price: float) -> float:
        if not MIN_ODDS <= price <= MAX_ODDS:
            raise ValueError(f"decimal odds start within {MIN_ODDS}..{MAX_ODDS}, got {price}")
        return math.log(max(price - 1.0, 0.01))

    def mid(self, x: float) -> float:
        return (1.0 + math.exp(x)) / self.tick

    def touch(self, x: float, spread: int) -> tuple[int, int]:
        odds = min(max(1.0 + math.exp(x), MIN_ODDS), MAX_ODDS)
        bb = ladder_ticks(odds, self.tick)  # the ladder price at or below the mid
        if bb >= self.hi:
            bb = ladder_step(self.hi, self.tick, -1)
        ba = ladder_step(bb, self.tick, spread)
        return bb, ba

    def ladder(self, touch: int, direction: int, levels: int, gap: int) -> list[int]:
        px = [touch]
        p = touch
        while len(px) < levels:
            q = ladder_step(p, self.tick, direction * gap)
            if q == p:
                break  # the ladder's end
            px.append(q)
            p = q
        return px


def grid_for(kind: str, tick: float) -> BinaryGrid | OddsGrid | None:
    """The grid of a bounded kind (None: any positive price)."""
    if kind == InstrumentKind.BINARY:
        return BinaryGrid(tick)
    if kind == InstrumentKind.BETTING:
        return OddsGrid(tick)
    return None
