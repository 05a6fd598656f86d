"""Kraken's wire shapes for the local Kraken server: names, ids, signatures, JSON bodies.

Kraken names things three ways (``XXBTZUSD`` pair id, ``XBTUSD`` altname, ``BTC/USD`` on the
v2 websockets) and ids orders ``OXXXXX-XXXXX-XXXXXX``; ccxt 4.5.90 reads every one of them, so
the server must write them all. Amounts are Decimal throughout; a price or a quantity goes on
the wire with its pair's fixed decimals, which is also what the v2 book checksum is computed
over (``book_checksum``, Kraken's documented CRC32 of the top 10 asks then the top 10 bids).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
import zlib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.venues.core import D0, Fill, Order, SymbolSpec, fmt

# Kraken's asset ids for the codes ccxt uses (X/Z prefixes are Kraken's legacy naming)
ASSET_IDS = {"BTC": "XXBT", "ETH": "XETH", "USD": "ZUSD", "EUR": "ZEUR", "USDT": "USDT"}
# asset id -> (altname, decimals, display_decimals)
ASSETS = {
    "XXBT": ("XBT", 10, 5),
    "XETH": ("ETH", 10, 5),
    "ZUSD": ("USD", 4, 2),
    "ZEUR": ("EUR", 4, 2),
    "USDT": ("USDT", 8, 4),
}
MAKER_FEE = Decimal("0.0016")  # Kraken's first volume tier (what AssetPairs and TradeVolume say)
TAKER_FEE = Decimal("0.0026")


def asset_id(code: str) -> str:
    return ASSET_IDS.get(code, code)


def decimals_of(step: str) -> int:
    exp = Decimal(step).normalize().as_tuple().exponent
    return max(-int(exp), 0)


@dataclass(frozen=True)
class KrakenPair:
    """One Kraken spot pair: the neutral spec plus Kraken's three names for it."""

    spec: SymbolSpec  # symbol = ccxt unified = v2 ws symbol; venue_symbol = REST pair id
    altname: str  # "XBTUSD": what ``descr.pair`` and order descriptions say
    wsname: str  # "XBT/USD": AssetPairs' v1 websocket name

    @property
    def pair_id(self) -> str:
        return self.spec.venue_symbol

    @property
    def price_decimals(self) -> int:
        return decimals_of(self.spec.tick)

    @property
    def lot_decimals(self) -> int:
        return decimals_of(self.spec.lot)

    def px(self, x: Decimal | None) -> str:
        return fmt(x if x is not None else D0, self.price_decimals)

    def qty(self, x: Decimal) -> str:
        return fmt(x, self.lot_decimals)

    def quote_decimals(self) -> int:
        return ASSETS.get(asset_id(self.spec.quote), ("", 8, 8))[1]

    def fee_of(self, notional: Decimal, maker: bool) -> Decimal:
        """Kraken's fee on ``notional``, in the quote asset, rounded to the asset's decimals."""
        rate = MAKER_FEE if maker else TAKER_FEE
        step = Decimal(1).scaleb(-self.quote_decimals())
        return (notional * rate).quantize(step, rounding=ROUND_HALF_UP)


def _pair(symbol: str, pid: str, alt: str, ws: str, tick: str, ordermin: str) -> KrakenPair:
    base, quote = symbol.split("/")
    spec = SymbolSpec(
        symbol=symbol,
        venue_symbol=pid,
        base=base,
        quote=quote,
        tick=tick,
        lot="0.00000001",
        min_notional="0.5",
        status="TRADING",
        min_qty=ordermin,
    )
    return KrakenPair(spec, alt, ws)


DEFAULT_PAIRS = (
    _pair("BTC/USD", "XXBTZUSD", "XBTUSD", "XBT/USD", "0.1", "0.0001"),
    _pair("ETH/USD", "XETHZUSD", "ETHUSD", "ETH/USD", "0.01", "0.002"),
    _pair("BTC/USDT", "XBTUSDT", "XBTUSDT", "XBT/USDT", "0.1", "0.0001"),
)


# ---------------------------------------------------------------------------------------------
# authentication: API-Sign = base64(HMAC-SHA512(path + SHA256(nonce + body), b64decode(secret)))


