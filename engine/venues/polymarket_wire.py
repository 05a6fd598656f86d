"""Polymarket's CLOB on the wire: markets, the market channel, auth headers, signed orders.

Why one module: the client (engine/venues/polymarket_data.py, polymarket_exec.py) and the local
test server (tests/venues/polymarket.py) must agree byte for byte on what the venue signs and
sends, so both use these functions. Pure: no network, no clock (times come in).

- A market (a condition id) has two outcome tokens; each token is one of our instruments, kind
  "binary", ``market_id`` the condition id, ``outcome`` "Yes"/"No", tick the market's
  ``minimum_tick_size``, lot 0.01 share (the CLOB rounds sizes to two decimals), named
  ``<slug>-<OUTCOME>/USDC`` (``symbol_of``); its ``venue_symbol`` is the token id.
- Level 1 auth is an EIP-712 ``ClobAuth`` signature by the wallet key; level 2 an HMAC-SHA256
  over ``timestamp + method + path + body`` keyed by the API secret (base64url), both as
  ``POLY_*`` headers. Orders are EIP-712 ``Order`` structs of the CTF exchange, signed by the
  wallet; the order id is the typed-data hash, so we know it before the venue answers.
  py-clob-client's signer, order builder and header helpers do the signing; recovery (what the
  venue does) is ``clob_auth_signer`` / ``order_signer`` with eth-account.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from engine.enums import Side
from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Trade
from engine.venues.ccxt_markets import VenueMarket

__all__ = [
    "CHAIN_ID",
    "END_CURSOR",
    "LOT",
    "QUOTE",
    "book_snapshot",
    "clob_auth_signer",
    "l1_headers",
    "l2_headers",
    "order_hash",
    "order_signer",
    "parse_market",
    "price_change_deltas",
    "resolution_payouts",
    "sign_order",
    "symbol_of",
    "trade_of",
]

CHAIN_ID = 137  # Polygon mainnet: what the venue's signatures are bound to
END_CURSOR = "LTE="  # the cursor that says "no more pages"
LOT = "0.01"  # shares: two decimals
QUOTE = "USDC"
_SLUG_BAD = re.compile(r"[^A-Za-z0-9.\-]+")


# --- markets --------------------------------------------------------------------------------------
def symbol_of(slug: str, outcome: str) -> str:
    """Our name of one outcome token: ``<slug>-<OUTCOME>/USDC`` (a ccxt-shaped symbol)."""
    s = _SLUG_BAD.sub("-", slug).strip("-") or "market"
    o = _SLUG_BAD.sub("-", outcome).strip("-").upper() or "OUTCOME"
    return f"{s}-{o}/{QUOTE}"


def _iso_ns(v: object) -> int:
    if not isinstance(v, str) or not v:
        return 0
    try:
        return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return 0


def market_status(m: Mapping[str, Any]) -> str:
    """ "trading", or why not ("closed", "not accepting orders", "inactive")."""
    if m.get("closed"):
        return "closed"
    if not m.get("active", True):
        return "inactive"
    if not m.get("accepting_orders", True):
        return "not accepting orders"
    return "trading"


def parse_market(m: Mapping[str, Any]) -> dict[str, VenueMarket]:
    """A CLOB market (``GET /markets``) -> one ``VenueMarket`` per outcome token."""
    cid = str(m["condition_id"])
    slug = str(m.get("market_slug") or cid[:10])
    tick = str(Decimal(str(m.get("minimum_tick_size") or "0.01")).normalize())
    out: dict[str, VenueMarket] = {}
    for tok in m.get("tokens") or []:
        outcome = str(tok.get("outcome") or "")
        extra: dict[str, Any] = {"kind": "binary", "market_id": cid, "outcome": outcome}
        resolves = _iso_ns(m.get("end_date_iso"))
        if resolves > 0:
            extra["resolves_ns"] = resolves
        sym = symbol_of(slug, outcome)
        out[sym] = VenueMarket(
            symbol=sym,
            venue_symbol=str(tok["token_id"]),
            base=sym.partition("/")[0],
            quote=QUOTE,
            tick=tick,
            lot=LOT,
            min_qty=str(m.get("minimum_order_size") or LOT),
            status=market_status(m),
            maker_fee_bps=float(m.get("maker_base_fee") or 0),
            taker_fee_bps=float(m.get("taker_base_fee") or 0),
            asset_class="prediction",
            instrument=extra,
        )
    return out


def resolution_payouts(m: Mapping[str, Any]) -> dict[str, Decimal] | None:
    """Token id -> payout per share of a resolved market (1 / 0; a 50/50 resolution pays 0.5
    on both), or None while it is not resolved (open, or closed and awaiting its outcome)."""
    if not m.get("closed"):
        return None
    toks = m.get("tokens") or []
    if any(t.get("winner") for t in toks):
        return {str(t["token_id"]): Decimal(1 if t.get("winner") else 0) for t in toks}
    prices = [Decimal(str(t.get("price", "-1"))) for t in toks]
    if toks and all(p == Decimal("0.5") for p in prices):
        return {str(t["token_id"]): Decimal("0.5") for t in toks}
    return None


# --- the market channel ---------------------------------------------------------------------------
def _levels(ins: Instrument, levels: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    out = []
    for lv in levels:
        qty = _lots(ins, lv["size"])
        if qty > 0:
            out.append((ins.px_to_ticks(str(lv["price"])), qty))
    return out


def _lots(ins: Instrument, size: object) -> int:
    d = Decimal(str(size)) / Decimal(str(ins.lot_size))
    return int(d.to_integral_value(rounding=ROUND_DOWN))


def ts_ns(msg: Mapping[str, Any], default: int) -> int:
    """A message's ``timestamp`` (ms, as a string) in ns."""
    try:
        return int(msg["timestamp"]) * 1_000_000
    except (KeyError, TypeError, ValueError):
        return default


