"""ReplaySource: recorded quotes/trades/bars -> engine messages, in time order, dirty rows counted."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument
from engine.md_rejects import BadRowError, RejectCounter
from engine.messages import Bar, BookDelta, BookSnapshot, Quote, Side, Trade
from engine.sources.replay import DAY_NS, ReplaySource, load_bars_csv

AAA = Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0)
BTC = Instrument(instrument_id=7, symbol="BTC-USD", tick_size=0.5, lot_size=0.001)
INS = [AAA, BTC]


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def _ts(msg: object) -> int:
    return msg.end_ns if type(msg) is Bar else msg.ts_event


# --- happy paths -------------------------------------------------------------------------------


def test_quotes_csv_to_ticks_and_lots(tmp_path: Path) -> None:
    q = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
300,BTC-USD,65000.5,0.125,65001.0,2
100,AAA,100.01,10,100.02,5
200,AAA,100.10,1,100.30,0
""",
    )
    src = ReplaySource(INS, quotes=q)
    out = list(src)
    assert out == [
        Quote(1, 10001, 10, 10002, 5, 100, 100, 1),
        Quote(1, 10010, 1, 10030, 0, 200, 200, 2),
        Quote(7, 130001, 125, 130002, 2000, 300, 300, 1),
    ]
    assert src.rejected == {}


def test_merge_files_and_formats_in_time_order(tmp_path: Path) -> None:
    quotes = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
50,AAA,9.99,1,10.01,1
10,AAA,9.98,1,10.00,1
50,AAA,9.97,1,10.02,1
""",
    )
    trades = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "ts_event": pa.array([40, 10, 50], pa.int64()),
                "instrument_id": pa.array([1, 1, 7], pa.int32()),
                "px": pa.array([10.0, 9.99, 65000.5]),
                "qty": pa.array([3.0, 1.0, 0.002]),
                "side": ["sell", "BUY", "-1"],
            }
        ),
        trades,
    )
    trades2 = _csv(
        tmp_path / "t2.csv",
        """
TS_Event,Symbol,Px,Qty,Side,trade_id
45,AAA,10.01,2,b,99
""",
    )
    src = ReplaySource(INS, quotes=quotes, trades=[trades, trades2])
    out = list(src)
    assert [_ts(m) for m in out] == sorted(_ts(m) for m in out)
    # equal times: trades before quotes; equal-time quotes keep file order
    assert [(type(m).__name__, _ts(m)) for m in out] == [
        ("Trade", 10),
        ("Quote", 10),
        ("Trade", 40),
        ("Trade", 45),
        ("Trade", 50),
        ("Quote", 50),
        ("Quote", 50),
    ]
    t = [m for m in out if type(m) is Trade]
    assert t[0] == Trade(1, 999, 1, Side.BUY, 10, 10, 1)
    assert t[1] == Trade(1, 1000, 3, Side.SELL, 40, 40, 2)
    assert t[2].trade_id == 99 and t[2].side == Side.BUY
    assert t[3] == Trade(7, 130001, 2, Side.SELL, 50, 50, 1)
    assert [m.bid_px for m in out if type(m) is Quote] == [998, 999, 997]
    assert all(type(m.side) is int for m in t)


def test_parquet_decimal_timestamp_and_string_columns(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    pq.write_table(
        pa.table(
            {
                "timestamp": pa.array(
                    [1_700_000_000_123_456_789, 1_700_000_000_000_000_000],
                    pa.timestamp("ns", tz="UTC"),
                ),
                "symbol": ["AAA", "AAA"],
                "bid_px": pa.array([Decimal("1.23"), Decimal("1.20")], pa.decimal128(10, 4)),
                "bid_qty": ["7", "8"],
                "ask_px": pa.array([1.25, 1.21]),
                "ask_qty": pa.array([1, 2], pa.int64()),
            }
        ),
        path,
    )
    out = list(ReplaySource(INS, quotes=path))
    assert out == [
        Quote(1, 120, 8, 121, 2, 1_700_000_000_000_000_000, 1_700_000_000_000_000_000, 1),
        Quote(1, 123, 7, 125, 1, 1_700_000_000_123_456_789, 1_700_000_000_123_456_789, 2),
    ]


def test_iso_timestamps_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(
            "ts_event,symbol,px,qty,side\n"
            "2024-01-02T09:30:00.000000001,AAA,1,1,\n"
            "2024-01-02T09:30:00+01:00,AAA,1,1,none\n"
            "2024-01-02 09:30:00.5Z,AAA,1,1,0\n"
        )
    out = list(ReplaySource(INS, trades=path))
    base = 1_704_187_800_000_000_000  # 2024-01-02T09:30:00Z
    assert [m.ts_event for m in out] == [base - 3_600 * 10**9, base + 1, base + 500_000_000]
    assert {m.side for m in out} == {Side.NONE}


def test_bars_stamped_at_close_and_ordered_by_it(tmp_path: Path) -> None:
    bars = _csv(
        tmp_path / "bars.csv",
        """
