"""A seeded synthetic market for the local Kraken server (there is no Kraken capture to replay).

Each pair starts with 25 levels a side around a fixed mid; every ``interval_s`` (``burst`` times
for a load test) one pair's book changes at one level or a market order prints a trade (and the
level it ate is refilled), and the change goes out to the book's subscribers at once. The
liquidity stays within 25 spacings of the mid and a market order never takes more than the best
level holds, so an order of ours resting away from the mid is only filled when a test says so
(``srv.call(srv.matcher.fill_resting, order)``). The same seed gives the same market.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import TYPE_CHECKING

from tests.venues.core import D0, MARKET

if TYPE_CHECKING:
    from tests.venues.kraken import KrakenServer

MIDS = {"BTC": Decimal("50000"), "ETH": Decimal("3000")}
LEVELS = 25
SPACING_TICKS = 5
QTY_STEP = Decimal("0.0001")


class SyntheticMarket:
    def __init__(
        self, srv: KrakenServer, seed: int, interval_s: float | None, burst: int = 1
    ) -> None:
        self.srv = srv
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.burst = burst
        self.steps = 0
        for pair in srv.pairs.values():
            spec = pair.spec
            mid = MIDS.get(spec.base, Decimal("100"))
            step = spec.tick_d * SPACING_TICKS
            bids = [(mid - step * i, self._qty()) for i in range(1, LEVELS + 1)]
            asks = [(mid + step * i, self._qty()) for i in range(1, LEVELS + 1)]
            srv.matcher.seed(spec.symbol, bids, asks)

    def _qty(self) -> Decimal:
        return QTY_STEP * self.rng.randint(100, 20_000)

    async def run(self) -> None:
        assert self.interval_s
        while True:
            await asyncio.sleep(self.interval_s)
            for _ in range(self.burst):
                self.step()

    def step(self) -> None:
        """One change to one pair's market: a level's size, or a trade at the touch."""
        self.steps += 1
        pair = self.rng.choice(list(self.srv.pairs.values()))
        symbol = pair.spec.symbol
        book = self.srv.matcher.books[symbol]
        side_name = self.rng.choice(("buy", "sell"))
        side = book.side(side_name)
        market_prices = [px for (s, px) in book.market_levels if s == side_name]
        if not market_prices:
            return
        if self.rng.random() < 0.3:
            best = side.best()
            assert best is not None
            at_best = sum((o.remaining for o in side.levels[best]), D0)
            qty = min(self._qty(), at_best)
            taker = "sell" if side_name == "buy" else "buy"
            for fill in self.srv.matcher.take(symbol, taker, qty):
                if fill.order.account == MARKET:
                    self.srv.public_trade(symbol, taker, fill.price, fill.qty, "market")
            if (side_name, best) not in book.market_levels:
                self.srv.matcher.set_level(symbol, side_name, best, self._qty())
        else:
            near = sorted(market_prices, reverse=side_name == "buy")[:12]
            self.srv.matcher.set_level(symbol, side_name, self.rng.choice(near), self._qty())
        self.srv.ws.publish_book(symbol)
