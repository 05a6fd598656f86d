"""Fuzz targets for bytes that arrive over a wire: ring frames, bridge entries from Redis, and
what venues send (Binance's websocket frames through ccxt, and every venue's order, trade, book,
market and rate-limit answers in the unified shape ccxt hands our clients).

The contracts (why each ``refusals`` is what it is):
- ring frames: the decoder refuses with ``ValueError`` (msgspec's ``DecodeError``, and
  ``UnicodeDecodeError`` for bad UTF-8) or ``RecursionError`` (deep nesting); what it accepts
  re-encodes to itself.
- bridge entries: nothing may escape the receiver (an exception would end the bridge, which then
  re-reads the unacknowledged entry at every restart); what it puts into the remote ring fits a
  ring frame (``wire_ok``).
- a venue's market data (books, trades, Binance frames): any exception ends the data session,
  which reconnects and resyncs every book (``engine.venues.ccxt_data``), so every exception is a
  refusal; what is accepted must fit a ring frame.
- a venue's order and trade dicts: nothing may escape ``OrderTable`` — the user stream applies
  them outside its reconnect handler (``engine.venues.ccxt_sync._watch``), so an exception
  there would end the stream for good; events must fit a ring frame.
- markets: a market the engine cannot use is a ``ValueError`` naming it (the pre-flight refuses
  the run); rate-limit headers: nothing may escape, and a wait is always finite.
"""

from __future__ import annotations

import functools
import json
import math
from decimal import Decimal
from typing import Any

import msgspec

from tests.fuzz import Target, wire_ok

# msgspec refuses with DecodeError / ValidationError, but bad UTF-8 in a string raises
# UnicodeDecodeError and deep nesting RecursionError: a caller must expect all of them
_DECODE_ERRORS = (ValueError, RecursionError)


def _json(data: bytes) -> Any:
    """The input as JSON, or None (not JSON: nothing for a JSON decoder behind ccxt to see)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


# --- rings and the bridge -------------------------------------------------------------------------


def ring_frame(data: bytes) -> None:
    """A ring frame's payload (``engine.codec.MESSAGE_DECODER``): a decoded frame re-encodes to a
    frame that decodes to the same message."""
    from engine.codec import MESSAGE_DECODER

    raw = msgspec.msgpack.encode(MESSAGE_DECODER.decode(data))
    assert msgspec.msgpack.encode(MESSAGE_DECODER.decode(raw)) == raw  # as bytes: NaN != NaN


PEER, PEER_KEY = "peer1", "k" * 32  # the one engine the fuzzed receiver accepts
BRIDGE_STREAM = "gk:{peer1}:s:events"


class _Metrics:
    def counter_index(self, name: str) -> int:
        return 0

    def inc_i(self, index: int, n: int = 1) -> None:
        pass


class _Bus:
    """The Redis side of one batch: the entries, nothing delivered before."""

    def __init__(self, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        self.entries = entries

    def read(self, *a: Any, **kw: Any) -> list[tuple[str, str, dict[bytes, bytes]]]:
        return self.entries

    def is_new(self, stream: str, eid: str) -> bool:
        return True

    def delivered(self, group: str, done: Any) -> None:
        pass


class _Ring(list):
    def publish(self, msg: Any) -> None:
        self.append(msg)


def _entries(data: bytes) -> list[tuple[str, str, dict[bytes, bytes]]] | None:
    """``data`` as msgpack ``[[sign, {field: value}], ...]``: the entries of one read; a
    ``sign``ed entry gets the MAC of the accepted peer over its (maybe garbled) fields, so the
    checks after the MAC and the message decoder see inputs a forger could not make."""
    from procs.bridge_auth import frame_mac

    try:
        raw = msgspec.msgpack.decode(data)
    except (ValueError, RecursionError):  # msgspec's DecodeError, UnicodeDecodeError
        return None
    if not isinstance(raw, list):
        return None
    out = []
    for i, it in enumerate(raw[:8]):
        if not (isinstance(it, list) and len(it) == 2 and isinstance(it[1], dict)):
            continue
        fields = {
            (k if isinstance(k, bytes) else str(k).encode()): (
                v if isinstance(v, bytes) else str(v).encode()
            )
            for k, v in it[1].items()
        }
        if it[0] is True:
            q, run, t, m = (fields.get(k, b"") for k in (b"q", b"run", b"t", b"m"))
            fields[b"mac"] = frame_mac(PEER_KEY.encode(), PEER, "events", q, run, t, m)
        out.append((BRIDGE_STREAM, f"1700000000000-{i}", fields))
    return out


def bridge_frame(data: bytes) -> None:
    """Entries of a subscribed stream as Redis hands them to the receiving bridge (MAC, source,
    sequence, message), through to what the strategy process and the supervisor read back out
    of the remote ring. Nothing may escape: the bridge would re-read the entry at every restart."""
    from engine.messages import AuditEvent, Remote
    from procs import bridge
    from procs.bridge_auth import FrameGuard
    from procs.bridge_recv import Receiver

    entries = _entries(data)
    if entries is None:
        return
    guard = FrameGuard({PEER: [PEER_KEY]}, _tmp_dir() / "bridge-seen.json")
    guard.marks.clear()
    ring = _Ring()
    rx = Receiver("me", "me", {BRIDGE_STREAM: (PEER, "events")}, 64, ring, _Metrics(), guard)
    rx.bus, rx.pending_reread = _Bus(entries), False
    rx.receive(None)
    filt = bridge.RemoteFilter()
    for env in ring:
        wire_ok(env)
        raw = msgspec.msgpack.encode(env)
        back = bridge.RING_DECODER.decode(raw)
        assert msgspec.msgpack.encode(back) == raw
        if type(back) is Remote:
            filt.fresh(back)
            msgspec.json.encode(bridge.remote_to_json(back))
        else:
            assert type(back) is AuditEvent


@functools.cache
def _tmp_dir() -> Any:
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="gekko-fuzz-bridge-"))
    atexit.register(shutil.rmtree, d, True)
    return d


# --- venues -------------------------------------------------------------------------------------


def _instrument(symbol: str = "BTC/USDT") -> Any:
    from engine.instruments import Instrument

    return Instrument(
        instrument_id=1, symbol=symbol, venue="binanceus", tick_size=0.01, lot_size=0.00001
    )


@functools.cache
def _binance() -> Any:
    """ccxt.pro's Binance.US parser with one market, never connected (no network here)."""
    import ccxt.pro

    ex = ccxt.pro.binanceus({"enableRateLimit": False})
    ex.set_markets([BINANCE_MARKET])
    return ex


