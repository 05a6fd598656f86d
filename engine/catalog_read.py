"""Reading the market-data catalog: ``CatalogSource``, a columnar source over a time window.

Why streaming: a backtest over months must not hold months in memory, and should not read what
it does not replay. The partitions (venue, instrument, date) are pruned by path, row groups by
their ``ts_event`` statistics, rows by the filter; what is left is read one row group at a time
(``BATCH_ROWS`` rows at most) per file and merged by time across files with numpy (stable: at
equal times book streams, then trades, then quotes, then the instruments' order), so memory is
a few batches per open file whatever the window. ``stats`` counts the files, row groups and
rows actually read. Layout and contract: docs/data-catalog.md.

Books: a window that starts inside a book instrument's day begins with that book as it stood
at the start (its day's snapshot and deltas before the start, folded), as a ``BookSnapshot`` in
the preamble. A book whose first day in the window starts later enters as the deltas that build
it from nothing; the opening snapshot of each following day is dropped (the deltas already led
there). A day missing between two days of a book is refused (``ValueError``): the replay could
not know the book after the gap.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from engine.catalog import (
    DAY_NS,
    FILE_SCHEMA,
    PARTITION_SCHEMA,
    SNAPSHOT,
    TS_TYPE,
    CatalogUnits,
    concat_rows,
    day_of,
    load_units,
    part_priority,
    pick_rows,
)
from engine.instruments import Instrument, InstrumentTable
from engine.md_columns import BATCH_ROWS, MD_DTYPE, MdKind, empty, to_messages
from engine.messages import BookSnapshot

__all__ = ["CatalogSource", "resolve_venue", "window_ns"]

_DELTA = int(MdKind.DELTA)
_NAMES = list(MD_DTYPE.names)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: one batch read ahead per file: pyarrow's default (16) holds ~100 MB per open file
_SCAN = {
    "batch_readahead": 1,
    "fragment_readahead": 1,
    "use_threads": False,
    "fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False),
}


def resolve_venue(units: dict[str, dict[str, CatalogUnits]], venue: str, root: Path) -> str:
    """The venue to read: the one named, or the catalog's only one."""
    if venue:
        if venue not in units:
            raise ValueError(f"catalog {root}: no venue {venue!r} (have: {', '.join(units)})")
        return venue
    if len(units) != 1:
        have = ", ".join(sorted(units)) or "none: import data first (gekko data import)"
        raise ValueError(f"catalog {root}: name the venue to read (venues: {have})")
    return next(iter(units))


@dataclass(slots=True)
class _Frag:
    """One part file of one partition, and how its snapshot rows are read."""

    day: date
    symbol: str
    iid: int
    order: int  # merge order at equal times
    frag: ds.ParquetFileFragment
    book: bool = False  # a book part (priority 0) of a book instrument
    snapshots: str = "drop"  # "drop" or "deltas" (the book's first day, entering mid-stream)


@dataclass(slots=True)
class _Plan:
    days: list[date]
    frags: dict[date, list[_Frag]] = field(default_factory=dict)
    preamble: list[BookSnapshot] = field(default_factory=list)


