"""Coinbase Advanced Trade wire shapes: products, orders, fills, accounts, errors, ws envelopes.

Every JSON body the local Coinbase server sends is built here, field for field as the exchange
documents it (``/api/v3/brokerage/...`` and the ``/v2`` app API ccxt still calls for currencies,
time and balances), from the exchange-neutral matcher objects. Ids are UUIDs (``Order.uid``),
sides upper case, every number a decimal string. Fees are in the quote asset on both sides.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.venues.core import D0, Account, Fill, Order, Reject, SymbolSpec, fmt

USER_ID = "5c1f3b5e-0000-4000-8000-00000000c0de"
PORTFOLIO_ID = "8a2e0d1c-0000-4000-8000-0000000f0110"

# Reject.kind -> (error, preview_failure_reason, message) as Coinbase's create-order answers
_ORDER_ERRORS = {
    "insufficient_balance": (
        "INSUFFICIENT_FUND",
        "PREVIEW_INSUFFICIENT_FUND",
        "Insufficient balance in source account",
    ),
    "filter_price": (
        "INVALID_LIMIT_PRICE_PRECISION",
        "PREVIEW_INVALID_LIMIT_PRICE_PRECISION",
        "Too many decimals in order price",
    ),
    "filter_lot": (
        "INVALID_SIZE_PRECISION",
        "PREVIEW_INVALID_SIZE_PRECISION",
        "Too many decimals in order amount",
    ),
    "min_notional": (
        "INVALID_ORDER_CONFIG",
        "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL",
        "Order size too small",
    ),
    "post_only_would_take": (
        "INVALID_LIMIT_PRICE_POST_ONLY",
        "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY",
        "Limit price would take liquidity with post_only set",
    ),
    "symbol_halted": ("ORDER_ENTRY_DISABLED", "PREVIEW_ORDER_ENTRY_DISABLED", "Trading disabled"),
    "unsupported": (
        "UNSUPPORTED_ORDER_CONFIGURATION",
        "UNSUPPORTED_ORDER_CONFIGURATION",
        "Order configuration not supported here",
    ),
}
_STATUS = {"open": "OPEN", "closed": "FILLED", "canceled": "CANCELLED", "expired": "EXPIRED"}
_TIF = {"GTC": "GOOD_UNTIL_CANCELLED", "IOC": "IMMEDIATE_OR_CANCEL", "FOK": "FILL_OR_KILL"}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def iso(ms: int | float) -> str:
    """RFC 3339 with microseconds and a Z, as Coinbase writes times."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def product_id(spec: SymbolSpec) -> str:
    return spec.venue_symbol


# -- errors ------------------------------------------------------------------------------------


def unauthorized() -> web.Response:
    """A refused JWT on the Advanced Trade API: a bare 401."""
    return web.Response(status=401, text="Unauthorized\n")


def errors_body(code: str, message: str, status: int, headers: dict | None = None) -> web.Response:
    """The ``{"errors": [{"id", "message"}]}`` body (app API; rate limits; expired tokens)."""
    body = {"errors": [{"id": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


def error_body(error: str, message: str, status: int) -> web.Response:
    """The Advanced Trade ``{"error", "error_details", "message"}`` body."""
    return web.json_response(
        {"error": error, "error_details": message, "message": message}, status=status
    )


def order_failure(reject: Reject, configuration: dict) -> dict:
    """Create-order refusal: HTTP 200, ``success: false`` with an ``error_response``."""
    error, preview, message = _ORDER_ERRORS.get(
        reject.kind, ("UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON", reject.message)
    )
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {
            "error": error,
            "message": message,
            "error_details": reject.message,
            "preview_failure_reason": preview,
        },
        "order_configuration": configuration,
    }


# -- catalogue ---------------------------------------------------------------------------------


def product(spec: SymbolSpec, last: Decimal | None) -> dict:
    tradable = spec.status == "TRADING"
    return {
        "product_id": product_id(spec),
        "price": fmt(last) if last is not None else "",
        "price_percentage_change_24h": "0",
        "volume_24h": "0",
        "volume_percentage_change_24h": "0",
        "base_increment": spec.lot,
        "quote_increment": spec.tick,
        "quote_min_size": spec.min_notional,
        "quote_max_size": "150000000",
        "base_min_size": spec.min_qty or spec.lot,
        "base_max_size": spec.max_qty,
        "base_name": spec.base,
        "quote_name": spec.quote,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online" if tradable else "offline",
        "cancel_only": spec.status == "CANCEL_ONLY",
        "limit_only": False,
        "post_only": False,
        "trading_disabled": not tradable,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": spec.quote,
        "base_currency_id": spec.base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": "",
        "alias_to": [],
        "base_display_symbol": spec.base,
        "quote_display_symbol": spec.quote,
        "view_only": False,
        "price_increment": spec.tick,
        "display_name": product_id(spec),
        "product_venue": "CBE",
    }


def fiat_currency(code: str) -> dict:
    return {"id": code, "name": code, "min_size": "0.01"}


def crypto_currency(code: str, index: int) -> dict:
    return {
        "code": code,
        "name": code,
        "color": "#000000",
        "sort_index": index,
        "exponent": 8,
        "type": "crypto",
        "address_regex": "^.+$",
        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_OID, code)),
    }


