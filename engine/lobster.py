"""LOBSTER files: read them, rebuild the L2 book message by message, replay them as BookDeltas.

LOBSTER (lobsterdata.com) ships, per stock and day, a *message* file and an *orderbook* file
with one row each per event:

- message: ``time`` (seconds after midnight, decimals to the nanosecond), ``type`` (1..7, see
  :class:`LobsterEvent`), ``order_id``, ``size``, ``price`` (dollars x 10000), ``direction``
  (1 buy / -1 sell: the side of the *resting* limit order concerned, also for executions);
- orderbook: the top ``N`` levels *after* that message, as ``ask_px1, ask_sz1, bid_px1,
  bid_sz1, ask_px2, ...``; a missing level is ``9999999999`` (ask) / ``-9999999999`` (bid)
  with size 0.

Why this lives in the engine next to :mod:`engine.book` rather than in a test: backtests and the
replay venue read the same files, and the reconstruction test (book rebuilt from messages equals
LOBSTER's reference book, level by level, for every message) is the proof that
:class:`engine.book.L2Book` applies deltas correctly on real data.

The reference shows only ``N`` levels but messages touch any level, so the reconstruction keeps a
much deeper book: a level that falls out of view and later comes back must still be known.
Levels deeper than ``N`` that existed before the first message are unknowable from the files;
``heal=True`` re-aligns the visible window from the reference rows; the replays
(:func:`iter_book_deltas`, ``engine.lobster_rows``, ``engine.lobster_checked``) always heal,
because a real day's unhealed book is crossed on almost every row.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path

import numpy as np
from numba import njit

from engine.book import _HDR, _S_CAP, L2Book
from engine.messages import BookDelta, BookSnapshot, Trade

__all__ = [
    "EMPTY_ASK_PX",
    "EMPTY_BID_PX",
    "MESSAGE_DTYPE",
    "LobsterEvent",
    "LobsterReconstructor",
    "book_row",
    "iter_book_deltas",
    "read_lobster",
    "read_lobster_messages",
    "read_lobster_orderbook",
    "reconstruct",
    "snapshot_from_row",
    "write_lobster",
]

#: placeholder price of a missing ask level (size 0)
EMPTY_ASK_PX = 9999999999
#: placeholder price of a missing bid level (size 0)
EMPTY_BID_PX = -9999999999


class LobsterEvent(IntEnum):
    """LOBSTER message types."""

    SUBMISSION = 1  # new limit order: adds size at price/direction
    CANCELLATION = 2  # partial cancel: removes size
    DELETION = 3  # full cancel: removes size
    EXECUTION = 4  # execution of a visible limit order: removes size from `direction`'s side
    HIDDEN_EXECUTION = 5  # execution against a hidden order: no visible change
    CROSS_TRADE = 6  # auction cross: no visible change
    HALT = 7  # trading halt indicator (price -1 halt, 0 quote resume, 1 trade resume)


#: message rows as returned by :func:`read_lobster_messages`. ``time_ns`` is ``time`` in integer
#: nanoseconds after midnight (exact: a float64 second count below 86400 is within 0.01 ns).
MESSAGE_DTYPE = np.dtype(
    [
        ("time", np.float64),
        ("time_ns", np.int64),
        ("type", np.int64),
        ("order_id", np.int64),
        ("size", np.int64),
        ("price", np.int64),
        ("direction", np.int64),
    ]
)

_BOOK_CHANGING = (
    LobsterEvent.SUBMISSION,
    LobsterEvent.CANCELLATION,
    LobsterEvent.DELETION,
    LobsterEvent.EXECUTION,
)

_PRINTS = (LobsterEvent.EXECUTION, LobsterEvent.HIDDEN_EXECUTION, LobsterEvent.CROSS_TRADE)


# --- reading and writing ------------------------------------------------------------------------


def _read_columns(path: str | Path, float_first: bool) -> list[np.ndarray]:
    """Columns of a headerless numeric CSV (pyarrow: real files have millions of rows).

    The first column is float64 when ``float_first`` (LOBSTER's time), every other int64.
    Anything wrong with the file is a ValueError naming it (never a bare pyarrow error):
    these strict readers are for clean files; :func:`load_lobster_checked` reads dirty ones.
    """
    import pyarrow as pa
    from pyarrow import csv

    try:
        table = csv.read_csv(
            str(path),
            read_options=csv.ReadOptions(autogenerate_column_names=True),
            convert_options=csv.ConvertOptions(
                column_types={"f0": pa.float64()} if float_first else None
            ),
        )
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"LOBSTER file {path}: {e}") from None
    if any(col.null_count for col in table.columns):
        raise ValueError(f"LOBSTER file {path}: empty cells")
    return [
        col.to_numpy().astype(np.float64 if (i == 0 and float_first) else np.int64)
        for i, col in enumerate(table.columns)
    ]


def read_lobster_messages(path: str | Path) -> np.ndarray:
    """A LOBSTER message file as a structured array of :data:`MESSAGE_DTYPE`."""
    cols = _read_columns(path, float_first=True)
    if len(cols) < 6:
        raise ValueError(f"{path}: a message file has 6 columns, found {len(cols)}")
    t = cols[0]
    bad = ~(np.isfinite(t) & (np.abs(t) < 2.0**62 / 1e9))  # NaN, inf, beyond int64 ns
    if bad.any():
        raise ValueError(
            f"{path}: line {int(np.argmax(bad)) + 1}: time {float(t[bad][0])!r} is no time"
        )
    out = np.empty(len(t), MESSAGE_DTYPE)
    out["time"] = t
    out["time_ns"] = np.rint(t * 1e9).astype(np.int64)
    for name, col in zip(
        ("type", "order_id", "size", "price", "direction"), cols[1:6], strict=True
    ):
        out[name] = col
    return out


def read_lobster_orderbook(path: str | Path, levels: int | None = None) -> np.ndarray:
    """A LOBSTER orderbook file as an int64 array of shape (rows, 4 * levels).

    ``levels`` None infers it from the column count; otherwise the count must match, because a
    wrong ``levels`` silently misreads every level after the first.
    """
    cols = _read_columns(path, float_first=False)
    books = np.stack(cols, axis=1) if cols else np.empty((0, 0), np.int64)
    if books.shape[1] % 4:
        raise ValueError(f"{path}: {books.shape[1]} columns is not 4 x levels")
    if levels is not None and books.shape[1] != 4 * levels:
        raise ValueError(f"{path}: {books.shape[1]} columns, expected 4 x {levels} levels")
    return books


def read_lobster(
    message_path: str | Path, orderbook_path: str | Path, levels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(messages, books) of one LOBSTER file pair; row ``k`` of books is the state after message ``k``."""
    messages = read_lobster_messages(message_path)
    books = read_lobster_orderbook(orderbook_path, levels)
    if len(messages) != len(books):
        raise ValueError(
            f"LOBSTER files {message_path}, {orderbook_path}: {len(messages)} messages but "
            f"{len(books)} orderbook rows"
        )
    return messages, books


def write_lobster(
    message_path: str | Path, orderbook_path: str | Path, messages: np.ndarray, books: np.ndarray
) -> None:
    """Write LOBSTER-format files (for tests, tooling, and exporting recorded books).

    ``messages`` is a :data:`MESSAGE_DTYPE` array; ``time_ns`` is written as seconds with nine
    decimals, which round-trips exactly through :func:`read_lobster_messages`.
    """
    with open(message_path, "w") as f:
        for m in messages:
            t = int(m["time_ns"])
            f.write(
                f"{t // 1_000_000_000}.{t % 1_000_000_000:09d},{int(m['type'])},"
                f"{int(m['order_id'])},{int(m['size'])},{int(m['price'])},{int(m['direction'])}\n"
            )
    np.savetxt(orderbook_path, np.asarray(books, np.int64), fmt="%d", delimiter=",")


# --- book <-> LOBSTER rows ----------------------------------------------------------------------


def book_row(
    book: L2Book, levels: int, price_divisor: int = 100, out: np.ndarray | None = None
) -> np.ndarray:
    """The top ``levels`` of ``book`` in LOBSTER orderbook-row format (prices x ``price_divisor``)."""
    row = np.empty(4 * levels, np.int64) if out is None else out
    ap, aq = book.asks(levels)
    bp, bq = book.bids(levels)
    row[0::4] = EMPTY_ASK_PX
    row[1::4] = 0
    row[2::4] = EMPTY_BID_PX
    row[3::4] = 0
    row[0 : 4 * len(ap) : 4] = ap * price_divisor
    row[1 : 4 * len(aq) : 4] = aq
    row[2 : 4 * len(bp) : 4] = bp * price_divisor
    row[3 : 4 * len(bq) : 4] = bq
    return row


def _row_levels(row: np.ndarray, price_divisor: int) -> tuple[np.ndarray, ...]:
    """(bid_px, bid_qty, ask_px, ask_qty) in ticks of one orderbook row, empty levels dropped."""
    row = np.asarray(row, np.int64)
    ap, aq, bp, bq = row[0::4], row[1::4], row[2::4], row[3::4]
    a = (aq > 0) & (ap != EMPTY_ASK_PX)
    b = (bq > 0) & (bp != EMPTY_BID_PX)
    for px in (ap[a], bp[b]):
        if np.any(px % price_divisor):
            raise ValueError(f"orderbook price not a multiple of price_divisor={price_divisor}")
    return bp[b] // price_divisor, bq[b], ap[a] // price_divisor, aq[a]


def snapshot_from_row(
    row: np.ndarray,
    *,
    instrument_id: int = 0,
    price_divisor: int = 100,
    ts_event: int = 0,
    ts_recv: int = 0,
    seq: int = 0,
) -> BookSnapshot:
    """A BookSnapshot (prices in ticks) of one LOBSTER orderbook row."""
    bp, bq, ap, aq = _row_levels(row, price_divisor)
    return BookSnapshot(
        instrument_id,
        bp.tolist(),
        bq.tolist(),
        ap.tolist(),
        aq.tolist(),
        ts_event,
        ts_recv,
        seq,
    )


# --- reconstruction ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _window_matches_nb(buf, row, div):  # pragma: no cover - compiled
    """Whether the book (an ``L2Book`` buffer) shows exactly ``row``'s levels on top of each
    side, the row's live levels first: then :meth:`LobsterReconstructor.heal` has nothing to
    do. False does not mean it has (an off-grid or gapped row): heal decides then."""
    cap = buf[_S_CAP]
    levels = row.shape[0] // 4
    for s in range(2):
        off = 2 if s == 0 else 0
        none = EMPTY_BID_PX if s == 0 else EMPTY_ASK_PX
        held = buf[s]
        kb = _HDR + s * cap
        for j in range(levels):
            p, q = row[4 * j + off], row[4 * j + off + 1]
            if q > 0 and p != none:
                if j >= held or buf[kb + 2 * cap + j] != q:
                    return False
                if (-buf[kb + j] if s == 0 else buf[kb + j]) * div != p:
                    return False
            elif j < held:  # the row ends (or has a gap) where the book goes on
                return False
    return True


class LobsterReconstructor:
    """Rebuilds an :class:`L2Book` from LOBSTER messages.

    Only the level quantities matter for L2: a submission adds ``size`` at (price, direction);
    a partial cancel, a deletion and a visible execution remove ``size`` from it (an execution's
    ``direction`` already names the resting side); hidden executions, cross trades and halts do
    not change the visible book.
    """

    def __init__(
        self,
        levels: int,
        *,
        price_divisor: int = 100,
        instrument_id: int = 0,
        max_levels: int = 2048,
    ) -> None:
        self.levels = int(levels)
        self.price_divisor = int(price_divisor)
        self.book = L2Book(instrument_id, max_levels)
        #: removals larger than the size we knew at that level (clamped at 0): a sign that the
        #: level existed before the data started, deeper than the reference showed
        self.underflows = 0
        #: visible levels re-aligned from the reference by :meth:`heal`
        self.heals = 0
        self._row = np.empty(4 * self.levels, np.int64)

    def load_row(self, row: np.ndarray, seq: int = 0) -> None:
        """Start from a reference orderbook row."""
        bp, bq, ap, aq = _row_levels(row, self.price_divisor)
        self.book.apply_snapshot(bp, bq, ap, aq, seq)

    def apply(
        self, event_type: int, size: int, price: int, direction: int
    ) -> tuple[int, int, int] | None:
        """Apply one message; returns the (side, px_ticks, new_qty) it set, or None if none.

        Raises ValueError on a book-changing message that cannot be right (price not a multiple
        of ``price_divisor``, size <= 0, direction not +-1): replaying on would corrupt the book
        silently.
        """
        if event_type not in _BOOK_CHANGING:
            return None
        if direction not in (1, -1) or size <= 0 or price <= 0 or price % self.price_divisor:
            raise ValueError(
                f"bad LOBSTER message: type={event_type} size={size} price={price} "
                f"direction={direction} (price_divisor={self.price_divisor})"
            )
        px = price // self.price_divisor
        cur = self.book.qty_at(direction, px)
        if event_type == LobsterEvent.SUBMISSION:
            new = cur + size
        else:
            new = cur - size
            if new < 0:
                self.underflows += 1
                new = 0
        self.book.apply_delta(direction, px, new)
        return direction, px, new

    def row(self) -> np.ndarray:
        """The current top ``levels`` in LOBSTER format (a buffer reused between calls)."""
        return book_row(self.book, self.levels, self.price_divisor, self._row)

    def matches(self, ref_row: np.ndarray) -> bool:
        """Whether the visible book equals the reference row exactly."""
        return bool(np.array_equal(self.row(), ref_row))

    def heal(self, ref_row: np.ndarray) -> list[tuple[int, int, int]]:
        """Re-align the visible window with the reference; returns the (side, px, qty) it set.

        Within the window [best, N-th level] of each side the reference is the truth: levels it
        shows are set to its sizes and levels it omits are removed. Deeper levels are kept.
        """
        changes: list[tuple[int, int, int]] = []
        ref_row = np.asarray(ref_row, np.int64)
        if _window_matches_nb(self.book._buf, ref_row, self.price_divisor):
            return changes  # the usual case, at a numba call's cost
        bp, bq, ap, aq = _row_levels(ref_row, self.price_divisor)
        for side, rpx, rqty in ((1, bp, bq), (-1, ap, aq)):
            want = dict(zip(rpx.tolist(), rqty.tolist(), strict=True))
            full = len(rpx) == self.levels  # reference window reaches the N-th level
            worst = int(rpx[-1]) if len(rpx) else None
            have_px, _ = self.book.depth(side)
            for px in have_px.tolist():
                inside = not full or (px >= worst if side == 1 else px <= worst)
                if not inside:
                    break
                if px not in want:
                    self.book.apply_delta(side, px, 0)
                    changes.append((side, px, 0))
            for px, q in want.items():
                if self.book.qty_at(side, px) != q:
                    self.book.apply_delta(side, px, q)
                    changes.append((side, px, q))
        self.heals += len(changes)
        return changes


def reconstruct(
    messages: np.ndarray,
    books: np.ndarray,
    *,
    price_divisor: int = 100,
    instrument_id: int = 0,
    heal: bool = False,
    max_levels: int = 2048,
) -> Iterator[tuple[int, L2Book]]:
    """Yield ``(k, book)`` for every message ``k``: the book after message ``k``.

    Starts from the reference ``books[0]`` (the state after message 0) and applies messages
    ``1..`` in order. The same :class:`L2Book` object is yielded each time (no copies): read
    it before advancing. With ``heal`` the visible window is re-aligned to ``books[k]`` after
    each message (for real files whose first row hides deeper levels); the reconstructor's
    ``heals`` count says how often that was needed.
    """
    if len(messages) == 0:
        return
    levels = books.shape[1] // 4
    rec = LobsterReconstructor(
        levels, price_divisor=price_divisor, instrument_id=instrument_id, max_levels=max_levels
    )
    rec.load_row(books[0])
    yield 0, rec.book
    types = messages["type"]
    sizes = messages["size"]
    prices = messages["price"]
    dirs = messages["direction"]
    for k in range(1, len(messages)):
        rec.apply(int(types[k]), int(sizes[k]), int(prices[k]), int(dirs[k]))
        if heal:
            rec.heal(books[k])
        yield k, rec.book


def iter_book_deltas(
    messages: np.ndarray,
    books: np.ndarray,
    *,
    instrument_id: int = 0,
    price_divisor: int = 100,
    date_ns: int = 0,
    include_trades: bool = False,
    include_snapshot: bool = False,
) -> Iterator[BookDelta | Trade | BookSnapshot]:
    """Replay a LOBSTER file pair as engine market-data messages.

    One :class:`BookDelta` (new total at the level) per book-changing message ``1..`` (message
    0's effect is already in ``books[0]``), numbered ``seq`` 1, 2, ... so a consumer's L2Book
    sees no gap. ``ts_event == ts_recv == date_ns + time_ns`` (``date_ns``: midnight of the
    trading day in the clock you replay on).

    ``include_snapshot`` first yields ``books[0]`` as a BookSnapshot (seq 0). ``include_trades``
    yields a :class:`Trade` *before* the delta of each visible execution (aggressor side =
    ``-direction``), and a Trade for hidden executions and cross trades (aggressor unknown for
    a cross: side 0) -- the order a simulated exchange expects to tell trades from cancels.

    After each message the visible window is healed to ``books[k]``
    (:meth:`LobsterReconstructor.heal`): one more BookDelta (its own ``seq``) per level it
    sets, so the book a consumer holds equals LOBSTER's top N after every message and is never
    crossed by a level that existed, unseen, before the first message.
    """
    if len(messages) == 0:
        return
    levels = books.shape[1] // 4
    rec = LobsterReconstructor(levels, price_divisor=price_divisor, instrument_id=instrument_id)
    rec.load_row(books[0])
    t0 = date_ns + int(messages["time_ns"][0])
    if include_snapshot:
        yield snapshot_from_row(
            books[0],
            instrument_id=instrument_id,
            price_divisor=price_divisor,
            ts_event=t0,
            ts_recv=t0,
        )
    seq = 0
    trade_id = 0
    for k in range(1, len(messages)):
        m = messages[k]
        et = int(m["type"])
        ts = date_ns + int(m["time_ns"])
        size = int(m["size"])
        price = int(m["price"])
        direction = int(m["direction"])
        is_print = et in _PRINTS and price > 0 and price % price_divisor == 0 and size > 0
        if include_trades and is_print:
            trade_id += 1
            aggressor = 0 if et == LobsterEvent.CROSS_TRADE else -direction
            yield Trade(instrument_id, price // price_divisor, size, aggressor, ts, ts, trade_id)
        change = rec.apply(et, size, price, direction)
        if change is not None:
            seq += 1
            side, px, qty = change
            yield BookDelta(instrument_id, side, px, qty, ts, ts, seq)
        for side, px, qty in rec.heal(books[k]):
            seq += 1
            yield BookDelta(instrument_id, side, px, qty, ts, ts, seq)
