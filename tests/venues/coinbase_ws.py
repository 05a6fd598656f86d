"""The local Coinbase server's market and its websocket channels.

The market: a seeded synthetic book per product (MARKET liquidity in the matcher, so our
orders trade with it) moved by a seeded random walk while anyone is connected: level sizes
change, passive levels appear, small market orders take the top and print trades.

The websocket (one endpoint; ccxt puts every channel on one connection): ``subscribe`` /
``unsubscribe`` with ``channel`` and ``product_ids``; ``level2`` answers on ``l2_data`` with a
``snapshot`` event then ``update`` events (the changed levels, ``new_quantity`` "0" removes);
``market_trades``, ``ticker``, ``heartbeats`` and ``user`` (a JWT in the subscribe; a
snapshot of open orders, then one update per order change). Every message carries the
connection's ``sequence_num``, counted across all its channels: a skipped number is a lost
message (the ``gap`` fault drops one ``l2_data`` update and its number).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.venues import coinbase_wire as w
from tests.venues.coinbase_auth import AuthError
from tests.venues.core import MARKET, Fill, Order, Sock, SymbolSpec, round_down

if TYPE_CHECKING:
    from tests.venues.coinbase import CoinbaseServer

LEVELS = 25  # seeded levels per side
SPACING = 5  # ticks between seeded levels
_CHANNELS = ("level2", "market_trades", "ticker", "ticker_batch", "heartbeats", "user", "status")


Levels = dict[str, dict[Decimal, Decimal]]  # "bids"/"asks" -> price -> size


class CoinbaseFeeds:
    """Market state and websocket protocol of one ``CoinbaseServer`` (its loop thread only)."""

    def __init__(
        self,
        server: CoinbaseServer,
        mids: dict[str, str],
        interval_s: float = 0.05,
        heartbeat_s: float = 1.0,
        seed: int = 13,
    ) -> None:
        self.server = server
        self.matcher = server.matcher
        self.faults = server.faults
        self.hub = server.hub
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.published: dict[str, Levels] = {}  # the book as the l2 stream last told it
        self.trades: dict[str, deque[dict]] = {}
        self.trade_ids = itertools.count(100_000)
        self.gaps = 0
        self._tasks: list[asyncio.Task[None]] = []
        for spec in self.matcher.specs.values():
            self._seed(spec, Decimal(mids.get(spec.symbol, "100")))
            self.trades[spec.symbol] = deque(maxlen=200)
            self.published[spec.symbol] = self._levels(spec)

    # -- the synthetic market
    def _seed(self, spec: SymbolSpec, mid: Decimal) -> None:
        tick, lot = spec.tick_d, spec.lot_d
        size = [round_down(Decimal(self.rng.uniform(0.05, 1.5)), lot) for _ in range(2 * LEVELS)]
        bids = [(mid - tick * (1 + SPACING * i), size[i]) for i in range(LEVELS)]
        asks = [(mid + tick * (1 + SPACING * i), size[LEVELS + i]) for i in range(LEVELS)]
        self.matcher.seed(spec.symbol, bids, asks)

    def _levels(self, spec: SymbolSpec) -> Levels:
        depth = self.matcher.books[spec.symbol].depth()
        return {side: {px: qty for px, qty in depth[side] if qty > 0} for side in depth}

    def last_price(self, spec: SymbolSpec) -> Decimal | None:
        recent = self.trades[spec.symbol]
        if recent:
            return Decimal(recent[-1]["price"])
        book = self.matcher.books[spec.symbol]
        bid, ask = book.bids.best(), book.asks.best()
        if bid is not None and ask is not None:
            return round_down((bid + ask) / 2, spec.tick_d)
        return bid or ask

    def _step(self, spec: SymbolSpec) -> None:
        """One random change to ``spec``'s market: resize, add or take."""
        book = self.matcher.books[spec.symbol]
        side = self.rng.choice(("buy", "sell"))
        roll = self.rng.random()
        lot, tick = spec.lot_d, spec.tick_d
        if roll < 0.2:  # a small market order takes from the other side
            qty = round_down(Decimal(self.rng.uniform(0.001, 0.05)), lot)
            self.publish_trades(self.matcher.take(spec.symbol, side, qty))
            return
        mine = sorted((px for (s, px) in book.market_levels if s == side), reverse=side == "buy")
        if roll < 0.4 or len(mine) < LEVELS // 2:  # a new passive level near the top
            best_other = book.opposite(side).best()
            best_same = book.side(side).best()
            anchor = best_same if best_same is not None else best_other
            if anchor is None:
                return
            step = tick * self.rng.randrange(0, 8)
            px = anchor - step if side == "buy" else anchor + step
            if best_other is not None and (px >= best_other if side == "buy" else px <= best_other):
                px = best_other - tick if side == "buy" else best_other + tick
            qty = round_down(Decimal(self.rng.uniform(0.05, 1.0)), lot)
            self.matcher.set_level(spec.symbol, side, px, qty)
            return
        px = mine[self.rng.randrange(min(len(mine), 10))]
        qty = round_down(Decimal(self.rng.uniform(0.0, 1.5)), lot)
        self.matcher.set_level(spec.symbol, side, px, qty if qty > lot else 0)

    async def _run_market(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for spec in self.matcher.specs.values():
                self._step(spec)
            self.publish_books()
            self.publish_tickers()

    async def _run_heartbeats(self) -> None:
        for counter in itertools.count(1):
            await asyncio.sleep(self.heartbeat_s)
            event = [{"current_time": w.iso_now(), "heartbeat_counter": str(counter)}]
            for sock in self._subscribers("heartbeats"):
                sock.send(w.envelope("heartbeats", self.next_seq(sock), event))

    def _ensure_running(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run_market()),
                loop.create_task(self._run_heartbeats()),
            ]

    async def stop(self, app: web.Application | None = None) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []

    # -- REST views
    def pricebook(self, spec: SymbolSpec, limit: int | None) -> dict:
        depth = self.matcher.books[spec.symbol].depth(limit)
        return {
            "product_id": spec.venue_symbol,
            "bids": [{"price": w.fmt(p), "size": w.fmt(q)} for p, q in depth["bids"]],
            "asks": [{"price": w.fmt(p), "size": w.fmt(q)} for p, q in depth["asks"]],
            "time": w.iso_now(),
        }

    def ticker_body(self, spec: SymbolSpec, limit: int) -> dict:
        book = self.matcher.books[spec.symbol]
        bid, ask = book.bids.best(), book.asks.best()
        trades = list(self.trades[spec.symbol])[-limit:][::-1]
        return {
            "trades": [t | {"bid": "", "ask": ""} for t in trades],
            "best_bid": w.fmt(bid) if bid is not None else "",
            "best_ask": w.fmt(ask) if ask is not None else "",
        }

    # -- publishing
    def next_seq(self, sock: Sock) -> int:
        seq = sock.state.get("seq", 0)
        sock.state["seq"] = seq + 1
        return seq

    def _subscribers(self, sub: str) -> list[Sock]:
        return [s for s in self.hub.select() if sub in s.subs]

    def after_orders(self, fills: list[Fill]) -> None:
        """After order entry: our taking fills print as market trades; the book moved."""
        self.publish_trades(fills)
        self.publish_books()

    def publish_trades(self, fills: list[Fill]) -> None:
        for fill in fills:
            spec = fill.order.spec
            side = fill.order.side
            trade = w.market_trade(
                spec.venue_symbol, next(self.trade_ids), fill.price, fill.qty, side
            )
            self.trades[spec.symbol].append(trade)
            event = [{"type": "update", "trades": [trade]}]
            for sock in self._subscribers(f"market_trades:{spec.venue_symbol}"):
                sock.send(w.envelope("market_trades", self.next_seq(sock), event))

    def publish_books(self) -> None:
        for spec in self.matcher.specs.values():
            self._publish_book(spec)

    def _publish_book(self, spec: SymbolSpec) -> None:
        """Send each ``level2`` subscriber the levels that changed since the last update."""
        old, new = self.published[spec.symbol], self._levels(spec)
        stamp = w.iso_now()
        updates: list[dict] = []
        for side in ("bids", "asks"):
            changed = [
                (px, new[side].get(px, Decimal(0)))
                for px in sorted(set(old[side]) | set(new[side]))
                if old[side].get(px) != new[side].get(px)
            ]
            updates += w.l2_updates(side, changed, stamp)
        if not updates:
            return
        self.published[spec.symbol] = new
        socks = self._subscribers(f"level2:{spec.venue_symbol}")
        if socks and self.faults.take("gap") is not None:
            self.gaps += 1
            for sock in socks:  # the update is lost, its number with it
                self.next_seq(sock)
            return
        event = [{"type": "update", "product_id": spec.venue_symbol, "updates": updates}]
        for sock in socks:
            sock.send(w.envelope("l2_data", self.next_seq(sock), event))

    def _ticker(self, spec: SymbolSpec) -> dict:
        book = self.matcher.books[spec.symbol]
        (bid, bid_q), (ask, ask_q) = (
            (book.bids.depth(1) or [(None, None)])[0],
            (book.asks.depth(1) or [(None, None)])[0],
        )
        last = self.last_price(spec)
        return {
            "type": "ticker",
            "product_id": spec.venue_symbol,
            "price": w.fmt(last) if last is not None else "",
            "volume_24_h": "0",
            "low_24_h": "",
            "high_24_h": "",
            "low_52_w": "",
            "high_52_w": "",
            "price_percent_chg_24_h": "0",
            "best_bid": w.fmt(bid) if bid is not None else "",
            "best_bid_quantity": w.fmt(bid_q) if bid_q is not None else "",
            "best_ask": w.fmt(ask) if ask is not None else "",
            "best_ask_quantity": w.fmt(ask_q) if ask_q is not None else "",
        }

    def publish_tickers(self, kind: str = "update") -> None:
        for spec in self.matcher.specs.values():
            for channel in ("ticker", "ticker_batch"):
                socks = self._subscribers(f"{channel}:{spec.venue_symbol}")
                if socks:
                    event = [{"type": kind, "tickers": [self._ticker(spec)]}]
                    for sock in socks:
                        sock.send(w.envelope(channel, self.next_seq(sock), event))

    def user_event(self, order: Order) -> None:
        """One order change → the account's ``user`` subscribers (through the fault hooks)."""
        if order.account == MARKET:
            return
        events = [{"type": "update", "orders": [w.ws_order(order)]}]
        self.server.events.publish(order.account, w.dumps(events))

    # -- the websocket
    async def serve(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404, text="Not Found\n")
        sock = await self.hub.open(request, "market")
        self._ensure_running()
        return await self.hub.serve(sock, self._on_text)

    def _error(self, sock: Sock, message: str) -> None:
        sock.send(w.dumps({"type": "error", "message": message}))

    async def _on_text(self, sock: Sock, text: str) -> None:
        try:
            msg = json.loads(text)
            kind, channel = msg["type"], msg["channel"]
            products = [str(p) for p in msg.get("product_ids") or []]
        except (ValueError, KeyError, TypeError):
            self._error(sock, "Failed to parse message")
            return
        if kind not in ("subscribe", "unsubscribe") or channel not in _CHANNELS:
            self._error(sock, f"Failed to subscribe: unknown {kind} {channel}")
            return
        unknown = [p for p in products if p not in self.matcher.by_venue_symbol]
        if unknown:
            self._error(sock, f"Failed to subscribe: invalid product_ids {unknown}")
            return
        if channel == "user" and kind == "subscribe" and not self._auth_user(sock, msg):
            return
        keys = [f"{channel}:{p}" for p in products] if products else [channel]
        if kind == "unsubscribe":
            sock.subs.difference_update(keys)
            self._ack(sock)
            return
        sock.subs.update(keys)
        self._ack(sock)
        self._snapshots(sock, channel, products)

    def _auth_user(self, sock: Sock, msg: dict[str, Any]) -> bool:
        try:
            if self.faults.take("timestamp") is not None:
                raise AuthError("request timestamp expired", expired=True)
            claims = self.server.auth.verify(str(msg.get("jwt", "")))
            key = self.server.keys[claims["sub"]]
        except (AuthError, KeyError):
            self._error(sock, "authentication failure")
            return False
        sock.kind, sock.account = "user", key.account
        sock.subs.add("user")
        sock.wrap = lambda payload: w.envelope("user", self.next_seq(sock), payload)
        return True

    def _ack(self, sock: Sock) -> None:
        subs: dict[str, list[str]] = {}
        for key in sorted(sock.subs):
            channel, _, product = key.partition(":")
            subs.setdefault(channel, [])
            if product:
                subs[channel].append(product)
        event = [{"subscriptions": subs}]
        sock.send(w.envelope("subscriptions", self.next_seq(sock), event))

    def _snapshots(self, sock: Sock, channel: str, products: list[str]) -> None:
        specs = [self.matcher.by_venue_symbol[p] for p in products]
        if channel == "level2":
            self.publish_books()  # others get what changed; the snapshot is then the same book
            for spec in specs:
                levels = self.published[spec.symbol]
                stamp = w.iso_now()
                updates = w.l2_updates("bids", sorted(levels["bids"].items(), reverse=True), stamp)
                updates += w.l2_updates("asks", sorted(levels["asks"].items()), stamp)
                event = [{"type": "snapshot", "product_id": spec.venue_symbol, "updates": updates}]
                sock.send(w.envelope("l2_data", self.next_seq(sock), event))
        elif channel == "market_trades":
            for spec in specs:
                recent = list(self.trades[spec.symbol])[-50:][::-1]
                if recent:
                    event = [{"type": "snapshot", "trades": recent}]
                    sock.send(w.envelope("market_trades", self.next_seq(sock), event))
        elif channel in ("ticker", "ticker_batch"):
            for spec in specs:
                event = [{"type": "snapshot", "tickers": [self._ticker(spec)]}]
                sock.send(w.envelope(channel, self.next_seq(sock), event))
        elif channel == "user" and sock.account is not None:
            orders = [w.ws_order(o) for o in self.matcher.open_orders(sock.account)]
            event = [{"type": "snapshot", "orders": orders, "positions": {}}]
            sock.send(w.envelope("user", self.next_seq(sock), event))
