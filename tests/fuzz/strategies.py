"""Hypothesis strategies that make inputs for the fuzz targets: the kept corpus mutated byte by
byte, and structured inputs shaped like each decoder's real input (a field of the right name
holding a value of the wrong kind reaches code that random bytes never do).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import strategies as st

# values a venue, a file or a peer may put where a number belongs
_NUM_TEXT = (
    "0", "1", "-1", "0.01", "60000.5", "1e999999999", "-1e999999999", "1e-999999999", "1E+30",
    "NaN", "nan", "inf", "-Infinity", "sNaN", "", " ", " 1 ", "0x10", "1_000", "abc", "١٢٣",
    "9223372036854775808", "-9223372036854775809", "18446744073709551616", "1" * 40,
)  # fmt: skip
numberish = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_NUM_TEXT),
    st.none(),
    st.booleans(),
    st.text(max_size=6),
)
# what reaches ccxt's own Binance parser: without the billion-digit exponents, which ccxt's
# Precise writes out digit by digit (a gigabyte and seconds each: third-party code, in the
# docs' limits); the targets behind ccxt get those values directly
_CCXT_NUM_TEXT = tuple(t for t in _NUM_TEXT if "999999999" not in t)
ccxt_numberish = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_CCXT_NUM_TEXT),
    st.none(),
    st.booleans(),
    st.text(max_size=6),
)
json_leaf = st.one_of(numberish, st.text(max_size=12))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(obj: Any) -> bytes:
    """JSON as a venue or a file might write it (NaN / Infinity tokens included)."""
    return json.dumps(obj, default=str).encode()


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A corpus entry with a few byte-level edits: flip, insert, delete, truncate, repeat."""
    data = bytearray(draw(st.sampled_from(seeds)) if seeds else b"")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "repeat")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 32))] * draw(st.integers(1, 4))
    return bytes(data)


# --- per target ---------------------------------------------------------------------------------


def _msgpack_messages() -> st.SearchStrategy[bytes]:
    """MessagePack arrays as ring frames are (``[tag, field, ...]``), with any tag and values."""
    from engine.messages import TYPE_BY_TAG

    tags = st.one_of(st.sampled_from(sorted(TYPE_BY_TAG)), st.integers(-5, 300))
    field = st.one_of(
        st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.binary(max_size=8),
        st.floats(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3), st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
    )  # fmt: skip
    arr = st.tuples(tags, st.lists(field, max_size=16)).map(lambda t: [t[0], *t[1]])
    nested = st.tuples(arr, st.integers(1, 3)).map(
        lambda t: [48, "peer", "fills", "1-0", 1, t[0]] if t[1] > 1 else t[0]
    )
    return st.one_of(arr, nested).map(msgspec.msgpack.encode)


def _bridge() -> st.SearchStrategy[bytes]:
    """A read of subscribed entries: ``[[sign, {field: value}], ...]`` (``targets_wire``)."""
    seq = st.sampled_from([b"1700000000000-1", b"1700000000000-2", b"1700000000001-1", b"0-0"])
    fields = st.fixed_dictionaries(
        {
            "src": st.one_of(st.just(b"peer1"), st.binary(max_size=8)),
            "q": st.one_of(seq, st.binary(max_size=44)),
            "run": st.one_of(st.sampled_from([b"r1", b"r2"]), st.binary(max_size=8)),
            "t": st.one_of(st.sampled_from([b"2", b"21", b"48"]), st.binary(max_size=3)),
            "m": _msgpack_messages(),
        },
        optional={"mac": st.binary(max_size=32)},
    )
    entry = st.tuples(st.booleans(), fields).map(list)
    return st.lists(entry, min_size=1, max_size=4).map(msgspec.msgpack.encode)


def _binance() -> st.SearchStrategy[bytes]:
    level = st.lists(st.one_of(ccxt_numberish, st.just("60000.00")), min_size=0, max_size=3)
    depth = st.fixed_dictionaries(
        {"e": st.just("depthUpdate"), "E": ccxt_numberish, "s": st.just("BTCUSDT"),
         "U": ccxt_numberish, "u": ccxt_numberish, "b": st.lists(level, max_size=3),
         "a": st.lists(level, max_size=3)}
    )  # fmt: skip
    trade = st.fixed_dictionaries(
        {"e": st.just("trade"), "E": ccxt_numberish, "s": st.just("BTCUSDT"), "t": ccxt_numberish,
         "p": ccxt_numberish, "q": ccxt_numberish, "T": ccxt_numberish, "m": st.one_of(ccxt_numberish, st.text(max_size=12))}
    )  # fmt: skip
    body = st.one_of(depth, trade)
    return st.one_of(body, body.map(lambda d: {"stream": "btcusdt@x", "data": d})).map(dumps)


