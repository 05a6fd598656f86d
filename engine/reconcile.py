"""Start-up reconciliation: the stored record against the venue's truth.

When exec (re)starts it rebuilds its order table from what was recorded (PostgreSQL plus the
recorder's journal), then asks the venue what it really has: open orders, fills since the last
one we know, positions. Every difference becomes a ``ReconciliationEvent`` and is resolved toward
the venue, with the execution events the rest of the engine missed:

- a fill the record lacks is applied and published (strategy, risk and the portfolio see it);
- an order the record has as SUBMITTED that the venue accepted gets its ``OrderAccepted``;
- an order open at the venue with another price / open quantity gets an ``OrderReplaced``;
- an order open at the venue the record does not know is adopted (``OrderAccepted``);
- an order open in the record that the venue does not have open is closed (``OrderCanceled``);
- an order closed in the record but open at the venue, or with a cancel pending, is canceled
  at the venue (``to_cancel``): nobody would manage it otherwise;
- positions that still differ after all that are reported (``POSITION_MISMATCH``; ours are the
  fills and the account events that move positions — a settlement leaves one flat, a
  liquidation trades it, ``engine.account_events``) — except at
  a venue that checks its balances itself (``checks_balances``: a live spot venue behind
  ``engine.venues.reconciled.ReconciledVenue``, whose "position" is a balance that holds more
  than this run's fills; its first snapshot compares it with the run's baseline and halts that
  venue, not the engine, on a difference).

Orders still waiting in exec's input (re-delivered after the crash) are kept out of the rebuilt
table unless the venue already has them: those are duplicates and must not be sent twice.

Pure logic: no I/O, time passed in, the venue only queried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.account_events import moves_position, position_after
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderPartiallyFilled,
    OrderReplaced,
    ReconciliationEvent,
    ReconciliationKind,
    Settlement,
)
from engine.oms import OrderStatus, OrderTable
from engine.venues.base import ExecutionClient

K = ReconciliationKind


@dataclass
class Reconciliation:
    table: OrderTable
    publish: list[Any] = field(default_factory=list)  # execution events to publish, in order
    events: list[ReconciliationEvent] = field(default_factory=list)
    to_cancel: list[CancelOrder] = field(default_factory=list)  # send these to the venue
    duplicates: set[int] = field(default_factory=set)  # re-delivered NewOrders the venue has
    fills: list[OrderPartiallyFilled] = field(default_factory=list)  # every fill, stored + found


def reconcile(
    orders: Iterable[NewOrder],
    events: Iterable[Any],
    venue: ExecutionClient,
    now_ns: int,
    pending_new: Iterable[int] = (),
    algo_ids: Iterable[int] = (),
    local_ids: Iterable[int] = (),
    topups: Mapping[int, int] | None = None,
) -> Reconciliation:
    """Rebuild the order table from the record and bring it in line with ``venue``.

    ``algo_ids``: algo parents and their children (``engine.algos.rebuild_parents`` rebuilds
    those): they are not plain orders, so they are neither put in the table, adopted, closed nor
    published here; their venue fills still count in the position check. ``local_ids``: orders
    exec holds itself that never reached the venue (held or armed legs of order lists,
    ``engine.exec_lists.local_members``): kept open, not closed as missing at the venue.
    ``topups``: exec's second orders of list legs (top-up id -> its leg, ``procs.exec_topups``):
    parts of their leg, never orders of their own — their venue fills are the leg's and an
    open one keeps its leg open at the venue, its open lots counted in the leg's."""
    algo = set(algo_ids)
    tops = dict(topups or {})
    keep, dups = _kept_orders(orders, set(pending_new), algo, venue)
    evs = list(events)
    if algo:
        evs = [e for e in evs if getattr(e, "client_order_id", None) not in algo]
    p = _Pass(Reconciliation(table=OrderTable.rebuild(keep, evs), duplicates=dups), now_ns)
    for coid in sorted(dups):
        r = p.table.get(coid)
        if r is not None:
            p.note(
                K.DUPLICATE_SUPPRESSED,
                r.order,
                0,
                0,
                "re-delivered order already at the venue: not sent again",
            )

    stored_fills = [e for e in evs if isinstance(e, OrderPartiallyFilled)]
    known = {f.fill_id for f in stored_fills}
    last = max(known, default=0)
    missing = [f for f in venue.fills_since(last) if f.fill_id not in known]
    algo_fills: list[OrderPartiallyFilled] = []
    if algo:  # every venue fill of a child, seen upstream as a parent fill or not
        algo_fills = [f for f in venue.fills_since(0) if f.client_order_id in algo]
        missing = [f for f in missing if f.client_order_id not in algo]
    venue_open = {
        o.client_order_id: o for o in venue.open_orders() if o.client_order_id not in algo
    }
    if tops:
        missing = [_as_leg_fill(f, tops, set(tops.values())) for f in missing]
        venue_open = _legs_at_venue(venue_open, tops, p.table)
    p.missing_acks(venue_open, {f.client_order_id for f in missing})
    p.missing_fills(missing)
    p.out.fills = stored_fills + missing
    p.open_at_venue(venue_open)
    p.open_in_record_only(venue_open, set(local_ids))
    if not getattr(venue, "checks_balances", False):
        moved = [e for e in evs if isinstance(e, OrderPartiallyFilled) or moves_position(e)]
        p.positions(moved + missing + _after_settlements(algo_fills, moved), venue.positions())
    return p.out


