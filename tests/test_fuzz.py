"""The fuzz targets' fast form (``tests/fuzz``): every decoder of untrusted bytes gets its kept
corpus replayed, then mutated and structured inputs from hypothesis; ``make fuzz`` runs the same
targets under atheris for ``FUZZ_SECONDS`` each. The ``test_regress_*`` tests pin the bugs the
fuzzers found, each by the behaviour that was broken.

``FUZZ_EXAMPLES`` (default 60) sets the hypothesis examples per target.
"""

from __future__ import annotations

import functools
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import CORPUS, targets
from tests.fuzz.strategies import STRUCTURED, mutated

TARGETS = targets()
NAMES = sorted(TARGETS)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))

# pyarrow reports a bad row's undecodable text as an "exception ignored" before it refuses the
# file with a ValueError (the documented refusal, which the replay target expects)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@functools.cache
def _inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(TARGETS[name].corpus()), STRUCTURED[name]())


def test_every_target_has_a_corpus_and_a_structured_form():
    assert set(STRUCTURED) == set(TARGETS)
    for name in NAMES:
        files = [p for p in (CORPUS / name).iterdir() if p.is_file()]
        assert files, name
        assert all(p.stat().st_size <= 16_384 for p in files), name  # a kept corpus stays small


@pytest.mark.parametrize("name", NAMES)
def test_corpus_replays(name):
    for data in TARGETS[name].corpus():
        TARGETS[name](data)