def _books() -> st.SearchStrategy[bytes]:
    level = st.lists(numberish, min_size=2, max_size=3)
    book = st.fixed_dictionaries(
        {"bids": st.lists(level, max_size=4), "asks": st.lists(level, max_size=4)},
        optional={"timestamp": numberish, "nonce": numberish},
    )
    return st.lists(book, min_size=1, max_size=3).map(dumps)


_TRADE_KEYS = {"id": json_leaf, "price": numberish, "amount": numberish, "side": json_leaf,
               "timestamp": numberish}  # fmt: skip


def _trades() -> st.SearchStrategy[bytes]:
    return st.lists(st.fixed_dictionaries({}, optional=_TRADE_KEYS), max_size=4).map(dumps)


def _orders() -> st.SearchStrategy[bytes]:
    from tests.fuzz.targets_wire import ORDER_PREFIX

    cid = st.one_of(
        st.sampled_from([f"{ORDER_PREFIX}7", f"{ORDER_PREFIX}7_1", f"{ORDER_PREFIX}8"]),
        st.text(max_size=30).map(lambda s: ORDER_PREFIX + s),
        json_leaf,
    )
    fee = st.fixed_dictionaries({}, optional={"cost": numberish, "currency": json_leaf})
    d = st.fixed_dictionaries(
        {"clientOrderId": cid},
        optional={
            "id": st.one_of(st.sampled_from(["v1", "v2", "123"]), json_leaf),
            "order": st.one_of(st.sampled_from(["v1", "v2"]), json_leaf),
            "symbol": st.one_of(st.just("BTC/USDT"), json_leaf),
            "status": st.sampled_from(["open", "closed", "canceled", "rejected", "expired", "x"]),
            "side": st.sampled_from(["buy", "sell", "x"]),
            "filled": numberish, "amount": numberish, "price": numberish,
            "average": numberish, "timestamp": numberish, "lastUpdateTimestamp": numberish,
            "fee": st.one_of(fee, json_leaf), "fees": st.lists(fee, max_size=2),
            "takerOrMaker": json_leaf, "info": json_value,
        },
    )  # fmt: skip
    item = st.tuples(st.sampled_from(["order", "trade", "adopt"]), d).map(list)
    return st.lists(item, min_size=1, max_size=6).map(dumps)


def _markets() -> st.SearchStrategy[bytes]:
    side = st.fixed_dictionaries({}, optional={"min": numberish, "max": numberish})
    market = st.fixed_dictionaries(
        {"symbol": st.one_of(st.just("BTC/USDT"), json_leaf)},
        optional={
            "id": json_leaf, "base": json_leaf, "quote": json_leaf, "active": json_leaf,
            "precision": st.fixed_dictionaries({}, optional={"price": numberish, "amount": numberish}),
            "limits": st.fixed_dictionaries({}, optional={"amount": side, "cost": side}),
            "maker": numberish, "taker": numberish, "info": json_value,
        },
    )  # fmt: skip
    fee = st.fixed_dictionaries({}, optional={"maker": numberish, "taker": numberish})
    doc = st.fixed_dictionaries(
        {"market": market}, optional={"fee": fee, "mode": st.sampled_from([2, 3, 4])}
    )
    return doc.map(dumps)


def _guard() -> st.SearchStrategy[bytes]:
    name = st.sampled_from(["Retry-After", "retry-after", "X-MBX-USED-WEIGHT-1M", "x"])
    headers = st.dictionaries(name, st.one_of(numberish, st.just("Wed, 21 Oct 2015 07:28:00 GMT")))
    doc = st.fixed_dictionaries(
        {"headers": headers},
        optional={"status": st.sampled_from([200, 418, 429, 500]), "text": st.text(max_size=20)},
    )
    return doc.map(dumps)


def _integrity() -> st.SearchStrategy[bytes]:
    """Coinbase messages with ``sequence_num`` and Kraken book messages with ``checksum``."""
    seq = st.one_of(st.integers(0, 6), numberish)
    cb = st.fixed_dictionaries({"channel": st.just("l2_data"), "sequence_num": seq})
    first = st.fixed_dictionaries(
        {}, optional={"symbol": st.one_of(st.just("BTC/USD"), json_leaf), "checksum": numberish}
    )
    kr = st.fixed_dictionaries(
        {"channel": st.just("book")},
        optional={"data": st.one_of(st.lists(first, max_size=2), json_value)},
    )
    return st.lists(st.one_of(cb, kr, json_value), min_size=1, max_size=8).map(dumps)