def api_sign(path: str, nonce: str, body: str, secret_b64: str) -> str:
    digest = hashlib.sha256((nonce + body).encode()).digest()
    mac = hmac.new(base64.b64decode(secret_b64), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def new_test_key(rng: random.Random | None = None) -> tuple[str, str]:
    """A made-up (api_key, base64 secret) pair for one test run."""
    r = rng or random.SystemRandom()
    key = base64.b64encode(bytes(r.getrandbits(8) for _ in range(42))).decode()
    secret = base64.b64encode(bytes(r.getrandbits(8) for _ in range(64))).decode()
    return key, secret


# ---------------------------------------------------------------------------------------------
# ids

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class IdMaker:
    """Kraken-looking ids (``O``/``T`` + 5-5-6), unique per server, seeded for repeatability."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._seen: set[str] = set()

    def make(self, prefix: str) -> str:
        while True:
            s = "".join(self._rng.choice(_ALPHABET) for _ in range(16))
            out = f"{prefix}{s[:5]}-{s[5:10]}-{s[10:]}"
            if out not in self._seen:
                self._seen.add(out)
                return out


# ---------------------------------------------------------------------------------------------
# REST bodies


def ok(result: Any) -> dict[str, Any]:
    return {"error": [], "result": result}


def err(*errors: str) -> dict[str, Any]:
    return {"error": list(errors), "result": {}}


def ts_s(ms: int) -> float:
    return round(ms / 1000, 4)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"


def describe(pair: KrakenPair, order: Order) -> str:
    """Kraken's one-line order description (ccxt parses a new order from it)."""
    head = f"{order.side} {pair.qty(order.amount)} {pair.altname} @ "
    return head + (f"limit {pair.px(order.price)}" if order.type == "limit" else "market")


def oflags(order: Order) -> str:
    flags = ["fciq"]  # fees are charged in the quote asset (Kraken's usual default)
    if order.post_only:
        flags.append("post")
    return ",".join(flags)


def order_info(pair: KrakenPair, order: Order, trades: list[str] | None = None) -> dict[str, Any]:
    """An order as OpenOrders / ClosedOrders / QueryOrders write it."""
    status = {"open": "open", "closed": "closed", "canceled": "canceled", "expired": "expired"}
    info: dict[str, Any] = {
        "refid": None,
        "userref": order.extra.get("userref"),
        "status": status.get(order.status, order.status),
        "opentm": ts_s(order.created_ms),
        "starttm": 0,
        "expiretm": 0,
        "descr": {
            "pair": pair.altname,
            "type": order.side,
            "ordertype": order.type,
            "price": pair.px(order.price) if order.type == "limit" else pair.px(D0),
            "price2": pair.px(D0),
            "leverage": "none",
            "order": describe(pair, order),
            "close": "",
        },
        "vol": pair.qty(order.amount),
        "vol_exec": pair.qty(order.filled),
        "cost": fmt(order.cost),
        "fee": fmt(order.fee),
        "price": pair.px(order.average) if order.filled else pair.px(D0),
        "stopprice": pair.px(D0),
        "limitprice": pair.px(D0),
        "misc": "",
        "oflags": oflags(order),
    }
    if order.client_id:
        info["cl_ord_id"] = order.client_id
    if order.status != "open":
        info["closetm"] = ts_s(order.updated_ms)
        info["reason"] = order.extra.get("reason")
    if trades is not None:
        info["trades"] = trades
    return info


def trade_info(pair: KrakenPair, fill: Fill, order_txid: str, trade_id: int) -> dict[str, Any]:
    """One of our fills as TradesHistory / QueryTrades write it (fee in the quote asset)."""
    order = fill.order
    return {
        "ordertxid": order_txid,
        "pair": pair.pair_id,
        "aclass": "currency",
        "time": ts_s(fill.ts_ms),
        "type": order.side,
        "ordertype": order.type,
        "price": pair.px(fill.price),
        "cost": fmt(fill.price * fill.qty),
        "fee": fmt(fill.fee),
        "vol": pair.qty(fill.qty),
        "margin": fmt(D0, pair.quote_decimals()),
        "leverage": "0",
        "misc": "",
        "trade_id": trade_id,
        "maker": fill.maker,
    }


# ---------------------------------------------------------------------------------------------
# the v2 book checksum and book messages (numbers written with the pair's fixed decimals)


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def book_checksum(
    pair: KrakenPair, asks: list[tuple[Decimal, Decimal]], bids: list[tuple[Decimal, Decimal]]
) -> int:
    """Kraken's CRC32 over the top 10 asks (low to high) then the top 10 bids (high to low):
    each price then each quantity as written on the wire, '.' removed, leading zeros removed."""
    parts = [_digits(pair.px(p)) + _digits(pair.qty(q)) for p, q in asks[:10]]
    parts += [_digits(pair.px(p)) + _digits(pair.qty(q)) for p, q in bids[:10]]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


def levels_json(pair: KrakenPair, levels: list[tuple[Decimal, Decimal]]) -> str:
    return "[" + ",".join(f'{{"price":{pair.px(p)},"qty":{pair.qty(q)}}}' for p, q in levels) + "]"
