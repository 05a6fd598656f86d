"""Algo parents across an exec restart: what a parent and its children looked like, and how to
rebuild that from what survived the crash.

Why it is built this way: a parent order lives only in exec's memory (``AlgoEngine``), but
three things outlive exec and together say everything about it:

- the **write-ahead algo log** exec keeps (``procs.algo_log``): every parent as it was
  accepted (its ``NewOrder`` with ``algo`` / ``algo_params`` and exec's clock at acceptance,
  from which the schedule is rebuilt) and every child ``NewOrder`` with its parent, appended
  *before* the child leaves exec — so no child can be at the venue without its parent link;
- the **record** (PostgreSQL + the recorder's journal): the parent events upstream has seen —
  its acceptance, its fills (a parent fill carries its child's venue fill id, so a child fill is
  "seen" exactly when its id is recorded), its end, and cancel requests for it;
- the **venue**: which children it ever received, which are open (and their open quantity),
  and every child fill.

``rebuild_parents`` joins them into ``ParentSnapshot``s *as upstream last saw them*, plus the
venue events upstream missed (``replay``: child fills, then child closes). ``AlgoEngine.restore``
applies the snapshots, replays those events through the ordinary child-event bookkeeping (so a
missed fill becomes exactly one parent fill, with the parent's ``cum``/``leaves``), then resumes
the schedule for what is left, under the policy in its docstring. Pure logic: no I/O, the venue
only queried, time passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from engine.messages import (
    AlgoState,
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    ReconciliationEvent,
    ReconciliationKind,
    TimeInForce,
)
from engine.venues.base import ExecutionClient

K = ReconciliationKind


class AmendSnapshot(msgspec.Struct, kw_only=True):
    """One accepted amend of a parent (``AlgoEngine.amend``): its new total quantity and limit,
    when it took effect, and the rebase of the remaining schedule it made (``Algo.rebase_for``:
    the first slice the rebase applies to and the quantity already due by then). Logged before
    the amend takes effect; replayed on restore, so the rebuilt schedule is the amended one."""

    ts: int
    qty: int
    px: int
    rebase_slice: int = 0
    rebase_base: int = 0
    #: the amend request's ``ts_origin`` (its ``OrderReplaced`` carries it): what tells a restart
    #: that a re-delivered copy of the request was already done (``procs.recovery``)
    origin: int = 0


class LoggedParent(NamedTuple):
    """A parent as exec's algo log has it (``procs.algo_log.load``)."""

    order: NewOrder  # as accepted
    start_ns: int  # exec's clock at acceptance
    amends: tuple[AmendSnapshot, ...] = ()
    #: a VWAP on recorded volume: the profile it was accepted with (weights, period, origin)
    profile: tuple[list[float], int, int] | None = None


class ChildSnapshot(msgspec.Struct, kw_only=True):
    """One child order of a parent (``engine.algos.base.Child``)."""

    client_order_id: int
    qty: int
    px: int
    sent_ns: int
    leaves: int
    cum: int = 0
    is_open: bool = True
    accepted: bool = False
    cancel_sent: bool = False
    outcome: str = ""
    fill_ids: list[int] = []
    resting: bool = False


class ParentSnapshot(msgspec.Struct, kw_only=True):
    """A parent order and its children (``engine.algos.base.Parent``).

    ``order`` is the parent as accepted (``algo`` and ``algo_params`` included); ``start_ns``
    exec's clock when it was accepted. ``announced``: upstream has seen its ``OrderAccepted``
    (if not, ``restore`` publishes one). ``children`` is the child order ``NewOrder`` list's
    state; ``child_orders`` the orders themselves (the OMS needs them for open children).
    ``amends``: the amends accepted since (``order`` stays the parent as accepted);
    ``amend_announced``: upstream saw the last one's ``OrderReplaced`` (if not, ``restore``
    publishes it). ``profile``: a recorded VWAP profile (``Parent.saved_profile``)."""

    order: NewOrder
    start_ns: int
    state: int = int(AlgoState.WORKING)
    filled: int = 0
    notional_ticks: int = 0
    fees: float = 0.0
    ending: str = ""
    target_qty: int = 0
    child_rejects: int = 0
    announced: bool = True
    cancel_requested: bool = False
    children: list[ChildSnapshot] = []
    child_orders: list[NewOrder] = []
    amends: list[AmendSnapshot] = []
    amend_announced: bool = True
    profile: tuple[list[float], int, int] | None = None


@dataclass
class AlgoRecovery:
    """What ``rebuild_parents`` found (see the module docstring)."""

    parents: list[ParentSnapshot] = field(default_factory=list)
    #: venue events about children that upstream never saw as parent events, in venue order
    replay: list[Any] = field(default_factory=list)
    #: children open at the venue: (the child order, its venue order id, its venue fills) —
    #: exec's order table must know them so their later events are accepted
    open_children: list[tuple[NewOrder, int, list[OrderPartiallyFilled]]] = field(
        default_factory=list
    )
    #: every client order id that belongs to a parent (parents and children): plain-order
    #: reconciliation (``engine.reconcile``) must leave them alone
    order_ids: set[int] = field(default_factory=set)
    events: list[ReconciliationEvent] = field(default_factory=list)


