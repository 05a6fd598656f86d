"""The local Kraken server's private REST methods (``POST /0/private/<Method>``).

Each takes the server, the authenticated account and the form parameters and returns Kraken's
``result`` object, or raises ``Refused`` with Kraken's error strings (the matcher's neutral
rejections are mapped in ``REJECTS``). Only what ccxt 4.5.90's ``kraken`` sends is served.
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from tests.venues.core import D0, Order, Reject, fmt
from tests.venues.kraken_wire import (
    MAKER_FEE,
    TAKER_FEE,
    KrakenPair,
    asset_id,
    describe,
    order_info,
    trade_info,
)

if TYPE_CHECKING:
    from tests.venues.kraken import KrakenServer

REJECTS = {
    "unknown_symbol": "EQuery:Unknown asset pair",
    "symbol_halted": "EService:Market in cancel_only mode",
    "filter_price": "EGeneral:Invalid arguments:price",
    "filter_lot": "EGeneral:Invalid arguments:volume",
    "min_notional": "EOrder:Cost minimum not met",
    "insufficient_balance": "EOrder:Insufficient funds",
    "duplicate_client_id": "EOrder:Duplicate order",
    "unknown_order": "EOrder:Unknown order",
    "bad_request": "EGeneral:Invalid arguments",
}
# cl_ord_id: a long or short UUID, or free text of up to 18 printable ASCII characters
_CL_ORD_ID = re.compile(
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18})$"
)
PAGE = 50  # ClosedOrders / TradesHistory page size
TOKEN_EXPIRES_S = 900


class Refused(Exception):
    """A request answered with Kraken's error list (HTTP 200, as Kraken does)."""

    def __init__(self, *errors: str) -> None:
        super().__init__(", ".join(errors))
        self.errors = errors


def refused(reject: Reject) -> Refused:
    return Refused(REJECTS.get(reject.kind, "EGeneral:Invalid arguments"))


