"""LOBSTER messages to columnar market-data rows in one numba pass (``engine.md_columns``).

Why: rebuilding the book message by message in Python (``engine.lobster.iter_book_deltas``)
runs at about 13,000 messages/s; a day of a liquid stock is millions. This kernel walks the
message columns once and writes ``MD_DTYPE`` rows: a TRADE row before the DELTA of each
visible execution, a TRADE for hidden executions and cross trades, a DELTA (new total at the
level) per book-changing message -- exactly what ``iter_book_deltas(include_trades=...)``
yields, in the same order with the same ``seq`` and trade ids. The book it keeps is an
:class:`engine.book.L2Book` buffer updated by that module's own kernels, so capacity drops
and level arithmetic are the reference's by construction. ``iter_book_deltas`` stays the
reference the tests compare against.

Real files start with levels deeper than the visible window that no message ever created
(unknowable: see ``engine.lobster``), so after every message the kernel *heals* the book: the
visible window is re-aligned to that message's reference orderbook row with DELTA rows of their
own ``seq``, counted in ``heals`` (``engine.lobster.LobsterReconstructor.heal``, row for row).
Without it a real day's book is crossed on almost every row (phantom levels never removed).

The kernel stops at a line a dirty file rejected (``codes``) and at a line where the book
must be resynchronised, and hands that back to Python (rare: counting a rejection may raise
under ``on_bad_row = "fail"``); :func:`resync_rows` turns a resync into DELTA rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

from engine.book import _HDR, _S_CAP, _apply_delta_nb, _qty_at_nb
from engine.lobster import EMPTY_ASK_PX, EMPTY_BID_PX, LobsterReconstructor, _window_matches_nb
from engine.md_columns import BATCH_ROWS, MdKind, empty

__all__ = [
    "BAD_BOOK_ROW",
    "BAD_LINE",
    "BAD_MESSAGE",
    "DONE",
    "FULL",
    "RESYNC",
    "LobsterKernel",
    "lobster_rows",
]

# status of a kernel call (state[_ST])
_DONE = 0  # every message consumed
_FULL = 1  # the output is full: call again from state[_K]
_BAD_LINE = 2  # codes[state[_K]] != 0: Python counts the rejection, then continues after it
_RESYNC = 3  # line state[_K] is the first good one after a rejection: Python resyncs
_BAD_MESSAGE = 4  # a book-changing message that cannot be applied (strict replay: ValueError)
_BAD_BOOK_ROW = 5  # an orderbook price off the price_divisor grid (the reference: ValueError)
#: the stop reasons, for callers of :meth:`LobsterKernel.run`
DONE, FULL, BAD_LINE, RESYNC, BAD_MESSAGE = _DONE, _FULL, _BAD_LINE, _RESYNC, _BAD_MESSAGE
BAD_BOOK_ROW = _BAD_BOOK_ROW
# state slots: line, status, seq, trade id, underflows, rows written, heal rows, and whether
# line _K's message is applied and only its heal is left (a batch filled up mid-heal)
_K, _ST, _SEQ, _TID, _UNDER, _N, _HEALS, _HEALING = 0, 1, 2, 3, 4, 5, 6, 7
_NSTATE = 8

_TRADE, _DELTA = int(MdKind.TRADE), int(MdKind.DELTA)
_EMPTY_BID, _EMPTY_ASK = EMPTY_BID_PX, EMPTY_ASK_PX


# long because: one pass per message (print, then book change) in one compiled loop; split,
# each part would need the whole state threaded through
@njit(cache=True, nogil=True)
def _rows_nb(  # pragma: no cover - compiled
    types, sizes, prices, dirs, times, codes, books, buf, div, date_ns, trades, synced, state,
    out_cols,
):  # fmt: skip
    """Rows from ``state[_K]`` on into ``out_cols`` (ts, side, px, qty, seq, kind)."""
    o_ts, o_side, o_px, o_qty, o_seq, o_kind = out_cols
    cap = o_ts.shape[0]
    n = 0
    k = state[_K]
    status = _DONE
    while k < types.shape[0]:
        if state[_HEALING] == 0:
            if n + 2 > cap:
                status = _FULL
                break
            if codes[k] != 0:
                status = _BAD_LINE
                break
            n = _message_nb(types, sizes, prices, dirs, times, k, buf, div, date_ns, trades,
                            synced, state, out_cols, n)  # fmt: skip
            if state[_ST] != _DONE:
                status = state[_ST]
                break
            state[_HEALING] = 1
        n = _heal_nb(buf, books[k], div, date_ns + times[k], state, out_cols, n)
        if state[_ST] != _DONE:
            status = state[_ST]
            break
        state[_HEALING] = 0
        k += 1
    state[_K] = k
    state[_ST] = status
    state[_N] = n


@njit(cache=True, nogil=True)
def _message_nb(  # pragma: no cover - compiled
    types, sizes, prices, dirs, times, k, buf, div, date_ns, trades, synced, state, out_cols, n
):  # fmt: skip
    """Line ``k``'s TRADE and DELTA rows from ``n`` on (room for two is checked); returns the
    new row count, ``state[_ST]`` set to RESYNC or BAD_MESSAGE where the line stops there."""
    o_ts, o_side, o_px, o_qty, o_seq, o_kind = out_cols
    state[_ST] = _DONE
    et = types[k]
    size = sizes[k]
    price = prices[k]
    d = dirs[k]
    ts = date_ns + times[k]
    if trades and 4 <= et <= 6 and price > 0 and size > 0 and price % div == 0:
        state[_TID] += 1
        o_ts[n], o_kind[n], o_side[n] = ts, _TRADE, 0 if et == 6 else -d
        o_px[n], o_qty[n], o_seq[n] = price // div, size, state[_TID]
        n += 1
    if not synced:
        state[_ST] = _RESYNC
        return n
    if 1 <= et <= 4:
        if (d != 1 and d != -1) or size <= 0 or price <= 0 or price % div != 0:
            state[_ST] = _BAD_MESSAGE
            return n
        px = price // div
        cur = _qty_at_nb(buf, 0 if d == 1 else 1, -px if d == 1 else px)
        new = cur + size if et == 1 else cur - size
        if new < 0:
            state[_UNDER] += 1
            new = 0
        _apply_delta_nb(buf, d, px, new, 0)
        state[_SEQ] += 1
        o_ts[n], o_kind[n], o_side[n] = ts, _DELTA, d
        o_px[n], o_qty[n], o_seq[n] = px, new, state[_SEQ]
        n += 1
    return n


@njit(cache=True, nogil=True)
def _heal_nb(buf, row, div, ts, state, out_cols, n):  # pragma: no cover - compiled
    """DELTA rows (each its own ``seq``) re-aligning the visible window with the reference
    ``row``, as ``LobsterReconstructor.heal``: within [best, N-th reference level] of each side,
    levels the row omits go and its levels get its sizes; deeper levels stay. Resumable: stops
    with ``state[_ST] = FULL`` when the output is full, and a second call goes on where it left
    (what is already aligned is skipped). Returns the new row count."""
    o_ts, o_side, o_px, o_qty, o_seq, o_kind = out_cols
    cap = o_ts.shape[0]
    state[_ST] = _DONE
    if _window_matches_nb(buf, row, div):
        return n  # the usual case: nothing to heal
    levels = row.shape[0] // 4
    for side in (1, -1):
        s = 0 if side == 1 else 1
        off = 2 if side == 1 else 0
        none = _EMPTY_BID if side == 1 else _EMPTY_ASK
        live = 0
        worst = 0
        for j in range(levels):
            p, q = row[4 * j + off], row[4 * j + off + 1]
            if q > 0 and p != none:
                if p % div != 0:
                    state[_ST] = _BAD_BOOK_ROW
                    return n
                live += 1
                worst = p // div
        full = live == levels
        kb = _HDR + s * buf[_S_CAP]
        i = 0
        while i < buf[s]:  # step 1: levels inside the window the row lacks go, best first
            px = -buf[kb + i] if side == 1 else buf[kb + i]
            if full and (px < worst if side == 1 else px > worst):
                break
            want = False
            for j in range(levels):
                p, q = row[4 * j + off], row[4 * j + off + 1]
                if q > 0 and p != none and p // div == px:
                    want = True
            if want:
                i += 1
                continue
            if n >= cap:
                state[_ST] = _FULL
                return n
            _apply_delta_nb(buf, side, px, 0, 0)
            n = _heal_row(out_cols, n, ts, side, px, 0, state)
        for j in range(levels):  # step 2: the row's levels at its sizes
            p, q = row[4 * j + off], row[4 * j + off + 1]
            if q <= 0 or p == none:
                continue
            px = p // div
            if _qty_at_nb(buf, s, -px if side == 1 else px) != q:
                if n >= cap:
                    state[_ST] = _FULL
                    return n
                _apply_delta_nb(buf, side, px, q, 0)
                n = _heal_row(out_cols, n, ts, side, px, q, state)
    return n


@njit(cache=True, nogil=True)
def _heal_row(out_cols, n, ts, side, px, qty, state):  # pragma: no cover - compiled
    o_ts, o_side, o_px, o_qty, o_seq, o_kind = out_cols
    state[_SEQ] += 1
    state[_HEALS] += 1
    o_ts[n], o_kind[n], o_side[n], o_px[n], o_qty[n], o_seq[n] = (
        ts, _DELTA, side, px, qty, state[_SEQ]
    )  # fmt: skip
    return n + 1


@njit(cache=True, nogil=True)
def _resync_nb(buf, want_px, want_qty, side, ts, out_cols, n):  # pragma: no cover - compiled
    """DELTA rows taking one side of the book to exactly ``want`` (levels best first);
    returns the new row count. Levels the book holds and ``want`` lacks are removed."""
    o_ts, o_side, o_px, o_qty, o_seq, o_kind = out_cols
    s = 0 if side == 1 else 1
    cap = buf[_S_CAP]
    kb = _HDR + s * cap
    held = buf[s]
    old = np.empty(held, np.int64)
    for i in range(held):
        old[i] = -buf[kb + i] if side == 1 else buf[kb + i]
    for i in range(held):
        keep = False
        for j in range(want_px.shape[0]):
            if want_px[j] == old[i]:
                keep = True
        if not keep:
            _apply_delta_nb(buf, side, old[i], 0, 0)
            o_ts[n], o_kind[n], o_side[n], o_px[n], o_qty[n], o_seq[n] = ts, 3, side, old[i], 0, 0
            n += 1
    for j in range(want_px.shape[0]):
        key = -want_px[j] if side == 1 else want_px[j]
        if _qty_at_nb(buf, s, key) != want_qty[j]:
            _apply_delta_nb(buf, side, want_px[j], want_qty[j], 0)
            o_ts[n], o_kind[n], o_side[n] = ts, 3, side
            o_px[n], o_qty[n], o_seq[n] = want_px[j], want_qty[j], 0
            n += 1
    return n


class LobsterKernel:
    """The state of one pass over a LOBSTER pair: the book, ``seq``, trade ids, position.

    ``codes`` (one per line, 0 = good) marks lines a dirty file rejected; None for a strict
    replay. ``run`` fills a batch of rows and says why it stopped.
    """

    def __init__(
        self,
        messages: np.ndarray,
        books: np.ndarray,
        *,
        instrument_id: int = 0,
        price_divisor: int = 100,
        date_ns: int = 0,
        include_trades: bool = False,
        codes: np.ndarray | None = None,
        max_levels: int = 2048,
    ) -> None:
        self.levels = books.shape[1] // 4
        self.instrument_id = int(instrument_id)
        self.div = int(price_divisor)
        self.date_ns = int(date_ns)
        self.trades = bool(include_trades)
        self.rec = LobsterReconstructor(
            self.levels, price_divisor=self.div, instrument_id=instrument_id, max_levels=max_levels
        )
        self.cols = tuple(
            np.ascontiguousarray(messages[c], np.int64)
            for c in ("type", "size", "price", "direction", "time_ns")
        )
        n = len(messages)
        self.codes = np.zeros(n, np.int8) if codes is None else np.ascontiguousarray(codes, np.int8)
        self.books = np.ascontiguousarray(books, np.int64)
        self.state = np.zeros(_NSTATE, np.int64)
        self.synced = True

    @property
    def underflows(self) -> int:
        """Removals larger than the size known at the level (clamped at 0), as the reference."""
        return int(self.state[_UNDER])

    @property
    def heals(self) -> int:
        """DELTA rows that re-aligned the visible window with the reference rows (heal)."""
        return int(self.state[_HEALS])

    @property
    def position(self) -> int:
        """The next message line to read."""
        return int(self.state[_K])

    def start_at(self, k: int) -> None:
        """Load the book from orderbook row ``k`` and go on from message ``k + 1``."""
        self.rec.load_row(self.books[k])
        self.state[_K] = k + 1

    def run(self, out: np.ndarray) -> tuple[int, int]:
        """Fill ``out`` (MD_DTYPE) from the current line; returns (rows written, status)."""
        cols = tuple(out[c] for c in ("ts_event", "side", "px", "qty", "seq", "kind"))
        t, s, p, d, tm = self.cols
        _rows_nb(
            t, s, p, d, tm, self.codes, self.books, self.rec.book._buf, self.div,
            self.date_ns, self.trades, self.synced, self.state, cols,
        )  # fmt: skip
        n = int(self.state[_N])
        out["instrument_id"][:n] = self.instrument_id
        return n, int(self.state[_ST])

    def skip_line(self) -> None:
        """Step over the rejected line at the current position; the book needs a resync."""
        self.state[_K] += 1
        self.synced = False

    def resync(self, out: np.ndarray, n: int) -> tuple[int, int]:
        """At the first good line after a rejection: DELTA rows taking the book to that line's
        orderbook row (``seq`` 0 but the last, which takes the next ``seq``), appended to
        ``out`` from row ``n``; returns (rows now in ``out``, rows added)."""
        k = int(self.state[_K])
        row = self.books[k]
        bp, bq, ap, aq = (row[i::4] for i in (2, 3, 0, 1))
        cols = tuple(out[c] for c in ("ts_event", "side", "px", "qty", "seq", "kind"))
        ts = self.date_ns + int(self.cols[4][k])
        buf = self.rec.book._buf
        m = n
        for side, px, qty, none in ((1, bp, bq, EMPTY_BID_PX), (-1, ap, aq, EMPTY_ASK_PX)):
            live = (qty > 0) & (px != none)
            m = _resync_nb(buf, px[live] // self.div, qty[live].copy(), side, ts, cols, m)
        self.state[_SEQ] += 1  # the snapshot's seq in the message form
        if m > n:
            out["seq"][m - 1] = self.state[_SEQ]
        out["instrument_id"][n:m] = self.instrument_id
        self.synced = True
        self.state[_K] = k + 1
        return m, m - n


def lobster_rows(
    messages: np.ndarray,
    books: np.ndarray,
    *,
    instrument_id: int = 0,
    price_divisor: int = 100,
    date_ns: int = 0,
    include_trades: bool = False,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[np.ndarray]:
    """Batches of the rows ``iter_book_deltas`` yields as messages (its ``BookSnapshot`` of
    ``books[0]`` excepted: see ``engine.lobster.snapshot_from_row``). A book-changing message
    that cannot be applied raises ValueError, as the reference does."""
    if len(messages) == 0:
        return
    kern = LobsterKernel(
        messages,
        books,
        instrument_id=instrument_id,
        price_divisor=price_divisor,
        date_ns=date_ns,
        include_trades=include_trades,
    )
    kern.start_at(0)
    while True:
        out = empty(max(batch_rows, 2))
        n, status = kern.run(out)
        if n:
            yield out[:n]
        if status == _BAD_MESSAGE:
            k = kern.position
            m = messages[k]
            raise ValueError(
                f"bad LOBSTER message: type={int(m['type'])} size={int(m['size'])} "
                f"price={int(m['price'])} direction={int(m['direction'])} "
                f"(price_divisor={price_divisor})"
            )
        if status == _BAD_BOOK_ROW:
            raise ValueError(
                f"orderbook price not a multiple of price_divisor={price_divisor} "
                f"(row {kern.position + 1})"
            )
        if status == _DONE:
            return
