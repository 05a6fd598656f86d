"""Replay recorded market data (CSV or Parquet) as engine messages, in timestamp order.

Why: the simulated exchange (DESIGN §6) is driven either by a synthetic market or by a replay of
recorded data, and a backtest is only as honest as its input. Recorded files are dirty, so this
module's job is mostly validation: every row is converted through the one place where decimals
become ticks and lots (:class:`engine.instruments.Instrument`), malformed rows are skipped and
counted by reason (``ReplaySource.rejected``) instead of crashing a long replay, while a wrong
*file* (missing, unsupported format, missing required column) fails at once with a ValueError
naming the file and the column -- that is a configuration error, not dirty data.

File schemas (column names are case-insensitive; spaces become underscores)::

    quotes: ts_event, symbol | instrument_id, bid_px, bid_qty, ask_px, ask_qty  -> Quote
    trades: ts_event, symbol | instrument_id, px, qty, side [, trade_id]         -> Trade
    bars:   ts, symbol | instrument_id, open, high, low, close, volume
            [, trades] [, end_ts] [, adj_close]                                  -> Bar

- ``ts_event`` / ``ts``: int nanoseconds since the epoch, or an ISO-8601 date/datetime string, or
  a Parquet timestamp/date column (UTC). ``timestamp`` and ``time`` are accepted as aliases, and
  for bars ``date`` and ``datetime`` too (daily files usually say ``Date``).
- prices and quantities: decimals (CSV columns are read as text so ``0.1`` stays exactly 0.1 on
  its way to ticks); Parquet float, integer, decimal or string columns.
- ``symbol`` is looked up in the instrument table; without a symbol column, ``instrument_id``
  is; without either, the ``symbol=`` argument names the instrument of every row.
- ``side`` (the aggressor): ``buy``/``b``/``1`` or ``sell``/``s``/``-1``; empty, ``0``,
  ``none``, ``unknown`` mean unknown (Side.NONE).
- bars are stamped at their *close*: ``end_ns = end_ts`` if given, else ``ts + bar_interval_ns``,
  and merged by ``end_ns`` -- a bar is not known before it closes, so ordering by its open
  would leak the future into a backtest.

Ordering: each file is sorted by time (stable: rows with equal times keep file order), then all
files are merged with :func:`heapq.merge`. At equal times bars come first (they closed), then
book streams, trades, quotes; then file order. ``ts_recv`` is set to ``ts_event``: pacing and
receive stamps belong to the caller. Quotes from files get ``seq`` 1, 2, 3, ... per instrument in
output order; trades without a ``trade_id`` column get 1, 2, 3, ... per instrument.

Rejection reasons (keys of ``rejected``) are :data:`engine.md_rejects.REASONS`:
``malformed_row`` (CSV row with the wrong number of fields), ``missing_value``, ``bad_time``,
``unparsable`` (not a number, or beyond int64 ticks/lots), ``nan_value`` (NaN or infinite),
``non_positive_price`` (<= 0, or rounds to 0 ticks), ``bad_size`` (negative; zero for a
trade), ``crossed`` (bid >= ask: crossed or locked), ``unknown_instrument``, ``bad_side``,
``bad_ohlc`` (high/low inconsistent with open/close), ``out_of_order_time`` (a pre-built stream
went back in time). Each is also reported to the source's :class:`RejectCounter` with the file
and row (the CSV line number, header = line 1; the 1-based row of a Parquet file), which logs
the first few and, under ``on_bad_row = "fail"``, raises :class:`BadRowError` at the first.
An empty line of a CSV file is not a row (a line of spaces is a malformed one).
"""

from __future__ import annotations

import csv
import heapq
import inspect
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.instruments import Instrument, InstrumentTable
from engine.md_columns import BATCH_ROWS, from_messages
from engine.md_rejects import RejectCounter, validate_rows
from engine.messages import Bar, BookDelta, BookSnapshot, Quote, Side, Trade

__all__ = ["DAY_NS", "ReplaySource", "load_bars_csv"]

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike] | None
ReplayMessage = Quote | Trade | Bar | BookDelta | BookSnapshot

DAY_NS = 86_400 * 10**9

