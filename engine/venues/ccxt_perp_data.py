"""A perpetual venue's market data: the contract's book and trades (``CcxtDataClient``) plus
its mark price and funding rate.

The venue's mark-price stream (ccxt ``watch_mark_price``: Binance's ``<symbol>@markPrice@1s``,
which carries the mark ``p``, the index ``i``, the current funding rate ``r`` and the next
funding time ``T``) becomes a ``MarkPrice`` message on the market-data ring, so the portfolio and
risk value the contract at the venue's mark (what its margin and funding use), and strategies
subscribed to "mark" hear it. The client also keeps the last of each per instrument
(``marks()``) for the operator and tests; a stream that fails ends the session like the book's
(reconnect, resync).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.instruments import Instrument
from engine.messages import MarkPrice
from engine.venues.ccxt_data import CcxtDataClient

__all__ = ["Mark", "PerpDataClient"]


class Mark(msgspec.Struct, frozen=True):
    """The venue's mark of one contract: ``px`` in ticks, the funding ``rate`` of the current
    interval, the next funding time (ns since the epoch; 0 unknown), when it came (ns)."""

    px: int
    rate: float
    next_funding_ns: int
    ts_event: int
    index_px: int = 0  # ticks; 0 unknown

    def message(self, instrument_id: int) -> MarkPrice:
        """This mark as the ring's ``MarkPrice`` (``ts_recv`` stamped now; the feed restamps)."""
        return MarkPrice(
            instrument_id,
            self.px,
            self.index_px,
            self.rate,
            self.next_funding_ns,
            self.ts_event,
            time.monotonic_ns(),
        )


class PerpDataClient(CcxtDataClient):
    """``CcxtDataClient`` that also watches each contract's mark price (module docstring)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._marks: dict[int, Mark] = {}
        self.want_marks = bool(self.settings.get("marks_stream", True))

    def marks(self) -> dict[int, Mark]:
        """The last mark of each instrument that has one."""
        return dict(self._marks)

    def _more_streams(self, ex: Any) -> list[tuple[str, Any]]:
        if not self.want_marks or not ex.has.get("watchMarkPrice"):
            return []
        return [(f"mark {i.symbol}", self._mark_loop(ex, i)) for i in self._subscribed]

    async def _mark_loop(self, ex: Any, ins: Instrument) -> None:
        while True:
            ticker = await ex.watch_mark_price(ins.symbol)
            mark = _mark_of(ins, ticker)
            if mark is not None:
                self._marks[ins.instrument_id] = mark
                self._out.append(mark.message(ins.instrument_id))


def _mark_of(ins: Instrument, ticker: Mapping[str, Any]) -> Mark | None:
    info = ticker.get("info") if isinstance(ticker.get("info"), Mapping) else {}
    px = ticker.get("markPrice") or info.get("p")
    if px in (None, ""):
        return None
    ts = int(info.get("E") or ticker.get("timestamp") or 0) * 1_000_000 or time.time_ns()
    index = ticker.get("indexPrice") or info.get("i")
    return Mark(
        px=ins.px_to_ticks(str(px)),
        rate=float(info.get("r") or 0.0),
        next_funding_ns=int(info.get("T") or 0) * 1_000_000,
        ts_event=ts,
        index_px=ins.px_to_ticks(str(index)) if index not in (None, "") else 0,
    )
