"""Binance USD-M futures wire formats for the local futures server (``/fapi``).

One place builds each shape the fapi sends: exchangeInfo symbols (contractType PERPETUAL,
marginAsset, maint/required margin percents), order answers and query rows, userTrades rows
(commission and realizedPnl in USDT), positionRisk (v2 and v3) and account rows, income and
fundingRate history, and the user-stream events ``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE`` and
``MARGIN_CALL``. Errors are the spot module's (same ``{"code", "msg"}`` bodies).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.venues.binance_futures_ledger import D0, FuturesAccount, Income, Ledger
from tests.venues.binance_wire import order_status, p8
from tests.venues.core import Fill, Order, SymbolSpec, now_ms

PERPETUAL_DELIVERY_MS = 4133404800000  # Binance's "never" for a perpetual's deliveryDate


def _places(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]


def symbol_info(spec: SymbolSpec, ledger: Ledger) -> dict[str, Any]:
    return {
        "symbol": spec.venue_symbol,
        "pair": spec.venue_symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_MS,
        "onboardDate": 1569398400000,
        "status": spec.status,
        "maintMarginPercent": p8(ledger.maint_ratio * 100),
        "requiredMarginPercent": p8(Decimal(100) / ledger.max_leverage),
        "baseAsset": spec.base,
        "quoteAsset": spec.quote,
        "marginAsset": spec.quote,
        "pricePrecision": _places(spec.tick_d),
        "quantityPrecision": _places(spec.lot_d),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "triggerProtect": "0.0500",
        "liquidationFee": p8(ledger.liquidation_fee),
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": p8(spec.tick_d),
                "maxPrice": "4529764",
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
                "minQty": p8(spec.min_qty_d),
                "maxQty": p8(Decimal(spec.max_qty)),
                "stepSize": p8(spec.lot_d),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": p8(spec.min_notional_d)},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def exchange_info(specs: list[SymbolSpec], ledger: Ledger, weight_limit: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_info(s, ledger) for s in specs],
    }


def order_json(order: Order) -> dict[str, Any]:
    avg = order.average
    return {
        "orderId": order.order_id,
        "symbol": order.spec.venue_symbol,
        "status": order_status(order),
        "clientOrderId": order.client_id,
        "price": p8(order.price),
        "avgPrice": p8(avg),
        "origQty": p8(order.amount),
        "executedQty": p8(order.filled),
        "cumQty": p8(order.filled),
        "cumQuote": p8(order.cost),
        "timeInForce": order.tif,
        "type": order.extra.get("type", "MARKET" if order.type == "market" else "LIMIT"),
        "origType": order.extra.get("type", "MARKET" if order.type == "market" else "LIMIT"),
        "reduceOnly": bool(order.extra.get("reduce_only")),
        "closePosition": False,
        "side": order.side.upper(),
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "time": order.created_ms,
        "updateTime": order.updated_ms,
    }


def trade_json(fill: Fill) -> dict[str, Any]:
    o = fill.order
    return {
        "buyer": o.side == "buy",
        "commission": p8(fill.fee),
        "commissionAsset": fill.fee_currency,
        "id": fill.trade_id,
        "maker": fill.maker,
        "orderId": o.order_id,
        "price": p8(fill.price),
        "qty": p8(fill.qty),
        "quoteQty": p8(fill.quote_qty),
        "realizedPnl": p8(o.extra.get("realized", {}).get(fill.trade_id, D0)),
        "side": o.side.upper(),
        "positionSide": "BOTH",
        "symbol": o.spec.venue_symbol,
        "time": fill.ts_ms,
    }


def order_update(
    event: str, order: Order, fill: Fill | None, realized: Decimal = D0
) -> dict[str, Any]:
    now = now_ms()
    kind = order.extra.get("type", "MARKET" if order.type == "market" else "LIMIT")
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now,
        "T": fill.ts_ms if fill else now,
        "o": {
            "s": order.spec.venue_symbol,
            "c": order.client_id,
            "S": order.side.upper(),
            "o": kind,
            "f": order.tif,
            "q": p8(order.amount),
            "p": p8(order.price),
            "ap": p8(order.average),
            "sp": "0",
            "x": {"trade": "TRADE", "canceled": "CANCELED", "expired": "EXPIRED"}.get(event, "NEW"),
            "X": order_status(order),
            "i": order.order_id,
            "l": p8(fill.qty if fill else D0),
            "z": p8(order.filled),
            "L": p8(fill.price if fill else D0),
            "N": "USDT",
            "n": p8(fill.fee if fill else D0),
            "T": fill.ts_ms if fill else order.updated_ms,
            "t": fill.trade_id if fill else 0,
            "b": "0",
            "a": "0",
            "m": bool(fill and fill.maker),
            "R": bool(order.extra.get("reduce_only")),
            "wt": "CONTRACT_PRICE",
            "ot": kind,
            "ps": "BOTH",
            "cp": False,
            "rp": p8(realized),
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "NONE",
            "pm": "NONE",
            "gtd": 0,
        },
    }


def account_update(
    acct: FuturesAccount,
    reason: str,
    symbols: list[str],
    venue_of: dict[str, str],
    change: Decimal = D0,
) -> dict[str, Any]:
    now = now_ms()
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now,
        "T": now,
        "a": {
            "m": reason,
            "B": [
                {"a": acct.asset, "wb": p8(acct.wallet), "cw": p8(acct.wallet), "bc": p8(change)}
            ],
            "P": [
                {
                    "s": venue_of[s],
                    "pa": p8(acct.position(s).amt),
                    "ep": p8(acct.position(s).entry),
                    "bep": p8(acct.position(s).entry),
                    "cr": "0",
                    "up": "0",
                    "mt": "cross",
                    "iw": "0",
                    "ps": "BOTH",
                }
                for s in symbols
            ],
        },
    }


def margin_call(
    acct: FuturesAccount, ledger: Ledger, marks: dict[str, Decimal], venue_of: dict[str, str]
) -> dict[str, Any]:
    return {
        "e": "MARGIN_CALL",
        "E": now_ms(),
        "cw": p8(acct.wallet),
        "p": [
            {
                "s": venue_of[s],
                "ps": "BOTH",
                "pa": p8(p.amt),
                "mt": "CROSSED",
                "iw": "0",
                "mp": p8(marks[s]),
                "up": p8(p.unrealized(marks[s])),
                "mm": p8(abs(p.amt) * marks[s] * ledger.maint_ratio),
            }
            for s, p in acct.positions.items()
            if p.amt and s in marks
        ],
    }


def position_row(
    symbol: str, venue_symbol: str, acct: FuturesAccount, ledger: Ledger, mark: Decimal
) -> dict[str, Any]:
    """One ``positionRisk`` row, v2 and v3 keys together."""
    p = acct.position(symbol)
    notional = p.amt * mark
    return {
        "symbol": venue_symbol,
        "positionSide": "BOTH",
        "positionAmt": p8(p.amt),
        "entryPrice": p8(p.entry),
        "breakEvenPrice": p8(p.entry),
        "markPrice": p8(mark),
        "unRealizedProfit": p8(p.unrealized(mark)),
        "liquidationPrice": "0",
        "isolatedMargin": "0",
        "notional": p8(notional),
        "marginAsset": acct.asset,
        "isolatedWallet": "0",
        "initialMargin": p8(abs(notional) / p.leverage),
        "maintMargin": p8(abs(notional) * ledger.maint_ratio),
        "positionInitialMargin": p8(abs(notional) / p.leverage),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "leverage": str(p.leverage),
        "marginType": "cross",
        "isAutoAddMargin": "false",
        "maxNotionalValue": "50000000",
        "updateTime": now_ms(),
    }


def account_json(
    acct: FuturesAccount, ledger: Ledger, marks: dict[str, Decimal], venue_of: dict[str, str]
) -> dict[str, Any]:
    """``GET /fapi/v2|v3/account`` (both carry the totals ccxt reads)."""
    up = ledger.equity(acct, marks) - acct.wallet
    im, mm = ledger.initial(acct, marks), ledger.maintenance(acct, marks)
    equity = acct.wallet + up
    totals = {
        "totalInitialMargin": p8(im),
        "totalMaintMargin": p8(mm),
        "totalWalletBalance": p8(acct.wallet),
        "totalUnrealizedProfit": p8(up),
        "totalMarginBalance": p8(equity),
        "totalPositionInitialMargin": p8(im),
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": p8(acct.wallet),
        "totalCrossUnPnl": p8(up),
        "availableBalance": p8(max(D0, equity - im)),
        "maxWithdrawAmount": p8(max(D0, equity - im)),
    }
    asset = {
        "asset": acct.asset,
        "walletBalance": p8(acct.wallet),
        "unrealizedProfit": p8(up),
        "marginBalance": p8(equity),
        "maintMargin": p8(mm),
        "initialMargin": p8(im),
        "positionInitialMargin": p8(im),
        "openOrderInitialMargin": "0",
        "crossWalletBalance": p8(acct.wallet),
        "crossUnPnl": p8(up),
        "availableBalance": p8(max(D0, equity - im)),
        "maxWithdrawAmount": p8(max(D0, equity - im)),
        "marginAvailable": True,
        "updateTime": now_ms(),
    }
    positions = [
        {
            "symbol": venue_of[s],
            "positionSide": "BOTH",
            "positionAmt": p8(p.amt),
            "unrealizedProfit": p8(p.unrealized(marks.get(s, p.entry))),
            "isolatedMargin": "0",
            "notional": p8(p.amt * marks.get(s, p.entry)),
            "isolatedWallet": "0",
            "initialMargin": "0",
            "maintMargin": "0",
            "leverage": str(p.leverage),
            "entryPrice": p8(p.entry),
            "isolated": False,
            "updateTime": now_ms(),
        }
        for s, p in acct.positions.items()
    ]
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        **totals,
        "assets": [asset],
        "positions": positions,
    }


def income_json(row: Income, venue_of: dict[str, str]) -> dict[str, Any]:
    return {
        "symbol": venue_of.get(row.symbol, ""),
        "incomeType": row.kind,
        "income": p8(row.amount),
        "asset": row.asset,
        "info": row.kind,
        "time": row.time_ms,
        "tranId": row.tran_id,
        "tradeId": "",
    }