ts,symbol,open,high,low,close,volume,trades
0,AAA,10,11,9,10.5,1000,12
""",
    )
    quotes = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
500,AAA,10.4,1,10.6,1
60000000000,AAA,10.4,1,10.6,1
""",
    )
    src = ReplaySource(INS, bars=bars, quotes=quotes, bar_interval_ns=60 * 10**9)
    out = list(src)
    assert [type(m) for m in out] == [Quote, Bar, Quote]  # the bar closes at 60 s, before the quote
    assert out[1] == Bar(1, 0, 60 * 10**9, 1000, 1100, 900, 1050, 1000, 12)


def test_streams_are_merged_and_checked(tmp_path: Path) -> None:
    quotes = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
15,AAA,1,1,2,1
""",
    )
    stream = [
        BookSnapshot(1, [100], [1], [200], [1], 10, 10, 0),
        BookDelta(1, 1, 100, 5, 20, 20, 1),
        BookDelta(1, 1, 100, 6, 5, 5, 2),  # back in time: dropped, counted
        BookDelta(1, 1, 100, 7, 30, 30, 3),
    ]
    src = ReplaySource(INS, quotes=quotes, streams=[lambda: iter(stream)])
    out = list(src)
    assert [_ts(m) for m in out] == [10, 15, 20, 30]
    assert [m.seq for m in out if type(m) is BookDelta] == [1, 3]  # stream seqs untouched
    assert src.rejected == {"out_of_order_time": 1}
    assert list(src) == out  # repeatable: the callable builds a fresh stream


def test_iteration_is_repeatable_and_recounts(tmp_path: Path) -> None:
    q = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
1,AAA,1,1,2,1
2,ZZZ,1,1,2,1
""",
    )
    src = ReplaySource(INS, quotes=q)
    a = list(src)
    r = dict(src.rejected)
    assert list(src) == a and src.rejected == r == {"unknown_instrument": 1}


# --- dirty data --------------------------------------------------------------------------------


def test_malformed_quote_rows_are_counted_not_fatal(tmp_path: Path) -> None:
    q = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
1,AAA,10.00,1,10.01,1
2,AAA,NaN,1,10.01,1
3,AAA,-10.00,1,10.01,1
4,AAA,10.02,1,10.01,1
5,AAA,10.01,1,10.01,1
6,XYZ,10.00,1,10.01,1
7,AAA,,1,10.01,1
8,AAA,ten,1,10.01,1
nope,AAA,10.00,1,10.01,1
10,AAA,10.00,-1,10.01,1
11,AAA,10.00,1
12,AAA,0.001,1,10.01,1
13,AAA,inf,1,10.01,1
,AAA,10.00,1,10.01,1
15,AAA,10.00,1,10.01,1
""",
    )
    src = ReplaySource(INS, quotes=q)
    out = list(src)
    assert [m.ts_event for m in out] == [1, 15]
    assert src.rejected == {
        "nan_value": 2,
        "non_positive_price": 2,
        "crossed": 2,
        "unknown_instrument": 1,
        "missing_value": 1,
        "unparsable": 1,
        "bad_time": 2,
        "bad_size": 1,
        "malformed_row": 1,
    }


def test_malformed_trade_and_bar_rows(tmp_path: Path) -> None:
    t = _csv(
        tmp_path / "t.csv",
        """
