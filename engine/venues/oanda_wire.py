"""OANDA v20's JSON, read and written: instruments, prices, order requests, transactions.

Why one module: the v20 REST API and its two streams speak one vocabulary (decimals as strings,
RFC3339 times with nanoseconds, instruments spelled ``EUR_USD``, signed ``units``), and every
conversion to the engine's integers happens here, once, exactly (``Decimal``, never a float
compared for equality). Pure functions: no I/O, no clock (``engine.venues.oanda_http`` talks,
``oanda_data`` / ``oanda_exec`` decide). The contract (which fields, which transaction types)
is docs/oanda.md's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from engine.instruments import Instrument
from engine.messages import BookSnapshot, NewOrder, OrderType, Quote, Side, TimeInForce
from engine.venues.ccxt_markets import VenueMarket, venue_price

__all__ = [
    "book_of",
    "client_id",
    "coid_of",
    "engine_symbol",
    "market_of",
    "order_body",
    "rfc3339_ns",
    "venue_symbol",
]

#: what the engine's times in force are at OANDA (FOK for a market order is v20's default)
_TIF = {
    int(TimeInForce.GTC): "GTC",
    int(TimeInForce.IOC): "IOC",
    int(TimeInForce.FOK): "FOK",
    int(TimeInForce.GTD): "GTD",
    int(TimeInForce.DAY): "GFD",
}
#: the order types v20 takes as they are (the others: exec emulates them, or they are refused)
ORDER_TYPES = {int(OrderType.MARKET): "MARKET", int(OrderType.LIMIT): "LIMIT"}
ORDER_TYPES |= {int(OrderType.STOP): "STOP", int(OrderType.MARKET_IF_TOUCHED): "MARKET_IF_TOUCHED"}


def venue_symbol(symbol: str) -> str:
    """``EUR_USD`` for the engine's ``EUR/USD`` (a name ``@venue`` suffix dropped)."""
    return symbol.partition("@")[0].replace("/", "_")


def engine_symbol(name: str) -> str:
    """``EUR/USD`` for OANDA's ``EUR_USD``."""
    return name.replace("_", "/", 1)


