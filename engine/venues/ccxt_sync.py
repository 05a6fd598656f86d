"""What the venue says about our orders, kept in step: the first REST view, the user stream with
its REST backfill, and the queries that settle UNKNOWN submits (a mixin of
``engine.venues.ccxt_exec.CcxtExecutionClient``, which owns the state it uses).

Why a user stream is never trusted alone (Hummingbot's user-stream tracker does the same): a
websocket drops, stalls, repeats and reorders, and a fill that happens while it is down is never
sent again. So every reconnect schedules a REST backfill (open orders, our trades since the last
one seen), a REST check runs every ``rest_poll_s`` while orders are open, and an order the venue
closed with fills no trade explains gets one fill at its average price. Everything lands in the
order table, which applies each trade once whichever path brought it.

Why UNKNOWN orders are settled by query, not by retry: resending a submit whose answer was lost
can double a position. An UNKNOWN order is looked up by our client id (one request on Binance;
open + recent closed orders elsewhere) until found, or until the venue's window for accepting
it has passed (Binance refuses a request older than ``recvWindow``), and only then rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import msgspec
from ccxt.base.errors import BadResponse, ExchangeError, NetworkError, NotSupported, OrderNotFound

from engine.instruments import Instrument
from engine.venues.ccxt_guard import Banned
from engine.venues.ccxt_orders import OrderTable, Phase, Tracked

__all__ = ["HAS_WATCH", "ReconcileSnapshot", "VenueSync"]

#: the user-stream methods and the ``has`` flag that says a venue supports each
HAS_WATCH = {"watch_orders": "watchOrders", "watch_my_trades": "watchMyTrades"}
#: venues that find an order by our client id in one query
_QUERY_BY_CID = {"binanceus": "origClientOrderId", "binance": "origClientOrderId"}


class ReconcileSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The last REST view of the venue: ccxt dicts as the venue gave them."""

    taken_ns: int
    open_orders: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    balances: dict[str, dict[str, float]]