ts_event,instrument_id,px,qty,side
1,1,10,1,buy
2,1,10,0,buy
3,1,10,1,sideways
4,99,10,1,sell
5,x,10,1,sell
6,7,65000.5,0.001,s
""",
    )
    b = _csv(
        tmp_path / "b.csv",
        """
date,symbol,open,high,low,close,volume
2020-01-01,AAA,10,11,9,10,5
2020-01-02,AAA,10,9,9,10,5
2020-01-03,AAA,10,11,10.5,10,5
2020-01-04,AAA,10,11,9,10,-5
2020-01-05,AAA,10,11,9,0,5
not a date,AAA,10,11,9,10,5
""",
    )
    src = ReplaySource(INS, trades=t, bars=b)
    out = list(src)
    assert [type(m) for m in out] == [Trade, Trade, Bar]
    assert out[1].instrument_id == 7 and out[1].qty == 1
    assert src.rejected == {
        "bad_size": 2,
        "bad_side": 1,
        "unknown_instrument": 2,
        "bad_ohlc": 2,
        "non_positive_price": 1,
        "bad_time": 1,
    }


ROW = st.tuples(
    st.one_of(st.integers(-5, 10**6).map(str), st.sampled_from(["", "x", "1.5", "NaN"])),
    st.sampled_from(["AAA", "BTC-USD", "ZZZ", ""]),
    st.one_of(
        st.decimals(-10, 10**5, places=3, allow_nan=True).map(str),
        st.sampled_from(["", "abc", "1e400"]),
    ),
    st.one_of(st.decimals(-5, 10**4, places=3, allow_nan=False).map(str), st.just("")),
    st.one_of(st.decimals(-10, 10**5, places=3, allow_nan=True).map(str), st.just("inf")),
    st.one_of(st.decimals(-5, 10**4, places=3, allow_nan=False).map(str), st.just("?")),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(ROW, max_size=40))
def test_any_rows_never_crash_and_every_row_is_accounted(tmp_path: Path, rows: list) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_text(
        "ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty\n"
        + "".join(",".join(r) + "\n" for r in rows)
    )
    src = ReplaySource(INS, quotes=path)
    out = list(src)
    assert len(out) + sum(src.rejected.values()) == len(rows)
    assert [m.ts_event for m in out] == sorted(m.ts_event for m in out)
    for m in out:
        assert 0 < m.bid_px < m.ask_px and m.bid_qty >= 0 and m.ask_qty >= 0


# --- configuration errors ----------------------------------------------------------------------


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"quotes file .*nope\.csv.*not found"):
        ReplaySource(INS, quotes=tmp_path / "nope.csv")


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    q = _csv(tmp_path / "q.csv", "ts_event,symbol,bid_px,bid_qty,ask_px\n1,AAA,1,1,2")
    with pytest.raises(ValueError, match=r"q\.csv.*'ask_qty'"):
        ReplaySource(INS, quotes=q)
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"ts_event": [1], "symbol": ["AAA"], "px": [1.0], "qty": [1.0]}), p)
    with pytest.raises(ValueError, match=r"t\.parquet.*'side'"):
        ReplaySource(INS, trades=p)
    b = _csv(tmp_path / "b.csv", "ts,open,high,low,close,volume\n1,1,1,1,1,1")
    with pytest.raises(ValueError, match=r"b\.csv.*'symbol'"):
        ReplaySource(INS, bars=b)
    assert len(list(ReplaySource(INS, bars=b, symbol="AAA"))) == 1


def test_unsupported_or_empty_file(tmp_path: Path) -> None:
    j = tmp_path / "q.json"
    j.write_text("{}")
    with pytest.raises(ValueError, match="unsupported"):
        ReplaySource(INS, quotes=j)
    e = tmp_path / "e.csv"
    e.write_text("")
    with pytest.raises(ValueError, match="e.csv"):
        ReplaySource(INS, quotes=e)


# --- daily bars helper -------------------------------------------------------------------------


def test_load_bars_csv_yahoo_style(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "spx.csv",
        """
