"""Dirty LOBSTER files: read what can be read, reject the rest by reason, replay the good rows.

:func:`engine.lobster.read_lobster` is strict (any flaw is a ValueError): right for the
reconstruction proof, wrong for a replay of a file someone cut short. Here a LOBSTER pair is read
line by line: line ``k`` of the message file and line ``k`` of the orderbook file are one event,
accepted only if both lines are whole, parse, and make sense (type 1..7; a book-changing message
with size > 0, price > 0 on the ``price_divisor`` grid, direction +-1; an uncrossed book row on
the grid; time not going back). Every other line is rejected once, with the reasons of
:mod:`engine.md_rejects` (``truncated`` for a torn last line or a line missing from the shorter
file), so ``rows == accepted + rejected`` always holds.

Rejections are counted when the replay *reaches* them (so ``on_bad_row = "fail"`` stops at the
first bad event, after the good ones before it), and the book is resynchronised after each one:
the next good event is sent as a :class:`BookSnapshot` of its reference row instead of a delta,
because the deltas of a skipped message are unknowable and applying the next one to a stale book
would corrupt every level after it.

A file with no good line at all (wrong ``levels``, not a LOBSTER file) is a configuration error:
a ValueError naming the file, raised at load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.lobster import (
    EMPTY_ASK_PX,
    EMPTY_BID_PX,
    MESSAGE_DTYPE,
    LobsterEvent,
    LobsterReconstructor,
    snapshot_from_row,
)
from engine.lobster_rows import BAD_LINE, DONE, FULL, RESYNC, LobsterKernel
from engine.md_columns import BATCH_ROWS, empty
from engine.md_rejects import RejectCounter
from engine.messages import BookDelta, BookSnapshot, Trade

__all__ = ["CheckedLobster", "load_lobster_checked"]

# per-line reason codes: 0 = good; the rest index _CODES
_CODES = (
    "",
    "malformed_row",
    "missing_value",
    "unparsable",
    "truncated",
    "bad_time",
    "out_of_order_time",
    "bad_message",
    "bad_size",
    "non_positive_price",
    "crossed",
)
_C = {name: i for i, name in enumerate(_CODES)}
_PRINTS = (LobsterEvent.EXECUTION, LobsterEvent.HIDDEN_EXECUTION, LobsterEvent.CROSS_TRADE)


class _Lines:
    """One headerless numeric CSV as a (lines, ncols) array, with a reason code per line."""

    def __init__(self, path: Path, ncols: int, float_first: bool) -> None:
        self.path = path
        self.values, self.code = _read_lines(path, ncols, float_first)
        self.n = len(self.code)


class CheckedLobster:
    """A LOBSTER pair read and checked line by line (see the module docstring).

    ``rows`` lines in all (the longer file's), ``accepted`` good events; iterate
    :meth:`messages` for the replay (repeatably).
    """

    def __init__(self, message_path: Path, orderbook_path: Path, levels: int, divisor: int) -> None:
        self.message_path, self.orderbook_path = message_path, orderbook_path
        self.levels, self.price_divisor = int(levels), int(divisor)
        m = _Lines(message_path, 6, True)
        b = _Lines(orderbook_path, 4 * self.levels, False)
        for f, what in (
            (m, "message file (6 columns)"),
            (b, f"orderbook file ({self.levels} levels)"),
        ):
            if f.n and not np.any(f.code == 0):
                raise ValueError(
                    f"LOBSTER file {f.path}: no line reads as a {what}: wrong file or levels?"
                )
        self.rows = max(m.n, b.n)
        self.code = np.zeros(self.rows, np.int8)
        self.where = np.zeros(self.rows, np.int8)  # 0: message file, 1: orderbook file
        self._pair(m, b)
        self.messages_arr = _messages(m.values, self.rows)
        self.books = np.zeros((self.rows, 4 * self.levels), np.int64)
        self.books[: b.n] = b.values[: self.rows]
        self._check_messages()
        self._check_books()
        self._check_time()
        self.accepted = int(np.count_nonzero(self.code == 0))
        #: DELTAs of the last replay (so far) that re-aligned the visible window with the
        #: reference rows: levels that existed before the first message, never seen removed
        self.heals = 0

    # --- checks (vectorised over lines; the first reason found for a line stands) ------------

    def _set(self, bad: np.ndarray, reason: str, where: int) -> None:
        new = bad & (self.code == 0)
        self.code[new] = _C[reason]
        self.where[new] = where

    def _pair(self, m: _Lines, b: _Lines) -> None:
        for f, where in ((m, 0), (b, 1)):
            code = np.full(self.rows, _C["truncated"], np.int8)  # lines the file does not have
            code[: f.n] = f.code
            new = (code != 0) & (self.code == 0)
            self.code[new] = code[new]
            self.where[new] = where

    def _check_messages(self) -> None:
        a = self.messages_arr
        t, size, px, d = a["type"], a["size"], a["price"], a["direction"]
        self._set(~np.isfinite(a["time"]) | (a["time"] < 0), "bad_time", 0)
        self._set((t < 1) | (t > 7), "bad_message", 0)
        changing = (t >= 1) & (t <= 4)
        self._set(changing & (size <= 0), "bad_size", 0)
        self._set(changing & (px <= 0), "non_positive_price", 0)
        self._set(changing & ((d != 1) & (d != -1)), "bad_message", 0)
        self._set(changing & (px % self.price_divisor != 0), "bad_message", 0)

    def _check_books(self) -> None:
        bk = self.books
        ap, aq, bp, bq = bk[:, 0::4], bk[:, 1::4], bk[:, 2::4], bk[:, 3::4]
        a_on = (aq > 0) & (ap != EMPTY_ASK_PX)
        b_on = (bq > 0) & (bp != EMPTY_BID_PX)
        self._set(np.any(aq < 0, axis=1) | np.any(bq < 0, axis=1), "bad_size", 1)
        off_grid = np.any(a_on & (ap % self.price_divisor != 0), axis=1) | np.any(
            b_on & (bp % self.price_divisor != 0), axis=1
        )
        self._set(off_grid | np.any(a_on & (ap <= 0), axis=1), "bad_message", 1)
        self._set(np.any(b_on & (bp <= 0), axis=1), "non_positive_price", 1)
        crossed = a_on[:, 0] & b_on[:, 0] & (bp[:, 0] >= ap[:, 0])
        self._set(crossed, "crossed", 1)

    def _check_time(self) -> None:
        """Out of order: earlier than a good line before it (running max over good lines;
        the lines this drops lie below that max, so dropping them does not move it)."""
        good = self.code == 0
        tn = np.where(good, self.messages_arr["time_ns"], np.iinfo(np.int64).min)
        prev_max = np.maximum.accumulate(np.concatenate(([np.iinfo(np.int64).min], tn[:-1])))
        self._set(good & (tn < prev_max), "out_of_order_time", 0)

    # --- replay ------------------------------------------------------------------------------

    def messages(
        self,
        rejects: RejectCounter,
        *,
        instrument_id: int,
        date_ns: int = 0,
        include_trades: bool = True,
    ) -> Iterator[BookDelta | Trade | BookSnapshot]:
        """The replay: a BookSnapshot at the first good event and after every rejected one,
        BookDeltas (``seq`` 1, 2, ...) between, a Trade before each visible print; each
        rejected line counted in ``rejects`` as it is reached."""
        a, books, div = self.messages_arr, self.books, self.price_divisor
        rec = LobsterReconstructor(self.levels, price_divisor=div, instrument_id=instrument_id)
        self.heals = 0
        paths = (str(self.message_path), str(self.orderbook_path))
        types, sizes, prices = a["type"].tolist(), a["size"].tolist(), a["price"].tolist()
        dirs, times, codes = a["direction"].tolist(), a["time_ns"].tolist(), self.code.tolist()
        seq = trade_id = 0
        started = synced = False
        for k in range(self.rows):
            code = codes[k]
            if code:
                rejects.reject(_CODES[code], f"LOBSTER file {paths[self.where[k]]}", k + 1)
                synced = False
                continue
            et, size, price, direction = types[k], sizes[k], prices[k], dirs[k]
            ts = date_ns + times[k]
            # a print (message 0's is already in the first book row, as in iter_book_deltas)
            is_print = et in _PRINTS and price > 0 and size > 0 and price % div == 0
            if include_trades and started and is_print:
                trade_id += 1
                aggressor = 0 if et == LobsterEvent.CROSS_TRADE else -direction
                yield Trade(instrument_id, price // div, size, aggressor, ts, ts, trade_id)
            if not synced:  # the first event, or the first after a rejected one: resync
                if started:
                    seq += 1
                rec.load_row(books[k])
                yield snapshot_from_row(
                    books[k],
                    instrument_id=instrument_id,
                    price_divisor=div,
                    ts_event=ts,
                    ts_recv=ts,
                    seq=seq,
                )
                started = synced = True
                continue
            change = rec.apply(et, size, price, direction)
            if change is not None:
                seq += 1
                side, px, qty = change
                yield BookDelta(instrument_id, side, px, qty, ts, ts, seq)
            healed = rec.heal(books[k])  # as engine.lobster.iter_book_deltas
            if healed:
                self.heals = rejects.repairs["lobster_heals"] = rec.heals
            for side, px, qty in healed:
                seq += 1
                yield BookDelta(instrument_id, side, px, qty, ts, ts, seq)

    # --- the same replay as columnar rows (engine.md_columns) ---------------------------------

    def preamble(
        self, *, instrument_id: int, date_ns: int = 0, include_trades: bool = True
    ) -> list[BookSnapshot]:
        """The BookSnapshot :meth:`messages` starts with (none when no line is good)."""
        del include_trades  # the first event's print is in its book row
        good = np.flatnonzero(self.code == 0)
        if len(good) == 0:
            return []
        k = int(good[0])
        ts = date_ns + int(self.messages_arr["time_ns"][k])
        return [
            snapshot_from_row(
                self.books[k],
                instrument_id=instrument_id,
                price_divisor=self.price_divisor,
                ts_event=ts,
                ts_recv=ts,
            )
        ]

    # long because: one loop over the kernel's stop reasons (full, rejected line, resync)
    def row_batches(
        self,
        rejects: RejectCounter,
        *,
        instrument_id: int,
        date_ns: int = 0,
        include_trades: bool = True,
        batch_rows: int = BATCH_ROWS,
    ) -> Iterator[np.ndarray]:
        """What :meth:`messages` yields after :meth:`preamble`, as ``MD_DTYPE`` row batches
        (``engine.lobster_rows``): the same trades and deltas, rejections counted as reached
        (a batch ends before each, so ``on_bad_row = "fail"`` stops after the same rows). A
        resync after a rejected line is DELTA rows taking the book to that line's orderbook
        row (the message form sends a BookSnapshot): the same book, ``seq`` 0 on all but the
        last, which takes the snapshot's ``seq``."""
        paths = (str(self.message_path), str(self.orderbook_path))
        good = np.flatnonzero(self.code == 0)
        first = int(good[0]) if len(good) else self.rows
        for k in range(first):
            rejects.reject(_CODES[self.code[k]], f"LOBSTER file {paths[self.where[k]]}", k + 1)
        if first == self.rows:
            return
        kern = LobsterKernel(
            self.messages_arr,
            self.books,
            instrument_id=instrument_id,
            price_divisor=self.price_divisor,
            date_ns=date_ns,
            include_trades=include_trades,
            codes=self.code,
        )
        kern.start_at(first)
        book = kern.rec.book
        out, n = empty(batch_rows), 0
        while True:
            m, status = kern.run(out[n:])
            n += m
            self.heals = kern.heals
            if self.heals:
                rejects.repairs["lobster_heals"] = self.heals
            if status == RESYNC:
                need = book.n_levels(1) + book.n_levels(-1) + 2 * self.levels
                if n + need > len(out):
                    yield out[:n]
                    out, n = empty(max(batch_rows, need)), 0
                n, _ = kern.resync(out, n)
                continue
            if n:
                yield out[:n]
                out, n = empty(batch_rows), 0
            if status == BAD_LINE:
                k = kern.position
                rejects.reject(_CODES[self.code[k]], f"LOBSTER file {paths[self.where[k]]}", k + 1)
                kern.skip_line()
            elif status == DONE:
                self.heals = kern.heals
                return
            elif status != FULL:
                raise ValueError(f"LOBSTER line {kern.position + 1}: cannot be applied")


def load_lobster_checked(
    message_path: str | Path, orderbook_path: str | Path, levels: int, price_divisor: int = 100
) -> CheckedLobster:
    """Read and check a LOBSTER pair (ValueError naming the file if it is no LOBSTER file)."""
    for p in (message_path, orderbook_path):
        if not Path(p).is_file():
            raise ValueError(f"LOBSTER file {p}: not found")
    return CheckedLobster(Path(message_path), Path(orderbook_path), levels, price_divisor)


# --- reading -----------------------------------------------------------------------------------


def _messages(values: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros(rows, MESSAGE_DTYPE)
    n = min(len(values), rows)
    v = values[:n]
    out["time"][:n] = v[:, 0]
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.rint(v[:, 0] * 1e9)
        ok = np.isfinite(t) & (np.abs(t) < 2.0**62)
        out["time_ns"][:n] = np.where(ok, t, 0).astype(np.int64)
    out["time"][:n][~ok] = np.nan
    # a cell that is no number is already a rejected line (its code); its cast value is unused
    with np.errstate(invalid="ignore"):
        for j, name in enumerate(("type", "order_id", "size", "price", "direction"), start=1):
            out[name][:n] = v[:, j]
    return out


_NON_ASCII_TO_QMARK = bytes(range(128)) + b"?" * 128


def _read_lines(path: Path, ncols: int, float_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values (lines, ncols) float64, code per line) of a headerless numeric CSV.

    Lines with the wrong field count are ``malformed_row`` (``truncated`` if it is the last line
    and the file does not end with a newline: a torn write); empty cells ``missing_value``;
    cells that are not numbers ``unparsable``. Values are float64 here (int64 prices and sizes
    of LOBSTER are far below 2**53) and the caller casts.
    """
    import pyarrow as pa
    from pyarrow import csv

    raw = path.read_bytes()
    if not raw.strip():
        return np.zeros((0, ncols)), np.zeros(0, np.int8)
    if not raw.isascii():
        # a numeric CSV is ASCII: any other byte makes its cell unparsable. pyarrow decodes a bad
        # row's text as UTF-8 before handing it to ``invalid``, and a stray byte there fails the
        # whole file instead of that line, so each such byte becomes "?" (lines and cells stay put)
        raw = raw.translate(_NON_ASCII_TO_QMARK)
    clean = _read_clean(raw, ncols, float_first)
    if clean is not None:
        return clean, np.zeros(len(clean), np.int8)
    bad_lines: list[int] = []

    def invalid(row: csv.InvalidRow) -> str:
        bad_lines.append(int(row.number) if row.number is not None else -1)
        return "skip"

    names = [f"f{i}" for i in range(ncols)]
    try:
        table = csv.read_csv(
            pa.BufferReader(raw),
            read_options=csv.ReadOptions(column_names=names, use_threads=False),
            parse_options=csv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowException as e:
        raise ValueError(f"LOBSTER file {path}: cannot read: {e}") from None
    n = table.num_rows + len(bad_lines)
    code = np.zeros(n, np.int8)
    values = np.zeros((n, ncols))
    if -1 in bad_lines:  # cannot happen single-threaded; be safe rather than misalign rows
        raise ValueError(f"LOBSTER file {path}: cannot number its lines")
    bad_idx = np.asarray(bad_lines, np.int64) - 1
    code[bad_idx] = _C["malformed_row"]
    good_idx = np.setdiff1d(np.arange(n), bad_idx) if bad_lines else np.arange(n)
    for j, col in enumerate(table.columns):
        values[good_idx, j], cell_code = _parse_column(col, int_only=not (float_first and j == 0))
        sub = code[good_idx]
        code[good_idx] = np.where(sub == 0, cell_code, sub)
    if not raw.endswith(b"\n") and code[-1] != 0:
        code[-1] = _C["truncated"]
    return values, code


def _read_clean(raw: bytes, ncols: int, float_first: bool) -> np.ndarray | None:
    """The values of a file with nothing wrong in it, parsed typed in one pass (a real day's
    files: several times faster than reading strings and checking each column); None at the
    first thing that is not a number in its place (a missing cell, a line of the wrong length,
    a torn last line), and ``_read_lines`` reads the file line by line instead."""
    import pyarrow as pa
    from pyarrow import csv

    names = [f"f{i}" for i in range(ncols)]
    types = {n: pa.float64() if float_first and j == 0 else pa.int64() for j, n in enumerate(names)}
    try:
        table = csv.read_csv(
            pa.BufferReader(raw),
            read_options=csv.ReadOptions(column_names=names, use_threads=False),
            parse_options=csv.ParseOptions(ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(column_types=types, null_values=[""]),
        )
    except (pa.ArrowException, ValueError):
        return None
    if any(col.null_count for col in table.columns):
        return None
    values = np.empty((table.num_rows, ncols))
    for j, col in enumerate(table.columns):
        values[:, j] = col.to_numpy()
    return values


def _parse_column(col: object, int_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """A string column as float64 values and a code per cell. The fast path casts the whole
    column; a column with a cell that is no number is parsed cell by cell (dirty files only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks()  # type: ignore[attr-defined]
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    code = np.where(nulls, _C["missing_value"], 0).astype(np.int8)
    try:
        v = pc.cast(pc.utf8_trim_whitespace(arr), pa.int64() if int_only else pa.float64())
        return v.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64), code
    except (pa.ArrowException, ValueError):
        pass
    out = np.zeros(len(arr))
    for i, s in enumerate(arr.to_pylist()):
        if s is None:
            continue
        try:
            out[i] = int(s) if int_only else float(s)
        except ValueError:
            code[i] = _C["unparsable"]
    return out, code
