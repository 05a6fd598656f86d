"""A local Kraken Futures (derivatives) server: what ccxt 4.5.90's ``krakenfutures`` talks to
once its ``urls["api"]`` are rebased onto it (``engine.venues.ccxt_session.rebase_urls``).

REST (the live client polls) and the public websocket's book and trade feeds
(``tests.venues.kraken_futures_ws``): ``/derivatives/api/v3`` instruments, tickers (mark price,
index, funding rate), orderbook, signed sendorder / cancelorder / openorders / openpositions /
accounts (the multi-collateral ``flex`` account) / fills / leveragepreferences; public
``/derivatives/api/v4/historicalfundingrates``; the history API's signed ``account-log`` (funding
payments). Signed requests are checked the venue's way: ``APIKey`` names the key, ``Authent`` is
base64(HMAC-SHA512(base64-decoded secret, SHA256(postData + Nonce + endpointPath))) where
postData is the url-encoded query, Nonce the optional header and endpointPath the request path
less its ``/derivatives`` prefix. A bad one answers ``{"result": "error", "error":
"authenticationError"}`` as Kraken does.

The money: the matcher matches (its balances are unlimited: the ledger here is the limit), each
fill moves the account's position and its USD collateral (realized PnL, fee); ``pay_funding``
charges ``-size * contract_size * mark * rate`` per position (Kraken pays hourly).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.venues.core import (
    D0,
    MARKET,
    ExchangeServer,
    Fill,
    Order,
    Reject,
    SymbolSpec,
    dec,
    now_ms,
)
from tests.venues.kraken_futures_ws import KrakenFuturesWs

PERP_SYMBOL = "BTC/USD:USD"
#: the flexible (linear, USD-settled) BTC perpetual: tick 1 USD, contracts of 1 BTC in 0.0001
PERP_SPEC = SymbolSpec(
    symbol=PERP_SYMBOL,
    venue_symbol="PF_XBTUSD",
    base="BTC",
    quote="USD",
    tick="1",
    lot="0.0001",
    min_notional="0",
    max_qty="1000",
)
_UNLIMITED = {"USD": "1000000000000", "BTC": "1000000000"}


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    )


def authent(secret_b64: str, post_data: str, nonce: str, endpoint_path: str) -> str:
    """Kraken Futures' ``Authent`` header for one request."""
    digest = hashlib.sha256((post_data + nonce + endpoint_path).encode()).digest()
    mac = hmac.new(base64.b64decode(secret_b64), digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class Position:
    size: Decimal = D0  # signed: long > 0
    price: Decimal = D0  # average entry
    fill_ms: int = 0


@dataclass
class Ledger:
    """One account's collateral (USD), positions and account log."""

    collateral: Decimal = D0
    positions: dict[str, Position] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)