Date,Open,High,Low,Close,Adj Close,Volume
2018-12-28,2498.77,2520.27,2472.89,2485.74,2485.74,2442510000
2018-12-27,2442.50,2489.10,2397.94,2488.83,2488.83,2630860000
2018-12-31,2498.94,2509.24,2482.82,2506.85,2506.85,
""",
    )
    spx = Instrument(instrument_id=3, symbol="SPX", tick_size=0.01, lot_size=1.0)
    rejected: dict[str, int] = {}
    bars = load_bars_csv(path, spx, rejected=rejected)
    assert rejected == {"missing_value": 1}
    day = 1_545_868_800 * 10**9  # 2018-12-27T00:00Z
    assert bars == [
        Bar(3, day, day + DAY_NS, 244250, 248910, 239794, 248883, 2630860000),
        Bar(3, day + DAY_NS, day + 2 * DAY_NS, 249877, 252027, 247289, 248574, 2442510000),
    ]


def test_load_bars_adjusted(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "x.csv",
        """
date,open,high,low,close,adj_close,volume
2020-08-28,500,505,495,500,125,10
2020-08-31,126,130,120,125,125,40
""",
    )
    ins = Instrument(instrument_id=4, symbol="X", tick_size=0.01)
    raw = load_bars_csv(path, ins)
    adj = load_bars_csv(path, ins, adjusted=True)
    assert [b.close for b in raw] == [50000, 12500]
    assert [(b.open, b.high, b.low, b.close) for b in adj] == [
        (12500, 12625, 12375, 12500),
        (12600, 13000, 12000, 12500),
    ]


# --- LOBSTER -----------------------------------------------------------------------------------


def _lobster_files(tmp_path: Path) -> tuple[Path, Path]:
    msg = _csv(
        tmp_path / "AAA_message_2.csv",
        """
34200.000000000,1,1,100,1000100,-1
34200.500000000,1,2,10,1000000,1
34201.000000000,4,1,40,1000100,-1
34202.000000000,3,3,30,1000200,-1
""",
    )
    book = _csv(
        tmp_path / "AAA_orderbook_2.csv",
        """
1000100,100,1000000,50,1000200,30,999900,20
1000100,100,1000000,60,1000200,30,999900,20
1000100,60,1000000,60,1000200,30,999900,20
1000100,60,1000000,60,9999999999,0,999900,20
""",
    )
    return msg, book


def test_from_lobster(tmp_path: Path) -> None:
    msg, book = _lobster_files(tmp_path)
    src = ReplaySource.from_lobster(msg, book, levels=2, instrument_id=1, price_divisor=100)
    out = list(src)
    t0 = 34_200 * 10**9
    assert out[0] == BookSnapshot(1, [10000, 9999], [50, 20], [10001, 10002], [100, 30], t0, t0, 0)
    assert out[1:] == [
        BookDelta(1, Side.BUY, 10000, 60, t0 + 500_000_000, t0 + 500_000_000, 1),
        Trade(1, 10001, 40, Side.BUY, t0 + 10**9, t0 + 10**9, 1),
        BookDelta(1, Side.SELL, 10001, 60, t0 + 10**9, t0 + 10**9, 2),
        BookDelta(1, Side.SELL, 10002, 0, t0 + 2 * 10**9, t0 + 2 * 10**9, 3),
    ]
    with pytest.raises(ValueError, match="not found"):
        ReplaySource.from_lobster(tmp_path / "x.csv", book, 2, 1)


# --- rows named, policy, garbage lines ---------------------------------------------------------


def test_rejected_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    q = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
1,AAA,10.00,1,10.01,1

2,AAA,10.00,1
3,AAA,10.02,1,10.01,1
4,AAA,10.00,1,10.01,1
""",
    )
    seen: list[tuple[str, str, int]] = []
    rejects = RejectCounter(sink=lambda reason, n: None)
    src = ReplaySource(INS, quotes=q, rejects=rejects)
    orig = rejects.reject

    def spy(reason: str, where: str = "", row: int = -1, detail: str = "") -> None:
        seen.append((reason, where, row))
        orig(reason, where, row, detail)

    rejects.reject = spy  # type: ignore[method-assign]
    assert [m.ts_event for m in src] == [1, 4]
    # the blank line 3 is no row; the 3-field line 4 and the crossed line 5 are named
    assert seen == [
        ("malformed_row", f"quotes file {q}", 4),
        ("crossed", f"quotes file {q}", 5),
    ]
    assert rejects.counts == {"malformed_row": 1, "crossed": 1} == src.rejected


