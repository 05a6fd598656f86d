"""engine.lobster_rows: the numba LOBSTER pass yields exactly iter_book_deltas's deltas and
trades (same order, seq, trade ids), on the real LOBSTER day and on simulated deep books."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.lobster import LobsterEvent, iter_book_deltas, read_lobster
from engine.lobster_rows import lobster_rows
from engine.md_columns import from_messages
from tests.test_lobster import simulate_lobster

LOBSTER = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"
GOOG = "GOOG_2012-06-21_34200000_57600000_{}_5.csv"


def _both(msgs: np.ndarray, books: np.ndarray, trades: bool, batch: int = 65_536):
    kw = {"instrument_id": 3, "date_ns": 1_340_236_800 * 10**9, "include_trades": trades}
    ref = from_messages(iter_book_deltas(msgs, books, **kw))
    got = list(lobster_rows(msgs, books, batch_rows=batch, **kw))
    return ref, (np.concatenate(got) if got else from_messages([])), got


def test_real_day_equals_reference() -> None:
    mp, op = LOBSTER / GOOG.format("message"), LOBSTER / GOOG.format("orderbook")
    if not mp.is_file():
        pytest.skip(f"{mp} is absent (no shared data checkout)")
    msgs, books = read_lobster(mp, op)
    ref, rows, batches = _both(msgs, books, True)
    assert len(ref) > 100_000
    assert np.array_equal(rows, ref)  # every column of every delta and trade
    assert (np.diff(rows["ts_event"]) >= 0).all() and len(batches) > 1


@pytest.mark.parametrize(("seed", "trades"), [(1, True), (2, False)])
def test_simulated_deep_book_small_batches(seed: int, trades: bool) -> None:
    msgs, books = simulate_lobster(3_000, levels=3, seed=seed)
    ref, rows, batches = _both(msgs, books, trades, batch=7)
    assert np.array_equal(rows, ref)
    assert max(len(b) for b in batches) <= 7 and len(batches) > 100
    assert set(rows["kind"].tolist()) == ({2, 3} if trades else {3})


def test_bad_message_raises_like_reference() -> None:
    msgs, books = simulate_lobster(50, levels=2, seed=3)
    k = int(np.flatnonzero(msgs["type"] == LobsterEvent.SUBMISSION)[5])
    msgs["direction"][k] = 0
    with pytest.raises(ValueError, match="bad LOBSTER message"):
        list(iter_book_deltas(msgs, books))
    with pytest.raises(ValueError, match="bad LOBSTER message: type=1"):
        list(lobster_rows(msgs, books))
    assert list(lobster_rows(msgs[:0], books[:0])) == []
