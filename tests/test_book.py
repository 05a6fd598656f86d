"""L2Book: unit tests plus hypothesis properties against a dict-based reference model."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book import BookFlag, L2Book
from engine.messages import BookDelta, BookSnapshot, Quote

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- reference model ----------------------------------------------------------------------------


class DictBook:
    """The obvious, slow model: one dict per side, validated the way the spec says."""

    def __init__(self) -> None:
        self.side: dict[int, dict[int, int]] = {1: {}, -1: {}}
        self.last_seq = 0
        self.gaps = 0
        self.crossed = 0
        self.locked = 0
        self.rejected = 0

    def delta(self, side: int, px: int, qty: int, seq: int) -> int:
        if side not in (1, -1) or px <= 0 or qty < 0 or seq < 0:
            self.rejected += 1
            return BookFlag.REJECTED
        flags = 0
        if seq > 0:
            if self.last_seq > 0 and seq != self.last_seq + 1:
                flags |= BookFlag.GAP
                self.gaps += 1
                if seq <= self.last_seq:
                    flags |= BookFlag.OUT_OF_ORDER
            self.last_seq = max(self.last_seq, seq)
        levels = self.side[side]
        if qty == 0:
            levels.pop(px, None)
        else:
            levels[px] = qty
        bb, ba = self.best(1), self.best(-1)
        if bb and ba:
            if bb[0] > ba[0]:
                flags |= BookFlag.CROSSED
                self.crossed += 1
            elif bb[0] == ba[0]:
                flags |= BookFlag.LOCKED
                self.locked += 1
        return flags

    def best(self, side: int) -> tuple[int, int] | None:
        levels = self.side[side]
        if not levels:
            return None
        px = max(levels) if side == 1 else min(levels)
        return px, levels[px]

    def sorted(self, side: int) -> list[tuple[int, int]]:
        return sorted(self.side[side].items(), reverse=(side == 1))


def book_levels(book: L2Book, side: int) -> list[tuple[int, int]]:
    px, qty = book.depth(side)
    return list(zip(px.tolist(), qty.tolist(), strict=True))


_STATE_FLAGS = BookFlag.GAP | BookFlag.OUT_OF_ORDER | BookFlag.CROSSED | BookFlag.LOCKED
_STATE_FLAGS |= BookFlag.REJECTED

valid_delta = st.tuples(
    st.sampled_from([1, -1]),
    st.integers(90, 110),
    st.integers(0, 50),
    st.integers(0, 40),
)
any_delta = st.one_of(
    valid_delta,
    valid_delta,
    valid_delta,
    st.tuples(
        st.integers(-3, 3),
        st.integers(-5, 110),
        st.integers(-5, 50),
        st.integers(-2, 40),
    ),
)


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(any_delta, max_size=120))
def test_deltas_equal_dict_model(deltas: list[tuple[int, int, int, int]]) -> None:
    book = L2Book(7, max_levels=64)
    model = DictBook()
    for side, px, qty, seq in deltas:
        got = book.apply_delta(side, px, qty, seq)
        want = model.delta(side, px, qty, seq)
        assert got & _STATE_FLAGS == want, (side, px, qty, seq)
        for s in (1, -1):
            assert book_levels(book, s) == model.sorted(s)
        bb, ba = model.best(1), model.best(-1)
        assert book.best_bid() == (bb or (0, 0))
        assert book.best_ask() == (ba or (0, 0))
        assert book.is_crossed == bool(bb and ba and bb[0] > ba[0])
        assert book.is_locked == bool(bb and ba and bb[0] == ba[0])
        if bb and ba:
            assert book.spread() == ba[0] - bb[0]
            assert book.mid() == (bb[0] + ba[0]) / 2
        else:
            assert math.isnan(book.mid()) and math.isnan(book.microprice())
    assert book.last_seq == model.last_seq
    assert book.gap_count == model.gaps
    assert book.crossed_count == model.crossed
    assert book.locked_count == model.locked
    assert book.rejected_count == model.rejected


@SETTINGS
@given(
    st.dictionaries(st.integers(80, 100), st.integers(1, 30), max_size=12),
    st.dictionaries(st.integers(101, 120), st.integers(1, 30), max_size=12),
    st.integers(0, 1000),
    st.lists(valid_delta, max_size=60),
)
def test_snapshot_then_deltas(
    bids: dict[int, int], asks: dict[int, int], seq0: int, deltas: list[tuple[int, int, int, int]]
) -> None:
    book = L2Book(1, max_levels=64)
    book.apply_delta(1, 50, 5, 3)  # junk that the snapshot must wipe
    # best first, as venues send them
    bp = sorted(bids, reverse=True)
    ap = sorted(asks)
    flags = book.apply_snapshot(bp, [bids[p] for p in bp], ap, [asks[p] for p in ap], seq=seq0)
    assert not flags & BookFlag.REJECTED
    assert not flags & (BookFlag.CROSSED | BookFlag.LOCKED)  # bids < 101 <= asks
    assert book.last_seq == seq0
    model = DictBook()
    model.side = {1: dict(bids), -1: dict(asks)}
    model.last_seq = seq0
    gaps0 = book.gap_count
    for i, (side, px, qty, _) in enumerate(deltas):
        seq = seq0 + 1 + i if seq0 else 0  # contiguous after the snapshot: never a gap
        assert book.apply_delta(side, px, qty, seq) & _STATE_FLAGS == model.delta(
            side, px, qty, seq
        )
    assert book.gap_count == gaps0
    for s in (1, -1):
        assert book_levels(book, s) == model.sorted(s)


@SETTINGS
@given(st.lists(valid_delta, min_size=1, max_size=40), any_delta)
def test_rejected_input_never_changes_state(
    deltas: list[tuple[int, int, int, int]], bad: tuple[int, int, int, int]
) -> None:
    book = L2Book(1, max_levels=64)
    for side, px, qty, seq in deltas:
        book.apply_delta(side, px, qty, seq)
    before = (book_levels(book, 1), book_levels(book, -1), book.last_seq, book.gap_count)
    side, px, qty, seq = bad
    invalid = side not in (1, -1) or px <= 0 or qty < 0 or seq < 0
    flags = book.apply_delta(side, px, qty, seq)
    assert bool(flags & BookFlag.REJECTED) == invalid
    if invalid:
        assert (book_levels(book, 1), book_levels(book, -1), book.last_seq, book.gap_count) == (
            before
        )


@SETTINGS
@given(st.lists(valid_delta, max_size=150), st.integers(1, 6))
def test_capacity_keeps_a_consistent_subset(
    deltas: list[tuple[int, int, int, int]], cap: int
) -> None:
    """At capacity levels are discarded (flagged), but what is held is always true and sorted."""
    book = L2Book(1, max_levels=cap)
    model = DictBook()
    dropped = 0
    for side, px, qty, _ in deltas:
        if book.apply_delta(side, px, qty) & BookFlag.DROPPED:
            dropped += 1
        model.delta(side, px, qty, 0)
        for s in (1, -1):
            held = book_levels(book, s)
            assert len(held) <= cap
            assert held == sorted(held, reverse=(s == 1))
            assert all(model.side[s].get(p) == q for p, q in held)
            if not dropped:
                assert held == model.sorted(s)
    assert book.dropped_count == dropped


# --- units --------------------------------------------------------------------------------------


def test_empty_book() -> None:
    book = L2Book(3)
    assert book.best_bid() == (0, 0) and book.best_ask() == (0, 0)
    assert math.isnan(book.mid()) and math.isnan(book.microprice())
    assert book.spread() == 0
    assert not book.is_crossed and not book.is_locked
    px, qty = book.bids(5)
    assert px.size == 0 and qty.size == 0 and px.dtype == np.int64
    assert book.level(1, 0) == (0, 0) and book.n_levels(-1) == 0 and book.volume(1) == 0


def test_top_of_book_reads() -> None:
    book = L2Book(3)
    book.apply_snapshot([100, 99, 97], [10, 20, 5], [102, 103], [30, 1])
    assert book.best_bid() == (100, 10) and book.best_ask() == (102, 30)
    assert book.mid() == 101.0
    assert book.microprice() == pytest.approx((100 * 30 + 102 * 10) / 40)
    assert book.spread() == 2
    px, qty = book.bids(2)
    assert px.tolist() == [100, 99] and qty.tolist() == [10, 20]
    px, qty = book.asks()
    assert px.tolist() == [102, 103] and qty.tolist() == [30, 1]
    assert book.depth(1, 10)[0].tolist() == [100, 99, 97]
    assert book.level(1, 2) == (97, 5) and book.level(-1, 1) == (103, 1)
    assert book.qty_at(1, 99) == 20 and book.qty_at(1, 98) == 0 and book.qty_at(-1, 103) == 1
    assert book.volume(1, 2) == 30 and book.volume(-1) == 31
    # returned arrays are copies
    px[0] = 1
    assert book.best_ask() == (102, 30)
    with pytest.raises(ValueError):
        book.depth(0)


def test_flags_for_level_changes_and_cross() -> None:
    book = L2Book(1)
    f = book.apply_delta(1, 100, 5)
    assert f & BookFlag.LEVEL_ADDED and f & BookFlag.TOP_CHANGED
    f = book.apply_delta(1, 99, 5)
    assert f & BookFlag.LEVEL_ADDED and not f & BookFlag.TOP_CHANGED
    assert book.apply_delta(1, 98, 0) == BookFlag.MISSING_LEVEL
    f = book.apply_delta(-1, 100, 3)
    assert f & BookFlag.LOCKED and book.is_locked and book.locked_count == 1
    f = book.apply_delta(-1, 99, 3)
    assert f & BookFlag.CROSSED and book.is_crossed and book.crossed_count == 1
    assert book.spread() == -1
    f = book.apply_delta(1, 100, 0)
    assert f & BookFlag.LEVEL_REMOVED and f & BookFlag.TOP_CHANGED and f & BookFlag.LOCKED
    book.apply_delta(-1, 99, 0)
    assert not book.is_crossed and not book.is_locked


def test_sequence_gaps_are_flagged_not_fatal() -> None:
    book = L2Book(1)
    assert not book.apply_delta(1, 100, 1, seq=5) & BookFlag.GAP  # first seq: nothing to compare
    assert not book.apply_delta(1, 100, 2, seq=6) & BookFlag.GAP
    f = book.apply_delta(1, 100, 3, seq=9)
    assert f & BookFlag.GAP and not f & BookFlag.OUT_OF_ORDER
    assert book.best_bid() == (100, 3) and book.last_seq == 9
    f = book.apply_delta(1, 100, 4, seq=7)  # stale: flagged, applied, last_seq kept
    assert f & BookFlag.GAP and f & BookFlag.OUT_OF_ORDER
    assert book.last_seq == 9 and book.best_bid() == (100, 4) and book.gap_count == 2
    assert not book.apply_delta(1, 100, 5, seq=0) & BookFlag.GAP  # unsequenced update
    assert not book.apply_delta(1, 100, 5, seq=10) & BookFlag.GAP
    book.apply_snapshot([100], [1], [101], [1], seq=500)  # resync point
    assert not book.apply_delta(1, 100, 5, seq=501) & BookFlag.GAP
    assert book.gap_count == 2


@pytest.mark.parametrize(
    "args",
    [
        (0, 100, 1),
        (2, 100, 1),
        (1, 0, 1),
        (1, -5, 1),
        (1, 100, -1),
        (1, 100.5, 1),
        (1, 100, 1.25),
        (1, float("nan"), 1),
        (1, float("inf"), 1),
        (1, 2**70, 1),
        (1, "100", 1),
        (1, None, 1),
    ],
)
def test_bad_delta_is_rejected_without_raising(args: tuple) -> None:
    book = L2Book(1)
    book.apply_delta(1, 100, 7, seq=1)
    assert book.apply_delta(*args, seq=2) == BookFlag.REJECTED
    assert book.best_bid() == (100, 7) and book.last_seq == 1 and book.rejected_count == 1
    assert book.apply_delta(1, 100, 8, seq=2) & BookFlag.GAP == 0  # the rejected seq was unused


def test_integral_floats_and_numpy_ints_are_accepted() -> None:
    book = L2Book(1)
    assert not book.apply_delta(np.int64(1), np.int64(100), np.int64(3)) & BookFlag.REJECTED
    assert not book.apply_delta(-1, 101.0, 4.0) & BookFlag.REJECTED
    assert not book.apply_delta(np.int32(-1), np.int32(102), np.int32(4)) & BookFlag.REJECTED
    assert book.best_bid() == (100, 3) and book.best_ask() == (101, 4)


@pytest.mark.parametrize(
    "snap",
    [
        ([100, 99], [1], [101], [1]),  # length mismatch
        ([100, 100], [1, 2], [101], [1]),  # duplicate price
        ([100, -1], [1, 2], [101], [1]),  # px <= 0
        ([100], [-3], [101], [1]),  # negative qty
        ([100.5], [1], [101], [1]),  # non-integral
        (["a"], [1], [101], [1]),
        ([[100]], [[1]], [101], [1]),
    ],
)
def test_bad_snapshot_rejected_whole(snap: tuple) -> None:
    book = L2Book(1)
    book.apply_snapshot([90], [1], [95], [2], seq=4)
    assert book.apply_snapshot(*snap, seq=9) == BookFlag.REJECTED
    assert book_levels(book, 1) == [(90, 1)] and book_levels(book, -1) == [(95, 2)]
    assert book.last_seq == 4


def test_snapshot_skips_empty_levels_sorts_and_truncates() -> None:
    book = L2Book(1, max_levels=3)
    # zero-size placeholders (px may be anything, e.g. LOBSTER's -9999999999) are skipped
    f = book.apply_snapshot(
        [98, 100, -9999999999, 99, 97], [1, 2, 0, 3, 4], np.array([101]), np.array([5])
    )
    assert f & BookFlag.DROPPED and not f & BookFlag.REJECTED
    assert book_levels(book, 1) == [(100, 2), (99, 3), (98, 1)]
    assert book.apply_snapshot([], [], [], []) & BookFlag.REJECTED == 0
    assert book.best_bid() == (0, 0) and book.best_ask() == (0, 0)
    assert book.apply_snapshot([101], [1], [100], [1]) & BookFlag.CROSSED


def test_apply_messages() -> None:
    book = L2Book(4)
    snap = BookSnapshot(4, [100, 99], [5, 6], [101], [7], 1, 2, seq=10)
    assert not book.apply(snap) & BookFlag.REJECTED
    assert book.last_seq == 10
    f = book.apply(BookDelta(4, -1, 101, 0, 3, 4, seq=11))
    assert f & BookFlag.LEVEL_REMOVED and book.best_ask() == (0, 0)
    assert book.apply(BookDelta(5, -1, 101, 3, 3, 4, seq=12)) == BookFlag.REJECTED
    assert book.apply(Quote(4, 100, 1, 101, 1, 0, 0)) == BookFlag.REJECTED  # not a book message
    assert book.apply(BookSnapshot(5, [], [], [], [], 0, 0)) == BookFlag.REJECTED
    assert book.best_bid() == (100, 5) and book.rejected_count == 3


def test_delta_and_best_levels_do_not_allocate_in_steady_state() -> None:
    """The hot path writes into preallocated arrays: no numpy array is created per update."""
    book = L2Book(1, max_levels=64)
    buf = book._buf
    rng = np.random.default_rng(1)
    ops = [
        (int(s), int(p), int(q), 0)
        for s, p, q in zip(
            rng.choice([1, -1], 2000),
            rng.integers(90, 110, 2000),
            rng.integers(0, 9, 2000),
            strict=True,
        )
    ]
    for op in ops[:200]:  # warm up
        book.apply_delta(*op)
        book.best_bid()
        book.best_ask()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for op in ops:
        book.apply_delta(*op)
        book.best_bid()
        book.best_ask()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert book._buf is buf
    assert cur - base < 1024 and peak - base < 4096  # transient scalars only, nothing retained