_END = (OrderFilled, OrderCanceled, OrderExpired)


def rebuild_parents(
    starts: Iterable[LoggedParent | tuple[NewOrder, int]],
    children: Mapping[int, Iterable[NewOrder]],
    events: Iterable[Any],
    venue: ExecutionClient,
    now_ns: int,
) -> AlgoRecovery:
    """Rebuild every logged parent (see the module docstring).

    ``starts``: ``LoggedParent``s (or plain (parent order, exec's clock at acceptance)
    pairs) from the algo log, with the amends and recorded profile logged; ``children``:
    parent id -> its child orders in the order they were sent; ``events``: the record's
    execution events and requests in publication order; ``venue``: ``fills_since``,
    ``open_orders``, ``knows_order``."""
    out = AlgoRecovery()
    logged = [s if isinstance(s, LoggedParent) else LoggedParent(*s) for s in starts]
    if not logged:
        return out  # no parent was ever accepted in this run
    parent_ids = {s.order.client_order_id for s in logged}
    child_of: dict[int, int] = {}
    for pc, kids in children.items():
        for c in kids:
            child_of[c.client_order_id] = pc
    out.order_ids = parent_ids | set(child_of)
    r = _Rebuild(out, _seen_upstream(events, parent_ids), venue, child_of, now_ns)
    for lp in logged:
        snap = r.parent(lp, list(children.get(lp.order.client_order_id, ())))
        if snap.state == AlgoState.WORKING or any(c.is_open for c in snap.children):
            out.parents.append(snap)
    # fills first (in the venue's order), then closes: a child's fills precede its close
    r.replay_fills.sort(key=lambda f: f.fill_id)
    out.replay = [*r.replay_fills, *r.replay_close]
    return out


@dataclass
class _Upstream:
    """What upstream saw of each parent, from the record."""

    announced: set[int] = field(default_factory=set)
    ended: dict[int, int] = field(default_factory=dict)  # parent -> AlgoState it ended in
    fills: dict[int, list[OrderPartiallyFilled]] = field(default_factory=dict)
    cancel_req: set[int] = field(default_factory=set)
    replaced: dict[int, int] = field(default_factory=dict)  # parent -> OrderReplaced seen


def _seen_upstream(events: Iterable[Any], parent_ids: set[int]) -> _Upstream:
    up = _Upstream()
    for ev in events:
        coid = getattr(ev, "client_order_id", None)
        if coid not in parent_ids:
            continue
        t = type(ev)
        if t is OrderAccepted:
            up.announced.add(coid)
        elif t is OrderPartiallyFilled or t is OrderFilled:
            up.fills.setdefault(coid, []).append(ev)
            if t is OrderFilled:
                up.ended[coid] = int(AlgoState.DONE)
        elif t is OrderCanceled or t is OrderExpired:
            up.ended[coid] = int(AlgoState.CANCELED)
        elif t is OrderRejected:  # (a refused cancel/replace is another type: no end)
            up.ended[coid] = int(AlgoState.REJECTED)
        elif t is CancelOrder:
            up.cancel_req.add(coid)
        elif t is OrderReplaced:
            up.replaced[coid] = up.replaced.get(coid, 0) + 1
    return up


