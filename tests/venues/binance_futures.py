"""A local Binance USD-M futures server: what ccxt 4.5.90's ``binanceusdm`` talks to once its
``urls["api"]`` are rebased onto it (``engine.venues.ccxt_session.rebase_urls``).

REST under ``/fapi/v1|v2|v3``: exchangeInfo (PERPETUAL contracts), depth, premiumIndex (mark
price, funding rate, next funding time), fundingRate and fundingInfo, leverageBracket, signed
order entry / query / cancel / openOrders / userTrades, account and balance, positionRisk,
leverage, income (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR), forceOrders and the
listenKey. Websockets as ccxt's linear URLs name them: ``/public/ws`` (depth, trade, bookTicker),
``/market/ws`` (aggTrade, markPrice@1s) and ``/private/ws?listenKey=`` (ORDER_TRADE_UPDATE,
ACCOUNT_UPDATE, MARGIN_CALL). Signed requests are checked as the spot server checks them
(HMAC-SHA256, ``timestamp`` in ``recvWindow``).

Market data: the real Binance capture (``../shared/data/binance``) or the synthetic book, both
as futures frames (``FuturesMarket``: the capture's protocol is the spot one; a futures depth
diff adds ``pu``, its previous final update id). The money is the futures ledger's
(``tests.venues.binance_futures_ledger``): positions, funding paid every ``funding_every_s``
(or on ``pay_funding()``), margin calls and liquidation at the mark (``mark_override`` moves
the mark without moving the book). Faults: the core's (disconnect, gap, stall, ...).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.venues import binance_futures_wire as fw
from tests.venues import binance_wire as w
from tests.venues.binance import BinanceServer
from tests.venues.binance_futures_ledger import D0, FuturesAccount, Ledger
from tests.venues.binance_market import DEPTH, CaptureMarket, SyntheticMarket
from tests.venues.core import ApiKey, Fill, Order, Reject, SymbolSpec, dec, now_ms

PERP_SYMBOL = "BTC/USDT:USDT"
#: the futures contract the synthetic book lists: Binance's BTCUSDT perpetual filters
PERP_SPEC = SymbolSpec(
    symbol=PERP_SYMBOL,
    venue_symbol="BTCUSDT",
    tick="0.10",
    lot="0.001",
    min_notional="5",
    max_qty="1000",
)
#: spot balances the matcher holds for a futures account: never the limit (the ledger is)
_UNLIMITED = {"USDT": "1000000000000", "BTC": "1000000000"}


class FuturesMarket:
    """A spot feed (capture or synthetic) served as the perpetual's: same frames, futures keys."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spec = replace(inner.spec, symbol=PERP_SYMBOL)
        self.stream = self.spec.venue_symbol.lower()

    def levels(self) -> Any:
        return self.inner.levels()

    def depth_body(self, limit: int = 1000) -> bytes:
        return self.inner.depth_body(limit)

    async def frames(self) -> AsyncIterator[tuple[str, bytes, dict | None]]:
        async for stream, data, diff in self.inner.frames():
            if stream.endswith(DEPTH):
                d = json.loads(data)
                d["pu"], d["T"] = int(d["U"]) - 1, d.get("E", now_ms())
                yield stream, w.dumps(d).encode(), diff
            elif stream.endswith("@trade"):
                yield stream, data, None
                t = json.loads(data)
                agg = {
                    "e": "aggTrade",
                    "E": t["E"],
                    "s": t["s"],
                    "a": t["t"],
                    "p": t["p"],
                    "q": t["q"],
                    "f": t["t"],
                    "l": t["t"],
                    "T": t["T"],
                    "m": t["m"],
                }
                yield f"{self.stream}@aggTrade", w.dumps(agg).encode(), None
            else:
                yield stream, data, diff