class CatalogSource:
    """The catalog's rows of ``instruments`` (matched by symbol) from ``venue`` in
    ``[start_ns, end_ns)`` (None: unbounded), as a ``engine.md_columns.ColumnarSource``.

    Rows carry the ``instrument_id`` of ``instruments``; an instrument whose tick or lot size
    differs from the catalog's is refused (``ValueError``: its ticks would be misread).
    Instruments the catalog does not hold are skipped (``missing`` lists them).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        instruments: InstrumentTable | Iterable[Instrument],
        *,
        venue: str = "",
        symbols: Iterable[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"catalog {self.root}: no such directory")
        table = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        units = load_units(self.root)
        self.venue = resolve_venue(units, venue, self.root)
        held = units[self.venue]
        wanted = set(symbols) if symbols is not None else None
        self._ids: dict[str, int] = {}
        self.missing: list[str] = []
        for ins in table:
            if wanted is not None and ins.symbol not in wanted:
                continue
            u = held.get(ins.symbol)
            if u is None:
                self.missing.append(ins.symbol)
                continue
            if not u.matches(ins):
                raise ValueError(
                    f"catalog {self.root}: {self.venue}/{ins.symbol} has tick_size "
                    f"{u.tick_size} / lot_size {u.lot_size}; the instrument says "
                    f"{ins.tick_size} / {ins.lot_size}"
                )
            self._ids[ins.symbol] = ins.instrument_id
        if start_ns is not None and end_ns is not None and end_ns <= start_ns:
            raise ValueError(f"catalog window: end {end_ns} must be after start {start_ns}")
        self.start_ns, self.end_ns = start_ns, end_ns
        self.batch_rows = int(batch_rows)
        #: what this source has read so far: files and row groups opened, rows decoded
        self.stats = {"files": 0, "row_groups": 0, "rows_read": 0}
        self._plan_cache: _Plan | None = None

    def narrowed(self, start_ns: int | None, end_ns: int | None) -> CatalogSource:
        """This source over the part of ``[start_ns, end_ns)`` inside its own window, pushed
        down (a sweep's window: read only that, and open books with their state at its start,
        which cutting the rows afterwards would lose)."""
        lo = max(x for x in (self.start_ns, start_ns, -(1 << 63)) if x is not None)
        hi = min(x for x in (self.end_ns, end_ns, (1 << 63) - 1) if x is not None)
        out = copy.copy(self)
        out.start_ns, out.end_ns = lo, max(hi, lo + 1)
        out.stats = {"files": 0, "row_groups": 0, "rows_read": 0}
        out._plan_cache = None
        return out

    @property
    def symbols(self) -> list[str]:
        """The symbols this source reads (the instruments the catalog holds)."""
        return list(self._ids)

    # --- ColumnarSource ------------------------------------------------------------------------

    def preamble(self) -> list[object]:
        return list(self._plan().preamble)

    def batches(self) -> Iterator[np.ndarray]:
        plan = self._plan()
        out: list[np.ndarray] = []
        n = 0
        for day in plan.days:
            for rows in self._merge(plan.frags[day]):
                if not out and self.batch_rows // 2 <= len(rows) <= self.batch_rows:
                    yield rows  # a batch already: no copy
                    continue
                out.append(rows)
                n += len(rows)
                if n >= self.batch_rows:
                    yield from _split(concat_rows(out), self.batch_rows)
                    out, n = [], 0
        if n:
            yield from _split(concat_rows(out), self.batch_rows)

    def __iter__(self) -> Iterator[object]:
        yield from self.preamble()
        for rows in self.batches():
            yield from to_messages(rows)

    # --- planning -----------------------------------------------------------------------------

    def _partition_filter(self) -> ds.Expression:
        expr = (ds.field("venue") == self.venue) & ds.field("instrument").isin(list(self._ids))
        if self.start_ns is not None:
            expr &= ds.field("date") >= day_of(self.start_ns)
        if self.end_ns is not None:
            expr &= ds.field("date") <= day_of(self.end_ns - 1)
        return expr

    def _row_filter(self) -> ds.Expression | None:
        expr = None
        if self.start_ns is not None:
            expr = ds.field("ts_event") >= pa.scalar(self.start_ns, TS_TYPE)
        if self.end_ns is not None:
            e = ds.field("ts_event") < pa.scalar(self.end_ns, TS_TYPE)
            expr = e if expr is None else expr & e
        return expr

    def _plan(self) -> _Plan:
        """Which files each day reads, and the books at the window's start (read once)."""
        if self._plan_cache is not None:
            return self._plan_cache
        order = {s: k for k, s in enumerate(self._ids)}
        plan = _Plan(days=[])
        if self._ids:
            part = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
            dset = ds.dataset(self.root, format="parquet", partitioning=part)
            for frag in dset.get_fragments(filter=self._partition_filter()):
                if not frag.physical_schema.equals(FILE_SCHEMA, check_metadata=False):
                    raise ValueError(f"catalog file {frag.path}: not a part file of a catalog")
                keys = ds.get_partition_keys(frag.partition_expression)
                sym, day = keys["instrument"], keys["date"]
                prio = part_priority(frag.path)
                f = _Frag(day, sym, self._ids[sym], prio * len(order) + order[sym], frag)
                plan.frags.setdefault(day, []).append(f)
        plan.days = sorted(plan.frags)
        for day in plan.days:
            plan.frags[day].sort(key=lambda f: (f.order, f.frag.path))
        self._books(plan)
        self._plan_cache = plan
        return plan

    def _books(self, plan: _Plan) -> None:
        """Mark book parts, fold the books the window opens inside, refuse gaps."""
        seen: dict[str, date] = {}  # the last day each book was read
        first = plan.days[0] if plan.days else None
        for day in plan.days:
            streams: dict[str, list[_Frag]] = {}  # book-stream files (priority 0) by symbol
            for f in plan.frags[day]:
                if f.order < len(self._ids):
                    streams.setdefault(f.symbol, []).append(f)
            for sym, files in streams.items():
                head = files[0]  # an import's files of a day are numbered in time order
                if not _has_snapshot(head.frag):
                    continue  # a stream without book rows
                head.book = True
                last = seen.get(sym)
                seen[sym] = day
                if last is not None:
                    if last != day - timedelta(days=1):
                        raise ValueError(
                            f"catalog {self.root}: the book of {self.venue}/{sym} has no "
                            f"data between {last} and {day}; read the windows on either side "
                            f"of the gap separately"
                        )
                    continue  # a following day: its opening snapshot is where we already are
                snap = self._fold(files) if day == first else None
                if snap is not None and snap.ts_event <= self._first_ts(plan.frags[day]):
                    plan.preamble.append(snap)
                else:
                    head.snapshots = "deltas"

    def _first_ts(self, frags: list[_Frag]) -> int:
        """The earliest time any of ``frags`` may yield (row-group statistics, no data read)."""
        lo = 1 << 62
        for f in frags:
            md = f.frag.metadata
            col = md.schema.names.index("ts_event")
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st is None or not st.has_min_max:
                    return -1
                hi = _ns(st.max)
                if self.start_ns is not None and hi < self.start_ns:
                    continue
                lo = min(lo, max(_ns(st.min), self.start_ns or 0))
        return lo

    def _fold(self, files: list[_Frag]) -> BookSnapshot | None:
        """The book of one instrument at the window's start: its day's snapshot and every
        delta before the start, from its book-stream ``files`` of that day, in order."""
        expr = ds.field("kind") == SNAPSHOT
        if self.start_ns is not None:
            expr = expr | (ds.field("ts_event") < pa.scalar(self.start_ns, TS_TYPE))
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        ts = seq = -1
        batches = (
            (f.iid, b)
            for f in files
            for b in f.frag.to_batches(filter=expr, batch_size=self.batch_rows, **_SCAN)
        )
        for iid, batch in batches:
            rows = _rows(batch, iid)
            self.stats["rows_read"] += len(rows)
            cols = (rows[k].tolist() for k in ("kind", "side", "px", "qty", "ts_event", "seq"))
            for kind, side, px, qty, t, s in zip(*cols, strict=True):
                if kind != SNAPSHOT and kind != _DELTA:
                    continue  # trades and quotes before the start are not part of a book
                levels = bids if side == 1 else asks if side == -1 else None
                if levels is not None:
                    if qty:
                        levels[px] = qty
                    else:
                        levels.pop(px, None)
                ts = t
                if s:
                    seq = s
        if ts < 0:
            return None
        bp = sorted(bids, reverse=True)
        ap = sorted(asks)
        return BookSnapshot(
            files[0].iid, bp, [bids[p] for p in bp], ap, [asks[p] for p in ap], ts, ts, max(seq, 0)
        )

    # --- reading ------------------------------------------------------------------------------

    def _frag_rows(self, f: _Frag) -> Iterator[np.ndarray]:
        """One part file's rows in the window, a row group at a time."""
        flt = self._row_filter()
        groups = f.frag.split_by_row_group(filter=flt) if flt is not None else [f.frag]
        self.stats["files"] += 1
        for g in groups:
            self.stats["row_groups"] += g.num_row_groups if flt is None else 1
            for batch in g.to_batches(filter=flt, batch_size=self.batch_rows, **_SCAN):
                rows = _rows(batch, f.iid)
                self.stats["rows_read"] += len(rows)
                snap = rows["kind"] == SNAPSHOT
                if snap.any():
                    if f.snapshots == "deltas":  # the book enters: build it from nothing
                        rows["kind"][snap & (rows["side"] != 0)] = _DELTA
                        rows["seq"][snap] = 0
                        snap = rows["kind"] == SNAPSHOT
                    rows = pick_rows(rows, ~snap)
                if len(rows):
                    yield rows

    def _merge(self, frags: list[_Frag]) -> Iterator[np.ndarray]:
        """The rows of one day's files merged by time, stably in ``frags``' order."""
        streams = [self._frag_rows(f) for f in frags]
        bufs = [empty(0) for _ in frags]
        live = [True] * len(frags)

        def pull(i: int) -> None:
            nxt = next(streams[i], None)
            if nxt is None:
                live[i] = False
            else:
                bufs[i] = concat_rows([bufs[i], nxt]) if len(bufs[i]) else nxt

        while True:
            for i in range(len(frags)):
                if live[i] and not len(bufs[i]):
                    pull(i)
            open_ = [i for i in range(len(frags)) if live[i]]
            cut = min(int(bufs[i]["ts_event"][-1]) for i in open_) if open_ else None
            taken = []
            for i, b in enumerate(bufs):
                if not len(b):
                    continue
                k = len(b) if cut is None else int(np.searchsorted(b["ts_event"], cut, "left"))
                if k:
                    taken.append(b[:k])
                    bufs[i] = b[k:]
            if taken:
                if len(taken) == 1:
                    yield taken[0]  # one file's rows: already in order
                else:
                    rows = concat_rows(taken)
                    yield pick_rows(rows, np.argsort(rows["ts_event"], kind="stable"))
            elif not open_:
                return
            else:  # every open buffer starts at the cut: read on in the file(s) ending there
                for i in open_:
                    if int(bufs[i]["ts_event"][-1]) == cut:
                        pull(i)