@pytest.mark.parametrize("name", NAMES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_fuzz(name, data):
    TARGETS[name](data.draw(_inputs(name), label="input"))


# --- the bugs the fuzzers found, each pinned by the behaviour that was broken ---------------------


def _receive(*messages: bytes) -> list:
    """What the receiving bridge puts into the remote ring for signed entries of ``messages``."""
    import msgspec

    from procs.bridge_auth import FrameGuard
    from procs.bridge_recv import Receiver
    from tests.fuzz import targets_wire as tw

    entries = tw._entries(
        msgspec.msgpack.encode(
            [
                [
                    True,
                    {
                        "src": b"peer1",
                        "q": f"1700000000000-{i}".encode(),
                        "run": b"r",
                        "t": b"1",
                        "m": m,
                    },
                ]
                for i, m in enumerate(messages, start=1)
            ]
        )
    )
    ring = tw._Ring()
    guard = FrameGuard({tw.PEER: [tw.PEER_KEY]}, tw._tmp_dir() / "regress-seen.json")
    guard.marks.clear()
    rx = Receiver(
        "me", "me", {tw.BRIDGE_STREAM: (tw.PEER, "events")}, 64, ring, tw._Metrics(), guard
    )
    rx.bus, rx.pending_reread = tw._Bus(entries), False
    rx.receive(None)  # raised UnicodeDecodeError / RecursionError before: the bridge died
    return list(ring)


def test_regress_bridge_drops_poison_entries_and_delivers_the_rest():
    import msgspec

    from engine.messages import Quote, Remote

    good = Quote(1, 100, 2, 101, 3, 5, 6, 1)
    bad_utf8 = b"\x955\x01\xa1\x80\xa1x\xa2{}"  # a str field that is no UTF-8
    # Remote(Remote(Remote(...))) 100,000 deep: RecursionError in msgspec
    deep = b"\x96\x30\xa1p\xa1r\xa31-0\x01" * 100_000 + msgspec.msgpack.encode([1] * 8)
    nested = msgspec.msgpack.encode(Remote("p", "r", "1-0", 1, good))
    wide = msgspec.msgpack.encode([1, 1, 2**64 - 1, 2, 101, 3, 5, 6, 1])  # uint64: no int64
    out = _receive(bad_utf8, deep, nested, wide, msgspec.msgpack.encode(good))
    assert [(type(r), r.msg) for r in out] == [(Remote, good)]


def test_regress_config_that_is_no_utf8_or_nested_too_deep_is_a_config_error(tmp_path):
    from ops.config import ConfigError, load_config, parse_config

    p = tmp_path / "config.toml"
    p.write_bytes(b'\x80[engine]\nid = "x"\n')  # UnicodeDecodeError escaped load_config
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    for deep in ("a = " + "[" * 5000 + "]" * 5000, "a = " + "{x=" * 3000 + "1" + "}" * 3000):
        with pytest.raises(ConfigError, match="nested too deeply"):  # was RecursionError
            parse_config(deep)


def test_regress_meta_json_nested_too_deep_or_odd_is_refused_or_listed(tmp_path):
    from models import registry, serving

    d = tmp_path / "m" / "v1"
    d.mkdir(parents=True)
    (d / "meta.json").write_text("[" * 100_000)  # RecursionError from json
    with pytest.raises(serving.ModelError, match="nested too deeply"):
        serving.read_meta(d)
    with pytest.raises(registry.RegistryError, match="nested too deeply"):
        registry.read_meta(d)
    meta = dict.fromkeys(registry.REQUIRED, 0) | {"format": 1, "training": [], "metrics": 1}
    (d / "meta.json").write_text(json.dumps(meta))  # AttributeError in gekko model list
    rows = registry.list_models(tmp_path, include_shipped=False)
    assert [(r["name"], r["data"], r["mase"]) for r in rows] == [(0, "", None)]


def test_regress_venue_orders_with_numbers_that_are_none_change_nothing():
    from engine.venues.ccxt_orders import OrderTable, parse_client_id
    from tests.fuzz import targets_wire as tw

    ins = tw._instrument()
    table = OrderTable("binanceus", tw.ORDER_PREFIX, [ins])
    from engine.messages import NewOrder

    table.add(NewOrder(7, 0, 1, 1, 1, 1, 6_000_000, 100, 1, 1), ins, 1)
    cid = f"{tw.ORDER_PREFIX}7"
    # each raised out of the user stream's loop (InvalidOperation, OverflowError) and ended it
    assert table.on_order({"clientOrderId": cid, "id": "v1", "filled": "abc"}, 10) == []
    for bad in ({"amount": "NaN"}, {"price": "abc"}, {"fees": "x"}, {"amount": 1e30}):
        trade = {"id": "t1", "order": "v1", "clientOrderId": cid, "amount": 0.0005, "price": 6e4}
        assert table.on_trade(trade | bad, 10) == []
    assert table.malformed == 5 and table.get(7).filled == 0 and not table.get(7).trade_ids
    (acc,) = table.on_order({"clientOrderId": cid, "id": "v1", "timestamp": float("inf")}, 10)
    assert acc.ts_event == 10  # not a time: ours
    assert parse_client_id(tw.ORDER_PREFIX, tw.ORDER_PREFIX + "z" * 20) is None  # > int64
    assert parse_client_id(tw.ORDER_PREFIX, tw.ORDER_PREFIX + " 7") is None


def test_regress_venue_market_data_beyond_int64_is_refused_and_a_bad_trade_skipped():
    from engine.venues.ccxt_book import BookTracker, TradeTracker
    from tests.fuzz import targets_wire as tw

    ins = tw._instrument()
    with pytest.raises(ValueError):  # a BookSnapshot with ts_event 9.2e18 went out before
        BookTracker(ins).on_book({"bids": [], "asks": [], "timestamp": 9223372036855.0})
    with pytest.raises(ValueError):  # a level of 2**63 lots
        BookTracker(ins).on_book({"bids": [], "asks": [[1, 92233720368548.0]], "timestamp": 1})
    tt = TradeTracker(ins)
    trades = [
        {"id": "1", "price": 6e4, "amount": 1e-3, "timestamp": 1e20},
        {"id": "2", "price": 6e4, "amount": 1e-3, "side": ["buy"], "timestamp": 1},
    ]
    assert [t.trade_id for t in tt.on_trades(trades, recv_ns=1)] == [2]
    assert tt.malformed == 1


def test_regress_markets_with_numbers_that_are_none_are_skipped_not_fatal():
    from engine.venues.ccxt_markets import parse_market

    ok = {"symbol": "BTC/USDT", "precision": {"price": 0.01, "amount": 1e-5}}
    assert parse_market(ok).tick == "0.01"
    for bad, mode in (
        ({"precision": {"price": "abc", "amount": 1e-5}}, 4),  # InvalidOperation
        ({"precision": {"price": "1e-999999999", "amount": 1e-5}}, 4),  # a billion-digit step
        ({"precision": {"price": 2000055, "amount": 8}}, 2),  # Overflow in scaleb
        ({"limits": [1]}, 4),  # AttributeError
        ({"symbol": None}, 4),  # KeyError / no symbol
    ):
        with pytest.raises(ValueError):  # load_markets skips the market; anything else ended it
            parse_market(ok | bad, mode)


def test_regress_retry_after_and_used_weight_are_bounded():
    from engine.venues.ccxt_guard import MAX_WAIT_S, Guard, retry_after_s

    for raw in ("inf", "nan", "1e999999999"):
        assert retry_after_s({"Retry-After": raw}, 3.0) == 3.0  # inf blocked order entry forever
    assert retry_after_s({"Retry-After": "1e300"}, 3.0) == MAX_WAIT_S
    g = Guard("binanceus")
    g.on_response(200, {"X-MBX-USED-WEIGHT-1M": "inf"}, 100.0)  # poisoned the budget with NaN
    assert g.wait_s("create_order", 100.0) == 0.0


def test_regress_replay_times_and_ids_beyond_int64_are_rejected_rows(tmp_path):
    from engine.instruments import Instrument
    from engine.sources.replay import ReplaySource

    p = tmp_path / "trades.csv"
    p.write_text(
        "ts_event,symbol,px,qty,side,trade_id\n"
        "11700000000000000000,AAA,1.5,5,buy,1\n"  # OverflowError ended the replay
        "1700000000000000001,AAA,1.5,5,buy,99999999999999999999\n"
        "1700000000000000002,AAA,1.5,5,buy,3\n"
    )
    src = ReplaySource([Instrument(instrument_id=1, symbol="AAA")], trades=p)
    assert [m.trade_id for m in src] == [3]
    assert src.rejected == {"bad_time": 1, "unparsable": 1}


def test_regress_units_beyond_int64_are_a_value_error():
    from engine.instruments import Instrument

    ins = Instrument(instrument_id=1, symbol="AAA", tick_size=0.01)
    assert ins.px_to_ticks("92233720368547758.07") == 2**63 - 1
    with pytest.raises(ValueError, match="int64"):
        ins.px_to_ticks("92233720368547758.08")


def test_regress_integrity_hooks_treat_a_garbled_number_as_a_break():
    from engine.venues import ccxt_integrity
    from tests.fuzz import targets_wire as tw

    cb, breaks, client = tw._Exchange("coinbase"), [], tw._Client()
    ccxt_integrity.install(cb, breaks.append)
    cb.handle_message(client, {"sequence_num": 1})
    cb.handle_message(client, {"sequence_num": "abc"})  # ValueError stalled ccxt's receive loop
    cb.handle_message(client, {"sequence_num": 2})
    assert cb.handled == 1 and len(breaks) == 1 and "no number" in breaks[0]
    kr = tw._Exchange("kraken")
    ccxt_integrity._install_kraken(kr)
    for msg in ({"data": {"symbol": "BTC/USD"}}, {"data": [{"symbol": ["x"], "checksum": 1}]}):
        c = tw._Client()
        kr.handle_order_book(c, msg)  # KeyError / TypeError before: now no checksum to check
        assert len(c.resolved) == 1
    c = tw._Client()
    kr.handle_order_book(c, {"data": [{"symbol": "BTC/USD", "checksum": "x"}]})
    assert not c.resolved and len(c.rejected) == 1  # a checksum that is no number fails


def test_regress_replay_header_and_parquet_dates_found_by_atheris(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.instruments import Instrument
    from engine.sources.replay import ReplaySource

    ins = [Instrument(instrument_id=1, symbol="A")]
    p = tmp_path / "bars.csv"
    p.write_bytes(b"ts_ent,sd\r1\x02Date,Open,High,Low\n")  # csv.Error escaped ReplaySource
    with pytest.raises(ValueError, match="unreadable header line"):
        ReplaySource(ins, bars=p, symbol="A")
    q = tmp_path / "bars.parquet"
    one = [1.0, 1.0]
    table = {"open": one, "high": one, "low": one, "close": one, "volume": [1, 1]}
    pq.write_table(pa.table({"ts": pa.array([19700, -1493283595], pa.date32())} | table), q)
    src = ReplaySource(ins, bars=q, symbol="A")  # OverflowError: a date no datetime can hold
    assert [b.start_ns for b in src] == [19700 * 86_400 * 10**9]
    assert src.rejected == {"bad_time": 1}


def test_regress_market_limits_beyond_decimal_precision_found_by_atheris():
    from engine.venues.ccxt_markets import instrument_for, parse_market, rules_for

    m = parse_market(
        {
            "symbol": "BTC/USDT",
            "precision": {"price": 0.01, "amount": 1e-05},
            "limits": {"amount": {"min": 1e25, "max": 9007777777777777777777777}},
        }
    )
    rules = rules_for(instrument_for(1, "binanceus", m), m)  # DivisionImpossible before
    assert rules.max_qty_lots == 0 and rules.min_qty_lots == 2**63 - 1  # no max; no order fits


def test_regress_gekko_state_shows_what_a_bus_writer_wrote_harmlessly():
    from ops.redis_cmds import _shown, _text, _value

    assert _text(b"\xff\xfe") == "\ufffd\ufffd"  # UnicodeDecodeError ended gekko state
    assert _value("[" * 100_000) == "[" * 100_000  # RecursionError ended gekko state
    # an escape sequence in a latest-state hash would have reached the operator's terminal
    assert _shown("\x1b]0;pwned\x07\x1b[2J ok") == "\\x1b]0;pwned\\x07\\x1b[2J ok"


def test_regress_strict_lobster_reader_refuses_a_time_that_is_no_time(tmp_path):
    from engine.lobster import read_lobster

    m, b = tmp_path / "m.csv", tmp_path / "b.csv"
    b.write_text("10000,100,9000,100\n")
    for t in ("inf", "1e300"):  # became time_ns -2**63 with a RuntimeWarning, read as good
        m.write_text(f"{t},1,1,100,10000,1\n")
        with pytest.raises(ValueError, match="is no time"):
            read_lobster(m, b, levels=1)
