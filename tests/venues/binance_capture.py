"""The real Binance BTCUSDT websocket capture, as a local server replays it and as tests judge it.

Why: the Binance server in ``tests/venues/binance.py`` serves real wire data, not data we made
up, and the book Gekko builds from it must equal the book Binance's own documented procedure
builds. This module reads ``../shared/data/binance/btcusdt_20240808_ws.jsonl.gz`` (format:
``../shared/data/README.md``, ``<receive ns> <JSON>`` a line) into:

- ``snapshot_text``: the REST ``GET /api/v3/depth`` answer, byte for byte;
- ``frames``: every websocket frame (``engine.sources.binance_capture.Frame``, the format
  the catalog import reads too) in capture order, with its stream name and the raw bytes of
  its ``data`` object exactly as captured (a server subscribed per stream sends those) and the
  whole combined-stream line (a ``/stream`` server sends that);
- ``ReferenceBook``: the L2 book by Binance's documented snapshot + diff procedure (drop diffs
  with ``u <= lastUpdateId``; the first applied one has ``U <= lastUpdateId + 1 <= u``; each next
  ``U == previous u + 1``; quantity 0 removes the level), giving the book at every update id.

Where the capture is absent (a user's fresh clone) ``available()`` is False and the tests that
need it skip with ``SKIP_REASON``.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from engine.sources.binance_capture import Frame, parse_frame, split_line

__all__ = [
    "CAPTURE_PATH",
    "SKIP_REASON",
    "Capture",
    "Frame",
    "ReferenceBook",
    "SequenceBreak",
    "available",
    "load",
]

CAPTURE_PATH = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "binance"
    / "btcusdt_20240808_ws.jsonl.gz"
)
SKIP_REASON = f"the Binance capture ../shared/data/binance absent ({CAPTURE_PATH} not found)"

SYMBOL = "BTC/USDT"
VENUE_SYMBOL = "BTCUSDT"
DEPTH_STREAM = "btcusdt@depth@100ms"
TRADE_STREAM = "btcusdt@trade"
BOOK_TICKER_STREAM = "btcusdt@bookTicker"


def available(path: Path | None = None) -> bool:
    return (path or CAPTURE_PATH).is_file()


@dataclass(frozen=True)  # not slotted: ``snapshot`` is a cached_property
class Capture:
    snapshot_recv_ns: int
    snapshot_text: bytes
    frames: tuple[Frame, ...]
    #: index in ``frames`` before which the snapshot line was received
    snapshot_index: int

    @functools.cached_property
    def snapshot(self) -> dict:
        return json.loads(self.snapshot_text)

    @property
    def last_update_id(self) -> int:
        return int(self.snapshot["lastUpdateId"])

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.stream for f in self.frames))

    def by_stream(self, stream: str) -> list[Frame]:
        """The frames of one stream in capture order."""
        return [f for f in self.frames if f.stream == stream]

    def depth_diffs(self) -> list[dict]:
        """Every ``depthUpdate`` event, parsed, in capture order."""
        return [f.json() for f in self.frames if f.stream == DEPTH_STREAM]


@functools.lru_cache(maxsize=2)
def load(path: Path | None = None) -> Capture:
    """The capture, parsed once per process (``FileNotFoundError`` where absent)."""
    src = path or CAPTURE_PATH
    frames: list[Frame] = []
    snap: tuple[int, bytes, int] | None = None
    with gzip.open(src, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            ns, body = split_line(line)
            if body.startswith(b'{"lastUpdateId"'):
                snap = (ns, body, len(frames))
            else:
                frames.append(parse_frame(ns, body))
    if snap is None:
        raise ValueError(f"{src}: no REST depth snapshot line")
    return Capture(
        snapshot_recv_ns=snap[0],
        snapshot_text=snap[1],
        frames=tuple(frames),
        snapshot_index=snap[2],
    )


class SequenceBreak(ValueError):
    """A diff that Binance's procedure refuses: the book must be rebuilt from a new snapshot."""


class ReferenceBook:
    """Binance's documented local order book procedure, nothing more. Prices and quantities are
    ``Decimal`` (exact, as the wire's strings); ``update_id`` is the last applied ``u`` (the
    snapshot's ``lastUpdateId`` before any diff)."""

    def __init__(self, snapshot: dict) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        for side, levels in ((self.bids, snapshot["bids"]), (self.asks, snapshot["asks"])):
            for px, qty in levels:
                if Decimal(qty) != 0:
                    side[Decimal(px)] = Decimal(qty)
        self.update_id = int(snapshot["lastUpdateId"])
        self.started = False  # no diff applied yet: the first must bridge the snapshot

    def apply(self, diff: dict) -> bool:
        """Apply one ``depthUpdate``; False when it is older than the book (dropped);
        ``SequenceBreak`` when it does not continue the book."""
        first, last = int(diff["U"]), int(diff["u"])
        if last <= self.update_id:
            return False
        if not self.started:
            if not first <= self.update_id + 1 <= last:
                raise SequenceBreak(
                    f"first diff U={first} u={last} does not bridge {self.update_id}"
                )
        elif first != self.update_id + 1:
            raise SequenceBreak(f"diff U={first} after u={self.update_id}")
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for px, qty in levels:
                p, q = Decimal(px), Decimal(qty)
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.update_id = last
        self.started = True
        return True

    def levels(self, depth: int = 0) -> tuple[list[tuple[Decimal, Decimal]], ...]:
        """(bids, asks) best first, each at most ``depth`` levels (0: all)."""
        bids = sorted(self.bids.items(), key=lambda kv: -kv[0])
        asks = sorted(self.asks.items())
        if depth:
            bids, asks = bids[:depth], asks[:depth]
        return bids, asks

    def snapshot_text(self, limit: int = 1000) -> bytes:
        """This book as Binance's ``GET /api/v3/depth`` answers it (the best ``limit`` levels a
        side, ``lastUpdateId`` = the book's update id): what a server answers a client that
        resyncs in the middle of the replay. Numbers keep the capture's own spelling."""
        bids, asks = self.levels(limit)
        body = {
            "lastUpdateId": self.update_id,
            "bids": [[str(p), str(q)] for p, q in bids],
            "asks": [[str(p), str(q)] for p, q in asks],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def best(self) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        bid = max(self.bids.items(), default=None)
        ask = min(self.asks.items(), default=None)
        return bid, ask


def replay_books(capture: Capture) -> Iterator[ReferenceBook]:
    """The reference book after every applied diff of the capture (the same object, mutated:
    copy what you keep). Its ``update_id`` says which update id it is the book at."""
    book = ReferenceBook(capture.snapshot)
    for diff in capture.depth_diffs():
        if book.apply(diff):
            yield book