def _dec(params: dict[str, str], name: str, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw in (None, ""):
        if required:
            raise Refused(f"EGeneral:Invalid arguments:{name}")
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise Refused(f"EGeneral:Invalid arguments:{name}") from None
    if not value.is_finite() or value <= 0:
        raise Refused(f"EGeneral:Invalid arguments:{name}")
    return value


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


def _userref(params: dict[str, str]) -> int | None:
    raw = params.get("userref")
    if raw in (None, ""):
        return None
    try:
        ref = int(raw)
    except ValueError:
        raise Refused("EGeneral:Invalid arguments:userref") from None
    if not -(2**31) <= ref < 2**31:
        raise Refused("EGeneral:Invalid arguments:userref")
    return ref


# ---------------------------------------------------------------------------------------------
# orders


def _new_order(srv: KrakenServer, account: str, p: dict[str, str]) -> tuple[KrakenPair, Order]:
    """An ``Order`` from AddOrder's parameters, checked the way Kraken checks them."""
    pair = srv.pair(p.get("pair"))
    side, kind = p.get("type"), p.get("ordertype")
    if side not in ("buy", "sell"):
        raise Refused("EGeneral:Invalid arguments:type")
    if kind not in ("limit", "market"):
        raise Refused("EGeneral:Invalid arguments:ordertype")
    flags = {f for f in p.get("oflags", "").split(",") if f}
    if flags - {"post", "fciq", "nompp", "viqc"}:
        raise Refused("EGeneral:Invalid arguments:oflags")
    tif = p.get("timeinforce", "GTC").upper()
    if tif not in ("GTC", "IOC"):
        raise Refused("EGeneral:Invalid arguments:timeinforce")
    client_id, userref = p.get("cl_ord_id", ""), _userref(p)
    if client_id and (userref is not None or not _CL_ORD_ID.match(client_id)):
        raise Refused("EGeneral:Invalid arguments:cl_ord_id")
    volume = _dec(p, "volume")
    price = _dec(p, "price") if kind == "limit" else None
    assert volume is not None
    quote_amount = None
    if "viqc" in flags:
        if kind != "market" or side != "buy":
            raise Refused("EGeneral:Invalid arguments:viqc")
        quote_amount, volume = volume, D0
    elif volume < pair.spec.min_qty_d:
        raise Refused("EOrder:Order minimum not met")
    order = Order(
        0, client_id, account, pair.spec, side, kind, volume, price, tif=tif,
        post_only="post" in flags, quote_amount=quote_amount,
    )  # fmt: skip
    if userref is not None:
        order.extra["userref"] = userref
    return pair, order


def _check_fee_funds(srv: KrakenServer, account: str, order: Order) -> None:
    """A buy must afford its cost plus the taker fee in the quote asset (fees come on top)."""
    if order.side != "buy":
        return
    book = srv.matcher.books[order.symbol]
    ref = order.price if order.price is not None else book.asks.best() or book.bids.best() or D0
    cost = order.quote_amount if order.quote_amount is not None else order.amount * ref
    free = srv.matcher.account(account).free.get(order.spec.quote, D0)
    if free < cost * (1 + TAKER_FEE):
        raise Refused("EOrder:Insufficient funds")


def add_order(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    pair, order = _new_order(srv, account, p)
    descr = {"order": describe(pair, order)}
    try:
        if _flag(p, "validate"):
            srv.matcher.validate(order)
            return {"descr": descr}
        _check_fee_funds(srv, account, order)
        srv.matcher.submit(account, order)
    except Reject as r:
        if r.kind != "post_only_would_take":
            raise refused(r) from None
        _post_only_cancelled(srv, order)
    return {"descr": descr, "txid": [srv.txid(order)]}


def _post_only_cancelled(srv: KrakenServer, order: Order) -> None:
    """Kraken accepts a post-only order that would take, then cancels it ("Post only order")."""
    order.extra["reason"] = "Post only order"
    srv.matcher._register(order)  # the matcher refuses it outright; Kraken records it first
    srv.on_order_event("new", order, None)
    order.status = "canceled"
    srv.on_order_event("canceled", order, None)


def _target(srv: KrakenServer, account: str, p: dict[str, str], id_key: str = "txid") -> Order:
    if p.get("cl_ord_id"):
        try:
            return srv.matcher.find(account, client_id=p["cl_ord_id"])
        except Reject:
            raise Refused("EOrder:Unknown order") from None
    return srv.order_by_txid(account, p.get(id_key, ""))


def amend_order(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    """In place: same txid; a size cut keeps queue priority; at/below filled cancels the rest."""
    order = _target(srv, account, p)
    if not order.is_open:
        raise Refused("EOrder:Unknown order")
    qty, price = _dec(p, "order_qty", False), _dec(p, "limit_price", False)
    if price is not None and order.type != "limit":
        raise Refused("EGeneral:Invalid arguments:limit_price")
    post_only = order.post_only or _flag(p, "post_only")
    book = srv.matcher.books[order.symbol]
    if (
        post_only
        and price is not None
        and book.opposite(order.side).crosses(price, order.side == "buy")
    ):
        raise Refused("EOrder:Post only order")
    try:
        if qty is not None and qty <= order.filled:
            srv.matcher.cancel(account, order.order_id)
        else:
            srv.matcher.amend(account, order.order_id, price=price, amount=qty)
    except Reject as r:
        raise refused(r) from None
    return {"amend_id": srv.ids.make("T")}


def cancel_order(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    """By txid, by cl_ord_id, or by userref (``txid`` holding an integer: all its orders)."""
    raw = p.get("txid", "")
    if not p.get("cl_ord_id") and raw.lstrip("-").isdigit():
        ref = int(raw)
        orders = [o for o in srv.matcher.open_orders(account) if o.extra.get("userref") == ref]
    else:
        orders = [_target(srv, account, p)]
    if not orders or not all(o.is_open for o in orders):
        raise Refused("EOrder:Unknown order")
    for order in orders:
        srv.matcher.cancel(account, order.order_id)
    return {"count": len(orders)}


def cancel_all(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    return {"count": len(srv.matcher.cancel_all(account))}


# ---------------------------------------------------------------------------------------------
# queries


def _mine(srv: KrakenServer, account: str, p: dict[str, str]) -> list[Order]:
    ref, client_id = _userref(p), p.get("cl_ord_id")
    return [
        o
        for o in srv.matcher.orders.values()
        if o.account == account
        and (ref is None or o.extra.get("userref") == ref)
        and (not client_id or o.client_id == client_id)
    ]


def _info(srv: KrakenServer, order: Order, p: dict[str, str]) -> dict[str, Any]:
    trades = [srv.trade_txid(f) for f in order.fills] if _flag(p, "trades") else None
    return order_info(srv.pairs[order.symbol], order, trades)


def open_orders(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    mine = [o for o in _mine(srv, account, p) if o.is_open]
    return {"open": {srv.txid(o): _info(srv, o, p) for o in mine}}


def closed_orders(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    start, end = float(p.get("start") or 0), float(p.get("end") or 1e12)
    done = [
        o for o in _mine(srv, account, p) if not o.is_open and start < o.updated_ms / 1000 <= end
    ]
    done.sort(key=lambda o: o.updated_ms, reverse=True)
    ofs = int(p.get("ofs") or 0)
    page = done[ofs : ofs + PAGE]
    return {"closed": {srv.txid(o): _info(srv, o, p) for o in page}, "count": len(done)}


def query_orders(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    txids = [t for t in p.get("txid", "").split(",") if t]
    if not txids:
        raise Refused("EGeneral:Invalid arguments:txid")
    out = {}
    for txid in txids:
        try:
            order = srv.order_by_txid(account, txid)
        except Refused:
            raise Refused("EOrder:Invalid order") from None
        out[txid] = _info(srv, order, p)
    return out


def trades_history(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    start, end = float(p.get("start") or 0), float(p.get("end") or 1e12)
    fills = [f for f in srv.matcher.account_trades(account) if start < f.ts_ms / 1000 <= end]
    fills.reverse()
    ofs = int(p.get("ofs") or 0)
    page = fills[ofs : ofs + PAGE]
    trades = {
        srv.trade_txid(f): trade_info(srv.pairs[f.order.symbol], f, srv.txid(f.order), f.trade_id)
        for f in page
    }
    return {"trades": trades, "count": len(fills)}


def query_trades(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    wanted = set(p.get("txid", "").split(","))
    return {
        srv.trade_txid(f): trade_info(srv.pairs[f.order.symbol], f, srv.txid(f.order), f.trade_id)
        for f in srv.matcher.account_trades(account)
        if srv.trade_txid(f) in wanted
    }


def balance(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    acct = srv.matcher.account(account)
    return {asset_id(a): fmt(acct.total(a), 8) for a in acct.assets()}


def balance_ex(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    acct = srv.matcher.account(account)
    return {
        asset_id(a): {
            "balance": fmt(acct.total(a), 8),
            "hold_trade": fmt(acct.locked.get(a, D0), 8),
        }
        for a in acct.assets()
    }


def trade_volume(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"currency": "ZUSD", "volume": "0.0000"}
    if p.get("pair"):
        pairs = [srv.pair(n) for n in p["pair"].split(",")]

        def tier(rate: Decimal) -> dict[str, str]:
            pct = fmt(rate * 100, 4)
            return {"fee": pct, "minfee": "0.1000", "maxfee": pct, "nextfee": "0.2400",
                    "nextvolume": "50000.0000", "tiervolume": "0.0000"}  # fmt: skip

        out["fees"] = {x.pair_id: tier(TAKER_FEE) for x in pairs}
        out["fees_maker"] = {x.pair_id: tier(MAKER_FEE) for x in pairs}
    return out


def websockets_token(srv: KrakenServer, account: str, p: dict[str, str]) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    srv.tokens[token] = account
    return {"token": token, "expires": TOKEN_EXPIRES_S}


def withdraw_methods(srv: KrakenServer, account: str, p: dict[str, str]) -> list[Any]:
    """Only for a key with withdraw permission (checked in ``KrakenServer._private``)."""
    return [{"asset": "XXBT", "method": "Bitcoin", "network": "Bitcoin", "minimum": "0.0004"}]


PRIVATE = {
    "AddOrder": add_order,
    "AmendOrder": amend_order,
    "CancelOrder": cancel_order,
    "CancelAll": cancel_all,
    "OpenOrders": open_orders,
    "ClosedOrders": closed_orders,
    "QueryOrders": query_orders,
    "TradesHistory": trades_history,
    "QueryTrades": query_trades,
    "Balance": balance,
    "BalanceEx": balance_ex,
    "TradeVolume": trade_volume,
    "GetWebSocketsToken": websockets_token,
    "WithdrawMethods": withdraw_methods,
}
