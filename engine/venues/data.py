"""The market-data side of a venue: instruments with their rules, subscriptions, book updates.

Shaped after NautilusTrader's ``InstrumentProvider`` + ``DataClient`` and Hummingbot's order-book
tracker: a client connects, says which instruments it trades and under which rules (tick, lot,
minimum size and notional), is told what to subscribe to, and yields ``engine.messages``
market-data structs (BookSnapshot, BookDelta, Quote, Trade, Bar, ExchangeStatus). The feed
(``procs.feed``) reads only this interface; the simulated venue's client serves the configured
market source (``engine.venues.sim_data``).

Sequence numbers: book messages carry the venue's per-instrument ``seq`` (0 = the venue has
none). A client keeps its books consistent with ``SequenceGuard``: per instrument, a snapshot
first, then deltas in order; on a gap it drops that instrument's deltas, counts the gap and
re-requests a snapshot, and the next snapshot starts the instrument again (the feed's book
never applies a delta on top of a missed one).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import msgspec

from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot

__all__ = [
    "InstrumentRules",
    "LiveMarketDataClient",
    "MarketDataClient",
    "QueuedUpdates",
    "SequenceGuard",
    "is_live",
]


class InstrumentRules(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument and the venue's order rules for it. ``instrument`` carries tick and lot
    sizes (``engine.instruments``); the rest is per venue: the smallest and largest order in
    lots (``max_qty_lots`` 0 = no limit) and the smallest notional in quote currency."""

    instrument: Instrument
    min_qty_lots: int = 1
    max_qty_lots: int = 0
    min_notional: float = 0.0

    def check(self, qty_lots: int, px_ticks: int) -> str:
        """Why the venue would refuse an order of ``qty_lots`` at ``px_ticks`` ("" if not;
        ``px_ticks`` 0, a market order, skips the notional check)."""
        if qty_lots < self.min_qty_lots:
            return f"qty {qty_lots} lots is below the venue minimum {self.min_qty_lots}"
        if self.max_qty_lots and qty_lots > self.max_qty_lots:
            return f"qty {qty_lots} lots is above the venue maximum {self.max_qty_lots}"
        if px_ticks and self.min_notional > 0:
            ins = self.instrument
            notional = px_ticks * ins.tick_size * qty_lots * ins.lot_size
            if notional < self.min_notional:
                return f"notional {notional:g} is below the venue minimum {self.min_notional:g}"
        return ""


@runtime_checkable
class MarketDataClient(Protocol):
    """One venue's market data. Life cycle: ``connect``, ``instruments``, ``subscribe``, then
    iterate ``updates()`` until it ends (a finite source) or ``close``."""

    name: str
    #: sequence gaps seen so far (each one cost a re-snapshot)
    gaps: int

    def connect(self) -> None:
        """Open the connection (a local source: build it); raises ``ValueError`` when the
        configured source cannot be read, which retrying will not fix."""
        ...

    def instruments(self) -> list[InstrumentRules]:
        """The instruments this venue lists for us, with its rules."""
        ...

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        """Ask for these instruments' books and trades (before ``updates``)."""
        ...

    def updates(self) -> Iterator[object]:
        """Market-data structs in venue order: per instrument a snapshot where the venue has
        one, then incremental updates; ``ExchangeStatus`` where trading status changes."""
        ...

    def close(self) -> None:
        """Close the connection; ``updates`` ends."""
        ...


@runtime_checkable
class LiveMarketDataClient(MarketDataClient, Protocol):
    """A venue whose data arrives on its own time (a real exchange): after ``subscribe`` the
    feed drains ``poll_updates`` instead of iterating ``updates()``. Nothing is paced and
    nothing is skipped on a restart: a restarted client starts from a fresh snapshot.
    ``state()`` is "connected", "resyncing" or "down"; ``counters()`` holds ``gaps``,
    ``resyncs`` and ``reconnects`` since the client started."""

    live: bool

    def poll_updates(self, max_n: int = 512) -> list[object]:
        """What arrived since the last call (at most ``max_n``), in order; never waits."""
        ...

    def state(self) -> str: ...

    def counters(self) -> dict[str, int]: ...


def is_live(client: object) -> bool:
    """Whether the feed drains ``client`` (a live venue) rather than iterating it."""
    return bool(getattr(client, "live", False)) and callable(getattr(client, "poll_updates", None))


class SequenceGuard:
    """Per-instrument sequence checking for a client's book stream (see the module docstring).

    ``accept(msg)`` says whether to pass ``msg`` on. A snapshot (re)starts its instrument; a
    delta must carry the next ``seq`` after the last one passed (an older one is a duplicate,
    dropped). Deltas with ``seq`` 0 (the venue numbers nothing) and other types always pass. After a gap,
    ``needs_snapshot`` holds the instrument until a snapshot for it arrives."""

    __slots__ = ("_last", "gaps", "needs_snapshot")

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self.gaps = 0
        self.needs_snapshot: set[int] = set()

    def accept(self, msg: object) -> bool:
        t = type(msg)
        if t is BookSnapshot:
            iid = msg.instrument_id  # type: ignore[attr-defined]
            self.needs_snapshot.discard(iid)
            if msg.seq:  # type: ignore[attr-defined]
                self._last[iid] = msg.seq  # type: ignore[attr-defined]
            else:  # an unnumbered snapshot: the next delta starts the count again
                self._last.pop(iid, None)
            return True
        if t is not BookDelta:
            return True  # a Quote's seq names the delta it summarises; it never gaps
        seq = msg.seq  # type: ignore[attr-defined]
        if not seq:
            return True
        iid = msg.instrument_id  # type: ignore[attr-defined]
        if iid in self.needs_snapshot:
            return False
        last = self._last.get(iid)
        if last is not None and seq <= last:
            return False  # a duplicate or a late message: already applied
        if last is not None and seq != last + 1:
            self.gaps += 1
            self.needs_snapshot.add(iid)
            return False
        self._last[iid] = seq
        return True


class QueuedUpdates:
    """``poll_updates`` / ``updates`` of a live client whose connection loop (another thread)
    appends its messages to ``self._out`` until ``self._closing``: the feed drains the deque
    without blocking; tests and tools read it as a blocking iterator."""

    _out: deque[Any]
    _closing: bool

    def poll_updates(self, max_n: int = 512) -> list[Any]:
        out: list[Any] = []
        pop = self._out.popleft
        with contextlib.suppress(IndexError):
            for _ in range(max_n):
                out.append(pop())
        return out

    def updates(self) -> Iterator[object]:
        """The same messages as a blocking iterator: ends at ``close``."""
        while not self._closing:
            batch = self.poll_updates()
            if batch:
                yield from batch
            else:
                time.sleep(0.002)
