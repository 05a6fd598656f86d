"""The market-data catalog (engine/catalog*.py, ops/data_cmds.py): what is written is read back
exactly, a filtered read opens only what it needs, reads stream in bounded batches, books open
correctly inside a window, every import kind lands with its bad rows counted, and a backtest
from the catalog trades exactly as the replay of the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.catalog import DAY_NS, SNAPSHOT, CatalogWriter, list_catalog
from engine.catalog_read import CatalogSource, window_ns
from engine.catalog_rows import BookRows, message_batches
from engine.instruments import Instrument
from engine.md_rejects import BadRowError, RejectCounter
from engine.messages import BookDelta, BookSnapshot, Quote, Trade
from ops.config import ConfigError, load_config
from tests.conftest import shared_data_dir
from tests.test_engine_e2e import set_key, write_config

T0 = 1_723_161_000_000_000_000  # 2024-08-08 23:50 UTC
BTC = Instrument(instrument_id=1, symbol="BTC/USDT", tick_size=0.01, lot_size=0.001)
ETH = Instrument(instrument_id=2, symbol="ETH/USDT", tick_size=0.01, lot_size=0.01)
LOBSTER = shared_data_dir() / "lobster"
BINANCE = shared_data_dir() / "binance" / "btcusdt_20240808_ws.jsonl.gz"


def _book_stream(n: int, step: int = 10**9) -> list[object]:
    """A BTC book (snapshot, deltas, a trade every 7th) crossing midnight, and ETH quotes."""
    out: list[object] = [BookSnapshot(1, [100, 99], [5, 6], [101, 102], [7, 8], T0, T0, 0)]
    for k in range(1, n):
        ts = T0 + k * step
        if k % 7 == 0:
            out.append(Trade(1, 101, 1, 1, ts, ts, k))
        out.append(
            BookDelta(1, 1 if k % 2 else -1, 99 - k % 5 if k % 2 else 102 + k % 5, k, ts, ts, k)
        )
        out.append(Quote(2, 10, 1, 11, k, ts, ts, k))
    return out


def _write(root: Path, msgs: list[object], part: str = "stream", **kw) -> CatalogWriter:  # type: ignore[no-untyped-def]
    with CatalogWriter(root, "x", part, [BTC, ETH], **kw) as w:
        for rows in BookRows().feed(message_batches(msgs, batch_rows=kw.pop("batch", 1000))):
            w.write(rows)
    return w


def _book_at(msgs: list[object], iid: int, until: int) -> tuple[dict[int, int], dict[int, int]]:
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for m in msgs:
        if m.ts_event >= until or getattr(m, "instrument_id", -1) != iid:
            continue
        if type(m) is BookSnapshot:
            bids, asks = (
                dict(zip(m.bid_px, m.bid_qty, strict=True)),
                dict(zip(m.ask_px, m.ask_qty, strict=True)),
            )
        elif type(m) is BookDelta:
            side = bids if m.side == 1 else asks
            if m.qty:
                side[m.px] = m.qty
            else:
                side.pop(m.px, None)
    return bids, asks


def test_round_trip_is_exact_typed_and_partitioned(tmp_path: Path) -> None:
    msgs = _book_stream(1500)  # 25 minutes from 23:50: two dates
    _write(tmp_path, msgs)
    src = CatalogSource(tmp_path, [BTC, ETH])
    assert list(src) == msgs  # the snapshot first (preamble), then everything in order
    assert [type(m) for m in src.preamble()] == [BookSnapshot]
    days = sorted(p.name for p in (tmp_path / "venue=x" / "instrument=BTC%2FUSDT").iterdir())
    assert days == ["date=2024-08-08", "date=2024-08-09"]
    f = next((tmp_path / "venue=x" / "instrument=BTC%2FUSDT" / "date=2024-08-09").glob("*.parquet"))
    schema = pq.read_schema(f)
    assert schema.field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("px").type == pa.int64() and schema.field("qty").type == pa.int64()
    kinds = pq.read_table(f).column("kind").to_pylist()
    assert kinds[0] == SNAPSHOT  # a day of a book opens with its book: readable on its own
    # the ids are the reader's: the same catalog read with other instrument ids
    other = [Instrument(instrument_id=9, symbol="ETH/USDT", tick_size=0.01, lot_size=0.01)]
    got = list(CatalogSource(tmp_path, other))
    assert got and all(m.instrument_id == 9 for m in got) and len(got) == 1499


def test_a_filtered_read_opens_only_the_matching_partitions_and_row_groups(tmp_path: Path) -> None:
    msgs = _book_stream(3000, step=10**8)
    _write(tmp_path, msgs, row_group_rows=200)
    total_groups = sum(pq.ParquetFile(p).num_row_groups for p in tmp_path.rglob("*.parquet"))
    start, end = T0 + 1000 * 10**8, T0 + 1100 * 10**8
    src = CatalogSource(tmp_path, [BTC, ETH], symbols=["ETH/USDT"], start_ns=start, end_ns=end)
    got = [r for b in src.batches() for r in b.tolist()]
    want = [m for m in msgs if type(m) is Quote and start <= m.ts_event < end]
    assert len(got) == len(want) == 100
    assert src.stats["files"] == 1  # one instrument, one day: BTC's files never opened
    assert src.stats["row_groups"] <= 2 < total_groups  # statistics pruned the rest
    assert src.stats["rows_read"] <= 400
    day2 = CatalogSource(tmp_path, [BTC, ETH], start_ns=T0 + DAY_NS)  # nothing there
    assert list(day2) == [] and day2.stats["files"] == 0


def test_reads_stream_in_bounded_batches(tmp_path: Path) -> None:
    msgs = _book_stream(4000, step=10**8)
    _write(tmp_path, msgs, row_group_rows=256)
    src = CatalogSource(tmp_path, [BTC, ETH], batch_rows=300)
    it = src.batches()
    first = next(it)
    assert len(first) == 300
    assert src.stats["rows_read"] < 1500  # the first batch came before the files were read
    sizes = [len(first)] + [len(b) for b in it]
    assert max(sizes) <= 300 and sum(sizes) == len(msgs) - 1
    rows = np.concatenate(list(CatalogSource(tmp_path, [BTC, ETH], batch_rows=300).batches()))
    assert (np.diff(rows["ts_event"]) >= 0).all()


def test_a_read_holds_a_few_batches_never_the_table(tmp_path: Path) -> None:
    from engine.md_columns import empty

    n = 400_000
    rows = empty(n)
    rows["ts_event"] = T0 + np.arange(n) * 1000
    rows["instrument_id"] = 1 + np.arange(n) % 2
    rows["kind"], rows["bid_px"], rows["ask_px"] = 1, 100, 101
    with CatalogWriter(tmp_path, "x", "quotes", [BTC, ETH], row_group_rows=2048) as w:
        w.write(rows)
    base = pa.total_allocated_bytes()
    peak = seen = 0
    for b in CatalogSource(tmp_path, [BTC, ETH], batch_rows=2048).batches():
        peak = max(peak, pa.total_allocated_bytes() - base)
        seen += len(b)
    assert seen == n
    assert peak < rows.nbytes / 5  # Arrow's buffers: a few row groups per file (no read-ahead)


def test_a_window_inside_a_book_day_opens_with_the_book_at_its_start(tmp_path: Path) -> None:
    msgs = _book_stream(1500)
    _write(tmp_path, msgs)
    start = T0 + 700 * 10**9 + 1  # the 2024-08-09 file, after its opening snapshot
    src = CatalogSource(tmp_path, [BTC, ETH], start_ns=start)
    (snap,) = src.preamble()
    bids, asks = _book_at(msgs, 1, start)
    assert dict(zip(snap.bid_px, snap.bid_qty, strict=True)) == bids
    assert dict(zip(snap.ask_px, snap.ask_qty, strict=True)) == asks
    assert snap.seq == 700 and snap.ts_event < start
    assert list(src)[1:] == [m for m in msgs if m.ts_event >= start]
    # a window narrowed later (a sweep's) is pushed down the same way
    narrow = CatalogSource(tmp_path, [BTC, ETH]).narrowed(start, None)
    assert narrow.preamble() == [snap] and list(narrow) == list(src)


def test_a_book_with_a_missing_day_is_refused(tmp_path: Path) -> None:
    msgs = _book_stream(1500)
    _write(tmp_path, msgs)
    later = [BookDelta(1, 1, 90, 1, T0 + 3 * DAY_NS, T0 + 3 * DAY_NS, 5000)]
    _write(tmp_path, later, part="later")
    with pytest.raises(ValueError, match="no data between 2024-08-09 and 2024-08-11"):
        CatalogSource(tmp_path, [BTC, ETH]).preamble()
    # either side of the gap reads
    assert list(CatalogSource(tmp_path, [BTC], start_ns=T0 + 2 * DAY_NS))[-1] == later[0]


def test_an_import_closes_the_days_it_is_done_with_and_reopens_them_in_order(
    tmp_path: Path,
) -> None:
    msgs = _book_stream(400)
    btc = [m for m in msgs if m.instrument_id == 1]
    far = [Quote(2, 10, 1, 11, 1, T0 + 3 * DAY_NS, T0 + 3 * DAY_NS)]
    with CatalogWriter(tmp_path, "x", "stream", [BTC, ETH]) as w:
        rows = BookRows()
        for part in (btc[:200], far, btc[200:]):  # day 3 retires day 1's file; day 1 again
            for r in rows.feed(message_batches(part)):
                w.write(r)
    day1 = tmp_path / "venue=x" / "instrument=BTC%2FUSDT" / "date=2024-08-08"
    assert len(list(day1.glob("stream-*.parquet"))) == 2
    assert list(CatalogSource(tmp_path, [BTC])) == btc
    start = btc[300].ts_event  # in the second file: the fold reads both
    (snap,) = CatalogSource(tmp_path, [BTC], start_ns=start).preamble()
    assert (
        dict(zip(snap.bid_px, snap.bid_qty, strict=True)),
        dict(zip(snap.ask_px, snap.ask_qty, strict=True)),
    ) == _book_at(btc, 1, start)


def test_units_and_order_are_guarded(tmp_path: Path) -> None:
    _write(tmp_path, _book_stream(20))
    coarse = Instrument(instrument_id=1, symbol="BTC/USDT", tick_size=0.1, lot_size=0.001)
    with pytest.raises(ValueError, match="tick_size 0.01"):
        CatalogWriter(tmp_path, "x", "more", [coarse])
    with pytest.raises(ValueError, match="tick_size 0.01"):
        CatalogSource(tmp_path, [coarse])
    rejects = RejectCounter()
    late = [Quote(2, 10, 1, 11, 1, T0 + 10, T0 + 10), Quote(2, 10, 1, 11, 1, T0 + 5, T0 + 5)]
    late.append(Quote(7, 10, 1, 11, 1, T0 + 11, T0 + 11))
    _write(tmp_path, late, part="quotes", rejects=rejects)
    assert rejects.counts == {"out_of_order_time": 1, "unknown_instrument": 1}
    with pytest.raises(BadRowError, match="out_of_order_time"):
        _write(tmp_path, late, part="quotes2", rejects=RejectCounter("fail"))
    assert not list(tmp_path.rglob("quotes2-*")) and not list(tmp_path.rglob(".tmp-*"))
    assert window_ns("2024-08-09") == T0 - T0 % DAY_NS + DAY_NS
    assert window_ns("2024-08-09", end=True) == window_ns("2024-08-10")
    stray = next(tmp_path.rglob("quotes-*.parquet")).with_name("quotes-x-0000.parquet")
    pq.write_table(pa.table({"ts_event": [1]}), stray)
    with pytest.raises(ValueError, match="not a part file of a catalog"):
        CatalogSource(tmp_path, [ETH]).preamble()
    stray.unlink()
    (tmp_path / "_instruments.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a catalog index"):
        CatalogSource(tmp_path, [ETH])
    assert window_ns("2024-08-09T02:00:00+02:00") == window_ns("2024-08-09T00:00:00Z")
    assert window_ns("2024-08-09T00:00:00.000000001") == window_ns("2024-08-09") + 1


# --- the imports ---------------------------------------------------------------------------------


def _cli(*args: str) -> int:
    from ops.cli import main

    return main(list(args))


def _quotes_csv(path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    lines = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    t0 = 1_700_000_000_000_000_000
    for sym, p0 in (("AAPL", 190.0), ("MSFT", 410.0)):
        mid = p0 * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
        for k in range(n):
            b = round(mid[k] - 0.01, 2)
            q1, q2 = rng.integers(1, 500, 2)
            lines.append(
                f"{t0 + k * 50_000_000 + (7 if sym == 'MSFT' else 0)},{sym},{b:.2f},{q1},{b + 0.02:.2f},{q2}"
            )
    lines += [f"{t0 + 5},AAPL,nan,1,2,3", f"{t0 + 6},AAPL,10,1,9,3", f"{t0 + 8},AAPL,10,1"]
    path.write_text("\n".join(lines) + "\n")


def test_import_quotes_and_trades_counts_bad_rows(tmp_path: Path, engine_id: str, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, engine_id)
    cat = tmp_path / "cat"
    _quotes_csv(tmp_path / "q.csv", 50)
    (tmp_path / "t.csv").write_text(
        "ts_event,symbol,px,qty,side\n1700000000000000001,AAPL,190.01,5,buy\n"
        "1700000000000000002,AAPL,190.01,0,buy\n1700000000000000003,XOM,abc,5,sell\n"
    )
    assert (
        _cli(
            "data",
            "import",
            "quotes",
            str(tmp_path / "q.csv"),
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            "--venue",
            "sim",
            "--json",
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["rejected"] == {"crossed": 1, "malformed_row": 1, "nan_value": 1}
    assert out["written"] == {"sim/AAPL/2023-11-14": 50, "sim/MSFT/2023-11-14": 50}
    assert (
        _cli(
            "data",
            "import",
            "trades",
            str(tmp_path / "t.csv"),
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            "--venue",
            "sim",
        )
        == 0
    )
    text = capsys.readouterr().out
    assert (
        "sim/AAPL/2023-11-14: 1 rows" in text and "rejected: 2 (bad_size 1, unparsable 1)" in text
    )
    assert _cli("data", "ls", "--config", str(cfg), "--catalog", str(cat)) == 0
    ls = capsys.readouterr().out.splitlines()
    assert ls[0].split() == ["venue", "instrument", "first", "last", "days", "rows", "MiB", "parts"]
    assert ls[1].split()[:6] == ["sim", "AAPL", "2023-11-14", "2023-11-14", "1", "51"]
    assert ls[1].split()[-1] == "quotes,trades"
    # the same file again replaces its part, never doubles it
    assert (
        _cli(
            "data",
            "import",
            "quotes",
            str(tmp_path / "q.csv"),
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            "--venue",
            "sim",
        )
        == 0
    )
    assert [r["rows"] for r in list_catalog(cat)] == [51, 50]
    # an instrument the config lacks needs its units
    assert (
        _cli(
            "data",
            "import",
            "quotes",
            str(tmp_path / "q.csv"),
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            "--symbol",
            "ZZZ",
        )
        == 2
    )
    capsys.readouterr()
    # Parquet input, typed columns: the same reader, the same reasons
    t0 = 1_700_000_000_000_000_000
    pq.write_table(
        pa.table(
            {
                "ts_event": pa.array([t0 + 1, t0 + 2], pa.timestamp("ns", "UTC")),
                "symbol": ["AAPL", "AAPL"],
                "bid_px": [190.0, float("nan")],
                "bid_qty": [1, 1],
                "ask_px": [190.02, 191.0],
                "ask_qty": [2, 2],
            }
        ),
        tmp_path / "q.parquet",
    )
    pq_args = ("--config", str(cfg), "--catalog", str(cat), "--venue", "pq", "--json")
    assert _cli("data", "import", "quotes", str(tmp_path / "q.parquet"), *pq_args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"written": {"pq/AAPL/2023-11-14": 1}, "rejected": {"nan_value": 1}}
    aapl = load_config(cfg).instrument_table().by_symbol("AAPL")
    got = list(CatalogSource(cat, [aapl], venue="pq"))
    assert got == [Quote(aapl.instrument_id, 19000, 1, 19002, 2, t0 + 1, t0 + 1, 1)]


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="../shared/data/lobster absent")
def test_import_lobster_replays_as_the_pair_does(tmp_path: Path, engine_id: str) -> None:
    from engine.sources.replay import ReplaySource

    cfg = write_config(tmp_path, engine_id)
    m = LOBSTER / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
    o = LOBSTER / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
    assert (
        _cli(
            "data",
            "import",
            "lobster",
            str(m),
            str(o),
            "--config",
            str(cfg),
            "--catalog",
            str(tmp_path / "cat"),
        )
        == 0
    )
    aapl = load_config(cfg).instrument_table().by_symbol("AAPL")
    date_ns = 1_340_236_800 * 10**9  # 2012-06-21 UTC
    want = list(ReplaySource.from_lobster(m, o, 10, aapl.instrument_id, date_ns=date_ns))
    got = list(CatalogSource(tmp_path / "cat", [aapl], venue="nasdaq"))
    assert got == want and type(got[0]) is BookSnapshot


@pytest.mark.skipif(not BINANCE.is_file(), reason="../shared/data/binance absent")
def test_import_binance_capture_builds_binances_book(
    tmp_path: Path, engine_id: str, capsys
) -> None:  # type: ignore[no-untyped-def]
    from tests.venues import binance_capture as bc

    cfg = write_config(tmp_path, engine_id)
    cat = tmp_path / "cat"
    args = ("--symbol", "BTC/USDT", "--tick-size", "0.01", "--lot-size", "0.00001", "--json")
    assert (
        _cli(
            "data",
            "import",
            "binance",
            str(BINANCE),
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            *args,
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["rejected"] == {} and set(out["written"]) == {
        "binance/BTC/USDT/2024-08-08",
        "binance/BTC/USDT/2024-08-09",  # the capture crosses midnight UTC
    }
    ins = Instrument(instrument_id=1, symbol="BTC/USDT", tick_size=0.01, lot_size=0.00001)
    msgs = list(CatalogSource(cat, [ins]))
    counts = {t: sum(type(m) is t for m in msgs) for t in (Quote, Trade, BookSnapshot)}
    # trades and tickers come before the book's snapshot: the book enters as the deltas that
    # build it (a columnar source has snapshots only before its rows)
    assert counts == {Quote: 28_040, Trade: 9_757, BookSnapshot: 0}
    ts = [m.ts_event for m in msgs]
    assert ts == sorted(ts)
    ref = bc.ReferenceBook(bc.load().snapshot)
    for diff in bc.load().depth_diffs():
        ref.apply(diff)
    bids, asks = _book_at(msgs, 1, 1 << 62)
    rb, ra = ref.levels()
    assert bids == {ins.px_to_ticks(p): ins.qty_to_lots(q) for p, q in rb}
    assert asks == {ins.px_to_ticks(p): ins.qty_to_lots(q) for p, q in ra}


_CAPTURE = """\
1 {"stream":"btcusdt@depth@100ms","data":{"E":1723161255208,"U":10,"u":12,"b":[["100.00","1.0"]],"a":[]}}
2 {"lastUpdateId":11,"bids":[["100.00","0.5"],["99.00","1.0"]],"asks":[["101.00","1.0"]]}
3 {"stream":"btcusdt@bookTicker","data":{"u":13,"s":"BTCUSDT","b":"100.00","B":"1.0","a":"101.00","A":"2.0"}}
4 {"stream":"btcusdt@trade","data":{"E":1723161255300,"t":5,"p":"100.50","q":"0.1","T":1723161255299,"m":true}}
5 {"stream":"btcusdt@depth@100ms","data":{"E":1723161255308,"U":13,"u":14,"b":[["100.00","0"]],"a":[]}}
6 {"stream":"btcusdt@trade","data":{"E":1,"t":99999999999999999999999,"p":"1","q":"1","T":1,"m":true}}
7 {"stream":"btcusdt@trade","data":{"E":1,"t":6,"p":"1e999999999","q":"1","T":1723161255301,"m":true}}
8 {"stream":"btcusdt@trade","data":[1,2]}
9 {"stream":"btcusdt@bookTicker","data":{"u":15,"s":"BTCUSDT","b":"101.00","B":"1.0","a":"100.00","A":"2.0"}}
garbage
10 {"stream":"btcusdt@kline_1m","data":{}}
11 {"stream":"btcusdt@depth@100ms","data":{"E":1723161255408,"U":20,"u":21,"b":[],"a":[]}}
12 {"stream":"btcusdt@depth@100ms","data":{"E":1723161255508,"U":22,"u":23,"b":[],"a":[]}}
"""


def test_a_binance_capture_s_bad_lines_are_counted_never_raised(tmp_path: Path) -> None:
    from engine.sources.binance_capture import capture_messages

    path = tmp_path / "c.jsonl"
    path.write_text(_CAPTURE + "13 " + "[" * 100_000 + "\n")
    ins = Instrument(instrument_id=1, symbol="BTC/USDT", tick_size=0.01, lot_size=0.00001)
    rejects = RejectCounter()
    got = list(capture_messages(path, ins, rejects=rejects))
    assert rejects.counts == {"unparsable": 5, "crossed": 1, "bad_message": 3}
    e0, e1 = 1723161255208 * 10**6, 1723161255308 * 10**6
    assert got == [
        BookSnapshot(1, [10000, 9900], [50000, 100000], [10100], [100000], e0, e0, 0),
        BookDelta(1, 1, 10000, 100000, e0, e0, 1),
        Quote(1, 10000, 100000, 10100, 200000, e0, e0, 13),  # the latest exchange time
        Trade(1, 10050, 10000, -1, e0 + 91_000_000, e0 + 91_000_000, 5),
        BookDelta(1, 1, 10000, 0, e1, e1, 2),
    ]


def test_import_a_recorded_run_from_postgres(
    tmp_path: Path, engine_id: str, pg_dsn: str, capsys
) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from ops.store.migrate import migrate

    cfg = write_config(tmp_path, engine_id)
    # the configured database (an autocommit connection)
    cfg.write_text(set_key(cfg.read_text(), "storage.postgres", "mode", f'"{pg_dsn}"'))
    t = 1_700_000_000_000_000_000
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO runs (run_id, engine_id) VALUES (7, 'x')")
        conn.execute(
            "INSERT INTO run_instruments VALUES (7, 41, 'AAPL', 0.01), (7, 42, 'MSFT', 0.01)"
        )
        conn.execute(
            f"CREATE TABLE quotes_d PARTITION OF quotes FOR VALUES FROM ({t}) TO ({t + DAY_NS})"
        )
        conn.execute(
            f"CREATE TABLE trades_d PARTITION OF trades FOR VALUES FROM ({t}) TO ({t + DAY_NS})"
        )
        q = [(41, 100, 5, 101, 5, t + k, k) for k in range(5)] + [(42, 200, 5, 199, 5, t + 9, 9)]
        q.append((43, 100, 5, 101, 5, t + 10, 10))  # an instrument the config does not know
        for iid, bp, bq, ap, aq, ts, seq in q:
            conn.execute(
                "INSERT INTO quotes VALUES (7, %s, %s, %s, %s, %s, %s, %s, %s)",
                (iid, bp, bq, ap, aq, ts, ts, seq),
            )
        conn.execute("INSERT INTO trades VALUES (7, 42, 200, 3, -1, %s, %s, 77)", (t + 3, t + 3))
    cat = tmp_path / "cat"
    assert (
        _cli(
            "data",
            "import",
            "postgres",
            "--config",
            str(cfg),
            "--catalog",
            str(cat),
            "--json",
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["rejected"] == {"crossed": 1, "unknown_instrument": 1}
    table = load_config(cfg).instrument_table()
    got = list(CatalogSource(cat, table, venue="gekko"))
    aapl, msft = table.by_symbol("AAPL").instrument_id, table.by_symbol("MSFT").instrument_id
    assert [type(m) for m in got] == [Quote] * 3 + [Trade] + [Quote] * 2
    assert got[3] == Trade(msft, 200, 3, -1, t + 3, t + 3, 77)
    assert {m.instrument_id for m in got if type(m) is Quote} == {aapl}
    again = ("--dsn", pg_dsn, "--run", "7", "--config", str(cfg), "--catalog", str(cat))
    assert _cli("data", "import", "postgres", *again) == 0  # the run's parts, replaced
    assert list(CatalogSource(cat, table, venue="gekko")) == got
    assert _cli("data", "import", "postgres", *again[:2], "--run", "8", *again[4:]) == 2


# --- the engine reads it -----------------------------------------------------------------------


def test_config_refuses_a_catalog_it_cannot_read(tmp_path: Path, engine_id: str) -> None:
    bad = write_config(
        tmp_path, engine_id, market=f'source = "catalog"\ncatalog_dir = "{tmp_path / "no"}"'
    )
    with pytest.raises(ConfigError, match="market.catalog_dir"):
        load_config(bad)
    (tmp_path / "cat").mkdir()
    bad = write_config(
        tmp_path,
        engine_id,
        market=f'source = "catalog"\ncatalog_dir = "{tmp_path / "cat"}"\ncatalog_start = "soon"',
    )
    with pytest.raises(ConfigError, match="market.catalog_start"):
        load_config(bad)
    from ops.preflight import preflight

    empty = write_config(
        tmp_path, engine_id, market=f'source = "catalog"\ncatalog_dir = "{tmp_path / "cat"}"'
    )
    with pytest.raises(ConfigError, match="import data first"):
        preflight(load_config(empty), "backtest")
    _write(tmp_path / "cat", _book_stream(5))  # BTC and ETH: none of the config's instruments
    with pytest.raises(ConfigError, match=r"none of the instruments \(AAPL, MSFT, XOM\)"):
        preflight(load_config(empty), "backtest")


def test_a_backtest_from_the_catalog_trades_as_the_replay_of_its_file(
    tmp_path: Path, engine_id: str
) -> None:
    from ops.backtest_build import build_backtest

    _quotes_csv(tmp_path / "q.csv", 400)
    cat = tmp_path / "cat"
    base = write_config(tmp_path, engine_id)
    assert (
        _cli(
            "data",
            "import",
            "quotes",
            str(tmp_path / "q.csv"),
            "--config",
            str(base),
            "--catalog",
            str(cat),
            "--venue",
            "sim",
        )
        == 0
    )
    runs = {}
    for name, market in (
        ("replay", f'source = "replay"\nreplay_quotes = "{tmp_path / "q.csv"}"'),
        ("catalog", f'source = "catalog"\ncatalog_dir = "{cat}"\ncatalog_venue = "sim"'),
    ):
        (tmp_path / name).mkdir()
        cfg = load_config(write_config(tmp_path / name, engine_id, market=market))
        bt = build_backtest(cfg)
        runs[name] = bt.runtime.run()
    r, c = runs["replay"], runs["catalog"]
    assert r["fills"] > 0 and r["ticks"] == c["ticks"] >= 800
    for key in ("intents", "new_orders", "fills", "positions", "pnl", "pnl_by_strategy"):
        assert c[key] == r[key], key


def test_a_sweep_window_on_the_catalog_opens_the_book_at_its_start(
    tmp_path: Path, engine_id: str
) -> None:
    """The backtest builder narrows a catalog to a window by pushing it down (cutting the rows
    afterwards would drop the day's opening snapshot, and the book with it)."""
    from ops.backtest_build import _columnar_market

    aapl = Instrument(instrument_id=1, symbol="AAPL", tick_size=0.01, lot_size=1.0)
    msgs = [m for m in _book_stream(900) if getattr(m, "instrument_id", 0) == 1]
    with CatalogWriter(tmp_path / "cat", "sim", "stream", [aapl]) as w:
        for rows in BookRows().feed(message_batches(msgs, batch_rows=1000)):
            w.write(rows)
    cfg = load_config(
        write_config(
            tmp_path,
            engine_id,
            market=f'source = "catalog"\ncatalog_dir = "{tmp_path / "cat"}"\ncatalog_venue = "sim"',
        )
    )
    start = T0 + 300 * 10**9 + 1
    src = _columnar_market(cfg, RejectCounter("skip"), (start, start + 100 * 10**9))
    (snap,) = src.preamble()
    bids, asks = _book_at(msgs, 1, start)
    assert dict(zip(snap.bid_px, snap.bid_qty, strict=True)) == bids
    assert dict(zip(snap.ask_px, snap.ask_qty, strict=True)) == asks
    rows = np.concatenate(list(src.batches()))
    assert rows["ts_event"].min() >= start and rows["ts_event"].max() < start + 100 * 10**9