def fee_tier(maker: Decimal, taker: Decimal) -> dict:
    return {
        "total_volume": 0,
        "total_fees": 0,
        "fee_tier": {
            "pricing_tier": "Advanced 1",
            "usd_from": "0",
            "usd_to": "1000",
            "taker_fee_rate": fmt(taker),
            "maker_fee_rate": fmt(maker),
            "aop_from": "",
            "aop_to": "",
        },
        "margin_rate": None,
        "goods_and_services_tax": None,
        "advanced_trade_only_volume": 0,
        "advanced_trade_only_fees": 0,
        "coinbase_pro_volume": 0,
        "coinbase_pro_fees": 0,
        "total_balance": "",
        "has_promo_fee": False,
    }


# -- balances ----------------------------------------------------------------------------------


def account_uuid(account: str, asset: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"coinbase:{account}:{asset}"))


def v3_accounts(acct: Account) -> list[dict]:
    out = []
    for asset in acct.assets():
        out.append(
            {
                "uuid": account_uuid(acct.name, asset),
                "name": f"{asset} Wallet",
                "currency": asset,
                "available_balance": {"value": fmt(acct.free.get(asset, D0)), "currency": asset},
                "default": True,
                "active": True,
                "created_at": "2024-01-01T00:00:00.000Z",
                "updated_at": "2024-01-01T00:00:00.000Z",
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": fmt(acct.locked.get(asset, D0)), "currency": asset},
                "retail_portfolio_id": PORTFOLIO_ID,
            }
        )
    return out


def v2_accounts(acct: Account) -> list[dict]:
    """The app API's wallets: one balance per asset, holds included (it has no free/used)."""
    return [
        {
            "id": account_uuid(acct.name, asset),
            "name": f"{asset} Wallet",
            "primary": True,
            "type": "wallet",
            "currency": {"code": asset, "name": asset},
            "balance": {"amount": fmt(acct.total(asset)), "currency": asset},
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "resource": "account",
            "resource_path": f"/v2/accounts/{account_uuid(acct.name, asset)}",
        }
        for asset in acct.assets()
    ]


# -- orders and fills --------------------------------------------------------------------------


def configuration(order: Order) -> dict:
    """The ``order_configuration`` an order was placed with."""
    if order.type == "market":
        if order.quote_amount is not None:
            return {"market_market_ioc": {"quote_size": fmt(order.quote_amount)}}
        return {"market_market_ioc": {"base_size": fmt(order.amount)}}
    size, price = fmt(order.amount), fmt(order.price or D0)
    if order.tif == "IOC":
        return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
    if order.tif == "FOK":
        return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
    return {
        "limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": order.post_only}
    }


