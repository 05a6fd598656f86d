"""A list leg made of two venue orders: where the venue refuses to enlarge a working leg (its
parent's fills grew it), exec sends a second order for the difference and shows both as the one
leg upstream.

Why: an OTO child tracks its parent's fills, and some venues cannot amend an order up (or refuse
this one). Leaving the child short of the parent's fills would leave part of the position
without its exit. The second order ("top-up") takes an exec-owned id (``next_exec_id``) and the
leg's terms, no list fields (the leg's rules are exec's); its events are merged onto the leg,
as the smart router merges its venue legs (``engine.routing``):

- the leg's enlargement is announced as an ``OrderReplaced`` when the top-up is sent (the leg's
  open size upstream counts both orders);
- a fill of either order is a fill of the leg (the venue's own fill id: the venue numbers fills
  across its orders, so reconciliation still matches them), ``leaves_qty`` the open lots of
  both, and ``OrderFilled`` only when nothing of either is open;
- an end (canceled, expired, rejected) of the top-up alone shrinks the leg (``OrderReplaced``);
  an end of the first order while a top-up is open cancels the top-up, and the leg's end is
  published once both have ended; a cancel the venue refuses because the first order is done
  cancels the open top-ups instead.

Exec's later resizes of such a leg amend the first order (its open lots = the leg's wanted
open lots less the top-ups'; a venue refusing again gets another top-up); a resize that leaves
the first order nothing cancels the top-ups first. Limits (docs/orders-and-algos.md): a top-up
keeps the price it was sent at (a strategy's amend moves the first order). Across an exec
restart: each top-up is written down before it is sent (``on_send``; ``procs.exec_topups``
keeps the file), reconciliation folds it into its leg (``engine.reconcile``, ``topups``) and
``restore`` rebuilds the relation from the venue, so the leg goes on as one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from engine.emulation import EMULATABLE, triggered_order
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
)

if TYPE_CHECKING:
    from engine.exec_engine import ExecEngine

_ENDS = (OrderCanceled, OrderExpired, OrderRejected)


@dataclass(slots=True)
class TopUp:
    leg: int  # the list leg's client order id
    qty: int
    cum: int = 0
    open: bool = True


#: the first order's state while its leg has top-ups: filled, or the end it had
FILLED = "filled"


class TopUps:
    """The top-ups of exec's list legs (module docstring)."""

    def __init__(self, engine: ExecEngine) -> None:
        self.e = engine
        self.extra: dict[int, TopUp] = {}  # top-up id -> its state
        self.of_leg: dict[int, list[int]] = {}  # leg -> its top-up ids
        self._first_done: dict[int, Any] = {}  # leg -> FILLED, or the first order's end event
        self.sent = 0
        self.canceling: set[int] = set()  # top-ups whose cancel is on its way
        #: called (top-up id, leg, lots) before a top-up goes to the venue: the durable record a
        #: restart rebuilds the relation from (``procs.exec_topups``)
        self.on_send: Callable[[int, int, int], None] | None = None

    def __bool__(self) -> bool:
        return bool(self.extra)

    def canceling_of(self, leg: int) -> bool:
        """Whether a cancel of one of the leg's top-ups is on its way (its end resizes the leg:
        exec resizes it again only then)."""
        return any(x in self.canceling for x in self.of_leg.get(leg, ()))

    def open_qty(self, leg: int) -> int:
        """What is open of the leg's top-ups."""
        return sum(t.qty - t.cum for x in self.of_leg.get(leg, ()) if (t := self.extra[x]).open)

    # --- sending -----------------------------------------------------------------------------
    def send(self, r: Any, diff: int, now_ns: int, out: list[object]) -> None:
        """A second order of ``diff`` lots for the leg of record ``r`` (open at the venue)."""
        e = self.e
        o: NewOrder = r.order
        if r.triggered and o.order_type in EMULATABLE:  # what went to the venue when it fired
            o = triggered_order(o, r.stop_px)
        xid = e.next_exec_id()
        order = msgspec.structs.replace(
            o,
            client_order_id=xid,
            px=r.px or o.px,
            qty=diff,
            parent_id=0,
            contingency=0,
            linked=[],
            list_id=0,
            ts_origin=now_ns,
        )
        coid = r.client_order_id
        if self.on_send is not None:
            self.on_send(xid, coid, diff)  # written down before the venue can know it
        self.extra[xid] = TopUp(coid, diff)
        self.of_leg.setdefault(coid, []).append(xid)
        self.sent += 1
        grown = OrderReplaced(coid, r.instrument_id, r.px, r.leaves_qty + diff, 0, now_ns, now_ns)
        e._route(grown, now_ns, out, True)
        e.sent += 1
        e._filter(e.venue.submit(order, now_ns), now_ns, out)

    def cancel_open(self, leg: int, now_ns: int, out: list[object]) -> bool:
        """Cancel the leg's open top-ups at the venue; False if none was open."""
        e = self.e
        ids = [x for x in self.of_leg.get(leg, ()) if self.extra[x].open]
        r = e.table.get(leg)
        sid, iid = (r.order.strategy_id, r.instrument_id) if r is not None else (0, 0)
        for x in ids:
            self.canceling.add(x)
            e._filter(e.venue.cancel(CancelOrder(x, sid, iid, now_ns, now_ns), now_ns), now_ns, out)
        return bool(ids)

    def restore(self, sent: Mapping[int, tuple[int, int]], now_ns: int) -> int:
        """After a restart (the order table reconciled with ``engine.reconcile``'s ``topups``):
        the top-ups ``sent`` (id -> (leg, lots), what ``on_send`` recorded) still open at the
        venue become parts of their open legs again, their filled lots from the venue's fills.
        A leg whose first order the venue no longer has open waits for its top-ups to end
        (as after a fill of the first order); a top-up whose leg has ended is canceled at the
        venue (nothing upstream would manage it). Returns how many were restored."""
        e = self.e
        venue_open = {o.client_order_id for o in e.venue.open_orders()}
        live = {x: v for x, v in sent.items() if x in venue_open}
        if not live:
            return 0
        cum: dict[int, int] = {}
        for f in e.venue.fills_since(0):
            if f.client_order_id in live:
                cum[f.client_order_id] = cum.get(f.client_order_id, 0) + f.fill_qty
        n = 0
        for xid, (leg, qty) in sorted(live.items()):
            r = e.table.get(leg)
            if xid in self.extra:
                continue
            if r is None or not r.is_open:
                self._cancel_orphan(xid, leg, r, now_ns)
                continue
            self.extra[xid] = TopUp(leg, qty, min(qty, cum.get(xid, 0)))
            self.of_leg.setdefault(leg, []).append(xid)
            if leg not in venue_open:
                self._first_done[leg] = FILLED
            n += 1
        return n

    def _cancel_orphan(self, xid: int, leg: int, r: Any, now: int) -> None:
        """Cancel top-up ``xid`` of an ended leg (record ``r``) at the venue; its events are
        dropped (a finished part, ``_of_topup``)."""
        e = self.e
        self.extra[xid] = TopUp(leg, 0)
        sid, iid = (r.order.strategy_id, r.instrument_id) if r is not None else (0, 0)
        e._filter(e.venue.cancel(CancelOrder(xid, sid, iid, now, now), now), now, [])

    # --- merging -----------------------------------------------------------------------------
    def merge(self, ev: Any, now_ns: int, out: list[object]) -> list[Any] | None:
        """What the leg's record and upstream see for ``ev``: the events to route (None: ``ev``
        is not about a leg with top-ups, route it as it is)."""
        coid = ev.client_order_id
        t = self.extra.get(coid)
        if t is not None:
            return self._of_topup(t, ev, now_ns, out)
        if coid not in self.of_leg:
            return None
        if coid not in self._first_done:
            return self._of_first(coid, ev, now_ns, out)
        if type(ev) is OrderCancelRejected and self._first_done[coid] is FILLED:
            # a cancel of the leg after its first order filled: the top-ups are what is open
            return [] if self.cancel_open(coid, now_ns, out) else None
        return None

    def _fill(self, leg: int, r: Any, ev: Any) -> Any:
        """``ev`` (a fill of either order) as a fill of the leg: the open lots of both left."""
        leaves = max(0, r.leaves_qty - ev.fill_qty)
        cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
        return cls(
            leg, r.venue_order_id, ev.instrument_id, ev.side, ev.fill_px, ev.fill_qty,
            r.cum_qty + ev.fill_qty, leaves, ev.fee, ev.liquidity, ev.fill_id, ev.ts_origin,
            ev.ts_event, ev.ts_recv,
        )  # fmt: skip

    def _of_topup(self, t: TopUp, ev: Any, now_ns: int, out: list[object]) -> list[Any]:
        r = self.e.table.get(t.leg)
        tp = type(ev)
        if tp is OrderCancelRejected or isinstance(ev, _ENDS):
            self.canceling.discard(ev.client_order_id)
        if not t.open or r is None or not r.is_open:
            return []  # (a late event of a finished part)
        if tp is OrderPartiallyFilled or tp is OrderFilled:
            t.cum += ev.fill_qty
            if tp is OrderFilled or t.cum >= t.qty:
                t.open = False
            evs = [self._fill(t.leg, r, ev)]
            if not t.open and self.open_qty(t.leg) == 0:
                first = self._first_done.get(t.leg)
                if first is not None and first is not FILLED and type(evs[0]) is not OrderFilled:
                    evs.append(first)  # the first order had ended: the leg ends with this
                self._forget(t.leg)
            return evs
        if isinstance(ev, _ENDS):
            t.open = False
            rest = t.qty - t.cum
            if self.open_qty(t.leg) > 0 or t.leg not in self._first_done:
                # the other orders work on: the leg shrinks by what this one left
                left = max(0, r.leaves_qty - rest)
                return [OrderReplaced(t.leg, r.instrument_id, r.px, left, 0, now_ns, now_ns)]
            first = self._first_done[t.leg]
            self._forget(t.leg)
            if first is not FILLED:
                return [first]
            why = getattr(ev, "reason", "") or "expired"
            return [OrderCanceled(t.leg, r.instrument_id, r.leaves_qty, why, ev.ts_origin,
                                  now_ns, now_ns)]  # fmt: skip
        return []  # accepted, a cancel / replace answer: the leg's own state says it

    def _of_first(self, leg: int, ev: Any, now_ns: int, out: list[object]) -> list[Any] | None:
        r = self.e.table.get(leg)
        if r is None or self.open_qty(leg) == 0:
            return None
        tp = type(ev)
        if tp is OrderPartiallyFilled or tp is OrderFilled:
            if tp is OrderFilled or ev.leaves_qty == 0:
                self._first_done[leg] = FILLED
            return [self._fill(leg, r, ev)]
        if tp is OrderReplaced:  # the first order's new open size: the leg's adds the top-ups'
            return [msgspec.structs.replace(ev, qty=ev.qty + self.open_qty(leg))]
        if isinstance(ev, _ENDS):
            self._first_done[leg] = ev
            self.cancel_open(leg, now_ns, out)
            # the leg ends when its top-ups have; till then what is open of it is theirs (as a
            # restart finds it at the venue)
            left = self.open_qty(leg)
            if r.leaves_qty == left:
                return []
            return [OrderReplaced(leg, r.instrument_id, r.px, left, 0, now_ns, now_ns)]
        return None

    def _forget(self, leg: int) -> None:
        self._first_done.pop(leg, None)
        for x in self.of_leg.pop(leg, []):
            self.extra.pop(x, None)
            self.canceling.discard(x)