_QUOTE_COLS = ("ts_event", "bid_px", "bid_qty", "ask_px", "ask_qty")
_TRADE_COLS = ("ts_event", "px", "qty", "side")
_BAR_COLS = ("ts", "open", "high", "low", "close", "volume")
_TS_ALIASES = {
    "ts_event": ("ts_event", "timestamp", "time", "ts"),
    "ts": ("ts", "timestamp", "time", "date", "datetime", "ts_event"),
}
# merge priority at equal timestamps (lower first)
_PRIO_BAR, _PRIO_STREAM, _PRIO_TRADE, _PRIO_QUOTE = 0, 1, 2, 3
_TIME_COLS = ("ts_event", "ts", "end_ts")  # canonical names of time columns
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt")
_SIDES = {
    "buy": Side.BUY,
    "b": Side.BUY,
    "1": Side.BUY,
    "+1": Side.BUY,
    "bid": Side.BUY,
    "sell": Side.SELL,
    "s": Side.SELL,
    "-1": Side.SELL,
    "ask": Side.SELL,
    "": Side.NONE,
    "0": Side.NONE,
    "none": Side.NONE,
    "unknown": Side.NONE,
    "n": Side.NONE,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_LIMIT = 1 << 63
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}  # a Parquet timestamp's unit
_CACHE_LIMIT = 1 << 20  # distinct decimal strings remembered per instrument and unit