class _Rebuild:
    """One rebuild: the venue's truth about the children, and what it adds to ``out``."""

    def __init__(
        self,
        out: AlgoRecovery,
        up: _Upstream,
        venue: ExecutionClient,
        child_of: dict[int, int],
        now_ns: int,
    ) -> None:
        self.out, self.up, self.venue, self.now_ns = out, up, venue, now_ns
        self.vfills: dict[int, list[OrderPartiallyFilled]] = {}
        for f in venue.fills_since(0):
            if f.client_order_id in child_of:
                self.vfills.setdefault(f.client_order_id, []).append(f)
        self.vopen = {
            o.client_order_id: o for o in venue.open_orders() if o.client_order_id in child_of
        }
        self.replay_fills: list[OrderPartiallyFilled] = []
        self.replay_close: list[Any] = []

    def note(self, kind: int, o: Any, stored: int, venue_v: int, action: str) -> None:
        self.out.events.append(
            ReconciliationEvent(
                int(kind), o.client_order_id, o.instrument_id, stored, venue_v, action, self.now_ns
            )
        )

    def parent(self, lp: LoggedParent, kids: list[NewOrder]) -> ParentSnapshot:
        """The parent as upstream last saw it, with each child as the venue has it."""
        up, order = self.up, lp.order
        pc = order.client_order_id
        seen = {f.fill_id for f in up.fills.get(pc, ()) if f.fill_id}
        snap = ParentSnapshot(
            order=order,
            start_ns=int(lp.start_ns),
            state=up.ended.get(pc, int(AlgoState.WORKING)),
            announced=pc in up.announced,
            cancel_requested=pc in up.cancel_req,
            amends=list(lp.amends),
            # the record has fewer OrderReplaced than the log has amends: exec died in between
            amend_announced=up.replaced.get(pc, 0) >= len(lp.amends),
            profile=lp.profile,
        )
        for f in up.fills.get(pc, ()):
            snap.filled += f.fill_qty
            snap.notional_ticks += f.fill_px * f.fill_qty
            snap.fees += f.fee
        for c in kids:
            snap.children.append(self.child(snap, c, seen))
        snap.child_orders = kids
        return snap

    def child(self, snap: ParentSnapshot, c: NewOrder, seen: set[int]) -> ChildSnapshot:
        """A child: the fills upstream saw count; the venue says whether it is open."""
        cc = c.client_order_id
        fills = self.vfills.get(cc, [])
        vopen = self.vopen
        known = self.venue.knows_order(cc) or bool(fills) or cc in vopen
        cs = ChildSnapshot(
            client_order_id=cc,
            qty=c.qty,
            px=c.px,
            sent_ns=c.ts_approved,
            leaves=c.qty,
            accepted=known,
            resting=c.order_type == OrderType.LIMIT
            and c.tif not in (TimeInForce.IOC, TimeInForce.FOK),
        )
        if not known:  # lost on its way: it never existed at the venue
            cs.is_open, cs.leaves, cs.outcome = False, 0, "not at the venue"
            return cs
        for f in fills:
            if f.fill_id in seen:
                cs.cum += f.fill_qty
                cs.leaves -= f.fill_qty
                cs.fill_ids.append(f.fill_id)
        cs.leaves = max(0, cs.leaves)
        if cs.leaves == 0:
            cs.is_open, cs.outcome = False, "filled"
        unseen = [f for f in fills if f.fill_id not in seen]
        if cc in vopen:
            # the venue's price and open quantity: an amend may have replaced the child
            v = vopen[cc]
            cs.is_open, cs.outcome, cs.px = True, "", v.px
            cs.leaves = v.qty + sum(f.fill_qty for f in unseen)
            c = msgspec.structs.replace(c, px=v.px, qty=v.qty + sum(f.fill_qty for f in fills))
        if snap.state != AlgoState.WORKING:
            self._of_ended_parent(cs, c, fills, unseen)
        else:
            self._of_working_parent(cs, c, snap.order, fills, unseen)
        return cs

    def _of_ended_parent(
        self,
        cs: ChildSnapshot,
        c: NewOrder,
        fills: list[OrderPartiallyFilled],
        unseen: list[OrderPartiallyFilled],
    ) -> None:
        """Upstream saw the parent end: a later fill is an anomaly (noted), an open child is
        canceled at the venue."""
        cc = c.client_order_id
        for f in unseen:
            self.note(K.MISSING_FILL, f, 0, f.fill_qty, "child fill after its parent ended")
        if cc in self.vopen:
            v = self.vopen[cc]
            cs.is_open, cs.leaves = True, v.qty
            self.out.open_children.append((c, _venue_oid(fills), fills))
            self.note(K.ORDER_MISMATCH, v, 0, v.qty, "child of an ended parent: canceled")
        elif cs.is_open:
            cs.is_open, cs.leaves, cs.outcome = False, 0, "canceled"

    def _of_working_parent(
        self,
        cs: ChildSnapshot,
        c: NewOrder,
        order: NewOrder,
        fills: list[OrderPartiallyFilled],
        unseen: list[OrderPartiallyFilled],
    ) -> None:
        """The fills upstream missed are replayed; a child closed at the venue with quantity
        left gets its close replayed."""
        cc = c.client_order_id
        self.replay_fills.extend(unseen)
        if unseen:
            self.note(
                K.MISSING_FILL, order, 0, sum(f.fill_qty for f in unseen), "parent fill published"
            )
        if cc in self.vopen:
            self.out.open_children.append((c, _venue_oid(fills), fills))
        elif cs.is_open and cs.cum + sum(f.fill_qty for f in unseen) < c.qty:
            # closed at the venue (an IOC remainder, a cancel, a reject) with quantity left
            left = c.qty - cs.cum - sum(f.fill_qty for f in unseen)
            self.replay_close.append(
                OrderCanceled(
                    cc,
                    c.instrument_id,
                    left,
                    "recovery: closed at the venue",
                    0,
                    self.now_ns,
                    self.now_ns,
                )
            )


def _venue_oid(fills: list[OrderPartiallyFilled]) -> int:
    return fills[0].venue_order_id if fills else 0
