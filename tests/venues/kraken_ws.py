"""The local Kraken server's websocket v2 endpoint (``/v2``): book, trade, ticker, executions.

ccxt 4.5.90 speaks only v2 to Kraken: public channels on ``wss://ws.kraken.com/v2`` and the
private ``executions`` channel on ``wss://ws-auth.kraken.com/v2``. Rebased onto one local port
both become ``ws://127.0.0.1:PORT/v2``, so one ccxt exchange object uses ONE socket for both;
this endpoint therefore serves public and private subscriptions on the same connection (a
socket turns into a "user" socket when it subscribes to ``executions`` with a valid token).

Book updates are diffs per subscriber against what that subscriber was last sent (its depth's
top levels), each with Kraken's CRC32 checksum of the server's top 10 levels; the ``gap`` fault
withholds one update, so the client's book silently diverges and only the next checksum shows
it (ccxt 4.5.90 does not verify Kraken checksums by default: its option is off and broken).
Executions carry a ``sequence`` per account, assigned when the event is made, so a duplicated
event repeats its number and a reordered one arrives out of order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.venues.core import D0, Fill, Order, Sock, now_ms
from tests.venues.kraken_wire import KrakenPair, book_checksum, iso, levels_json

if TYPE_CHECKING:
    from tests.venues.kraken import KrakenServer

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
HEARTBEAT_S = 1.0


class _Enc(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return float(o)
        return super().default(o)


def dumps(obj: Any) -> str:
    return json.dumps(obj, cls=_Enc, separators=(",", ":"))


@dataclass
class _Ticker:
    """24 h statistics of one symbol's public trades (since the server started)."""

    open: Decimal = D0
    last: Decimal = D0
    high: Decimal = D0
    low: Decimal = D0
    volume: Decimal = D0
    notional: Decimal = D0

    def add(self, px: Decimal, qty: Decimal) -> None:
        if not self.volume:
            self.open = self.high = self.low = px
        self.last, self.high, self.low = px, max(self.high, px), min(self.low, px)
        self.volume += qty
        self.notional += px * qty