def book_snapshot(
    ins: Instrument, msg: Mapping[str, Any], seq: int, now_ns: int, depth: int = 0
) -> BookSnapshot:
    """A ``book`` message (levels in any order) as a snapshot, best first."""
    bids = sorted(_levels(ins, msg.get("bids") or []), reverse=True)
    asks = sorted(_levels(ins, msg.get("asks") or []))
    if depth:
        bids, asks = bids[:depth], asks[:depth]
    return BookSnapshot(
        ins.instrument_id,
        [p for p, _ in bids],
        [q for _, q in bids],
        [p for p, _ in asks],
        [q for _, q in asks],
        ts_ns(msg, now_ns),
        now_ns,
        seq,
    )


def price_change_deltas(
    by_token: Mapping[str, Instrument], msg: Mapping[str, Any], now_ns: int
) -> list[BookDelta]:
    """A ``price_change`` message's changes of our tokens, ``seq`` 0 (the caller numbers
    them). ``size`` is the new total at the price ("0" removes it)."""
    ts = ts_ns(msg, now_ns)
    out = []
    for ch in msg.get("price_changes") or []:
        ins = by_token.get(str(ch.get("asset_id")))
        if ins is None:
            continue
        side = Side.BUY if str(ch.get("side")).upper() == "BUY" else Side.SELL
        out.append(
            BookDelta(
                ins.instrument_id,
                int(side),
                ins.px_to_ticks(str(ch["price"])),
                _lots(ins, ch["size"]),
                ts,
                now_ns,
            )
        )
    return out


def trade_of(ins: Instrument, msg: Mapping[str, Any], now_ns: int, trade_id: int) -> Trade:
    """A ``last_trade_price`` message as a print (``side`` the taker's)."""
    side = Side.BUY if str(msg.get("side")).upper() == "BUY" else Side.SELL
    return Trade(
        ins.instrument_id,
        ins.px_to_ticks(str(msg["price"])),
        _lots(ins, msg.get("size") or 0),
        int(side),
        ts_ns(msg, now_ns),
        now_ns,
        trade_id,
    )


# --- auth -----------------------------------------------------------------------------------------
def load_eth() -> None:
    """Import the Ethereum libraries, keeping the interpreter's recursion limit.

    ``py_ecc`` (under eth-account and py-clob-client) raises the limit to 100,000 when it is
    imported. With it, a deeply nested frame no longer raises ``RecursionError`` in msgspec's
    decoder but overflows the C stack (a segmentation fault): the bridge's and the feed's
    defence against poison frames (procs/bridge_recv.py) relies on the error. Called once at
    import, so every later import of those libraries finds ``py_ecc`` loaded."""
    limit = sys.getrecursionlimit()
    try:
        import py_ecc  # noqa: F401
    finally:
        sys.setrecursionlimit(limit)


load_eth()


def _signer(private_key: str, chain_id: int) -> Any:
    from py_clob_client.signer import Signer

    return Signer(private_key, chain_id)


def l1_headers(private_key: str, chain_id: int, nonce: int = 0) -> dict[str, str]:
    """Level 1 headers: the wallet's EIP-712 ``ClobAuth`` signature (create / derive API keys)."""
    from py_clob_client.headers.headers import create_level_1_headers

    return create_level_1_headers(_signer(private_key, chain_id), nonce)  # type: ignore[no-any-return]