def rfc3339_ns(text: str) -> int:
    """``2026-12-07T21:00:00.123456789Z`` as ns since the epoch (all nine digits kept; a
    ``UNIX`` formatted ``"1670446800.123456789"`` is taken too)."""
    s = str(text).strip()
    if s and s[0].isdigit() and "T" not in s:
        whole, _, frac = s.partition(".")
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    head, dot, rest = s.partition(".")
    frac, tz = "", ""
    if dot:
        i = next((k for k, c in enumerate(rest) if not c.isdigit()), len(rest))
        frac, tz = rest[:i], rest[i:]
    else:
        i = max(head.rfind("+"), head.rfind("-"))
        if i > 10:  # a zone after the time, not the date's dashes
            head, tz = head[:i], head[i:]
    base = dt.datetime.fromisoformat(head + (tz or "+00:00"))
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def rfc3339(ns: int) -> str:
    """ns since the epoch as v20 writes a time (UTC, nine fraction digits)."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    when = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{when}.{frac:09d}Z"


def _step(exp: int) -> str:
    """``10**exp`` as a plain decimal ("0.00001", "1")."""
    return format(Decimal(1).scaleb(exp).normalize(), "f")


def market_of(ins: Mapping[str, Any]) -> VenueMarket:
    """An instrument of ``GET /v3/accounts/{id}/instruments`` as a ``VenueMarket``: tick =
    10^-displayPrecision, lot = 10^-tradeUnitsPrecision, pip = 10^pipLocation, the margin rate
    as ``initial_margin``, the annual financing rates as ``financing_long_rate`` / ``_short_``;
    a CFD or metal is ``kind`` "fx" too only where it is a currency pair (type CURRENCY)."""
    name = str(ins["name"])
    base, _, quote = name.partition("_")
    fin = ins.get("financing") or {}
    margin = Decimal(str(ins.get("marginRate") or "0"))
    extra: dict[str, Any] = {}
    if ins.get("type", "CURRENCY") == "CURRENCY":
        extra = {
            "kind": "fx",
            "pip_size": float(Decimal(1).scaleb(int(ins.get("pipLocation", -4)))),
            "base_currency": base,
            "initial_margin": float(margin),
            "maintenance_margin": float(margin / 2),  # v20's margin closeout at half the margin
            "financing_long_rate": float(Decimal(str(fin.get("longRate") or "0"))),
            "financing_short_rate": float(Decimal(str(fin.get("shortRate") or "0"))),
        }
    return VenueMarket(
        symbol=engine_symbol(name),
        venue_symbol=name,
        base=base,
        quote=quote,
        tick=_step(-int(ins.get("displayPrecision", 5))),
        lot=_step(-int(ins.get("tradeUnitsPrecision", 0))),
        min_qty=str(ins.get("minimumTradeSize") or "0"),
        max_qty=str(ins.get("maximumOrderUnits") or "0"),
        asset_class="fx" if extra else "cfd",
        instrument=extra,
    )


def book_of(ins: Instrument, price: Mapping[str, Any], ts_recv: int) -> tuple[Any, ...]:
    """A ``PRICE`` (stream or ``GET .../pricing``) as (BookSnapshot, Quote) — OANDA quotes its
    whole depth every time, so each price is a snapshot; () when one side is empty or the
    instrument is not tradeable (a halted market publishes no book to trade against)."""
    bids, asks = price.get("bids") or [], price.get("asks") or []
    if not bids or not asks or price.get("tradeable") is False:
        return ()
    bp = [ins.px_to_ticks(str(b["price"])) for b in bids]
    bq = [ins.qty_to_lots(str(b.get("liquidity", 0))) for b in bids]
    ap = [ins.px_to_ticks(str(a["price"])) for a in asks]
    aq = [ins.qty_to_lots(str(a.get("liquidity", 0))) for a in asks]
    ts = rfc3339_ns(str(price["time"]))
    iid = ins.instrument_id
    snap = BookSnapshot(iid, bp, bq, ap, aq, ts, ts_recv)
    return snap, Quote(iid, bp[0], bq[0], ap[0], aq[0], ts, ts_recv)


# --- our client order ids ---------------------------------------------------------------------
def client_id(prefix: str, coid: int) -> str:
    """The ``clientExtensions.id`` of our order ``coid`` (v20: at most 128 characters, and an
    order can be addressed as ``@<id>``)."""
    return f"{prefix}{coid}"


def coid_of(prefix: str, cid: object) -> int | None:
    """Our client order id back from a ``clientExtensions.id`` / ``clientOrderID``; None for
    an order not ours (another prefix, placed by hand)."""
    s = str(cid or "")
    if not s.startswith(prefix):
        return None
    rest = s[len(prefix) :]
    return int(rest) if rest.isdigit() else None


def _units(ins: Instrument, side: int, lots: int) -> str:
    d = Decimal(lots) * Decimal(str(ins.lot_size))
    return format((d if side == Side.BUY else -d).normalize(), "f")


def order_body(
    ins: Instrument,
    o: NewOrder,
    cid: str,
    take_profit: tuple[int, str] | None = None,
    stop_loss: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """The ``order`` of ``POST /v3/accounts/{id}/orders`` for ``o`` (``ORDER_TYPES`` only);
    ``take_profit`` / ``stop_loss``: (price ticks, client id) of a bracket's children, sent as
    ``takeProfitOnFill`` / ``stopLossOnFill`` (OANDA opens them when the entry fills, linked to
    the trade: one closing it cancels the other)."""
    kind = ORDER_TYPES[o.order_type]
    body: dict[str, Any] = {
        "type": kind,
        "instrument": venue_symbol(ins.symbol),
        "units": _units(ins, o.side, o.qty),
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": cid, "tag": "gekko"},
    }
    if kind == "MARKET":
        body["timeInForce"] = "IOC" if o.tif == TimeInForce.IOC else "FOK"
    else:
        trigger = o.px if kind == "LIMIT" or not o.stop_px else o.stop_px
        body["price"] = venue_price(ins, trigger)
        body["timeInForce"] = _TIF.get(o.tif, "GTC")
        if kind == "STOP" and o.px and o.stop_px:  # a stop-limit: fill no worse than px
            body["priceBound"] = venue_price(ins, o.px)
        if body["timeInForce"] == "GTD":
            body["gtdTime"] = rfc3339(o.expire_ns)
    for key, leg in (("takeProfitOnFill", take_profit), ("stopLossOnFill", stop_loss)):
        if leg is not None:
            body[key] = {
                "price": venue_price(ins, leg[0]),
                "timeInForce": "GTC",
                "clientExtensions": {"id": leg[1], "tag": "gekko"},
            }
    return body


def refusal(o: NewOrder) -> str:
    """Why v20 cannot take ``o`` as it is ("" if it can)."""
    if o.order_type not in ORDER_TYPES:
        return f"order type {OrderType(o.order_type).name} is not one v20 takes"
    if o.tif not in _TIF:
        return f"time in force {TimeInForce(o.tif).name} is not one v20 takes"
    # GTC on a market order is taken as v20's FOK
    if o.order_type == OrderType.MARKET and o.tif not in (TimeInForce.IOC, TimeInForce.FOK, 1):
        return "a market order is FOK or IOC at OANDA"
    if o.qty <= 0:
        return f"qty must be > 0, got {o.qty}"
    return ""