def _cells(n: int) -> st.SearchStrategy[list[str]]:
    cell = st.one_of(numberish.map(lambda v: "" if v is None else str(v)), st.text(max_size=5))
    return st.lists(cell, min_size=max(0, n - 1), max_size=n + 1)


def _csv() -> st.SearchStrategy[bytes]:
    headers = {
        0: "ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty",
        1: "ts_event,symbol,px,qty,side,trade_id",
        2: "ts,symbol,open,high,low,close,volume,adj_close",
    }

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        kind = draw(st.integers(0, 2))
        cols = headers[kind].split(",")
        rows = draw(st.lists(_cells(len(cols)), max_size=6))
        text = "\n".join([headers[kind], *(",".join(r) for r in rows)])
        return bytes([kind]) + text.encode("utf-8", "surrogatepass")

    return build()


def _parquet() -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        kind = draw(st.integers(0, 2))
        names = [
            ("ts_event", "symbol", "bid_px", "bid_qty", "ask_px", "ask_qty"),
            ("ts_event", "symbol", "px", "qty", "side"),
            ("ts", "symbol", "open", "high", "low", "close", "volume"),
        ][kind]
        n = draw(st.integers(0, 4))
        cols = {}
        for name in names:
            typ = draw(st.sampled_from(["int", "float", "str", "ts"]))
            if typ == "int":
                vals = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n))
                cols[name] = pa.array(vals, pa.int64())
            elif typ == "float":
                vals = draw(st.lists(st.floats(), min_size=n, max_size=n))
                cols[name] = pa.array(vals, pa.float64())
            elif typ == "ts":
                vals = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
                cols[name] = pa.array(vals, pa.timestamp("ns"))
            else:
                vals = draw(
                    st.lists(
                        st.one_of(st.sampled_from(_NUM_TEXT), st.none()), min_size=n, max_size=n
                    )
                )
                cols[name] = pa.array(vals, pa.string())
        buf = io.BytesIO()
        pq.write_table(pa.table(cols), buf)
        return bytes([kind]) + buf.getvalue()

    return build()


def _lobster() -> st.SearchStrategy[bytes]:
    from tests.fuzz.targets_files import LOBSTER_SPLIT

    msg = st.lists(_cells(6).map(",".join), max_size=5).map("\n".join)
    book = st.lists(_cells(4).map(",".join), max_size=5).map("\n".join)
    return st.tuples(msg, book).map(
        lambda t: (
            t[0].encode("utf-8", "surrogatepass")
            + LOBSTER_SPLIT
            + t[1].encode("utf-8", "surrogatepass")
        )
    )


def _meta() -> st.SearchStrategy[bytes]:
    from models.registry import REQUIRED

    meta = st.fixed_dictionaries(
        {k: json_value for k in REQUIRED if k != "format"},
        optional={"format": st.one_of(st.just(1), json_leaf)},
    )
    return st.one_of(meta, json_value).map(dumps)


def _config() -> st.SearchStrategy[bytes]:
    from tests.fuzz import CORPUS

    base = (CORPUS / "config_toml" / "default.toml").read_text().splitlines()
    value = st.one_of(
        st.sampled_from(['""', "-1", "0", "1e999", "nan", "inf", "[]", "{}", "true", '"x"',
                         "9223372036854775808", '"${NOPE}"', "[[[[1]]]]", "'''", "1979-05-27"]),
        st.text(max_size=8).map(json.dumps),
    )  # fmt: skip

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        lines = list(base)
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(lines) - 1))
            key, eq, _ = lines[i].partition("=")
            if eq and draw(st.booleans()):
                lines[i] = f"{key}= {draw(value)}"
            else:
                del lines[i]
        return "\n".join(lines).encode()

    return build()


STRUCTURED = {
    "ring_frame": _msgpack_messages,
    "bridge_frame": _bridge,
    "binance_ws": _binance,
    "venue_book": _books,
    "venue_trades": _trades,
    "venue_orders": _orders,
    "venue_markets": _markets,
    "venue_guard": _guard,
    "venue_integrity": _integrity,
    "config_toml": _config,
    "replay_csv": _csv,
    "replay_parquet": _parquet,
    "lobster": _lobster,
    "model_meta": _meta,
}