def l2_headers(
    address: str, creds: tuple[str, str, str], method: str, path: str, body: str | None, ts: int
) -> dict[str, str]:
    """Level 2 headers: HMAC of ``ts + method + path + body`` with the API secret.
    ``creds`` = (api key, secret, passphrase)."""
    from py_clob_client.signing.hmac import build_hmac_signature

    key, secret, passphrase = creds
    return {
        "POLY_ADDRESS": address,
        "POLY_SIGNATURE": build_hmac_signature(secret, str(ts), method, path, body or None),
        "POLY_TIMESTAMP": str(ts),
        "POLY_API_KEY": key,
        "POLY_PASSPHRASE": passphrase,
    }


def _recover(digest: bytes, signature: str) -> str:
    from eth_account import Account

    return str(Account._recover_hash(digest, signature=bytes.fromhex(signature.removeprefix("0x"))))


def clob_auth_signer(
    address: str, timestamp: str, nonce: int, signature: str, chain_id: int
) -> str:
    """The address that signed a ``ClobAuth`` message (what the venue checks for level 1)."""
    from eth_utils import keccak
    from py_clob_client.signing.eip712 import MSG_TO_SIGN, get_clob_auth_domain
    from py_clob_client.signing.model import ClobAuth

    msg = ClobAuth(address=address, timestamp=str(timestamp), nonce=int(nonce), message=MSG_TO_SIGN)
    return _recover(keccak(msg.signable_bytes(get_clob_auth_domain(chain_id))), signature)


def _order_struct(d: Mapping[str, Any]) -> Any:
    from py_order_utils.model.order import Order

    return Order(
        salt=int(d["salt"]),
        maker=str(d["maker"]),
        signer=str(d["signer"]),
        taker=str(d["taker"]),
        tokenId=int(d["tokenId"]),
        makerAmount=int(d["makerAmount"]),
        takerAmount=int(d["takerAmount"]),
        expiration=int(d["expiration"]),
        nonce=int(d["nonce"]),
        feeRateBps=int(d["feeRateBps"]),
        side=0 if d["side"] in ("BUY", 0) else 1,
        signatureType=int(d["signatureType"]),
    )


def _order_digest(d: Mapping[str, Any], chain_id: int, neg_risk: bool) -> bytes:
    from eth_utils import keccak
    from poly_eip712_structs import make_domain
    from py_clob_client.config import get_contract_config

    domain = make_domain(
        name="Polymarket CTF Exchange",
        version="1",
        chainId=str(chain_id),
        verifyingContract=get_contract_config(chain_id, neg_risk).exchange,
    )
    return bytes(keccak(_order_struct(d).signable_bytes(domain=domain)))


def order_hash(d: Mapping[str, Any], chain_id: int, neg_risk: bool = False) -> str:
    """The order's id at the venue: its EIP-712 typed-data hash ("0x" + 64 hex)."""
    return "0x" + _order_digest(d, chain_id, neg_risk).hex()


def order_signer(d: Mapping[str, Any], chain_id: int, neg_risk: bool = False) -> str:
    """The address whose signature ``d["signature"]`` is (what the venue checks per order)."""
    return _recover(_order_digest(d, chain_id, neg_risk), str(d["signature"]))


def sign_order(
    private_key: str,
    chain_id: int,
    *,
    token_id: str,
    side: int,
    price: str,
    size: str,
    tick: str,
    fee_rate_bps: int = 0,
    expiration: int = 0,
    neg_risk: bool = False,
    funder: str = "",
    signature_type: int = 0,
) -> dict[str, Any]:
    """A signed limit order as the venue's ``POST /order`` takes it (``order`` field), built by
    py-clob-client's order builder (its amount rounding for the tick)."""
    from py_clob_client.clob_types import CreateOrderOptions, OrderArgs
    from py_clob_client.order_builder.builder import OrderBuilder

    builder = OrderBuilder(_signer(private_key, chain_id), signature_type, funder or None)
    args = OrderArgs(
        token_id=token_id,
        price=float(price),
        size=float(size),
        side="BUY" if side == Side.BUY else "SELL",
        fee_rate_bps=fee_rate_bps,
        expiration=expiration,
    )
    signed = builder.create_order(args, CreateOrderOptions(tick_size=tick, neg_risk=neg_risk))
    return signed.dict()  # type: ignore[no-any-return]


def order_terms(d: Mapping[str, Any]) -> tuple[str, Decimal, Decimal]:
    """(side, price, size in shares) of a signed order, from its amounts (6 decimals)."""
    side = "BUY" if d["side"] in ("BUY", 0) else "SELL"
    maker, taker = Decimal(int(d["makerAmount"])), Decimal(int(d["takerAmount"]))
    shares, usdc = (taker, maker) if side == "BUY" else (maker, taker)
    if shares <= 0:
        raise ValueError("order of no shares")
    return side, usdc / shares, shares / Decimal(10**6)
