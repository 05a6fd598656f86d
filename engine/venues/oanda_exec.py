"""OANDA v20 execution: orders over REST, the account's transaction stream, reconciliation.

Why it is shaped this way: exec's loop never waits on a network, so the engine-side methods
check, record and enqueue; the requests and the transaction stream run on the client's
``AsyncBridge`` thread; every answer, stream line and ``sinceid`` page goes through one
``V20Orders`` log reader (``engine.venues.oanda_orders``) that applies each transaction once,
in id order, and ``poll`` hands out what it made. A dropped or silent stream (no heartbeat for
``stale_after_s``) is reopened with backoff and the log is read from the last id we applied,
so nothing that happened meanwhile is lost; a heartbeat's ``lastTransactionID`` ahead of ours
fetches the difference at once.

- a submit whose answer is lost is settled by the log (its create or fill names our client
  id), else by ``GET /orders/@<client id>`` (404: rejected, never sent twice);
- a replace is v20's ``PUT /orders/{id}`` (cancel + new under the same client id);
- brackets are native (``submit_list``): the entry carries ``takeProfitOnFill`` /
  ``stopLossOnFill`` under the children's client ids; OANDA opens them on the fill and cancels
  the other when one closes the trade (``LINKED_TRADE_CLOSED``);
- ``DAILY_FINANCING`` becomes ``Financing`` events (account currency), the account's money;
- ``reconcile_snapshot()`` is reconciliation's view (``engine.venues.live_view.LiveView``): our
  open orders, every fill, and the net position per base currency as a pseudo-balance, so
  ``engine.venues.reconciled`` halts the venue when a position moves behind our back.
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

import aiohttp
import msgspec

from engine.enums import ContingencyType
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    CancelRejectReason,
    NewOrder,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaceRejected,
    OrderType,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
)
from engine.venues.base import VenueEvent
from engine.venues.ccxt_orders import order_prefix
from engine.venues.ccxt_session import AsyncBridge
from engine.venues.live_view import EXTERNAL_BASE, LiveView, external_id
from engine.venues.oanda_data import v20_client
from engine.venues.oanda_http import StreamClosed, StreamStalled, V20Client, V20Error
from engine.venues.oanda_orders import V20Orders
from engine.venues.oanda_wire import client_id, coid_of, order_body, refusal
from engine.venues.reports import BalanceReport, OrderStatusReport, StatusReports

__all__ = ["OandaExecutionClient"]

_OTO, _OCO = int(ContingencyType.OTO), int(ContingencyType.OCO)


class OandaExecutionClient(StatusReports):
    """``engine.venues.base.ExecutionClient`` for one v20 account (see the module docstring).
    Settings: ``rest_url``, ``stream_url``, ``account_id``, ``timeout_ms``, ``engine_id`` /
    ``order_prefix``, ``stale_after_s``, ``reconnect_min_s`` / ``reconnect_max_s``,
    ``start_timeout_s``, ``rest_poll_s`` (how often reconciliation's view is refreshed while
    orders are open)."""

    live = True

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        settings: Mapping[str, Any] | None = None,
        credentials: Any = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        start: bool = True,
    ) -> None:
        s = dict(settings or {})
        self.name, self.settings, self._creds, self._clock = name, s, credentials, clock
        self._insts = [i for i in instruments if i.venue == name] or list(instruments)
        self._by_id = {i.instrument_id: i for i in self._insts}
        self.prefix = str(s.get("order_prefix") or order_prefix(str(s.get("engine_id") or name)))
        self.log = V20Orders(name, self.prefix, self._insts)
        self._lock = threading.Lock()
        self._out: deque[object] = deque()
        self._bridge = AsyncBridge(f"exec-{name}")
        self._v20: V20Client | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._busy: dict[int, asyncio.Event] = {}
        self._read_lock: asyncio.Lock | None = None
        self._closing = False
        self._connected = False
        self._halted = ""
        self._down_reason = "not started"
        self._snapshot: LiveView | None = None
        self._generation = 0
        self._refresh_due = 0.0
        self._children: dict[int, list[int]] = {}  # a native bracket's entry -> its children
        self._rng = random.Random(s.get("seed", 0))
        self.synced = threading.Event()
        self.stats: dict[str, int] = dict.fromkeys(
            ("submits", "reconnects", "backfills", "unknown", "duplicate_submits"), 0
        )
        if start:
            self.start(float(s.get("start_timeout_s", 30.0)))

    # --- life cycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> bool:
        self._bridge.start()
        self._bridge.submit(self._run())
        return self.synced.wait(timeout_s)

    def close(self) -> None:
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
        if self._v20 is not None:
            await self._v20.close()

    # --- state -------------------------------------------------------------------------------------
    def state(self) -> str:
        if self._halted:
            return "halted"
        return "connected" if self._connected else "down"

    @property
    def state_reason(self) -> str:
        return self._halted or ("" if self._connected else self._down_reason)

    def halt(self, reason: str) -> None:
        self._halted = reason or "halted"

    def resume(self) -> None:
        self._halted = ""

    def request_reconcile(self) -> None:
        self._refresh_due = time.monotonic()

    def wait_synced(self, timeout_s: float) -> bool:
        return self.synced.wait(timeout_s)

    def reconcile_snapshot(self) -> LiveView | None:
        return self._snapshot

    # --- requests (engine side) --------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        inst = self._by_id.get(order.instrument_id)
        why = self._refusal(order, inst)
        if why:
            return [OrderRejected.for_order(order, f"{self.name}: {why}", now_ns, now_ns)]
        assert inst is not None
        with self._lock:
            if self.log.get(order.client_order_id) is not None:
                self.stats["duplicate_submits"] += 1
                return [
                    OrderRejected.for_order(
                        order, f"{self.name}: client order id in use", now_ns, now_ns
                    )
                ]
            self.log.add(order, inst)
        self.stats["submits"] += 1
        self._bridge.submit(
            self._send(order.client_order_id, order_body(inst, order, self._cid(order)))
        )
        return []

    def _cid(self, o: NewOrder) -> str:
        return client_id(self.prefix, o.client_order_id)

    def _refusal(self, order: NewOrder, inst: Instrument | None) -> str:
        if inst is None:
            return f"unknown instrument {order.instrument_id}"
        if self._halted:
            return f"venue halted: {self._halted}"
        if not self._connected:
            return f"venue down: {self._down_reason}"
        return refusal(order)

    def supports_contingency(self, kind: int) -> bool:
        """OTO lists of a bracket's shape go to OANDA whole (``accepts_list`` says which)."""
        return int(kind) == _OTO

    def accepts_list(self, orders: list[NewOrder]) -> str:
        """Why OANDA cannot take ``orders`` as one native list ("" if it can): an entry and at
        most one take-profit (LIMIT / MARKET_IF_TOUCHED) and one stop-loss (STOP) child on the
        other side, each the entry's size."""
        entries = [o for o in orders if not o.parent_id]
        if len(entries) != 1:
            return "a native list has one entry"
        e = entries[0]
        kids = [o for o in orders if o.parent_id]
        tps = [o for o in kids if o.order_type in (OrderType.LIMIT, OrderType.MARKET_IF_TOUCHED)]
        sls = [o for o in kids if o.order_type == OrderType.STOP]
        if len(tps) > 1 or len(sls) > 1 or len(tps) + len(sls) != len(kids) or not kids:
            return "OANDA's native lists are brackets: one take-profit and/or one stop-loss"
        for k in kids:
            if k.parent_id != e.client_order_id or k.side == e.side or k.qty != e.qty:
                return "a bracket's child closes the entry: the other side, the entry's size"
        return refusal(e)

    def submit_list(self, orders: list[NewOrder], now_ns: int) -> list[VenueEvent]:
        """A bracket as one v20 order (see ``accepts_list``); every leg is refused together
        when it cannot be."""
        entry = next((o for o in orders if not o.parent_id), orders[0])
        inst = self._by_id.get(entry.instrument_id)
        why = self.accepts_list(orders) or self._refusal(entry, inst)
        if not why and any(self.log.get(o.client_order_id) for o in orders):
            why = "client order id in use"
        if why:
            return [
                OrderRejected.for_order(o, f"{self.name}: {why}", now_ns, now_ns) for o in orders
            ]
        assert inst is not None
        kids = [o for o in orders if o.parent_id]
        tp = next((o for o in kids if o.order_type != OrderType.STOP), None)
        sl = next((o for o in kids if o.order_type == OrderType.STOP), None)
        with self._lock:
            for o in orders:
                self.log.add(o, inst)
            self._children[entry.client_order_id] = [o.client_order_id for o in kids]
        body = order_body(
            inst,
            entry,
            self._cid(entry),
            take_profit=(tp.px, self._cid(tp)) if tp else None,
            stop_loss=(sl.stop_px or sl.px, self._cid(sl)) if sl else None,
        )
        self.stats["submits"] += 1
        self._bridge.submit(self._send(entry.client_order_id, body))
        return []

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            t = self.log.get(cancel.client_order_id)
            is_open = t is not None and t.open
        if not is_open:
            why = CancelRejectReason.UNKNOWN_ORDER if t is None else CancelRejectReason.NOT_OPEN
            detail = "unknown client_order_id" if t is None else "order is no longer open"
            return [OrderCancelRejected.for_request(cancel, int(why), detail, now_ns, now_ns)]
        self._bridge.submit(self._cancel(cancel))
        return []

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        R = ReplaceRejectReason
        with self._lock:
            t = self.log.get(replace.client_order_id)
            why, detail = 0, ""
            if t is None:
                why, detail = R.UNKNOWN_ORDER, "unknown client_order_id"
            elif not t.open:
                why, detail = R.NOT_OPEN, "order is no longer open"
            elif replace.new_qty <= 0 or replace.new_px <= 0:
                why, detail = R.INVALID, "new price and qty must be > 0"
            elif t.order.parent_id and replace.client_order_id in _flat(self._children):
                why, detail = R.INVALID, "a bracket's child follows its trade at OANDA"
            elif t.order.order_type == OrderType.MARKET:
                why, detail = R.INVALID, "a market order cannot be replaced"
            body = None
            if not why and t is not None:
                o = msgspec.structs.replace(t.order, px=replace.new_px, qty=replace.new_qty)
                if o.order_type == OrderType.STOP and not o.stop_px:
                    o = msgspec.structs.replace(o, stop_px=replace.new_px)
                body = order_body(t.inst, o, self._cid(o))
        if why or body is None:
            return [
                OrderReplaceRejected.for_request(
                    replace, int(why or R.REFUSED), detail, now_ns, now_ns
                )
            ]
        self._bridge.submit(self._replace(replace, body))
        return []

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        return []  # OANDA fills our orders itself

    def poll(self, now_ns: int) -> list[VenueEvent]:
        out: list[VenueEvent] = []
        q = self._out
        while q:
            out.append(q.popleft())
        return out

    # --- queries -----------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        with self._lock:
            return [
                msgspec.structs.replace(t.order, px=t.px, qty=t.leaves) for t in self.log.open()
            ]

    def positions(self) -> dict[int, int]:
        with self._lock:
            return {k: v for k, v in self.log.positions.items() if v}

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        with self._lock:
            return [f for f in self.log.fills if f.fill_id > fill_id]

    def knows_order(self, client_order_id: int) -> bool:
        with self._lock:
            return self.log.get(client_order_id) is not None

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        with self._lock:
            return self.log.report(client_order_id)

    def order_status_reports(self) -> list[OrderStatusReport]:
        with self._lock:
            reps = [self.log.report(t.order.client_order_id) for t in self.log.open()]
        return [r for r in reps if r is not None]

    def balances(self) -> list[BalanceReport]:
        """The account's cash in its currency (v20's ``balance``: realized P&L and financing
        included)."""
        b = self.log.balance
        return [BalanceReport(venue=self.name, currency=self.log.currency, total=b, free=b)]

    def financing(self) -> list[Any]:
        """Every ``Financing`` the log has paid or charged since start."""
        with self._lock:
            return list(self.log.financing)

    # --- bridge side -------------------------------------------------------------------------------
    def _emit(self, evs: list[Any]) -> None:
        if evs:
            self._out.extend(evs)

    async def _run(self) -> None:
        self._read_lock = asyncio.Lock()
        delay = float(self.settings.get("reconnect_min_s", 0.5))
        while not self._closing:
            try:
                await self._connect()
                break
            except Exception as e:  # noqa: BLE001 - down: say why, try again
                self._down_reason = f"start: {type(e).__name__}: {str(e)[:200]}"
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, float(self.settings.get("reconnect_max_s", 30.0)))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._stream_loop()))
        self._tasks.append(loop.create_task(self._housekeeping()))

    async def _connect(self) -> None:
        if self._v20 is None:
            self._v20 = v20_client(self.settings, self._creds)
        acct = await self._v20.summary()
        last = int(acct.get("lastTransactionID") or 0)
        # the log read back (``restart_lookback_tx``): our orders and fills from before a
        # restart are known again, by client id, for exec's reconciliation (nothing emitted)
        back = max(0, last - int(self.settings.get("restart_lookback_tx", 1000)))
        old = await self._v20.transactions_since(back) if back < last else {}
        positions = await self._v20.open_positions()
        with self._lock:
            self.log.currency = str(acct.get("currency") or "USD")
            self.log.last_id, self.log.adopting = back, True
            self.log.ingest(old.get("transactions") or [], self._clock())
            self.log.adopting = False
            self.log.balance = float(acct.get("balance") or 0.0)
            self.log.last_id = max(self.log.last_id, last)
            self.log.positions.clear()
            for p in positions:
                ins = self.log.by_name.get(str(p.get("instrument")))
                if ins is not None:
                    units = Decimal(str(p["long"]["units"])) + Decimal(str(p["short"]["units"]))
                    self.log.positions[ins.instrument_id] = ins.qty_to_lots(units)
        await self._refresh()
        self._connected, self._down_reason = True, ""
        self.synced.set()

    async def _request(self, coro: Any) -> Any:
        """One REST call; a network failure marks the venue down until the stream is back."""
        try:
            return await coro
        except (aiohttp.ClientError, TimeoutError) as e:
            self._connected = False
            self._down_reason = f"{type(e).__name__}: {str(e)[:200]}"
            raise

    async def _read(self, txs: list[Any]) -> None:
        """Hand transactions to the log; a hole is filled from ``sinceid`` first."""
        now = self._clock()
        with self._lock:
            evs, hole = self.log.ingest(txs, now)
            evs = self._end_children(evs, now)
        self._emit(evs)
        if hole:
            await self._backfill()

    async def _backfill(self) -> None:
        assert self._v20 is not None and self._read_lock is not None
        async with self._read_lock:
            self.stats["backfills"] += 1
            got = await self._request(self._v20.transactions_since(self.log.last_id))
            now = self._clock()
            with self._lock:
                evs, _ = self.log.ingest(got.get("transactions") or [], now)
                evs = self._end_children(evs, now)
            self._emit(evs)

    def _end_children(self, evs: list[Any], now: int) -> list[Any]:
        """A native bracket's entry that ended with nothing filled takes its children along
        (they never existed at OANDA): a child never outlives its cancelled parent."""
        out = list(evs)
        for ev in evs:
            kids = self._children.get(getattr(ev, "client_order_id", -1))
            if not kids or type(ev).__name__ not in (
                "OrderCanceled",
                "OrderExpired",
                "OrderRejected",
            ):
                continue
            parent = self.log.get(ev.client_order_id)  # type: ignore[attr-defined]
            if parent is None or parent.filled:
                continue
            for k in kids:
                out += self.log.reject(k, f"{self.name}: its entry ended unfilled", now)
        return out

    async def _send(self, coid: int, body: dict[str, Any]) -> None:
        busy = self._busy[coid] = asyncio.Event()
        assert self._v20 is not None
        try:
            got = await self._request(self._v20.create_order(body))
        except V20Error as e:
            await self._refused(coid, e)
        except Exception:  # noqa: BLE001 - it may have reached OANDA: the log or a query says
            self.stats["unknown"] += 1
            await self._settle_unknown(coid)
        else:
            await self._read([v for v in got.values() if isinstance(v, dict) and "id" in v])
        finally:
            busy.set()
            self._busy.pop(coid, None)

    async def _refused(self, coid: int, e: V20Error) -> None:
        now = self._clock()
        reason = f"{self.name}: {e.code or e.status}: {e.body.get('errorMessage', '')}".rstrip(": ")
        with self._lock:
            evs = self.log.reject(coid, reason, now)
            for k in self._children.get(coid, []):
                evs += self.log.reject(k, reason, now)
        self._emit(evs)
        txs = [v for v in e.body.values() if isinstance(v, dict) and "id" in v]
        if txs:
            await self._read(txs)  # the reject transaction moves the log on

    async def _settle_unknown(self, coid: int) -> None:
        """A submit with no answer: the log first, then the order by our client id (404:
        it never reached OANDA, so it is rejected; never sent again)."""
        assert self._v20 is not None
        cid = client_id(self.prefix, coid)
        for _ in range(20):
            try:
                await self._backfill()
                with self._lock:
                    t = self.log.get(coid)
                    if t is None or t.accepted or not t.open:
                        return
                await self._v20.order("@" + cid)
            except V20Error as e:
                if e.status == 404:
                    await self._refused(coid, e)
                    return
            except Exception:  # noqa: BLE001,S110 - OANDA unreachable: ask again
                pass
            else:
                await self._backfill()  # it is there: the log has its create
                return
            await asyncio.sleep(0.5)

    async def _cancel(self, c: CancelOrder) -> None:
        busy = self._busy.get(c.client_order_id)
        if busy is not None:
            await busy.wait()
        assert self._v20 is not None
        spec = "@" + client_id(self.prefix, c.client_order_id)
        now = self._clock
        try:
            got = await self._request(self._v20.cancel_order(spec))
        except Exception as e:  # noqa: BLE001 - the order stands as it was
            with contextlib.suppress(Exception):
                await self._backfill()  # its fill or end may be what made the cancel fail
            with self._lock:
                t = self.log.get(c.client_order_id)
                gone = t is not None and not t.open
            R = CancelRejectReason
            why = R.NOT_OPEN if gone else R.REFUSED
            self._emit([OrderCancelRejected.for_request(c, int(why), str(e)[:300], now(), now())])
            return
        await self._read([v for v in got.values() if isinstance(v, dict) and "id" in v])

    async def _replace(self, r: ReplaceOrder, body: dict[str, Any]) -> None:
        busy = self._busy.get(r.client_order_id)
        if busy is not None:
            await busy.wait()
        assert self._v20 is not None
        spec = "@" + client_id(self.prefix, r.client_order_id)
        try:
            got = await self._request(self._v20.replace_order(spec, body))
        except Exception as e:  # noqa: BLE001 - OANDA kept the old order
            with contextlib.suppress(Exception):
                await self._backfill()
            now = self._clock()
            R = ReplaceRejectReason
            self._emit(
                [OrderReplaceRejected.for_request(r, int(R.REFUSED), str(e)[:300], now, now)]
            )
            return
        await self._read([v for v in got.values() if isinstance(v, dict) and "id" in v])

    # --- the transaction stream and reconciliation's view -------------------------------------------
    async def _stream_loop(self) -> None:
        attempt = 0
        lo = float(self.settings.get("reconnect_min_s", 0.5))
        hi = float(self.settings.get("reconnect_max_s", 30.0))
        stale = float(self.settings.get("stale_after_s", 10.0))
        while not self._closing:
            began = time.monotonic()
            try:
                await self._stream_once(stale)
                reason = "the transaction stream ended"
            except asyncio.CancelledError:
                raise
            except (StreamStalled, StreamClosed, V20Error, aiohttp.ClientError, TimeoutError) as e:
                reason = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - any failure: reconnect
                reason = f"{type(e).__name__}: {e}"
            if self._closing:
                return
            self._connected, self._down_reason = False, reason
            self.stats["reconnects"] += 1
            if time.monotonic() - began >= hi:
                attempt = 0
            wait = min(hi, lo * 2 ** min(attempt, 32)) * (0.5 + 0.5 * self._rng.random())
            attempt += 1
            await asyncio.sleep(wait)

    async def _stream_once(self, stale: float) -> None:
        assert self._v20 is not None
        opened = False
        async for obj in self._v20.stream("/transactions/stream", None, stale):
            if not opened:  # the stream is open: what happened while it was not comes first
                opened = True
                await self._backfill()
                await self._refresh()
                self._connected, self._down_reason = True, ""
            if obj.get("type") == "HEARTBEAT":
                if int(obj.get("lastTransactionID") or 0) > self.log.last_id:
                    await self._backfill()
                continue
            await self._read([obj])

    async def _housekeeping(self) -> None:
        every = float(self.settings.get("rest_poll_s", 5.0))
        while not self._closing:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if not self._connected:
                continue
            with self._lock:
                busy = bool(self.log.open())
            due = self._refresh_due and now >= self._refresh_due
            if due or (busy and now - self._last_refresh >= every):
                self._refresh_due = 0.0
                with contextlib.suppress(Exception):
                    await self._backfill()
                    await self._refresh()

    _last_refresh = 0.0

    async def _refresh(self) -> None:
        """Reconciliation's view: pending orders and positions as OANDA has them now."""
        assert self._v20 is not None
        ts = self._clock()
        pending = await self._request(self._v20.pending_orders())
        positions = await self._request(self._v20.open_positions())
        self._last_refresh = time.monotonic()
        opens: list[NewOrder] = []
        raw_external: dict[int, dict[str, Any]] = {}
        with self._lock:
            for o in pending.get("orders") or []:
                coid = coid_of(self.prefix, (o.get("clientExtensions") or {}).get("id"))
                t = self.log.get(coid) if coid is not None else None
                if t is not None:
                    opens.append(msgspec.structs.replace(t.order, px=t.px, qty=t.leaves or t.qty))
                    continue
                ext = self._external(o, ts)
                if ext is not None:
                    opens.append(ext)
                    raw_external[ext.client_order_id] = dict(o)
            fills = list(self.log.fills)
        held: dict[str, float] = {}
        for p in positions:
            ins = self.log.by_name.get(str(p.get("instrument")))
            if ins is None:
                continue
            units = float(Decimal(str(p["long"]["units"])) + Decimal(str(p["short"]["units"])))
            base = ins.symbol.partition("/")[0].upper()
            held[base] = held.get(base, 0.0) + units
        for ins in self._insts:  # a flat position is a zero balance, not a missing one
            held.setdefault(ins.symbol.partition("/")[0].upper(), 0.0)
        bal = [
            BalanceReport(venue=self.name, currency=c, total=v, free=v)
            for c, v in sorted(held.items())
        ]
        self._generation += 1
        self._snapshot = LiveView(self._generation, ts, opens, fills, bal, raw_external)

    def _external(self, o: Mapping[str, Any], now_ns: int) -> NewOrder | None:
        """An order at OANDA that is not ours, as reconciliation judges it (a trade's own TP /
        SL of a trade not ours included)."""
        ins = self.log.by_name.get(str(o.get("instrument") or ""))
        if ins is None or not o.get("units"):
            return None
        units = Decimal(str(o["units"]))
        px = ins.px_to_ticks(str(o["price"])) if o.get("price") else 0
        return NewOrder(
            client_order_id=external_id(o.get("id")),
            strategy_id=EXTERNAL_BASE >> 32,
            instrument_id=ins.instrument_id,
            side=int(Side.BUY if units > 0 else Side.SELL),
            order_type=int(OrderType.LIMIT if px else OrderType.MARKET),
            tif=1,
            px=px,
            qty=ins.qty_to_lots(abs(units)),
            ts_origin=now_ns,
            ts_approved=now_ns,
        )


def _flat(d: Mapping[int, list[int]]) -> set[int]:
    return {k for ks in d.values() for k in ks}