def _as_leg_fill(
    f: OrderPartiallyFilled, tops: Mapping[int, int], legs: set[int]
) -> OrderPartiallyFilled:
    """A venue fill of either order of a leg with top-ups as a fill of the leg: never the
    leg's end by itself (the leg's record ends when its filled lots reach its size)."""
    leg = tops.get(f.client_order_id, f.client_order_id)
    if leg not in legs:
        return f
    fields = msgspec.structs.asdict(f)
    fields["client_order_id"] = leg
    return OrderPartiallyFilled(**fields)


def _legs_at_venue(
    venue_open: dict[int, Any], tops: Mapping[int, int], table: OrderTable
) -> dict[int, Any]:
    """The venue's open orders with each open top-up folded into its leg: the leg is open there
    if either part is, with both parts' open lots (at the first order's price, or the record's
    when only the top-up is left)."""
    out = {c: v for c, v in venue_open.items() if c not in tops}
    for xid, leg in tops.items():
        v = venue_open.get(xid)
        r = table.get(leg)
        if v is None or r is None or not r.is_open:
            continue  # (one whose leg ended: ``TopUps.restore`` cancels it at the venue)
        have = out.get(leg)
        if have is not None:
            out[leg] = msgspec.structs.replace(have, qty=have.qty + v.qty)
            continue
        px = r.px or v.px
        out[leg] = msgspec.structs.replace(v, client_order_id=leg, px=px)
    return out


def _after_settlements(fills: list[OrderPartiallyFilled], moved: list[Any]) -> list[Any]:
    """The algo children's venue fills (all of them, in no order with the journal's events)
    less those on an instrument settled after they filled: the settlement left it flat."""
    settled: dict[int, int] = {}
    for e in moved:
        if type(e) is Settlement and not e.partial:
            settled[e.instrument_id] = max(settled.get(e.instrument_id, 0), e.ts_event)
    return [f for f in fills if f.ts_event > settled.get(f.instrument_id, -1)]


def _kept_orders(
    orders: Iterable[NewOrder], pending: set[int], algo: set[int], venue: ExecutionClient
) -> tuple[list[NewOrder], set[int]]:
    """The recorded orders the table is rebuilt from, and the re-delivered ones the venue has."""
    keep: list[NewOrder] = []
    dups: set[int] = set()
    for o in orders:
        if o.client_order_id in algo:
            continue  # a parent the algo log lacks is closed here like an order (never resumed)
        if o.client_order_id in pending:
            if not venue.knows_order(o.client_order_id):
                continue  # exec never sent it: it will, from its input
            dups.add(o.client_order_id)
        keep.append(o)
    return keep, dups