def order_json(order: Order) -> dict:
    """One order as ``GET /orders/historical/{id}`` and ``/orders/historical/batch`` give it."""
    filled_value = order.cost
    fees = order.fee
    buy = order.side == "buy"
    last_fill = order.fills[-1].ts_ms if order.fills else None
    return {
        "order_id": order.uid,
        "product_id": product_id(order.spec),
        "user_id": USER_ID,
        "order_configuration": configuration(order),
        "side": order.side.upper(),
        "client_order_id": order.client_id,
        "status": _STATUS.get(order.status, "FAILED"),
        "time_in_force": _TIF.get(order.tif, "GOOD_UNTIL_CANCELLED")
        if order.type == "limit"
        else "IMMEDIATE_OR_CANCEL",
        "created_time": iso(order.created_ms),
        "completion_percentage": fmt(order.filled / order.amount * 100) if order.amount else "0",
        "filled_size": fmt(order.filled),
        "average_filled_price": fmt(order.average) if order.average is not None else "0",
        "fee": "",
        "number_of_fills": str(len(order.fills)),
        "filled_value": fmt(filled_value),
        "pending_cancel": False,
        "size_in_quote": order.quote_amount is not None,
        "total_fees": fmt(fees),
        "size_inclusive_of_fees": False,
        "total_value_after_fees": fmt(filled_value + fees if buy else filled_value - fees),
        "trigger_status": "INVALID_ORDER_TYPE",
        "order_type": order.type.upper(),
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": not order.is_open,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": "User requested cancel" if order.status == "canceled" else "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": fmt(order.locked),
        "is_liquidation": False,
        "last_fill_time": iso(last_fill) if last_fill else None,
        "edit_history": order.extra.get("edit_history", []),
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": PORTFOLIO_ID,
    }


def fill_json(fill: Fill) -> dict:
    """One of our fills as ``GET /orders/historical/fills`` gives it (commission in quote)."""
    order = fill.order
    return {
        "entry_id": uuid.uuid5(uuid.NAMESPACE_OID, f"entry:{fill.trade_id}").hex,
        "trade_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"trade:{fill.trade_id}")),
        "order_id": order.uid,
        "trade_time": iso(fill.ts_ms),
        "trade_type": "FILL",
        "price": fmt(fill.price),
        "size": fmt(fill.qty),
        "commission": fmt(fill.fee),
        "product_id": product_id(order.spec),
        "sequence_timestamp": iso(fill.ts_ms),
        "liquidity_indicator": "MAKER" if fill.maker else "TAKER",
        "size_in_quote": False,
        "user_id": USER_ID,
        "side": order.side.upper(),
        "retail_portfolio_id": PORTFOLIO_ID,
    }


def ws_order(order: Order) -> dict:
    """One order as the ``user`` channel carries it."""
    avg = order.average
    return {
        "order_id": order.uid,
        "client_order_id": order.client_id,
        "cumulative_quantity": fmt(order.filled),
        "leaves_quantity": fmt(order.remaining if order.is_open else D0),
        "avg_price": fmt(avg) if avg is not None else "0",
        "total_fees": fmt(order.fee),
        "status": _STATUS.get(order.status, "FAILED"),
        "product_id": product_id(order.spec),
        "product_type": "SPOT",
        "creation_time": iso(order.created_ms),
        "order_side": order.side.upper(),
        "order_type": order.type.upper(),
        "limit_price": fmt(order.price) if order.price is not None else "",
        "stop_price": "",
        "post_only": order.post_only,
        "cancel_reason": "User requested cancel" if order.status == "canceled" else "",
        "reject_reason": "",
        "time_in_force": _TIF.get(order.tif, "GOOD_UNTIL_CANCELLED"),
        "completion_percentage": fmt(order.filled / order.amount * 100) if order.amount else "0",
        "filled_value": fmt(order.cost),
        "number_of_fills": str(len(order.fills)),
        "outstanding_hold_amount": fmt(order.locked),
        "retail_portfolio_id": PORTFOLIO_ID,
    }


# -- websocket envelopes ----------------------------------------------------------------------


def envelope(channel: str, seq: int, events: list[dict] | str) -> str:
    """``{"channel", "client_id", "timestamp", "sequence_num", "events"}``; ``events`` may be
    pre-serialised JSON (user events are formatted once, wrapped per connection)."""
    ev = events if isinstance(events, str) else dumps(events)
    stamp = dumps(iso_now())
    return (
        f'{{"channel":"{channel}","client_id":"","timestamp":{stamp},'
        f'"sequence_num":{seq},"events":{ev}}}'
    )


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def l2_updates(side: str, levels: list[tuple[Decimal, Decimal]], stamp: str) -> list[dict]:
    return [
        {
            "side": "bid" if side == "bids" else "offer",
            "event_time": stamp,
            "price_level": fmt(px),
            "new_quantity": fmt(qty),
        }
        for px, qty in levels
    ]


def market_trade(pid: str, trade_id: int, price: Decimal, size: Decimal, side: str) -> dict:
    return {
        "trade_id": str(trade_id),
        "product_id": pid,
        "price": fmt(price),
        "size": fmt(size),
        "side": side.upper(),
        "time": iso_now(),
    }
