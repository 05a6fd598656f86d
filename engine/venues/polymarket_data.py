"""Polymarket's market channel as a live ``MarketDataClient`` (engine/venues/data.py).

Why it is shaped like this: the feed never waits on a network, so the websocket runs on the
client's own ``AsyncBridge`` thread and leaves engine messages in a deque that ``poll_updates``
drains. The channel sends a ``book`` per token on subscribe, then ``price_change`` (new totals
at a price), ``last_trade_price``, ``tick_size_change`` and ``market_resolved``. It numbers
nothing, so we number each token's book ourselves (snapshot, then +1 per delta); a lost
connection is the only gap it can have, and a reconnect resubscribes, which sends every book
again (counted in ``resyncs`` and ``reconnects``). Liveness: we send "PING" every ``ping_s``
and the venue answers "PONG"; nothing at all for ``stale_after_s`` reconnects.

Refused rather than approximated: a tick size change makes our integer ticks wrong, so that
token is HALTED (``ExchangeStatus``) and its book is no longer published until a restart takes
the new tick; a resolved market's tokens are HALTED, the reason naming the winner and what a
share pays (``polymarket_paper.resolved_reason``: the paper venue settles on it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import aiohttp

from engine.enums import ExchangeStatusKind, Side
from engine.instruments import Instrument, InstrumentTable
from engine.messages import BookDelta, ExchangeStatus, Quote
from engine.venues import polymarket_wire as wire
from engine.venues.ccxt_markets import VenueMarket, rules_for
from engine.venues.ccxt_session import AsyncBridge
from engine.venues.data import InstrumentRules, QueuedUpdates
from engine.venues.polymarket_paper import resolved_reason

__all__ = ["PolymarketDataClient"]

log = logging.getLogger("gekko.venues.polymarket")


class _Reconnect(Exception):
    pass


class PolymarketDataClient(QueuedUpdates):
    """The market channel for the configured tokens (``venue_symbol`` of each market).

    Settings: ``rest_url``, ``ws_url`` (the channel is ``<ws_url>/ws/market``), ``markets``
    (symbol -> ``VenueMarket``, from the pre-flight), ``ping_s`` (10), ``stale_after_s``,
    ``reconnect_min_s`` / ``reconnect_max_s``, ``book_depth``, ``seed``."""

    live = True

    def __init__(
        self, name: str, instruments: InstrumentTable, settings: Mapping[str, Any] | None = None
    ) -> None:
        s = dict(settings or {})
        self.name, self.settings = name, s
        self._table = instruments
        self.depth = int(s.get("book_depth", 100))
        self.ping_s = float(s.get("ping_s", 10.0))
        self.stale_after_s = float(s.get("stale_after_s", 30.0))
        self.reconnect_min_s = float(s.get("reconnect_min_s", 0.5))
        self.reconnect_max_s = float(s.get("reconnect_max_s", 30.0))
        self._rng = random.Random(s.get("seed", 0))
        self.markets: dict[str, VenueMarket] = dict(s.get("markets") or {})
        self.gaps = self.resyncs = self.reconnects = 0
        self.state_reason = "not connected"
        self._state = "down"
        self._out: collections.deque[Any] = collections.deque()
        self._by_token: dict[str, Instrument] = {}
        self._subscribed: list[Instrument] = []
        self._seq: dict[int, int] = {}
        self._books: dict[int, dict[int, dict[int, int]]] = {}  # iid -> side -> px -> qty
        self.halted: dict[int, str] = {}  # iid -> why its book is no longer published
        self._trade_ids = 0
        self._bridge = AsyncBridge(f"md-{name}")
        self._closing = False
        self._streaming = False

    # --- MarketDataClient ----------------------------------------------------------------------
    def connect(self) -> None:
        """Load the markets (when the pre-flight did not pass them); ``ValueError`` when the
        venue does not list a configured instrument."""
        if not self.markets:
            from engine.venues.polymarket_rest import load_markets

            self.markets = load_markets(self.settings)
        missing = [i.symbol for i in self._table if i.symbol not in self.markets]
        if missing:
            raise ValueError(f"venue {self.name!r} (polymarket) lists no {missing}")
        self._by_token = {self._token(i): i for i in self._table}

    def _token(self, ins: Instrument) -> str:
        return self.markets[ins.symbol].venue_symbol

    def instruments(self) -> list[InstrumentRules]:
        return [
            rules_for(i, self.markets[i.symbol]) for i in self._table if i.symbol in self.markets
        ]

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        if self._streaming:
            raise RuntimeError(f"market-data client {self.name!r}: subscribe() twice")
        want = {int(i) for i in instrument_ids}
        self._subscribed = [i for i in self._table if i.instrument_id in want]
        self._streaming = True
        self._bridge.start()
        self._bridge.submit(self._run())

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._bridge.stop()
        self._state, self.state_reason = "down", "closed"

    def state(self) -> str:
        return self._state

    def counters(self) -> dict[str, int]:
        return {"gaps": self.gaps, "resyncs": self.resyncs, "reconnects": self.reconnects}

    # --- the venue thread ----------------------------------------------------------------------
    async def _run(self) -> None:
        wait = self.reconnect_min_s
        while not self._closing:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                return
            except Exception as exc:  # any failure of the session: reconnect with backoff
                self.state_reason = f"reconnecting: {exc!r}"
                log.warning("%s: %s", self.name, self.state_reason)
            if self._closing:
                return
            self._state = "down"
            self.reconnects += 1
            if time.monotonic() - started >= self.reconnect_max_s:
                wait = self.reconnect_min_s
            await asyncio.sleep(wait * (0.5 + 0.5 * self._rng.random()))
            wait = min(wait * 2, self.reconnect_max_s)

    async def _session(self) -> None:
        url = str(self.settings.get("ws_url") or "").rstrip("/") + "/ws/market"
        tokens = [self._token(i) for i in self._subscribed if i.instrument_id not in self.halted]
        async with aiohttp.ClientSession() as s, s.ws_connect(url, autoping=True) as ws:
            sub = {"assets_ids": tokens, "type": "market", "custom_feature_enabled": True}
            await ws.send_str(json.dumps(sub))
            self._books.clear()
            self._state, self.state_reason = "resyncing", "waiting for the books"
            pinger = asyncio.get_running_loop().create_task(self._ping(ws))
            try:
                while not self._closing:
                    msg = await asyncio.wait_for(ws.receive(), self.stale_after_s)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise _Reconnect(f"the channel closed ({msg.type.name})")
                    if msg.data in ("PONG", "PING"):
                        continue
                    self._on_text(msg.data, time.time_ns())
            finally:
                pinger.cancel()

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self.ping_s)
                await ws.send_str("PING")

    def _on_text(self, text: str, now: int) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        for m in data if isinstance(data, list) else [data]:
            if isinstance(m, dict):
                try:
                    self._on_message(m, now)
                except (KeyError, ValueError, TypeError) as exc:
                    log.warning("%s: malformed %s: %r", self.name, m.get("event_type"), exc)

    def _on_message(self, m: Mapping[str, Any], now: int) -> None:
        kind = m.get("event_type")
        if kind == "book":
            self._on_book(m, now)
        elif kind == "price_change":
            self._on_price_change(m, now)
        elif kind == "last_trade_price":
            ins = self._by_token.get(str(m.get("asset_id")))
            if ins is not None and ins.instrument_id not in self.halted:
                self._trade_ids += 1
                self._out.append(wire.trade_of(ins, m, now, self._trade_ids))
        elif kind == "tick_size_change":
            ins = self._by_token.get(str(m.get("asset_id")))
            new = str(m.get("new_tick_size"))
            if ins is not None and float(new) != ins.tick_size:
                self._halt(
                    ins, f"tick size changed to {new} (configured {ins.tick_size:g}): restart", now
                )
        elif kind == "market_resolved":
            for tok in m.get("assets_ids") or []:
                ins = self._by_token.get(str(tok))
                if ins is not None:
                    outcome = str(m.get("winning_outcome") or "")
                    self._halt(ins, resolved_reason(outcome, _payout(ins, str(tok), m)), now)

    def _halt(self, ins: Instrument, why: str, now: int) -> None:
        if ins.instrument_id in self.halted:
            return
        self.halted[ins.instrument_id] = why
        self._books.pop(ins.instrument_id, None)
        halted = int(ExchangeStatusKind.HALTED)
        self._out.append(ExchangeStatus(ins.instrument_id, halted, why, now, now))

    def _on_book(self, m: Mapping[str, Any], now: int) -> None:
        ins = self._by_token.get(str(m.get("asset_id")))
        if ins is None or ins.instrument_id not in {i.instrument_id for i in self._subscribed}:
            return
        iid = ins.instrument_id
        if iid in self.halted:
            return
        if self._seq.get(iid):  # a book again (a reconnect, or the venue's own resend)
            self.resyncs += 1
        seq = self._seq[iid] = self._seq.get(iid, 0) + 1
        snap = wire.book_snapshot(ins, m, seq, now, self.depth)
        self._books[iid] = {
            int(Side.BUY): dict(zip(snap.bid_px, snap.bid_qty, strict=True)),
            int(Side.SELL): dict(zip(snap.ask_px, snap.ask_qty, strict=True)),
        }
        self._out.append(snap)
        self._quote(iid, snap.ts_event, now)
        if all(
            i.instrument_id in self._books or i.instrument_id in self.halted
            for i in self._subscribed
        ):
            self._state, self.state_reason = "connected", ""

    def _on_price_change(self, m: Mapping[str, Any], now: int) -> None:
        touched: dict[int, int] = {}
        for d in wire.price_change_deltas(self._by_token, m, now):
            book = self._books.get(d.instrument_id)
            if book is None:  # no snapshot yet (or halted): nothing to apply it to
                continue
            seq = self._seq[d.instrument_id] = self._seq[d.instrument_id] + 1
            side = book[d.side]
            if d.qty:
                side[d.px] = d.qty
            else:
                side.pop(d.px, None)
            self._out.append(BookDelta(d.instrument_id, d.side, d.px, d.qty, d.ts_event, now, seq))
            touched[d.instrument_id] = d.ts_event
        for iid, ts in touched.items():
            self._quote(iid, ts, now)

    def _quote(self, iid: int, ts: int, now: int) -> None:
        book = self._books[iid]
        bids, asks = book[int(Side.BUY)], book[int(Side.SELL)]
        bp = max(bids, default=0)
        ap = min(asks, default=0)
        q = Quote(iid, bp, bids.get(bp, 0), ap, asks.get(ap, 0), ts, now, self._seq[iid])
        self._out.append(q)


def _payout(ins: Instrument, token: str, m: Mapping[str, Any]) -> Decimal:
    """What a share of ``token`` pays by a ``market_resolved`` message: 1 for the winning
    token (by id, else by outcome), 0.5 each where no token won (a 50/50), else 0."""
    winner = str(m.get("winning_asset_id") or "")
    if winner:
        return Decimal(int(winner == token))
    outcome = str(m.get("winning_outcome") or "")
    if outcome and outcome.lower() == ins.outcome.lower():
        return Decimal(1)
    return Decimal("0.5") if outcome.replace("/", "-").lower() in ("50-50", "") else Decimal(0)