class VenueSync:
    """The bridge-side half that listens (see the module docstring)."""

    exchange_id: str
    name: str
    settings: dict[str, Any]
    table: OrderTable
    stats: dict[str, int]
    _ex: Any
    _lock: threading.Lock
    _insts: list[Instrument]
    _clock: Callable[[], int]
    _closing: bool
    _connected: bool
    _resyncing: bool
    _down_reason: str
    _backfill_due: float
    _balances: dict[str, dict[str, float]]
    _snapshot: ReconcileSnapshot
    _last_trade_ms: dict[str, int]
    _request: Callable[..., Awaitable[Any]]
    _emit: Callable[[list[object]], None]
    _apply_order: Callable[..., None]
    _soon_if_short: Callable[[], None]
    _backoff_max_s: Callable[[], float]

    # --- bridge side: the first REST view ---------------------------------------------------------
    async def _initial_sync(self) -> None:
        """Our orders and fills at the venue before we trade (a restarted exec adopts its own
        orders by their client ids); nothing here is emitted: reconciliation asks the queries."""
        lookback = float(self.settings.get("trade_lookback_s", 6 * 3600))
        since = self._ex.milliseconds() - int(lookback * 1000)
        orders, trades = [], []
        for inst in self._insts:
            orders += await self._request("fetch_open_orders", inst.symbol)
            if self._ex.has.get("fetchClosedOrders"):
                with contextlib.suppress(NotSupported):
                    orders += await self._request("fetch_closed_orders", inst.symbol, since)
            trades += await self._request("fetch_my_trades", inst.symbol, since)
        now_ns = self._clock()
        newest_gen_first = sorted(orders, key=lambda o: str(o.get("clientOrderId")), reverse=True)
        with self._lock:
            for o in newest_gen_first:
                self.table.adopt(o, now_ns)
            for o in orders:
                self.table.on_order(o, now_ns)
            for tr in sorted(trades, key=lambda x: _venue_ms(x.get("timestamp")) or 0):
                self._note_trade_time(tr)
                self.table.on_trade(tr, now_ns)
            for o in orders:  # closed before the trades we can see: their fills at the average
                t = self.table.find(o.get("clientOrderId"), o.get("id"))
                if t is not None and t.close_status and t.missing() > 0:
                    px = Decimal(str(o.get("average") or o.get("price") or 0))
                    ts = _last_update_ms(o)
                    self.table.synthesize_missing(t.order.client_order_id, px, now_ns, ts)
        await self._fetch_balances()
        self._take_snapshot([o for o in orders if o.get("status") == "open"], trades)

    def _take_snapshot(
        self, open_orders: list[dict[str, Any]], trades: list[dict[str, Any]]
    ) -> None:
        self._snapshot = ReconcileSnapshot(
            taken_ns=self._clock(),
            open_orders=[dict(o) for o in open_orders],
            trades=[dict(t) for t in trades],
            balances={k: dict(v) for k, v in self._balances.items()},
        )

    async def _fetch_balances(self) -> None:
        bal = await self._request("fetch_balance")
        out: dict[str, dict[str, float]] = {}
        for cur, total in (bal.get("total") or {}).items():
            if total is None:
                continue
            free = (bal.get("free") or {}).get(cur) or 0.0
            out[str(cur)] = {"total": float(total), "free": float(free)}
        self._balances = out

    def _note_trade_time(self, tr: Mapping[str, Any]) -> None:
        sym, ts = str(tr.get("symbol") or ""), _venue_ms(tr.get("timestamp"))
        if sym and ts is not None:
            self._last_trade_ms[sym] = max(self._last_trade_ms.get(sym, 0), ts)

    # --- bridge side: UNKNOWN orders --------------------------------------------------------------
    async def _resolve_unknown(self, now: float) -> None:
        every = float(self.settings.get("unknown_query_s", 0.5))
        with self._lock:
            todo = [t for t in self.table.open() if t.phase == Phase.UNKNOWN]
        for t in todo:
            if now - t.queried_at < every:
                continue
            await self._query(t)
            with self._lock:
                still = t.phase == Phase.UNKNOWN
            if still and self._clock() - t.sent_ns > self._unknown_window_ns():
                why = f"{self.name}: the submit timed out and the venue does not have the order"
                with self._lock:
                    evs = self.table.resolve_missing(t.order.client_order_id, why, self._clock())
                self.stats["resolved_unknown"] += len(evs)
                self._emit(evs)

    def _unknown_window_ns(self) -> int:
        """After this the venue can no longer take a submit we sent (Binance refuses a request
        older than recvWindow; elsewhere a configured window)."""
        s = self.settings
        recv = float(s.get("recv_window_ms", self._ex.options.get("recvWindow", 0) or 0)) / 1000
        base = float(s.get("unknown_window_s", max(recv, 10.0)))
        return int((base + float(s.get("timeout_ms", 10_000)) / 1000 + 1.0) * 1e9)

    async def _query(self, t: Tracked) -> None:
        """Find one order at the venue (by our client id) and apply what the venue says."""
        t.queried_at = time.monotonic()
        try:
            o = await self._find(t)
        except (NetworkError, BadResponse, Banned):
            return
        if o is not None:
            self._apply_order(o)

    async def _find(self, t: Tracked) -> Mapping[str, Any] | None:
        key = _QUERY_BY_CID.get(self.exchange_id)
        if t.venue_id:
            with contextlib.suppress(OrderNotFound):
                return await self._request("fetch_order", t.venue_id, t.inst.symbol)
        if key:
            try:
                return await self._request("fetch_order", None, t.inst.symbol, {key: t.cid})
            except OrderNotFound:
                return None
        orders = await self._request("fetch_open_orders", t.inst.symbol)
        if self._ex.has.get("fetchClosedOrders"):
            since = self._ex.milliseconds() - 3_600_000
            orders += await self._request("fetch_closed_orders", t.inst.symbol, since)
        return next((o for o in orders if o.get("clientOrderId") == t.cid), None)

    # --- bridge side: the user stream and its REST backfill ---------------------------------------
    async def _watch(self, method: str) -> None:
        """One user-stream loop: apply what arrives; on a drop, back off (with jitter),
        resubscribe and schedule a REST backfill of what the gap hid."""
        first = float(
            self.settings.get("reconnect_s") or self.settings.get("reconnect_min_s") or 0.2
        )
        delay, cap = first, self._backoff_max_s()
        while not self._closing:
            try:
                items = await getattr(self._ex, method)()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a dropped stream: reconnect, then backfill
                self.stats["reconnects"] += 1
                self._resyncing = True
                self._backfill_due = time.monotonic() + delay + 0.3
                self._down_reason = f"user stream: {type(e).__name__}"
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, cap)
                continue
            delay = first
            self._apply_stream(method, items)

    def _apply_stream(self, method: str, items: list[dict[str, Any]]) -> None:
        now_ns = self._clock()
        with self._lock:
            evs: list[object] = []
            for it in items:
                if method == "watch_orders":
                    self._adopt_if_ours(it, now_ns)
                    evs += self.table.on_order(it, now_ns)
                else:
                    self._note_trade_time(it)
                    evs += self.table.on_trade(it, now_ns)
        self._emit(evs)
        self._soon_if_short()

    def _adopt_if_ours(self, o: Mapping[str, Any], now_ns: int) -> None:
        """An order of ours the table does not have (sent before a restart) is adopted."""
        if self.table.find(o.get("clientOrderId"), o.get("id")) is None:
            self.table.adopt(o, now_ns)

    async def _backfill(self, full: bool) -> None:
        """Over REST: the open orders of each symbol we have orders in (``full``: every symbol,
        with trades, balances and a new snapshot), the orders we hold open that the venue no
        longer lists, and our trades since the last one seen wherever an order reports fills
        no trade explains (a periodic check costs one open-orders request per symbol)."""
        self._backfill_due = 0.0
        with self._lock:
            mine = {t.inst.symbol for t in self.table.open()}
        opened: list[dict[str, Any]] = []
        trades: list[dict[str, Any]] = []
        for sym in [i.symbol for i in self._insts if full or i.symbol in mine]:
            o, tr = await self._backfill_symbol(sym, full)
            opened += o
            trades += tr
        await self._fill_the_gaps()
        self.stats["backfills"] += 1
        if full:
            await self._fetch_balances()
            self._take_snapshot(opened, trades)
        self._connected, self._resyncing = True, False

    async def _backfill_symbol(
        self, sym: str, full: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        now_ns = self._clock()
        opened = await self._request("fetch_open_orders", sym)
        evs: list[object] = []
        with self._lock:
            for o in opened:
                self._adopt_if_ours(o, now_ns)
                evs += self.table.on_order(o, now_ns)
            listed = {str(o.get("id")) for o in opened}
            gone = [
                t
                for t in self.table.open()
                if t.inst.symbol == sym and t.phase == Phase.OPEN and t.venue_id not in listed
            ]
        self._emit(evs)
        for t in gone:  # closed while we were not looking: its final state, filled included
            await self._query(t)
        with self._lock:
            short = any(t.inst.symbol == sym and t.missing() > 0 for t in self.table.open())
        trades: list[dict[str, Any]] = []
        if full or short:
            since = self._last_trade_ms.get(sym, self._ex.milliseconds() - 3_600_000) - 1000
            trades = await self._request("fetch_my_trades", sym, since)
            self._apply_trades(trades)
        return opened, trades

    def _apply_trades(self, trades: list[dict[str, Any]]) -> None:
        now_ns = self._clock()
        evs: list[object] = []
        with self._lock:
            for tr in sorted(trades, key=lambda x: _venue_ms(x.get("timestamp")) or 0):
                self._note_trade_time(tr)
                evs += self.table.on_trade(tr, now_ns)
        self._emit(evs)

    async def _fill_the_gaps(self) -> None:
        """Orders the venue closed with fills no trade accounts for (after the trade backfill):
        one fill each at the order's average price."""
        with self._lock:
            short = [t for t in self.table.open() if t.close_status and t.missing() > 0]
        for t in short:
            try:
                o = await self._request("fetch_order", t.venue_id, t.inst.symbol)
            except (ExchangeError, NetworkError):
                continue
            px = Decimal(str(o.get("average") or o.get("price") or t.inst.ticks_to_px(t.px)))
            with self._lock:
                coid, ts = t.order.client_order_id, _last_update_ms(o)
                evs = self.table.synthesize_missing(coid, px, self._clock(), ts)
            self._emit(evs)


def _last_update_ms(o: Mapping[str, Any]) -> int | None:
    """The venue's time of an order's last change (its fills' time when no trade says)."""
    for k in ("lastTradeTimestamp", "lastUpdateTimestamp", "timestamp"):
        v = _venue_ms(o.get(k))
        if v:
            return v
    return None


def _venue_ms(v: object) -> int | None:
    """A venue's millisecond time, or None where it is none (NaN, inf, text, beyond int64 ns)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 2**63 // 1_000_000:
        return int(v)
    return None
