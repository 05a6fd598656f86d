"""A real venue's execution client on ccxt (REST) and ccxt.pro (user stream).

Why it is shaped this way: exec's loop must never wait on a network, and a real venue answers
late, twice, out of order or not at all. So the engine-side methods only check, record and
enqueue; every network call runs on the venue's ``AsyncBridge`` thread, through the venue's
``Guard`` (weight budget, ``Retry-After``, bans, clock offset); everything the venue says goes
through the in-flight ``OrderTable`` (``ccxt_orders``), which turns it into engine events exactly
once; ``poll`` hands those out. Queries (``open_orders``, ``positions``, ``fills_since``...) answer
from the table and the last REST view, never from a request made while you wait.

The rules a live bot dies of, and where they live here:
- a submit that times out or fails on the network is UNKNOWN (``_submit_failed``), never
  rejected and never sent twice; a second ``submit`` of a client order id the venue has (a
  restarted exec) is not sent;
- the user stream is backed by REST and UNKNOWN submits are settled by query
  (``engine.venues.ccxt_sync``, the listening half of this client);
- a replace is an amend where the venue amends in place (Coinbase edit, Kraken AmendOrder),
  Binance's atomic cancelReplace otherwise (a new venue order of the same engine order), and a
  cancel then a new order where ccxt has no edit for the venue.

Venue state for the operator and reconciliation: ``state()`` is "connected" | "resyncing" (a
backfill after a reconnect is running) | "banned" (418: order entry stops until the ban ends) |
"halted" (``halt`` by reconciliation) | "down" (no answer from the venue); ``state_reason`` says
why. A move into or out of "banned" / "halted" is also an ``ExchangeStatus`` for the whole venue
(instrument -1, HALTED / OPEN) from ``poll``, so exec holds or refuses new orders meanwhile.
``reconcile_snapshot()`` is the last REST view (open orders, recent fills, balances).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import ccxt.async_support  # noqa: F401 - the error classes below
import msgspec
from ccxt.base.errors import (
    AuthenticationError,
    BadResponse,
    DDoSProtection,
    DuplicateOrderId,
    ExchangeError,
    InvalidNonce,
    NetworkError,
    NotSupported,
    OrderNotFound,
    RateLimitExceeded,
)

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    CancelRejectReason,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OrderCancelRejected,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
)
from engine.venues.base import VenueEvent
from engine.venues.ccxt_guard import Banned, Guard
from engine.venues.ccxt_orders import OrderTable, Phase, Tracked, order_prefix
from engine.venues.ccxt_session import AsyncBridge, Credentials, make_exchange
from engine.venues.ccxt_sync import HAS_WATCH, ReconcileSnapshot, VenueSync
from engine.venues.reports import BalanceReport, OrderStatusReport, StatusReports

__all__ = ["Banned", "CcxtExecutionClient", "ReconcileSnapshot"]

#: the create_order parameter that carries our client order id, per exchange
_CID_PARAM = {"binanceus": "newClientOrderId", "binance": "newClientOrderId"}
_CID_PARAM |= {"coinbase": "client_order_id", "kraken": "clientOrderId"}
#: how each venue replaces: amend in place, ccxt's edit as an atomic cancel + new, or two calls
_REPLACE_MODE = {
    "coinbase": "amend",
    "kraken": "amend",
    "binanceus": "edit_new",
    "binance": "edit_new",
}
#: venues that find an order by our client id in one query
#: venues whose signatures carry a time ccxt takes from ``seconds()`` (Coinbase's JWT)
_JWT_CLOCK = frozenset({"coinbase"})
#: venues whose private requests must reach them in nonce order
_SERIAL = frozenset({"kraken"})
_TIF = {TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}


class CcxtExecutionClient(VenueSync, StatusReports):
    """``engine.venues.base.ExecutionClient`` for one ccxt exchange (see the module docstring).

    Settings (the venue's table; units in the names): ``rest_url``, ``ws_url``, ``timeout_ms``,
    ``recv_window_ms``, ``ccxt_options`` (``ccxt_session``); ``engine_id`` / ``order_prefix``
    (our client ids); ``start_timeout_s`` (the blocking start-up sync); ``rest_poll_s`` (REST
    check of open orders); ``unknown_query_s`` / ``unknown_window_s`` (settling UNKNOWN
    submits); ``trade_lookback_s`` (fills fetched at start); ``trade_grace_s`` (how long a fill
    an order update reports may wait for its trade on the stream); ``reconnect_s`` /
    ``backoff_max_s`` (the first and the longest wait before a user-stream reconnect; or the
    venue keys' ``reconnect_min_s`` / ``reconnect_max_s``); ``stale_after_s`` (a user stream
    that answers no ping this long is reconnected and backfilled);
    ``balance_refresh_s``; ``replace_mode`` ("amend" | "edit_new" | "cancel_new");
    ``serial_requests`` (one request at a time: Kraken's default); and the guard's
    (``engine.venues.ccxt_guard.Guard``)."""

    live = True

    def __init__(
        self,
        exchange_id: str,
        name: str,
        instruments: InstrumentTable,
        settings: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        start: bool = True,
    ) -> None:
        s = dict(settings or {})
        self.exchange_id, self.name, self.settings = exchange_id, name, s
        self._insts = [i for i in instruments if i.venue == name] or list(instruments)
        self._by_id = {i.instrument_id: i for i in self._insts}
        prefix = s.get("order_prefix") or order_prefix(str(s.get("engine_id") or name))
        self.table = OrderTable(name, str(prefix), self._insts)
        self.guard = Guard(exchange_id, s)
        self._clock = clock
        self._creds = credentials
        self._lock = threading.Lock()
        self._out: deque[object] = deque()
        self._bridge = AsyncBridge(f"exec-{name}")
        self._ex: Any = None
        self._serial: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._busy: dict[int, asyncio.Event] = {}
        self._balances: dict[str, dict[str, float]] = {}
        self._snapshot = ReconcileSnapshot(taken_ns=0, open_orders=[], trades=[], balances={})
        self._last_trade_ms: dict[str, int] = {}
        self._connected = False
        self._resyncing = False
        self._halted = ""
        self._down_reason = "not started"
        self._reported = "connected"
        self._backfill_due = 0.0
        self._next_rest_poll = 0.0
        self._short_due = 0.0  # when to fetch trades an order update says we miss
        self._balances_dirty = False
        self._next_balances = 0.0
        self.synced = threading.Event()
        #: counters for the status line / tests
        self.stats: dict[str, int] = dict.fromkeys(
            ("submits", "duplicate_submits", "unknown", "resolved_unknown", "reconnects"), 0
        )
        self.stats |= dict.fromkeys(("backfills", "clock_syncs", "nonce_retries"), 0)
        self.stats["strays_canceled"] = 0
        if start:
            self.start(float(s.get("start_timeout_s", 30.0)))

    # --- life cycle -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> bool:
        """Connect, load markets, measure the clock, take the first REST view and start the user
        stream (blocking: start-up only). False (state "down") if the venue did not answer in
        time; the bridge keeps trying."""
        self._bridge.start()
        self._bridge.submit(self._run())
        return self.synced.wait(timeout_s)

    def close(self) -> None:
        """Stop the stream and the bridge; the venue's orders stay where they are."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self._bridge.call(self._shutdown(), 5.0)
        self._bridge.stop()

    async def _shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ex is not None:
            with contextlib.suppress(Exception):
                await self._ex.close()

    # --- state ----------------------------------------------------------------------------------
    def state(self) -> str:
        now = time.monotonic()
        if self.guard.banned(now):
            return "banned"
        if self._halted:
            return "halted"
        if not self._connected:
            return "down"
        return "resyncing" if self._resyncing else "connected"

    @property
    def state_reason(self) -> str:
        st = self.state()
        if st == "banned":
            return self.guard.reason(time.monotonic())
        if st == "halted":
            return self._halted
        if st == "down":
            return self._down_reason
        return "backfilling after a reconnect" if st == "resyncing" else ""

    def halt(self, reason: str) -> None:
        """Stop order entry on this venue (reconciliation found what it cannot explain)."""
        self._halted = reason or "halted"

    def resume(self) -> None:
        self._halted = ""

    def request_reconcile(self) -> None:
        """Ask for a fresh REST view (a full backfill at the next housekeeping round)."""
        self._backfill_due = time.monotonic()

    def wait_synced(self, timeout_s: float) -> bool:
        return self.synced.wait(timeout_s)

    def reconcile_snapshot(self) -> ReconcileSnapshot:
        """The last REST view (open orders, recent trades, balances) the bridge took."""
        return self._snapshot

    # --- requests (engine side: check, record, enqueue) ------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        inst = self._by_id.get(order.instrument_id)
        why = self._refusal(order, inst)
        if why:
            return [OrderRejected.for_order(order, f"{self.name}: {why}", now_ns, now_ns)]
        assert inst is not None
        with self._lock:
            if self.table.get(order.client_order_id) is not None:
                self.stats["duplicate_submits"] += 1  # the venue has (or may have) it: never twice
                return []
            self.table.add(order, inst, now_ns)
        self.stats["submits"] += 1
        self._bridge.submit(self._submit(order.client_order_id))
        return []

    def _refusal(self, order: NewOrder, inst: Instrument | None) -> str:
        if inst is None:
            return f"unknown instrument {order.instrument_id}"
        if self._halted:
            return f"venue halted: {self._halted}"
        if not self._connected:
            return f"venue down: {self._down_reason}"
        if order.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return f"unsupported order type {order.order_type} (MARKET and LIMIT only)"
        if order.qty <= 0:
            return f"qty must be > 0, got {order.qty}"
        return self.guard.refusal(time.monotonic())

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            t = self.table.get(cancel.client_order_id)
            why = _closed_refusal(t)
        if why is not None:
            R = CancelRejectReason
            return [OrderCancelRejected.for_request(cancel, int(R(why)), _NOT[why], now_ns, now_ns)]
        self._bridge.submit(self._cancel(cancel))
        return []

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            t = self.table.get(replace.client_order_id)
            why = _closed_refusal(t)
        R = ReplaceRejectReason
        if why is None and (replace.new_qty <= 0 or replace.new_px <= 0):
            detail = f"new price and qty must be > 0 ({replace.new_px}, {replace.new_qty})"
            return [OrderReplaceRejected.for_request(replace, R.INVALID, detail, now_ns, now_ns)]
        if why is not None:
            return [
                OrderReplaceRejected.for_request(replace, int(R(why)), _NOT[why], now_ns, now_ns)
            ]
        refusal = self.guard.refusal(time.monotonic()) or self._halted
        if refusal:
            return [OrderReplaceRejected.for_request(replace, R.REFUSED, refusal, now_ns, now_ns)]
        self._bridge.submit(self._replace(replace))
        return []

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        return []  # the venue matches; its market data goes to the feed

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """What the venue said since the last poll, and a venue-state change if any."""
        out: list[VenueEvent] = []
        q = self._out
        while q:
            out.append(q.popleft())
        self._state_event(now_ns, out)
        return out

    def _state_event(self, now_ns: int, out: list[VenueEvent]) -> None:
        """Entering or leaving "banned" / "halted": an ExchangeStatus for the whole venue."""
        st, was = self.state(), self._reported
        self._reported = st
        stops = st in _STOPS
        if st == was or (not stops and was not in _STOPS):
            return
        kind = ExchangeStatusKind.HALTED if stops else ExchangeStatusKind.OPEN
        why = f"{self.name} {st}: {self.state_reason}" if stops else f"{self.name} {st}"
        out.append(ExchangeStatus(-1, int(kind), why, now_ns, now_ns))

    # --- queries (from the table and the last REST view) -----------------------------------------
    def open_orders(self) -> list[NewOrder]:
        with self._lock:
            return [
                msgspec.structs.replace(t.order, px=t.px, qty=t.leaves_lots())
                for t in self.table.open()
            ]

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        with self._lock:
            return self.table.fills_since(fill_id)

    def knows_order(self, client_order_id: int) -> bool:
        """True for every order we sent or found, UNKNOWN ones included (they may be there:
        whoever asks must not send them again)."""
        with self._lock:
            return self.table.get(client_order_id) is not None

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        with self._lock:
            return self.table.report(client_order_id)

    def order_status_reports(self) -> list[OrderStatusReport]:
        with self._lock:
            reps = [self.table.report(t.order.client_order_id) for t in self.table.open()]
        return [r for r in reps if r is not None]

    def positions(self) -> dict[int, int]:
        """Spot: the base asset held, in lots, per instrument (what a sell can sell)."""
        out: dict[int, int] = {}
        for inst in self._insts:
            base = inst.symbol.partition("/")[0]
            total = self._balances.get(base, {}).get("total")
            if total:
                out[inst.instrument_id] = inst.qty_to_lots(Decimal(str(total)))
        return out

    def fees_paid(self) -> dict[str, float]:
        """Every fee charged on our fills, per currency it was charged in."""
        out: dict[str, float] = {}
        with self._lock:
            for t in self.table.orders.values():
                for f in t.fees:
                    out[f.currency] = out.get(f.currency, 0.0) + float(f.cost)
        return out

    def balances(self) -> list[BalanceReport]:
        return [
            BalanceReport(venue=self.name, currency=c, total=b["total"], free=b["free"])
            for c, b in sorted(self._balances.items())
        ]

    # --- bridge side: start and housekeeping ------------------------------------------------------
    async def _run(self) -> None:
        """Start (retrying until it works or we close), then keep house."""
        delay = 0.5
        while not self._closing:
            try:
                await self._connect()
                break
            except Exception as e:  # noqa: BLE001 - any failure: down, say why, try again
                self._down_reason = f"start: {type(e).__name__}: {str(e)[:200]}"
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, self._backoff_max_s())
        loop = asyncio.get_running_loop()
        for method in ("watch_orders", "watch_my_trades"):
            if self._ex.has.get(HAS_WATCH[method]):
                self._tasks.append(loop.create_task(self._watch(method)))
        self._tasks.append(loop.create_task(self._housekeeping()))

    async def _connect(self) -> None:
        if self._ex is None:
            self._ex = make_exchange(self.exchange_id, self.settings, self._creds)
            self._install_hook()
            _ping_within(self._ex, float(self.settings.get("stale_after_s", 30.0)))
            serial = self.settings.get("serial_requests", self.exchange_id in _SERIAL)
            self._serial = asyncio.Lock() if serial else None
        await self._sync_clock()  # first: loading markets may sign requests already
        await self._request("load_markets")
        await self._initial_sync()
        self._next_rest_poll = time.monotonic() + float(self.settings.get("rest_poll_s", 5.0))
        self._connected = True
        self.synced.set()

    def _install_hook(self) -> None:
        """Every HTTP answer's status and headers reach the guard (429/418/used weight)."""
        ex, orig = self._ex, self._ex.on_rest_response

        def hook(code: Any, reason: Any, url: Any, method: Any, headers: Any, *rest: Any) -> Any:
            with contextlib.suppress(TypeError, ValueError):
                self.guard.on_response(int(code), headers, time.monotonic())
            return orig(code, reason, url, method, headers, *rest)

        ex.on_rest_response = hook

    async def _housekeeping(self) -> None:
        tick = float(self.settings.get("housekeeping_s", 0.2))
        while not self._closing:
            await asyncio.sleep(tick)
            try:
                await self._keep_house()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one failed round must not end the loop
                self._note_failure(e)

    async def _keep_house(self) -> None:
        now = time.monotonic()
        if self.guard.banned(now):
            return  # nothing is sent into a ban
        if self.guard.clock.due(now):
            await self._sync_clock()
        await self._resolve_unknown(now)
        await self._cancel_strays()
        with self._lock:
            has_open = bool(self.table.open())
        poll_s = float(self.settings.get("rest_poll_s", 5.0))
        if self._backfill_due and now >= self._backfill_due:
            await self._backfill(full=True)
        elif self._short_due and now >= self._short_due:
            self._short_due = 0.0
            if self._short():  # still: the trades did not come on the stream
                await self._backfill(full=False)
        elif has_open and now >= self._next_rest_poll:
            self._next_rest_poll = now + poll_s
            await self._backfill(full=False)
        every = float(self.settings.get("balance_refresh_s", 5.0))
        if self._balances_dirty and now >= self._next_balances:
            self._balances_dirty, self._next_balances = False, now + every
            await self._fetch_balances()

    async def _cancel_strays(self) -> None:
        """Cancel open orders of ours the table gave up on (``OrderTable.strays``)."""
        with self._lock:
            strays, self.table.strays = self.table.strays, {}
        for vid, symbol in strays.items():
            self.stats["strays_canceled"] += 1
            with contextlib.suppress(OrderNotFound):
                await self._request("cancel_order", vid, symbol)

    def _backoff_max_s(self) -> float:
        s = self.settings
        return float(s.get("backoff_max_s") or s.get("reconnect_max_s") or 30.0)

    def _note_failure(self, e: BaseException) -> None:
        limited = isinstance(e, (DDoSProtection, RateLimitExceeded))  # the guard's business
        if isinstance(e, (NetworkError, BadResponse)) and not limited:
            self._connected = False
            self._down_reason = f"{type(e).__name__}: {str(e)[:200]}"
            self._backfill_due = time.monotonic() + 0.5

    # --- bridge side: the guarded request ---------------------------------------------------------
    async def _request(self, method: str, *args: Any, order_entry: bool = False, **kw: Any) -> Any:
        """One ccxt call through the guard: waits for the budget and any 429 block, never sends
        into a ban (an order entry is refused instead), and on a clock error (``_clock_error``)
        re-measures the clock and retries once. One at a time where the venue's nonces must arrive in order
        (Kraken: a later nonce overtaking an earlier one is refused)."""
        for attempt in (0, 1):
            await self._admit(method, order_entry)
            try:
                async with self._serial or contextlib.nullcontext():
                    res = await getattr(self._ex, method)(*args, **kw)
            except (DDoSProtection, RateLimitExceeded) as e:
                self.guard.on_limit_error(str(e), time.monotonic())
                raise
            except (InvalidNonce, AuthenticationError) as e:
                if not _clock_error(e) or attempt or method == "fetch_time":
                    raise
                self.stats["nonce_retries"] += 1
                await self._sync_clock()
                continue
            if not self._connected and self.synced.is_set():
                self._connected, self._down_reason = True, ""
            return res
        raise AssertionError("unreachable")

    async def _admit(self, method: str, order_entry: bool) -> None:
        while True:
            now = time.monotonic()
            if order_entry and self.guard.banned(now):
                raise Banned(self.guard.refusal(now))
            wait = self.guard.wait_s(method, now)
            if wait <= 0:
                self.guard.spend(method, now)
                return
            await asyncio.sleep(min(wait, 0.5))

    async def _sync_clock(self) -> None:
        if not self._ex.has.get("fetchTime"):
            self.guard.clock.measured_at = time.monotonic()
            return
        sent = self._ex.milliseconds()
        try:
            server = await self._request("fetch_time")
        except NotSupported:
            self.guard.clock.measured_at = time.monotonic()
            return
        off = self.guard.clock.update(int(server), sent, self._ex.milliseconds(), time.monotonic())
        self._ex.options["timeDifference"] = -off  # ccxt signs with local ms - timeDifference
        if self.exchange_id in _JWT_CLOCK:  # its tokens are stamped with ccxt's seconds()
            self._ex.seconds = lambda off=off: int((time.time() * 1000 + off) // 1000)
        self.stats["clock_syncs"] += 1

    # --- bridge side: orders ----------------------------------------------------------------------
    def _emit(self, evs: list[object]) -> None:
        if evs:
            self._out.extend(evs)
            if any(isinstance(e, OrderPartiallyFilled) for e in evs):
                self._balances_dirty = True

    async def _submit(self, coid: int) -> None:
        busy = self._busy[coid] = asyncio.Event()
        try:
            await self._send_new(coid)
        finally:
            busy.set()
            self._busy.pop(coid, None)

    async def _send_new(self, coid: int) -> None:
        with self._lock:
            t = self.table.get(coid)
            if t is None or t.phase != Phase.PENDING:
                return
            args, params = self._create_args(t)
        try:
            o = await self._request("create_order", *args, params, order_entry=True)
        except Exception as e:  # noqa: BLE001 - every failure is sorted: refused or UNKNOWN
            self._submit_failed(coid, e)
            return
        self._apply_order({**o, "clientOrderId": o.get("clientOrderId") or t.cid})

    def _create_args(self, t: Tracked) -> tuple[tuple[Any, ...], dict[str, Any]]:
        o = t.order
        kind = "market" if o.order_type == OrderType.MARKET else "limit"
        px = float(t.inst.ticks_to_px(t.px)) if kind == "limit" else None
        params: dict[str, Any] = {_CID_PARAM.get(self.exchange_id, "clientOrderId"): t.cid}
        if o.tif in _TIF:
            params["timeInForce"] = _TIF[TimeInForce(o.tif)]
        if o.flags & OrderFlag.POST_ONLY:
            params["postOnly"] = True
        side = "buy" if o.side == Side.BUY else "sell"
        if kind == "market" and side == "buy" and self.exchange_id == "coinbase":
            # ccxt spends a quote amount on a Coinbase market buy; ours is a base amount
            size = self._ex.amount_to_precision(t.inst.symbol, float(t.amount))
            params["order_configuration"] = {"market_market_ioc": {"base_size": size}}
            params["cost"] = 1  # skips ccxt's quote-size path; order_configuration wins
        return (t.inst.symbol, kind, side, float(t.amount), px), params

    def _submit_failed(self, coid: int, e: BaseException) -> None:
        """A refusal rejects; anything that may have reached the venue makes it UNKNOWN."""
        now_ns = self._clock()
        refused = isinstance(e, (Banned, DDoSProtection, RateLimitExceeded, InvalidNonce)) or (
            isinstance(e, ExchangeError) and not isinstance(e, DuplicateOrderId)
        )
        with self._lock:
            if refused:
                evs = self.table.reject(coid, f"{self.name}: {_why(e)}", now_ns)
            else:
                t = self.table.get(coid)
                if t is not None and t.phase == Phase.PENDING:
                    self.table.mark_unknown(coid)
                    self.stats["unknown"] += 1
                evs = []
        self._emit(evs)

    def _apply_order(self, o: Mapping[str, Any], origin: int = 0) -> None:
        now_ns = self._clock()
        with self._lock:
            evs = self.table.on_order(o, now_ns)
            for tr in o.get("trades") or []:  # fills in the answer (Binance FULL) ...
                if tr.get("timestamp"):  # ... only with the trade's own time: its fill id
                    evs += self.table.on_trade(
                        {**tr, "order": tr.get("order") or o.get("id")}, now_ns
                    )
        if origin:
            evs = [_with_origin(e, origin) for e in evs]
        self._emit(evs)
        self._soon_if_short()

    def _short(self) -> bool:
        """Whether the venue reports fills for an order that no trade we have accounts for."""
        with self._lock:
            return any(t.missing() > 0 for t in self.table.open())

    def _soon_if_short(self) -> None:
        """Fills we have not seen: fetch the trades soon — at once where the venue streams no
        trades (Coinbase), else after ``trade_grace_s`` (the trade usually follows its order
        update on the stream, and a REST look costs weight)."""
        if self._short_due or not self._short():
            return
        streams = self._ex is not None and self._ex.has.get("watchMyTrades")
        grace = float(self.settings.get("trade_grace_s", 1.0)) if streams else 0.0
        self._short_due = time.monotonic() + grace

    async def _settle(self, coid: int) -> Tracked | None:
        """Wait for the order's submit to be answered; resolve it once if UNKNOWN."""
        busy = self._busy.get(coid)
        if busy is not None:
            await busy.wait()
        with self._lock:
            t = self.table.get(coid)
        if t is not None and t.phase == Phase.UNKNOWN:
            await self._query(t)
        return t

    async def _cancel(self, c: CancelOrder) -> None:
        t = await self._settle(c.client_order_id)
        now = self._clock
        R = CancelRejectReason
        if t is None or t.phase != Phase.OPEN:
            why = R.NOT_OPEN if t is not None and t.phase == Phase.CLOSED else R.REFUSED
            detail = "order is no longer open" if why == R.NOT_OPEN else "order state unknown"
            self._emit([OrderCancelRejected.for_request(c, int(why), detail, now(), now())])
            return
        try:
            o = await self._request("cancel_order", t.venue_id, t.inst.symbol)
        except OrderNotFound as e:
            await self._query(t)
            with self._lock:
                closed = t.phase == Phase.CLOSED
            why = R.NOT_OPEN if closed else R.REFUSED
            self._emit([OrderCancelRejected.for_request(c, int(why), _why(e), now(), now())])
            return
        except Exception as e:  # noqa: BLE001 - refused, or unknown: the order stands as it was
            self._emit([OrderCancelRejected.for_request(c, int(R.REFUSED), _why(e), now(), now())])
            if isinstance(e, NetworkError):
                self._backfill_due = time.monotonic() + 0.2
            return
        if o.get("status") is None or o.get("filled") is None:
            await self._query(t)  # a cancel answered without the order's state (Coinbase)
            return
        self._apply_order({**o, "clientOrderId": o.get("clientOrderId") or t.cid}, c.ts_origin)

    async def _replace(self, r: ReplaceOrder) -> None:
        t = await self._settle(r.client_order_id)
        R = ReplaceRejectReason
        if t is None or t.phase != Phase.OPEN:
            why = R.NOT_OPEN if t is not None and t.phase == Phase.CLOSED else R.REFUSED
            detail = "order is no longer open" if why == R.NOT_OPEN else "order state unknown"
            self._emit([OrderReplaceRejected.for_request(r, int(why), detail, *self._ts())])
            return
        new_open = Decimal(r.new_qty) * Decimal(str(t.inst.lot_size))
        mode = self.settings.get("replace_mode") or _REPLACE_MODE.get(
            self.exchange_id, "cancel_new"
        )
        try:
            if mode == "amend":
                await self._amend(t, new_open, r.new_px)
            elif mode == "edit_new":
                await self._edit_new(t, new_open, r.new_px)
            else:
                await self._cancel_new(t, new_open, r.new_px)
        except Exception as e:  # noqa: BLE001 - the venue kept the old terms
            self._emit([OrderReplaceRejected.for_request(r, int(R.REFUSED), _why(e), *self._ts())])
            return
        ts, now_ns = self._ts()
        o = t.order
        self._emit(
            [
                OrderReplaced(
                    o.client_order_id, o.instrument_id, r.new_px, r.new_qty, r.ts_origin, ts, now_ns
                )
            ]
        )

    async def _amend(self, t: Tracked, new_open: Decimal, px: int) -> None:
        """Amend in place: the venue order's size is its filled part plus the new open part."""
        cur = t.venue_filled.get(t.venue_id, Decimal(0))
        args = (t.venue_id, t.inst.symbol, "limit", _side(t), float(cur + new_open))
        await self._request("edit_order", *args, float(t.inst.ticks_to_px(px)))
        with self._lock:
            self.table.amended(t.order.client_order_id, new_open, px)

    async def _edit_new(self, t: Tracked, new_open: Decimal, px: int) -> None:
        """ccxt's edit as the venue's atomic cancel + new (Binance cancelReplace): a new venue
        order, the next generation of ours."""
        coid, old_vid = t.order.client_order_id, t.venue_id
        with self._lock:
            before = self.table.new_generation(coid, new_open, px)
            cid = t.cid
        params = {_CID_PARAM.get(self.exchange_id, "clientOrderId"): cid}
        args = (old_vid, t.inst.symbol, "limit", _side(t), float(new_open))
        try:
            o = await self._request("edit_order", *args, float(t.inst.ticks_to_px(px)), params)
        except Exception:
            with self._lock:
                self.table.undo_generation(coid, before)
            self._backfill_due = time.monotonic() + 0.2  # a lost answer: see what the venue did
            raise
        self._apply_order({**o, "clientOrderId": o.get("clientOrderId") or cid})

    async def _cancel_new(self, t: Tracked, new_open: Decimal, px: int) -> None:
        """Two requests where the venue has no edit: cancel, then the next generation."""
        await self._request("cancel_order", t.venue_id, t.inst.symbol)
        with self._lock:
            self.table.new_generation(t.order.client_order_id, new_open, px)
            args, params = self._create_args(t)
        o = await self._request("create_order", *args, params, order_entry=True)
        self._apply_order({**o, "clientOrderId": o.get("clientOrderId") or t.cid})

    def _ts(self) -> tuple[int, int]:
        now_ns = self._clock()
        return now_ns, now_ns


_STOPS = ("banned", "halted")
_NOT = {1: "unknown client_order_id", 2: "order is no longer open"}


def _closed_refusal(t: Tracked | None) -> int | None:
    """UNKNOWN_ORDER (1) / NOT_OPEN (2) when a cancel or replace cannot apply; None if it can."""
    if t is None:
        return 1
    return 2 if t.phase == Phase.CLOSED else None


def _ping_within(ex: Any, stale_after_s: float) -> None:
    """A user stream is quiet while nothing trades, so only pongs tell a live one from a stalled
    one: ccxt pings every third of ``stale_after_s`` and fails the connection after two missed
    pongs (its own keepAlive is minutes on some venues: Binance's 180 s)."""
    if stale_after_s > 0:
        ping_ms = max(50, int(stale_after_s * 1000 / 3))
        current = int(ex.streaming.get("keepAlive") or ping_ms)
        ex.streaming = {**ex.streaming, "keepAlive": min(current, ping_ms)}


def _clock_error(e: BaseException) -> bool:
    """A request refused for its time, not done: Binance -1021 / Kraken's nonce (ccxt's
    InvalidNonce), or Coinbase's JWT outside its window (an AuthenticationError saying "request
    timestamp expired": ccxt matches the error id before the message)."""
    return isinstance(e, InvalidNonce) or "timestamp expired" in str(e).lower()


def _side(t: Tracked) -> str:
    return "buy" if t.order.side == Side.BUY else "sell"


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:300]}"


def _with_origin(ev: object, origin: int) -> object:
    """Events a cancel caused carry the cancel's ``ts_origin``."""
    if hasattr(ev, "ts_origin") and not isinstance(ev, OrderPartiallyFilled):
        return msgspec.structs.replace(ev, ts_origin=origin)  # type: ignore[type-var]
    return ev
