"""Betfair market data: the Exchange Stream API's market subscription as engine messages.

A ``LiveMarketDataClient`` (engine/venues/data.py): ``connect`` logs in (``BetfairApi``),
``subscribe`` opens one market subscription over the markets of the chosen selections on a
``StreamWorker`` thread (all offers, traded volume, market definition; heartbeats at
``heartbeat_ms``), and every ``mcm`` goes through ``MarketStream`` (``betfair_wire``) into a
queue that the feed drains with ``poll_updates``. After a reconnect the venue sends the image
again, so each selection starts over from a snapshot; suspension and settlement arrive as
``ExchangeStatus`` (HALTED "suspended" / "settled: ..."), reopening as OPEN.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from betfairlightweight.exceptions import LoginError

from engine.instruments import InstrumentTable
from engine.venues.betfair_session import BetfairApi, StreamSocket, StreamWorker, api_error_code
from engine.venues.betfair_wire import MarketStream
from engine.venues.data import InstrumentRules

__all__ = ["MARKET_FIELDS", "BetfairDataClient"]

log = logging.getLogger(__name__)

#: what the market subscription asks for (marketDataFilter.fields)
MARKET_FIELDS = ["EX_ALL_OFFERS", "EX_TRADED", "EX_TRADED_VOL", "EX_LTP", "EX_MARKET_DEF"]


class BetfairDataClient:
    """Market data of one Betfair venue (see the module docstring). ``rules``: the venue's
    instruments with their rules, as the pre-flight resolved them."""

    live = True

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        rules: Iterable[InstrumentRules],
        settings: Mapping[str, Any],
        credentials: Any,
    ) -> None:
        self.name, self.settings, self._creds = name, dict(settings), credentials
        self._table = instruments
        self._rules = list(rules)
        self.gaps = 0
        self._lock = threading.Lock()
        self._out: deque[object] = deque()
        self._api: BetfairApi | None = None
        self._worker: StreamWorker | None = None
        self._stream: MarketStream | None = None
        self._state = "down"
        self._closed = threading.Event()
        self._resyncs = 0

    # --- life cycle -----------------------------------------------------------------------------
    def connect(self) -> None:
        """Log in. Refused keys are a ``ValueError`` (retrying will not fix them); a venue that
        does not answer is left to the stream's own reconnects."""
        self._api = BetfairApi(self._creds, self.settings)
        try:
            self._api.ensure_session()
        except Exception as exc:  # noqa: BLE001 - sorted below: refused, or not reached
            text = str(exc)
            if isinstance(exc, LoginError) or api_error_code(exc).startswith("INVALID"):
                raise ValueError(f"betfair refused the login: {text.strip()[:200]}") from None
            log.warning(
                "betfair %s: login not answered (%s); the stream retries", self.name, text[:200]
            )

    def instruments(self) -> list[InstrumentRules]:
        return list(self._rules)

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        if self._api is None:
            self.connect()
        want = set(instrument_ids)
        chosen = [i for i in self._table if i.instrument_id in want]
        self._stream = MarketStream(chosen)
        assert self._api is not None
        self._worker = StreamWorker(
            f"{self.name}-md",
            "mcm",
            self._api,
            self.settings,
            self._subscribe,
            self._on_message,
            self._on_state,
        )
        self._worker.start()

    def _subscribe(self, s: StreamSocket, initial_clk: str | None, clk: str | None) -> None:
        assert self._stream is not None
        s.subscribe_to_markets(
            {"marketIds": self._stream.market_ids()},
            {"fields": MARKET_FIELDS},
            initial_clk=initial_clk,
            clk=clk,
            conflate_ms=0,
            heartbeat_ms=int(self.settings.get("heartbeat_ms", 5000)),
        )

    def _on_state(self, state: str) -> None:
        if state == "connected" and self._state == "down" and self._worker is not None:
            self._resyncs += self._worker.connects > 1
        self._state = state

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("op") != "mcm" or self._stream is None:
            return
        got = self._stream.on_mcm(msg, time.time_ns())
        if got:
            with self._lock:
                self._out.extend(got)

    def close(self) -> None:
        self._closed.set()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._state = "down"

    # --- reading --------------------------------------------------------------------------------
    def poll_updates(self, max_n: int = 512) -> list[object]:
        with self._lock:
            n = min(max_n, len(self._out))
            return [self._out.popleft() for _ in range(n)]

    def updates(self) -> Iterator[object]:
        while not self._closed.is_set():
            got = self.poll_updates()
            if not got:
                time.sleep(0.005)
            yield from got

    def state(self) -> str:
        return self._state

    def counters(self) -> dict[str, int]:
        w = self._worker
        return {
            "gaps": self.gaps,
            "resyncs": self._resyncs,
            "reconnects": w.reconnects if w is not None else 0,
        }
