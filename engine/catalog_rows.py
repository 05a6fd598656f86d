"""Market-data streams as catalog rows: messages and row batches in, ``MD_DTYPE`` batches out,
with each book instrument's day opened by a snapshot.

Why a module of its own: every import (files, LOBSTER, Binance captures, recorded runs) ends in
the same rows, and a book stream needs care the others do not. A reader of one day must find
that day's book without the days before, so the first book row of an instrument on a new UTC
date is preceded by snapshot rows of the book as it stood (``engine.catalog.SNAPSHOT``). A
snapshot in the middle of a day (a LOBSTER resync after a bad line) becomes the deltas that take
the book there, so a day's file holds one snapshot, at its start, and deltas after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from engine.catalog import DAY_NS, SNAPSHOT, concat_rows
from engine.md_columns import BATCH_ROWS, MdKind, empty, from_messages
from engine.messages import BookDelta, BookSnapshot, Quote, Trade

__all__ = ["BookRows", "message_batches", "snapshot_rows"]

_DELTA = int(MdKind.DELTA)
_ROW_TYPES = (Quote, Trade, BookDelta)


def snapshot_rows(
    iid: int, ts: int, seq: int, bids: dict[int, int], asks: dict[int, int]
) -> np.ndarray:
    """A book as ``SNAPSHOT`` rows, bids best first then asks best first (one side-0 row for
    an empty book)."""
    levels = [(1, p, bids[p]) for p in sorted(bids, reverse=True)]
    levels += [(-1, p, asks[p]) for p in sorted(asks)]
    if not levels:
        levels = [(0, 0, 0)]
    out = empty(len(levels))
    out["ts_event"] = ts
    out["instrument_id"] = iid
    out["kind"] = SNAPSHOT
    out["seq"] = seq
    lv = np.array(levels, dtype=np.int64)
    out["side"], out["px"], out["qty"] = lv[:, 0], lv[:, 1], lv[:, 2]
    return out


def message_batches(
    msgs: Iterable[object], batch_rows: int = BATCH_ROWS
) -> Iterator[np.ndarray | BookSnapshot]:
    """Quotes, trades and deltas gathered into row batches; a BookSnapshot passes between them
    in its place; other messages (bars, statuses) have no row form and are left out."""
    pending: list[object] = []
    for m in msgs:
        t = type(m)
        if t in _ROW_TYPES:
            pending.append(m)
            if len(pending) >= batch_rows:
                yield from_messages(pending)
                pending = []
        elif t is BookSnapshot:
            if pending:
                yield from_messages(pending)
                pending = []
            yield m
    if pending:
        yield from_messages(pending)


class _Book:
    __slots__ = ("asks", "bids", "day", "seq")

    def __init__(self, day: int) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.day = day
        self.seq = 0


class BookRows:
    """Turns batches and snapshots (in time order) into catalog rows, tracking every book.

    ``feed`` takes what :func:`message_batches` yields, or row batches of a columnar source.
    """

    def __init__(self) -> None:
        self._books: dict[int, _Book] = {}

    def feed(self, items: Iterable[np.ndarray | BookSnapshot]) -> Iterator[np.ndarray]:
        for item in items:
            if isinstance(item, BookSnapshot):
                yield self._snapshot(item)
            elif len(item):
                yield self._rows(item)

    def _snapshot(self, s: BookSnapshot) -> np.ndarray:
        bids = {int(p): int(q) for p, q in zip(s.bid_px, s.bid_qty, strict=True) if q > 0}
        asks = {int(p): int(q) for p, q in zip(s.ask_px, s.ask_qty, strict=True) if q > 0}
        day = s.ts_event // DAY_NS
        book = self._books.get(s.instrument_id)
        if book is None or book.day != day:  # the day's opening snapshot
            book = self._books[s.instrument_id] = _Book(day)
            book.bids, book.asks, book.seq = bids, asks, s.seq
            return snapshot_rows(s.instrument_id, s.ts_event, s.seq, bids, asks)
        out: list[tuple[int, int, int]] = []  # a resync: the deltas that reach the snapshot
        for side, have, want in ((1, book.bids, bids), (-1, book.asks, asks)):
            out += [(side, p, 0) for p in have if p not in want]
            out += [(side, p, q) for p, q in want.items() if have.get(p) != q]
        book.bids, book.asks, book.seq = bids, asks, s.seq
        rows = empty(len(out))
        rows["ts_event"] = s.ts_event
        rows["instrument_id"] = s.instrument_id
        rows["kind"] = _DELTA
        if out:
            lv = np.array(out, dtype=np.int64)
            rows["side"], rows["px"], rows["qty"] = lv[:, 0], lv[:, 1], lv[:, 2]
        return rows

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """The batch with opening snapshots inserted where a book's new day begins."""
        deltas = np.flatnonzero(rows["kind"] == _DELTA)
        if len(deltas) == 0:
            return rows
        inserts: list[tuple[int, np.ndarray]] = []
        cols = (rows[k][deltas].tolist() for k in ("instrument_id", "ts_event", "side", "px"))
        qtys = rows["qty"][deltas].tolist()
        seqs = rows["seq"][deltas].tolist()
        for k, iid, ts, side, px, qty, seq in zip(deltas.tolist(), *cols, qtys, seqs, strict=True):
            day = ts // DAY_NS
            book = self._books.get(iid)
            if book is None or book.day != day:
                if book is None:
                    book = self._books[iid] = _Book(day)
                book.day = day
                snap = snapshot_rows(iid, ts, book.seq, book.bids, book.asks)
                inserts.append((k, snap))
            levels = book.bids if side == 1 else book.asks
            if qty:
                levels[px] = qty
            else:
                levels.pop(px, None)
            if seq:
                book.seq = seq
        if not inserts:
            return rows
        parts: list[np.ndarray] = []
        start = 0
        for k, snap in inserts:
            parts += [rows[start:k], snap]
            start = k
        parts.append(rows[start:])
        return concat_rows(parts)
