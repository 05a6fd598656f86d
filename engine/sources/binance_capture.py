"""Binance combined-stream websocket captures: the file format, and the capture as messages.

A capture holds one message a line, ``<local receive time ns> <JSON>``: combined-stream frames
(``{"stream": "btcusdt@trade", "data": {...}}`` for ``@trade``, ``@bookTicker`` and
``@depth@100ms``) and the REST depth snapshot the recorder fetched (``{"lastUpdateId": ...}``).
``tests/venues/binance_capture.py`` serves the same file from a local Binance server and builds
the reference book from it with these frames.

:func:`capture_messages` turns a capture into engine messages the way the live feed would, by
Binance's documented local-book procedure: diffs are held until the snapshot, those it already
contains (``u <= lastUpdateId``) dropped, the first applied one must bridge it, each next one
continue the last (``U == u + 1``). A diff that does not is a ``bad_message`` and ends the book
(the capture has no second snapshot); it and every later diff are counted, never applied.
Times are the exchange's (the capture host's clock ran behind it): a trade at its trade time
``T``, a diff at its event time ``E``; a book ticker carries no time, so it gets the latest
exchange time seen before it, as the live feed stamps its books (``engine.venues.ccxt_book``).
Those times are not monotonic in capture order, so messages are re-ordered within a window of
``reorder_ns``; one later than that is ``out_of_order_time``.
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.instruments import Instrument
from engine.md_rejects import RejectCounter
from engine.messages import BookDelta, BookSnapshot, Quote, Trade

__all__ = ["Frame", "capture_messages", "parse_frame", "read_capture", "split_line"]

_STREAM_HEAD = b'{"stream":"'
_DATA_KEY = b'","data":'
_SNAPSHOT_HEAD = b'{"lastUpdateId"'


@dataclass(frozen=True, slots=True)
class Frame:
    """One websocket message of a capture. ``data`` is the ``data`` object's bytes as
    received; ``raw`` the whole combined-stream message; ``recv_ns`` the capturing host's clock
    (behind the exchange's: order by exchange times or ids, not by it)."""

    recv_ns: int
    stream: str
    data: bytes
    raw: bytes

    def json(self) -> dict:
        return json.loads(self.data)


def split_line(line: bytes) -> tuple[int, bytes]:
    """``(receive ns, message bytes)`` of one capture line (ValueError: not such a line)."""
    ns, _, body = line.rstrip(b"\r\n").partition(b" ")
    return int(ns), body


def parse_frame(recv_ns: int, body: bytes) -> Frame:
    """The stream name and the raw ``data`` bytes of a combined-stream message, cut out of the
    captured bytes (not re-serialised)."""
    if not body.startswith(_STREAM_HEAD) or not body.endswith(b"}"):
        raise ValueError(f"not a combined-stream message: {body[:60]!r}")
    end = body.index(_DATA_KEY, len(_STREAM_HEAD))
    stream = body[len(_STREAM_HEAD) : end].decode()
    return Frame(recv_ns, stream, body[end + len(_DATA_KEY) : -1], body)


def read_capture(path: str | os.PathLike[str]) -> Iterator[tuple[int, int, bytes]]:
    """``(line number, receive ns, message bytes)`` of every non-empty line (gzip or plain);
    a line with no leading receive time has ns -1."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        for k, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ns, body = split_line(line)
            except ValueError:
                ns, body = -1, line
            yield k, ns, body


_INT64 = 1 << 63
_MAX_HELD = 100_000  # depth diffs kept while waiting for the snapshot (Binance: a few seconds)
_MAX_DIGITS = 40  # a price or size string longer than this is no price (Decimal would grind)


class _Units:
    """Decimal strings to ticks / lots, memoised (a capture repeats its prices endlessly)."""

    def __init__(self, ins: Instrument) -> None:
        self.ins = ins
        self._px: dict[str, int] = {}
        self._qty: dict[str, int] = {}

    def px(self, s: Any) -> int:
        v = self._px.get(s) if isinstance(s, str) else None
        if v is None:
            v = self._px[s] = _int64(self.ins.px_to_ticks(_decimal(s)))
        return v

    def qty(self, s: Any) -> int:
        v = self._qty.get(s) if isinstance(s, str) else None
        if v is None:
            v = self._qty[s] = _int64(self.ins.qty_to_lots(_decimal(s)))
        return v


def _decimal(s: Any) -> Decimal:
    if not isinstance(s, str) or len(s) > _MAX_DIGITS:
        raise ValueError(f"not a decimal string: {str(s)[:40]!r}")
    d = Decimal(s)
    if not d.is_finite() or d < 0 or abs(d.adjusted()) > _MAX_DIGITS:
        raise ValueError(f"not a finite decimal >= 0: {s!r}")
    return d


def _int64(v: Any) -> int:
    """An id, sequence, tick or lot count as the wire's int64 (ValueError beyond it)."""
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"not an integer: {str(v)[:40]!r}")
    n = int(v)
    if not -_INT64 <= n < _INT64:
        raise ValueError(f"{n} is beyond int64")
    return n