class KrakenFuturesServer(ExchangeServer):
    kind = "krakenfutures"
    settable = ("mark_override", "funding_rate")
    default_specs = (PERP_SPEC,)

    def __init__(
        self,
        specs: list[SymbolSpec] | None = None,
        *,
        funding_rate: str = "0.00001",  # relative, per hour
        initial_margin: str = "0.02",
        maintenance_margin: str = "0.01",
        maker_fee: str = "0.0002",
        taker_fee: str = "0.0005",
        mid: str = "60000",
        port: int = 0,
    ) -> None:
        super().__init__(specs, maker_fee=maker_fee, taker_fee=taker_fee, port=port)
        self.funding_rate = funding_rate
        self.initial_margin = dec(initial_margin)
        self.maintenance_margin = dec(maintenance_margin)
        self.mark_override: str | None = None
        self.ledgers: dict[str, Ledger] = {}
        self.leverage: dict[tuple[str, str], int] = {}
        self.rates: dict[str, list[dict[str, Any]]] = {
            s.symbol: [] for s in self.matcher.specs.values()
        }
        self._ids = itertools.count(1)
        m = dec(mid)
        for s in self.matcher.specs.values():
            bids = [(m - s.tick_d * (k + 1), "2") for k in range(5)]
            asks = [(m + s.tick_d * (k + 1), "2") for k in range(5)]
            self.matcher.seed(s.symbol, bids, asks)

    # -- set-up and test hooks
    def add_key(self, api_key: str, secret: str, account: str = "main", **kw: Any) -> Any:
        """A key whose account holds ``collateral`` USD (the ``balances`` "USD" amount)."""
        usd = dec((kw.pop("balances", None) or {}).get("USD", "0"))
        key = super().add_key(api_key, secret, account, balances=dict(_UNLIMITED), **kw)
        self.ledgers.setdefault(account, Ledger()).collateral += usd
        return key

    def mark(self, symbol: str) -> Decimal:
        if self.mark_override:
            return dec(self.mark_override)
        book = self.matcher.books[symbol]
        bid, ask = book.bids.best(), book.asks.best()
        if bid is None or ask is None:
            return bid or ask or D0
        return (bid + ask) / 2

    def pay_funding(self, rate: str | None = None) -> list[dict[str, Any]]:
        """One funding time: each open position pays ``size * mark * rate`` (longs pay a
        positive rate); the rate joins the historical rates. Returns the log rows written."""
        r = dec(rate or self.funding_rate)
        ms = now_ms()
        rows = []
        for s in self.matcher.specs.values():
            mark = self.mark(s.symbol)
            self.rates[s.symbol].append(
                {
                    "timestamp": iso(ms),
                    "fundingRate": float(r * mark),
                    "relativeFundingRate": float(r),
                }
            )
            for account, led in self.ledgers.items():
                p = led.positions.get(s.symbol)
                if p is None or not p.size:
                    continue
                amount = -p.size * mark * r
                old = led.collateral
                led.collateral += amount
                row = {
                    "id": next(self._ids),
                    "date": iso(ms),
                    "asset": "usd",
                    "contract": s.venue_symbol.lower(),
                    "info": "funding rate change",
                    "margin_account": "flex",
                    "booking_uid": f"fund-{account}-{ms}",
                    "funding_rate": float(r * mark),
                    "realized_funding": float(amount),
                    "mark_price": float(mark),
                    "old_balance": float(old),
                    "new_balance": float(led.collateral),
                    "fee": 0,
                }
                led.log.append(row)
                rows.append(row)
        return rows

    def liquidate(
        self,
        account: str = "main",
        symbol: str = PERP_SYMBOL,
        price: str = "",
        fee_rate: str = "0.0075",
    ) -> dict[str, Any]:
        """The venue closes the account's position at ``price`` (the mark where empty) and
        charges ``fee_rate`` of the notional; the account log gets a "futures liquidation"."""
        led = self.ledgers.setdefault(account, Ledger())
        p = led.positions.setdefault(symbol, Position())
        px = dec(price) if price else self.mark(symbol)
        old, fee = p.size, abs(p.size) * px * dec(fee_rate)
        pnl = (px - p.price) * old
        led.collateral += pnl - fee
        p.size, p.fill_ms = D0, now_ms()
        vid = self.matcher.spec(symbol).venue_symbol.lower()
        row = {
            "id": next(self._ids),
            "date": iso(p.fill_ms),
            "asset": vid,
            "contract": vid,
            "info": "futures liquidation",
            "margin_account": "flex",
            "booking_uid": f"liq-{account}-{p.fill_ms}",
            "old_balance": float(old),
            "new_balance": 0.0,
            "trade_price": float(px),
            "mark_price": float(self.mark(symbol)),
            "realized_pnl": float(pnl),
            "fee": 0,
            "liquidation_fee": float(fee),
        }
        led.log.append(row)
        return row

    # -- the ledger
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        self.ws.book_changed(order.spec.venue_symbol)
        if fill is None or order.account == MARKET:
            return
        self.ws.traded(fill)
        led = self.ledgers.setdefault(order.account, Ledger())
        p = led.positions.setdefault(order.symbol, Position())
        signed = fill.qty if order.side == "buy" else -fill.qty
        rate = self.matcher.maker_fee if fill.maker else self.matcher.taker_fee
        led.collateral -= fill.price * fill.qty * dec(rate)
        if p.size and (p.size > 0) != (signed > 0):  # reduces (maybe flips)
            closed = min(abs(signed), abs(p.size))
            sign = 1 if p.size > 0 else -1
            led.collateral += (fill.price - p.price) * closed * sign
            rest = abs(signed) - closed
            p.size += signed
            if rest:
                p.price = fill.price
        else:
            total = abs(p.size) + abs(signed)
            p.price = (p.price * abs(p.size) + fill.price * abs(signed)) / total
            p.size += signed
        p.fill_ms = fill.ts_ms

    # -- routes
    def start(self) -> KrakenFuturesServer:
        super().start()
        loop = self.server.loop
        assert loop is not None

        def go() -> None:
            self._ticker = loop.create_task(self.ws.ticker())

        loop.call_soon_threadsafe(go)
        return self

    def stop(self) -> None:
        task = getattr(self, "_ticker", None)
        if task is not None and self.server.loop is not None:
            self.server.loop.call_soon_threadsafe(task.cancel)
        super().stop()

    def add_routes(self, app: web.Application) -> None:
        self.ws = KrakenFuturesWs(self)
        self.ws.add_routes(app)
        d = "/derivatives/api/v3/"
        r = app.router
        r.add_get(d + "instruments", self._instruments)
        r.add_get(d + "tickers", self._tickers)
        r.add_get(d + "orderbook", self._orderbook)
        r.add_get("/derivatives/api/v4/historicalfundingrates", self._funding_rates)
        r.add_post(d + "sendorder", self._signed(self._sendorder))
        r.add_post(d + "cancelorder", self._signed(self._cancelorder))
        r.add_get(d + "openorders", self._signed(self._openorders))
        r.add_get(d + "openpositions", self._signed(self._openpositions))
        r.add_get(d + "accounts", self._signed(self._accounts))
        r.add_get(d + "fills", self._signed(self._fills))
        r.add_get(d + "leveragepreferences", self._signed(self._get_leverage))
        r.add_put(d + "leveragepreferences", self._signed(self._put_leverage))
        r.add_get("/api/history/v2/orders", self._signed(self._order_history))
        r.add_get("/api/history/v3/account-log", self._signed(self._account_log))
        r.add_get("/api/history/v2/account-log", self._signed(self._account_log))

    def _signed(self, handler: Any) -> Any:
        async def check(request: web.Request) -> web.Response:
            key = self.keys.get(request.headers.get("APIKey", ""))
            raw_query = request.raw_path.partition("?")[2]  # as sent: the signature's postData
            post = raw_query or (await request.text())
            path = request.path.removeprefix("/derivatives")
            nonce = request.headers.get("Nonce", "")
            want = authent(key.secret, post, nonce, path) if key else ""
            if not key or not hmac.compare_digest(want, request.headers.get("Authent", "")):
                return _error("authenticationError")
            return await handler(request, key.account, dict(request.query))

        return check

    def _spec_by_id(self, venue_id: str) -> SymbolSpec:
        for s in self.matcher.specs.values():
            if s.venue_symbol.lower() == venue_id.lower():
                return s
        raise Reject("unknown_symbol", f"unknown symbol {venue_id}")

    async def _instruments(self, request: web.Request) -> web.Response:
        rows = [
            {
                "symbol": s.venue_symbol,
                "type": "flexible_futures",
                "tag": "perpetual",
                "pair": f"{'XBT' if s.base == 'BTC' else s.base}:USD",
                "tradeable": True,
                "tickSize": float(s.tick_d),
                "contractSize": 1,
                "contractValueTradePrecision": -s.lot_d.as_tuple().exponent,
                "impactMidSize": 1,
                "maxPositionSize": float(dec(s.max_qty)),
                "openingDate": "2022-01-01T00:00:00.000Z",
                "marginLevels": [
                    {
                        "numNonContractUnits": 0,
                        "initialMargin": float(self.initial_margin),
                        "maintenanceMargin": float(self.maintenance_margin),
                    }
                ],
                "fundingRateCoefficient": 8,
                "maxRelativeFundingRate": 0.001,
                "postOnly": False,
                "category": "Layer 1",
            }
            for s in self.matcher.specs.values()
        ]
        return _ok(instruments=rows)

    async def _tickers(self, request: web.Request) -> web.Response:
        rows = []
        for s in self.matcher.specs.values():
            book = self.matcher.books[s.symbol]
            mark, rate = self.mark(s.symbol), dec(self.funding_rate)
            bid, ask = book.bids.best(), book.asks.best()
            rows.append(
                {
                    "tag": "perpetual",
                    "pair": f"{s.base}:USD",
                    "symbol": s.venue_symbol,
                    "markPrice": float(mark),
                    "indexPrice": float(mark),
                    "bid": float(bid or 0),
                    "ask": float(ask or 0),
                    "last": float(mark),
                    "lastTime": iso(now_ms()),
                    "vol24h": 0,
                    "fundingRate": float(rate * mark),  # absolute: USD per contract
                    "fundingRatePrediction": float(rate * mark),
                    "suspended": False,
                    "postOnly": False,
                }
            )
        return _ok(tickers=rows)

    async def _orderbook(self, request: web.Request) -> web.Response:
        s = self._spec_by_id(request.query.get("symbol", ""))
        depth = self.matcher.books[s.symbol].depth()
        book = {
            "bids": [[float(p), float(q)] for p, q in depth["bids"]],
            "asks": [[float(p), float(q)] for p, q in depth["asks"]],
        }
        return _ok(orderBook=book)

    async def _funding_rates(self, request: web.Request) -> web.Response:
        s = self._spec_by_id(request.query.get("symbol", ""))
        return web.json_response({"rates": self.rates[s.symbol]})

    async def _sendorder(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        try:
            s = self._spec_by_id(q.get("symbol", ""))
        except Reject:
            return _send_status("invalidArgument")
        kind = q.get("orderType", "lmt")
        order_type = "market" if kind == "mkt" else "limit"
        price = dec(q["limitPrice"]) if q.get("limitPrice") else None
        tif = "IOC" if kind == "ioc" else "GTC"
        order = Order(
            0, q.get("cliOrdId", ""), account, s, q.get("side", "buy"), order_type,
            dec(q.get("size", "0")), price, tif=tif, post_only=kind == "post",
        )  # fmt: skip
        if q.get("reduceOnly") == "true":
            pos = self.ledgers.setdefault(account, Ledger()).positions.get(s.symbol)
            size = pos.size if pos else D0
            if not size or (size > 0) == (order.side == "buy") or order.amount > abs(size):
                return _send_status("wouldNotReducePosition")
        try:
            fills = self.matcher.submit(account, order)
        except Reject as e:
            return _send_status("postWouldExecute" if "post" in e.kind else "invalidSize")
        events: list[dict[str, Any]] = []
        prior = D0
        for f in fills:  # each execution names the order as it was before it
            row = _order_row(order) | {"filled": float(prior)}
            events.append(
                {"type": "EXECUTION", "executionId": str(f.trade_id), "price": float(f.price),
                 "amount": float(f.qty), "orderPriorExecution": row}
            )  # fmt: skip
            prior += f.qty
        if order.is_open and not fills:
            events.append({"type": "PLACE", "order": _order_row(order)})
        status = "placed" if order.is_open or fills else "cancelled"
        return _ok(
            sendStatus={
                "status": status,
                "order_id": order.uid,
                "cliOrdId": order.client_id or None,
                "receivedTime": iso(order.created_ms),
                "orderEvents": events,
            }
        )

    async def _cancelorder(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        order = self._find(account, q.get("order_id"), q.get("cliOrdId"))
        if order is None or not order.is_open:
            return _ok(cancelStatus={"status": "notFound", "receivedTime": iso(now_ms())})
        self.matcher.cancel(account, order.order_id)
        return _ok(
            cancelStatus={
                "status": "cancelled",
                "order_id": order.uid,
                "receivedTime": iso(now_ms()),
                "orderEvents": [{"uid": order.uid, "order": _order_row(order), "type": "CANCEL"}],
            }
        )

    def _find(self, account: str, uid: str | None, cli: str | None) -> Order | None:
        for o in self.matcher.orders.values():
            if o.account == account and ((uid and o.uid == uid) or (cli and o.client_id == cli)):
                return o
        return None

    async def _openorders(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        rows = [
            {
                "order_id": o.uid,
                "cliOrdId": o.client_id or None,
                "symbol": o.spec.venue_symbol,
                "side": o.side,
                "orderType": "lmt",
                "limitPrice": float(o.price or 0),
                "unfilledSize": float(o.remaining),
                "filledSize": float(o.filled),
                "receivedTime": iso(o.created_ms),
                "lastUpdateTime": iso(o.updated_ms),
                "status": "partiallyFilled" if o.filled else "untouched",
                "reduceOnly": False,
            }
            for o in self.matcher.open_orders(account)
        ]
        return _ok(openOrders=rows)

    async def _openpositions(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        led = self.ledgers.setdefault(account, Ledger())
        rows = [
            {
                "side": "long" if p.size > 0 else "short",
                "symbol": self.matcher.spec(sym).venue_symbol,
                "price": float(p.price),
                "fillTime": iso(p.fill_ms),
                "size": float(abs(p.size)),
                "unrealizedFunding": 0,
                "pnlCurrency": "USD",
            }
            for sym, p in led.positions.items()
            if p.size
        ]
        return _ok(openPositions=rows)

    def margins(self, account: str) -> dict[str, Decimal]:
        """The flex account's totals: collateral, unrealized PnL, initial and maintenance."""
        led = self.ledgers.setdefault(account, Ledger())
        upnl = im = mm = D0
        for sym, p in led.positions.items():
            mark = self.mark(sym)
            upnl += (mark - p.price) * p.size
            im += abs(p.size) * mark * self.initial_margin
            mm += abs(p.size) * mark * self.maintenance_margin
        return {"collateral": led.collateral, "upnl": upnl, "im": im, "mm": mm}

    async def _accounts(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        m = self.margins(account)
        equity = m["collateral"] + m["upnl"]
        flex = {
            "type": "multiCollateralMarginAccount",
            "currencies": {
                "USD": {
                    "quantity": float(m["collateral"]),
                    "value": float(m["collateral"]),
                    "collateral": float(m["collateral"]),
                    "available": float(m["collateral"]),
                }
            },
            "balanceValue": float(m["collateral"]),
            "portfolioValue": float(equity),
            "collateralValue": float(m["collateral"]),
            "initialMargin": float(m["im"]),
            "initialMarginWithOrders": float(m["im"]),
            "maintenanceMargin": float(m["mm"]),
            "pnl": float(m["upnl"]),
            "unrealizedFunding": 0,
            "totalUnrealized": float(m["upnl"]),
            "totalUnrealizedAsMargin": float(m["upnl"]),
            "availableMargin": float(equity - m["im"]),
            "marginEquity": float(equity),
        }
        return _ok(accounts={"flex": flex})

    async def _fills(self, request: web.Request, account: str, q: dict[str, str]) -> web.Response:
        rows = [
            {
                "fill_id": str(f.trade_id),
                "symbol": f.order.spec.venue_symbol,
                "side": f.order.side,
                "order_id": f.order.uid,
                "cliOrdId": f.order.client_id or None,
                "size": float(f.qty),
                "price": float(f.price),
                "fillTime": iso(f.ts_ms),
                "fillType": "maker" if f.maker else "taker",
            }
            for f in self.matcher.account_trades(account)
        ]
        return _ok(fills=rows)

    async def _get_leverage(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        rows = [
            {"symbol": sym, "maxLeverage": lev}
            for (a, sym), lev in self.leverage.items()
            if a == account
        ]
        return _ok(leveragePreferences=rows)

    async def _put_leverage(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        self.leverage[(account, q.get("symbol", "").upper())] = int(
            float(q.get("maxLeverage", "0"))
        )
        return _ok()

    async def _order_history(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        """Fully filled orders as the history API's ``OrderUpdated`` / ``full_fill`` events."""
        since = int(q.get("since") or 0)
        rows = [
            {
                "timestamp": o.updated_ms,
                "event": {
                    "OrderUpdated": {
                        "reason": "full_fill",
                        "newOrder": _order_row(o) | {"uid": o.uid, "clientId": o.client_id},
                    }
                },
            }
            for o in self.matcher.orders.values()
            if o.account == account and o.status == "closed" and o.updated_ms >= since
        ]
        return web.json_response({"elements": rows, "len": len(rows)})

    async def _account_log(
        self, request: web.Request, account: str, q: dict[str, str]
    ) -> web.Response:
        rows = list(self.ledgers.setdefault(account, Ledger()).log)
        if q.get("info"):
            rows = [r for r in rows if r["info"] == q["info"]]
        if q.get("since"):
            since = int(q["since"])
            rows = [r for r in rows if _ms(r["date"]) >= since]
        if q.get("sort") != "asc":
            rows.reverse()
        return web.json_response({"accountUid": account, "logs": rows})


def _ms(s: str) -> int:
    return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000)


def _order_row(o: Order) -> dict[str, Any]:
    return {
        "orderId": o.uid,
        "cliOrdId": o.client_id or None,
        "type": "lmt" if o.type == "limit" else "mkt",
        "symbol": o.spec.venue_symbol,
        "side": o.side,
        "quantity": float(o.amount),
        "filled": float(o.filled),
        "limitPrice": float(o.price or 0),
        "reduceOnly": False,
        "timestamp": iso(o.created_ms),
        "lastUpdateTimestamp": iso(o.updated_ms),
    }


def _ok(**body: Any) -> web.Response:
    return web.json_response({"result": "success", "serverTime": iso(now_ms()), **body})


def _error(error: str) -> web.Response:
    return web.json_response({"result": "error", "error": error, "serverTime": iso(now_ms())})


def _send_status(status: str) -> web.Response:
    return _ok(sendStatus={"status": status, "receivedTime": iso(now_ms()), "orderEvents": []})