class KrakenWs:
    """Subscriptions of every ``/v2`` socket and the messages they get."""

    def __init__(self, srv: KrakenServer) -> None:
        self.srv = srv
        self._conn_ids = itertools.count(7_300_000_000_000_000_000)
        self.subs: dict[str, dict[str, set[Sock]]] = {"book": {}, "trade": {}, "ticker": {}}
        self.tickers: dict[str, _Ticker] = {s: _Ticker() for s in srv.pairs}
        self.seq: Counter[str] = Counter()  # executions sequence per account
        self._dirty: set[str] = set()
        self._flush_pending = False
        self.books_sent = 0
        self.gaps = 0

    # -- connection
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        sock = await self.srv.hub.open(request, "market")
        status = {
            "api_version": "v2",
            "connection_id": next(self._conn_ids),
            "system": "online",
            "version": "2.0.10",
        }
        sock.send(dumps({"channel": "status", "type": "update", "data": [status]}))
        return await self.srv.hub.serve(sock, self.on_text)

    async def on_text(self, sock: Sock, text: str) -> None:
        t_in = iso(now_ms())
        try:
            msg = json.loads(text)
            method, params = msg.get("method"), msg.get("params") or {}
        except (ValueError, AttributeError):
            sock.send(dumps({"error": "Malformed request", "success": False, "time_in": t_in}))
            return
        reply = {"method": method, "req_id": msg.get("req_id"), "time_in": t_in}
        if method == "ping":
            sock.send(dumps(reply | {"time_out": iso(now_ms())} | {"method": "pong"}))
        elif method in ("subscribe", "unsubscribe"):
            try:
                self._subscription(sock, method, params, reply)
            except (ValueError, TypeError, AttributeError) as e:
                sock.send(dumps(reply | {"error": f"Invalid request: {e}", "success": False}))
        else:
            sock.send(dumps(reply | {"error": "Method not found", "success": False}))

    def _subscription(
        self, sock: Sock, method: str, params: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        channel = params.get("channel")
        if channel == "executions":
            self._executions(sock, method, params, reply)
            return
        if channel not in self.subs:
            sock.send(dumps(reply | {"error": f"Channel {channel} not found", "success": False}))
            return
        depth = int(params.get("depth", 10))
        if channel == "book" and depth not in BOOK_DEPTHS:
            sock.send(dumps(reply | {"error": "Invalid depth", "success": False}))
            return
        for symbol in params.get("symbol") or []:
            pair = self.srv.pairs.get(symbol)
            if pair is None:
                error = f"Currency pair not supported {symbol}"
                sock.send(dumps(reply | {"error": error, "success": False, "symbol": symbol}))
                continue
            result: dict[str, Any] = {"channel": channel, "symbol": symbol}
            if channel == "book":
                result |= {"depth": depth, "snapshot": bool(params.get("snapshot", True))}
            if method == "unsubscribe":
                self.subs[channel].get(symbol, set()).discard(sock)
                sock.subs.discard(f"{channel}:{symbol}")
            sock.send(dumps(reply | {"result": result, "success": True, "time_out": iso(now_ms())}))
            if method == "subscribe":
                self.subs[channel].setdefault(symbol, set()).add(sock)
                sock.subs.add(f"{channel}:{symbol}")
                self._first(sock, channel, pair, depth, params)

    def _first(
        self, sock: Sock, channel: str, pair: KrakenPair, depth: int, params: dict[str, Any]
    ) -> None:
        symbol = pair.spec.symbol
        if channel == "book":
            full = self.srv.matcher.books[symbol].depth(depth)
            sock.state[f"book:{symbol}"] = (depth, dict(full["asks"]), dict(full["bids"]))
            if params.get("snapshot", True):
                sock.send(self._book_text(pair, "snapshot", full["asks"], full["bids"], full))
        elif channel == "ticker" and params.get("snapshot", True):
            sock.send(self._ticker_text(pair, "snapshot"))
        elif channel == "trade" and params.get("snapshot", False):
            trades = self.srv.public_trades.get(symbol, [])[-50:]
            if trades:
                sock.send(dumps({"channel": "trade", "type": "snapshot", "data": trades}))

    # -- book
    def mark(self, symbol: str) -> None:
        """The book of ``symbol`` changed: send diffs soon (coalesced within one loop turn)."""
        self._dirty.add(symbol)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        for symbol in dirty:
            self._flush_book(self.srv.pairs[symbol])

    def publish_book(self, symbol: str) -> None:
        """Send the change of ``symbol``'s book now (one update message per subscriber)."""
        self._flush_book(self.srv.pairs[symbol])

    def _flush_book(self, pair: KrakenPair) -> None:
        symbol = pair.spec.symbol
        socks = [s for s in self.subs["book"].get(symbol, ()) if not s.closed]
        if not socks:
            return
        depth = max(s.state[f"book:{symbol}"][0] for s in socks)
        full = self.srv.matcher.books[symbol].depth(depth)
        out: list[tuple[Sock, str]] = []
        for sock in socks:
            d, old_asks, old_bids = sock.state[f"book:{symbol}"]
            asks, bids = full["asks"][:d], full["bids"][:d]
            da, db = _diff(old_asks, asks), _diff(old_bids, bids)
            if da or db:
                sock.state[f"book:{symbol}"] = (d, dict(asks), dict(bids))
                out.append((sock, self._book_text(pair, "update", da, db, full)))
        if out and self.srv.faults.take("gap") is not None:
            self.gaps += 1  # every subscriber misses this update: their books diverge
            return
        for sock, text in out:
            sock.send(text)
            self.books_sent += 1

    def _book_text(
        self,
        pair: KrakenPair,
        kind: str,
        asks: list[tuple[Decimal, Decimal]],
        bids: list[tuple[Decimal, Decimal]],
        full: dict[str, list[tuple[Decimal, Decimal]]],
    ) -> str:
        checksum = book_checksum(pair, full["asks"], full["bids"])
        stamp = f',"timestamp":"{iso(now_ms())}"' if kind == "update" else ""
        return (
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{pair.spec.symbol}",'
            f'"bids":{levels_json(pair, bids)},"asks":{levels_json(pair, asks)},'
            f'"checksum":{checksum}{stamp}}}]}}'
        )

    # -- trades and ticker
    def trade(self, pair: KrakenPair, entry: dict[str, Any]) -> None:
        symbol = pair.spec.symbol
        self.tickers[symbol].add(Decimal(str(entry["price"])), Decimal(str(entry["qty"])))
        text = dumps({"channel": "trade", "type": "update", "data": [entry]})
        for sock in list(self.subs["trade"].get(symbol, ())):
            sock.send(text)
        ticker = self._ticker_text(pair, "update")
        for sock in list(self.subs["ticker"].get(symbol, ())):
            sock.send(ticker)

    def _ticker_text(self, pair: KrakenPair, kind: str) -> str:
        symbol = pair.spec.symbol
        book = self.srv.matcher.books[symbol].depth(1)
        t = self.tickers[symbol]
        bid = book["bids"][0] if book["bids"] else (D0, D0)
        ask = book["asks"][0] if book["asks"] else (D0, D0)
        change = t.last - t.open
        data = {
            "symbol": symbol,
            "bid": bid[0],
            "bid_qty": bid[1],
            "ask": ask[0],
            "ask_qty": ask[1],
            "last": t.last,
            "volume": t.volume,
            "vwap": (t.notional / t.volume) if t.volume else D0,
            "low": t.low,
            "high": t.high,
            "change": change,
            "change_pct": round(change / t.open * 100, 2) if t.open else D0,
        }
        return dumps({"channel": "ticker", "type": kind, "data": [data]})

    async def pump(self, every_s: float = 0.1) -> None:
        """Publish what changed the books by other ways (core control routes, direct matcher
        calls) within ``every_s``; order events and the synthetic market publish at once."""
        while True:
            await asyncio.sleep(every_s)
            self._dirty.update(s for s, socks in self.subs["book"].items() if socks)
            self.flush()

    async def heartbeats(self) -> None:
        """Kraken's ``{"channel":"heartbeat"}`` about once a second on subscribed sockets."""
        text = dumps({"channel": "heartbeat"})
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for sock in self.srv.hub.select():
                if sock.subs:
                    sock.send(text)

    # -- executions
    def _executions(
        self, sock: Sock, method: str, params: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        account = self.srv.tokens.get(str(params.get("token", "")))
        if account is None:
            sock.send(dumps(reply | {"error": "ESession:Invalid session", "success": False}))
            return
        if method == "unsubscribe":
            sock.subs.discard("executions")
            sock.send(dumps(reply | {"result": {"channel": "executions"}, "success": True}))
            return
        sock.kind, sock.account = "user", account
        sock.subs.add("executions")
        result = {"channel": "executions", "maxratecount": 180, "snapshot": True}
        sock.send(dumps(reply | {"result": result, "success": True, "time_out": iso(now_ms())}))
        if params.get("snap_orders", True):
            orders = [self.order_entry(o, "new") for o in self.srv.matcher.open_orders(account)]
            sock.send(self.executions_text(account, "snapshot", orders))
        if params.get("snap_trades", False):
            fills = self.srv.matcher.account_trades(account)[-50:]
            sock.send(
                self.executions_text(account, "snapshot", [self.trade_entry(f) for f in fills])
            )

    def executions_text(self, account: str, kind: str, data: list[dict[str, Any]]) -> str:
        self.seq[account] += 1
        msg = {"channel": "executions", "type": kind, "data": data, "sequence": self.seq[account]}
        return dumps(msg)

    def _ids(self, order: Order) -> dict[str, Any]:
        ids: dict[str, Any] = {
            "order_id": self.srv.txid(order),
            "symbol": order.symbol,
            "order_userref": order.extra.get("userref") or 0,
        }
        if order.client_id:
            ids["cl_ord_id"] = order.client_id
        return ids

    def order_entry(self, order: Order, exec_type: str) -> dict[str, Any]:
        """A full order description (pending_new, and the open orders of a snapshot)."""
        status = "partially_filled" if order.filled else exec_type
        entry = self._ids(order) | {
            "exec_type": exec_type,
            "order_status": status,
            "side": order.side,
            "order_type": order.type,
            "order_qty": order.amount,
            "cum_qty": order.filled,
            "cum_cost": order.cost,
            "avg_price": order.average or D0,
            "time_in_force": order.tif,
            "post_only": order.post_only,
            "fee_usd_equiv": order.fee,
            "fee_ccy_pref": "fciq",
            "timestamp": iso(order.created_ms),
        }
        if order.type == "limit":
            entry |= {"limit_price": order.price, "limit_price_type": "static"}
        return entry

    def status_entry(self, order: Order, exec_type: str, status: str) -> dict[str, Any]:
        """A short status change (new, filled, canceled, expired, amended)."""
        entry = self._ids(order) | {
            "exec_type": exec_type,
            "order_status": status,
            "cum_qty": order.filled,
            "cum_cost": order.cost,
            "avg_price": order.average or D0,
            "fee_usd_equiv": order.fee,
            "timestamp": iso(order.updated_ms),
        }
        if exec_type == "canceled":
            reason = order.extra.get("reason") or "User requested"
            entry |= {"cancel_reason": reason, "reason": reason}
        if exec_type == "amended":
            entry |= {"order_qty": order.amount, "amended": True, "reason": "User requested"}
            if order.price is not None:
                entry["limit_price"] = order.price
        return entry

    def trade_entry(self, fill: Fill) -> dict[str, Any]:
        """A fill. Its ``order_status`` is ``partially_filled`` even when it completes the order,
        as Kraken documents it may be: completion is the separate ``filled`` event."""
        order = fill.order
        return self._ids(order) | {
            "exec_id": self.srv.trade_txid(fill),
            "exec_type": "trade",
            "trade_id": fill.trade_id,
            "side": order.side,
            "order_type": order.type,
            "last_qty": fill.qty,
            "last_price": fill.price,
            "liquidity_ind": "m" if fill.maker else "t",
            "cost": fill.price * fill.qty,
            "order_status": "partially_filled",
            "fee_usd_equiv": fill.fee,
            "fees": [{"asset": order.spec.quote, "qty": fill.fee}],
            "timestamp": iso(fill.ts_ms),
        }


def _diff(
    old: dict[Decimal, Decimal], new: list[tuple[Decimal, Decimal]]
) -> list[tuple[Decimal, Decimal]]:
    """Levels to send so a client holding ``old`` holds ``new``: changes, then removals (qty 0)."""
    now = dict(new)
    out = [(p, q) for p, q in new if old.get(p) != q]
    out += [(p, D0) for p in old if p not in now]
    return out
