"""A local Coinbase Advanced Trade server that raw ccxt ``coinbase`` (4.5.90) talks to.

REST: the ``/api/v3/brokerage/...`` endpoints ccxt calls for markets, fees, books, orders
(create with ``client_order_id``, batch cancel, edit, get, list, fills) and accounts, plus the
``/v2`` app API it still calls for currencies, exchange rates, time and (by default) balances.
Every private request must carry an ES256 JWT the way Coinbase checks it
(:mod:`tests.venues.coinbase_auth`). Websocket: one endpoint at ``/`` (ccxt puts every channel
on one connection) with ``level2``, ``market_trades``, ``ticker``, ``heartbeats`` and the
JWT-authenticated ``user`` channel (:mod:`tests.venues.coinbase_ws`).

Behaviours worth knowing (each is the exchange's): a ``client_order_id`` already used returns
the existing order instead of placing a new one (idempotent retries); a refused order is HTTP
200 with ``success: false``; fees are in the quote asset on both sides; rate limits answer 429
``rate_limit_exceeded`` with ``Retry-After``. The market is a seeded synthetic book (no real
Coinbase capture exists), moved by a random walk while someone watches it.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.venues import coinbase_wire as w
from tests.venues.coinbase_auth import AuthError, JwtVerifier
from tests.venues.coinbase_ws import CoinbaseFeeds
from tests.venues.core import ApiKey, ExchangeServer, Fill, Order, Reject, SymbolSpec, dec

DEFAULT_SPECS = (
    SymbolSpec(
        symbol="BTC/USD",
        venue_symbol="BTC-USD",
        base="BTC",
        quote="USD",
        tick="0.01",
        lot="0.00000001",
        min_notional="1",
        min_qty="0.00000001",
        max_qty="3400",
    ),
    SymbolSpec(
        symbol="ETH/USD",
        venue_symbol="ETH-USD",
        base="ETH",
        quote="USD",
        tick="0.01",
        lot="0.00000001",
        min_notional="1",
        min_qty="0.00000001",
        max_qty="50000",
    ),
)
MIDS = {"BTC/USD": "60000.00", "ETH/USD": "3000.00"}
FIATS = ("USD", "EUR", "GBP")
V3 = "/api/v3/brokerage"

Handler = Callable[[web.Request, ApiKey, dict[str, Any]], Awaitable[web.StreamResponse]]


def public_key_of(pem: str) -> ec.EllipticCurvePublicKey:
    """The public key of a PEM that holds either half of an EC P-256 key pair."""
    data = pem.encode()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public


class CoinbaseServer(ExchangeServer):
    kind = "coinbase"
    default_specs = DEFAULT_SPECS

    def __init__(
        self,
        specs: list[SymbolSpec] | None = None,
        *,
        mids: dict[str, str] | None = None,
        md_interval_s: float = 0.05,
        heartbeat_s: float = 1.0,
        clock_offset_s: float = 0.0,
        seed: int = 13,
        maker_fee: str = "0.004",
        taker_fee: str = "0.006",
        port: int = 0,
        capture: str | None = None,
    ) -> None:
        del capture  # no real Coinbase capture exists: the market is synthetic
        super().__init__(specs, maker_fee=maker_fee, taker_fee=taker_fee, port=port)
        self.matcher.fee_in_quote = True
        self.auth = JwtVerifier(skew_s=clock_offset_s)
        self.feeds = CoinbaseFeeds(
            self, mids or MIDS, interval_s=md_interval_s, heartbeat_s=heartbeat_s, seed=seed
        )
        self.refused: dict[str, int] = {}  # auth refusals by reason

    # -- set-up
    def add_key(
        self,
        api_key: str,
        secret: str,
        account: str = "main",
        password: str = "",
        balances: dict[str, Any] | None = None,
        withdraw: bool = False,
    ) -> ApiKey:
        """``secret``: the key's PEM, private (as a client holds it) or public."""
        self.auth.add_key(api_key, public_key_of(secret))
        return super().add_key(api_key, "", account, password, balances, withdraw)

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._limits_mw)
        app.on_cleanup.append(self._stop_feeds)
        r = app.router
        r.add_get("/", self._ws)
        r.add_get("/v2/time", self._v2_time)
        r.add_get("/v2/currencies", self._v2_currencies)
        r.add_get("/v2/currencies/crypto", self._v2_crypto)
        r.add_get("/v2/exchange-rates", self._v2_rates)
        r.add_get("/v2/accounts", self._signed(self._v2_accounts))
        r.add_get(f"{V3}/time", self._v3_time)
        r.add_get(f"{V3}/market/products", self._products)
        r.add_get(f"{V3}/market/products/{{product_id}}", self._product)
        r.add_get(f"{V3}/market/product_book", self._product_book)
        r.add_get(f"{V3}/market/products/{{product_id}}/ticker", self._ticker)
        r.add_get(f"{V3}/products", self._signed(self._private_products))
        r.add_get(f"{V3}/products/{{product_id}}", self._signed(self._private_product))
        r.add_get(f"{V3}/product_book", self._signed(self._private_book))
        r.add_get(f"{V3}/products/{{product_id}}/ticker", self._signed(self._private_ticker))
        r.add_get(f"{V3}/transaction_summary", self._signed(self._fees))
        r.add_get(f"{V3}/accounts", self._signed(self._accounts))
        r.add_get(f"{V3}/key_permissions", self._signed(self._key_permissions))
        r.add_post(f"{V3}/orders", self._signed(self._create))
        r.add_post(f"{V3}/orders/batch_cancel", self._signed(self._batch_cancel))
        r.add_post(f"{V3}/orders/edit", self._signed(self._edit))
        r.add_get(f"{V3}/orders/historical/batch", self._signed(self._list_orders))
        r.add_get(f"{V3}/orders/historical/fills", self._signed(self._fills))
        r.add_get(f"{V3}/orders/historical/{{order_id}}", self._signed(self._get_order))

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        return await self.feeds.serve(request)

    async def _stop_feeds(self, app: web.Application) -> None:
        await self.feeds.stop()

    def now_s(self) -> float:
        """The server's clock (skewed by ``clock_offset_s`` for clock tests)."""
        return self.auth.now()

    # -- limits: a 429 with Retry-After; a "ban" is the same answer lasting ``retry_after`` s
    @web.middleware
    async def _limits_mw(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(("/api/", "/v2/")):
            retry_after: float | None = None
            if self.faults.active("ban") is not None:
                self.faults.fired["ban_refusals"] += 1
                retry_after = max(self.faults.remaining_s("ban"), 1.0)
            else:
                args = self.faults.take("rate_limit")
                if args is not None:
                    retry_after = float(args.get("retry_after", 1))
            if retry_after is not None:
                return w.errors_body(
                    "rate_limit_exceeded",
                    "Too many requests",
                    429,
                    {"Retry-After": str(math.ceil(retry_after))},
                )
        return await handler(request)

    # -- authentication
    def _refuse(self, request: web.Request, e: AuthError) -> web.Response:
        self.refused[e.reason] = self.refused.get(e.reason, 0) + 1
        if e.expired:
            return w.errors_body("authentication_error", "request timestamp expired", 401)
        if request.path.startswith("/v2/"):
            return w.errors_body("authentication_error", "invalid api key", 401)
        return w.unauthorized()

    def authenticate(self, request: web.Request) -> ApiKey:
        """The key a request is signed with, or ``AuthError``."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise AuthError("missing bearer token")
        if self.faults.take("timestamp") is not None:
            raise AuthError("request timestamp expired", expired=True)
        claims = self.auth.verify(header[7:].strip(), request.method, request.path)
        key = self.keys.get(claims["sub"])
        if key is None:
            raise AuthError("unknown api key")
        return key

    def _signed(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                key = self.authenticate(request)
            except AuthError as e:
                return self._refuse(request, e)
            body: dict[str, Any] = {}
            if request.method != "GET" and request.can_read_body:
                try:
                    body = await request.json()
                except ValueError:
                    return w.error_body("INVALID_ARGUMENT", "malformed JSON body", 400)
            try:
                return await handler(request, key, body)
            except (KeyError, ValueError, TypeError, InvalidOperation) as e:
                return w.error_body("INVALID_ARGUMENT", f"invalid request: {e}", 400)

        return run

    # -- public REST
    async def _v2_time(self, request: web.Request) -> web.Response:
        now = self.now_s()
        return web.json_response({"data": {"iso": w.iso(now * 1000), "epoch": int(now)}})

    async def _v3_time(self, request: web.Request) -> web.Response:
        now = self.now_s()
        return web.json_response(
            {
                "iso": w.iso(now * 1000),
                "epochSeconds": str(int(now)),
                "epochMillis": str(int(now * 1000)),
            }
        )

    def _assets(self) -> tuple[list[str], list[str]]:
        assets = {a for s in self.matcher.specs.values() for a in (s.base, s.quote)}
        fiat = sorted(a for a in assets if a in FIATS)
        return fiat, sorted(assets - set(fiat))

    async def _v2_currencies(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [w.fiat_currency(c) for c in self._assets()[0]]})

    async def _v2_crypto(self, request: web.Request) -> web.Response:
        crypto = self._assets()[1]
        return web.json_response({"data": [w.crypto_currency(c, i) for i, c in enumerate(crypto)]})

    async def _v2_rates(self, request: web.Request) -> web.Response:
        rates = {"USD": "1"}
        for spec in self.matcher.specs.values():
            last = self.feeds.last_price(spec)
            if spec.quote == "USD" and last:
                rates[spec.base] = str(Decimal(1) / last)
        return web.json_response({"data": {"currency": "USD", "rates": rates}})

    def _products_body(self, query: Any) -> dict:
        if query.get("product_type", "SPOT") != "SPOT":
            return {"products": [], "num_products": 0}
        wanted = set(query.getall("product_ids", []))
        products = [
            w.product(s, self.feeds.last_price(s))
            for s in self.matcher.specs.values()
            if not wanted or s.venue_symbol in wanted
        ]
        return {"products": products, "num_products": len(products)}

    async def _products(self, request: web.Request) -> web.Response:
        return web.json_response(self._products_body(request.query))

    async def _product(self, request: web.Request) -> web.Response:
        spec = self.matcher.by_venue_symbol.get(request.match_info["product_id"])
        if spec is None:
            return w.error_body("NOT_FOUND", "ProductID is invalid", 404)
        return web.json_response(w.product(spec, self.feeds.last_price(spec)))

    async def _product_book(self, request: web.Request) -> web.Response:
        spec = self.matcher.by_venue_symbol.get(request.query.get("product_id", ""))
        if spec is None:
            return w.error_body("INVALID_ARGUMENT", "valid product_id is required", 400)
        limit = int(request.query.get("limit", 0) or 0) or None
        return web.json_response({"pricebook": self.feeds.pricebook(spec, limit)})

    async def _ticker(self, request: web.Request) -> web.Response:
        spec = self.matcher.by_venue_symbol.get(request.match_info["product_id"])
        if spec is None:
            return w.error_body("NOT_FOUND", "ProductID is invalid", 404)
        limit = int(request.query.get("limit", 100) or 100)
        return web.json_response(self.feeds.ticker_body(spec, limit))

    # the private mirrors of the public market endpoints (ccxt's ``usePrivate``)
    async def _private_products(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        return await self._products(request)

    async def _private_product(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        return await self._product(request)

    async def _private_book(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        return await self._product_book(request)

    async def _private_ticker(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        return await self._ticker(request)

    # -- account
    async def _fees(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        return web.json_response(w.fee_tier(self.matcher.maker_fee, self.matcher.taker_fee))

    async def _key_permissions(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        """What the key may do (Gekko refuses one that can transfer out, ops/venue_run.py)."""
        return web.json_response(
            {
                "can_view": True,
                "can_trade": True,
                "can_transfer": key.withdraw,
                "portfolio_uuid": "00000000-0000-4000-8000-000000000000",
                "portfolio_type": "DEFAULT",
            }
        )

    async def _accounts(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        accounts = w.v3_accounts(self.matcher.account(key.account))
        return web.json_response(
            {"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)}
        )

    async def _v2_accounts(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        data = w.v2_accounts(self.matcher.account(key.account))
        pagination = {"ending_before": None, "starting_after": None, "limit": 250}
        return web.json_response({"pagination": pagination | {"next_uri": None}, "data": data})

    # -- orders
    def _order_from(self, body: dict[str, Any], account: str) -> Order:
        spec = self.matcher.by_venue_symbol.get(str(body.get("product_id")))
        if spec is None:
            raise Reject("unknown_symbol", f"unknown product_id {body.get('product_id')}")
        side = str(body.get("side", "")).lower()
        config = body.get("order_configuration") or {}
        if side not in ("buy", "sell") or len(config) != 1:
            raise Reject("bad_request", "side and one order_configuration are required")
        ((name, conf),) = config.items()
        order = Order(
            0,
            str(body.get("client_order_id") or uuid.uuid4()),
            account,
            spec,
            side,
            "limit",
            dec(0),
        )
        if name == "market_market_ioc":
            order.type, order.tif = "market", "IOC"
            if "quote_size" in conf:
                if side != "buy":
                    raise Reject("bad_request", "quote_size is for market buys")
                order.quote_amount = dec(conf["quote_size"])
                order.amount = Decimal(spec.max_qty)  # bounded by the spend; fixed when done
            else:
                order.amount = dec(conf["base_size"])
            return order
        tif = {"limit_limit_gtc": "GTC", "limit_limit_gtd": "GTC", "sor_limit_ioc": "IOC"}
        tif |= {"limit_limit_fok": "FOK"}
        if name not in tif:
            raise Reject("unsupported", name)
        order.tif = tif[name]
        order.amount, order.price = dec(conf["base_size"]), dec(conf["limit_price"])
        order.post_only = bool(conf.get("post_only", False))
        return order

    async def _create(self, request: web.Request, key: ApiKey, body: dict) -> web.Response:
        config = body.get("order_configuration") or {}
        cid = str(body.get("client_order_id") or "")
        prior = self.matcher.by_client.get((key.account, cid)) if cid else None
        if prior is None:
            try:
                order = self._order_from(body, key.account)
                fills = self.matcher.submit(key.account, order)
            except Reject as e:
                if e.kind in ("unknown_symbol", "bad_request"):
                    return w.error_body("INVALID_ARGUMENT", e.message, 400)
                return web.json_response(w.order_failure(e, config))
            self.feeds.after_orders(fills)
        else:  # Coinbase: a client_order_id already used answers with that order
            self.matcher.submitted[cid] += 1
            order = prior
        delay = self.faults.take("delay_ack")
        if delay is not None:  # the order is in; only its answer is late
            await asyncio.sleep(float(delay.get("delay_s", 2.0)))
        return web.json_response(
            {
                "success": True,
                "success_response": {
                    "order_id": order.uid,
                    "product_id": order.spec.venue_symbol,
                    "side": order.side.upper(),
                    "client_order_id": order.client_id,
                },
                "order_configuration": w.configuration(order),
            }
        )

    async def _batch_cancel(self, request: web.Request, key: ApiKey, body: dict) -> web.Response:
        results = []
        for oid in body.get("order_ids") or []:
            try:
                order = self.matcher.find(key.account, str(oid))
            except Reject:
                results.append(
                    {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": oid}
                )
                continue
            if not order.is_open:
                reason = "INVALID_CANCEL_REQUEST"
                results.append({"success": False, "failure_reason": reason, "order_id": oid})
                continue
            self.matcher.cancel(key.account, order.order_id)
            reason = "UNKNOWN_CANCEL_FAILURE_REASON"
            results.append({"success": True, "failure_reason": reason, "order_id": order.uid})
        self.feeds.after_orders([])
        return web.json_response({"results": results})

    async def _edit(self, request: web.Request, key: ApiKey, body: dict) -> web.Response:
        """Price and/or total size of a resting GTC limit order; a failure is ``success:
        false`` with ``errors`` (ccxt raises nothing for it: read ``info``)."""

        def failed(reason: str) -> web.Response:
            err = {
                "edit_failure_reason": reason,
                "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
            }
            return web.json_response({"success": False, "errors": [err]})

        try:
            order = self.matcher.find(key.account, str(body["order_id"]))
        except Reject:
            return failed("ORDER_NOT_FOUND")
        if not order.is_open or order.type != "limit" or order.tif != "GTC":
            return failed("CANNOT_EDIT_ORDER" if order.is_open else "ORDER_NOT_FOUND")
        before = {"price": w.fmt(order.price or Decimal(0)), "size": w.fmt(order.amount)}
        try:
            fills = self.matcher.amend(
                key.account, order.order_id, price=body.get("price"), amount=body.get("size")
            )
        except Reject as e:
            reason = {
                "filter_lot": "CANNOT_EDIT_TO_BELOW_FILLED_SIZE"
                if "filled" in e.message
                else "INVALID_EDITED_SIZE",
                "filter_price": "INVALID_EDITED_PRICE",
                "insufficient_balance": "INSUFFICIENT_FUNDS_FOR_EDIT",
            }.get(e.kind, "UNKNOWN_EDIT_ORDER_FAILURE_REASON")
            return failed(reason)
        order.extra.setdefault("edit_history", []).append(
            before | {"replace_accept_timestamp": w.iso_now()}
        )
        self.feeds.after_orders(fills)
        return web.json_response({"success": True, "errors": []})

    async def _get_order(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        try:
            order = self.matcher.find(key.account, request.match_info["order_id"])
        except Reject:
            msg = "order with this orderID was not found"
            return web.json_response(
                {"error": "unknown", "error_details": msg, "message": msg}, status=404
            )
        return web.json_response({"order": w.order_json(order)})

    async def _list_orders(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        q = request.query
        statuses = set(q.getall("order_status", []))
        products = set(q.getall("product_ids", []) + q.getall("product_id", []))
        orders = [
            o
            for o in self.matcher.orders.values()
            if o.account == key.account
            and (not products or o.spec.venue_symbol in products)
            and (not statuses or w.order_json(o)["status"] in statuses)
        ]
        orders.sort(key=lambda o: o.created_ms, reverse=True)  # newest first
        limit = int(q.get("limit", 100) or 100)
        body = {
            "orders": [w.order_json(o) for o in orders[:limit]],
            "sequence": "0",
            "has_next": len(orders) > limit,
            "cursor": "",
        }
        return web.json_response(body)

    async def _fills(self, request: web.Request, key: ApiKey, _: dict) -> web.Response:
        q = request.query
        products = set(q.getall("product_ids", []) + q.getall("product_id", []))
        order_ids = set(q.getall("order_ids", []) + q.getall("order_id", []))
        fills = [
            f
            for f in self.matcher.account_trades(key.account)
            if (not products or f.order.spec.venue_symbol in products)
            and (not order_ids or f.order.uid in order_ids)
        ]
        fills.reverse()  # newest first
        limit = int(q.get("limit", 100) or 100)
        return web.json_response({"fills": [w.fill_json(f) for f in fills[:limit]], "cursor": ""})

    def state(self) -> dict[str, Any]:
        """The core view plus each order's Coinbase id (``venue_id``: the UUID ccxt sees)."""
        view = super().state()
        for entry in view["orders"]:
            entry["venue_id"] = self.matcher.orders[entry["id"]].uid
        view["gaps"] = self.feeds.gaps
        view["auth_refused"] = dict(self.refused)
        return view

    # -- user events
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        self.feeds.user_event(order)


__all__ = ["DEFAULT_SPECS", "CoinbaseServer", "public_key_of"]