class _Reject(Exception):
    """A row is malformed; ``reason`` is the key counted in ``ReplaySource.rejected``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _File:
    """One loaded input file: its columns keyed by canonical name, as pyarrow arrays
    (``arrays``) and, converted on first use, as Python lists (``cols``; time columns as int
    ns or None); ``lines`` the row number of each (CSV line number, or 1-based Parquet row);
    ``bad_lines`` the CSV lines with the wrong number of fields."""

    def __init__(
        self,
        kind: str,
        path: Path,
        arrays: dict[str, pa.ChunkedArray],
        lines: list[int],
        bad_lines: list[int],
    ) -> None:
        self.kind = kind
        self.path = path
        self.where = f"{kind} file {path}"
        self.arrays = arrays
        self._cols: dict[str, list[Any]] | None = None
        self.n = len(lines)
        self.lines = lines
        self.bad_lines = bad_lines

    @property
    def cols(self) -> dict[str, list[Any]]:
        if self._cols is None:
            self._cols = {
                k: _ts_list(a) if k in _TIME_COLS else a.to_pylist() for k, a in self.arrays.items()
            }
        return self._cols


class ReplaySource:
    """Recorded quotes, trades, bars (and pre-built book streams) merged into one ordered stream.

    Iterate it (repeatably) to get engine market-data messages. ``rejected`` counts the rows
    skipped so far by reason; it is complete once an iteration is exhausted, and restarts with
    each new iteration.
    """

    def __init__(
        self,
        instruments: InstrumentTable | Iterable[Instrument],
        *,
        quotes: Paths = None,
        trades: Paths = None,
        bars: Paths = None,
        symbol: str | None = None,
        bar_interval_ns: int = DAY_NS,
        adjust_bars: bool = False,
        streams: Sequence[Iterable[ReplayMessage] | Callable[[], Iterable[ReplayMessage]]] = (),
        rejects: RejectCounter | None = None,
    ) -> None:
        """``symbol`` names the instrument of files with neither a symbol nor an instrument_id
        column. ``adjust_bars`` scales open/high/low/close by ``adj_close / close`` where an
        ``adj_close`` column exists (splits and dividends in daily data). ``streams`` are
        already-built message sequences (each in time order, e.g. a LOBSTER replay), merged in
        as they are; a callable is called at each iteration so the source stays repeatable
        (a callable taking one argument gets ``rejects``, for streams that reject rows).
        ``rejects`` is told of every rejected row (and under ``policy="fail"`` raises at the
        first); by default one that skips and logs the first few."""
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        self._by_symbol = {ins.symbol: ins for ins in self.instruments}
        if symbol is not None:
            self.instruments.by_symbol(symbol)  # KeyError early for a typo
        if bar_interval_ns <= 0:
            raise ValueError("bar_interval_ns must be > 0")
        self.default_symbol = symbol
        self.bar_interval_ns = int(bar_interval_ns)
        self.adjust_bars = adjust_bars
        self.rejected: dict[str, int] = {}
        self.rejects = rejects if rejects is not None else RejectCounter()
        self.lobster: Any = None  # the checked LOBSTER pair of from_lobster (rows, accepted)
        self._lobster_kw: dict[str, Any] = {}  # its replay's instrument, day and trades
        self._files: list[_File] = []
        for kind, paths, required in (
            ("quotes", quotes, _QUOTE_COLS),
            ("trades", trades, _TRADE_COLS),
            ("bars", bars, _BAR_COLS),
        ):
            for p in _as_paths(paths):
                self._files.append(self._load(kind, Path(p), required))
        self._streams = list(streams)
        self._caches: dict[tuple[int, str], dict[Any, int]] = {}

    # --- public --------------------------------------------------------------------------------

    @classmethod
    def from_lobster(
        cls,
        message_path: PathLike,
        orderbook_path: PathLike,
        levels: int,
        instrument_id: int,
        price_divisor: int = 100,
        *,
        date_ns: int = 0,
        include_trades: bool = True,
        instruments: InstrumentTable | Iterable[Instrument] | None = None,
        rejects: RejectCounter | None = None,
    ) -> ReplaySource:
        """Replay a LOBSTER message/orderbook file pair (``engine.lobster_checked``).

        The pair is read and checked line by line now (a file that is no LOBSTER file at all is
        a ValueError naming it); bad lines (torn, truncated, garbage, impossible) are rejected
        as the replay reaches them, and the book resynchronised with a snapshot after each. The
        stream: a BookSnapshot of the first good row (seq 0), then BookDeltas (seq 1, 2, ...)
        with a Trade before each visible execution. ``price_divisor`` turns LOBSTER prices
        (dollars x 10000) into ticks (100 for a one-cent tick); ``date_ns`` is midnight of the
        trading day. Imported lazily: a CSV replay must not pay for the order book's numba
        compilation.
        """
        from engine.lobster_checked import load_lobster_checked

        checked = load_lobster_checked(message_path, orderbook_path, levels, price_divisor)

        def stream(counter: RejectCounter) -> Iterable[ReplayMessage]:
            return checked.messages(
                counter, instrument_id=instrument_id, date_ns=date_ns, include_trades=include_trades
            )

        if instruments is None:
            instruments = [
                Instrument(
                    instrument_id=instrument_id,
                    symbol=f"LOBSTER{instrument_id}",
                    tick_size=price_divisor / 10_000,
                )
            ]
        src = cls(instruments, streams=[stream], rejects=rejects)
        src.lobster = checked
        src._lobster_kw = {
            "instrument_id": instrument_id,
            "date_ns": date_ns,
            "include_trades": include_trades,
        }
        return src

    # --- columnar form (engine.md_columns.ColumnarSource) --------------------------------------

    @property
    def columnar(self) -> bool:
        """Whether :meth:`batches` can carry this source: quote and trade files, or a LOBSTER
        pair alone. Bars and other pre-built streams have no row form."""
        if self.lobster is not None:
            return not self._files and len(self._streams) == 1
        return not self._streams and all(f.kind != "bars" for f in self._files)

    def preamble(self) -> list[ReplayMessage]:
        """What comes before the rows: a LOBSTER pair's opening BookSnapshot."""
        return self.lobster.preamble(**self._lobster_kw) if self.lobster is not None else []

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[np.ndarray]:
        """The data after :meth:`preamble` as ``MD_DTYPE`` row batches in time order, checked
        by the feed's rules (``engine.md_rejects.validate_rows``, counted in ``rejects``).

        A LOBSTER pair goes through the numba kernel (``engine.lobster_rows``); quote and
        trade files are converted per distinct cell (``engine.sources.replay_rows``), or,
        under ``on_bad_row = "fail"``, parsed as messages and packed. ``TypeError`` where
        :attr:`columnar` is False."""
        if not self.columnar:
            raise TypeError("this replay has bars or pre-built streams: it has no row form")
        self.rejected = {}
        if self.lobster is not None:
            raw = self.lobster.row_batches(self, batch_rows=batch_rows, **self._lobster_kw)
        elif self.rejects.policy == "skip":
            from engine.sources.replay_rows import file_rows

            raw = file_rows(self, batch_rows)
        else:  # "fail": the message form's order of rows and of the first error
            raw = _packed(iter(self), batch_rows)
        ids, last = self.instruments.ids, {}
        offset = len(self.preamble())
        for rows in raw:
            kept = validate_rows(rows, ids, self.rejects, last_quote_ts=last, offset=offset)
            offset += len(rows)
            if len(kept):
                yield kept

    def __iter__(self) -> Iterator[ReplayMessage]:
        self.rejected = {}
        for f in self._files:
            for line in f.bad_lines:
                self.reject("malformed_row", f.where, line)
        gens: list[Iterator[tuple[int, int, int, int, ReplayMessage]]] = []
        for i, f in enumerate(self._files):
            rows = {"quotes": self._quote_rows, "trades": self._trade_rows, "bars": self._bar_rows}
            gens.append(rows[f.kind](f, i))
        base = len(self._files)
        for j, s in enumerate(self._streams):
            if callable(s):
                s = s(self) if inspect.signature(s).parameters else s()
            gens.append(self._stream_rows(s, base + j))
        quote_seq: dict[int, int] = {}
        trade_ids: dict[int, int] = {}
        for _ts, prio, _src, _row, msg in heapq.merge(*gens):
            if prio == _PRIO_QUOTE:
                iid = msg.instrument_id
                msg.seq = quote_seq[iid] = quote_seq.get(iid, 0) + 1
            elif prio == _PRIO_TRADE and msg.trade_id == 0:
                iid = msg.instrument_id
                msg.trade_id = trade_ids[iid] = trade_ids.get(iid, 0) + 1
            yield msg

    # --- loading -------------------------------------------------------------------------------

    def _load(self, kind: str, path: Path, required: tuple[str, ...]) -> _File:
        """Read a whole file into columns; raise ValueError for anything wrong with the file."""
        if not path.is_file():
            raise ValueError(f"{kind} file {path}: not found")
        name = path.name.lower()
        bad_lines: list[int] = []
        try:
            if name.endswith(_PARQUET_SUFFIXES):
                table = pq.read_table(path)
                lines = list(range(1, table.num_rows + 1))
            elif name.endswith(_CSV_SUFFIXES):
                table, lines, bad_lines = _read_csv(path)
            else:
                raise ValueError(f"{kind} file {path}: unsupported format (want .csv or .parquet)")
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{kind} file {path}: cannot read: {e}") from e

        by_name: dict[str, int] = {}
        for i, col in enumerate(table.column_names):
            by_name.setdefault(_norm(col), i)
        cols: dict[str, pa.ChunkedArray] = {}
        for want in required:
            aliases = _TS_ALIASES.get(want, (want,))
            found = next((a for a in aliases if a in by_name), None)
            if found is None:
                raise ValueError(
                    f"{kind} file {path}: missing required column {want!r} "
                    f"(columns: {', '.join(table.column_names)})"
                )
            arr = table.column(by_name[found])
            cols[want] = arr
        for opt in ("symbol", "instrument_id", "trade_id", "trades", "end_ts", "adj_close"):
            if opt in by_name and opt not in cols:
                arr = table.column(by_name[opt])
                cols[opt] = arr
        if "symbol" not in cols and "instrument_id" not in cols and self.default_symbol is None:
            raise ValueError(
                f"{kind} file {path}: missing required column 'symbol' (or 'instrument_id'; "
                f"or pass symbol= for a single-instrument file)"
            )
        return _File(kind, path, cols, lines, bad_lines)

    # --- rows -> messages ----------------------------------------------------------------------

    def reject(self, reason: str, where: str, row: int, detail: str = "") -> None:
        """Count a rejected row here (``rejected``) and in ``rejects`` (which may raise)."""
        self.rejects.reject(reason, where, row, detail)
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def repairs(self) -> dict[str, int]:
        """What the streams repaired rather than rejected (the counter's ``repairs``: a
        stream is handed this source as its counter)."""
        return self.rejects.repairs

    def _ordered(self, f: _File, ts_col: list[int | None]) -> list[int]:
        """Row indices with a valid time, stably sorted by that time (bad times counted)."""
        good = [i for i, t in enumerate(ts_col) if t is not None and 0 <= t < _INT64_LIMIT]
        if len(good) != len(ts_col):
            ok = set(good)
            for i in range(len(ts_col)):
                if i not in ok:
                    self.reject("bad_time", f.where, f.lines[i])
        keys = np.fromiter((ts_col[i] for i in good), dtype=np.int64, count=len(good))
        return [good[k] for k in np.argsort(keys, kind="stable").tolist()]

    def _instrument(self, f: _File, i: int) -> Instrument:
        sym = f.cols.get("symbol")
        if sym is not None:
            s = sym[i]
            if s is None:
                raise _Reject("missing_value")
            ins = self._by_symbol.get(str(s).strip())
        elif "instrument_id" in f.cols:
            v = f.cols["instrument_id"][i]
            if v is None:
                raise _Reject("missing_value")
            try:
                iid = int(v) if not isinstance(v, str) else int(v.strip())
            except (TypeError, ValueError):
                raise _Reject("unknown_instrument") from None
            ins = self.instruments.get(iid)
        else:
            assert self.default_symbol is not None
            return self.instruments.by_symbol(self.default_symbol)
        if ins is None:
            raise _Reject("unknown_instrument")
        return ins

    def _units(self, ins: Instrument, unit: str, v: Any) -> int:
        """Decimal cell -> ticks (``unit='px'``) or lots (``'qty'``), memoised per instrument.

        Recorded prices repeat endlessly, and Decimal arithmetic is the slow part of a replay.
        Only exact, finite values reach the cache, so a hit can never be a bad value.
        """
        cache = self._caches.get((ins.instrument_id, unit))
        if cache is None:
            cache = self._caches[(ins.instrument_id, unit)] = {}
        try:
            return cache[v]
        except (KeyError, TypeError):
            pass
        d = _decimal(v)
        if d < 0:
            raise _Reject("non_positive_price" if unit == "px" else "bad_size")
        try:
            n = ins.px_to_ticks(d) if unit == "px" else ins.qty_to_lots(d)
        except (ArithmeticError, ValueError):  # decimal.InvalidOperation: beyond its precision
            raise _Reject("unparsable") from None
        if n >= _INT64_LIMIT:  # the wire is int64
            raise _Reject("unparsable")
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[v] = n
        return n

    def _quote_rows(self, f: _File, src: int) -> Iterator[tuple[int, int, int, int, Quote]]:
        c = f.cols
        ts_col, bp, bq, ap, aq = (c[k] for k in _QUOTE_COLS)
        for i in self._ordered(f, ts_col):
            try:
                ins = self._instrument(f, i)
                bid = self._units(ins, "px", bp[i])
                ask = self._units(ins, "px", ap[i])
                if bid <= 0 or ask <= 0:
                    raise _Reject("non_positive_price")
                if bid >= ask:
                    raise _Reject("crossed")
                bqty = self._units(ins, "qty", bq[i])
                aqty = self._units(ins, "qty", aq[i])
            except _Reject as r:
                self.reject(r.reason, f.where, f.lines[i])
                continue
            ts = ts_col[i]
            yield ts, _PRIO_QUOTE, src, i, Quote(ins.instrument_id, bid, bqty, ask, aqty, ts, ts)

    def _trade_rows(self, f: _File, src: int) -> Iterator[tuple[int, int, int, int, Trade]]:
        c = f.cols
        ts_col, px_col, qty_col, side_col = (c[k] for k in _TRADE_COLS)
        tid_col = c.get("trade_id")
        for i in self._ordered(f, ts_col):
            try:
                ins = self._instrument(f, i)
                px = self._units(ins, "px", px_col[i])
                if px <= 0:
                    raise _Reject("non_positive_price")
                qty = self._units(ins, "qty", qty_col[i])
                if qty <= 0:
                    raise _Reject("bad_size")
                side = _side(side_col[i])
                tid = 0
                if tid_col is not None and tid_col[i] is not None:
                    tid = _int(tid_col[i])
            except _Reject as r:
                self.reject(r.reason, f.where, f.lines[i])
                continue
            ts = ts_col[i]
            yield ts, _PRIO_TRADE, src, i, Trade(ins.instrument_id, px, qty, side, ts, ts, tid)

    def _bar_rows(self, f: _File, src: int) -> Iterator[tuple[int, int, int, int, Bar]]:
        c = f.cols
        ts_col, o_col, h_col, l_col, c_col, v_col = (c[k] for k in _BAR_COLS)
        end_col = c.get("end_ts")
        n_col = c.get("trades")
        adj_col = c.get("adj_close") if self.adjust_bars else None
        ends: list[int | None] = []
        for i, t in enumerate(ts_col):
            e = (
                end_col[i]
                if end_col is not None
                else (None if t is None else t + self.bar_interval_ns)
            )
            ends.append(e if e is not None and t is not None and e > t else None)
        for i in self._ordered(f, ends):
            try:
                ins = self._instrument(f, i)
                ohlc = [_decimal(col[i]) for col in (o_col, h_col, l_col, c_col)]
                if adj_col is not None and adj_col[i] is not None:
                    adj = _decimal(adj_col[i])
                    if ohlc[3] > 0:
                        ohlc = [x * adj / ohlc[3] for x in ohlc]
                o, h, lo, cl = (self._units(ins, "px", x) for x in ohlc)
                if min(o, h, lo, cl) <= 0:
                    raise _Reject("non_positive_price")
                if h < max(o, cl, lo) or lo > min(o, cl, h):
                    raise _Reject("bad_ohlc")
                vol = self._units(ins, "qty", v_col[i])
                n_trades = 0
                if n_col is not None and n_col[i] is not None:
                    n_trades = _int(n_col[i])
            except _Reject as r:
                self.reject(r.reason, f.where, f.lines[i])
                continue
            end = ends[i]
            assert end is not None
            yield (
                end,
                _PRIO_BAR,
                src,
                i,
                Bar(ins.instrument_id, ts_col[i], end, o, h, lo, cl, vol, n_trades),
            )

    def _stream_rows(
        self, stream: Iterable[ReplayMessage], src: int
    ) -> Iterator[tuple[int, int, int, int, ReplayMessage]]:
        last = -1
        for i, msg in enumerate(stream):
            ts = msg.end_ns if type(msg) is Bar else msg.ts_event
            if ts < last:
                self.reject("out_of_order_time", f"stream {src - len(self._files) + 1}", i + 1)
                continue
            last = ts
            yield ts, _PRIO_STREAM, src, i, msg


