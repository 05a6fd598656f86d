"""A local Polymarket CLOB: markets and outcome tokens, L1/L2 auth, signed limit orders, books,
the market and user channels, resolution and faults.

What it checks the way the venue does: level 1 (``GET /auth/derive-api-key``, ``POST
/auth/api-key``) recovers the ``ClobAuth`` signer from ``POLY_SIGNATURE`` with eth-account and
compares it with ``POLY_ADDRESS``; level 2 recomputes the HMAC over ``timestamp + method + path
+ body`` with the key's secret; ``POST /order`` recovers the EIP-712 order signer and requires it
to be the key's wallet and the order's ``signer`` / ``maker``, its price on the market's tick
and its size at least the market's minimum. Each outcome token is one book of
:class:`tests.venues.matching.Matcher` (symbol = token id; buying locks USDC, selling the token).

Faults: ``disconnect`` (``stream`` market | user | all), ``rate_limit`` (429 with Retry-After
on the next ``times`` REST requests, of ``path`` only where given), and ``resolve`` / ``change_tick`` as actions: a market
resolved while our orders rest cancels them (user channel CANCELLATION), pays the tokens out
(1 / 0, or 0.5 each for a 50/50) and sends ``market_resolved`` on the market channel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from engine.venues import polymarket_wire as wire
from tests.venues.core import (
    MARKET,
    ApiKey,
    ExchangeServer,
    Fill,
    Order,
    Reject,
    Sock,
    SymbolSpec,
    fmt,
)

__all__ = ["ClobMarket", "PolymarketServer", "token_id_of"]

_NS = uuid.UUID("5d1b0f9e-6c3a-4d38-9a57-1f0c2b7e4a11")
_E6 = Decimal(10**6)


def token_id_of(slug: str, outcome: str) -> str:
    """A token id shaped like the venue's (a 76-78 digit decimal), stable per market+outcome."""
    return str(int.from_bytes(hashlib.sha256(f"{slug}:{outcome}".encode()).digest(), "big"))


@dataclass
class ClobMarket:
    """One binary market (condition id) and its two outcome tokens."""

    slug: str
    question: str
    tick: str = "0.001"
    min_size: str = "5"
    outcomes: tuple[str, str] = ("Yes", "No")
    end_date_iso: str = "2027-01-01T00:00:00Z"
    closed: bool = False
    payouts: dict[str, Decimal] = field(default_factory=dict)  # token id -> payout, resolved

    @property
    def condition_id(self) -> str:
        return "0x" + hashlib.sha256(self.slug.encode()).hexdigest()

    @property
    def tokens(self) -> list[tuple[str, str]]:
        return [(token_id_of(self.slug, o), o) for o in self.outcomes]

    def wire(self) -> dict[str, Any]:
        return {
            "condition_id": self.condition_id,
            "question_id": "0x" + hashlib.sha256(self.question.encode()).hexdigest(),
            "question": self.question,
            "market_slug": self.slug,
            "active": True,
            "closed": self.closed,
            "accepting_orders": not self.closed,
            "minimum_order_size": self.min_size,
            "minimum_tick_size": self.tick,
            "maker_base_fee": 0,
            "taker_base_fee": 0,
            "neg_risk": False,
            "end_date_iso": self.end_date_iso,
            "tokens": [
                {
                    "token_id": tid,
                    "outcome": o,
                    "price": float(self.payouts.get(tid, Decimal("0.5"))),
                    "winner": bool(self.closed and self.payouts.get(tid) == 1),
                }
                for tid, o in self.tokens
            ],
        }


DEFAULT_MARKETS = (
    ClobMarket("will-it-rain-in-lisbon", "Will it rain in Lisbon on 1 March?"),
    ClobMarket("fed-cuts-in-march", "Will the Fed cut rates in March?", tick="0.01"),
)


@dataclass
class _Key:
    address: str
    api_key: str
    secret: str
    passphrase: str


