"""Binance spot wire formats for the local server: JSON bodies, user events, error answers.

One place builds each message shape Binance sends (exchangeInfo symbols with their filters,
order answers ACK/RESULT/FULL, myTrades rows, ``executionReport``, ``outboundAccountPosition``,
``{"code": ..., "msg": ...}`` errors) from the neutral core's objects; ``binance.py`` serves them.
Numbers go out as Binance spells them: strings with 8 decimals.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.venues.core import D0, Account, Fill, Order, Reject, SymbolSpec, now_ms

# Reject.kind -> (HTTP status, Binance code, msg)
REJECTS: dict[str, tuple[int, int, str]] = {
    "unknown_symbol": (400, -1121, "Invalid symbol."),
    "symbol_halted": (400, -1013, "Market is closed."),
    "filter_price": (400, -1013, "Filter failure: PRICE_FILTER"),
    "filter_lot": (400, -1013, "Filter failure: LOT_SIZE"),
    "min_notional": (400, -1013, "Filter failure: NOTIONAL"),
    "insufficient_balance": (400, -2010, "Account has insufficient balance for requested action."),
    "post_only_would_take": (400, -2010, "Order would immediately match and take."),
    "duplicate_client_id": (400, -2010, "Duplicate order sent."),
    "unknown_order": (400, -2011, "Unknown order sent."),
    "bad_request": (400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed."),
}
STATUS = {
    "open": "NEW",
    "closed": "FILLED",
    "canceled": "CANCELED",
    "expired": "EXPIRED",
    "rejected": "REJECTED",
}
EXEC_TYPE = {
    "new": "NEW",
    "trade": "TRADE",
    "canceled": "CANCELED",
    "expired": "EXPIRED",
    "amended": "REPLACED",
}


def p8(x: Decimal | None) -> str:
    return f"{(x or D0):.8f}"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error(
    code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=dumps({"code": code, "msg": msg}),
        content_type="application/json",
        headers=headers,
    )


def reject(e: Reject, query: bool = False) -> web.Response:
    if e.kind == "unknown_order" and query:
        return error(-2013, "Order does not exist.")
    status, code, msg = REJECTS.get(e.kind, REJECTS["bad_request"])
    return error(code, msg, status)


def order_status(order: Order) -> str:
    if order.status == "open" and order.filled > 0:
        return "PARTIALLY_FILLED"
    return STATUS[order.status]


def order_type(order: Order) -> str:
    if order.type == "market":
        return "MARKET"
    return "LIMIT_MAKER" if order.post_only else "LIMIT"


def symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    return {
        "symbol": spec.venue_symbol,
        "status": spec.status,
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": p8(spec.tick_d),
                "maxPrice": "1000000.00000000",
                "tickSize": p8(spec.tick_d),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": p8(spec.min_qty_d),
                "maxQty": p8(Decimal(spec.max_qty)),
                "stepSize": p8(spec.lot_d),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": p8(Decimal(spec.max_qty)),
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": p8(spec.min_notional_d),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 1,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(specs: list[SymbolSpec], weight_limit: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 6100,
            },
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(s) for s in specs],
    }


def order_json(order: Order, resp_type: str = "RESULT") -> dict[str, Any]:
    out: dict[str, Any] = {
        "symbol": order.spec.venue_symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_id,
        "transactTime": order.updated_ms,
    }
    if resp_type == "ACK":
        return out
    out.update(
        {
            "price": p8(order.price),
            "origQty": p8(order.amount),
            "executedQty": p8(order.filled),
            "cummulativeQuoteQty": p8(order.cost),
            "status": order_status(order),
            "timeInForce": order.tif,
            "type": order_type(order),
            "side": order.side.upper(),
            "workingTime": order.created_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
    )
    if resp_type == "FULL":
        out["fills"] = [
            {
                "price": p8(f.price),
                "qty": p8(f.qty),
                "commission": p8(f.fee),
                "commissionAsset": f.fee_currency,
                "tradeId": f.trade_id,
            }
            for f in order.fills
        ]
    return out


def query_json(order: Order) -> dict[str, Any]:
    """``GET /api/v3/order`` and ``openOrders`` rows."""
    out = order_json(order, "RESULT")
    del out["transactTime"]
    out.update(
        {
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": order.created_ms,
            "updateTime": order.updated_ms,
            "isWorking": order.status == "open",
            "origQuoteOrderQty": p8(order.quote_amount),
        }
    )
    return out


def cancel_json(order: Order, cancel_client_id: str) -> dict[str, Any]:
    out = order_json(order, "RESULT")
    out["origClientOrderId"] = order.client_id
    out["clientOrderId"] = cancel_client_id
    return out


def trade_json(fill: Fill) -> dict[str, Any]:
    o = fill.order
    return {
        "symbol": o.spec.venue_symbol,
        "id": fill.trade_id,
        "orderId": o.order_id,
        "orderListId": -1,
        "price": p8(fill.price),
        "qty": p8(fill.qty),
        "quoteQty": p8(fill.quote_qty),
        "commission": p8(fill.fee),
        "commissionAsset": fill.fee_currency,
        "time": fill.ts_ms,
        "isBuyer": o.side == "buy",
        "isMaker": fill.maker,
        "isBestMatch": True,
    }


def balances(acct: Account) -> list[dict[str, str]]:
    return [
        {"asset": a, "free": p8(acct.free.get(a, D0)), "locked": p8(acct.locked.get(a, D0))}
        for a in acct.assets()
    ]


def execution_report(
    event: str, order: Order, fill: Fill | None, cancel_client_id: str = ""
) -> dict[str, Any]:
    now = now_ms()
    canceled = event == "canceled"
    return {
        "e": "executionReport",
        "E": now,
        "s": order.spec.venue_symbol,
        "c": cancel_client_id if canceled and cancel_client_id else order.client_id,
        "S": order.side.upper(),
        "o": order_type(order),
        "f": order.tif,
        "q": p8(order.amount),
        "p": p8(order.price),
        "P": "0.00000000",
        "F": "0.00000000",
        "g": -1,
        "C": order.client_id if canceled else "",
        "x": EXEC_TYPE.get(event, "NEW"),
        "X": order_status(order),
        "r": "NONE",
        "i": order.order_id,
        "l": p8(fill.qty if fill else D0),
        "z": p8(order.filled),
        "L": p8(fill.price if fill else D0),
        "n": p8(fill.fee if fill else D0),
        "N": fill.fee_currency if fill else None,
        "T": fill.ts_ms if fill else order.updated_ms,
        "t": fill.trade_id if fill else -1,
        "v": 0,
        "I": 0,
        "w": order.status == "open",
        "m": bool(fill and fill.maker),
        "M": False,
        "O": order.created_ms,
        "Z": p8(order.cost),
        "Y": p8(fill.quote_qty if fill else D0),
        "Q": p8(order.quote_amount),
        "W": order.created_ms,
        "V": "EXPIRE_MAKER",
    }


def account_position(acct: Account, assets: list[str]) -> dict[str, Any]:
    now = now_ms()
    return {
        "e": "outboundAccountPosition",
        "E": now,
        "u": now,
        "B": [
            {"a": a, "f": p8(acct.free.get(a, D0)), "l": p8(acct.locked.get(a, D0))} for a in assets
        ],
    }
