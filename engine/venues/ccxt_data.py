"""A real venue's market data through ccxt.pro: books, trades and top of book, kept alive.

Why it is shaped like this: the feed's loop must never wait on a network, so everything that
talks to the venue runs on the client's own ``AsyncBridge`` thread and leaves finished engine
messages in a thread-safe deque; the feed drains it with ``poll_updates`` (the live mode of
``engine.venues.data.MarketDataClient``). ``engine.venues.ccxt_book`` turns ccxt's books and
trades into messages; this module keeps the streams honest:

- a sequence break (ccxt's ``InvalidNonce`` / ``ChecksumError``, or a book whose update id goes
  back) drops that book; ccxt resubscribes and rebuilds it from a fresh snapshot (REST on
  Binance), which we publish whole — counted in ``gaps`` and ``resyncs``;
- a silent connection is told from a quiet market by pings: ccxt pings every third of
  ``stale_after_s`` (its ``keepAlive``) and fails the connection when no pong comes back, so a
  connection that gets no frame at all — data or pong — for ``stale_after_s`` is dead, while a
  quiet book on a live connection is left alone. Streams may also have data timers
  (``book_stale_after_s``, ``trade_stale_after_s``; 0 = off, the default: a quiet market
  publishes nothing for minutes). A dead or silent connection, a dropped one or any other error
  closes the session and opens a new one after an exponential backoff with jitter
  (``reconnect_min_s`` doubling to ``reconnect_max_s``, times 0.5-1.0; back to the minimum only
  after a session that lasted ``reconnect_max_s``, so a link that drops right after each
  snapshot still backs off), which resubscribes and resyncs every book — counted in
  ``reconnects``;
- ``state()`` says "connected" (every book synced), "resyncing" (a book being rebuilt) or "down"
  (no session), with ``state_reason``.

Settings (a venue's ``[[venues]]`` keys, as ``make_exchange`` takes them, plus): ``book_depth``
levels per side published (default 100; 0 = the whole book), ``snapshot_limit`` (the ``limit``
ccxt asks the venue's snapshot for; default ccxt's), ``book_hold_s`` (how long a book whose
snapshot carries no time waits for a venue time before it goes out stamped with ours; default
1), ``trades`` (default true), ``seed`` (the jitter), ``marks`` (how many (seq, venue update
id) pairs each book keeps, for tests).
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
from engine.venues.ccxt_book import BookTracker, TradeTracker
from engine.venues.ccxt_integrity import install as install_checks
from engine.venues.ccxt_session import AsyncBridge, Credentials, make_exchange
from engine.venues.data import InstrumentRules, QueuedUpdates

__all__ = ["CcxtDataClient", "backoff_s"]

log = logging.getLogger("gekko.venues.md")

_CONNECTED, _RESYNCING, _DOWN = "connected", "resyncing", "down"


class _Reconnect(Exception):
    """This session cannot go on (a silent stream, a book that went back): open a new one."""


class CcxtDataClient(QueuedUpdates):
    """Market data of one venue (any ccxt.pro exchange id) for the configured instruments,
    whose ``symbol`` is ccxt's unified symbol ("BTC/USDT")."""

    live = True

    def __init__(
        self,
        exchange_id: str,
        name: str,
        instruments: InstrumentTable,
        settings: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        s = dict(settings or {})
        self.exchange_id, self.name = exchange_id, name
        self.settings, self._credentials = s, credentials
        self._table = instruments
        self.depth = int(s.get("book_depth", 100))
        self.snapshot_limit = s.get("snapshot_limit")
        self.stale_after_s = float(s.get("stale_after_s", 30.0))
        self.book_stale_after_s = float(s.get("book_stale_after_s", 0.0))
        self.trade_stale_after_s = float(s.get("trade_stale_after_s", 0.0))
        self.reconnect_min_s = float(s.get("reconnect_min_s", 0.5))
        self.reconnect_max_s = float(s.get("reconnect_max_s", 30.0))
        self.want_trades = bool(s.get("trades", True))
        self.hold_s = float(s.get("book_hold_s", 1.0))
        self._rng = random.Random(s.get("seed", 0))
        self.gaps = self.resyncs = self.reconnects = 0
        self.state_reason = "not connected"
        self._state = _DOWN
        self._out: collections.deque[Any] = collections.deque()
        marks = int(s.get("marks", 0))
        self.books = {i.instrument_id: BookTracker(i, self.depth, marks) for i in instruments}
        self.trades = {i.instrument_id: TradeTracker(i) for i in instruments}
        self._subscribed: list[Instrument] = []
        self._markets: tuple[Any, Any] | None = None
        self._bridge = AsyncBridge(f"md-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._streaming = False
        #: the latest venue time seen on any stream (ns): the time of a book that has none
        self.venue_ns = 0
        self._held: dict[int, tuple[Any, float]] = {}
        self._unsynced: dict[int, float] = {}  # books waiting for a snapshot, since when
        self._last: dict[str, float] = {}
        self._session_had_data = False
        self._break: asyncio.Future[str] | None = None  # set: this session lost data
        #: why the last few reconnects and resyncs happened (newest last), for logs and tests
        self.reasons: collections.deque[str] = collections.deque(maxlen=32)
        #: the last reconnect waits (s): a storm backs off, a link that worked starts over
        self.waits: collections.deque[float] = collections.deque(maxlen=32)

    # --- MarketDataClient ----------------------------------------------------------------------
    def connect(self) -> None:
        """Start the venue thread and load the venue's markets (start-up: it may wait up to the
        venue's timeout). An unreachable venue is not an error here: the session retries.
        ``ValueError`` when the venue does not list a configured instrument."""
        self._bridge.start()
        try:
            self._bridge.call(self._load_markets(), self._timeout_s() + 5)
        except Exception as exc:  # the venue is down: streams retry with backoff
            self.state_reason = f"markets not loaded: {exc!r}"
            log.warning("%s: %s", self.name, self.state_reason)
            return
        markets = self._markets[0] if self._markets else {}
        missing = [i.symbol for i in self._table if i.symbol not in markets]
        if missing:
            self.close()
            raise ValueError(f"venue {self.name!r} ({self.exchange_id}) lists no {missing}")

    def instruments(self) -> list[InstrumentRules]:
        markets = self._markets[0] if self._markets else {}
        return [_rules(i, markets.get(i.symbol)) for i in self._table]

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        """Start streaming these instruments (once: the set is fixed for the client's life)."""
        if self._streaming:
            raise RuntimeError(f"market-data client {self.name!r}: subscribe() twice")
        want = {int(i) for i in instrument_ids}
        self._subscribed = [i for i in self._table if i.instrument_id in want]
        self._streaming = True
        self._bridge.start()
        self._bridge.submit(self._start())

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._bridge.running:
            try:
                self._bridge.call(self._stop(), 10.0)
            except Exception as exc:  # closing anyway
                log.debug("%s: close: %r", self.name, exc)
            self._bridge.stop()
        self._state, self.state_reason = _DOWN, "closed"

    # --- status --------------------------------------------------------------------------------
    def state(self) -> str:
        return self._state

    def counters(self) -> dict[str, int]:
        return {"gaps": self.gaps, "resyncs": self.resyncs, "reconnects": self.reconnects}

    def pending(self) -> int:
        return len(self._out)

    # --- the venue thread ----------------------------------------------------------------------
    def _timeout_s(self) -> float:
        return float(self.settings.get("timeout_ms", 10_000)) / 1000.0

    def _new_exchange(self) -> Any:
        ex = make_exchange(self.exchange_id, self.settings, self._credentials)
        install_checks(ex, self._break_session)
        if self.stale_after_s > 0:  # a pong at least every third of the window on a live link
            ping_ms = max(50, int(self.stale_after_s * 1000 / 3))
            current = int(ex.streaming.get("keepAlive") or ping_ms)
            ex.streaming = {**ex.streaming, "keepAlive": min(current, ping_ms)}
        if self._markets is not None:
            ex.set_markets(*self._markets)
        return ex

    async def _load_markets(self) -> None:
        ex = make_exchange(self.exchange_id, self.settings, self._credentials)
        try:
            await ex.load_markets()
            self._markets = (ex.markets, ex.currencies)
        finally:
            await ex.close()

    async def _start(self) -> None:
        self._task = asyncio.current_task()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervise()

    async def _stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        """Sessions one after another: run one until it fails, back off, open the next."""
        attempt = 0
        while not self._closing:
            ex = None
            began = time.monotonic()
            try:
                ex = self._new_exchange()
                if self._markets is None:
                    await ex.load_markets()
                    self._markets = (ex.markets, ex.currencies)
                got = await self._session(ex)
                reason = got
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                if ex is not None:
                    await _close_quietly(ex)
            if self._closing:
                return
            if self._session_had_data and time.monotonic() - began >= self.reconnect_max_s:
                attempt = 0  # it worked a while: a fresh drop, not a storm
            self.reconnects += 1
            self.reasons.append(reason)
            self._set_state(_DOWN, reason)
            for tr in self.books.values():
                tr.drop()
            delay = backoff_s(attempt, self.reconnect_min_s, self.reconnect_max_s, self._rng)
            attempt += 1
            self.waits.append(delay)
            log.warning("%s: reconnecting in %.2fs (%s)", self.name, delay, reason)
            await asyncio.sleep(delay)

    async def _session(self, ex: Any) -> str:
        """Watch every stream of one connection; returns why it ended (it never ends well)."""
        self._session_had_data = False
        self._break = asyncio.get_running_loop().create_future()
        self._held.clear()
        self._unsynced = dict.fromkeys(
            (i.instrument_id for i in self._subscribed), time.monotonic()
        )
        self._set_state(_RESYNCING, "subscribing")
        now = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        limits: dict[str, float] = {}
        for ins in self._subscribed:
            key = f"book {ins.symbol}"
            tasks.append(asyncio.create_task(self._book_loop(ex, ins, key), name=key))
            limits[key] = self.book_stale_after_s
            if self.want_trades and ex.has.get("watchTrades"):
                key = f"trades {ins.symbol}"
                tasks.append(asyncio.create_task(self._trade_loop(ex, ins, key), name=key))
                limits[key] = self.trade_stale_after_s
        for key, coro in self._more_streams(ex):  # a subclass's own streams (perp: marks)
            tasks.append(asyncio.create_task(coro, name=key))
            limits[key] = 0.0
        self._last = dict.fromkeys(limits, now)
        try:
            return await self._watch(ex, tasks, limits)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _more_streams(self, ex: Any) -> list[tuple[str, Any]]:
        """(name, coroutine) of further streams a session watches (none here; a coroutine that
        ends or fails ends the session like any other stream)."""
        return []

    async def _watch(
        self, ex: Any, tasks: list[asyncio.Task[None]], limits: dict[str, float]
    ) -> str:
        """Until a stream fails or falls silent: the reason. Meanwhile a book held for want of
        a venue time (``BookTracker.on_book``) goes out after ``book_hold_s`` stamped with our
        clock: a quiet venue whose snapshots carry no time still gets its book published."""
        checks = [v for v in limits.values() if v > 0] + [self.hold_s]
        tick = max(0.05, min(checks) / 4)
        assert self._break is not None
        while True:
            waits = [*tasks, self._break]
            done, _ = await asyncio.wait(waits, timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            if self._break.done():
                return self._break.result()
            for t in done:
                exc = t.exception()
                return f"{t.get_name()}: {type(exc).__name__}: {exc}" if exc else t.get_name()
            now = time.monotonic()
            late = self._late_book(now)
            if late:
                return late
            for iid, (book, since) in list(self._held.items()):
                if now - since >= self.hold_s:
                    del self._held[iid]
                    tr = self.books[iid]
                    if ex.orderbooks.get(tr.ins.symbol) is book:  # still ccxt's live book
                        self._publish_book(tr, book, time.time_ns())
            for key, limit in limits.items():
                if limit > 0 and now - self._last[key] > limit:
                    return f"{key}: silent for {now - self._last[key]:.1f}s"

    async def _book_loop(self, ex: Any, ins: Instrument, key: str) -> None:
        import ccxt

        tr = self.books[ins.instrument_id]
        tr.drop()
        limit = int(self.snapshot_limit) if self.snapshot_limit else None
        while True:
            try:
                book = await ex.watch_order_book(ins.symbol, limit)
            except ccxt.InvalidNonce as exc:  # ChecksumError too: ccxt dropped the book
                self._on_gap(tr, f"{key}: {type(exc).__name__}: {exc}")
                continue
            self._last[key] = time.monotonic()
            self._session_had_data = True
            nonce = book.get("nonce")
            went_back = tr.synced and nonce is not None and tr.venue_nonce is not None
            if went_back and int(nonce) < tr.venue_nonce:  # ccxt missed it: start again
                self._on_gap(tr, f"{key}: update id went back {tr.venue_nonce} -> {nonce}")
                raise _Reconnect(f"{key}: update id went back")
            self._publish_book(tr, book, self.venue_ns)

    def _publish_book(self, tr: BookTracker, book: Any, venue_ns: int) -> None:
        resync = not tr.synced and tr.seq > 0
        self._out.extend(tr.on_book(book, venue_ns=venue_ns))
        if tr.held:
            self._held.setdefault(tr.iid, (book, time.monotonic()))
            return
        self._held.pop(tr.iid, None)
        self._unsynced.pop(tr.iid, None)
        self.venue_ns = max(self.venue_ns, tr.last_ts)
        if resync:
            self.resyncs += 1
        if self._state != _CONNECTED and all(
            self.books[i.instrument_id].synced for i in self._subscribed
        ):
            self._set_state(_CONNECTED, "")

    async def _trade_loop(self, ex: Any, ins: Instrument, key: str) -> None:
        tt = self.trades[ins.instrument_id]
        while True:
            trades = await ex.watch_trades(ins.symbol)
            self._last[key] = time.monotonic()
            out = tt.on_trades(trades)
            if out:
                self.venue_ns = max(self.venue_ns, out[-1].ts_event)
                self._out.extend(out)

    def _break_session(self, why: str) -> None:
        """A venue check lost data on a connection (``ccxt_integrity``): a gap in every book
        it carried; the session reconnects and resyncs them all."""
        self.gaps += 1
        self.reasons.append(why)
        log.warning("%s: %s; reconnecting", self.name, why)
        if self._break is not None and not self._break.done():
            self._break.set_result(why)

    def _late_book(self, now: float) -> str:
        """A book not rebuilt in time (its snapshot lost on a live link): why, or ""."""
        if self.stale_after_s <= 0:
            return ""
        limit = self.stale_after_s + self.hold_s
        for iid, since in self._unsynced.items():
            if now - since > limit:
                sym = self.books[iid].ins.symbol
                return f"book {sym}: no snapshot within {now - since:.1f}s"
        return ""

    def _on_gap(self, tr: BookTracker, why: str) -> None:
        self.gaps += 1
        self.reasons.append(why)
        tr.drop()
        self._unsynced.setdefault(tr.iid, time.monotonic())
        self._set_state(_RESYNCING, why)
        log.warning("%s: book gap, resyncing (%s)", self.name, why)

    def _set_state(self, state: str, reason: str) -> None:
        self._state, self.state_reason = state, reason


def backoff_s(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """The wait before reconnect ``attempt`` (0 first): ``low`` doubling per attempt up to
    ``high``, times a random 0.5-1.0 so that many clients dropped at once do not return at once."""
    return min(high, low * 2 ** min(attempt, 32)) * (0.5 + 0.5 * rng.random())


async def _close_quietly(ex: Any) -> None:
    try:
        await asyncio.wait_for(ex.close(), 5.0)
    except Exception as exc:  # a broken session closes badly; it is gone either way
        log.debug("closing a session: %r", exc)


def _rules(ins: Instrument, market: Mapping[str, Any] | None) -> InstrumentRules:
    """The venue's order limits for ``ins`` from its ccxt market (defaults where unknown)."""
    if not market:
        return InstrumentRules(instrument=ins)
    limits = market.get("limits") or {}
    amount, cost = limits.get("amount") or {}, limits.get("cost") or {}
    lo, hi = amount.get("min"), amount.get("max")
    return InstrumentRules(
        instrument=ins,
        min_qty_lots=max(1, ins.qty_to_lots(lo)) if lo else 1,
        max_qty_lots=ins.qty_to_lots(hi) if hi else 0,
        min_notional=float(cost.get("min") or 0.0),
    )