BINANCE_MARKET = {
    "id": "BTCUSDT",
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "baseId": "BTC",
    "quoteId": "USDT",
    "type": "spot",
    "spot": True,
    "active": True,
    "precision": {"price": 0.01, "amount": 0.00001},
    "limits": {"amount": {"min": 0.00001, "max": 9000}, "cost": {"min": 1}},
    "info": {},
}
_BINANCE_SNAPSHOT = {
    "lastUpdateId": 10,
    "bids": [["60000.00", "1.0"], ["59999.99", "0.5"]],
    "asks": [["60000.10", "2.0"], ["60000.11", "0.25"]],
}


def binance_ws(data: bytes) -> None:
    """A Binance websocket frame (as captured: ``data/binance``; combined-stream or bare) through
    ccxt's own Binance parser into our book and trade trackers."""
    from engine.venues.ccxt_book import BookTracker, TradeTracker

    msg = _json(data)
    if isinstance(msg, dict) and isinstance(msg.get("data"), dict):
        msg = msg["data"]
    if not isinstance(msg, dict):
        return
    ex, ins = _binance(), _instrument()
    market = ex.market("BTC/USDT")
    if msg.get("e") == "trade":
        wire_ok(TradeTracker(ins).on_trades([ex.parse_ws_trade(msg, market)], recv_ns=1))
    elif msg.get("e") == "depthUpdate":
        book = ex.order_book(ex.parse_order_book(_BINANCE_SNAPSHOT, "BTC/USDT"))
        book["nonce"] = _BINANCE_SNAPSHOT["lastUpdateId"]
        tr = BookTracker(ins, depth=20)
        wire_ok(tr.on_book(book, recv_ns=1, venue_ns=1))
        ex.handle_order_book_message(None, msg, book)
        wire_ok(tr.on_book(book, recv_ns=2, venue_ns=2))


def venue_book(data: bytes) -> None:
    """A ccxt order book (``bids``/``asks`` best first, ``timestamp`` ms, ``nonce``), twice:
    published whole, then as deltas from the first."""
    from engine.venues.ccxt_book import BookTracker

    books = _json(data)
    if not isinstance(books, list) or not all(isinstance(b, dict) for b in books):
        return
    tr = BookTracker(_instrument(), depth=10)
    for i, b in enumerate(books[:4]):
        wire_ok(tr.on_book(b, recv_ns=i + 1, venue_ns=i + 1))


def venue_trades(data: bytes) -> None:
    """ccxt trades (``id``, ``price``, ``amount``, ``side``, ``timestamp``) as engine trades."""
    from engine.venues.ccxt_book import TradeTracker

    trades = _json(data)
    if not isinstance(trades, list) or not all(isinstance(t, dict) for t in trades):
        return
    wire_ok(TradeTracker(_instrument()).on_trades(trades, recv_ns=1))


ORDER_PREFIX = "fz00"


def venue_orders(data: bytes) -> None:
    """ccxt order and trade dicts (REST answers, user stream, backfill) into the order table
    holding one open order of ours (client order id 7): ``[["order" | "trade" | "adopt",
    {...}], ...]``."""
    from engine.messages import NewOrder
    from engine.venues.ccxt_orders import OrderTable

    items = _json(data)
    if not isinstance(items, list):
        return
    ins = _instrument()
    table = OrderTable("binanceus", ORDER_PREFIX, [ins])
    order = NewOrder(7, 0, 1, 1, 1, 1, 6_000_000, 100, 1, 1)
    table.add(order, ins, 1)
    for it in items[:8]:
        if not (isinstance(it, list) and len(it) == 2 and isinstance(it[1], dict)):
            continue
        kind, d = it
        if kind == "order":
            wire_ok(table.on_order(d, 10))
        elif kind == "trade":
            wire_ok(table.on_trade(d, 10))
        elif kind == "adopt":
            t = table.adopt(d, 10)
            if t is not None:
                wire_ok(t.order)
    wire_ok(table.fills_since(0))
    for t in table.open():
        rep = table.report(t.order.client_order_id)
        if rep is not None:
            wire_ok(rep)