class _Pass:
    """One reconciliation pass: the steps, in order, each noting and publishing into ``out``."""

    def __init__(self, out: Reconciliation, now_ns: int) -> None:
        self.out = out
        self.table = out.table
        self.now_ns = now_ns

    def note(self, kind: int, o: Any, stored: int, venue_v: int, action: str) -> None:
        self.out.events.append(
            ReconciliationEvent(
                int(kind), o.client_order_id, o.instrument_id, stored, venue_v, action, self.now_ns
            )
        )

    def publish(self, ev: Any) -> None:
        if self.table.apply(ev):
            self.out.publish.append(ev)

    def missing_acks(self, venue_open: dict[int, Any], filled_coids: set[int]) -> None:
        """1. acks the record missed (the venue has the order open, or filled it)."""
        now_ns = self.now_ns
        for r in list(self.table.open_orders()):
            if r.state == OrderStatus.SUBMITTED and (
                r.client_order_id in venue_open or r.client_order_id in filled_coids
            ):
                self.note(
                    K.MISSING_ACK,
                    r.order,
                    0,
                    0,
                    "acknowledged at the venue: OrderAccepted published",
                )
                self.publish(OrderAccepted.for_order(r.order, 0, now_ns, now_ns))

    def missing_fills(self, missing: list[OrderPartiallyFilled]) -> None:
        """2. fills the record missed."""
        for f in missing:
            r = self.table.get(f.client_order_id)
            self.note(K.MISSING_FILL, f, 0, f.fill_qty, "venue fill applied and published")
            if r is None:
                self.out.publish.append(f)  # an order we never recorded: the position still moves
            else:
                self.publish(f)

    def open_at_venue(self, venue_open: dict[int, Any]) -> None:
        """3. orders open at the venue: adopted, canceled there, or corrected from it."""
        now_ns = self.now_ns
        for coid, v in venue_open.items():
            r = self.table.get(coid)
            if r is None:
                self.note(
                    K.UNKNOWN_LOCALLY,
                    v,
                    0,
                    v.qty,
                    "open at the venue, unknown to the record: adopted",
                )
                self.table.add(v, now_ns)
                self.publish(OrderAccepted.for_order(v, 0, now_ns, now_ns))
            elif not r.is_open:
                self.note(
                    K.ORDER_MISMATCH,
                    v,
                    0,
                    v.qty,
                    "closed in the record, open at the venue: canceled",
                )
                self.out.to_cancel.append(
                    CancelOrder(coid, v.strategy_id, v.instrument_id, now_ns, now_ns)
                )
            else:
                if r.px != v.px or r.leaves_qty != v.qty:
                    self.note(
                        K.ORDER_MISMATCH,
                        v,
                        r.leaves_qty,
                        v.qty,
                        "price/open quantity taken from the venue",
                    )
                    self.publish(
                        OrderReplaced(
                            coid, v.instrument_id, v.px, v.qty, v.ts_origin, now_ns, now_ns
                        )
                    )
                if r.state == OrderStatus.PENDING_CANCEL:
                    self.out.to_cancel.append(
                        CancelOrder(coid, v.strategy_id, v.instrument_id, now_ns, now_ns)
                    )

    def open_in_record_only(self, venue_open: dict[int, Any], local: set[int]) -> None:
        """4. orders open in the record that the venue does not have open: closed as canceled."""
        for r in list(self.table.open_orders()):
            if (
                r.client_order_id in venue_open
                or r.client_order_id in local
                or getattr(r, "emulated", False)
                or r.state == OrderStatus.INITIALIZED
            ):
                continue
            self.note(
                K.UNKNOWN_AT_VENUE,
                r.order,
                r.leaves_qty,
                0,
                "not open at the venue: closed as canceled",
            )
            self.publish(
                OrderCanceled(
                    r.client_order_id,
                    r.instrument_id,
                    r.leaves_qty,
                    "reconciliation: not open at the venue",
                    r.order.ts_origin,
                    self.now_ns,
                    self.now_ns,
                )
            )

    def positions(self, moved: list[Any], theirs: dict[int, int]) -> None:
        """5. positions that still differ: reported, the venue's is the truth. ``moved``: the
        fills and the account events that move positions (settled: flat), in order."""
        ours: dict[int, int] = {}
        for f in moved:
            iid = f.instrument_id
            if isinstance(f, OrderPartiallyFilled):
                ours[iid] = ours.get(iid, 0) + f.side * f.fill_qty
            else:
                ours[iid] = position_after(ours.get(iid, 0), f)
        for iid in sorted(set(ours) | set(theirs)):
            a, b = ours.get(iid, 0), theirs.get(iid, 0)
            if a != b:
                self.out.events.append(
                    ReconciliationEvent(
                        int(K.POSITION_MISMATCH),
                        0,
                        iid,
                        a,
                        b,
                        "venue position is the truth",
                        self.now_ns,
                    )
                )