def _packed(msgs: Iterator[Any], batch_rows: int) -> Iterator[np.ndarray]:
    """Messages packed into row batches of ``batch_rows``."""
    while chunk := list(itertools.islice(msgs, batch_rows)):
        yield from_messages(chunk)


def load_bars_csv(
    path: PathLike,
    instrument: Instrument,
    *,
    bar_interval_ns: int = DAY_NS,
    adjusted: bool = False,
    rejected: dict[str, int] | None = None,
) -> list[Bar]:
    """Bars of one instrument from an OHLCV file (CSV or Parquet), oldest first.

    Made for real daily data as downloaded (``Date,Open,High,Low,Close,Adj Close,Volume``): no
    symbol column needed, column names case-insensitive, dates parsed as UTC midnight, each bar
    closing ``bar_interval_ns`` after it opens. ``adjusted`` scales prices by
    ``Adj Close / Close`` so that splits do not look like crashes. Bad rows are skipped; pass a
    dict as ``rejected`` to receive the counts.
    """
    src = ReplaySource(
        [instrument],
        bars=path,
        symbol=instrument.symbol,
        bar_interval_ns=bar_interval_ns,
        adjust_bars=adjusted,
    )
    bars = [m for m in src if type(m) is Bar]
    if rejected is not None:
        rejected.update(src.rejected)
    return bars


