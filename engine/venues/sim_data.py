"""The simulated venue's market-data client: the configured market source behind the interface.

The simulated exchange has no market of its own: it trades against whatever the run is
configured to replay or generate (``engine.sources``: the synthetic market, a replay, with the
exchange-status rules of ``[sim]`` applied). This client serves that stream through
``engine.venues.data.MarketDataClient``, so the feed reads a simulated venue exactly as it will
read a real one. The source is local and numbered by its producer, so it never gaps. Where
the venue lists perpetuals it publishes their mark too (``engine.venues.sim_marks``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from engine.enums import InstrumentKind
from engine.instruments import InstrumentTable
from engine.venues.data import InstrumentRules
from engine.venues.sim_marks import with_marks

__all__ = ["SimDataClient"]


class SimDataClient:
    """``source`` builds the market stream (called by ``connect``: a replay file that cannot be
    read raises ``ValueError`` there). Instruments have the default rules (one lot, no minimum
    notional): the simulated exchange checks only tick and lot."""

    def __init__(
        self,
        instruments: InstrumentTable,
        source: Callable[[], Iterator[object]],
        name: str = "sim",
    ) -> None:
        self.name = name
        self.gaps = 0
        self._table = instruments
        self._source = source
        self._stream: Iterator[object] | None = None
        self._subscribed: set[int] | None = None

    def connect(self) -> None:
        self._stream = self._source()

    def instruments(self) -> list[InstrumentRules]:
        return [InstrumentRules(instrument=i) for i in self._table]

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        self._subscribed = (self._subscribed or set()) | {int(i) for i in instrument_ids}

    def updates(self) -> Iterator[object]:
        """The source's messages for the subscribed instruments (venue-wide statuses always).
        Subscribed to every listed instrument, it is the source itself: no extra hop."""
        if self._stream is None:
            raise RuntimeError(f"market-data client {self.name!r}: updates() before connect()")
        want = self._subscribed or set()
        stream: Iterator[object] = self._stream
        if not want >= {i.instrument_id for i in self._table}:
            keep = want | {-1}  # -1: venue-wide (and messages of no instrument)
            stream = (m for m in stream if getattr(m, "instrument_id", -1) in keep)
        perps = [i for i in self._table if i.kind == InstrumentKind.PERPETUAL]
        return with_marks(stream, perps) if perps else stream  # the venue's marks (sim_marks)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()
        self._stream = None
