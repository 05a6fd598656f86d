"""The local Kraken Futures server's public websocket (``/ws/v1``): the ``book`` and ``trade``
feeds ccxt's ``krakenfutures`` watches for a contract's book and trades.

A ``subscribe`` event (``feed``, ``product_ids``) is acknowledged (``subscribed``), then a
``book_snapshot`` (levels as ``{"price", "qty"}``) or ``trade_snapshot`` follows; afterwards
each changed level goes out as a ``book`` message (qty 0: the level is gone) and each match
as a ``trade``, both with a per-feed ``seq``. ``start_ticker`` keeps a quiet book moving (the
resting market quantity of the outer levels changes every ``every_s``) so a market-data client
always has deltas to read. Private feeds are not served: the live client polls REST.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.venues.core import Fill, Sock, now_ms

__all__ = ["KrakenFuturesWs"]


class KrakenFuturesWs:
    """The public feeds of one ``KrakenFuturesServer`` (``server.matcher`` is its book)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.seq = itertools.count(1)
        self.sent: dict[str, dict[str, dict[Decimal, Decimal]]] = {}  # venue id -> side -> level
        self._tick = itertools.count()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws/v1", self._ws)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        sock = await self.server.hub.open(request, "market")
        return await self.server.hub.serve(sock, self._on_text)

    async def _on_text(self, sock: Sock, text: str) -> None:
        msg = json.loads(text)
        if msg.get("event") != "subscribe":
            return
        feed, ids = str(msg.get("feed")), [str(i) for i in msg.get("product_ids") or []]
        sock.send(json.dumps({"event": "subscribed", "feed": feed, "product_ids": ids}))
        for vid in ids:
            sock.subs.add(f"{feed}:{vid.upper()}")
            if feed == "book":
                sock.send(json.dumps(self._snapshot(vid.upper())))
            elif feed == "trade":
                sock.send(json.dumps({"feed": "trade_snapshot", "product_id": vid, "trades": []}))

    def _levels(self, vid: str) -> dict[str, dict[Decimal, Decimal]]:
        spec = self.server.matcher.by_venue_symbol[vid]
        depth = self.server.matcher.books[spec.symbol].depth()
        return {
            "buy": dict(depth["bids"]),
            "sell": dict(depth["asks"]),
        }

    def _snapshot(self, vid: str) -> dict[str, Any]:
        levels = self._levels(vid)
        self.sent[vid] = levels
        return {
            "feed": "book_snapshot",
            "product_id": vid,
            "timestamp": now_ms(),
            "seq": next(self.seq),
            "tickSize": None,
            "bids": [{"price": float(p), "qty": float(q)} for p, q in levels["buy"].items()],
            "asks": [{"price": float(p), "qty": float(q)} for p, q in levels["sell"].items()],
        }

    def book_changed(self, vid: str) -> None:
        """Send each level of ``vid`` that moved since the last look to its subscribers."""
        before = self.sent.get(vid)
        if before is None:
            return
        now = self._levels(vid)
        self.sent[vid] = now
        socks = [s for s in self.server.hub.select("market") if f"book:{vid}" in s.subs]
        for side in ("buy", "sell"):
            for px in sorted(set(before[side]) | set(now[side])):
                qty = now[side].get(px, Decimal(0))
                if before[side].get(px) == qty:
                    continue
                text = json.dumps(
                    {"feed": "book", "product_id": vid, "side": side, "seq": next(self.seq),
                     "price": float(px), "qty": float(qty), "timestamp": now_ms()}
                )  # fmt: skip
                for s in socks:
                    s.send(text)

    def traded(self, fill: Fill) -> None:
        vid = fill.order.spec.venue_symbol
        text = json.dumps(
            {"feed": "trade", "product_id": vid, "uid": str(fill.trade_id),
             "side": fill.order.side, "type": "fill", "seq": next(self.seq),
             "time": fill.ts_ms, "qty": float(fill.qty), "price": float(fill.price)}
        )  # fmt: skip
        for s in self.server.hub.select("market"):
            if f"trade:{vid}" in s.subs:
                s.send(text)

    async def ticker(self, every_s: float = 0.05) -> None:
        """Keep the book moving: the outermost market level on each side changes size."""
        m = self.server.matcher
        while True:
            await asyncio.sleep(every_s)
            k = next(self._tick)
            for spec in m.specs.values():
                book = m.books[spec.symbol]
                for side, levels in (("buy", book.bids.depth()), ("sell", book.asks.depth())):
                    if levels:
                        px = levels[-1][0]
                        m.set_level(spec.symbol, side, px, Decimal(2 + k % 3))
                self.book_changed(spec.venue_symbol)
