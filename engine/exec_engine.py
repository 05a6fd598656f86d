"""The execution engine: approved orders in, venue calls out, execution events back.

``ExecEngine`` is the exec process's state machine (DESIGN §2). It owns one venue adapter (a
smart router is a composite venue, so one is enough), the order table (``engine.oms``: every
order's life cycle, by the transition table of ``engine.order_states``), the local emulation
of order types the venue lacks (``engine.emulation``) and the execution algorithms
(``engine.algos``). Every event it returns has passed through the table: consistent events
are forwarded (to strategies, risk, portfolio, recorder), anomalies are dropped and replaced by
an ``OrderAnomaly`` record.

What it decides, by ``ExecPolicy`` (config ``[exec]``):

- Idempotency: a ``NewOrder`` whose ``client_order_id`` is already known is never sent again —
  orders can be delivered twice (a restarted risk process replays its ring) and a second venue
  order would double the exposure. The resend is counted (``duplicates``) and answered with
  nothing: the first order's events are the answer. Cancels of an order already being canceled
  are not resent either.
- Order types: those in ``native_order_types`` go to the venue as they are; stop, stop-limit and
  trailing stop orders the venue lacks are emulated (accepted by exec, triggered from market
  data, ``OrderTriggered.emulated``), or rejected if ``emulate`` is off.
- Retries: a venue rejection of a new order whose reason matches ``retry_on`` (busy, throttled,
  ...) is retried up to ``max_retries`` times with exponential backoff, under a fresh venue-side
  id (venues refuse a reused client id); upstream sees only the final outcome, on the original id.
- Price-gap protection (``engine.price_gap``): a MARKET order is refused when the mid moved
  more than ``price_gap_bps`` (a binary: ``price_gap_ticks``; a betting selection:
  ``price_gap_ladder_ticks``) between the tick that caused it (its ``ts_origin``; or its ``px``
  when the strategy set one as the price it saw) and now: the decision was made on a market
  that is gone.
- Staleness: a ``NewOrder`` from risk whose ``ts_origin`` is more than ``max_order_age_ns``
  before now (or as far after: another clock) is refused, ``exec: stale_order``, counted in
  ``stale_rejects`` — risk approved it in time, but it waited (in the orders ring while exec was
  down or recovering, say) until the market it was built on is gone. Checked once, on arrival:
  held, emulated and retried orders and algo children are exec's own to time; cancels and
  replaces are never refused for age (risk judges a replace's age; a cancel is always safe).
- Halts: while an instrument (or the whole venue) is halted — an ``ExchangeStatus`` from the
  venue or the feed, or ``set_trading_status`` — new orders are held until it reopens
  (``halt_policy = "hold"``) or rejected (``"reject"``). Cancels still go out.
- Algorithms: a ``NewOrder`` with ``algo != 0`` goes to the ``AlgoEngine``; its child orders go
  out through the same path as any order (table, halts, venue) and events of children go back to
  the algo engine, never upstream: upstream only sees the parent events the algo engine makes.
  A ``ReplaceOrder`` addressed to a parent amends it (``AlgoEngine.amend``). After a restart, ``restore_algos`` brings back the parents that were working
  (``engine.algos.rebuild_parents``), their open children re-entered in the order table.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import msgspec

from engine.account_events import AccountGate
from engine.algos.engine import AlgoEngine
from engine.contingent import ContingentBook, is_list_order
from engine.emulation import EMULATABLE, StopEmulator, market_to_limit, triggered_order
from engine.exec_lists import ListWorker
from engine.exec_policy import ExecPolicy
from engine.exec_restart import ExecRestart
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OpenOrderSnapshot,
    OpenOrdersRequest,
    OrderAccepted,
    OrderAnomaly,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderTriggered,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    TimeInForce,
)
from engine.oms import OrderState, OrderTable
from engine.order_states import OrderStatus
from engine.price_gap import PriceGapGuard
from engine.sessions import SESSION_TIFS, next_session_ns, session_refusal, session_time
from engine.venue_state import AdoptedOrder
from engine.venues.base import Venue

DAY_NS = 86_400 * 1_000_000_000
#: the key of a venue-wide halt in ``ExecEngine.halted``
VENUE_WIDE = -1
#: exec's own client order ids (algo children, retries) use a strategy id no strategy has
#: (``strategy_id << 32 | counter`` is the id scheme; config allows strategy ids 1..255), and a
#: block of 2**24 ids per exec incarnation below it
EXEC_STRATEGY_ID = (1 << 31) - 1
EXEC_BLOCK_BITS = 24


class ExecEngine(ExecRestart):
    """Sends orders to one venue and filters its events through the order table."""

    def __init__(
        self,
        venue: Venue,
        instruments: InstrumentTable | Iterable[Instrument],
        policy: ExecPolicy | None = None,
        *,
        algo_engine: Any = "auto",
        id_block: int = 0,
        max_order_age_ns: int = 0,
    ) -> None:
        """``id_block``: which block of exec-owned ids this incarnation uses (a restarted exec
        takes a fresh one); ``max_order_age_ns``: refuse a NewOrder whose ts_origin is older on
        arrival (risk's ``max_intent_age_ms``; 0 = off)."""
        if not 0 <= id_block < (1 << (32 - EXEC_BLOCK_BITS)):
            raise ValueError("id_block out of range")
        if max_order_age_ns < 0:
            raise ValueError("max_order_age_ns must be >= 0")
        self.max_order_age_ns = max_order_age_ns
        self.venue = venue
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        self.policy = policy or ExecPolicy()
        self._iids = frozenset(self.instruments.ids)
        self.table = OrderTable()
        self.accounts = AccountGate(self.instruments)  # account events: once, in the table
        self.emulator = StopEmulator()
        self.duplicates = 0  # NewOrders resent with a known client_order_id
        self.ignored_requests = 0  # cancels/replaces for unknown, finished or canceling orders
        self.sent = 0  # NewOrders passed to the venue
        self.retried = 0  # venue rejects answered by a retry
        self.gap_rejects = 0  # market orders refused by the price-gap check
        self.stale_rejects = 0  # new orders refused on arrival: their data was too old
        self.not_orders = 0  # messages given to on_order that are not orders (ignored)
        #: halted instrument ids (``VENUE_WIDE`` for the whole venue)
        self.halted: set[int] = set()
        self._held: dict[int, NewOrder] = {}  # orders waiting for a halt to end, by coid
        self._venue_id: dict[int, int] = {}  # coid -> the id the venue knows it by (retries)
        self._alias: dict[int, int] = {}  # venue-side id -> coid
        self._retry_count: dict[int, int] = {}
        self._retry_due: list[tuple[int, int, int]] = []  # (due_ns, seq, coid)
        self._retry_seq = 0
        self._expiries: list[tuple[int, int]] = []  # emulated DAY/GTD orders: (expire_ns, coid)
        #: at-the-open / at-the-close orders exec holds until their session time (engine.sessions)
        self._session_wait: dict[int, NewOrder] = {}
        self._session_due: list[tuple[int, int]] = []  # (due_ns, coid)
        #: wall clock minus ``now_ns``'s clock (the exec process runs on the monotonic clock;
        #: session times are wall-clock times). 0: ``now_ns`` is epoch ns (backtests, tests)
        self.wall_offset_ns = 0
        self._gaps = PriceGapGuard()  # recent mids, for the price-gap check (engine.price_gap)
        self._next_id = EXEC_STRATEGY_ID << 32 | id_block << EXEC_BLOCK_BITS
        self._id_limit = self._next_id + (1 << EXEC_BLOCK_BITS) - 1
        self._anomalies: list[OrderAnomaly] = []
        self.table.on_anomaly = self._anomalies.append
        self._now = 0
        if algo_engine == "auto":
            algo_engine = AlgoEngine(self.instruments, self.next_exec_id)
        self.algo = algo_engine
        #: order lists (OTO / OCO / OUO, brackets): ``engine.contingent`` says what each leg
        #: should be, ``engine.exec_lists`` makes it so through this engine's paths
        self.lists = ContingentBook()
        self._lw = ListWorker(self)

    # --- ids -------------------------------------------------------------------------------------
    def next_exec_id(self) -> int:
        """A client order id for an order exec itself creates (algo child, retry)."""
        if self._next_id >= self._id_limit:
            raise RuntimeError("exec: client order id block exhausted")
        self._next_id += 1
        return self._next_id

    # --- orders ----------------------------------------------------------------------------------
    def on_order(self, order: NewOrder | CancelOrder | ReplaceOrder, now_ns: int) -> list[object]:
        """Act on an approved order; returns the (filtered) events it caused."""
        self._now = now_ns
        out: list[object] = []
        tp = type(order)
        if tp is NewOrder:
            if self._stale(order, now_ns, out):  # type: ignore[arg-type]
                pass
            elif order.algo:  # type: ignore[union-attr]
                self._new_parent(order, now_ns, out)  # type: ignore[arg-type]
            elif is_list_order(order):
                self._lw.new_member(order, now_ns, out)  # type: ignore[arg-type]
            else:
                self._new(order, now_ns, out)  # type: ignore[arg-type]
        elif tp is CancelOrder:
            if self.algo is not None and self.algo.is_parent(order.client_order_id):
                self._algo_out(self.algo.cancel(order.client_order_id, now_ns), now_ns, out)
            else:
                self._cancel(order, now_ns, out)  # type: ignore[arg-type]
        elif tp is ReplaceOrder:
            if self.algo is not None and self.algo.is_parent(order.client_order_id):
                # an amend of an algo parent (new open qty / limit): the algo engine fits it
                amend = getattr(self.algo, "amend", None)
                if amend is not None:
                    self._algo_out(amend(order, now_ns), now_ns, out)
                else:  # an algo engine without amends: the parent goes on unchanged
                    rej = OrderReplaceRejected.for_request(
                        order,
                        ReplaceRejectReason.UNSUPPORTED,
                        "algo parents cannot be amended here",
                        now_ns,
                        now_ns,
                    )
                    out.append(rej)
            elif order.client_order_id in self.lists:
                self._lw.replace_member(order, now_ns, out)  # type: ignore[arg-type]
            else:
                self._replace(order, now_ns, out)  # type: ignore[arg-type]
        else:
            self.not_orders += 1  # something else on the orders ring: counted, never fatal
        self._flush(out)
        return out

    def _stale(self, order: NewOrder, now_ns: int, out: list[object]) -> bool:
        """Refuse a new order built on data older than ``max_order_age_ns`` (True if refused).
        A resend of an order exec already knows is left to the duplicate check: its answer is
        the first one's events, never a reject that would tell upstream a live order is dead."""
        max_age = self.max_order_age_ns
        age = now_ns - order.ts_origin
        if max_age <= 0 or -max_age <= age <= max_age:
            return False
        coid = order.client_order_id
        if coid in self.table or (self.algo is not None and self.algo.is_parent(coid)):
            return False
        self.table.add(order, now_ns, submitted=False)
        self.stale_rejects += 1
        why = "stale_order" if age > 0 else "ts_origin_in_future"
        detail = f"{why} (data {age / 1e6:.0f} ms old, limit {max_age / 1e6:.0f} ms)"
        self._local_reject(order, detail, now_ns, out)
        return True

    def _new(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        ot = order.order_type
        native = self.policy.native_types
        emulate = ot not in native and ot in EMULATABLE and self.policy.emulate
        r = self.table.add(order, now_ns, submitted=False, emulated=emulate)
        if r is None:
            self.duplicates += 1
            return
        reason = self._refusal(order)
        if reason:
            self._local_reject(order, reason, now_ns, out)
        elif order.tif in SESSION_TIFS:
            self._session_hold(order, now_ns, out)
        elif ot == OrderType.MARKET_TO_LIMIT and ot not in native:
            limit, why = market_to_limit(
                order,
                self.emulator.bid.get(order.instrument_id, 0),
                self.emulator.ask.get(order.instrument_id, 0),
            )
            if limit is None:
                self._local_reject(order, why, now_ns, out)
            else:
                r.px = limit.px  # what it rests at (the order as the strategy sent it stays)
                self._dispatch(limit, now_ns, out)
        elif emulate:
            self._emulate(order, now_ns, out)
        else:
            self._dispatch(order, now_ns, out)

    def _refusal(self, order: NewOrder) -> str:
        """Why exec cannot take a new order at all ("" = it can)."""
        ot = order.order_type
        if order.instrument_id not in self._iids:
            return f"unknown instrument {order.instrument_id}"
        if ot not in self.policy.native_types:
            if ot not in EMULATABLE and ot != OrderType.MARKET_TO_LIMIT:
                return f"unsupported order type {ot}"
            if not self.policy.emulate:
                return f"unsupported order type {_type_name(ot)}: the venue lacks it, emulation off"
        if order.tif in SESSION_TIFS:
            return session_refusal(self.instruments.get(order.instrument_id), order.tif)
        return ""

    def _session_hold(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        """Hold an at-the-open / at-the-close order until its session time (engine.sessions)."""
        ins = self.instruments.by_id(order.instrument_id)
        wall = now_ns + self.wall_offset_ns
        due = next_session_ns(wall, ins.session_tz, session_time(ins, order.tif))
        self._session_wait[order.client_order_id] = order
        heapq.heappush(self._session_due, (due - self.wall_offset_ns, order.client_order_id))
        self._route(OrderAccepted.for_order(order, 0, now_ns, now_ns), now_ns, out)

    def _send_sessions(self, now_ns: int, out: list[object]) -> None:
        """Session orders whose time came go out as IOC: they take what the market has then."""
        q = self._session_due
        while q and q[0][0] <= now_ns:
            _, coid = heapq.heappop(q)
            o = self._session_wait.pop(coid, None)
            if o is None:
                continue  # canceled meanwhile
            ev = OrderTriggered(
                coid, o.instrument_id, o.side, 0, 0, o.order_type, o.px, o.qty, True,
                o.ts_origin, now_ns, now_ns,
            )  # fmt: skip
            self._route(ev, now_ns, out)
            r = self.table.get(coid)
            if r is not None and r.state == OrderStatus.TRIGGERED:
                sent = msgspec.structs.replace(o, tif=int(TimeInForce.IOC), qty=r.qty)
                self._dispatch(sent, now_ns, out)

    def emulates(self, order: NewOrder) -> bool:
        """Whether exec emulates this order's type (the venue lacks it)."""
        ot = order.order_type
        return ot not in self.policy.native_types and ot in EMULATABLE and self.policy.emulate

    def _emulate(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        """Hold a stop / stop-limit / trailing stop locally until market data triggers it."""
        why = self.emulator.add(order)
        if why:
            self._local_reject(order, why, now_ns, out)
            return
        self.schedule_expiry(order, now_ns)
        self._route(
            OrderAccepted.for_order(order, 0, now_ns, now_ns),
            now_ns,
            out,
        )

    def schedule_expiry(self, order: NewOrder, now_ns: int) -> None:
        """A DAY / GTD order exec holds itself (emulated, a held list leg) expires here."""
        exp = 0
        if order.tif == TimeInForce.GTD:
            exp = order.expire_ns
        elif order.tif == TimeInForce.DAY:
            exp = now_ns - now_ns % DAY_NS + DAY_NS
        if exp:
            heapq.heappush(self._expiries, (exp, order.client_order_id))

    def _dispatch(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        """Send an order the table holds (INITIALIZED, or TRIGGERED) — unless a halt holds or
        rejects it, or the market moved too far for a market order."""
        iid = order.instrument_id
        if self.halted and (iid in self.halted or VENUE_WIDE in self.halted):
            if self.policy.halt_policy == "hold":
                self._held[order.client_order_id] = order
            else:
                self._local_reject(order, "market halted", now_ns, out)
            return
        if order.order_type == OrderType.MARKET:
            pol = self.policy
            why = self._gaps.why(
                order,
                pol.price_gap_bps,
                self.instruments.get(iid),
                pol.price_gap_ticks,
                pol.price_gap_ladder_ticks,
            )
            if why:
                self.gap_rejects += 1
                self._local_reject(order, why, now_ns, out)
                return
        coid = order.client_order_id
        if not self.table.submit(coid, now_ns):
            return  # canceled meanwhile
        self.sent += 1
        self._filter(self.venue.submit(order, now_ns), now_ns, out)

    def _cancel(self, c: CancelOrder, now_ns: int, out: list[object]) -> None:
        coid = c.client_order_id
        r = self.table.get(coid)
        if r is None or not r.is_open:
            self.ignored_requests += 1  # unknown, or already finished (a normal race)
            return
        local = (
            coid in self._held
            or coid in self.emulator
            or coid in self._retry_count
            or coid in self._session_wait
            or (bool(self.lists.legs) and self._lw.holds(coid))
        )
        if local and self._drop_local(coid):
            self._local_cancel(r.order, "canceled", c.ts_origin, now_ns, out)
            return
        if r.state == OrderStatus.PENDING_CANCEL or not self.table.request_cancel(coid):
            self.ignored_requests += 1  # a cancel already on its way is not sent twice
            return
        vid = self._venue_id.get(coid, coid)
        if vid != coid:
            c = msgspec.structs.replace(c, client_order_id=vid)
        self._filter(self.venue.cancel(c, now_ns), now_ns, out)

    def cancel_at_venue(self, c: CancelOrder, now_ns: int) -> list[object]:
        """A cancel reconciliation decided (``ReconcileResult.to_cancel``): an order the venue
        has open that the record has closed, or one whose cancel was pending at the crash. Sent
        to the venue whatever the table says (``_cancel`` drops a cancel of an order not open
        in the table, or already pending cancel); the answers go through the table as usual."""
        self._now = now_ns
        out: list[object] = []
        coid = c.client_order_id
        vid = self._venue_id.get(coid, coid)
        if vid != coid:
            c = msgspec.structs.replace(c, client_order_id=vid)
        self._filter(self.venue.cancel(c, now_ns), now_ns, out)
        self._flush(out)
        return out

    def _drop_local(self, coid: int) -> bool:
        """Forget an order exec holds itself (halted, emulated, awaiting a retry, a held leg of
        an order list)."""
        if self._held.pop(coid, None) is not None:
            return True
        if self.lists.legs and self._lw.drop(coid):
            return True
        if self.emulator.cancel(coid) is not None:
            return True
        if self._session_wait.pop(coid, None) is not None:
            return True
        if any(c == coid for _, _, c in self._retry_due):
            self._retry_due = [x for x in self._retry_due if x[2] != coid]
            heapq.heapify(self._retry_due)
            return True
        return False

    def _replace(self, rep: ReplaceOrder, now_ns: int, out: list[object]) -> None:
        coid = rep.client_order_id
        r = self.table.get(coid)
        if r is None or not r.is_open:
            self.ignored_requests += 1
            return
        if coid in self.emulator or coid in self._held:
            self._replace_local(r, rep, now_ns, out)
            return
        if self._retry_due and any(c == coid for _, _, c in self._retry_due):
            # the venue does not have it (it refused it; the retry sends the original)
            self.table.request_replace(coid)
            ev = OrderReplaceRejected.for_request(
                rep,
                ReplaceRejectReason.PENDING_RETRY,
                "order awaiting a retry at the venue",
                now_ns,
                now_ns,
            )
            self._route(ev, now_ns, out)
            return
        if not self.table.request_replace(coid):
            self.ignored_requests += 1
            return
        vid = self._venue_id.get(coid, coid)
        if vid != coid:
            rep = msgspec.structs.replace(rep, client_order_id=vid)
        self._filter(self.venue.replace(rep, now_ns), now_ns, out)

    def _replace_local(self, r: Any, rep: ReplaceOrder, now_ns: int, out: list[object]) -> None:
        coid = rep.client_order_id
        if coid in self.emulator:
            why = self.emulator.amend(coid, rep.new_px, rep.new_qty)
        elif rep.new_qty <= 0 or rep.new_px < 0:
            why = "new qty must be > 0 and price >= 0"
        else:
            why = ""
            h = self._held[coid]
            px = h.px if h.order_type == OrderType.MARKET else rep.new_px
            self._held[coid] = msgspec.structs.replace(h, px=px, qty=rep.new_qty)
        if r.state not in (OrderStatus.INITIALIZED, OrderStatus.TRIGGERED):
            self.table.request_replace(coid)  # an accepted emulated order
        if why:  # the order is held here: only the new terms can be wrong
            ev: object = OrderReplaceRejected.for_request(
                rep, ReplaceRejectReason.INVALID, why, now_ns, now_ns
            )
        else:
            ev = OrderReplaced(
                coid, rep.instrument_id, rep.new_px, rep.new_qty, rep.ts_origin, now_ns, now_ns
            )
        self._route(ev, now_ns, out)

    def cancel_all(self, now_ns: int) -> list[object]:
        """Cancel every order the table considers open (shutdown, kill switch at exec level).

        Algo parents are canceled through the algo engine (which cancels their children)."""
        self._now = now_ns
        out: list[object] = []
        if self.algo is not None:
            for p in list(getattr(self.algo, "working", lambda: [])()):
                pid = getattr(p, "client_order_id", None)
                if pid is not None:
                    self._algo_out(self.algo.cancel(pid, now_ns), now_ns, out)
        for r in self.table.open_orders():
            if r.state in (OrderStatus.PENDING_CANCEL,) or not r.is_open:
                continue
            cancel = CancelOrder(
                client_order_id=r.client_order_id,
                strategy_id=r.order.strategy_id,
                instrument_id=r.instrument_id,
                ts_origin=now_ns,
                ts_approved=now_ns,
            )
            self._cancel(cancel, now_ns, out)
        self._flush(out)
        return out

    # --- local events ------------------------------------------------------------------------------
    def _local_reject(self, order: NewOrder, reason: str, now_ns: int, out: list[object]) -> None:
        self._route(OrderRejected.for_order(order, f"exec: {reason}", now_ns, now_ns), now_ns, out)

    def _local_cancel(
        self, order: NewOrder, reason: str, ts_origin: int, now_ns: int, out: list[object]
    ) -> None:
        r = self.table.get(order.client_order_id)
        leaves = r.leaves_qty if r is not None else order.qty
        ev = OrderCanceled(
            order.client_order_id, order.instrument_id, leaves, reason, ts_origin, now_ns, now_ns
        )
        self._route(ev, now_ns, out)

    # --- venue events ------------------------------------------------------------------------------
    def _filter(self, events: list[object], now_ns: int, out: list[object]) -> None:
        for ev in events:
            self._route(ev, now_ns, out)

    def _route(self, ev: Any, now_ns: int, out: list[object], merged: bool = False) -> None:
        """One event (venue's or exec's own) through the table, then upstream or to the algo.
        (``merged``: already merged onto a list leg made of two venue orders,
        ``engine.exec_topups``.)"""
        tp = type(ev)
        if tp is ExchangeStatus:
            self._on_status(ev, now_ns, out)
            out.append(ev)
            return
        if tp is AdoptedOrder:  # an order open at a live venue, ours from now on
            if self.table.add(ev.order, now_ns) is None:
                return  # known already: its own events speak for it
            ev = OrderAccepted.for_order(ev.order, ev.venue_order_id, now_ns, now_ns)
            tp = OrderAccepted
        coid = getattr(ev, "client_order_id", None)
        if coid is None:  # not about an order (an account event, a venue notice): pass it on
            if self.accounts.admit(ev, self.table):  # a repeated account event stops here
                out.append(ev)
            return
        if not merged and self._lw.tops:  # a list leg made of two venue orders
            evs = self._lw.tops.merge(ev, now_ns, out)
            if evs is not None:
                for m in evs:
                    self._route(m, now_ns, out, True)
                return
        if self._alias:
            parent = self._alias.get(coid)
            if parent is not None:  # a copy: the venue's own record keeps its id
                ev = msgspec.structs.replace(ev, client_order_id=parent)
                coid = parent
        if tp is OrderRejected and self._retry(ev, now_ns):
            return
        if tp is OrderCanceled and self._lw.why_ended:  # a cancel a list decided: say why
            ev = self._lw.named_cancel(ev)
        if not self.table.apply(ev):
            return
        algo = self.algo
        if algo is not None and algo.is_child(coid):
            self._algo_out(algo.on_child_event(ev, now_ns), now_ns, out)
        else:
            out.append(ev)
        if self.lists.legs and coid in self.lists:  # after the event: then what it caused
            self._lw.on_event(ev, now_ns, out)

    def _retry(self, ev: OrderRejected, now_ns: int) -> bool:
        """Schedule a retry of a new order the venue refused for a passing reason."""
        p = self.policy
        if not p.max_retries:
            return False
        coid = ev.client_order_id
        r = self.table.get(coid)
        if r is None or r.state not in (OrderStatus.SUBMITTED, OrderStatus.TRIGGERED):
            return False
        n = self._retry_count.get(coid, 0)
        reason = ev.reason.lower()
        if n >= p.max_retries or not any(s in reason for s in p.retry_on):
            return False
        self._retry_count[coid] = n + 1
        self.retried += 1
        due = now_ns + int(p.retry_backoff_ns * p.retry_backoff_factor**n)
        self._retry_seq += 1
        heapq.heappush(self._retry_due, (due, self._retry_seq, coid))
        return True

    def _send_retries(self, now_ns: int, out: list[object]) -> None:
        q = self._retry_due
        while q and q[0][0] <= now_ns:
            _, _, coid = heapq.heappop(q)
            r = self.table.get(coid)
            if r is None or r.state not in (OrderStatus.SUBMITTED, OrderStatus.TRIGGERED):
                continue
            vid = self.next_exec_id()
            old = self._venue_id.get(coid)
            if old is not None:
                self._alias.pop(old, None)
            self._venue_id[coid] = vid
            self._alias[vid] = coid
            o = r.order
            if r.triggered and o.order_type in EMULATABLE:
                o = triggered_order(o, r.stop_px)
            self.sent += 1
            o = msgspec.structs.replace(o, client_order_id=vid, qty=r.qty)  # a list leg's size
            self._filter(
                self.venue.submit(o, now_ns),
                now_ns,
                out,
            )

    # --- halts ---------------------------------------------------------------------------------
    def _on_status(self, ev: ExchangeStatus, now_ns: int, out: list[object]) -> None:
        iid = ev.instrument_id if ev.instrument_id >= 0 else VENUE_WIDE
        halted = ev.status in (ExchangeStatusKind.HALTED, ExchangeStatusKind.CIRCUIT_BREAKER)
        self._set_status(iid, halted, now_ns, out)

    def set_trading_status(self, instrument_id: int, halted: bool, now_ns: int) -> list[object]:
        """Halt or reopen one instrument (``VENUE_WIDE``: the whole venue); on reopening, held
        orders are sent in the order they arrived. Returns the events that caused."""
        out: list[object] = []
        self._set_status(instrument_id, halted, now_ns, out)
        self._flush(out)
        return out

    def _set_status(self, iid: int, halted: bool, now_ns: int, out: list[object]) -> None:
        if halted:
            self.halted.add(iid)
            return
        self.halted.discard(iid)
        for coid, o in list(self._held.items()):
            if (iid == VENUE_WIDE or o.instrument_id == iid) and not (
                o.instrument_id in self.halted or VENUE_WIDE in self.halted
            ):
                del self._held[coid]
                self._dispatch(o, now_ns, out)

    # --- market data and time ----------------------------------------------------------------------
    def on_market_data(self, msg: object, now_ns: int) -> list[object]:
        """Feed market data to the venue (a simulated venue matches our orders against it), the
        stop emulation, the price-gap history and the algorithms."""
        self._now = now_ns
        out: list[object] = []
        tp = type(msg)
        if tp is ExchangeStatus:
            # the venue obeys its own status too (a simulated one refuses orders, stops matching)
            self._filter(self.venue.on_market_data(msg, now_ns), now_ns, out)
            self._route(msg, now_ns, out)
            self._flush(out)
            return out
        self._filter(self.venue.on_market_data(msg, now_ns), now_ns, out)
        if tp is Quote:
            self._gaps.note(msg)  # type: ignore[arg-type]
        # always: the emulator keeps the last prices a new trailing stop starts from
        for trig in self.emulator.on_market_data(msg, getattr(msg, "ts_recv", now_ns)):
            self._fire(trig, now_ns, out)
        if self.algo is not None:
            self._algo_out(self.algo.on_market_data(msg, now_ns), now_ns, out)
        if self._anomalies:
            self._flush(out)
        return out

    def _fire(self, trig: Any, now_ns: int, out: list[object]) -> None:
        o = trig.order
        ev = OrderTriggered(
            o.client_order_id,
            o.instrument_id,
            o.side,
            trig.stop_px,
            trig.trigger_px,
            o.order_type,
            o.px,
            o.qty,
            True,
            o.ts_origin,
            now_ns,
            now_ns,
        )
        self._route(ev, now_ns, out)
        r = self.table.get(o.client_order_id)
        if r is not None and r.state == OrderStatus.TRIGGERED:
            self._dispatch(o, now_ns, out)

    def poll(self, now_ns: int) -> list[object]:
        """Events that became due by ``now_ns``: the venue's, retries, expiries, algo slices."""
        self._now = now_ns
        out: list[object] = []
        self._filter(self.venue.poll(now_ns), now_ns, out)
        self._lw.flush_native(now_ns, out)
        if self._retry_due and self._retry_due[0][0] <= now_ns:
            self._send_retries(now_ns, out)
        if self._expiries and self._expiries[0][0] <= now_ns:
            self._expire(now_ns, out)
        if self._session_due and self._session_due[0][0] <= now_ns:
            self._send_sessions(now_ns, out)
        if self.algo is not None:
            self._algo_out(self.algo.on_timer(now_ns), now_ns, out)
        self._flush(out)
        return out

    def next_event_ns(self) -> int | None:
        """When something is next due (venue, retry, expiry, algo slice); None if nothing is."""
        cands = []
        nxt = getattr(self.venue, "next_event_ns", None)
        if nxt is not None:
            cands.append(nxt())
        if self._retry_due:
            cands.append(self._retry_due[0][0])
        if self._expiries:
            cands.append(self._expiries[0][0])
        if self._session_due:
            cands.append(self._session_due[0][0])
        if self.algo is not None and hasattr(self.algo, "next_wakeup_ns"):
            cands.append(self.algo.next_wakeup_ns())
        ts = [t for t in cands if t is not None]
        return min(ts) if ts else None

    def _expire(self, now_ns: int, out: list[object]) -> None:
        q = self._expiries
        while q and q[0][0] <= now_ns:
            _, coid = heapq.heappop(q)
            o = self.emulator.cancel(coid)
            r = self.table.get(coid)
            if o is None and r is not None and self.lists.legs and self._lw.drop(coid):
                o = r.order  # a held list leg
            if o is None:
                continue  # triggered or canceled meanwhile
            leaves = r.leaves_qty if r is not None else o.qty
            ev = OrderExpired(coid, o.instrument_id, leaves, o.ts_origin, now_ns, now_ns)
            self._route(ev, now_ns, out)

    # --- algorithms ------------------------------------------------------------------------------
    def _new_parent(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        algo = self.algo
        coid = order.client_order_id
        if coid in self.table or (algo is not None and algo.is_parent(coid)):
            self.duplicates += 1
            return
        if algo is None:
            self.table.add(order, now_ns, submitted=False)
            self._local_reject(order, "execution algorithms are not available", now_ns, out)
            return
        self._algo_out(algo.submit(order, now_ns), now_ns, out)

    def _algo_out(self, items: list[object], now_ns: int, out: list[object]) -> None:
        """Child orders from the algo engine go to the venue; parent events go upstream."""
        for it in items:
            tp = type(it)
            if tp is NewOrder:
                self._new(it, now_ns, out)  # type: ignore[arg-type]
            elif tp is CancelOrder:
                self._cancel(it, now_ns, out)  # type: ignore[arg-type]
            elif tp is ReplaceOrder:
                self._replace(it, now_ns, out)  # type: ignore[arg-type]
            else:
                out.append(it)

    def _flush(self, out: list[object]) -> None:
        if self._anomalies:
            if self.policy.publish_anomalies:
                out.extend(self._anomalies)
            self._anomalies.clear()

    @property
    def list_stats(self) -> dict[str, int]:
        """Order-list counters: legs, releases, resizes, ends, OCO races (count and lots)."""
        lw, b = self._lw, self.lists
        return {
            "legs": len(b),
            "released": lw.released,
            "resized": lw.resized,
            "ended": lw.ended,
            "refused": lw.refused,
            "oco_races": b.oco_races,
            "oco_race_qty": b.oco_race_qty,
        }

    # --- views -----------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        return [r.order for r in self.table.open_orders()]

    def open_order_snapshot(self, req: OpenOrdersRequest, now_ns: int) -> list[object]:
        """The answer to a restarted risk process (``OpenOrdersRequest``): one
        ``OpenOrderSnapshot`` per order risk approved that is still open here — plain orders
        (held and emulated ones included) at their current price and leaves, algo parents with
        what the parent has left — then the end marker. Algo children are exec's own ids, never
        risk's: left out."""
        rid = req.request_id
        out: list[object] = [
            OpenOrderSnapshot(
                rid,
                r.client_order_id,
                r.order.strategy_id,
                r.instrument_id,
                r.side,
                r.px,
                r.leaves_qty,
                ts=now_ns,
            )
            for r in self.table.open_orders()
            if r.client_order_id >> 32 != EXEC_STRATEGY_ID and r.leaves_qty > 0
        ]
        for p in self.algo.working() if self.algo is not None else ():
            o = p.order
            if p.qty > p.filled:
                out.append(
                    OpenOrderSnapshot(
                        rid,
                        o.client_order_id,
                        o.strategy_id,
                        o.instrument_id,
                        o.side,
                        o.px,
                        p.qty - p.filled,
                        ts=now_ns,
                    )
                )
        out.append(OpenOrderSnapshot(rid, 0, 0, -1, 0, 0, 0, end=True, count=len(out), ts=now_ns))
        return out

    def held_orders(self) -> list[NewOrder]:
        """Orders held by a halt, in arrival order."""
        return list(self._held.values())

    def state(self, client_order_id: int) -> OrderState | None:
        return self.table.state(client_order_id)

    def position(self, instrument_id: int) -> int:
        """Net filled lots from the fills the table accepted."""
        return self.table.position(instrument_id)

    @property
    def anomalies(self) -> dict[str, int]:
        return self.table.anomalies


def _type_name(ot: int) -> str:
    try:
        return OrderType(ot).name
    except ValueError:
        return str(ot)
