"""The simulated venue's mark price of its perpetuals, as market data (``MarkPrice``).

A real perpetual venue publishes its mark, index and funding rate (Binance: ``markPrice@1s``);
the simulated venue publishes its own so a backtest or paper run on it sees the same messages
as a live one. The simulator's mark is the one its accounts charge funding and margin at
(``SimAccounts.mark``): the book's mid rounded down, else the last trade. It has no index of its
own, so ``index_px`` is the mark. A ``MarkPrice`` follows the market-data message that moved the
mark (never one per tick when the mark stands still), with that message's times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from engine.accounts import next_funding_ns
from engine.book import L2Book
from engine.enums import InstrumentKind
from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, MarkPrice, Quote, Trade

__all__ = ["MarkTracker", "with_marks"]


class MarkTracker:
    """The mark of each perpetual of ``instruments``; ``on_market_data`` returns the
    ``MarkPrice`` a message caused (or None)."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._ins = {i.instrument_id: i for i in instruments if i.kind == InstrumentKind.PERPETUAL}
        self._books: dict[int, L2Book] = {}
        self._mid: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._sent: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self._ins)

    def on_market_data(self, msg: Any) -> MarkPrice | None:
        ins = self._ins.get(getattr(msg, "instrument_id", -1))
        if ins is None:
            return None
        iid, t = ins.instrument_id, type(msg)
        if t is Quote:
            both = msg.bid_qty > 0 and msg.ask_qty > 0 and msg.bid_px > 0 and msg.ask_px > 0
            self._mid[iid] = (msg.bid_px + msg.ask_px) // 2 if both else 0
        elif t is BookSnapshot or t is BookDelta:
            book = self._books.get(iid)
            if book is None:
                book = self._books[iid] = L2Book(iid)
            book.apply(msg)
            (bb, _), (ba, _) = book.best_bid(), book.best_ask()
            self._mid[iid] = (bb + ba) // 2 if bb > 0 and ba > 0 else 0
        elif t is Trade and msg.px > 0:
            self._last[iid] = msg.px
        else:
            return None
        mark = self._mid.get(iid) or self._last.get(iid, 0)
        if mark <= 0 or self._sent.get(iid) == mark:
            return None
        self._sent[iid] = mark
        due = next_funding_ns(ins, msg.ts_event) if ins.funding_interval_s > 0 else 0
        return MarkPrice(iid, mark, mark, ins.funding_rate, due, msg.ts_event, msg.ts_recv)


def with_marks(stream: Iterable[Any], instruments: Iterable[Instrument]) -> Iterator[Any]:
    """``stream`` with a ``MarkPrice`` after each message that moved a perpetual's mark."""
    marks = MarkTracker(instruments)
    if not marks:  # no perpetual: the stream itself
        yield from stream
        return
    for msg in stream:
        yield msg
        m = marks.on_market_data(msg)
        if m is not None:
            yield m
