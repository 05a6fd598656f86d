"""A local Kraken spot exchange that ccxt 4.5.90's ``kraken`` talks to as if it were Kraken.

REST on Kraken's real paths (``/0/public/<Method>`` GET, ``/0/private/<Method>`` POST,
form-encoded, signed: ``API-Key`` + ``API-Sign``, nonce increasing per key) and the v2
websockets on ``/v2`` (:mod:`tests.venues.kraken_ws`). Errors are Kraken's: HTTP 200 with
``{"error": ["EAPI:Invalid signature"], "result": {}}``. Market data is a seeded synthetic
market (:mod:`tests.venues.kraken_md`) over the shared matcher, so our orders rest in and trade
against the same book the websockets publish.

Kraken specifics a client must know: fees are charged in the QUOTE asset on both sides
(``oflags`` ``fciq``, Kraken's usual default; ``fcib`` is refused); ``AmendOrder`` changes an
order in place (same txid, a size cut keeps queue priority; a size at or below the filled
quantity cancels the rest); a post-only order that would take is accepted and then cancelled
with reason ``Post only order``; ``cl_ord_id`` must be unique among OPEN orders; nonces are
strictly increasing per key with no window, so concurrent private requests that arrive out of
order are refused (``EAPI:Invalid nonce``, nothing done), as on a real key.

Faults: ``rate_limit`` → ``EAPI:Rate limit exceeded`` (private), ``EGeneral:Too many requests``
(public) or ``EOrder:Rate limit exceeded`` (``scope="orders"``), lasting ``retry_after`` s;
``ban`` → ``EGeneral:Temporary lockout`` on every request while it lasts; ``timestamp`` →
``EAPI:Invalid nonce``; ``delay_ack`` → order entry acts at once but answers ``delay_s`` later;
the websocket faults are the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.venues.core import D0, ExchangeServer, Fill, Order, Reject, now_ms
from tests.venues.kraken_md import SyntheticMarket
from tests.venues.kraken_private import PRIVATE, Refused
from tests.venues.kraken_wire import (
    ASSETS,
    DEFAULT_PAIRS,
    MAKER_FEE,
    TAKER_FEE,
    IdMaker,
    KrakenPair,
    api_sign,
    asset_id,
    err,
    iso,
    ok,
)
from tests.venues.kraken_ws import KrakenWs

_ORDER_ENTRY = {"AddOrder", "AmendOrder", "CancelOrder", "CancelAll"}


def _in_scope(scope: str, kind: str) -> bool:
    if scope == "all":
        return True
    if scope == "private":
        return kind in ("private", "order")
    return (scope, kind) in (("public", "public"), ("orders", "order"))


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


class KrakenServer(ExchangeServer):
    """``with KrakenServer() as srv: srv.add_key(key, secret, balances={"USD": "10000"})``.

    ``md_interval_s``: how often the synthetic market moves (None: a still market that changes
    only when a test says so: ``market_level`` / ``market_take`` / ``fill``); ``md_burst``:
    moves per interval (load tests); ``seed``: the same seed gives the same market and ids.
    """

    kind = "kraken"

    def __init__(
        self,
        pairs: tuple[KrakenPair, ...] | None = None,
        *,
        port: int = 0,
        seed: int = 13,
        md_interval_s: float | None = 0.2,
        md_burst: int = 1,
    ) -> None:
        self.pairs = {p.spec.symbol: p for p in (pairs or DEFAULT_PAIRS)}
        self._by_name = {n: p for p in self.pairs.values() for n in (p.pair_id, p.altname)}
        super().__init__(
            [p.spec for p in self.pairs.values()], maker_fee="0", taker_fee="0", port=port
        )
        self.ids = IdMaker(seed)
        self._txids: dict[int, str] = {}
        self._orders_by_txid: dict[str, Order] = {}
        self._trade_txids: dict[int, str] = {}
        self.nonces: dict[str, int] = {}
        self.tokens: dict[str, str] = {}  # websocket token -> account
        self.refused: Counter[str] = Counter()  # Kraken error string -> times answered
        self.public_trades: dict[str, list[dict[str, Any]]] = {s: [] for s in self.pairs}
        self._public_trade_ids = iter(range(80_000_000, 1 << 62))
        self.ws = KrakenWs(self)
        self.market = SyntheticMarket(self, seed, md_interval_s, md_burst)
        self._tasks: list[asyncio.Task[None]] = []
        self._limit: tuple[str, float] = ("", 0.0)  # (scope, until) of a rate limit in force

    # -- ids
    def txid(self, order: Order) -> str:
        txid = self._txids.get(order.order_id)
        if txid is None:
            txid = self._txids[order.order_id] = self.ids.make("O")
            self._orders_by_txid[txid] = order
        return txid

    def trade_txid(self, fill: Fill) -> str:
        txid = self._trade_txids.get(fill.trade_id)
        if txid is None:
            txid = self._trade_txids[fill.trade_id] = self.ids.make("T")
        return txid

    def order_by_txid(self, account: str, txid: str) -> Order:
        order = self._orders_by_txid.get(txid)
        if order is None or order.account != account:
            raise Refused("EOrder:Unknown order")
        return order

    # -- app
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/0/public/{method}", self._public)
        app.router.add_post("/0/private/{method}", self._private)
        app.router.add_get("/v2", self._ws_v2)
        app.on_startup.append(self._start_tasks)
        app.on_cleanup.append(self._stop_tasks)

    async def _ws_v2(self, request: web.Request) -> web.WebSocketResponse:
        return await self.ws.handle(request)

    async def _start_tasks(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.ws.heartbeats()), loop.create_task(self.ws.pump())]
        if self.market.interval_s:
            self._tasks.append(loop.create_task(self.market.run()))

    async def _stop_tasks(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- order events: Kraken's fee, the executions channel, the public book and tape
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        ws = self.ws
        if event == "trade" and fill is not None:
            self._charge_fee(order, fill)
            self.events.publish(
                order.account, ws.executions_text(order.account, "update", [ws.trade_entry(fill)])
            )
            if not fill.maker:
                self.public_trade(order.symbol, order.side, fill.price, fill.qty, order.type)
            if order.status == "closed":
                self._publish_status(order, "filled", "filled")
        elif event == "new":
            self.events.publish(
                order.account,
                ws.executions_text(order.account, "update", [ws.order_entry(order, "pending_new")]),
            )
            self._publish_status(order, "new", "new")
        elif event in ("canceled", "expired"):
            self._publish_status(order, event, event)
        elif event == "amended":
            self._publish_status(order, "amended", "partially_filled" if order.filled else "new")
        self.ws.mark(order.symbol)

    def _publish_status(self, order: Order, exec_type: str, status: str) -> None:
        entry = self.ws.status_entry(order, exec_type, status)
        self.events.publish(
            order.account, self.ws.executions_text(order.account, "update", [entry])
        )

    def _charge_fee(self, order: Order, fill: Fill) -> None:
        """Kraken charges in the quote asset (``fciq``): the matcher runs fee-free, this adds it."""
        pair = self.pairs[order.symbol]
        fee = pair.fee_of(fill.price * fill.qty, fill.maker)
        fill.fee, fill.fee_currency = fee, order.spec.quote
        order.fee += fee
        order.fee_currency = order.spec.quote
        self.matcher.accounts[order.account].receive(order.spec.quote, -fee)

    def public_trade(self, symbol: str, side: str, px: Decimal, qty: Decimal, kind: str) -> None:
        """One print on the public tape (v2 ``trade`` channel, REST ``Trades``)."""
        entry = {
            "symbol": symbol,
            "side": side,
            "price": px,
            "qty": qty,
            "ord_type": kind,
            "trade_id": next(self._public_trade_ids),
            "timestamp": iso(now_ms()),
        }
        tape = self.public_trades[symbol]
        tape.append(entry)
        del tape[:-1000]
        self.ws.trade(self.pairs[symbol], entry)

    # -- test hooks: run them on the server's thread (``srv.call(srv.market_take, ...)``)
    def market_level(self, symbol: str, side: str, price: Any, qty: Any) -> None:
        """Set the market's quantity at one level (0 removes it); published at once."""
        self.matcher.set_level(symbol, side, price, qty)
        self.ws.mark(symbol)

    def market_take(self, symbol: str, side: str, qty: Any, price: Any = None) -> int:
        """A market participant's order: it trades (our resting orders too) and prints."""
        fills = self.matcher.take(symbol, side, qty, price)
        for f in fills:
            self.public_trade(symbol, side, f.price, f.qty, "market" if price is None else "limit")
        self.ws.mark(symbol)
        return len(fills)

    def fill(self, account: str, txid: str, qty: Any = None) -> Fill:
        """The market fills one of our resting orders (``qty`` of it, or all) at its price."""
        return self.matcher.fill_resting(self.order_by_txid(account, txid), qty)

    async def _ctl_trade(self, request: web.Request) -> web.Response:
        body = await request.json()
        n = self.market_take(body["symbol"], body["side"], body["qty"], body.get("price"))
        return web.json_response({"ok": True, "fills": n})

    async def _ctl_fill(self, request: web.Request) -> web.Response:
        """As the core's, but ``order_id`` is a Kraken txid (``client_id`` works too)."""
        body = await request.json()
        account = body.get("account", "main")
        try:
            if body.get("order_id"):
                order = self.order_by_txid(account, str(body["order_id"]))
            else:
                order = self.matcher.find(account, client_id=body.get("client_id"))
            fill = self.matcher.fill_resting(order, body.get("qty"))
        except (Refused, Reject) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        return web.json_response({"ok": True, "trade_id": self.trade_txid(fill)})

    # -- REST plumbing
    async def _public(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            self._lockout()
            self._rate_limited("public")
            handler = self._PUBLIC.get(method)
            if handler is None:
                raise Refused("EGeneral:Unknown method")
            return web.json_response(ok(handler(self, dict(request.query))))
        except Refused as e:
            self.refused.update(e.errors)
            return web.json_response(err(*e.errors))

    async def _private(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.text()
        try:
            self._lockout()
            params = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            account = self._authenticate(request, body, params)
            self._rate_limited("order" if method in _ORDER_ENTRY else "private")
            if self.faults.take("timestamp") is not None:
                raise Refused("EAPI:Invalid nonce")
            handler = self._PRIVATE.get(method)
            if method == "WithdrawMethods" and not self.keys[request.headers["API-Key"]].withdraw:
                raise Refused("EGeneral:Permission denied")  # the key's Withdraw permission
            if handler is None:
                raise Refused("EGeneral:Unknown method")
            result = handler(self, account, params)
        except Refused as e:
            self.refused.update(e.errors)
            return web.json_response(err(*e.errors))
        if method in _ORDER_ENTRY:
            delay = self.faults.take("delay_ack")
            if delay is not None:
                await asyncio.sleep(float(delay.get("delay_s", 2.0)))
        return web.json_response(ok(result))

    def _lockout(self) -> None:
        """``ban``: Kraken's temporary lockout refuses every request while it lasts."""
        if self.faults.active("ban") is not None:
            self.faults.fired["ban"] += 1
            raise Refused("EGeneral:Temporary lockout")

    def _rate_limited(self, kind: str) -> None:
        """``rate_limit`` (``scope`` all | public | private | orders): the next request in scope
        is refused, and every one after it for ``retry_after`` s (Kraken's counter has to decay
        first; Kraken sends no Retry-After). ``kind``: public | private | order."""
        now = time.monotonic()
        scope = self._limit[0] if now < self._limit[1] else None
        if scope is None:
            args = self.faults.active("rate_limit")
            if args is None or not _in_scope(args.get("scope", "all"), kind):
                return
            self.faults.take("rate_limit")
            scope = args.get("scope", "all")
            self._limit = (scope, now + float(args.get("retry_after", 0)))
        if not _in_scope(scope, kind):
            return
        if kind == "public":
            raise Refused("EGeneral:Too many requests")
        raise Refused(
            "EOrder:Rate limit exceeded" if scope == "orders" else "EAPI:Rate limit exceeded"
        )

    def _authenticate(self, request: web.Request, body: str, params: dict[str, str]) -> str:
        """Kraken's checks in Kraken's order: key, signature, nonce (strictly increasing)."""
        key = self.keys.get(request.headers.get("API-Key", ""))
        if key is None:
            raise Refused("EAPI:Invalid key")
        nonce = params.get("nonce", "")
        try:
            expected = api_sign(request.path, nonce, body, key.secret)
        except ValueError:
            raise Refused("EAPI:Invalid key") from None
        if not hmac.compare_digest(expected, request.headers.get("API-Sign", "")):
            raise Refused("EAPI:Invalid signature")
        if not nonce.isdigit() or int(nonce) <= self.nonces.get(key.api_key, 0):
            raise Refused("EAPI:Invalid nonce")
        self.nonces[key.api_key] = int(nonce)
        return key.account

    def pair(self, name: str | None) -> KrakenPair:
        pair = self._by_name.get(name or "") or self.pairs.get(name or "")
        if pair is None:
            raise Refused("EQuery:Unknown asset pair")
        return pair

    # -- public methods
    def _time(self, q: dict[str, str]) -> dict[str, Any]:
        now = time.time()
        return {
            "unixtime": int(now),
            "rfc1123": time.strftime("%a, %d %b %y %H:%M:%S +0000", time.gmtime(now)),
        }

    def _system_status(self, q: dict[str, str]) -> dict[str, Any]:
        return {"status": "online", "timestamp": iso(now_ms())[:19] + "Z"}

    def _assets(self, q: dict[str, str]) -> dict[str, Any]:
        used = {asset_id(c) for p in self.pairs.values() for c in (p.spec.base, p.spec.quote)}
        return {
            aid: {
                "aclass": "currency",
                "altname": alt,
                "decimals": dec,
                "display_decimals": disp,
                "status": "enabled",
            }
            for aid, (alt, dec, disp) in ASSETS.items()
            if aid in used
        }

    def _asset_pairs(self, q: dict[str, str]) -> dict[str, Any]:
        wanted = (
            [self.pair(n) for n in q["pair"].split(",")]
            if q.get("pair")
            else list(self.pairs.values())
        )
        return {p.pair_id: self._pair_info(p) for p in wanted}

    def _pair_info(self, p: KrakenPair) -> dict[str, Any]:
        spec = p.spec
        return {
            "altname": p.altname,
            "wsname": p.wsname,
            "aclass_base": "currency",
            "base": asset_id(spec.base),
            "aclass_quote": "currency",
            "quote": asset_id(spec.quote),
            "lot": "unit",
            "cost_decimals": p.quote_decimals(),
            "pair_decimals": p.price_decimals,
            "lot_decimals": p.lot_decimals,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": [[0, float(TAKER_FEE * 100)], [50000, 0.24]],
            "fees_maker": [[0, float(MAKER_FEE * 100)], [50000, 0.14]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": spec.min_qty_d.normalize().to_eng_string(),
            "costmin": spec.min_notional,
            "tick_size": spec.tick,
            "status": "online" if spec.status == "TRADING" else "cancel_only",
        }

    def _depth(self, q: dict[str, str]) -> dict[str, Any]:
        pair = self.pair(q.get("pair"))
        count = int(q.get("count") or 100)
        book = self.matcher.books[pair.spec.symbol].depth(count)
        stamp = int(time.time())
        side = {k: [[pair.px(p), pair.qty(v), stamp] for p, v in book[k]] for k in ("asks", "bids")}
        return {pair.pair_id: side}

    def _trades(self, q: dict[str, str]) -> dict[str, Any]:
        pair = self.pair(q.get("pair"))
        count = int(q.get("count") or 1000)
        since = float(q.get("since") or 0)
        tape = [t for t in self.public_trades[pair.spec.symbol] if _epoch(t["timestamp"]) > since][
            -count:
        ]
        rows = [
            [
                pair.px(t["price"]),
                pair.qty(t["qty"]),
                _epoch(t["timestamp"]),
                t["side"][0],
                t["ord_type"][0],
                "",
                t["trade_id"],
            ]
            for t in tape
        ]
        last = (
            str(int(_epoch(tape[-1]["timestamp"]) * 1e9)) if tape else str(int(time.time() * 1e9))
        )
        return {pair.pair_id: rows, "last": last}

    def _ticker(self, q: dict[str, str]) -> dict[str, Any]:
        names = q.get("pair", "").split(",") if q.get("pair") else list(self.pairs)
        out = {}
        for name in names:
            pair = self.pair(name)
            t = self.ws.tickers[pair.spec.symbol]
            book = self.matcher.books[pair.spec.symbol].depth(1)
            ask = book["asks"][0] if book["asks"] else (D0, D0)
            bid = book["bids"][0] if book["bids"] else (D0, D0)
            vwap = t.notional / t.volume if t.volume else D0
            out[pair.pair_id] = {
                "a": [pair.px(ask[0]), "1", pair.qty(ask[1])],
                "b": [pair.px(bid[0]), "1", pair.qty(bid[1])],
                "c": [pair.px(t.last), pair.qty(D0)],
                "v": [pair.qty(t.volume)] * 2,
                "p": [pair.px(vwap)] * 2,
                "t": [len(self.public_trades[pair.spec.symbol])] * 2,
                "l": [pair.px(t.low)] * 2,
                "h": [pair.px(t.high)] * 2,
                "o": pair.px(t.open),
            }
        return out

    _PUBLIC: dict[str, Callable[..., Any]] = {
        "Time": _time,
        "SystemStatus": _system_status,
        "Assets": _assets,
        "AssetPairs": _asset_pairs,
        "Depth": _depth,
        "Trades": _trades,
        "Ticker": _ticker,
    }
    _PRIVATE: dict[str, Callable[..., Any]] = PRIVATE