def test_fail_policy_raises_at_the_first_bad_row(tmp_path: Path) -> None:
    q = _csv(
        tmp_path / "q.csv",
        """
ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty
1,AAA,10.00,1,10.01,1
2,AAA,NaN,1,10.01,1
3,AAA,10.00,1,10.01,1
""",
    )
    src = ReplaySource(INS, quotes=q, rejects=RejectCounter("fail"))
    it = iter(src)
    assert next(it).ts_event == 1
    with pytest.raises(BadRowError, match=r"quotes file .*q\.csv row 3: nan_value") as e:
        next(it)
    assert (e.value.row, e.value.reason) == (3, "nan_value")


def test_parquet_rows_are_rejected_the_same_way(tmp_path: Path) -> None:
    p = tmp_path / "q.parquet"
    pq.write_table(
        pa.table(
            {
                "ts_event": [1, 2, 3, 4, 5, 6],
                "symbol": ["AAA", "AAA", "AAA", "ZZZ", "AAA", "AAA"],
                "bid_px": [10.0, float("nan"), 10.02, 10.0, -1.0, 10.0],
                "bid_qty": [1.0, 1.0, 1.0, 1.0, 1.0, -3.0],
                "ask_px": [10.01, 10.01, 10.01, 10.01, 10.01, 10.01],
                "ask_qty": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            }
        ),
        p,
    )
    rejects = RejectCounter()
    src = ReplaySource(INS, quotes=p, rejects=rejects)
    assert [m.ts_event for m in src] == [1]
    assert (
        src.rejected
        == rejects.counts
        == {
            "nan_value": 1,
            "crossed": 1,
            "unknown_instrument": 1,
            "non_positive_price": 1,
            "bad_size": 1,
        }
    )
    with pytest.raises(BadRowError, match=r"q\.parquet row 2: nan_value"):
        list(ReplaySource(INS, quotes=p, rejects=RejectCounter("fail")))


GARBAGE_LINE = st.text(
    # no quote (a CSV quote may legally span lines) and no line breaks: one line each
    alphabet=st.characters(blacklist_characters='\n\r"', blacklist_categories=("Cs",)),
    max_size=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            GARBAGE_LINE, ROW.map(",".join), st.sampled_from(["5,AAA,10.00,1,10.01,1", " ", ""])
        ),
        max_size=40,
    )
)
def test_garbage_lines_never_crash_and_every_line_is_accounted(
    tmp_path: Path, lines: list[str]
) -> None:
    path = tmp_path / "garbage.csv"
    path.write_text(
        "ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty\n" + "".join(x + "\n" for x in lines)
    )
    src = ReplaySource(INS, quotes=path, rejects=RejectCounter(log_first=0))
    out = list(src)
    rows = sum(1 for x in lines if x)  # empty lines are no rows
    assert len(out) + sum(src.rejected.values()) == rows
    assert [m.ts_event for m in out] == sorted(m.ts_event for m in out)