# --- helpers ------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[pa.Table, list[int], list[int]]:
    """(table, line number of each row, lines with the wrong number of fields) of a CSV file.

    Every cell is read as text: decimals stay exact, and one bad cell costs a row rather than
    the whole column's type. Parsed on one thread, because only then does pyarrow number the
    invalid lines, and the line numbers are what an operator needs to find a bad row. Blank
    lines are dropped here (they are not rows); every other line is a row or a bad line.
    """
    header = _csv_header(path)
    bad: list[int] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        bad.append(-1 if row.number is None else int(row.number))
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    n = table.num_rows + len(bad)
    if -1 in bad:  # pyarrow numbers lines only single-threaded; never misname a row
        raise ValueError(f"file {path}: cannot number its lines")
    skip = set(bad)
    lines = [k for k in range(2, n + 2) if k not in skip]
    empty = np.ones(table.num_rows, dtype=bool)
    for col in table.columns:
        empty &= col.is_null().to_numpy(zero_copy_only=False)
    if empty.any():  # blank lines (or rows of empty cells, which are rows: they are rejected)
        blank = _blank_lines(path, {lines[i] for i in np.flatnonzero(empty).tolist()})
        keep = [i for i, ln in enumerate(lines) if ln not in blank]
        if len(keep) != len(lines):
            table = table.take(pa.array(keep, type=pa.int64()))
            lines = [lines[i] for i in keep]
    return table, lines, bad


