"""The OANDA v20 account model of the local server: prices, orders, trades, positions,
transactions, financing. No HTTP here (tests/venues/oanda.py serves it).

OANDA is a market maker, not an order book: a MARKET order fills at once at the ask (buy) or
the bid (sell); a LIMIT buy fills when the ask reaches its price or better, a STOP buy when the
ask reaches or passes it (sells mirror on the bid); TAKE_PROFIT / STOP_LOSS orders belong to a
trade and close it. Positions net FIFO (positionFill DEFAULT on a netting account): a fill
first reduces the oldest opposite trades, the rest opens a trade. Every change is a
transaction with the next id, as v20 numbers them; ``listeners`` hear each one.

Financing at the daily rollover (17:00 New York): per open trade, units x mid x annual rate /
365 x days (3 on Wednesday's rollover, else 1), in the quote currency, converted to the
account's currency; one DAILY_FINANCING transaction with ``positionFinancings`` per instrument.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

D = Decimal
NY = ZoneInfo("America/New_York")


def now_rfc3339(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    when = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{when}.{frac:09d}Z"


def fmt(d: Decimal, places: int | None = None) -> str:
    if places is not None:
        d = d.quantize(D(1).scaleb(-places))
    return format(d.normalize() if places is None else d, "f")


@dataclass(frozen=True)
class Spec:
    """One instrument as ``GET /instruments`` lists it."""

    name: str = "EUR_USD"
    display_precision: int = 5
    pip_location: int = -4
    units_precision: int = 0
    min_size: str = "1"
    max_units: str = "100000000"
    margin_rate: str = "0.0333"
    long_rate: str = "-0.0325"
    short_rate: str = "0.0102"
    bid: str = "1.08000"
    ask: str = "1.08012"

    def json(self) -> dict[str, Any]:
        base, _, quote = self.name.partition("_")
        return {
            "name": self.name,
            "type": "CURRENCY",
            "displayName": f"{base}/{quote}",
            "pipLocation": self.pip_location,
            "displayPrecision": self.display_precision,
            "tradeUnitsPrecision": self.units_precision,
            "minimumTradeSize": self.min_size,
            "maximumTrailingStopDistance": "1.00000",
            "minimumTrailingStopDistance": "0.00050",
            "maximumPositionSize": "0",
            "maximumOrderUnits": self.max_units,
            "marginRate": self.margin_rate,
            "guaranteedStopLossOrderMode": "DISABLED",
            "financing": {
                "longRate": self.long_rate,
                "shortRate": self.short_rate,
                "financingDaysOfWeek": [
                    {"dayOfWeek": d, "daysCharged": 3 if d == "WEDNESDAY" else 1}
                    for d in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
                ],
            },
        }


DEFAULT_SPECS = (
    Spec(),
    Spec("USD_JPY", 3, -2, 0, "1", "100000000", "0.04", "0.0450", "-0.0650", "150.000", "150.012"),
)


@dataclass
class VOrder:
    id: int
    type: str  # MARKET LIMIT STOP MARKET_IF_TOUCHED TAKE_PROFIT STOP_LOSS
    instrument: str
    units: Decimal  # signed
    price: Decimal | None
    tif: str
    cid: str
    state: str = "PENDING"  # PENDING FILLED CANCELLED TRIGGERED
    trade_id: int = 0  # TAKE_PROFIT / STOP_LOSS: the trade they close
    tp: dict[str, Any] | None = None
    sl: dict[str, Any] | None = None
    price_bound: Decimal | None = None
    create_time: str = ""
    filling_tx: int = 0
    cancel_tx: int = 0
    replaces: int = 0

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(self.id),
            "createTime": self.create_time,
            "type": self.type,
            "state": self.state,
            "timeInForce": self.tif,
        }
        if self.trade_id:
            out["tradeID"] = str(self.trade_id)
        else:
            out |= {"instrument": self.instrument, "units": fmt(self.units)}
            out["positionFill"] = "DEFAULT"
        if self.price is not None:
            out["price"] = fmt(self.price)
        if self.cid:
            out["clientExtensions"] = {"id": self.cid, "tag": "gekko"}
        for key, leg in (("takeProfitOnFill", self.tp), ("stopLossOnFill", self.sl)):
            if leg:
                out[key] = leg
        if self.replaces:
            out["replacesOrderID"] = str(self.replaces)
        if self.filling_tx:
            out["fillingTransactionID"] = str(self.filling_tx)
        if self.cancel_tx:
            out["cancellingTransactionID"] = str(self.cancel_tx)
        return out


@dataclass
class VTrade:
    id: int
    instrument: str
    price: Decimal
    initial: Decimal  # signed units
    current: Decimal
    open_time: str
    realized: Decimal = D(0)
    financing: Decimal = D(0)
    tp_id: int = 0
    sl_id: int = 0

    def json(self) -> dict[str, Any]:
        out = {
            "id": str(self.id),
            "instrument": self.instrument,
            "price": fmt(self.price),
            "openTime": self.open_time,
            "initialUnits": fmt(self.initial),
            "currentUnits": fmt(self.current),
            "state": "OPEN" if self.current else "CLOSED",
            "realizedPL": fmt(self.realized, 4),
            "financing": fmt(self.financing, 4),
        }
        if self.tp_id:
            out["takeProfitOrderID"] = str(self.tp_id)
        if self.sl_id:
            out["stopLossOrderID"] = str(self.sl_id)
        return out


class Reject(Exception):
    """An order v20 refuses: ``status``, ``code``, and the reject transaction type."""

    def __init__(self, status: int, code: str, message: str, reject_type: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reject_type = status, code, message, reject_type


@dataclass
class Account:
    id: str
    token: str
    currency: str = "USD"
    balance: Decimal = D("100000")
    orders: dict[int, VOrder] = field(default_factory=dict)
    trades: dict[int, VTrade] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1


class V20Book:
    """Every account's orders, trades and transactions against the current prices."""

    def __init__(self, specs: tuple[Spec, ...] = DEFAULT_SPECS) -> None:
        self.specs = {s.name: s for s in specs}
        self.prices = {s.name: (D(s.bid), D(s.ask)) for s in specs}
        self.price_time = {s.name: now_rfc3339() for s in specs}
        self.tradeable = dict.fromkeys(self.specs, True)
        self.accounts: dict[str, Account] = {}
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []  # (account, tx)
        self.price_listeners: list[Callable[[str], None]] = []  # (instrument)

    # --- prices -----------------------------------------------------------------------------------
    def price_json(self, name: str) -> dict[str, Any]:
        bid, ask = self.prices[name]
        p = self.specs[name].display_precision
        return {
            "type": "PRICE",
            "instrument": name,
            "time": self.price_time[name],
            "status": "tradeable" if self.tradeable[name] else "non-tradeable",
            "tradeable": self.tradeable[name],
            "bids": [
                {"price": fmt(bid, p), "liquidity": 1_000_000},
                {"price": fmt(bid - D(1).scaleb(-p) * 2, p), "liquidity": 5_000_000},
            ],
            "asks": [
                {"price": fmt(ask, p), "liquidity": 1_000_000},
                {"price": fmt(ask + D(1).scaleb(-p) * 2, p), "liquidity": 5_000_000},
            ],
            "closeoutBid": fmt(bid, p),
            "closeoutAsk": fmt(ask, p),
        }

    def set_price(self, name: str, bid: Any, ask: Any) -> None:
        """New prices: pending orders that they reach fill, then the streams hear it."""
        self.prices[name] = (D(str(bid)), D(str(ask)))
        self.price_time[name] = now_rfc3339()
        for acct in self.accounts.values():
            self._trigger(acct, name)
        for f in list(self.price_listeners):
            f(name)

    def mid(self, name: str) -> Decimal:
        bid, ask = self.prices[name]
        return (bid + ask) / 2

    # --- accounts and transactions -----------------------------------------------------------------
    def account(self, account_id: str, token: str, balance: Any = "100000") -> Account:
        acct = self.accounts.get(account_id)
        if acct is None:
            acct = self.accounts[account_id] = Account(account_id, token, balance=D(str(balance)))
        return acct

    def _tx(self, acct: Account, kind: str, **fields: Any) -> dict[str, Any]:
        tx = {
            "id": str(acct.next_id),
            "time": now_rfc3339(),
            "accountID": acct.id,
            "batchID": str(fields.pop("batch", acct.next_id)),
            "type": kind,
        }
        tx |= fields
        acct.next_id += 1
        acct.transactions.append(tx)
        for f in list(self.listeners):
            f(acct.id, tx)
        return tx

    def last_id(self, acct: Account) -> str:
        return str(acct.next_id - 1)

    def find(self, acct: Account, spec: str) -> VOrder | None:
        if spec.startswith("@"):
            return next((o for o in acct.orders.values() if o.cid == spec[1:]), None)
        return acct.orders.get(int(spec)) if spec.isdigit() else None

    # --- orders ------------------------------------------------------------------------------------
    def create(self, acct: Account, body: dict[str, Any], replaces: int = 0) -> dict[str, Any]:
        """``POST /orders``: the answer's transactions (orderCreateTransaction, ...)."""
        kind = str(body.get("type") or "")
        name = str(body.get("instrument") or "")
        if kind not in ("MARKET", "LIMIT", "STOP", "MARKET_IF_TOUCHED"):
            raise Reject(400, "INVALID_ORDER_TYPE", f"order type {kind!r} is not supported here")
        if name not in self.specs:
            raise Reject(
                400, "INSTRUMENT_NOT_TRADEABLE", f"no instrument {name!r}", kind + "_REJECT"
            )
        spec = self.specs[name]
        units = D(str(body.get("units") or "0"))
        if units == 0 or abs(units) < D(spec.min_size):
            raise Reject(400, "UNITS_MINIMUM_NOT_MET", "units below the minimum", kind + "_REJECT")
        if units != units.quantize(D(1).scaleb(-spec.units_precision)):
            raise Reject(400, "UNITS_PRECISION_EXCEEDED", "too many decimals", kind + "_REJECT")
        cid = str((body.get("clientExtensions") or {}).get("id") or "")
        if cid and any(o.cid == cid and o.state == "PENDING" for o in acct.orders.values()):
            raise Reject(
                400, "CLIENT_ORDER_ID_ALREADY_EXISTS", "client id in use", kind + "_REJECT"
            )
        price = D(str(body["price"])) if body.get("price") is not None else None
        if kind != "MARKET" and price is None:
            raise Reject(400, "PRICE_MISSING", "a price is required", kind + "_REJECT")
        tif = str(body.get("timeInForce") or ("FOK" if kind == "MARKET" else "GTC"))
        o = VOrder(acct.next_id, kind, name, units, price, tif, cid, create_time=now_rfc3339())
        o.tp, o.sl = body.get("takeProfitOnFill"), body.get("stopLossOnFill")
        o.price_bound = D(str(body["priceBound"])) if body.get("priceBound") else None
        o.replaces = replaces
        acct.orders[o.id] = o
        out: dict[str, Any] = {
            "orderCreateTransaction": self._tx(acct, kind + "_ORDER", **_create_fields(o))
        }
        fill = self._try_fill(acct, o, taking=True)
        if fill is not None:
            out["orderFillTransaction"] = fill
        elif kind == "MARKET" or tif in ("IOC", "FOK"):
            out["orderCancelTransaction"] = self._cancel(
                acct,
                o,
                "MARKET_HALTED"
                if not self.tradeable[name]
                else "FOK_CANCELLED"
                if tif == "FOK"
                else "IOC_CANCELLED",
            )
        return out

    def cancel(self, acct: Account, spec: str, reason: str = "CLIENT_REQUEST") -> dict[str, Any]:
        o = self.find(acct, spec)
        if o is None or o.state != "PENDING":
            raise Reject(
                404,
                "ORDER_DOESNT_EXIST",
                "The Order specified does not exist",
                "ORDER_CANCEL_REJECT",
            )
        return self._cancel(acct, o, reason)

    def _cancel(self, acct: Account, o: VOrder, reason: str, **extra: Any) -> dict[str, Any]:
        o.state = "CANCELLED"
        tx = self._tx(acct, "ORDER_CANCEL", orderID=str(o.id), reason=reason, **extra)
        if o.cid:
            tx["clientOrderID"] = o.cid
        o.cancel_tx = int(tx["id"])
        return tx

    def replace(self, acct: Account, spec: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /orders/{spec}``: the old order cancelled (CLIENT_REQUEST_REPLACED), a new one
        created in its place (``replacesOrderID``)."""
        o = self.find(acct, spec)
        if o is None or o.state != "PENDING" or o.trade_id:
            raise Reject(
                404,
                "ORDER_DOESNT_EXIST",
                "The Order specified does not exist",
                "ORDER_CANCEL_REJECT",
            )
        if body.get("instrument") != o.instrument:
            raise Reject(400, "INSTRUMENT_MISMATCH", "a replacement trades the same instrument")
        cid = o.cid
        cancel = self._cancel(
            acct, o, "CLIENT_REQUEST_REPLACED", replacedByOrderID=str(acct.next_id + 1)
        )
        o.cid = ""  # the replacement takes the client id over
        body = {**body, "clientExtensions": body.get("clientExtensions") or {"id": cid}}
        out = self.create(acct, body, replaces=o.id)
        return {"orderCancelTransaction": cancel, **out}

    # --- matching ----------------------------------------------------------------------------------
    def _trigger(self, acct: Account, name: str) -> None:
        for o in list(acct.orders.values()):
            if o.state == "PENDING" and o.instrument == name:
                self._try_fill(acct, o, taking=False)

    def _reach(self, o: VOrder) -> Decimal | None:
        """The price ``o`` fills at now, or None."""
        if not self.tradeable[o.instrument]:
            return None
        bid, ask = self.prices[o.instrument]
        buy = o.units > 0
        px = ask if buy else bid
        if o.type == "MARKET":
            return px
        assert o.price is not None
        if o.type in ("LIMIT", "TAKE_PROFIT", "MARKET_IF_TOUCHED"):
            ok = px <= o.price if buy else px >= o.price
        else:  # STOP, STOP_LOSS
            ok = px >= o.price if buy else px <= o.price
            if ok and o.price_bound is not None:
                ok = px <= o.price_bound if buy else px >= o.price_bound
        return px if ok else None

    def _try_fill(self, acct: Account, o: VOrder, taking: bool) -> dict[str, Any] | None:
        px = self._reach(o)
        if px is None:
            return None
        return self._fill(acct, o, px)

    def _fill(self, acct: Account, o: VOrder, px: Decimal) -> dict[str, Any]:
        """Fill ``o`` whole at ``px``: close FIFO, open the rest, then TP/SL on fill."""
        name, units = o.instrument, o.units
        if o.trade_id:  # a TP/SL closes its trade's current units
            t = acct.trades[o.trade_id]
            units = -t.current
        closed, reduced, pl = [], None, D(0)
        left = units
        for t in sorted(acct.trades.values(), key=lambda t: t.id):
            if not left or t.instrument != name or not t.current or (t.current > 0) == (left > 0):
                continue
            take = min(abs(left), abs(t.current)) * (
                1 if t.current > 0 else -1
            )  # units of t closed
            gain = self._home(name, (px - t.price) * take)
            t.current -= take
            t.realized += gain
            pl += gain
            left += take
            rec = {
                "tradeID": str(t.id),
                "units": fmt(-take),
                "price": fmt(px),
                "realizedPL": fmt(gain, 4),
            }
            if t.current:
                reduced = rec
            else:
                closed.append(rec)
        acct.balance += pl
        fields: dict[str, Any] = {
            "orderID": str(o.id),
            "instrument": name,
            "units": fmt(units),
            "price": fmt(px),
            "fullVWAP": fmt(px),
            "reason": o.type + "_ORDER" if not o.trade_id else o.type + "_ORDER",
            "pl": fmt(pl, 4),
            "financing": "0.0000",
            "commission": "0.0000",
            "accountBalance": fmt(acct.balance, 4),
            "halfSpreadCost": "0.0000",
        }
        if o.cid:
            fields["clientOrderID"] = o.cid
        if closed:
            fields["tradesClosed"] = closed
        if reduced:
            fields["tradeReduced"] = reduced
        opened = None
        if left:
            opened = VTrade(acct.next_id, name, px, left, left, now_rfc3339())
            fields["tradeOpened"] = {
                "tradeID": str(opened.id),
                "units": fmt(left),
                "price": fmt(px),
            }
            acct.trades[opened.id] = opened
        o.state = "FILLED"
        tx = self._tx(acct, "ORDER_FILL", **fields)
        o.filling_tx = int(tx["id"])
        for rec in closed:  # a closed trade's TP / SL go with it
            t = acct.trades[int(rec["tradeID"])]
            for oid in (t.tp_id, t.sl_id):
                other = acct.orders.get(oid)
                if other is not None and other.state == "PENDING":
                    self._cancel(acct, other, "LINKED_TRADE_CLOSED", closedTradeID=str(t.id))
        if opened is not None:
            self._on_fill_orders(acct, o, opened)
        return tx

    def _on_fill_orders(self, acct: Account, o: VOrder, t: VTrade) -> None:
        for key, kind in (("tp", "TAKE_PROFIT"), ("sl", "STOP_LOSS")):
            leg = getattr(o, key)
            if not leg:
                continue
            cid = str((leg.get("clientExtensions") or {}).get("id") or "")
            child = VOrder(
                acct.next_id, kind, t.instrument, -t.current, D(str(leg["price"])), "GTC", cid
            )
            child.trade_id, child.create_time = t.id, now_rfc3339()
            acct.orders[child.id] = child
            self._tx(acct, kind + "_ORDER", **_create_fields(child), reason="ON_FILL")
            if kind == "TAKE_PROFIT":
                t.tp_id = child.id
            else:
                t.sl_id = child.id
        for oid in (t.tp_id, t.sl_id):  # already reached: fills at once
            child = acct.orders.get(oid)
            if child is not None and child.state == "PENDING" and t.current:
                self._try_fill(acct, child, taking=True)

    def _home(self, name: str, amount_quote: Decimal) -> Decimal:
        """An amount in ``name``'s quote currency in the account currency (USD): as is for
        xxx_USD, divided by the mid for USD_xxx."""
        base, _, quote = name.partition("_")
        if quote == "USD":
            return amount_quote
        if base == "USD":
            return amount_quote / self.mid(name)
        raise ValueError(f"no conversion for {name} to USD in the local server")

    # --- positions and financing -------------------------------------------------------------------
    def positions(self, acct: Account) -> list[dict[str, Any]]:
        out = []
        for name in self.specs:
            open_ = [t for t in acct.trades.values() if t.instrument == name and t.current]
            if not open_:
                continue
            longs = [t for t in open_ if t.current > 0]
            shorts = [t for t in open_ if t.current < 0]
            out.append({"instrument": name, "long": _side(longs), "short": _side(shorts)})
        return out

    def rollover(self, acct: Account, when_ns: int | None = None) -> dict[str, Any] | None:
        """The daily rollover: a DAILY_FINANCING for the open trades (None when there are none).
        ``when_ns`` says which day it is (Wednesday: three days)."""
        when_ns = time.time_ns() if when_ns is None else when_ns
        day = dt.datetime.fromtimestamp(when_ns / 1e9, NY)
        days = 3 if day.weekday() == 2 else 1
        per: dict[str, list[tuple[VTrade, Decimal]]] = {}
        for t in acct.trades.values():
            if not t.current:
                continue
            s = self.specs[t.instrument]
            rate = D(s.long_rate if t.current > 0 else s.short_rate)
            amount = self._home(
                t.instrument, abs(t.current) * self.mid(t.instrument) * rate / 365 * days
            )
            if t.instrument.startswith("USD_"):  # units are USD already: no price in between
                amount = abs(t.current) * rate / 365 * days
            t.financing += amount
            per.setdefault(t.instrument, []).append((t, amount))
        if not per:
            return None
        total = sum((a for xs in per.values() for _, a in xs), D(0))
        acct.balance += total
        pos = [
            {
                "instrument": name,
                "financing": fmt(sum((a for _, a in xs), D(0)), 4),
                "openTradeFinancings": [
                    {"tradeID": str(t.id), "financing": fmt(a, 4)} for t, a in xs
                ],
            }
            for name, xs in per.items()
        ]
        return self._tx(
            acct,
            "DAILY_FINANCING",
            time=now_rfc3339(when_ns),  # the rollover it pays for
            financing=fmt(total, 4),
            accountBalance=fmt(acct.balance, 4),
            accountFinancingMode="DAILY",
            positionFinancings=pos,
        )

    def summary(self, acct: Account) -> dict[str, Any]:
        pending = sum(1 for o in acct.orders.values() if o.state == "PENDING")
        open_trades = sum(1 for t in acct.trades.values() if t.current)
        return {
            "id": acct.id,
            "currency": acct.currency,
            "balance": fmt(acct.balance, 4),
            "openTradeCount": open_trades,
            "pendingOrderCount": pending,
            "lastTransactionID": self.last_id(acct),
            "hedgingEnabled": False,
        }


def _side(trades: list[VTrade]) -> dict[str, Any]:
    units = sum((t.current for t in trades), D(0))
    out: dict[str, Any] = {"units": fmt(units), "tradeIDs": [str(t.id) for t in trades]}
    if units:
        out["averagePrice"] = fmt(sum((t.price * t.current for t in trades), D(0)) / units)
    return out


def _create_fields(o: VOrder) -> dict[str, Any]:
    j = o.json()
    for k in ("id", "createTime", "state", "type"):
        j.pop(k, None)
    return j