def _ns(v: object) -> int:
    """A timestamp statistic as ns."""
    if isinstance(v, int):
        return v
    return int(pa.scalar(v, TS_TYPE).cast(pa.int64()).as_py())


def _has_snapshot(frag: ds.ParquetFileFragment) -> bool:
    """Whether a part file holds snapshot rows (its ``kind`` statistics say; no data read)."""
    md = frag.metadata
    col = md.schema.names.index("kind")
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(col).statistics
        if st is None or not st.has_min_max or st.max >= SNAPSHOT:
            return True
    return False


def _rows(batch: pa.RecordBatch, iid: int) -> np.ndarray:
    out = empty(batch.num_rows)
    for name in _NAMES:
        col = batch.column(name)
        if name == "ts_event":
            col = col.cast(pa.int64())
        out[name] = col.to_numpy(zero_copy_only=False)
    out["instrument_id"] = iid
    return out


def _split(rows: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for k in range(0, len(rows), n):
        yield rows[k : k + n]


def window_ns(value: str | int | None, *, end: bool = False) -> int | None:
    """``[market] catalog_start`` / ``catalog_end``: "" is unbounded, an int is ns since the
    epoch, an ISO date or time is UTC (a bare date as an end means the end of that day)."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.lstrip("-").isdigit():
        return int(s)
    if s[-1:] in "Zz" or "+" in s[10:] or "-" in s[10:]:  # an offset: exact to the microsecond
        d = datetime.fromisoformat(s) - _EPOCH
        ns = (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1000
    else:  # naive: UTC, to the nanosecond
        ns = int(np.datetime64(s, "ns").astype(np.int64))
    if end and len(s) == 10:  # a date: through its last nanosecond
        ns += DAY_NS
    return ns
