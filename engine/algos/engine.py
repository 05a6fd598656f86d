"""Execution algorithms: parent orders worked through child orders (DESIGN §2, exec).

``AlgoEngine`` is the piece of the exec process that runs them. A strategy sends one order with
``algo != 0`` (``engine.messages.AlgoKind``) and its parameters in ``algo_params``; risk approves
it like any order, for its full quantity; exec hands it to ``AlgoEngine.submit`` instead of the
venue. From then on the engine turns time and market data into child orders, and child events
into parent events, so upstream (strategy, risk, portfolio, recorder) only ever sees the parent:

    submit / cancel / amend / on_market_data / on_timer / on_child_event   ->   list[object]

Every method returns a mix of

- child orders for the venue: ``NewOrder`` / ``CancelOrder`` / ``ReplaceOrder`` (an amend
  repricing or shrinking a resting child) with ids from ``next_child_id``, the parent's strategy,
  instrument and side, ``algo = 0``;
- events to publish upstream, all on the PARENT ``client_order_id``: ``OrderAccepted``,
  ``OrderRejected`` (bad parameters: never an exception), ``OrderPartiallyFilled`` /
  ``OrderFilled`` (one per child fill, parent ``cum``/``leaves``, fill ids unique per engine),
  ``OrderCanceled`` (the parent ended with quantity left), ``OrderReplaced`` (an amend took
  effect: ``qty`` is the parent's new open quantity, as for plain orders), and ``AlgoProgress``
  after each change.

Amends (``amend``, a ``ReplaceOrder`` addressed to the parent): ``new_qty`` is the parent's new
OPEN quantity, as for a plain order (``engine.venues.sim``'s engine-wide meaning, which risk and
the OMS read too), so the parent's new total is what is filled when exec takes the amend plus
``new_qty``; ``new_px`` is its new limit (a MARKET parent keeps no limit: its ``new_px`` is
ignored). Refused with ``OrderReplaceRejected`` (the parent goes on unchanged): an unknown or
ended parent, a new quantity <= 0 or a total out of range, a LIMIT price <= 0. Accepted, in this
order: the amend is written to the algo log (``on_record``, with the resulting total), the
parent takes the new total quantity and limit, its open children are fitted to it (newest first,
the children's open quantity is cut until filled + open <= the new total: a child cut to nothing
is canceled, a resting child cut in part is replaced with the smaller quantity; a resting child
priced beyond the new limit, or at the old limit, is replaced at the new limit — a passive
scheduled child at the touch capped by it, so a higher limit never makes it take —; a marketable
child that no longer fits is canceled), the algorithm rebases what is left of its schedule
(``Algo.rebase_for`` / ``on_amend``), and ``OrderReplaced`` + ``AlgoProgress`` go upstream.

The caller (``engine.exec_engine.ExecEngine``, or any loop playing its role) sends the child
orders to the venue and passes every venue event about a child (``is_child``) back to
``on_child_event``. Time only comes in as ``now_ns``; ``next_wakeup_ns`` says when the next
scheduled slice is due, so a simulated clock can call ``on_timer`` exactly then.

The algorithms (one module each): ``twap`` (equal slices over a window, optional randomisation,
catch-up), ``vwap`` (slices following a volume profile: a built-in or configured curve, or the
volume recorded from the market's trades), ``iceberg`` (shows at most a display quantity,
refreshes after fills), ``pov`` (a participation rate of the market's traded volume).

Restarts: ``on_record`` is a write-ahead hook (exec logs every accepted parent and every child
before it leaves, ``procs.algo_log``); ``snapshot()`` / ``restore(snapshots, now_ns, replay)``
turn the parents into ``ParentSnapshot``s and back, and ``rebuild_parents``
(``engine.algos.recovery``) makes those snapshots after a crash from the log, the record and the
venue. ``engine.algos.restart.restore`` has the policy (resume, or end a parent whose window passed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
import numpy as np

from engine.algos import restart
from engine.algos.base import NS_PER_S, Algo, AlgoParamError, Child, Parent
from engine.algos.recovery import (
    AmendSnapshot,
    ParentSnapshot,
)
from engine.algos.registry import ALGORITHMS
from engine.algos.vwap import VolumeProfile
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    AlgoState,
    BookSnapshot,
    CancelOrder,
    CancelRejectReason,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
    Trade,
)

__all__ = ["ALGORITHMS", "AlgoEngine"]

log = logging.getLogger("gekko.algos")


DAY_NS = 86_400 * NS_PER_S
_MAX_QTY = 1 << 62  # an amend beyond this could not even be logged (MessagePack int64)


class AlgoEngine:
    """Runs parent orders through their algorithms (see the module docstring).

    Parameters
    ----------
    instruments:
        The instruments parents may trade (``None``: any). An unknown instrument is rejected.
    next_child_id:
        Hands out the client order ids of child orders (exec owns the id space).
    volume_buckets, volume_period_ns:
        The recorded volume profile (VWAP ``profile = RECORDED``): the market's traded volume per
        instrument, summed per bucket of ``volume_period_ns / volume_buckets`` at the same time
        of the period (default: 5-minute buckets of a UTC day).
    """

    def __init__(
        self,
        instruments: InstrumentTable | Iterable[Instrument] | Mapping[int, Any] | None,
        next_child_id: Callable[[], int],
        *,
        volume_buckets: int = 288,
        volume_period_ns: int = DAY_NS,
    ) -> None:
        if volume_buckets < 1 or volume_period_ns < volume_buckets:
            raise ValueError("volume_buckets must be >= 1 and volume_period_ns >= volume_buckets")
        if instruments is None:
            self.instrument_ids: frozenset[int] | None = None
        elif isinstance(instruments, Mapping):
            self.instrument_ids = frozenset(int(i) for i in instruments)
        else:
            self.instrument_ids = frozenset(i.instrument_id for i in instruments)
        self._next_id = next_child_id
        self.volume_buckets = int(volume_buckets)
        self.volume_period_ns = int(volume_period_ns)
        self.parents: dict[int, Parent] = {}  # every parent seen, by client_order_id
        self._working: dict[int, Parent] = {}
        self._by_iid: dict[int, list[Parent]] = {}
        self._child_parent: dict[int, int] = {}  # child coid -> parent coid
        self._tops: dict[int, tuple[int, int, int, int]] = {}  # bid px/qty, ask px/qty
        self._volume: dict[int, VolumeProfile] = {}
        self._fill_seq = 0
        self._out: list[object] = []
        self._dirty: dict[int, Parent] = {}
        self._now = 0
        #: the write-ahead hook: called with (parent id, order, now_ns) for each parent as it is
        #: accepted (order = the parent) and each child BEFORE it is handed out (exec appends
        #: them to its algo log, ``procs.algo_log``, so a restart can rebuild the parent)
        self.on_record: Callable[[int, NewOrder, int], None] | None = None
        #: parents rebuilt by ``restore``
        self.restored = 0
        #: parent NewOrders seen twice (ignored: idempotent submission)
        self.duplicates = 0
        #: child events that make no sense (unknown child, fill after close, duplicate fill id)
        self.anomalies: dict[str, int] = {}

    # --- the contract -------------------------------------------------------------------------
    def is_child(self, client_order_id: int) -> bool:
        return client_order_id in self._child_parent

    def is_parent(self, client_order_id: int) -> bool:
        return client_order_id in self.parents

    def submit(self, parent: NewOrder, now_ns: int) -> list[object]:
        """Start a parent order: ``OrderAccepted`` (+ first children) or ``OrderRejected``."""
        self._begin(now_ns)
        coid = parent.client_order_id
        if coid in self.parents:
            self.duplicates += 1
            return []
        p = Parent(order=parent, algo=int(parent.algo), qty=int(parent.qty), start_ns=now_ns)
        self.parents[coid] = p
        reason = self._validate(parent)
        impl: Algo | None = None
        if not reason:
            try:
                impl = ALGORITHMS[int(parent.algo)](self, p, now_ns)
            except AlgoParamError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must reject one order, not kill exec
                log.exception("algo: parent %d could not start", coid)
                reason = f"internal error: {exc!r}"
        if impl is None:
            p.state = AlgoState.REJECTED
            p.ending = reason
            self._out.append(OrderRejected.for_order(parent, f"algo: {reason}", now_ns, now_ns))
            self._touch(p)
            return self._end()
        p.impl = impl
        self._record(coid, parent, now_ns, profile=p.saved_profile)
        self._working[coid] = p
        self._by_iid.setdefault(parent.instrument_id, []).append(p)
        self._out.append(OrderAccepted.for_order(parent, 0, now_ns, now_ns))
        self._touch(p)
        self._guard(p, impl.on_start, now_ns)
        self._due(p, now_ns)
        return self._end()

    def cancel(self, parent_coid: int, now_ns: int) -> list[object]:
        """Cancel a parent: its open children are canceled, then one parent ``OrderCanceled``.

        A parent that is unknown or already over is answered as a venue answers such a cancel:
        ``OrderCancelRejected`` (UNKNOWN_ORDER / NOT_OPEN)."""
        self._begin(now_ns)
        p = self.parents.get(parent_coid)
        if p is None:
            self._out.append(
                OrderCancelRejected(
                    parent_coid,
                    0,
                    CancelRejectReason.UNKNOWN_ORDER,
                    "unknown parent order",
                    now_ns,
                    now_ns,
                    now_ns,
                )
            )
            return self._end()
        if p.state != AlgoState.WORKING:
            self._out.append(
                OrderCancelRejected(
                    parent_coid,
                    p.instrument_id,
                    CancelRejectReason.NOT_OPEN,
                    "parent order is no longer working",
                    p.order.ts_origin,
                    now_ns,
                    now_ns,
                )
            )
            return self._end()
        self._wind_down(p, "canceled", now_ns)
        return self._end()

    def amend(self, rep: ReplaceOrder, now_ns: int) -> list[object]:
        """Change a working parent's open quantity and/or limit (see the module docstring):
        ``OrderReplaced`` + the child orders that fit the children to it, or
        ``OrderReplaceRejected`` and nothing else.

        ``rep.new_qty`` is the new open quantity (the engine-wide meaning); from here on the
        parent, its algorithm and the algo log work with the resulting total, filled + open."""
        self._begin(now_ns)
        coid = rep.client_order_id
        p = self.parents.get(coid)
        why = ""
        R = ReplaceRejectReason
        code = R.INVALID  # the reason when ``why`` is set, unless a branch says otherwise
        new_open = int(rep.new_qty)
        new_qty = 0  # the new total quantity: filled + new_open
        new_px = 0
        if p is None:
            code, why = R.UNKNOWN_ORDER, "unknown parent order"
        elif not p.is_working or p.impl is None:
            code, why = R.NOT_OPEN, "parent order is no longer working"
        else:
            o = p.order
            new_px = int(rep.new_px) if o.order_type == OrderType.LIMIT else o.px
            new_qty = p.filled + new_open
            if new_open <= 0:
                why = f"new qty must be > 0, got {new_open} (cancel the parent to stop it)"
            elif new_qty >= _MAX_QTY:
                why = f"new qty {new_open} is out of range"
            elif o.order_type == OrderType.LIMIT and new_px <= 0:
                why = f"limit price must be > 0, got {new_px}"
            else:
                code, why = R.REFUSED, p.impl.check_amend(new_qty, new_px)
        k0 = base = 0
        if not why and p is not None and p.impl is not None:
            try:
                k0, base = p.impl.rebase_for(new_qty, now_ns)
            except Exception as exc:  # a bug must refuse one amend, not kill exec
                log.exception("algo: amend of parent %d could not be planned", coid)
                self._count("algo_error")
                code, why = R.REFUSED, f"internal error: {exc!r}"
        if why or p is None or p.impl is None:
            iid = p.instrument_id if p is not None else rep.instrument_id
            self._out.append(
                OrderReplaceRejected(coid, iid, code, why, rep.ts_origin, now_ns, now_ns)
            )
            return self._end()
        impl = p.impl
        a = AmendSnapshot(
            ts=now_ns,
            qty=new_qty,
            px=new_px,
            rebase_slice=k0,
            rebase_base=base,
            origin=int(rep.ts_origin),
        )
        old_px = p.order.px
        amended = msgspec.structs.replace(p.order, qty=new_qty, px=new_px)
        self._record(coid, amended, now_ns, amend=a)  # write-ahead: logged, then it happens
        self._apply_amend(p, a)
        impl.set_rebase(k0, base)
        self._fit_children(p, old_px, now_ns)
        self._out.append(
            OrderReplaced(coid, p.instrument_id, new_px, new_open, rep.ts_origin, now_ns, now_ns)
        )
        self._touch(p)
        self._guard(p, impl.on_amend, now_ns)
        return self._end()

    def on_child_event(self, ev: object, now_ns: int) -> list[object]:
        """A venue event about one of our children."""
        self._begin(now_ns)
        coid = getattr(ev, "client_order_id", None)
        pc = self._child_parent.get(coid) if isinstance(coid, int) else None
        if pc is None:
            self._count("unknown_child")
            return self._end()
        p = self.parents[pc]
        c = p.children[coid]
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            self._on_child_fill(p, c, ev, now_ns)
        elif isinstance(ev, OrderAccepted):
            c.accepted = True
        elif isinstance(ev, OrderReplaceRejected):
            if c.replace_sent and c.is_open:
                # an amend's reprice/shrink was refused: the child may no longer fit the
                # parent, so it goes (the algorithm re-sends what is left once it closed)
                c.replace_sent = False
                self._count("child_replace_rejected")
                self._cancel_child(p, c, now_ns)
        elif isinstance(ev, OrderCancelRejected):
            pass  # our cancel crossed the child's end; its own event closes it
        elif isinstance(ev, OrderRejected):
            if c.is_open:
                self._child_closed(p, c, "rejected")
                p.child_rejects += 1
                limit = p.impl.max_child_rejects if p.impl is not None else 1
                if p.state == AlgoState.WORKING and p.child_rejects >= limit:
                    self._wind_down(p, f"child rejected by the venue: {ev.reason}", now_ns)
                self._after_close(p, c, now_ns)
            else:
                self._count("event_after_child_closed")
        elif isinstance(ev, OrderCanceled | OrderExpired):
            if c.is_open:
                self._child_closed(p, c, "canceled" if isinstance(ev, OrderCanceled) else "expired")
                self._after_close(p, c, now_ns)
            else:
                self._count("event_after_child_closed")
        elif isinstance(ev, OrderReplaced):
            if c.is_open:  # an amend repriced or shrank it (``qty`` = its new open quantity)
                p.open_qty += ev.qty - c.leaves
                c.leaves = ev.qty
                c.px = ev.px
                c.replace_sent = False
                if p.is_working:
                    # a fill that crossed a shrink leaves the venue's open quantity above
                    # what the parent has room for: fit again (quantities only: the limit is
                    # passed as the old one, so nothing is repriced)
                    self._fit_children(p, p.order.px, now_ns)
        else:
            self._count("unknown_event")
        return self._end()

    def on_market_data(self, msg: object, now_ns: int) -> list[object]:
        """Quotes and trades: top of book, recorded volume, POV participation; due slices.

        Called for every tick exec sees: with no parent working it only records and returns."""
        iid = getattr(msg, "instrument_id", None)
        t = type(msg)
        if t is Quote:
            self._tops[iid] = (msg.bid_px, msg.bid_qty, msg.ask_px, msg.ask_qty)  # type: ignore[attr-defined]
        elif t is Trade:
            if msg.qty > 0:  # type: ignore[attr-defined]
                vol = self._volume.get(iid)  # type: ignore[arg-type]
                if vol is None:
                    vol = VolumeProfile.empty(self.volume_buckets, self.volume_period_ns)
                    self._volume[iid] = vol  # type: ignore[index]
                # by exec's clock, the one the VWAP windows are in (= ts_event in backtests)
                vol.add(now_ns, msg.qty)  # type: ignore[attr-defined]
        elif t is BookSnapshot:
            b, a = msg.bid_px, msg.ask_px  # type: ignore[attr-defined]
            self._tops[iid] = (
                b[0] if b else 0,
                msg.bid_qty[0] if b else 0,  # type: ignore[attr-defined]
                a[0] if a else 0,
                msg.ask_qty[0] if a else 0,  # type: ignore[attr-defined]
            )
        if not self._working:
            return []
        self._begin(now_ns)
        for p in tuple(self._by_iid.get(iid, ())):  # type: ignore[arg-type]
            if p.impl is not None and p.is_working:
                self._guard(p, p.impl.on_market_data, msg, now_ns)
        self._all_due(now_ns)
        return self._end()

    def record_prints(self, iid: int, ts_ns: np.ndarray, qty: np.ndarray) -> None:
        """``on_market_data`` for many prints (``qty > 0``) of one instrument while no parent
        is working (it would only record their volume): the fast replay's bulk form."""
        vol = self._volume.get(iid)
        if vol is None:
            vol = VolumeProfile.empty(self.volume_buckets, self.volume_period_ns)
            self._volume[iid] = vol
        vol.add_many(ts_ns, qty)

    def on_timer(self, now_ns: int) -> list[object]:
        """Run the slices that are due by ``now_ns``."""
        if not self._working:
            return []
        self._begin(now_ns)
        self._all_due(now_ns)
        return self._end()

    # --- views ---------------------------------------------------------------------------------
    def next_wakeup_ns(self) -> int | None:
        """The earliest time a working parent wants ``on_timer`` (None: none does)."""
        best: int | None = None
        for p in self._working.values():
            w = p.impl.wakeup_ns if p.impl is not None and p.is_working else None
            if w is not None and (best is None or w < best):
                best = w
        return best

    def working(self) -> list[Parent]:
        """Parents not yet over (including those winding down), oldest first."""
        return list(self._working.values())

    def parent(self, client_order_id: int) -> Parent | None:
        return self.parents.get(client_order_id)

    def top(self, instrument_id: int) -> tuple[int, int, int, int] | None:
        """Last (bid_px, bid_qty, ask_px, ask_qty) seen for an instrument."""
        return self._tops.get(instrument_id)

    def recorded_volume(self, instrument_id: int) -> VolumeProfile | None:
        """The volume profile recorded from the market's trades (None before the first)."""
        return self._volume.get(instrument_id)

    def load_volume(self, instrument_id: int, trades: Iterable[Trade]) -> None:
        """Seed the recorded profile from recorded trades (e.g. yesterday's replay file), by
        their ``ts_event``: right when exec's clock is the venue's (backtests, replays)."""
        vol = self._volume.get(instrument_id)
        if vol is None:
            vol = VolumeProfile.empty(self.volume_buckets, self.volume_period_ns)
            self._volume[instrument_id] = vol
        for tr in trades:
            if tr.instrument_id == instrument_id and tr.qty > 0:
                vol.add(tr.ts_event, tr.qty)

    # --- restart (engine.algos.restart) ------------------------------------------------------
    def snapshot(self) -> list[ParentSnapshot]:
        """The parents as ``ParentSnapshot``s (``engine.algos.restart.snapshot``)."""
        return restart.snapshot(self)

    def restore(
        self, snapshots: Iterable[ParentSnapshot], now_ns: int, replay: Iterable[object] = ()
    ) -> list[object]:
        """Rebuild parents after an exec restart; returns what to send and publish. The policy
        (resume, or end a parent whose window passed): ``engine.algos.restart.restore``."""
        return restart.restore(self, snapshots, now_ns, replay)

    def _record(self, parent_coid: int, order: NewOrder, now_ns: int, **extra: Any) -> None:
        """Write-ahead: tell ``on_record`` before the order exists anywhere else (``extra``: an
        amend's ``AmendSnapshot``, a recorded VWAP's ``profile``; passed only when set)."""
        if self.on_record is None:
            return
        extra = {k: v for k, v in extra.items() if v is not None}
        try:
            self.on_record(parent_coid, order, now_ns, **extra)
        except Exception:  # the log failing must not stop trading; the restart is then blind
            log.exception("algo: could not log order %d", order.client_order_id)
            self._count("log_error")

    # --- internals: called by Algo -------------------------------------------------------------
    def _send_child(
        self,
        p: Parent,
        qty: int,
        now_ns: int,
        order_type: int | None,
        tif: int | None,
        px: int | None,
    ) -> Child | None:
        if not p.is_working:
            return None
        q = min(int(qty), p.remaining)
        if q <= 0:
            return None
        o = p.order
        otype = int(o.order_type if order_type is None else order_type)
        tif_ = int(o.tif if tif is None else tif)
        cpx = int(o.px if px is None else px) if otype != OrderType.MARKET else 0
        flags = o.flags
        if tif_ in (TimeInForce.IOC, TimeInForce.FOK) or otype == OrderType.MARKET:
            flags &= ~OrderFlag.POST_ONLY  # a marketable slice may take
        coid = int(self._next_id())
        self._child_parent[coid] = p.client_order_id
        resting = otype == OrderType.LIMIT and tif_ not in (TimeInForce.IOC, TimeInForce.FOK)
        c = Child(coid, q, cpx, now_ns, leaves=q, resting=resting)
        p.children[coid] = c
        p.open_children += 1
        p.open_qty += q
        child = NewOrder(
            client_order_id=coid,
            strategy_id=o.strategy_id,
            instrument_id=o.instrument_id,
            side=o.side,
            order_type=otype,
            tif=tif_,
            px=cpx,
            qty=q,
            ts_origin=now_ns,
            ts_approved=now_ns,
            flags=int(flags),
            expire_ns=o.expire_ns if tif_ == TimeInForce.GTD else 0,
        )
        self._record(p.client_order_id, child, now_ns)
        self._out.append(child)
        self._touch(p)
        return c

    def _wind_down(self, p: Parent, reason: str, now_ns: int) -> None:
        if p.state != AlgoState.WORKING or p.ending:
            return
        p.ending = reason
        self._cancel_children(p, now_ns)
        self._touch(p)
        self._maybe_end(p, now_ns)

    def _apply_amend(self, p: Parent, a: AmendSnapshot) -> None:
        if p.original is None:
            p.original = p.order
        p.order = msgspec.structs.replace(p.order, qty=int(a.qty), px=int(a.px))
        p.qty = int(a.qty)
        p.amends.append(a)

    def _fit_children(self, p: Parent, old_px: int, now_ns: int) -> None:
        """Fit the open children to the parent's quantity and limit (see ``amend``)."""
        o = p.order
        limit = o.order_type == OrderType.LIMIT
        live = [c for c in p.children.values() if c.is_open and not c.cancel_sent]
        excess = p.filled + sum(c.want_qty if c.replace_sent else c.leaves for c in live) - p.qty
        for c in reversed(live):  # newest first: the oldest keep their place in the queue
            q = c.want_qty if c.replace_sent else c.leaves
            px = c.want_px if c.replace_sent else c.px
            cut = min(q, max(0, excess))
            excess -= cut
            new_px = px
            if limit and px > 0 and p.impl is not None and px != o.px:
                new_px = p.impl.reprice(c, px, old_px)
            if cut == q or (not c.resting and (cut or new_px != px)):
                self._cancel_child(p, c, now_ns)
            elif cut or new_px != px:
                c.replace_sent, c.want_qty, c.want_px = True, q - cut, new_px
                self._out.append(
                    ReplaceOrder(
                        c.client_order_id,
                        o.strategy_id,
                        o.instrument_id,
                        new_px,
                        q - cut,
                        now_ns,
                        now_ns,
                    )
                )

    def _cancel_child(self, p: Parent, c: Child, now_ns: int) -> None:
        if c.cancel_sent:
            return
        c.cancel_sent = True
        o = p.order
        self._out.append(
            CancelOrder(c.client_order_id, o.strategy_id, o.instrument_id, now_ns, now_ns)
        )

    def _cancel_children(self, p: Parent, now_ns: int) -> int:
        o = p.order
        n = 0
        for c in p.children.values():
            if c.is_open and not c.cancel_sent:
                c.cancel_sent = True
                n += 1
                self._out.append(
                    CancelOrder(c.client_order_id, o.strategy_id, o.instrument_id, now_ns, now_ns)
                )
        return n

    def _touch(self, p: Parent) -> None:
        self._dirty[p.client_order_id] = p

    # --- internals: bookkeeping ----------------------------------------------------------------
    def _validate(self, o: NewOrder) -> str:
        kind = int(o.algo)
        if kind not in ALGORITHMS:
            return f"unknown algorithm {kind} (known: {', '.join(AlgoKind(k).name for k in ALGORITHMS)})"
        if self.instrument_ids is not None and o.instrument_id not in self.instrument_ids:
            return f"unknown instrument {o.instrument_id}"
        if o.side not in (Side.BUY, Side.SELL):
            return f"invalid side {o.side}"
        if o.qty <= 0:
            return f"qty must be > 0, got {o.qty}"
        if o.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return "a parent order must be MARKET or LIMIT"
        if o.order_type == OrderType.LIMIT and o.px <= 0:
            return f"limit price must be > 0, got {o.px}"
        if not isinstance(o.algo_params, dict):
            return "algo_params must be a table of numbers"
        return ""

    def _on_child_fill(self, p: Parent, c: Child, ev: OrderPartiallyFilled, now_ns: int) -> None:
        if not c.is_open:
            self._count("fill_after_child_closed")
            return
        if ev.fill_id and ev.fill_id in c.fill_ids:
            self._count("duplicate_fill")
            return
        if p.state != AlgoState.WORKING:
            # only a venue that overfills gets here (the parent is filled, a sibling was still
            # open): upstream already saw the parent end, so this is an anomaly, as in the OMS
            self._count("fill_after_parent_end")
            c.cum += ev.fill_qty
            return
        q = int(ev.fill_qty)
        if q <= 0:
            self._count("bad_fill_qty")
            return
        if ev.fill_id:
            c.fill_ids.add(ev.fill_id)
        if q > c.leaves:
            self._count("child_overfill")  # forwarded: the fill is real
        dec = min(q, c.leaves)
        c.cum += q
        c.leaves -= dec
        p.open_qty -= dec
        p.filled += q
        p.notional_ticks += ev.fill_px * q
        p.fees += ev.fee
        p.child_rejects = 0
        if p.filled > p.qty:
            # a fill that raced an amend's cut at the venue: real, forwarded, counted (the
            # parent ends filled; upstream sees cum above the amended quantity)
            self._count("fill_beyond_amended_qty")
        leaves = max(0, p.qty - p.filled)
        o = p.order
        # the parent fill carries its child's venue fill id: unique in the run whatever exec
        # incarnation made it (the record keys fills by id), and it tells a restarted exec
        # which child fills upstream has already seen (``engine.algos.recovery``)
        if ev.fill_id:
            fill_id = ev.fill_id
        else:
            self._fill_seq += 1
            fill_id = self._fill_seq
        cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
        self._out.append(
            cls(
                p.client_order_id,
                ev.venue_order_id,
                o.instrument_id,
                o.side,
                ev.fill_px,
                q,
                p.filled,
                leaves,
                ev.fee,
                ev.liquidity,
                fill_id,
                o.ts_origin,
                ev.ts_event,
                ev.ts_recv,
            )
        )
        self._touch(p)
        if isinstance(ev, OrderFilled) or c.leaves == 0:
            self._child_closed(p, c, "filled")
        if leaves == 0:
            p.state = AlgoState.DONE
            for other in p.children.values():  # nothing should be open; never leave an orphan
                if other.is_open and not other.cancel_sent:
                    other.cancel_sent = True
                    self._out.append(
                        CancelOrder(
                            other.client_order_id, o.strategy_id, o.instrument_id, now_ns, now_ns
                        )
                    )
            self._retire(p)
            return
        if p.is_working and p.impl is not None:
            self._guard(p, p.impl.on_child_fill, c, q, now_ns)
        if not c.is_open:
            self._after_close(p, c, now_ns)

    def _child_closed(self, p: Parent, c: Child, outcome: str) -> None:
        c.is_open = False
        c.outcome = outcome
        p.open_children -= 1
        p.open_qty -= c.leaves
        c.leaves = 0
        self._touch(p)

    def _after_close(self, p: Parent, c: Child, now_ns: int) -> None:
        if p.is_working and p.impl is not None:
            self._guard(p, p.impl.on_child_closed, c, now_ns)
        self._maybe_end(p, now_ns)

    def _maybe_end(self, p: Parent, now_ns: int) -> None:
        if p.state != AlgoState.WORKING or not p.ending or p.open_children:
            return
        p.state = AlgoState.CANCELED
        o = p.order
        self._out.append(
            OrderCanceled(
                p.client_order_id,
                o.instrument_id,
                max(0, p.qty - p.filled),
                p.ending,
                o.ts_origin,
                now_ns,
                now_ns,
            )
        )
        self._touch(p)
        self._retire(p)

    def _retire(self, p: Parent) -> None:
        self._working.pop(p.client_order_id, None)
        lst = self._by_iid.get(p.instrument_id)
        if lst is not None and p in lst:
            lst.remove(p)
        p.impl = None

    def _due(self, p: Parent, now_ns: int) -> None:
        impl = p.impl
        if (
            impl is not None
            and p.is_working
            and impl.wakeup_ns is not None
            and impl.wakeup_ns <= now_ns
        ):
            self._guard(p, impl.on_time, now_ns)

    def _all_due(self, now_ns: int) -> None:
        for p in tuple(self._working.values()):
            self._due(p, now_ns)

    def _guard(self, p: Parent, fn: Callable[..., None], *args: Any) -> None:
        """Run an algorithm callback; a failure stops that parent (cleanly), not exec."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("algo: parent %d failed", p.client_order_id)
            self._count("algo_error")
            self._wind_down(p, f"algo error: {exc!r}", self._now)

    def _count(self, kind: str) -> None:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1

    def _begin(self, now_ns: int) -> None:
        self._out = []
        self._dirty = {}
        self._now = now_ns

    def _end(self) -> list[object]:
        """Upstream events (parent events, then progress) first, child orders last: a caller
        that sends a child gets the venue's answer and our reaction to it at once (nested),
        so anything we return after the orders would reach upstream out of date."""
        orders: list[object] = []
        out: list[object] = []
        for x in self._out:  # one pass, identity tests: this runs for every child event
            t = type(x)
            if t is NewOrder or t is CancelOrder or t is ReplaceOrder:
                orders.append(x)
            else:
                out.append(x)
        now = self._now
        for p in self._dirty.values():
            out.append(
                AlgoProgress(
                    p.client_order_id,
                    p.instrument_id,
                    p.algo,
                    p.filled,
                    max(0, p.qty - p.filled),
                    p.open_children,
                    int(p.state),
                    now,
                    p.target_qty,
                )
            )
        out += orders
        self._out = []
        self._dirty = {}
        return out
