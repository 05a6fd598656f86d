"""A local Binance.US spot server: what ccxt 4.5.90's ``binanceus`` (async REST + pro) talks to
once its ``urls["api"]`` are rebased onto it (``engine.venues.ccxt_session.rebase_urls``).

REST ``/api/v3/...`` and ``/sapi/v1/asset/tradeFee``; websockets on the same port: market
streams on ``/ws[/<n>]`` (SUBSCRIBE/UNSUBSCRIBE, raw ``data`` objects) and ``/stream``
(combined), the user data stream over the WebSocket API ``/ws-api/v3``
(``userDataStream.subscribe.signature``: what ccxt uses for spot) and the legacy listenKey
(``POST /api/v3/userDataStream`` + ``/ws/<listenKey>``). Signed requests are verified as Binance
does (HMAC-SHA256 over the exact query string / body, ``timestamp`` within ``recvWindow``) and
refused with Binance's real error bodies; every answer carries ``X-MBX-USED-WEIGHT-1M`` and a
request over the weight limit gets 429 + Retry-After (a request inside a Retry-After window
gets a 418 ban, as Binance does). Market data: the real capture (``CaptureMarket``) or a
synthetic book (``SyntheticMarket``). Faults: see ``tests/venues/core.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.venues import binance_wire as w
from tests.venues.binance_market import DEPTH, CaptureMarket, SyntheticMarket
from tests.venues.binance_ws import BinanceStreams
from tests.venues.core import (
    ApiKey,
    Order,
    Reject,
    SymbolSpec,
    dec,
    now_ms,
)

_WEIGHTS = {
    "/api/v3/exchangeInfo": 20,
    "/api/v3/account": 20,
    "/api/v3/account/commission": 20,
    "/api/v3/myTrades": 20,
    "/api/v3/allOrders": 20,
    "/api/v3/openOrders": 6,
    "/api/v3/order": 4,
    "/api/v3/ticker/24hr": 2,
    "/sapi/v1/asset/tradeFee": 1,
}
_RECENT_TRADES = 500


class BinanceServer(BinanceStreams):
    kind = "binanceus"
    settable = ("clock_offset_ms", "weight_limit", "ban_s")

    def __init__(
        self,
        specs: list[SymbolSpec] | None = None,
        *,
        market: Any = None,
        capture: str | Path | None = None,
        speed: float = 1.0,
        weight_limit: int = 1200,
        ban_s: float = 10.0,
        clock_offset_ms: int = 0,
        maker_fee: str = "0.001",
        taker_fee: str = "0.001",
        port: int = 0,
    ) -> None:
        if market is None:
            market = (
                CaptureMarket(capture, speed)
                if capture
                else SyntheticMarket((specs or [SymbolSpec()])[0])
            )
        self.market = market
        super().__init__(
            specs or [market.spec], maker_fee=maker_fee, taker_fee=taker_fee, port=port
        )
        bids, asks = market.levels()
        self.matcher.seed(market.spec.symbol, bids, asks)
        for spec in self.matcher.specs.values():
            if spec.symbol != market.spec.symbol:  # no stream for it: a still book to trade with
                mid, lots = spec.tick_d * 100_000, spec.lot_d * 1000
                below = [(mid - spec.tick_d * i, lots) for i in range(1, 11)]
                self.matcher.seed(
                    spec.symbol, below, [(mid + spec.tick_d * i, lots) for i in range(1, 11)]
                )
        self.weight_limit = weight_limit
        self.ban_s = ban_s
        self.clock_offset_ms = clock_offset_ms  # the server's clock minus ours (skew tests)
        self.listen_keys: dict[str, str] = {}  # listenKey -> account
        self.recent_trades: deque[dict[str, Any]] = deque(maxlen=_RECENT_TRADES)
        self.frames_sent = 0
        self.gaps = 0
        self._weight = [0, 0]  # [minute, used weight]
        self._order_times: deque[float] = deque()  # order entries of the last 10 s
        self._orders_today = 0
        self._retry_until = 0.0  # monotonic end of the last 429's Retry-After
        self._replay: asyncio.Task[None] | None = None
        self._cancel_cid = ""

    # -- set-up
    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._limits_mw)
        r = app.router
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/depth", self._depth)
        r.add_get("/api/v3/trades", self._trades)
        r.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        r.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        r.add_get("/api/v3/account", self._signed(self._account))
        r.add_get("/api/v3/account/commission", self._signed(self._commission))
        r.add_get("/sapi/v1/asset/tradeFee", self._signed(self._trade_fee))
        r.add_get("/sapi/v1/asset/query/trading-fee", self._signed(self._trade_fee))
        r.add_get("/sapi/v1/account/apiRestrictions", self._signed(self._api_restrictions))
        r.add_post("/api/v3/order", self._signed(self._new_order))
        r.add_post("/api/v3/order/test", self._signed(self._test_order))
        r.add_get("/api/v3/order", self._signed(self._query_order))
        r.add_delete("/api/v3/order", self._signed(self._cancel_order))
        r.add_post("/api/v3/order/cancelReplace", self._signed(self._cancel_replace))
        r.add_get("/api/v3/openOrders", self._signed(self._open_orders))
        r.add_delete("/api/v3/openOrders", self._signed(self._cancel_all))
        r.add_get("/api/v3/allOrders", self._signed(self._all_orders))
        r.add_get("/api/v3/myTrades", self._signed(self._my_trades))
        r.add_post("/api/v3/userDataStream", self._listen_key)
        r.add_put("/api/v3/userDataStream", self._listen_key)
        r.add_delete("/api/v3/userDataStream", self._listen_key)
        r.add_get("/ws", self._ws_market)
        r.add_get("/ws/{name}", self._ws_market)
        r.add_get("/stream", self._ws_market)
        r.add_get("/ws-api/v3", self._ws_api)

    def reset_limits(self) -> None:
        """Forget bans, Retry-After windows and used weight (between tests)."""
        self.faults.clear("ban")
        self.faults.clear("rate_limit")
        self._retry_until = 0.0
        self._weight = [0, 0]

    def server_ms(self) -> int:
        return now_ms() + self.clock_offset_ms

    # -- limits: ban, 429, weight (every /api and /sapi answer carries the used weight)
    @web.middleware
    async def _limits_mw(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(("/api/", "/sapi/")):
            return await handler(request)
        refused = self._refuse_by_limits(request)
        if refused is not None:
            resp: web.StreamResponse = refused
        else:
            resp = await handler(request)
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight[1])
        resp.headers["X-MBX-USED-WEIGHT"] = str(self._weight[1])
        if request.method == "POST" and request.path in (
            "/api/v3/order",
            "/api/v3/order/cancelReplace",
        ):
            now = time.monotonic()
            self._order_times.append(now)
            while self._order_times and now - self._order_times[0] > 10:
                self._order_times.popleft()
            self._orders_today += 1
            resp.headers["X-MBX-ORDER-COUNT-10S"] = str(len(self._order_times))
            resp.headers["X-MBX-ORDER-COUNT-1D"] = str(self._orders_today)
        return resp

    def _refuse_by_limits(self, request: web.Request) -> web.Response | None:
        if self.faults.active("ban") is not None:
            return self._banned()
        if time.monotonic() < self._retry_until:  # retrying into a 429's Retry-After: banned
            self.faults.arm("ban", retry_after=self.ban_s)
            return self._banned()
        minute = int(time.time() // 60)
        if self._weight[0] != minute:
            self._weight = [minute, 0]
        self._weight[1] += self._weight_of(request)
        args = self.faults.take("rate_limit")
        if args is None and self._weight[1] <= self.weight_limit:
            return None
        retry_after = float(args.get("retry_after", 1)) if args else 60 - time.time() % 60
        if args is None or args.get("escalate", True):
            self._retry_until = time.monotonic() + retry_after
        return w.error(
            -1003,
            f"Too many requests; current limit of IP(127.0.0.1) is {self.weight_limit} requests "
            "per minute. Please use the websocket for live updates to avoid polling the API.",
            429,
            {"Retry-After": str(math.ceil(retry_after))},
        )

    def _banned(self) -> web.Response:
        left = max(self.faults.remaining_s("ban"), 1.0)
        until = now_ms() + int(left * 1000)
        return w.error(
            -1003,
            f"Way too many requests; IP(127.0.0.1) banned until {until}. Please use the "
            "websocket for live updates to avoid bans.",
            418,
            {"Retry-After": str(math.ceil(left))},
        )

    def _weight_of(self, request: web.Request) -> int:
        if request.path == "/api/v3/depth":
            limit = int(request.query.get("limit", 100) or 100)
            return 1 if limit <= 100 else 5 if limit <= 500 else 10 if limit <= 1000 else 50
        weight = _WEIGHTS.get(request.path, 1)
        if request.path == "/api/v3/openOrders" and "symbol" not in request.query:
            weight = 80
        return weight

    # -- authentication
    def _api_key(self, request: web.Request) -> ApiKey | web.Response:
        header = request.headers.get("X-MBX-APIKEY", "")
        if not header:
            return w.error(-2014, "API-key format invalid.", 401)
        key = self.keys.get(header)
        if key is None:
            return w.error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return key

    def verify(self, key: ApiKey, payload: str, params: dict[str, str]) -> web.Response | None:
        """Binance's checks of a signed request: timestamp in recvWindow, then the signature."""
        if "signature" not in params or "timestamp" not in params:
            missing = "signature" if "signature" not in params else "timestamp"
            return w.error(
                -1102,
                f"Mandatory parameter '{missing}' was not sent, was empty/null, or malformed.",
            )
        if self.faults.take("timestamp") is not None:
            return w.error(-1021, "Timestamp for this request is outside of the recvWindow.")
        try:
            ts, recv_window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except ValueError:
            return w.error(-1100, "Illegal characters found in parameter 'timestamp'.")
        if recv_window > 60000:
            return w.error(-1131, "recvWindow must be less than 60000")
        server = self.server_ms()
        if ts > server + 1000 or server - ts > recv_window:
            return w.error(-1021, "Timestamp for this request is outside of the recvWindow.")
        expect = hmac.new(key.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expect, params["signature"].lower()):
            return w.error(-1022, "Signature for this request is not valid.")
        return None

    def _signed(
        self,
        handler: Callable[[web.Request, ApiKey, dict[str, str]], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            key = self._api_key(request)
            if isinstance(key, web.Response):
                return key
            body = await request.text() if request.can_read_body else ""
            qs = request.query_string
            total = qs + body  # Binance's totalParams: the query string then the body
            params = dict(parse_qsl(qs, keep_blank_values=True)) | dict(
                parse_qsl(body, keep_blank_values=True)
            )
            payload = "&".join(p for p in total.split("&") if not p.startswith("signature="))
            refused = self.verify(key, payload, params)
            if refused is not None:
                return refused
            try:
                return await handler(request, key, params)
            except Reject as e:
                return w.reject(e, query=request.method == "GET")
            except (KeyError, ValueError, InvalidOperation) as e:
                return w.error(
                    -1102, f"Mandatory parameter {e} was not sent, was empty/null, or malformed."
                )

        return run

    # -- public REST
    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.server_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        specs = list(self.matcher.specs.values())
        wanted = request.query.get("symbol")
        if wanted:
            specs = [s for s in specs if s.venue_symbol == wanted]
            if not specs:
                return w.error(-1121, "Invalid symbol.")
        return web.json_response(w.exchange_info(specs, self.weight_limit), dumps=w.dumps)

    def _spec_of(self, request: web.Request) -> SymbolSpec | web.Response:
        try:
            return self.matcher.spec(request.query["symbol"])
        except (KeyError, Reject):
            return w.error(-1121, "Invalid symbol.")

    async def _depth(self, request: web.Request) -> web.Response:
        spec = self._spec_of(request)
        if isinstance(spec, web.Response):
            return spec
        limit = int(request.query.get("limit", 100) or 100)
        if spec.symbol == self.market.spec.symbol:
            body = self.market.depth_body(limit)
            return web.Response(body=body, content_type="application/json")
        depth = self.matcher.books[spec.symbol].depth(limit)
        return web.json_response(
            {"lastUpdateId": 1, **{k: [[w.p8(p), w.p8(q)] for p, q in v] for k, v in depth.items()}}
        )

    async def _trades(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 500) or 500)
        rows = [
            {
                "id": t["t"],
                "price": t["p"],
                "qty": t["q"],
                "quoteQty": w.p8(dec(t["p"]) * dec(t["q"])),
                "time": t["T"],
                "isBuyerMaker": t["m"],
                "isBestMatch": True,
            }
            for t in self.recent_trades
        ]
        return web.json_response(rows[-limit:])

    def _top(self, spec: SymbolSpec) -> dict[str, str]:
        book = self.matcher.books[spec.symbol].depth(1)
        bid = book["bids"][0] if book["bids"] else (Decimal(0), Decimal(0))
        ask = book["asks"][0] if book["asks"] else (Decimal(0), Decimal(0))
        return {
            "symbol": spec.venue_symbol,
            "bidPrice": w.p8(bid[0]),
            "bidQty": w.p8(bid[1]),
            "askPrice": w.p8(ask[0]),
            "askQty": w.p8(ask[1]),
        }

    async def _book_ticker(self, request: web.Request) -> web.Response:
        spec = self._spec_of(request)
        return spec if isinstance(spec, web.Response) else web.json_response(self._top(spec))

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        spec = self._spec_of(request)
        if isinstance(spec, web.Response):
            return spec
        top = self._top(spec)
        last = self.recent_trades[-1]["p"] if self.recent_trades else top["bidPrice"]
        now = now_ms()
        return web.json_response(
            top
            | {
                "priceChange": "0.00000000",
                "priceChangePercent": "0.000",
                "weightedAvgPrice": last,
                "prevClosePrice": last,
                "lastPrice": last,
                "lastQty": "0.00000000",
                "openPrice": last,
                "highPrice": last,
                "lowPrice": last,
                "volume": "0.00000000",
                "quoteVolume": "0.00000000",
                "openTime": now - 86_400_000,
                "closeTime": now,
                "firstId": 0,
                "lastId": 0,
                "count": len(self.recent_trades),
            }
        )

    # -- account
    async def _account(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        acct = self.matcher.account(key.account)
        fee = {
            "maker": w.p8(self.matcher.maker_fee),
            "taker": w.p8(self.matcher.taker_fee),
            "buyer": "0.00000000",
            "seller": "0.00000000",
        }
        return web.json_response(
            {
                "makerCommission": int(self.matcher.maker_fee * 10000),
                "takerCommission": int(self.matcher.taker_fee * 10000),
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": fee,
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": now_ms(),
                "accountType": "SPOT",
                "balances": w.balances(acct),
                "permissions": ["SPOT"],
                "uid": 1,
            }
        )

    async def _api_restrictions(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        """What the key may do (Gekko refuses one that can withdraw, ops/venue_run.py)."""
        return web.json_response(
            {
                "ipRestrict": False,
                "createTime": now_ms(),
                "enableReading": True,
                "enableSpotAndMarginTrading": True,
                "enableWithdrawals": key.withdraw,
                "enableInternalTransfer": False,
                "enableMargin": False,
                "enableFutures": False,
                "permitsUniversalTransfer": False,
                "enableVanillaOptions": False,
            }
        )

    async def _commission(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        spec = self.matcher.spec(params["symbol"])
        zero = {
            "maker": "0.00000000",
            "taker": "0.00000000",
            "buyer": "0.00000000",
            "seller": "0.00000000",
        }
        return web.json_response(
            {
                "symbol": spec.venue_symbol,
                "standardCommission": zero
                | {"maker": w.p8(self.matcher.maker_fee), "taker": w.p8(self.matcher.taker_fee)},
                "taxCommission": zero,
                "discount": {
                    "enabledForAccount": False,
                    "enabledForSymbol": False,
                    "discountAsset": "BNB",
                    "discount": "0.00000000",
                },
            }
        )

    async def _trade_fee(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        specs = (
            [self.matcher.spec(params["symbol"])]
            if params.get("symbol")
            else list(self.matcher.specs.values())
        )
        return web.json_response(
            [
                {
                    "symbol": s.venue_symbol,
                    "makerCommission": str(self.matcher.maker_fee),
                    "takerCommission": str(self.matcher.taker_fee),
                }
                for s in specs
            ]
        )

    # -- orders
    def _order_from(self, params: dict[str, str], account: str) -> Order:
        spec = self.matcher.spec(params["symbol"])
        kind = params["type"].upper()
        if kind not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise Reject("bad_request", f"order type {kind}")
        side = params["side"].upper()
        if side not in ("BUY", "SELL"):
            raise Reject("bad_request", f"side {side}")
        quote = params.get("quoteOrderQty")
        amount = dec(params["quantity"]) if "quantity" in params else Decimal(0)
        order = Order(
            0,
            params.get("newClientOrderId") or "x-" + secrets.token_hex(8),
            account,
            spec,
            side.lower(),
            "market" if kind == "MARKET" else "limit",
            amount,
            dec(params["price"]) if kind != "MARKET" else None,
            tif=params.get("timeInForce", "GTC").upper()
            if kind == "LIMIT"
            else ("IOC" if kind == "MARKET" else "GTC"),
            post_only=kind == "LIMIT_MAKER",
            quote_amount=dec(quote) if quote and kind == "MARKET" and side == "BUY" else None,
        )
        if kind == "MARKET" and quote and side == "BUY":
            order.amount = Decimal("9000")  # bounded by the quote spend, fixed when done
        if order.quote_amount is None and amount <= 0:
            raise Reject("bad_request", "quantity")
        return order

    async def _new_order(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        order = self._order_from(params, key.account)
        self.matcher.submit(key.account, order)
        delay = self.faults.take("delay_ack")
        if delay is not None:  # the order is in; only its answer is late
            await asyncio.sleep(float(delay.get("delay_s", 2.0)))
        return web.json_response(
            w.order_json(order, params.get("newOrderRespType", "FULL").upper())
        )

    async def _test_order(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        self.matcher.validate(self._order_from(params, key.account))
        return web.json_response({})

    def _find(self, key: ApiKey, params: dict[str, str], prefix: str = "") -> Order:
        oid = params.get(f"{prefix}orderId" if prefix == "" else "cancelOrderId")
        cid = params.get("origClientOrderId" if prefix == "" else "cancelOrigClientOrderId")
        order = self.matcher.find(key.account, oid, cid)
        if "symbol" in params and order.spec.venue_symbol != params["symbol"]:
            raise Reject("unknown_order")
        return order

    async def _query_order(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        return web.json_response(w.query_json(self._find(key, params)))

    def _cancel(self, key: ApiKey, order: Order, cancel_cid: str) -> dict[str, Any]:
        self._cancel_cid = cancel_cid
        try:
            self.matcher.cancel(key.account, order.order_id)
        finally:
            self._cancel_cid = ""
        return w.cancel_json(order, cancel_cid)

    async def _cancel_order(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        try:
            order = self._find(key, params)
        except Reject:
            return w.error(-2011, "Unknown order sent.")
        return web.json_response(
            self._cancel(key, order, params.get("newClientOrderId") or secrets.token_hex(11))
        )

    async def _cancel_all(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        spec = self.matcher.spec(params["symbol"])
        orders = self.matcher.open_orders(key.account, spec.symbol)
        if not orders:
            return w.error(-2011, "Unknown order sent.")
        return web.json_response([self._cancel(key, o, secrets.token_hex(11)) for o in orders])

    async def _cancel_replace(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        try:
            old = self._find(key, params, prefix="cancel")
            if not old.is_open:
                raise Reject("unknown_order")
            cancelled = self._cancel(
                key, old, params.get("cancelNewClientOrderId") or secrets.token_hex(11)
            )
        except Reject:
            data = {
                "cancelResult": "FAILURE",
                "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
                "newOrderResponse": None,
            }
            return web.Response(
                status=400,
                content_type="application/json",
                text=w.dumps({"code": -2022, "msg": "Order cancel-replace failed.", "data": data}),
            )
        order = self._order_from(params, key.account)
        try:
            self.matcher.submit(key.account, order)
        except Reject as e:
            _, code, msg = w.REJECTS.get(e.kind, w.REJECTS["bad_request"])
            data = {
                "cancelResult": "SUCCESS",
                "newOrderResult": "FAILURE",
                "cancelResponse": cancelled,
                "newOrderResponse": {"code": code, "msg": msg},
            }
            return web.Response(
                status=409,
                content_type="application/json",
                text=w.dumps(
                    {"code": -2021, "msg": "Order cancel-replace partially failed.", "data": data}
                ),
            )
        resp_type = params.get("newOrderRespType", "FULL").upper()
        return web.json_response(
            {
                "cancelResult": "SUCCESS",
                "newOrderResult": "SUCCESS",
                "cancelResponse": cancelled,
                "newOrderResponse": w.order_json(order, resp_type),
            }
        )

    async def _open_orders(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        symbol = self.matcher.spec(params["symbol"]).symbol if params.get("symbol") else None
        return web.json_response(
            [w.query_json(o) for o in self.matcher.open_orders(key.account, symbol)]
        )

    async def _all_orders(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        spec = self.matcher.spec(params["symbol"])
        lo, hi = int(params.get("startTime", 0)), int(params.get("endTime", 2**63))
        first = int(params.get("orderId", 0))
        rows = [
            w.query_json(o)
            for o in self.matcher.orders.values()
            if o.account == key.account
            and o.spec is spec
            and lo <= o.created_ms <= hi
            and o.order_id >= first
        ]
        return web.json_response(rows[-int(params.get("limit", 500)) :])

    async def _my_trades(
        self, request: web.Request, key: ApiKey, params: dict[str, str]
    ) -> web.Response:
        spec = self.matcher.spec(params["symbol"])
        fills = self.matcher.account_trades(key.account, spec.symbol)
        if params.get("orderId"):
            fills = [f for f in fills if str(f.order.order_id) == params["orderId"]]
        if params.get("fromId"):
            fills = [f for f in fills if f.trade_id >= int(params["fromId"])]
        if params.get("startTime"):
            fills = [f for f in fills if f.ts_ms >= int(params["startTime"])]
        if params.get("endTime"):
            fills = [f for f in fills if f.ts_ms <= int(params["endTime"])]
        limit = min(int(params.get("limit", 500)), 1000)
        return web.json_response(
            [w.trade_json(f) for f in fills][:limit]
            if params.get("fromId")
            else [w.trade_json(f) for f in fills][-limit:]
        )


__all__ = ["DEPTH", "BinanceServer", "CaptureMarket", "SyntheticMarket"]
