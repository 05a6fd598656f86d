"""OANDA v20 market data: the account's instruments and its pricing stream, kept alive.

Why it is shaped like the ccxt client (``engine.venues.ccxt_data``): the feed's loop never
waits on a network, so the stream runs on the client's ``AsyncBridge`` thread and leaves
finished messages in a deque that ``poll_updates`` drains. OANDA quotes its whole depth on
every price, so each ``PRICE`` is a ``BookSnapshot`` (no sequence numbers, no deltas, nothing
to gap) plus its ``Quote``. A stream that sends nothing — not even the heartbeat v20 sends every
5 s — for ``stale_after_s`` is dead; it and a dropped or refused one are reopened after a
backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``, with jitter), counted in
``reconnects``. ``state()``: "connected" once every subscribed instrument has a price on the
current stream, "resyncing" before, "down" between streams. A price OANDA marks not
``tradeable`` (the weekend close, a halt) publishes no book, and the change is an
``ExchangeStatus`` (HALTED, then OPEN again).

OANDA prices are private: the stream needs the account's token (``credentials.api_key``) and
id (``account_id``), so this client, unlike the crypto ones, is built with the venue's keys.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from engine.instruments import Instrument, InstrumentTable
from engine.messages import ExchangeStatus, ExchangeStatusKind
from engine.venues.ccxt_data import backoff_s
from engine.venues.ccxt_markets import VenueMarket, rules_for
from engine.venues.ccxt_session import AsyncBridge
from engine.venues.data import InstrumentRules, QueuedUpdates
from engine.venues.oanda_http import V20Client
from engine.venues.oanda_wire import book_of, market_of, rfc3339_ns, venue_symbol

__all__ = ["OandaDataClient", "v20_client"]

log = logging.getLogger("gekko.venues.oanda")

_CONNECTED, _RESYNCING, _DOWN = "connected", "resyncing", "down"


def v20_client(settings: Mapping[str, Any], credentials: Any) -> V20Client:
    """A ``V20Client`` from a venue's settings and keys: the token is ``api_key``, the account
    id the venue's ``account_id`` (or ``api_secret`` where the key file holds it)."""
    token = str(getattr(credentials, "api_key", "") or "")
    account = str(settings.get("account_id") or getattr(credentials, "api_secret", "") or "")
    if not token or not account:
        raise ValueError("OANDA needs its token (api_key) and account id (account_id)")
    return V20Client(
        str(settings.get("rest_url") or ""),
        token,
        account,
        stream_url=str(settings.get("stream_url") or ""),
        timeout_s=float(settings.get("timeout_ms", 10_000)) / 1000.0,
    )