class _Converter:
    """A capture's lines as (ts, order, message), Binance's procedure applied to the book."""

    def __init__(self, ins: Instrument, rejects: RejectCounter, where: str) -> None:
        self.iid = ins.instrument_id
        self.u = _Units(ins)
        self.rejects = rejects
        self.where = where
        self.venue_ns = 0  # the latest exchange time seen
        self.update_id = -1  # the book's last applied update id (-1: no snapshot yet)
        self.started = False
        self.broken = False
        self.held: list[tuple[int, dict]] = []  # (line, diff) received before the snapshot
        self.book: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.seq = 0

    def line(self, k: int, ns: int, body: bytes) -> list[tuple[int, Any]]:
        """The messages of one capture line (ts, message); bad lines counted."""
        try:
            if ns < 0:
                raise ValueError("no receive time")
            if body.startswith(_SNAPSHOT_HEAD):
                return self._snapshot(k, json.loads(body))
            frame = parse_frame(ns, body)
            data = frame.json()
            if frame.stream.endswith("@trade"):
                return self._trade(data)
            if frame.stream.endswith("@bookTicker"):
                return self._ticker(k, data)
            if "@depth" in frame.stream:
                if self.update_id < 0:
                    self._time(data["E"])  # known although the diff waits for the snapshot
                    if len(self.held) >= _MAX_HELD:
                        why = f"more than {_MAX_HELD} depth diffs before the snapshot"
                        self.rejects.reject("bad_message", self.where, k, why)
                        return []
                    self.held.append((k, data))
                    return []
                return self._diff(k, data)
        except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError) as e:
            self.rejects.reject("unparsable", self.where, k, str(e)[:80])
            return []
        self.rejects.reject("bad_message", self.where, k, f"unknown stream {frame.stream!r}")
        return []

    def _time(self, ms: Any) -> int:
        ns = _int64(ms) * 1_000_000
        if not 0 <= ns < 1 << 63:
            raise ValueError(f"time {ms!r} ms is not an int64 of ns")
        self.venue_ns = max(self.venue_ns, ns)
        return ns

    def _trade(self, d: dict) -> list[tuple[int, Any]]:
        ts = self._time(d["T"])
        px, qty = self.u.px(d["p"]), self.u.qty(d["q"])
        if px <= 0 or qty <= 0:
            raise ValueError("trade price or size not > 0")
        side = -1 if d["m"] else 1  # the buyer was the maker: a seller took
        return [(ts, Trade(self.iid, px, qty, side, ts, ts, _int64(d["t"])))]

    def _ticker(self, k: int, d: dict) -> list[tuple[int, Any]]:
        if not self.venue_ns:
            self.rejects.reject("bad_time", self.where, k, "book ticker before any exchange time")
            return []
        bp, bq, ap, aq = (
            self.u.px(d["b"]),
            self.u.qty(d["B"]),
            self.u.px(d["a"]),
            self.u.qty(d["A"]),
        )
        if bp > 0 and ap > 0 and bp >= ap:
            self.rejects.reject("crossed", self.where, k)
            return []
        ts = self.venue_ns
        return [(ts, Quote(self.iid, bp, bq, ap, aq, ts, ts, _int64(d["u"])))]

    def _snapshot(self, k: int, d: dict) -> list[tuple[int, Any]]:
        if self.update_id >= 0:
            self.rejects.reject("bad_message", self.where, k, "a second depth snapshot")
            return []
        bids = {self.u.px(p): self.u.qty(q) for p, q in d["bids"]}
        asks = {self.u.px(p): self.u.qty(q) for p, q in d["asks"]}
        self.book = (
            {p: q for p, q in bids.items() if q > 0},
            {p: q for p, q in asks.items() if q > 0},
        )
        self.update_id = _int64(d["lastUpdateId"])
        out: list[tuple[int, Any]] = []
        held, self.held = self.held, []
        for hk, diff in held:
            out += self._diff(hk, diff)
        return out

    def _diff(self, k: int, d: dict) -> list[tuple[int, Any]]:
        first, last = _int64(d["U"]), _int64(d["u"])
        if self.broken:
            self.rejects.reject("bad_message", self.where, k, "depth diff after a sequence break")
            return []
        if last <= self.update_id:
            return []  # already in the snapshot: Binance's procedure drops it
        bridge = first <= self.update_id + 1 <= last
        if (not self.started and not bridge) or (self.started and first != self.update_id + 1):
            self.broken = True
            why = f"depth diff U={first} after u={self.update_id}: the book needs a new snapshot"
            self.rejects.reject("bad_message", self.where, k, why)
            return []
        ts = self._time(d["E"])
        out: list[tuple[int, Any]] = []
        if not self.started:
            self.started = True
            bids, asks = self.book
            bp, ap = sorted(bids, reverse=True), sorted(asks)
            snap = BookSnapshot(
                self.iid, bp, [bids[p] for p in bp], ap, [asks[p] for p in ap], ts, ts, 0
            )
            out.append((ts, snap))
        for side, key in ((1, "b"), (-1, "a")):
            levels = self.book[0 if side == 1 else 1]
            for p, q in d[key]:
                px, qty = self.u.px(p), self.u.qty(q)
                if px <= 0:
                    raise ValueError(f"depth price {p!r} not > 0")
                if qty == 0 and px not in levels:
                    continue  # removing a level the book never held (deeper than the snapshot)
                if qty:
                    levels[px] = qty
                else:
                    del levels[px]
                self.seq += 1
                out.append((ts, BookDelta(self.iid, side, px, qty, ts, ts, self.seq)))
        self.update_id = last
        return out


