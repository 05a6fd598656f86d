"""LOBSTER replays heal the visible window: after every message the replayed book's top N is
LOBSTER's own reference row and never crossed, on the real days and on a hand-made pair whose
heal deltas are written out by hand; the numba kernel equals the Python reference throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.book import L2Book
from engine.lobster import (
    EMPTY_ASK_PX,
    EMPTY_BID_PX,
    MESSAGE_DTYPE,
    book_row,
    iter_book_deltas,
    read_lobster,
    write_lobster,
)
from engine.lobster_rows import lobster_rows
from engine.md_columns import from_messages
from engine.md_rejects import RejectCounter
from engine.messages import BookDelta
from engine.sources.replay import ReplaySource

LOBSTER = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"
DAYS = {
    "GOOG": "GOOG_2012-06-21_34200000_57600000_{}_5.csv",
    "AMZN": "AMZN_2012-06-21_34200000_57600000_{}_1.csv",
}
DIV = 100


def _rows_of(msgs: np.ndarray, books: np.ndarray) -> np.ndarray:
    got = list(lobster_rows(msgs, books, include_trades=True, batch_rows=8192))
    return np.concatenate(got) if got else from_messages([])


def _replay_and_check(msgs: np.ndarray, books: np.ndarray) -> L2Book:
    """Apply the kernel's rows message by message to a fresh L2Book and compare its top N with
    the reference row after each. Times are replaced by the line number (the replay does not
    read them otherwise), so each row's ``ts_event`` names the message it belongs to."""
    levels = books.shape[1] // 4
    msgs = msgs.copy()
    msgs["time_ns"] = np.arange(len(msgs))
    rows = _rows_of(msgs, books)
    book = L2Book(0, 4096)
    row0 = books[0]
    bp, bq, ap, aq = (row0[i::4] for i in (2, 3, 0, 1))
    b, a = (bq > 0) & (bp != EMPTY_BID_PX), (aq > 0) & (ap != EMPTY_ASK_PX)
    book.apply_snapshot(bp[b] // DIV, bq[b], ap[a] // DIV, aq[a], 0)
    deltas = rows[rows["kind"] == 3]
    ends = np.searchsorted(deltas["ts_event"], np.arange(len(msgs)), side="right")
    side, px, qty, seq = (deltas[c].tolist() for c in ("side", "px", "qty", "seq"))
    i = 0
    for k in range(1, len(msgs)):
        for j in range(i, int(ends[k])):
            book.apply_delta(side[j], px[j], qty[j], seq[j])
        i = int(ends[k])
        assert np.array_equal(book_row(book, levels, DIV), books[k]), k
        (bb, bq), (ba, aq) = book.best_bid(), book.best_ask()
        assert not (bq and aq and bb >= ba), k  # never crossed nor locked after a message
    assert i == len(deltas)
    assert book.gap_count == 0  # every heal delta has its own seq
    return book


@pytest.mark.parametrize("day", sorted(DAYS))
def test_real_day_replay_is_the_reference_after_every_message(day: str) -> None:
    mp, op = (LOBSTER / DAYS[day].format(w) for w in ("message", "orderbook"))
    if not mp.is_file():
        pytest.skip(f"{mp} is absent (no shared data checkout)")
    msgs, books = read_lobster(mp, op)
    book = _replay_and_check(msgs, books)
    # never crossed nor locked, not even between a message's delta and its heal
    assert book.crossed_count == 0 and book.locked_count == 0
    # the replay a backtest uses: the same rows, the heals counted
    src = ReplaySource.from_lobster(mp, op, books.shape[1] // 4, 1, DIV, rejects=RejectCounter())
    got = np.concatenate(list(src.batches()))
    ref = from_messages(iter_book_deltas(msgs, books, instrument_id=1, include_trades=True))
    assert np.array_equal(got, ref)  # the kernel equals the Python reference
    heals = src.lobster.heals
    assert heals > 1000  # real days need it (unknown deeper levels at the first row)
    assert len(ref[ref["kind"] == 3]) == heals + int(np.isin(msgs["type"][1:], (1, 2, 3, 4)).sum())
    assert sum(isinstance(m, BookDelta) for m in src) > 0 and src.lobster.heals == heals


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """Two levels; bid 98 exists before the first message but is not shown until row 1."""
    msgs = np.zeros(6, MESSAGE_DTYPE)
    rows = [  # (type, size, price, direction), then the reference after it
        ((1, 10, 100, 1), [(101, 10), (102, 5)], [(100, 10), (99, 5)]),
        ((4, 10, 100, 1), [(101, 10), (102, 5)], [(99, 5), (98, 7)]),  # 98 revealed
        ((1, 1, 95, 1), [(101, 10), (102, 5)], [(99, 5), (98, 7)]),  # deeper: kept
        ((5, 2, 99, 1), [(101, 10), (102, 5)], [(98, 7), (95, 1)]),  # 99 gone, unseen
        ((1, 4, 99, 1), [(101, 10), (102, 5)], [(99, 4), (98, 7)]),
        ((1, 2, 99, -1), [(99, 2), (101, 10)], [(98, 7), (95, 1)]),  # bid 99 traded away
    ]
    books = np.zeros((len(rows), 8), np.int64)
    for k, ((et, size, px, d), asks, bids) in enumerate(rows):
        msgs[k] = (k, k * 1000, et, k, size, px * DIV, d)
        for j, ((apx, aq), (bpx, bq)) in enumerate(zip(asks, bids, strict=True)):
            books[k, 4 * j : 4 * j + 4] = (apx * DIV, aq, bpx * DIV, bq)
    return msgs, books


def test_hand_made_heal_deltas(tmp_path: Path) -> None:
    msgs, books = _pair()
    got = [
        (m.side, m.px, m.qty, m.seq)
        for m in iter_book_deltas(msgs, books)
        if isinstance(m, BookDelta)
    ]
    assert got == [
        (1, 100, 0, 1),  # message 1: the execution
        (1, 98, 7, 2),  # heal: the level that existed before the first message
        (1, 95, 1, 3),  # message 2: a level deeper than the window, kept
        (1, 99, 0, 4),  # heal: the reference dropped 99 on a hidden execution
        (1, 99, 4, 5),  # message 4
        (-1, 99, 2, 6),  # message 5: an ask at 99 ...
        (1, 99, 0, 7),  # heal: ... the bid at 99 is gone (the reference shows it traded)
    ]
    rows = _rows_of(msgs, books)
    rows = rows[rows["kind"] == 3]
    assert [tuple(r) for r in rows[["side", "px", "qty", "seq"]].tolist()] == got
    book = _replay_and_check(msgs, books)
    assert book.depth(1)[0].tolist() == [98, 95]
    mp, op = tmp_path / "H_message_2.csv", tmp_path / "H_orderbook_2.csv"
    write_lobster(mp, op, msgs, books)
    src = ReplaySource.from_lobster(mp, op, 2, 1, DIV, rejects=RejectCounter())
    batches = np.concatenate(list(src.batches()))
    assert len(batches[batches["kind"] == 3]) == len(got) and src.lobster.heals == 3
    deltas = [m for m in src if isinstance(m, BookDelta)]
    assert [(m.side, m.px, m.qty, m.seq) for m in deltas] == got and src.lobster.heals == 3


def test_heal_resumes_across_full_batches() -> None:
    """A heal longer than a batch goes on in the next one, in the reference's order."""
    msgs, books = _pair()
    books[3, 2::4], books[3, 3::4] = EMPTY_BID_PX, 0  # row 3 shows no bid: all go at once
    books[4:, 2::4], books[4:, 3::4] = (99 * DIV, EMPTY_BID_PX), (4, 0)
    books[5, 2::4], books[5, 3::4] = EMPTY_BID_PX, 0
    ref = from_messages(iter_book_deltas(msgs, books, include_trades=True))
    for batch in (2, 3, 5):
        got = list(lobster_rows(msgs, books, include_trades=True, batch_rows=batch))
        assert np.array_equal(np.concatenate(got), ref), batch
        assert max(len(b) for b in got) <= batch
    assert len(ref) >= 8  # several heal rows in one message: 99, 98, 95 removed at row 3