class OandaDataClient(QueuedUpdates):
    """Prices of the configured instruments (``symbol`` "EUR/USD"; v20 names it EUR_USD)."""

    live = True

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        settings: Mapping[str, Any] | None = None,
        credentials: Any = None,
    ) -> None:
        s = dict(settings or {})
        self.name, self.settings, self._creds = name, s, credentials
        self._table = instruments
        self.stale_after_s = float(s.get("stale_after_s", 10.0))
        self.reconnect_min_s = float(s.get("reconnect_min_s", 0.5))
        self.reconnect_max_s = float(s.get("reconnect_max_s", 30.0))
        self._rng = random.Random(s.get("seed", 0))
        self.gaps = self.resyncs = self.reconnects = 0
        self.state_reason = "not connected"
        self._state = _DOWN
        self._out: collections.deque[Any] = collections.deque()
        self._markets: dict[str, VenueMarket] = {}
        self._subscribed: dict[str, Instrument] = {}
        self._bridge = AsyncBridge(f"md-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.reasons: collections.deque[str] = collections.deque(maxlen=32)
        self._open: dict[int, bool] = {}  # per instrument: OANDA's last ``tradeable``

    # --- MarketDataClient ----------------------------------------------------------------------
    def connect(self) -> None:
        """Load the account's instruments (start-up: blocking). An unreachable server is not
        an error here (the stream retries); an instrument it does not list is ``ValueError``."""
        self._bridge.start()
        try:
            self._bridge.call(
                self._load(), float(self.settings.get("timeout_ms", 10_000)) / 1e3 + 5
            )
        except Exception as exc:  # the venue is down: the stream retries with backoff
            self.state_reason = f"instruments not loaded: {exc!r}"
            log.warning("%s: %s", self.name, self.state_reason)
            return
        missing = [i.symbol for i in self._table if venue_symbol(i.symbol) not in self._markets]
        if missing:
            self.close()
            raise ValueError(f"venue {self.name!r} (oanda) lists no {missing}")

    async def _load(self) -> None:
        client = v20_client(self.settings, self._creds)
        try:
            self._markets = {str(m["name"]): market_of(m) for m in await client.instruments()}
        finally:
            await client.close()

    def instruments(self) -> list[InstrumentRules]:
        out: list[InstrumentRules] = []
        for ins in self._table:
            m = self._markets.get(venue_symbol(ins.symbol))
            out.append(rules_for(ins, m) if m is not None else InstrumentRules(instrument=ins))
        return out

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        if self._subscribed:
            raise RuntimeError(f"market-data client {self.name!r}: subscribe() twice")
        want = {int(i) for i in instrument_ids}
        self._subscribed = {
            venue_symbol(i.symbol): i for i in self._table if i.instrument_id in want
        }
        self._bridge.start()
        self._bridge.submit(self._start())

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._bridge.running:
            with contextlib.suppress(Exception):
                self._bridge.call(self._stop(), 10.0)
            self._bridge.stop()
        self._state, self.state_reason = _DOWN, "closed"

    def state(self) -> str:
        return self._state

    def counters(self) -> dict[str, int]:
        return {"gaps": self.gaps, "resyncs": self.resyncs, "reconnects": self.reconnects}

    # --- the venue thread ----------------------------------------------------------------------
    async def _start(self) -> None:
        self._task = asyncio.current_task()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervise()

    async def _stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        """Streams one after another: read one until it fails, back off, open the next."""
        attempt = 0
        while not self._closing:
            began = time.monotonic()
            client = None
            try:
                client = v20_client(self.settings, self._creds)
                reason = await self._stream(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
            if self._closing:
                return
            if time.monotonic() - began >= self.reconnect_max_s:
                attempt = 0  # it worked a while: a fresh drop, not a storm
            self.reconnects += 1
            self.reasons.append(reason)
            self._state, self.state_reason = _DOWN, reason
            delay = backoff_s(attempt, self.reconnect_min_s, self.reconnect_max_s, self._rng)
            attempt += 1
            log.warning("%s: pricing stream reconnecting in %.2fs (%s)", self.name, delay, reason)
            await asyncio.sleep(delay)

    async def _stream(self, client: V20Client) -> str:
        self._state, self.state_reason = _RESYNCING, "opening the pricing stream"
        priced: set[str] = set()
        params = {"instruments": ",".join(sorted(self._subscribed))}
        async for obj in client.stream("/pricing/stream", params, self.stale_after_s):
            if obj.get("type") != "PRICE":
                continue  # HEARTBEAT: the stream is alive (reading it reset the stale timer)
            ins = self._subscribed.get(str(obj.get("instrument")))
            if ins is None:
                continue
            recv = time.monotonic_ns()
            self._tradeable(ins, obj, recv)
            msgs = book_of(ins, obj, recv)
            if not msgs:
                continue
            self._out.extend(msgs)
            if ins.symbol not in priced:
                priced.add(ins.symbol)
                if len(priced) == len(self._subscribed):
                    if self.reconnects:
                        self.resyncs += 1
                    self._state, self.state_reason = _CONNECTED, ""
        return "the pricing stream ended"

    def _tradeable(self, ins: Instrument, price: Mapping[str, Any], recv: int) -> None:
        """OANDA's ``tradeable`` flag (false over the weekend close and in a halt) as an
        ``ExchangeStatus`` when it changes: risk holds the pair while it cannot trade."""
        now = price.get("tradeable") is not False
        was = self._open.get(ins.instrument_id, True)
        self._open[ins.instrument_id] = now
        if now == was:
            return
        kind = ExchangeStatusKind.OPEN if now else ExchangeStatusKind.HALTED
        why = f"{self.name}: {ins.symbol} " + ("tradeable" if now else "not tradeable")
        ts = rfc3339_ns(str(price["time"]))
        self._out.append(ExchangeStatus(ins.instrument_id, int(kind), why, ts, recv))