def capture_messages(
    path: str | os.PathLike[str],
    instrument: Instrument,
    *,
    rejects: RejectCounter | None = None,
    reorder_ns: int = 10 * 10**9,
) -> Iterator[Quote | Trade | BookDelta | BookSnapshot]:
    """The capture's quotes, trades and book (snapshot, then deltas) of ``instrument``, in
    exchange-time order (ties: capture order). See the module docstring for the rules."""
    rejects = rejects if rejects is not None else RejectCounter()
    where = f"binance capture {Path(path)}"
    conv = _Converter(instrument, rejects, where)
    heap: list[tuple[int, int, Any]] = []
    order = 0
    emitted = -1
    for k, ns, body in read_capture(path):
        for ts, msg in conv.line(k, ns, body):
            if ts < emitted:
                rejects.reject("out_of_order_time", where, k)
                continue
            heapq.heappush(heap, (ts, order, msg))
            order += 1
        while heap and heap[0][0] < conv.venue_ns - reorder_ns:
            ts, _, msg = heapq.heappop(heap)
            emitted = ts
            yield msg
    if conv.held:
        for hk, _ in conv.held:
            rejects.reject("bad_message", where, hk, "depth diff with no snapshot in the capture")
    while heap:
        yield heapq.heappop(heap)[2]