def _blank_lines(path: Path, candidates: set[int]) -> set[int]:
    """Which of the ``candidates`` line numbers are empty in the file."""
    out: set[int] = set()
    last = max(candidates)
    with pa.input_stream(str(path), compression="detect") as f:
        rest, k = b"", 0
        while k < last:
            chunk = f.read(1 << 20)
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop() if chunk else b""
            for part in parts:
                k += 1
                if k in candidates and not part.rstrip(b"\r"):
                    out.add(k)
            if not chunk:
                if rest:
                    k += 1
                    if k in candidates and not rest.rstrip(b"\r"):
                        out.add(k)
                break
    return out


def _as_paths(paths: Paths) -> list[PathLike]:
    if paths is None:
        return []
    if isinstance(paths, str | os.PathLike):
        return [paths]
    return list(paths)


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _csv_header(path: Path) -> list[str]:
    """Column names as written in the CSV's first line (compressed files included)."""
    buf = b""
    with pa.input_stream(str(path), compression="detect") as f:  # no readline() on these
        while b"\n" not in buf:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0]
    if not line.strip():
        raise ValueError(f"file {path}: empty (no header line)")
    try:
        return next(csv.reader([line.decode("utf-8-sig")]))
    except (UnicodeDecodeError, csv.Error) as e:  # not text, or a bare CR inside the header
        raise ValueError(f"file {path}: unreadable header line ({e})") from None


