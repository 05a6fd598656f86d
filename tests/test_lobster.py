"""LOBSTER: reader round trip and book reconstruction equal to the reference for every message.

No LOBSTER data ships with the repository, so an order-level simulator below writes valid
LOBSTER message + orderbook files: submissions, partial cancels, deletions, visible and hidden
executions, cross trades and halts, with a book much deeper than the N visible levels so levels
fall out of view and come back. The orderbook rows are computed from the simulator's own
order-level book, independently of engine.book.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.book import L2Book
from engine.lobster import (
    EMPTY_ASK_PX,
    EMPTY_BID_PX,
    MESSAGE_DTYPE,
    LobsterEvent,
    LobsterReconstructor,
    book_row,
    iter_book_deltas,
    read_lobster,
    reconstruct,
    snapshot_from_row,
    write_lobster,
)
from engine.messages import BookDelta, BookSnapshot, Trade

PRICE_DIVISOR = 100  # LOBSTER price = dollars x 10000; a $0.01 tick = 100


# --- an order-level LOBSTER generator ----------------------------------------------------------


def simulate_lobster(
    n_messages: int, levels: int, seed: int, start_px: int = 10_000
) -> tuple[np.ndarray, np.ndarray]:
    """(messages, books) in LOBSTER layout from a FIFO order-level book simulation."""
    rng = np.random.default_rng(seed)
    orders: dict[int, list[int]] = {}  # id -> [side, px, size]
    queues: dict[tuple[int, int], list[int]] = {}  # (side, px) -> ids in time priority
    totals: dict[int, dict[int, int]] = {1: {}, -1: {}}  # side -> px -> visible size
    next_id = 1
    ref = start_px
    t_ns = 34_200 * 10**9
    msgs = np.zeros(n_messages, MESSAGE_DTYPE)
    books = np.empty((n_messages, 4 * levels), np.int64)

    def best(side: int) -> int | None:
        lv = totals[side]
        if not lv:
            return None
        return max(lv) if side == 1 else min(lv)

    def change(side: int, px: int, d: int) -> None:
        q = totals[side].get(px, 0) + d
        assert q >= 0
        if q:
            totals[side][px] = q
        else:
            totals[side].pop(px, None)

    def remove(oid: int, size: int) -> None:
        side, px, have = orders[oid]
        change(side, px, -size)
        if size == have:
            del orders[oid]
            queues[(side, px)].remove(oid)
        else:
            orders[oid][2] = have - size

    for k in range(n_messages):
        t_ns += int(rng.exponential(3e6)) if rng.random() > 0.15 else 0  # some same-time bursts
        u = rng.random()
        kind = LobsterEvent.SUBMISSION
        if k >= 40 and orders:
            for p, kd in (
                (0.40, LobsterEvent.SUBMISSION),
                (0.50, LobsterEvent.CANCELLATION),
                (0.72, LobsterEvent.DELETION),
                (0.93, LobsterEvent.EXECUTION),
                (0.97, LobsterEvent.HIDDEN_EXECUTION),
                (0.985, LobsterEvent.CROSS_TRADE),
                (1.00, LobsterEvent.HALT),
            ):
                if u < p:
                    kind = kd
                    break
        oid, size, price, direction = 0, 0, 0, 1
        if kind == LobsterEvent.CANCELLATION:
            cands = [o for o, v in orders.items() if v[2] >= 2]
            if not cands:
                kind = LobsterEvent.SUBMISSION
        if kind == LobsterEvent.SUBMISSION:
            side = 1 if rng.random() < 0.5 else -1
            opp = best(-side)
            d = min(int(rng.geometric(0.22)) - 1, 40)
            if opp is not None:
                px = opp - side * (1 + d)  # never marketable: buys below the ask, sells above
            else:
                px = ref - side * (1 + d)
            px = max(px, 1)
            size = (
                int(rng.integers(1, 6)) * 100 if rng.random() < 0.6 else int(rng.integers(1, 400))
            )
            oid = next_id
            next_id += 1
            orders[oid] = [side, px, size]
            queues.setdefault((side, px), []).append(oid)
            change(side, px, size)
            price, direction = px, side
        elif kind == LobsterEvent.CANCELLATION:
            oid = int(rng.choice(cands))
            side, px, have = orders[oid]
            size = int(rng.integers(1, have))
            remove(oid, size)
            price, direction = px, side
        elif kind == LobsterEvent.DELETION:
            if rng.random() < 0.4:  # at the top: makes deeper levels come into view
                side = 1 if rng.random() < 0.5 else -1
                b = best(side)
                if b is None:
                    side = -side
                    b = best(side)
                oid = queues[(side, b)][-1]
            else:
                oid = int(rng.choice(list(orders)))
            side, px, size = orders[oid]
            remove(oid, size)
            price, direction = px, side
        elif kind == LobsterEvent.EXECUTION:
            side = 1 if rng.random() < 0.5 else -1
            b = best(side)
            if b is None:
                side = -side
                b = best(side)
            oid = queues[(side, b)][0]  # FIFO: the oldest order at the best price trades
            have = orders[oid][2]
            size = have if rng.random() < 0.6 else int(rng.integers(1, have + 1))
            remove(oid, size)
            price, direction = b, side
            ref = b
        elif kind == LobsterEvent.HIDDEN_EXECUTION:
            bb, ba = best(1), best(-1)
            price = ref if bb is None or ba is None else (bb + ba) // 2
            size = int(rng.integers(1, 300))
            direction = 1 if rng.random() < 0.5 else -1
        elif kind == LobsterEvent.CROSS_TRADE:
            oid, price, size, direction = -1, ref, int(rng.integers(100, 5000)), -1
        else:  # halt indicator: price -1 halt, 0 quote resume, 1 trade resume
            price, direction = int(rng.choice([-1, 0, 1])), -1
        msgs[k]["time_ns"] = t_ns
        msgs[k]["time"] = t_ns / 1e9
        msgs[k]["type"] = int(kind)
        msgs[k]["order_id"] = oid
        msgs[k]["size"] = size
        msgs[k]["price"] = price * PRICE_DIVISOR if price > 1 else price
        msgs[k]["direction"] = direction
        row = books[k]
        row[0::4] = EMPTY_ASK_PX
        row[1::4] = 0
        row[2::4] = EMPTY_BID_PX
        row[3::4] = 0
        for i, px in enumerate(sorted(totals[-1])[:levels]):
            row[4 * i] = px * PRICE_DIVISOR
            row[4 * i + 1] = totals[-1][px]
        for i, px in enumerate(sorted(totals[1], reverse=True)[:levels]):
            row[4 * i + 2] = px * PRICE_DIVISOR
            row[4 * i + 3] = totals[1][px]
    return msgs, books


@pytest.fixture(scope="module", params=[(5, 4000, 11), (10, 3000, 12)], ids=["N5", "N10"])
def lobster_files(request, tmp_path_factory) -> tuple[Path, Path, int, np.ndarray, np.ndarray]:
    levels, n, seed = request.param
    msgs, books = simulate_lobster(n, levels, seed)
    d = tmp_path_factory.mktemp(f"lobster{levels}")
    mp = d / f"SIM_2024-01-02_34200000_57600000_message_{levels}.csv"
    op = d / f"SIM_2024-01-02_34200000_57600000_orderbook_{levels}.csv"
    write_lobster(mp, op, msgs, books)
    return mp, op, levels, msgs, books


# --- tests ---------------------------------------------------------------------------------------


def test_generator_exercises_every_case(lobster_files) -> None:
    """The data must contain what the reconstruction claims to handle."""
    _, _, levels, msgs, books = lobster_files
    types = msgs["type"]
    for t in LobsterEvent:
        assert np.count_nonzero(types == t) > 0, t
    came_into_view = 0
    fell_out = 0
    for k in range(1, len(msgs)):
        for col in (0, 2):
            before = {int(p) for p in books[k - 1, col::4] if abs(p) != EMPTY_ASK_PX}
            after = {int(p) for p in books[k, col::4] if abs(p) != EMPTY_ASK_PX}
            submitted = int(msgs["price"][k]) if types[k] == LobsterEvent.SUBMISSION else None
            came_into_view += len(after - before - {submitted})
            if types[k] == LobsterEvent.SUBMISSION:
                fell_out += len(before - after)
    assert came_into_view > 50  # deeper levels the reference did not show came back into view
    assert fell_out > 50  # new levels pushed the N-th level out of view


def test_read_round_trip(lobster_files) -> None:
    mp, op, levels, msgs, books = lobster_files
    m2, b2 = read_lobster(mp, op, levels)
    assert m2.dtype == MESSAGE_DTYPE
    for name in ("time_ns", "type", "order_id", "size", "price", "direction"):
        assert np.array_equal(m2[name], msgs[name]), name
    assert np.allclose(m2["time"], msgs["time"], rtol=0, atol=1e-9)
    assert np.array_equal(b2, books)
    _, b3 = read_lobster(mp, op)  # levels inferred from the column count
    assert b3.shape == (len(msgs), 4 * levels)
    with pytest.raises(ValueError):
        read_lobster(mp, op, levels + 1)


def test_reconstruction_matches_reference_for_every_message(lobster_files) -> None:
    mp, op, levels, _, _ = lobster_files
    msgs, books = read_lobster(mp, op, levels)
    rows = np.empty_like(books)
    n = 0
    for k, book in reconstruct(msgs, books, price_divisor=PRICE_DIVISOR):
        book_row(book, levels, PRICE_DIVISOR, out=rows[k])
        n += 1
        assert not book.is_crossed and not book.is_locked
    assert n == len(msgs)
    mismatched = np.flatnonzero(np.any(rows != books, axis=1))
    assert mismatched.size == 0, f"first mismatch at message {mismatched[:1]}"


def test_book_deltas_replay_reproduces_reference(lobster_files) -> None:
    mp, op, levels, _, _ = lobster_files
    msgs, books = read_lobster(mp, op, levels)
    date_ns = 1_704_153_600 * 10**9  # 2024-01-02T00:00Z
    out = list(
        iter_book_deltas(
            msgs,
            books,
            instrument_id=9,
            price_divisor=PRICE_DIVISOR,
            date_ns=date_ns,
            include_trades=True,
            include_snapshot=True,
        )
    )
    assert isinstance(out[0], BookSnapshot)
    book = L2Book(9, max_levels=2048)
    book.apply(out[0])
    assert np.array_equal(book_row(book, levels), books[0])
    deltas = [m for m in out if isinstance(m, BookDelta)]
    trades = [m for m in out if isinstance(m, Trade)]
    changing = [
        k
        for k in range(1, len(msgs))
        if msgs["type"][k]
        in (
            LobsterEvent.SUBMISSION,
            LobsterEvent.CANCELLATION,
            LobsterEvent.DELETION,
            LobsterEvent.EXECUTION,
        )
    ]
    assert len(deltas) == len(changing)
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    for k, d in zip(changing, deltas, strict=True):
        assert d.ts_event == date_ns + int(msgs["time_ns"][k]) and d.instrument_id == 9
        assert book.apply(d) & 1 == 0  # no sequence gap
        assert np.array_equal(book_row(book, levels), books[k]), k
    n_exec = int(np.count_nonzero(msgs["type"][1:] == LobsterEvent.EXECUTION))
    n_prints = int(np.count_nonzero(np.isin(msgs["type"][1:], [4, 5, 6])))
    assert len(trades) == n_prints and n_exec > 0
    # message by message: a print's Trade comes before that message's delta, and a visible
    # execution's aggressor is opposite the resting side it removed size from
    stream = iter(out[1:])
    for k in range(1, len(msgs)):
        t = int(msgs["type"][k])
        if t in (4, 5, 6):
            tr = next(stream)
            assert isinstance(tr, Trade) and tr.qty == msgs["size"][k]
            assert tr.side == (0 if t == 6 else -msgs["direction"][k])
        if t in (1, 2, 3, 4):
            d = next(stream)
            assert isinstance(d, BookDelta) and d.side == msgs["direction"][k]
    assert next(stream, None) is None
    # the plain (delta-only) stream is the same deltas
    plain = list(iter_book_deltas(msgs, books, instrument_id=9, price_divisor=PRICE_DIVISOR))
    assert [(d.side, d.px, d.qty) for d in plain] == [(d.side, d.px, d.qty) for d in deltas]


def test_heal_recovers_levels_hidden_before_the_start(lobster_files) -> None:
    """Starting mid-file, levels deeper than N were never seen: healing re-aligns from the
    reference, and without it the reconstruction is detectably wrong."""
    mp, op, levels, _, _ = lobster_files
    msgs, books = read_lobster(mp, op, levels)
    start = len(msgs) // 2
    m, b = msgs[start:], books[start:]
    plain_mismatches = sum(
        not np.array_equal(book_row(book, levels), b[k])
        for k, book in reconstruct(m, b, price_divisor=PRICE_DIVISOR)
    )
    assert plain_mismatches > 0
    for k, book in reconstruct(m, b, price_divisor=PRICE_DIVISOR, heal=True):
        assert np.array_equal(book_row(book, levels), b[k]), k


def test_snapshot_from_row_and_bad_messages() -> None:
    row = np.array([10100, 5, 10000, 7, EMPTY_ASK_PX, 0, 9900, 1], np.int64)
    snap = snapshot_from_row(row, instrument_id=3, price_divisor=100, ts_event=5)
    assert snap.bid_px == [100, 99] and snap.bid_qty == [7, 1]
    assert snap.ask_px == [101] and snap.ask_qty == [5] and snap.ts_event == 5
    rec = LobsterReconstructor(2)
    rec.load_row(row)
    assert rec.matches(row)
    assert rec.apply(LobsterEvent.HALT, 0, -1, -1) is None
    assert rec.apply(LobsterEvent.HIDDEN_EXECUTION, 10, 10050, 1) is None
    assert rec.apply(LobsterEvent.SUBMISSION, 3, 10000, 1) == (1, 100, 10)
    assert rec.apply(LobsterEvent.EXECUTION, 20, 10100, -1) == (-1, 101, 0)
    assert rec.underflows == 1
    with pytest.raises(ValueError):
        rec.apply(LobsterEvent.SUBMISSION, 3, 10005, 1)  # not on the $0.01 grid
    with pytest.raises(ValueError):
        rec.apply(LobsterEvent.DELETION, 3, 10000, 0)


REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _real_pairs() -> list[tuple[Path, Path]]:
    if not REAL_DATA.is_dir():
        return []
    pairs = []
    for mp in sorted(REAL_DATA.rglob("*_message_*.csv")):
        op = mp.with_name(mp.name.replace("_message_", "_orderbook_"))
        if op.exists():
            pairs.append((mp, op))
    return pairs


def test_real_lobster_files_if_present() -> None:
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} is absent (no shared data checkout)")
    pairs = _real_pairs()
    if not pairs:
        pytest.skip(f"no LOBSTER *_message_*/*_orderbook_* pairs in {REAL_DATA}")
    for mp, op in pairs:
        msgs, books = read_lobster(mp, op)
        levels = books.shape[1] // 4
        msgs, books = msgs[:200_000], books[:200_000]
        # Real files start with a book whose deeper levels are unknown; heal re-aligns them,
        # and the visible book must then equal the reference for every message.
        rec_rows = 0
        for k, book in reconstruct(msgs, books, heal=True):
            assert np.array_equal(book_row(book, levels), books[k]), (mp.name, k)
            rec_rows += 1
        assert rec_rows == len(msgs)
