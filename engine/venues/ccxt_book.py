"""A ccxt order book (and its trades) turned into the engine's market-data messages.

Why diff books instead of forwarding the venue's deltas: ccxt.pro already applies each venue's
own snapshot + delta procedure (Binance's U/u bridging, Kraken's checksums, Coinbase's
sequence numbers) and hands back the whole book; when we fall behind it coalesces updates into
the latest book. Comparing the best ``depth`` levels with what we last published gives, for
every venue alike, the level changes that take our book to the venue's — correct even when
updates were coalesced, and bounded by ``depth`` (the feed's book holds a few hundred levels).

Sequence numbers (``seq``): per instrument, contiguous from 1 and never reset while the client
lives — the snapshot takes one number, each delta the next — so ``engine.book.L2Book`` and
``SequenceGuard`` see a gap only where one happened. A venue's own update ids are not
contiguous per level (one Binance diff ``U..u`` changes several levels or none), so they are
kept beside ours: ``BookTracker.marks`` pairs the last seq of each venue update with the
venue's update id (``nonce``), which is how tests compare our book with the venue's at every
update id.

Deltas are ordered removals first, then changes and additions: every intermediate book is a
subset of the final one, so the feed never sees a crossed book the venue never had.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade

__all__ = ["BookTracker", "TradeTracker"]

_PX_CACHE_MAX = 200_000
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


class _Units:
    """Decimal ↔ ticks/lots for one instrument, prices cached (a book revisits its prices).
    A size that is a whole number of lots (what a venue's book holds) is divided in floats;
    anything else goes through ``Instrument.qty_to_lots``, the one rounding rule."""

    __slots__ = ("ins", "_px", "_lot")

    def __init__(self, ins: Instrument) -> None:
        self.ins = ins
        self._px: dict[float, int] = {}
        self._lot = float(ins.lot_size)

    def ticks(self, px: Any) -> int:
        t = self._px.get(px)
        if t is None:
            if len(self._px) > _PX_CACHE_MAX:
                self._px.clear()
            t = self._px[px] = self.ins.px_to_ticks(px)
        return t

    def lots(self, qty: Any) -> int:
        if type(qty) is float:
            q = qty / self._lot
            n = round(q)
            if abs(q - n) <= 1e-9 * (abs(n) + 1) and abs(n) < 1 << 53:  # exact in a float
                return n
        return self.ins.qty_to_lots(qty)


def _view(side: Sequence[Sequence[Any]], depth: int) -> dict[Any, Any]:
    """The best ``depth`` levels (0: all) of a ccxt book side as {price: size}."""
    levels = side[:depth] if depth else side
    return {lv[0]: lv[1] for lv in levels}


class BookTracker:
    """One instrument's published book: what we last sent, per side, in ticks → lots."""

    def __init__(self, ins: Instrument, depth: int = 0, marks: int = 0) -> None:
        self.ins = ins
        self.iid = ins.instrument_id
        self.depth = depth
        self.units = _Units(ins)
        self.seq = 0
        self.synced = False
        self.last_ts = 0
        self.held = False  # a book waits for a venue time (see on_book)
        self.venue_nonce: int | None = None
        #: (our last seq, the venue's update id) after each venue update (``marks`` kept; 0: none)
        self.marks: deque[tuple[int, int]] = deque(maxlen=marks or 1)
        self._keep_marks = marks > 0
        self._raw: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
        self._lots: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._top = (0, 0, 0, 0)

    def drop(self) -> None:
        """The venue's book is gone (a gap, a reconnect): the next book is published whole."""
        self.synced = False

    def on_book(self, book: Any, recv_ns: int = 0, venue_ns: int = 0) -> list[Any]:
        """Messages that take the published book to ``book`` (a ccxt order book: ``bids``,
        ``asks`` best first, ``timestamp`` ms, ``nonce``). A snapshot after ``drop``.

        ``ts_event`` is the venue's time, never going back: the book's own ``timestamp``, else
        ``venue_ns`` (the latest venue time the caller saw elsewhere, e.g. on trades). A book
        with neither (a REST snapshot before any update) is held — nothing is published, ``held``
        is True — until one is known: a time of 0 would open the infer's bars at 1970."""
        ts = book.get("timestamp")
        ts_ns = _ms_to_ns(ts) if ts else venue_ns
        if ts_ns > self.last_ts:
            self.last_ts = ts_ns
        if not self.last_ts:
            self.held = True
            return []
        self.held = False
        recv = recv_ns or time.monotonic_ns()
        raw = (_view(book["bids"], self.depth), _view(book["asks"], self.depth))
        if not self.synced:
            out: list[Any] = [self._snapshot(raw, recv)]
        else:
            out = self._deltas(raw, recv)
        nonce = book.get("nonce")
        self.venue_nonce = nonce if nonce is None else int(nonce)
        if self._keep_marks and self.venue_nonce is not None:
            self.marks.append((self.seq, self.venue_nonce))
        q = self._quote(recv)
        if q is not None:
            out.append(q)
        return out

    def _snapshot(self, raw: tuple[dict, dict], recv: int) -> BookSnapshot:
        self._raw = raw
        u = self.units
        sides: list[dict[int, int]] = []
        for levels in raw:
            conv = {u.ticks(px): u.lots(sz) for px, sz in levels.items()}
            sides.append({t: n for t, n in conv.items() if n > 0})
        bids, asks = sides
        self._lots = (bids, asks)
        self.seq += 1
        self.synced = True
        bp = sorted(bids, reverse=True)
        ap = sorted(asks)
        return BookSnapshot(
            self.iid,
            bp,
            [bids[p] for p in bp],
            ap,
            [asks[p] for p in ap],
            self.last_ts,
            recv,
            self.seq,
        )

    def _deltas(self, raw: tuple[dict, dict], recv: int) -> list[Any]:
        removals: list[tuple[int, int]] = []
        changes: list[tuple[int, int, int]] = []
        u = self.units
        for k, side in ((0, Side.BUY), (1, Side.SELL)):
            old_raw, new_raw, lots = self._raw[k], raw[k], self._lots[k]
            for px in old_raw:
                if px in new_raw:
                    continue
                t = u.ticks(px)
                if lots.pop(t, 0):
                    removals.append((side, t))
            get = old_raw.get
            for px, sz in new_raw.items():
                if get(px) == sz:
                    continue
                t, n = u.ticks(px), u.lots(sz)
                if n <= 0:
                    if lots.pop(t, 0):
                        removals.append((side, t))
                elif lots.get(t) != n:
                    lots[t] = n
                    changes.append((side, t, n))
        self._raw = raw
        out: list[Any] = []
        ts = self.last_ts
        for side, t in removals:
            self.seq += 1
            out.append(BookDelta(self.iid, side, t, 0, ts, recv, self.seq))
        for side, t, n in changes:
            self.seq += 1
            out.append(BookDelta(self.iid, side, t, n, ts, recv, self.seq))
        return out

    def _quote(self, recv: int) -> Quote | None:
        """The top of the published book when it changed."""
        bids, asks = self._lots
        bp = max(bids) if bids else 0
        ap = min(asks) if asks else 0
        top = (bp, bids.get(bp, 0), ap, asks.get(ap, 0))
        if top == self._top or not (bp or ap):
            return None
        self._top = top
        return Quote(self.iid, top[0], top[1], top[2], top[3], self.last_ts, recv, self.seq)

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The published book, (bids, asks) best first as (ticks, lots)."""
        bids, asks = self._lots
        return sorted(bids.items(), reverse=True), sorted(asks.items())


class TradeTracker:
    """One instrument's trades: each ccxt trade once (ccxt hands back a rolling cache), in
    order, as ``Trade`` with the aggressor's side."""

    def __init__(self, ins: Instrument) -> None:
        self.ins = ins
        self.iid = ins.instrument_id
        self.units = _Units(ins)
        self._seen: deque[str] = deque(maxlen=4096)
        self._seen_set: set[str] = set()
        self.malformed = 0  # trades skipped: a price, size or time that is no number

    def on_trades(self, trades: Iterable[dict[str, Any]], recv_ns: int = 0) -> list[Trade]:
        recv = recv_ns or time.monotonic_ns()
        out: list[Trade] = []
        for t in trades:
            tid = str(t.get("id") or "")
            if tid in self._seen_set:
                continue
            try:  # a trade with no usable number is skipped, the rest of the batch is not
                qty = self.units.lots(t["amount"])
                px = self.units.ticks(t["price"])
                ts = _ms_to_ns(t.get("timestamp") or 0)
            except (KeyError, TypeError, ValueError, ArithmeticError):
                self.malformed += 1
                continue
            if tid:
                if len(self._seen) == self._seen.maxlen:
                    self._seen_set.discard(self._seen[0])
                self._seen.append(tid)
                self._seen_set.add(tid)
            if qty <= 0:
                continue  # below one lot: nothing the engine can count
            side = _SIDES.get(str(t.get("side") or ""), Side.NONE)
            out.append(Trade(self.iid, px, qty, int(side), ts, recv, _trade_id(tid)))
        return out


def _ms_to_ns(ms: Any) -> int:
    """A venue's millisecond time as int64 nanoseconds; ValueError where it is none (the data
    session then reconnects: ``engine.venues.ccxt_data``)."""
    ns = int(ms) * 1_000_000
    if not 0 <= ns < 1 << 63:
        raise ValueError(f"venue time {ms!r} ms is not an int64 of nanoseconds")
    return ns


def _trade_id(tid: str) -> int:
    """The venue's trade id as an int (a numeric id as is; others hashed into 63 bits)."""
    if tid.isdigit() and len(tid) < 19:
        return int(tid)
    if not tid:
        return 0
    return int.from_bytes(hashlib.blake2b(tid.encode(), digest_size=8).digest()) >> 1