def _ts_list(arr: pa.ChunkedArray) -> list[int | None]:
    """A time column as int nanoseconds since the epoch (UTC); None where unparseable."""
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        try:
            return arr.cast(pa.timestamp("ns")).cast(pa.int64()).to_pylist()
        except pa.ArrowException:  # a value beyond int64 nanoseconds: that row's time is bad
            unit = DAY_NS if pa.types.is_date32(t) else 10**6 if pa.types.is_date64(t) else None
            unit = unit or _UNIT_NS[t.unit]
            store = pa.int32() if pa.types.is_date32(t) else pa.int64()
            raw = arr.cast(store).to_pylist()  # the stored count of days / ms / units
            return [None if v is None or abs(v * unit) >= _INT64_LIMIT else v * unit for v in raw]
    if pa.types.is_integer(t):
        return arr.to_pylist()
    return [_parse_ts(v) for v in arr.to_pylist()]


def _parse_ts(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v == int(v) else None
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        d = v - _EPOCH  # exact integer arithmetic: float timestamps lose the microseconds
        return (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1000
    s = str(v).strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        pass
    if s[-1] not in "Zz" and "+" not in s[10:] and "-" not in s[10:]:
        try:  # naive ISO string: numpy keeps nanoseconds
            return int(np.datetime64(s, "ns").astype(np.int64))
        except ValueError:
            return None
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return None
    return _parse_ts(d)


def _decimal(v: Any) -> Decimal:
    """A cell as a finite Decimal, or the reason it is not one."""
    if v is None:
        raise _Reject("missing_value")
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, bool):
        raise _Reject("unparsable")
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise _Reject("nan_value")
        d = Decimal(repr(v))
    elif isinstance(v, int):
        d = Decimal(v)
    else:
        s = str(v).strip()
        if not s:
            raise _Reject("missing_value")
        try:
            d = Decimal(s)
        except InvalidOperation:
            raise _Reject("unparsable") from None
    if not d.is_finite():
        raise _Reject("nan_value")
    return d


def _int(v: Any) -> int:
    d = _decimal(v)
    if d != d.to_integral_value() or not -_INT64_LIMIT <= d < _INT64_LIMIT:  # the wire's int64
        raise _Reject("unparsable")
    return int(d)


def _side(v: Any) -> int:
    if v is None:
        return Side.NONE.value
    if isinstance(v, int | float) and not isinstance(v, bool):
        if v in (1, -1, 0):
            return int(v)
        raise _Reject("bad_side")
    side = _SIDES.get(str(v).strip().lower())
    if side is None:
        raise _Reject("bad_side")
    return side.value