def venue_markets(data: bytes) -> None:
    """A ccxt market structure (and a fee entry) as the engine's ``VenueMarket``, then as the
    instrument and order rules made from it."""
    from engine.venues.ccxt_markets import instrument_for, parse_market, rules_for

    doc = _json(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("market"), dict):
        return
    fee = doc.get("fee") if isinstance(doc.get("fee"), dict) else None
    mode = doc.get("mode") if doc.get("mode") in (2, 3, 4) else 4
    m = parse_market(doc["market"], mode, fee)
    for s in (m.tick, m.lot, m.min_qty, m.max_qty, m.min_notional):
        assert len(s) < 64 and Decimal(s).is_finite(), s
    assert math.isfinite(m.maker_fee_bps) and math.isfinite(m.taker_fee_bps)
    ins = instrument_for(1, "binanceus", m)
    wire_ok(rules_for(ins, m))


def venue_guard(data: bytes) -> None:
    """A venue's HTTP status and headers (``Retry-After``, ``X-MBX-USED-WEIGHT-1M``) and a
    rate-limit text into the request guard: nothing escapes, every wait is finite."""
    from engine.venues.ccxt_guard import Guard, retry_after_s

    doc = _json(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("headers"), dict):
        return
    headers = doc["headers"]
    status = doc.get("status") if isinstance(doc.get("status"), int) else 429
    assert math.isfinite(retry_after_s(headers, 1.0))
    g = Guard("binanceus")
    g.on_response(status, headers, 100.0)
    g.on_limit_error(str(doc.get("text", "")), 200.0)
    assert math.isfinite(g.blocked_until)
    assert math.isfinite(g.wait_s("create_order", 300.0))
    g.reason(300.0)


class _Client:
    """A ccxt websocket client as the integrity hooks use it."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Any] = {}
        self.resolved: list[Any] = []
        self.rejected: list[Any] = []

    def resolve(self, result: Any, h: Any = None) -> None:
        self.resolved.append(result)

    def reject(self, err: Any, h: Any = None) -> None:
        self.rejected.append(err)


class _Exchange:
    """What the hooks read of a ccxt.pro exchange; its handlers just record (ccxt's own parsing
    is not ours: ``binance_ws`` drives Binance's)."""

    def __init__(self, ex_id: str) -> None:
        self.id, self.handled = ex_id, 0
        self.orderbooks: dict[str, Any] = {}
        self.markets = {"BTC/USD": {"precision": {"price": 0.1, "amount": 1e-08}}}

    def handle_message(self, client: Any, message: Any) -> None:
        self.handled += 1

    def handle_order_book(self, client: Any, message: Any) -> None:
        self.orderbooks["BTC/USD"] = {"bids": [[60000.1, 0.5]], "asks": [[60000.2, 0.25]]}
        client.resolve(self.orderbooks["BTC/USD"], "orderbook:BTC/USD")

    def get_message_hash(self, *parts: Any) -> str:
        return ":".join(str(p) for p in parts)


def venue_integrity(data: bytes) -> None:
    """Raw websocket messages through our integrity hooks (``ccxt_integrity``): Coinbase's
    connection-wide ``sequence_num`` and Kraken's book ``checksum``. Nothing may escape (it would
    stall ccxt's receive loop until the keep-alive gives up); a garbled number is a break."""
    from engine.venues import ccxt_integrity

    msgs = _json(data)
    if not isinstance(msgs, list):
        return
    cb, breaks, client = _Exchange("coinbase"), [], _Client()
    ccxt_integrity.install(cb, breaks.append)
    for m in msgs[:16]:
        cb.handle_message(client, m)
    assert not breaks or cb.handled < len(msgs[:16])  # after a break nothing more is handled
    kr = _Exchange("kraken")
    ccxt_integrity._install_kraken(kr)
    for m in msgs[:16]:
        kc = _Client()
        kr.handle_order_book(kc, m)
        assert len(kc.resolved) + len(kc.rejected) == 1  # the book goes out, or is dropped


_ANY = (Exception,)  # market data: any exception is a refusal (the session reconnects)

TARGETS = (
    Target("ring_frame", ring_frame, _DECODE_ERRORS),
    Target("bridge_frame", bridge_frame),
    Target("binance_ws", binance_ws, _ANY),
    Target("venue_book", venue_book, _ANY),
    Target("venue_trades", venue_trades, _ANY),
    Target("venue_orders", venue_orders),
    Target("venue_markets", venue_markets, (ValueError,)),
    Target("venue_guard", venue_guard),
    Target("venue_integrity", venue_integrity),
)
