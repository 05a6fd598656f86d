"""Market data for the local Binance server: the real capture replayed, or a synthetic book.

Both feeds give the server the same three things: the REST ``GET /api/v3/depth`` answer at the
feed's current update id (``depth_body``), the book to seed the matcher's market liquidity with
(``levels``) and an async stream of ``(stream name, data bytes)`` websocket frames paced in
time (``frames``). The capture feed sends the captured bytes unchanged (see
``tests/venues/binance_capture.py``); the synthetic one exists so every test runs without
``../shared``. Each keeps a ``ReferenceBook`` in step with the frames it has given out, so a
client that resyncs mid-replay gets a snapshot consistent with the diffs it will see next.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

from tests.venues import binance_capture as bc
from tests.venues.core import SymbolSpec, now_ms

DEPTH = "@depth@100ms"


class CaptureMarket:
    """The real BTCUSDT capture, replayed at ``speed`` × its recorded pace (0 = no pauses)."""

    spec = SymbolSpec(symbol=bc.SYMBOL, venue_symbol=bc.VENUE_SYMBOL)

    def __init__(self, path: str | Path | None = None, speed: float = 1.0) -> None:
        self.capture = bc.load(Path(path) if path else None)
        self.speed = speed
        self.book = bc.ReferenceBook(self.capture.snapshot)
        self.sent = 0  # frames given out

    def levels(self) -> tuple[list[tuple[Decimal, Decimal]], ...]:
        return self.book.levels()

    def depth_body(self, limit: int = 1000) -> bytes:
        """The captured snapshot bytes until the replay moves past it, then the book at the
        replay's update id (what Binance would answer then)."""
        if self.book.update_id <= self.capture.last_update_id:
            return self.capture.snapshot_text
        return self.book.snapshot_text(limit)

    async def frames(self) -> AsyncIterator[tuple[str, bytes, dict | None]]:
        """``(stream, data bytes, parsed depth diff that moved the book or None)``."""
        prev_ns = None
        for frame in self.capture.frames:
            if self.speed > 0 and prev_ns is not None and frame.recv_ns > prev_ns:
                await asyncio.sleep((frame.recv_ns - prev_ns) / 1e9 / self.speed)
            elif self.sent % 200 == 0:
                await asyncio.sleep(0)
            prev_ns = frame.recv_ns
            applied = None
            if frame.stream.endswith(DEPTH):
                diff = frame.json()
                try:
                    if self.book.apply(diff):
                        applied = diff
                except bc.SequenceBreak:  # not in the capture; a server fault never gets here
                    pass
            self.sent += 1
            yield frame.stream, frame.data, applied


class SyntheticMarket:
    """A small random-walk BTC/USDT book with depth diffs (U/u), trades and bookTicker."""

    def __init__(
        self,
        spec: SymbolSpec | None = None,
        mid: str = "60000.00",
        levels: int = 20,
        interval_s: float = 0.05,
        seed: int = 13,
    ) -> None:
        self.spec = spec or SymbolSpec()
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        tick = self.spec.tick_d
        m = Decimal(mid)
        bids = [[str(m - tick * (1 + 50 * i)), "0.50000"] for i in range(levels)]
        asks = [[str(m + tick * (1 + 50 * i)), "0.50000"] for i in range(levels)]
        self.book = bc.ReferenceBook({"lastUpdateId": 1000, "bids": bids, "asks": asks})
        self.book.started = True
        self.trade_id = 1
        self.stream = self.spec.venue_symbol.lower()

    def levels(self) -> tuple[list[tuple[Decimal, Decimal]], ...]:
        return self.book.levels()

    def depth_body(self, limit: int = 100) -> bytes:
        return self.book.snapshot_text(limit)

    def _diff(self) -> dict:
        bids, asks = self.book.levels()
        side = self.rng.choice(("b", "a"))
        levels = bids if side == "b" else asks
        px = levels[self.rng.randrange(min(len(levels), 10))][0]
        qty = Decimal(self.rng.randrange(1, 200)) / 100
        first = self.book.update_id + 1
        last = first + self.rng.randrange(0, 3)
        diff = {
            "e": "depthUpdate",
            "E": now_ms(),
            "s": self.spec.venue_symbol,
            "U": first,
            "u": last,
            "b": [[str(px), f"{qty:.5f}"]] if side == "b" else [],
            "a": [[str(px), f"{qty:.5f}"]] if side == "a" else [],
        }
        self.book.apply(diff)
        return diff

    def _trade(self) -> dict:
        bid, ask = self.book.best()
        buyer_maker = self.rng.random() < 0.5
        px = (bid if buyer_maker else ask) or bid or ask
        self.trade_id += 1
        ts = now_ms()
        return {
            "e": "trade",
            "E": ts,
            "s": self.spec.venue_symbol,
            "t": self.trade_id,
            "p": str(px[0]) if px else "0",
            "q": "0.00100",
            "T": ts,
            "m": buyer_maker,
            "M": True,
        }

    def _book_ticker(self) -> dict:
        bid, ask = self.book.best()
        return {
            "u": self.book.update_id,
            "s": self.spec.venue_symbol,
            "b": str(bid[0]),
            "B": str(bid[1]),
            "a": str(ask[0]),
            "A": str(ask[1]),
        }  # type: ignore[index]

    async def frames(self) -> AsyncIterator[tuple[str, bytes, dict | None]]:
        n = 0
        while True:
            await asyncio.sleep(self.interval_s)
            diff = self._diff()
            yield f"{self.stream}{DEPTH}", _dumps(diff), diff
            yield f"{self.stream}@bookTicker", _dumps(self._book_ticker()), None
            n += 1
            if n % 3 == 0:
                yield f"{self.stream}@trade", _dumps(self._trade()), None


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