class PolymarketServer(ExchangeServer):
    """The CLOB on 127.0.0.1 (see the module docstring). ``chain_id`` binds the signatures;
    each wallet that derives a key starts with ``start_usdc`` USDC."""

    kind = "polymarket"
    settable = ("start_usdc",)

    def __init__(self, markets: tuple[ClobMarket, ...] | None = None, *, port: int = 0) -> None:
        self.markets = {m.condition_id: m for m in (markets or _copy(DEFAULT_MARKETS))}
        self.token_market = {t: m for m in self.markets.values() for t, _ in m.tokens}
        self.outcome = {t: o for m in self.markets.values() for t, o in m.tokens}
        specs = [
            SymbolSpec(tid, tid, tid, "USDC", m.tick, "0.01", "0", "TRADING", m.min_size, "1000000")
            for m in self.markets.values()
            for tid, _ in m.tokens
        ]
        self.chain_id = wire.CHAIN_ID
        self.start_usdc = "10000"
        self.api_keys: dict[str, _Key] = {}
        self.by_wallet: dict[tuple[str, int], _Key] = {}
        self.auth_failures = 0
        self.signature_failures = 0
        self._published: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self._pump: asyncio.Task[None] | None = None
        super().__init__(specs, maker_fee="0", taker_fee="0", port=port)
        for m in self.markets.values():
            (yes, _), (no, _) = m.tokens
            self.matcher.seed(
                yes, [("0.48", "300"), ("0.47", "500")], [("0.52", "300"), ("0.53", "500")]
            )
            self.matcher.seed(
                no, [("0.47", "300"), ("0.46", "500")], [("0.51", "300"), ("0.52", "500")]
            )

    # --- routes ----------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._rate_mw)
        r = app.router
        r.add_get("/time", self._time)
        r.add_get("/markets", self._markets)
        r.add_get("/markets/{cid}", self._market)
        r.add_get("/book", self._book)
        r.add_get("/tick-size", self._tick_size)
        r.add_get("/neg-risk", self._neg_risk)
        r.add_get("/fee-rate", self._fee_rate)
        r.add_get("/auth/derive-api-key", self._derive)
        r.add_post("/auth/api-key", self._create)
        r.add_post("/order", self._post_order)
        r.add_delete("/order", self._cancel)
        r.add_delete("/cancel-all", self._cancel_all)
        r.add_get("/data/orders", self._orders)
        r.add_get("/data/order/{oid}", self._order)
        r.add_get("/data/trades", self._trades)
        r.add_get("/balance-allowance", self._balance)
        r.add_get("/ws/market", self._ws_market)
        r.add_get("/ws/user", self._ws_user)
        r.add_post("/__control/resolve", self._ctl_resolve)
        r.add_post("/__control/tick", self._ctl_tick)
        app.on_startup.append(self._start_pump)

    @web.middleware
    async def _rate_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        armed = self.faults.active("rate_limit")
        scope = (armed or {}).get("path", request.path)  # a path, or every REST request
        rest = not request.path.startswith(("/__", "/ws/"))
        if armed is not None and scope == request.path and rest:
            args = self.faults.take("rate_limit")
            if args is not None:
                after = str(args.get("retry_after", 1))
                return web.json_response(
                    {"error": "Too Many Requests"}, status=429, headers={"Retry-After": after}
                )
        return await handler(request)

    # --- public ----------------------------------------------------------------------------------
    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response(int(time.time()))

    async def _neg_risk(self, request: web.Request) -> web.Response:
        return web.json_response({"neg_risk": False})

    async def _fee_rate(self, request: web.Request) -> web.Response:
        return web.json_response({"base_fee": 0})

    async def _markets(self, request: web.Request) -> web.Response:
        data = [m.wire() for m in self.markets.values()]
        return web.json_response(
            {"limit": 500, "count": len(data), "next_cursor": wire.END_CURSOR, "data": data}
        )

    async def _market(self, request: web.Request) -> web.Response:
        m = self.markets.get(request.match_info["cid"])
        if m is None:
            return web.json_response({"error": "market not found"}, status=404)
        return web.json_response(m.wire())

    def _book_msg(self, tid: str) -> dict[str, Any]:
        depth = self.matcher.books[tid].depth()
        lv = [{"price": fmt(p), "size": fmt(q)} for p, q in reversed(depth["bids"])]
        return {
            "event_type": "book",
            "asset_id": tid,
            "market": self.token_market[tid].condition_id,
            "bids": lv,
            "asks": [{"price": fmt(p), "size": fmt(q)} for p, q in reversed(depth["asks"])],
            "timestamp": str(int(time.time() * 1000)),
            "hash": "0x" + hashlib.sha1(json.dumps(lv).encode()).hexdigest(),
        }

    async def _book(self, request: web.Request) -> web.Response:
        tid = request.query.get("token_id", "")
        if tid not in self.token_market:
            return web.json_response(
                {"error": "No orderbook exists for the requested token id"}, status=404
            )
        return web.json_response(self._book_msg(tid))

    async def _tick_size(self, request: web.Request) -> web.Response:
        m = self.token_market.get(request.query.get("token_id", ""))
        if m is None:
            return web.json_response({"error": "unknown token"}, status=404)
        return web.json_response({"minimum_tick_size": float(m.tick)})

    # --- auth ------------------------------------------------------------------------------------
    def _l1(self, request: web.Request) -> tuple[str, int]:
        h = request.headers
        try:
            addr, ts, nonce = h["POLY_ADDRESS"], h["POLY_TIMESTAMP"], int(h.get("POLY_NONCE", "0"))
            signer = wire.clob_auth_signer(addr, ts, nonce, h["POLY_SIGNATURE"], self.chain_id)
        except (KeyError, ValueError) as exc:
            self.auth_failures += 1
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": f"Invalid L1 headers: {exc}"})
            ) from None
        if signer.lower() != addr.lower() or abs(time.time() - int(ts)) > 300:
            self.auth_failures += 1
            raise web.HTTPUnauthorized(text=json.dumps({"error": "Invalid L1 Request headers"}))
        return addr, nonce

    def _new_key(self, addr: str, nonce: int) -> _Key:
        seed = hashlib.sha256(f"{addr.lower()}:{nonce}:{id(self)}".encode()).digest()
        key = _Key(
            addr,
            str(uuid.uuid5(_NS, f"{addr.lower()}:{nonce}")),
            base64.urlsafe_b64encode(seed).decode(),
            hashlib.sha256(seed).hexdigest()[:64],
        )
        self.api_keys[key.api_key] = self.by_wallet[(addr.lower(), nonce)] = key
        if addr.lower() not in self.matcher.accounts:  # a wallet funded before keeps its funds
            self.matcher.account(addr.lower(), {"USDC": self.start_usdc})
        return key

    def add_key(  # type: ignore[override]
        self,
        api_key: str,
        secret: str = "",
        account: str = "main",
        password: str = "",
        balances: dict[str, Any] | None = None,
        withdraw: bool = False,
    ) -> ApiKey:
        """Fund a wallet (``api_key`` = its address) with ``balances``; its CLOB key is derived
        by the wallet itself (level 1), as on the venue (``python -m tests.venues``'s --key)."""
        self.matcher.account(api_key.lower(), balances or {"USDC": self.start_usdc})
        return ApiKey(api_key, secret, api_key.lower(), password, withdraw)

    @staticmethod
    def _creds(k: _Key) -> web.Response:
        return web.json_response(
            {"apiKey": k.api_key, "secret": k.secret, "passphrase": k.passphrase}
        )

    async def _derive(self, request: web.Request) -> web.Response:
        addr, nonce = self._l1(request)
        key = self.by_wallet.get((addr.lower(), nonce))
        if key is None:
            return web.json_response({"error": "Could not derive api key!"}, status=400)
        return self._creds(key)

    async def _create(self, request: web.Request) -> web.Response:
        addr, nonce = self._l1(request)
        key = self.by_wallet.get((addr.lower(), nonce)) or self._new_key(addr, nonce)
        return self._creds(key)

    async def _l2(self, request: web.Request) -> tuple[_Key, str]:
        """The key of a level-2 request and its body, or 401."""
        body = await request.text()
        h = request.headers
        key = self.api_keys.get(h.get("POLY_API_KEY", ""))
        ok = (
            key is not None
            and h.get("POLY_PASSPHRASE") == key.passphrase
            and h.get("POLY_ADDRESS", "").lower() == key.address.lower()
        )
        if ok:
            assert key is not None
            ts = h.get("POLY_TIMESTAMP", "0")
            want = wire.l2_headers(
                key.address,
                (key.api_key, key.secret, key.passphrase),
                request.method,
                request.path,
                body or None,
                int(ts) if ts.isdigit() else 0,
            )["POLY_SIGNATURE"]
            ok = (
                hmac.compare_digest(want, h.get("POLY_SIGNATURE", ""))
                and abs(time.time() - int(ts or 0)) <= 30
            )
        if not ok:
            self.auth_failures += 1
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "Unauthorized/Invalid api key"}),
                content_type="application/json",
            )
        assert key is not None
        return key, body

    # --- orders ----------------------------------------------------------------------------------
    def _order_error(self, msg: str) -> web.Response:
        return web.json_response({"success": False, "errorMsg": msg, "error": msg}, status=400)

    async def _post_order(self, request: web.Request) -> web.Response:
        key, body = await self._l2(request)
        try:
            req = json.loads(body)
            d, otype = req["order"], str(req.get("orderType", "GTC"))
            post_only = bool(req.get("postOnly", False))
            if req.get("owner") != key.api_key:
                return self._order_error("the order's owner is not the API key")
            signer = wire.order_signer(d, self.chain_id)
            side, px, size = wire.order_terms(d)
        except (KeyError, ValueError, TypeError) as exc:
            return self._order_error(f"invalid order payload: {exc}")
        if not (signer.lower() == str(d["signer"]).lower() == key.address.lower()) or (
            int(d["signatureType"]) == 0 and str(d["maker"]).lower() != key.address.lower()
        ):
            self.signature_failures += 1
            return self._order_error("invalid signature")
        return self._enter(key, d, otype, post_only, side, px, size)

    def _enter(
        self,
        key: _Key,
        d: dict[str, Any],
        otype: str,
        post_only: bool,
        side: str,
        px: Decimal,
        size: Decimal,
    ) -> web.Response:
        tid = str(d["tokenId"])
        m = self.token_market.get(tid)
        if m is None:
            return self._order_error("invalid token id")
        if m.closed:
            return self._order_error("market is closed: orders are not accepted")
        tick = Decimal(m.tick)
        if px % tick or not tick <= px <= 1 - tick:
            return self._order_error(
                f"invalid price ({px}), min tick size {m.tick}, max {1 - tick}"
            )
        if size < Decimal(m.min_size):
            return self._order_error(f"Size ({size}) lower than the minimum: {m.min_size}")
        if otype not in ("GTC", "GTD", "FOK", "FAK"):
            return self._order_error(f"invalid order type {otype}")
        if otype == "GTD" and int(d["expiration"]) < time.time() + 60:
            return self._order_error("invalid expiration: GTD needs at least a minute ahead")
        oid = wire.order_hash(d, self.chain_id)
        if any(o.uid == oid for o in self.matcher.orders.values()):
            return self._order_error("order already exists")
        acct = key.address.lower()
        order = Order(
            0,
            "",
            acct,
            self.matcher.spec(tid),
            side.lower(),
            "limit",
            size,
            px,
            tif={"FOK": "FOK", "FAK": "IOC"}.get(otype, "GTC"),
            post_only=post_only,
            uid=oid,
            extra={"order_type": otype, "expiration": str(d["expiration"]), "owner": key.api_key},
        )
        book = self.matcher.books[tid]
        crosses = book.opposite(order.side).crosses(px, order.side == "buy")
        if otype == "FOK" and self.matcher._fillable(book, order) < size:
            return self._order_error(
                "order couldn't be fully filled. FOK orders are fully filled or killed."
            )
        if otype == "FAK" and not crosses:
            return self._order_error("no orders found to match with FAK order.")
        if post_only and crosses:
            return self._order_error("invalid post-only order: order crosses book")
        try:
            fills = self.matcher.submit(acct, order)
        except Reject as exc:
            msg = (
                "not enough balance / allowance"
                if exc.kind == "insufficient_balance"
                else exc.message
            )
            return self._order_error(msg)
        self._publish_books()
        status = (
            "matched" if fills and not order.is_open else "live" if order.is_open else "unmatched"
        )
        return web.json_response(
            {
                "success": True,
                "errorMsg": "",
                "orderID": oid,
                "status": status,
                "makingAmount": "",
                "takingAmount": "",
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        key, body = await self._l2(request)
        oid = str(json.loads(body or "{}").get("orderID", ""))
        return web.json_response(self._cancel_ids(key, [oid]))

    async def _cancel_all(self, request: web.Request) -> web.Response:
        key, _ = await self._l2(request)
        ids = [o.uid for o in self.matcher.open_orders(key.address.lower())]
        return web.json_response(self._cancel_ids(key, ids))

    def _cancel_ids(self, key: _Key, ids: list[str]) -> dict[str, Any]:
        done, refused = [], {}
        for oid in ids:
            o = self._find(key, oid)
            if o is None or not o.is_open:
                refused[oid] = (
                    "order not found"
                    if o is None
                    else "order can't be canceled: it is already done"
                )
                continue
            self.matcher.cancel(o.account, o.order_id)
            done.append(oid)
        self._publish_books()
        return {"canceled": done, "not_canceled": refused}

    def _find(self, key: _Key, oid: str) -> Order | None:
        o = next((o for o in self.matcher.orders.values() if o.uid == oid), None)
        return o if o is not None and o.account == key.address.lower() else None

    def order_wire(self, o: Order) -> dict[str, Any]:
        status = {"open": "LIVE", "closed": "MATCHED"}.get(o.status, "CANCELED")
        return {
            "id": o.uid,
            "status": status,
            "owner": o.extra.get("owner", ""),
            "maker_address": o.account,
            "market": self.token_market[o.symbol].condition_id,
            "asset_id": o.symbol,
            "side": o.side.upper(),
            "original_size": fmt(o.amount),
            "size_matched": fmt(o.filled),
            "price": fmt(o.price or Decimal(0)),
            "outcome": self.outcome[o.symbol],
            "order_type": o.extra.get("order_type", "GTC"),
            "expiration": o.extra.get("expiration", "0"),
            "created_at": o.created_ms // 1000,
            "associate_trades": [f"trade-{f.trade_id}" for f in o.fills],
        }

    async def _orders(self, request: web.Request) -> web.Response:
        key, _ = await self._l2(request)
        data = [self.order_wire(o) for o in self.matcher.open_orders(key.address.lower())]
        return web.json_response({"data": data, "next_cursor": wire.END_CURSOR, "count": len(data)})

    async def _order(self, request: web.Request) -> web.Response:
        key, _ = await self._l2(request)
        o = self._find(key, request.match_info["oid"])
        return web.json_response(self.order_wire(o) if o is not None else None)

    def trade_wire(self, f: Fill) -> dict[str, Any]:
        o, tid = f.order, f"trade-{f.trade_id}"
        mine = {
            "order_id": o.uid,
            "owner": o.extra.get("owner", ""),
            "maker_address": o.account,
            "matched_amount": fmt(f.qty),
            "price": fmt(f.price),
            "asset_id": o.symbol,
            "outcome": self.outcome[o.symbol],
            "side": o.side.upper(),
            "fee_rate_bps": "0",
        }
        ts = str(f.ts_ms)
        base = {
            "id": tid,
            "market": self.token_market[o.symbol].condition_id,
            "asset_id": o.symbol,
            "size": fmt(f.qty),
            "price": fmt(f.price),
            "status": "MATCHED",
            "fee_rate_bps": "0",
            "outcome": self.outcome[o.symbol],
            "owner": o.extra.get("owner", ""),
            "match_time": ts,
            "last_update": ts,
            "timestamp": ts,
            "type": "TRADE",
        }
        if f.maker:  # someone else took our resting order
            opp = "SELL" if o.side == "buy" else "BUY"
            return base | {
                "side": opp,
                "taker_order_id": "0x" + "00" * 32,
                "trader_side": "MAKER",
                "maker_orders": [mine],
            }
        return base | {
            "side": o.side.upper(),
            "taker_order_id": o.uid,
            "trader_side": "TAKER",
            "maker_orders": [],
        }

    async def _trades(self, request: web.Request) -> web.Response:
        key, _ = await self._l2(request)
        data = [self.trade_wire(f) for f in self.matcher.account_trades(key.address.lower())]
        return web.json_response({"data": data, "next_cursor": wire.END_CURSOR, "count": len(data)})

    async def _balance(self, request: web.Request) -> web.Response:
        key, _ = await self._l2(request)
        acct = self.matcher.account(key.address.lower())
        asset = (
            "USDC"
            if request.query.get("asset_type") == "COLLATERAL"
            else request.query.get("token_id", "")
        )
        total = acct.free.get(asset, Decimal(0))  # what is free to order with
        return web.json_response({"balance": str(int(total * _E6)), "allowance": str(10**18)})

    # --- user events (matcher listener) ----------------------------------------------------------
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        if order.account == MARKET:
            return
        kind = {"new": "PLACEMENT", "trade": "UPDATE"}.get(event, "CANCELLATION")
        ts = str(int(time.time() * 1000))
        if event == "trade" and fill is not None:
            self.events.publish(
                order.account, json.dumps(self.trade_wire(fill) | {"event_type": "trade"})
            )
            trade = {
                "event_type": "last_trade_price",
                "asset_id": order.symbol,
                "market": self.token_market[order.symbol].condition_id,
                "price": fmt(fill.price),
                "size": fmt(fill.qty),
                "side": ("SELL" if order.side == "buy" else "BUY")
                if fill.maker
                else order.side.upper(),
                "fee_rate_bps": "0",
                "timestamp": ts,
            }
            self.hub.broadcast("market", json.dumps(trade), order.symbol)
        msg = self.order_wire(order) | {"event_type": "order", "type": kind, "timestamp": ts}
        self.events.publish(order.account, json.dumps(msg))

    # --- websockets ------------------------------------------------------------------------------
    async def _ws_market(self, request: web.Request) -> web.WebSocketResponse:
        sock = await self.hub.open(request, "market")
        return await self.hub.serve(sock, self._on_market_text)

    async def _on_market_text(self, sock: Sock, text: str) -> None:
        if text == "PING":
            sock.send("PONG")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            sock.send("INVALID OPERATION")
            return
        ids = [str(a) for a in msg.get("assets_ids") or [] if str(a) in self.token_market]
        sock.subs.update(ids)
        if ids:
            sock.send(json.dumps([self._book_msg(t) for t in ids]))

    async def _ws_user(self, request: web.Request) -> web.WebSocketResponse:
        sock = await self.hub.open(request, "user")
        return await self.hub.serve(sock, self._on_user_text)

    async def _on_user_text(self, sock: Sock, text: str) -> None:
        if text == "PING":
            sock.send("PONG")
            return
        try:
            auth = json.loads(text).get("auth") or {}
        except (ValueError, AttributeError):
            auth = {}
        key = self.api_keys.get(str(auth.get("apiKey", "")))
        if (
            key is None
            or auth.get("secret") != key.secret
            or auth.get("passphrase") != key.passphrase
        ):
            self.auth_failures += 1
            await sock.ws.close(code=4001, message=b"unauthorized")
            return
        sock.account = key.address.lower()

    # --- the book pump: price_change for every level that moved ----------------------------------
    async def _start_pump(self, app: web.Application) -> None:
        for tid in self.token_market:
            self._published[tid] = self._levels(tid)
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop())

    async def _pump_loop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(0.02)
                self._expire_gtd()
                self._publish_books()

    def _expire_gtd(self) -> None:
        """GTD orders past their expiration leave the book (the venue's own sweep)."""
        now = time.time()
        for o in list(self.matcher.orders.values()):
            exp = int(o.extra.get("expiration", "0") or 0)
            if o.is_open and o.extra.get("order_type") == "GTD" and 0 < exp <= now:
                self.matcher.cancel(o.account, o.order_id)

    def _levels(self, tid: str) -> dict[str, dict[Decimal, Decimal]]:
        depth = self.matcher.books[tid].depth()
        return {"BUY": dict(depth["bids"]), "SELL": dict(depth["asks"])}

    def _publish_books(self) -> None:
        for tid in self.token_market:
            now, before = self._levels(tid), self._published.get(tid, {"BUY": {}, "SELL": {}})
            changes = []
            for side in ("BUY", "SELL"):
                for px in sorted(set(now[side]) | set(before[side])):
                    qty = now[side].get(px, Decimal(0))
                    if qty != before[side].get(px, Decimal(0)):
                        changes.append(
                            {"asset_id": tid, "price": fmt(px), "size": fmt(qty), "side": side}
                        )
            self._published[tid] = now
            if not changes:
                continue
            best_bid = max(now["BUY"], default=Decimal(0))
            best_ask = min(now["SELL"], default=Decimal(1))
            for ch in changes:
                ch |= {
                    "best_bid": fmt(best_bid),
                    "best_ask": fmt(best_ask),
                    "hash": uuid.uuid4().hex,
                }
            msg = {
                "event_type": "price_change",
                "market": self.token_market[tid].condition_id,
                "price_changes": changes,
                "timestamp": str(int(time.time() * 1000)),
            }
            self.hub.broadcast("market", json.dumps(msg), tid)

    # --- resolution and tick changes -------------------------------------------------------------
    def resolve(self, condition_id: str, winner: str) -> None:
        """Resolve a market: ``winner`` an outcome ("Yes" / "No") or "50-50". Open orders are
        canceled, every wallet's tokens paid out in USDC, ``market_resolved`` broadcast."""
        m = self.markets[condition_id]
        for tid, outcome in m.tokens:
            m.payouts[tid] = (
                Decimal("0.5") if winner == "50-50" else Decimal(int(outcome == winner))
            )
        m.closed = True
        for tid, _ in m.tokens:
            for o in list(self.matcher.orders.values()):
                if o.symbol == tid and o.is_open and o.account != MARKET:
                    self.matcher.cancel(o.account, o.order_id)
            for name, acct in self.matcher.accounts.items():
                held = acct.free.get(tid, Decimal(0))
                if name != MARKET and held:
                    acct.free[tid] = Decimal(0)
                    acct.receive("USDC", held * m.payouts[tid])
        win = next((t for t, _ in m.tokens if m.payouts[t] == 1), "")
        msg = {
            "event_type": "market_resolved",
            "market": condition_id,
            "id": condition_id,
            "assets_ids": [t for t, _ in m.tokens],
            "winning_asset_id": win,
            "winning_outcome": winner,
            "timestamp": str(int(time.time() * 1000)),
        }
        for tid, _ in m.tokens:
            self.hub.broadcast("market", json.dumps(msg), tid)

    def change_tick(self, token_id: str, new_tick: str) -> None:
        m = self.token_market[token_id]
        old, m.tick = m.tick, new_tick
        for tid, _ in m.tokens:
            spec = dataclasses.replace(self.matcher.specs[tid], tick=new_tick)
            self.matcher.specs[tid] = self.matcher.books[tid].spec = spec
            msg = {
                "event_type": "tick_size_change",
                "asset_id": tid,
                "market": m.condition_id,
                "old_tick_size": old,
                "new_tick_size": new_tick,
                "timestamp": str(int(time.time() * 1000)),
            }
            self.hub.broadcast("market", json.dumps(msg), tid)

    async def _ctl_resolve(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.resolve(body["condition_id"], body["winner"])
        return web.json_response({"ok": True})

    async def _ctl_tick(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.change_tick(body["token_id"], body["tick"])
        return web.json_response({"ok": True})

    # --- helpers for tests -----------------------------------------------------------------------
    def market_take(
        self, token_id: str, side: str, qty: str, price: str | None = None
    ) -> list[Fill]:
        """Another participant's order taking ``qty`` (fills our resting orders when best)."""
        fills = self.matcher.take(token_id, side, qty, price)
        self._publish_books()
        if fills:
            last = fills[-1]
            trade = {
                "event_type": "last_trade_price",
                "asset_id": token_id,
                "market": self.token_market[token_id].condition_id,
                "price": fmt(last.price),
                "size": fmt(sum((f.qty for f in fills), Decimal(0))),
                "side": side.upper(),
                "fee_rate_bps": "0",
                "timestamp": str(int(time.time() * 1000)),
            }
            self.hub.broadcast("market", json.dumps(trade), token_id)
        return fills


def _copy(markets: tuple[ClobMarket, ...]) -> tuple[ClobMarket, ...]:
    return tuple(dataclasses.replace(m, payouts={}) for m in markets)