class BinanceFuturesServer(BinanceServer):
    kind = "binanceusdm"
    settable = (
        "clock_offset_ms",
        "weight_limit",
        "ban_s",
        "mark_override",
        "funding_rate",
        "funding_every_s",
    )

    def __init__(
        self,
        specs: list[SymbolSpec] | None = None,
        *,
        capture: str | Path | None = None,
        speed: float = 1.0,
        funding_rate: str = "0.0001",
        funding_interval_s: int = 28800,
        funding_every_s: float = 0.0,
        mark_interval_s: float = 1.0,
        maint_ratio: str = "0.004",
        liquidation_fee: str = "0.0125",
        maker_fee: str = "0.0002",
        taker_fee: str = "0.0005",
        port: int = 0,
    ) -> None:
        inner = (
            CaptureMarket(capture, speed)
            if capture
            else SyntheticMarket((specs or [PERP_SPEC])[0], mid="60000.00", interval_s=0.05)
        )
        market = FuturesMarket(inner)
        self.ledger = Ledger(dec(maint_ratio), dec(liquidation_fee))
        super().__init__(
            specs or [market.spec],
            market=market,
            maker_fee=maker_fee,
            taker_fee=taker_fee,
            port=port,
        )
        self.matcher.fee_in_quote = True  # futures fees are in the margin asset
        self.funding_rate = funding_rate
        self.funding_interval_s = funding_interval_s
        self.funding_every_s = funding_every_s
        self.mark_interval_s = mark_interval_s
        self.mark_override: str | None = None
        self.funding_history: list[dict[str, Any]] = []
        self.force_orders: dict[str, list[Order]] = {}
        self._marks: asyncio.Task[None] | None = None
        self._liq_ids = iter(range(7_000_000, 8_000_000))
        self._next_funding_ms = 0

    # -- set-up
    def add_key(  # type: ignore[override]
        self,
        api_key: str,
        secret: str,
        account: str = "main",
        password: str = "",
        balances: dict[str, Any] | None = None,
        withdraw: bool = False,
    ) -> ApiKey:
        key = super().add_key(api_key, secret, account, password, _UNLIMITED, withdraw)
        acct = self.ledger.account(account)
        acct.wallet += dec((balances or {}).get("USDT", "0"))
        return key

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        s = self._signed
        for path, handler in (
            ("/fapi/v1/ping", self._ping),
            ("/fapi/v1/time", self._time),
            ("/fapi/v1/exchangeInfo", self._exchange_info),
            ("/fapi/v1/depth", self._depth),
            ("/fapi/v1/premiumIndex", self._premium_index),
            ("/fapi/v1/fundingRate", self._funding_rate),
            ("/fapi/v1/fundingInfo", self._funding_info),
            ("/fapi/v1/leverageBracket", s(self._brackets)),
            ("/fapi/v1/order", s(self._query_order)),
            ("/fapi/v1/openOrders", s(self._open_orders)),
            ("/fapi/v1/allOrders", s(self._all_orders)),
            ("/fapi/v1/userTrades", s(self._my_trades)),
            ("/fapi/v1/income", s(self._income)),
            ("/fapi/v1/forceOrders", s(self._force_orders)),
            ("/fapi/v2/account", s(self._account)),
            ("/fapi/v3/account", s(self._account)),
            ("/fapi/v2/balance", s(self._balance)),
            ("/fapi/v3/balance", s(self._balance)),
            ("/fapi/v2/positionRisk", s(self._position_risk)),
            ("/fapi/v3/positionRisk", s(self._position_risk)),
            ("/fapi/v1/openAlgoOrders", s(self._no_algo_orders)),
        ):
            r.add_get(path, handler)
        r.add_post("/__control/fund", self._ctl_fund)
        r.add_post("/__control/transfer", self._ctl_transfer)
        r.add_get("/sapi/v1/account/apiRestrictions", s(self._futures_restrictions))
        r.add_post("/fapi/v1/order", s(self._new_order))
        r.add_delete("/fapi/v1/order", s(self._cancel_order))
        r.add_delete("/fapi/v1/allOpenOrders", s(self._cancel_all))
        r.add_post("/fapi/v1/leverage", s(self._leverage))
        r.add_post("/fapi/v1/listenKey", self._listen_key)
        r.add_put("/fapi/v1/listenKey", self._listen_key)
        r.add_delete("/fapi/v1/listenKey", self._listen_key)
        for cat in ("public", "market"):
            r.add_get(f"/{cat}/ws", self._ws_market)
            r.add_get(f"/{cat}/ws/{{name}}", self._ws_market)
            r.add_get(f"/{cat}/stream", self._ws_market)
        r.add_get("/private/ws", self._ws_private)

    def state(self) -> dict[str, Any]:
        """The core's view plus each futures account: wallet, positions, income by kind."""
        out = super().state()
        out["futures"] = {
            a.name: {
                "wallet": w.p8(a.wallet),
                "positions": {s: w.p8(p.amt) for s, p in a.positions.items()},
                "income": {
                    k: w.p8(sum((i.amount for i in a.income if i.kind == k), D0))
                    for k in {i.kind for i in a.income}
                },
            }
            for a in self.ledger.accounts.values()
        }
        out["force_orders"] = sum(len(v) for v in self.force_orders.values())
        return out

    async def _ctl_fund(self, request: web.Request) -> web.Response:
        """A funding time now (``pay_funding``), from another process."""
        return web.json_response({"ok": True, "paid": [w.p8(x) for x in self.pay_funding()]})

    async def _ctl_transfer(self, request: web.Request) -> web.Response:
        """Move margin asset in (> 0) or out of an account's futures wallet (a test fault:
        Binance would refuse a transfer out that the positions' margin needs)."""
        body = await request.json()
        acct = self.ledger.account(body.get("account", "main"))
        acct.wallet += dec(body["amount"])
        return web.json_response({"ok": True, "wallet": w.p8(acct.wallet)})

    # -- marks and funding
    def mark(self, symbol: str = PERP_SYMBOL) -> Decimal:
        """The mark price: ``mark_override``, else the book's mid on the tick."""
        if self.mark_override:
            return dec(self.mark_override)
        book = self.matcher.books[symbol].depth(1)
        if not book["bids"] or not book["asks"]:
            return D0
        spec = self.matcher.specs[symbol]
        mid = (book["bids"][0][0] + book["asks"][0][0]) / 2
        return (mid / spec.tick_d).to_integral_value() * spec.tick_d

    def marks(self) -> dict[str, Decimal]:
        return {s: self.mark(s) for s in self.matcher.specs}

    def next_funding_ms(self) -> int:
        step = self.funding_interval_s * 1000
        return (now_ms() // step + 1) * step

    def pay_funding(self) -> list[Decimal]:
        """One funding time now, on every symbol (server loop thread: ``srv.call``)."""
        ms, rate, paid = now_ms(), dec(self.funding_rate), []
        for symbol, spec in self.matcher.specs.items():
            mark = self.mark(symbol)
            self.funding_history.append(
                {
                    "symbol": spec.venue_symbol,
                    "fundingRate": w.p8(rate),
                    "fundingTime": ms,
                    "markPrice": w.p8(mark),
                }
            )
            for acct in self.ledger.accounts.values():
                amount = self.ledger.fund(acct, symbol, mark, rate, ms)
                if amount:
                    paid.append(amount)
                    self._account_event(acct, "FUNDING_FEE", [symbol], amount)
        return paid

    def check_margin(self) -> None:
        """Margin calls and liquidations at the current marks (server loop thread)."""
        marks = self.marks()
        for acct in list(self.ledger.accounts.values()):
            if not any(p.amt for p in acct.positions.values()):
                continue
            equity = self.ledger.equity(acct, marks)
            maint = self.ledger.maintenance(acct, marks)
            if equity < maint:
                self._liquidate(acct, marks)
            elif equity < maint * self.ledger.margin_call_ratio:
                if not acct.margin_called:
                    acct.margin_called = True
                    msg = fw.margin_call(acct, self.ledger, marks, self._venue_of())
                    self.events.publish(acct.name, w.dumps(msg), reorderable=False)
            else:
                acct.margin_called = False

    def _liquidate(self, acct: FuturesAccount, marks: dict[str, Decimal]) -> None:
        ms = now_ms()
        for symbol, pos in list(acct.positions.items()):
            if not pos.amt:
                continue
            mark = marks[symbol]
            side, qty, fee = self.ledger.liquidate(acct, symbol, mark, ms)
            order = Order(
                next(self._liq_ids),
                f"autoclose-{ms}{secrets.randbelow(10**6):06d}",
                acct.name,
                self.matcher.specs[symbol],
                side,
                "market",
                qty,
                mark,
                tif="IOC",
                status="closed",
                filled=qty,
                cost=qty * mark,
                fee=fee,
                fee_currency="USDT",
                extra={"type": "LIQUIDATION"},
            )
            fill = Fill(next(self._liq_ids), order, mark, qty, fee, "USDT", False, ms)
            self.force_orders.setdefault(acct.name, []).append(order)
            msg = fw.order_update("trade", order, fill)
            self.events.publish(acct.name, w.dumps(msg), reorderable=False)
            self._account_event(acct, "ORDER", [symbol])
        acct.margin_called = False

    def _account_event(
        self, acct: FuturesAccount, reason: str, symbols: list[str], change: Decimal = D0
    ) -> None:
        msg = fw.account_update(acct, reason, symbols, self._venue_of(), change)
        self.events.publish(acct.name, w.dumps(msg), reorderable=False)

    def _venue_of(self) -> dict[str, str]:
        return {s: spec.venue_symbol for s, spec in self.matcher.specs.items()}

    def _ensure_replay(self) -> None:
        super()._ensure_replay()
        self._ensure_marks()

    def _ensure_marks(self) -> None:
        """The mark loop (marks, margin checks, funding): from the first subscription or the
        first user stream, whichever comes first."""
        if self._marks is None:
            self._marks = asyncio.get_running_loop().create_task(self._mark_loop())

    async def _mark_loop(self) -> None:
        """markPrice@1s frames, margin checks and the funding schedule."""
        last_funding = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.mark_interval_s)
            for symbol, spec in self.matcher.specs.items():
                mark = self.mark(symbol)
                if not mark:
                    continue
                ms = now_ms()
                frame = {
                    "e": "markPriceUpdate",
                    "E": ms,
                    "s": spec.venue_symbol,
                    "p": w.p8(mark),
                    "ap": w.p8(mark),
                    "P": w.p8(mark),
                    "i": w.p8(mark),
                    "r": w.p8(dec(self.funding_rate)),
                    "T": self.next_funding_ms(),
                }
                stream = f"{spec.venue_symbol.lower()}@markPrice@1s"
                self._broadcast(stream, w.dumps(frame).encode())
                self._broadcast(f"{spec.venue_symbol.lower()}@markPrice", w.dumps(frame).encode())
            self.check_margin()
            now = asyncio.get_running_loop().time()
            if self.funding_every_s and now - last_funding >= self.funding_every_s:
                last_funding = now
                self.pay_funding()

    # -- user events
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        realized = D0
        if event == "trade" and fill is not None:
            acct = self.ledger.account(order.account)
            realized = self.ledger.fill(
                acct, order.spec.symbol, order.side, fill.qty, fill.price, fill.fee, fill.ts_ms
            )
            order.extra.setdefault("realized", {})[fill.trade_id] = realized
        self.events.publish(order.account, w.dumps(fw.order_update(event, order, fill, realized)))
        if event == "trade":
            acct = self.ledger.account(order.account)
            self._account_event(acct, "ORDER", [order.spec.symbol])

    async def _ws_private(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("listenKey", "")
        if token not in self.listen_keys:
            return w.error(-1125, "This listenKey does not exist.")
        sock = await self.hub.open(request, "user")
        sock.account = self.listen_keys[token]
        self._ensure_marks()
        return await self.hub.serve(sock, self._on_market_text)

    async def _listen_key(self, request: web.Request) -> web.Response:
        key = self._api_key(request)
        if isinstance(key, web.Response):
            return key
        mine = [k for k, a in self.listen_keys.items() if a == key.account]
        if request.method == "POST":
            token = mine[0] if mine else secrets.token_urlsafe(45)[:64]
            self.listen_keys[token] = key.account
            return web.json_response({"listenKey": token})
        if not mine:
            return w.error(-1125, "This listenKey does not exist.")
        if request.method == "DELETE":
            for k in mine:
                self.listen_keys.pop(k, None)
            return web.json_response({})
        return web.json_response({"listenKey": mine[0]})

    # -- public REST
    async def _exchange_info(self, request: web.Request) -> web.Response:
        specs = list(self.matcher.specs.values())
        body = fw.exchange_info(specs, self.ledger, self.weight_limit)
        return web.json_response(body, dumps=w.dumps)

    async def _premium_index(self, request: web.Request) -> web.Response:
        rows = [
            {
                "symbol": spec.venue_symbol,
                "markPrice": w.p8(self.mark(s)),
                "indexPrice": w.p8(self.mark(s)),
                "estimatedSettlePrice": w.p8(self.mark(s)),
                "lastFundingRate": w.p8(dec(self.funding_rate)),
                "interestRate": "0.00010000",
                "nextFundingTime": self.next_funding_ms(),
                "time": now_ms(),
            }
            for s, spec in self.matcher.specs.items()
        ]
        wanted = request.query.get("symbol")
        if wanted:
            one = [r for r in rows if r["symbol"] == wanted]
            return web.json_response(one[0]) if one else w.error(-1121, "Invalid symbol.")
        return web.json_response(rows)

    async def _funding_rate(self, request: web.Request) -> web.Response:
        rows = [
            r for r in self.funding_history if request.query.get("symbol") in (None, r["symbol"])
        ]
        lo = int(request.query.get("startTime", 0))
        rows = [r for r in rows if r["fundingTime"] >= lo]
        return web.json_response(rows[: int(request.query.get("limit", 100))])

    async def _funding_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "symbol": s.venue_symbol,
                    "adjustedFundingRateCap": "0.03",
                    "adjustedFundingRateFloor": "-0.03",
                    "fundingIntervalHours": max(1, self.funding_interval_s // 3600),
                    "disclaimer": False,
                }
                for s in self.matcher.specs.values()
            ]
        )

    # -- account
    async def _brackets(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        return web.json_response(
            [
                {
                    "symbol": s.venue_symbol,
                    "notionalCoef": 1.0,
                    "brackets": [
                        {
                            "bracket": 1,
                            "initialLeverage": self.ledger.max_leverage,
                            "notionalCap": 50000,
                            "notionalFloor": 0,
                            "maintMarginRatio": float(self.ledger.maint_ratio),
                            "cum": 0.0,
                        }
                    ],
                }
                for s in self.matcher.specs.values()
                if p.get("symbol") in (None, s.venue_symbol)
            ]
        )

    async def _account(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        acct = self.ledger.account(key.account)
        return web.json_response(fw.account_json(acct, self.ledger, self.marks(), self._venue_of()))

    async def _balance(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        body = fw.account_json(
            self.ledger.account(key.account), self.ledger, self.marks(), self._venue_of()
        )
        a = body["assets"][0]
        return web.json_response(
            [
                {
                    "accountAlias": "SgsR",
                    "asset": a["asset"],
                    "balance": a["walletBalance"],
                    "crossWalletBalance": a["crossWalletBalance"],
                    "crossUnPnl": a["crossUnPnl"],
                    "availableBalance": a["availableBalance"],
                    "maxWithdrawAmount": a["maxWithdrawAmount"],
                    "marginAvailable": True,
                    "updateTime": now_ms(),
                }
            ]
        )

    async def _position_risk(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        acct = self.ledger.account(key.account)
        return web.json_response(
            [
                fw.position_row(s, spec.venue_symbol, acct, self.ledger, self.mark(s))
                for s, spec in self.matcher.specs.items()
                if p.get("symbol") in (None, spec.venue_symbol)
            ]
        )

    async def _leverage(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        spec = self.matcher.spec(p["symbol"])
        lev = int(p["leverage"])
        if not 1 <= lev <= self.ledger.max_leverage:
            return w.error(-4028, f"Leverage {lev} is not valid")
        self.ledger.account(key.account).position(spec.symbol).leverage = lev
        return web.json_response(
            {"leverage": lev, "maxNotionalValue": "50000000", "symbol": spec.venue_symbol}
        )

    async def _income(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        rows = self.ledger.account(key.account).income
        venue_of = self._venue_of()
        kind = p.get("incomeType")
        out = [
            fw.income_json(r, venue_of)
            for r in rows
            if (kind is None or r.kind == kind)
            and (p.get("symbol") in (None, venue_of.get(r.symbol)))
            and r.time_ms >= int(p.get("startTime", 0))
        ]
        return web.json_response(out[: int(p.get("limit", 100))])

    async def _futures_restrictions(
        self, request: web.Request, key: ApiKey, p: dict[str, str]
    ) -> Any:
        """The key's permissions (the spot account API answers for futures keys too)."""
        resp = await self._api_restrictions(request, key, p)
        body = json.loads(resp.text or "{}") | {"enableFutures": True}
        return web.json_response(body)

    async def _force_orders(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        rows = [fw.order_json(o) for o in self.force_orders.get(key.account, [])]
        return web.json_response(rows)

    async def _no_algo_orders(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        return web.json_response([])

    # -- orders
    def _order_from(self, params: dict[str, str], account: str) -> Order:
        kind = params["type"].upper()
        if kind not in ("LIMIT", "MARKET"):
            raise Reject("bad_request", f"order type {kind}")
        order = super()._order_from(params, account)
        if params.get("timeInForce", "").upper() == "GTX":
            order.post_only, order.tif = True, "GTC"
        order.extra["reduce_only"] = params.get("reduceOnly", "false").lower() == "true"
        return order

    def _margin_refusal(self, order: Order) -> web.Response | None:
        acct = self.ledger.account(order.account)
        pos = acct.position(order.spec.symbol)
        signed = order.amount if order.side == "buy" else -order.amount
        if order.extra.get("reduce_only"):
            if not pos.amt or (pos.amt > 0) == (signed > 0) or abs(signed) > abs(pos.amt):
                return w.error(-2022, "ReduceOnly Order is rejected.")
            return None
        if pos.amt and (pos.amt > 0) != (signed > 0) and abs(signed) <= abs(pos.amt):
            return None  # reducing: no new margin
        px = order.price or self.mark(order.spec.symbol)
        marks = self.marks()
        free = self.ledger.equity(acct, marks) - self.ledger.initial(acct, marks)
        if abs(pos.amt + signed) * px / pos.leverage - abs(pos.amt) * px / pos.leverage > free:
            return w.error(-2019, "Margin is insufficient.")
        return None

    async def _new_order(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        order = self._order_from(p, key.account)
        refused = self._margin_refusal(order)
        if refused is not None:
            return refused
        self.matcher.submit(key.account, order)
        delay = self.faults.take("delay_ack")
        if delay is not None:
            await asyncio.sleep(float(delay.get("delay_s", 2.0)))
        return web.json_response(fw.order_json(order))

    async def _query_order(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        return web.json_response(fw.order_json(self._find(key, p)))

    async def _cancel_order(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        try:
            order = self._find(key, p)
            self.matcher.cancel(key.account, order.order_id)
        except Reject:
            return w.error(-2011, "Unknown order sent.")
        return web.json_response(fw.order_json(order))

    async def _cancel_all(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        spec = self.matcher.spec(p["symbol"])
        for o in self.matcher.open_orders(key.account, spec.symbol):
            self.matcher.cancel(key.account, o.order_id)
        return web.json_response(
            {"code": 200, "msg": "The operation of cancel all open order is done."}
        )

    async def _open_orders(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        symbol = self.matcher.spec(p["symbol"]).symbol if p.get("symbol") else None
        return web.json_response(
            [fw.order_json(o) for o in self.matcher.open_orders(key.account, symbol)]
        )

    async def _all_orders(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        spec = self.matcher.spec(p["symbol"])
        rows = [
            fw.order_json(o)
            for o in self.matcher.orders.values()
            if o.account == key.account and o.spec is spec
        ]
        return web.json_response(rows[-int(p.get("limit", 500)) :])

    async def _my_trades(self, request: web.Request, key: ApiKey, p: dict[str, str]) -> Any:
        spec = self.matcher.spec(p["symbol"])
        fills = self.matcher.account_trades(key.account, spec.symbol)
        if p.get("orderId"):
            fills = [f for f in fills if str(f.order.order_id) == p["orderId"]]
        if p.get("fromId"):
            fills = [f for f in fills if f.trade_id >= int(p["fromId"])]
        if p.get("startTime"):
            fills = [f for f in fills if f.ts_ms >= int(p["startTime"])]
        limit = min(int(p.get("limit", 500)), 1000)
        return web.json_response([fw.trade_json(f) for f in fills][-limit:])


__all__ = ["PERP_SPEC", "PERP_SYMBOL", "BinanceFuturesServer", "FuturesMarket"]
