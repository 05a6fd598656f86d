"""The Binance capture reader and the reference book (``tests/venues/binance_capture.py``): the
frames are the captured bytes, and the reference follows Binance's documented procedure."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

import pytest

from tests.venues import binance_capture as bc

pytestmark = pytest.mark.skipif(not bc.available(), reason=bc.SKIP_REASON)


def test_frames_are_the_captured_bytes():
    cap = bc.load()
    with gzip.open(bc.CAPTURE_PATH, "rb") as fh:
        lines = [ln.rstrip(b"\n").partition(b" ")[2] for ln in fh if ln.strip()]
    assert lines[cap.snapshot_index] == cap.snapshot_text
    assert [f.raw for f in cap.frames] == lines[: cap.snapshot_index] + lines[
        cap.snapshot_index + 1 :
    ]
    for f in cap.frames[:2000]:
        whole = json.loads(f.raw)
        assert whole["stream"] == f.stream and json.loads(f.data) == whole["data"]
        assert f.data in f.raw  # a slice of what was received, not re-serialised
    assert set(cap.streams) == {bc.DEPTH_STREAM, bc.TRADE_STREAM, bc.BOOK_TICKER_STREAM}


def test_reference_book_follows_binances_procedure():
    cap = bc.load()
    diffs = cap.depth_diffs()
    book = bc.ReferenceBook(cap.snapshot)
    applied = [d for d in diffs if book.apply(d)]
    # diffs at or before the snapshot are dropped; the first applied one bridges it
    assert all(int(d["u"]) <= cap.last_update_id for d in diffs[: len(diffs) - len(applied)])
    assert int(applied[0]["U"]) <= cap.last_update_id + 1 <= int(applied[0]["u"])
    assert book.update_id == int(diffs[-1]["u"])
    (bid, _), (ask, _) = book.best()
    assert bid < ask  # never crossed at the end
    # a quantity of 0 removes the level
    px = next(iter(book.bids))
    book.apply({"U": book.update_id + 1, "u": book.update_id + 1, "b": [[str(px), "0"]], "a": []})
    assert px not in book.bids


def test_a_snapshot_of_the_reference_book_is_spelled_as_binance_spells_it():
    cap = bc.load()
    book = bc.ReferenceBook(cap.snapshot)
    assert book.snapshot_text() == cap.snapshot_text  # before any diff: the captured answer
    for book in bc.replay_books(cap):
        if book.update_id > cap.last_update_id + 5000:
            break
    again = bc.ReferenceBook(json.loads(book.snapshot_text(limit=5000)))
    assert (again.bids, again.asks, again.update_id) == (book.bids, book.asks, book.update_id)
    assert len(json.loads(book.snapshot_text(limit=5))["bids"]) == 5


def test_reference_book_refuses_a_gap_and_a_diff_that_misses_the_snapshot():
    cap = bc.load()
    diffs = [d for d in cap.depth_diffs() if int(d["u"]) > cap.last_update_id]
    book = bc.ReferenceBook(cap.snapshot)
    book.apply(diffs[0])
    with pytest.raises(bc.SequenceBreak):
        book.apply(diffs[2])  # diffs[1] skipped
    fresh = bc.ReferenceBook(cap.snapshot)
    with pytest.raises(bc.SequenceBreak):
        fresh.apply(diffs[1])  # does not bridge the snapshot


def test_every_update_id_has_a_book_and_books_are_never_crossed():
    cap = bc.load()
    ids = []
    for book in bc.replay_books(cap):
        ids.append(book.update_id)
        (bid, _), (ask, _) = book.best()
        assert bid < ask
        assert all(q > Decimal(0) for q in book.bids.values())
    assert ids == sorted(ids) and len(ids) == len(set(ids))
