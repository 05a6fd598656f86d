"""ReplaySource's columnar form (engine.md_columns): preamble + batches carry the same data as
the message form (the exact path), with the same rejections, for files and LOBSTER pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book import L2Book
from engine.instruments import Instrument
from engine.lobster import write_lobster
from engine.md_columns import from_messages, is_columnar, to_messages
from engine.md_rejects import BadRowError, MdValidator, RejectCounter, validated
from engine.messages import BookDelta, BookSnapshot, Trade
from engine.sources.replay import ReplaySource
from tests.test_lobster import simulate_lobster

AAA = Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0)
BBB = Instrument(instrument_id=2, symbol="BBB", tick_size=0.5, lot_size=0.001)
LEVELS = 4


def _files(tmp_path: Path) -> dict[str, Path]:
    q, t, b = tmp_path / "q.csv", tmp_path / "t.csv", tmp_path / "b.csv"
    q.write_text(
        "ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty\n"
        "300,BBB,65000.5,0.125,65001.0,2\n100,AAA,100.01,10,100.02,5\n"
        "150,AAA,100.05,1,100.01,1\n"  # crossed: the source rejects it
        "200,AAA,100.10,1,100.30,0\n200,CCC,1,1,2,1\n"  # unknown symbol
        "250,BBB,nan,1,2,1\n"
    )
    t.write_text(
        "ts_event,symbol,px,qty,side\n120,AAA,100.02,3,buy\n200,AAA,100.02,0,sell\n"
        "210,BBB,65000.5,0.5,s\n210,AAA,100.05,1,x\n"
    )
    b.write_text("ts,symbol,open,high,low,close,volume\n0,AAA,1,2,1,2,10\n")
    return {"quotes": q, "trades": t, "bars": b}


def test_files_rows_equal_messages_and_rejections(tmp_path: Path) -> None:
    f = _files(tmp_path)
    ref_counter, row_counter = RejectCounter(log_first=0), RejectCounter(log_first=0)
    exact = ReplaySource([AAA, BBB], quotes=f["quotes"], trades=f["trades"], rejects=ref_counter)
    ref = list(validated(exact, MdValidator([1, 2]), ref_counter))
    src = ReplaySource([AAA, BBB], quotes=f["quotes"], trades=f["trades"], rejects=row_counter)
    assert is_columnar(src) and src.preamble() == []
    batches = list(src.batches(batch_rows=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert list(to_messages(np.concatenate(batches))) == ref
    assert row_counter.counts == ref_counter.counts == src.rejected
    assert sum(row_counter.counts.values()) == 5
    with_bars = ReplaySource([AAA], bars=f["bars"])
    assert not with_bars.columnar and not is_columnar(with_bars)
    with pytest.raises(TypeError):
        next(with_bars.batches())


def _pair(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    msgs, books = simulate_lobster(600, LEVELS, seed=seed)
    mp, op = tmp_path / "X_message_4.csv", tmp_path / "X_orderbook_4.csv"
    write_lobster(mp, op, msgs, books)
    return mp, op


def _lobster(mp: Path, op: Path, policy: str = "skip") -> ReplaySource:
    rej = RejectCounter(policy, log_first=0)
    return ReplaySource.from_lobster(mp, op, LEVELS, 1, date_ns=10**18, rejects=rej)


def test_clean_lobster_pair_rows_are_the_message_form(tmp_path: Path) -> None:
    src = _lobster(*_pair(tmp_path, 11))
    assert is_columnar(src)
    ref = list(src)
    rows = np.concatenate(list(src.batches(batch_rows=64)))
    assert [*src.preamble(), *to_messages(rows)] == ref
    assert isinstance(ref[0], BookSnapshot) and len(ref) > 600


def _dirty(mp: Path, op: Path) -> None:
    lines = mp.read_text().splitlines(keepends=True)
    lines[0] = "garbage\n"  # before the first good line
    lines[99] = "1,2,3\n"
    lines[100] = "1,2,3\n"
    f = lines[300].split(",")
    lines[300] = ",".join([f[0], f[1], f[2], "x", *f[4:]])
    mp.write_text("".join(lines))
    ob = op.read_text().splitlines(keepends=True)
    op.write_text("".join(ob[:-5]))


def _book_after(msgs: list[object]) -> tuple[list[int], ...]:
    book = L2Book(1, 4096)
    for m in msgs:
        if type(m) in (BookDelta, BookSnapshot):
            book.apply(m)
    return tuple(a.tolist() for s in (1, -1) for a in book.depth(s))


def test_dirty_lobster_pair_same_trades_deltas_books_and_counts(tmp_path: Path) -> None:
    mp, op = _pair(tmp_path, 12)
    _dirty(mp, op)
    exact = _lobster(mp, op)
    ref = list(exact)
    src = _lobster(mp, op)
    pre = src.preamble()
    rows = np.concatenate(list(src.batches(batch_rows=50)))
    got = [*pre, *to_messages(rows)]
    assert src.rejects.counts == exact.rejects.counts == {
        "malformed_row": 3, "unparsable": 1, "truncated": 5,
    }  # fmt: skip
    assert pre == ref[:1]
    # the trades and the deltas between resyncs are the message form's, in the same order;
    # a resync (a BookSnapshot there) is DELTA rows here, the last with the snapshot's seq
    snaps = {m.seq: i for i, m in enumerate(ref) if type(m) is BookSnapshot and m.seq}
    assert len(snaps) == 2  # after lines 100-101 and after line 301
    keep = [m for m in got[1:] if type(m) is Trade or (m.seq and m.seq not in snaps)]
    want = [m for m in ref[1:] if type(m) is not BookSnapshot]
    assert keep == want
    # and the book after each resync, and at the end, is the same
    for seq, i in snaps.items():
        j = next(j for j, m in enumerate(got) if type(m) is BookDelta and m.seq == seq)
        assert _book_after(got[: j + 1]) == _book_after(ref[: i + 1])
    assert _book_after(got) == _book_after(ref)
    assert from_messages(want).shape[0] > 500


def test_dirty_lobster_fail_policy_stops_after_the_same_rows(tmp_path: Path) -> None:
    mp, op = _pair(tmp_path, 13)
    _dirty(mp, op)
    src = _lobster(mp, op, "fail")
    with pytest.raises(BadRowError, match="row 1: malformed_row"):
        list(src.batches())
    lines = mp.read_text().splitlines(keepends=True)
    lines[0] = ""
    mp.write_text("".join(lines[1:]))
    op.write_text("".join(op.read_text().splitlines(keepends=True)[1:]))
    src, got = _lobster(mp, op, "fail"), []
    with pytest.raises(BadRowError, match="row 99: malformed_row"):
        for b in src.batches(batch_rows=40):
            got.append(b)
    exact, ref = _lobster(mp, op, "fail"), []
    with pytest.raises(BadRowError, match="row 99: malformed_row"):
        for m in exact:
            ref.append(m)
    assert [*src.preamble(), *to_messages(np.concatenate(got))] == ref


GOOD = st.decimals(1, 40, places=1)
CELL = st.one_of(
    GOOD.map(str),
    st.decimals(-3, 500, places=2, allow_nan=True).map(str),
    st.sampled_from(["", "abc", "1e400", "7", " 7 ", "0", "inf"]),
)
TS = st.integers(0, 12).map(str)
DIRTY_Q = st.tuples(
    st.one_of(TS, st.sampled_from(["-1", "", "x", "1970-01-01T00:00:00.000000005"])),
    st.sampled_from(["AAA", "BBB", "ZZZ", ""]),
    CELL, CELL, CELL, CELL,
)  # fmt: skip
CLEAN_Q = st.builds(
    lambda ts, sym, bid, spread, bq, aq: (ts, sym, str(bid), str(bq), str(bid + spread), str(aq)),
    TS,
    st.sampled_from(["AAA", "BBB"]),
    GOOD,
    st.decimals(0, 2, places=1),
    GOOD,
    GOOD,
)  # fmt: skip (a spread of 0 is a locked quote: rejected)
DIRTY_T = st.tuples(
    TS, st.sampled_from(["1", "2", "9", "", "x"]), CELL, CELL,
    st.sampled_from(["buy", "s", "0", "", "?", "-1"]), st.sampled_from(["", "0", "5", "x", "2.5"]),
)  # fmt: skip
CLEAN_T = st.tuples(
    TS, st.sampled_from(["1", "2"]), GOOD.map(str), GOOD.map(str),
    st.sampled_from(["buy", "s", "0", ""]), st.sampled_from(["", "", "0", "5"]),
)  # fmt: skip
QROW = st.one_of(CLEAN_Q, CLEAN_Q, DIRTY_Q)
TROW = st.one_of(CLEAN_T, CLEAN_T, DIRTY_T)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(quotes=st.lists(QROW, max_size=30), trades=st.lists(TROW, max_size=30))
def test_file_rows_equal_the_message_form_on_dirty_files(
    tmp_path: Path, quotes: list, trades: list
) -> None:
    q, t = tmp_path / "q.csv", tmp_path / "t.csv"
    q.write_text("ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty\n" + "".join(
        ",".join(r) + "\n" for r in quotes))  # fmt: skip
    t.write_text("time,instrument_id,px,qty,side,trade_id\n" + "".join(
        ",".join(r) + "\n" for r in trades))  # fmt: skip
    ref_counter, row_counter = RejectCounter(log_first=0), RejectCounter(log_first=0)
    exact = ReplaySource([AAA, BBB], quotes=q, trades=t, rejects=ref_counter)
    ref = list(validated(exact, MdValidator([1, 2]), ref_counter))
    src = ReplaySource([AAA, BBB], quotes=[q, q], trades=t, rejects=row_counter)
    src._files = src._files[:1] + src._files[2:]  # the same files (a second load: no cache)
    got = [b for b in src.batches(batch_rows=7)]
    rows = np.concatenate(got) if got else from_messages([])
    assert list(to_messages(rows)) == ref
    assert row_counter.counts == ref_counter.counts
