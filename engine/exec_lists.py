"""Exec's hands for order lists: holds, releases, resizes and cancels the legs that
``engine.contingent`` says should change, through the exec engine's own paths.

Why apart from ``engine.exec_engine``: the rules live in ``ContingentBook`` (pure, level-
triggered); this is the glue that turns "the take-profit should be 7 lots now" into a local
``OrderReplaced`` of a held order, a venue amend, an ``OrderTriggered`` release or a cancel —
and brings the lists back after a restart. Every event it makes goes through the engine's
``_route`` (the order table, then upstream), so strategies, risk, the portfolio and the
recorder see each leg as the order it is.

What upstream sees of a list leg (docs/orders-and-algos.md):

- a held OTO child is accepted by exec itself (``OrderAccepted`` with ``venue_order_id`` 0),
  at the size the strategy sent;
- its release: an ``OrderReplaced`` to the size the parent's fills give (when that differs),
  then an ``OrderTriggered`` (``emulated``, ``trigger_px`` the parent's average fill price) as
  it goes to the venue — a stop child instead goes to exec's stop emulation, triggered later
  like any emulated stop; growth with later parent fills: ``OrderReplaced`` (an amend);
- an end the list decides (parent ended unfilled, an OCO peer filled, OUO peers took it all):
  ``OrderCanceled``.

Native lists: where the venue client says ``supports_contingency(kind)`` for every kind a leg
involves and offers ``submit_list(orders, now_ns)``, legs are collected and handed over
together at exec's next ``poll`` (a strategy sends a list's legs together, so they arrive in
one batch); the venue then runs the list and exec only forwards its events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from engine.contingent import OCO, OTO, Facts, is_list_order
from engine.emulation import market_to_limit
from engine.exec_topups import TopUps
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderReplaceRejected,
    OrderTriggered,
    OrderType,
    ReplaceOrder,
)
from engine.order_states import OrderStatus
from engine.sessions import SESSION_TIFS

if TYPE_CHECKING:  # the engine owns us: no import cycle
    from engine.exec_engine import ExecEngine

_BUSY = (OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_REPLACE)
#: order types whose ``px`` is not a limit: an amend's price is their trigger level
_STOP_PX = (int(OrderType.STOP), int(OrderType.TRAILING_STOP), int(OrderType.MARKET_IF_TOUCHED))


def held_by_exec(o: NewOrder) -> bool:
    """Whether exec may hold this order itself without the venue ever seeing it across a
    restart: a leg of an order list, an at-the-open / at-the-close order."""
    return is_list_order(o) or o.tif in SESSION_TIFS


def amended(o: NewOrder, px: int) -> NewOrder:
    """A held leg with an amend's price: the trigger level of a stop-priced type, else the
    limit (0 keeps a stop's level). The same rule reads the ``px`` an ``OrderReplaced`` left in
    the order table back after a restart."""
    if o.order_type in _STOP_PX:
        return msgspec.structs.replace(o, stop_px=px or o.stop_px)
    return msgspec.structs.replace(o, px=px)


def local_members(orders: Iterable[NewOrder], table: Any, venue: Any) -> set[int]:
    """Orders open in ``table`` that never reached the venue and that exec holds again after
    a restart (``held_by_exec``): held children, emulated legs not yet triggered, session
    orders. Reconciliation keeps them open (it would otherwise close them as "not open at the
    venue")."""
    out: set[int] = set()
    for o in orders:
        if not held_by_exec(o):
            continue
        r = table.get(o.client_order_id)
        if r is None or not r.is_open or r.triggered or r.venue_order_id:
            continue
        if not venue.knows_order(o.client_order_id):
            out.add(o.client_order_id)
    return out


class ListWorker:
    """Works the exec engine's ``ContingentBook``."""

    def __init__(self, engine: ExecEngine) -> None:
        self.e = engine
        self.lists = engine.lists
        self._queue: list[int] = []
        self._draining = False
        self._native_buf: list[NewOrder] = []
        self.released = 0  # children released (sent on, or armed) after their parent filled
        self.resized = 0  # amends exec made to keep a leg at its wanted size
        self.ended = 0  # legs the list ended (cancels of held or working legs)
        #: cancels sent to the venue because of the list: the reason their OrderCanceled gives
        self.why_ended: dict[int, str] = {}
        self.refused = 0  # amends / cancels of legs the venue refused
        self._refused: dict[int, int] = {}  # leg -> the wanted size the venue refused to make
        self.tops = TopUps(engine)  # legs made of two venue orders (a refused enlargement)

    # --- what the book reads ---------------------------------------------------------------------
    def facts(self, coid: int) -> Facts | None:
        r = self.e.table.get(coid)
        if r is None:
            return None
        return Facts(r.cum_qty, r.is_open, r.order.qty)

    # --- new legs, requests --------------------------------------------------------------------
    def new_member(self, order: NewOrder, now_ns: int, out: list[object]) -> None:
        """A leg of a list from risk: refused, held, handed to the venue's list, or sent."""
        e = self.e
        coid = order.client_order_id
        if coid in e.table:
            e.duplicates += 1
            return
        why = e._refusal(order) or self._check_emulated(order)
        if not why and order.tif in SESSION_TIFS:
            why = "contingent: a leg of an order list cannot wait for a session (at-the-open/close)"
        if not why:
            why = self.lists.admit(order, self.facts)
            if not why and not order.parent_id:
                why = self.lists.dead(coid, self.facts)  # an OCO peer filled before it came
                if why:
                    self.lists.forget([coid])
        if why:
            e.table.add(order, now_ns, submitted=False)
            e._local_reject(order, why, now_ns, out)
            return
        leg = self.lists.legs[coid]
        if self._native_ok(order):
            leg.native, leg.waiting = True, False
            e.table.add(order, now_ns, submitted=False)
            self._native_buf.append(order)
            return
        if leg.waiting:
            e.table.add(order, now_ns, submitted=False, emulated=e.emulates(order))
            e.schedule_expiry(order, now_ns)  # held by exec: a DAY / GTD leg expires here
            e._route(OrderAccepted.for_order(order, 0, now_ns, now_ns), now_ns, out)
        else:
            e._new(order, now_ns, out)
        self.touch([coid], now_ns, out)

    def _check_emulated(self, order: NewOrder) -> str:
        """An emulated leg's terms, checked on arrival (a held stop is armed only later)."""
        if not self.e.emulates(order):
            return ""
        em = self.e.emulator
        why = em.add(order)
        if not why:
            em.cancel(order.client_order_id)
        return why

    def _native_ok(self, order: NewOrder, late: bool = True) -> bool:
        """Whether the venue runs this leg in its list. A child whose native parent went to the
        venue already (``late``: at an earlier poll, without it) is the venue's only where the
        client says it takes such a child (``accepts_child(child) -> why``, "" = yes); else exec
        holds it and releases it on the parent's fills like any child (the parent's events
        pass the order table either way)."""
        v = self.e.venue
        sup = getattr(v, "supports_contingency", None)
        if sup is None or not hasattr(v, "submit_list"):
            return False
        kinds = {order.contingency} - {0}
        if order.parent_id:
            parent = self.lists.legs.get(order.parent_id)
            if parent is None or not parent.native:
                return False
            if late and not any(o.client_order_id == order.parent_id for o in self._native_buf):
                acc = getattr(v, "accepts_child", None)
                if not callable(acc) or acc(order):
                    return False
            kinds.add(OTO)
        lv = getattr(v, "list_venue", None)  # a router: one of its venues must take it all
        if callable(lv) and lv([order.instrument_id], kinds) is None:
            return False
        return all(sup(k) for k in kinds)

    def flush_native(self, now_ns: int, out: list[object]) -> None:
        """Hand the legs collected since the last poll to the venue as one list."""
        if not self._native_buf:
            return
        e = self.e
        legs = [o for o in self._native_buf if e.table.submit(o.client_order_id, now_ns)]
        self._native_buf.clear()
        if legs:
            e.sent += len(legs)
            e._filter(e.venue.submit_list(legs, now_ns), now_ns, out)

    def holds(self, coid: int) -> bool:
        """Whether exec holds this leg itself: a waiting child, a native leg not yet handed
        over (a cancel of it is done locally)."""
        leg = self.lists.legs.get(coid)
        if leg is None:
            return False
        return leg.waiting or (
            leg.native and any(o.client_order_id == coid for o in self._native_buf)
        )

    def drop(self, coid: int) -> bool:
        """Stop holding a leg (it is being canceled); False if exec did not hold it."""
        if not self.holds(coid):
            return False
        leg = self.lists.legs[coid]
        leg.waiting = False
        self._native_buf = [o for o in self._native_buf if o.client_order_id != coid]
        return True

    def replace_member(self, rep: ReplaceOrder, now_ns: int, out: list[object]) -> None:
        """The strategy amends a leg. A leg the list sizes (an OTO child, an OUO peer) takes
        the amend's quantity as its full size (``ContingentBook.set_base``) and is brought to
        what the rules then want; a held one is amended here, a working one at the venue.
        Another leg (a parent, an OCO leg) is amended as any order."""
        e = self.e
        coid = rep.client_order_id
        r = e.table.get(coid)
        leg = self.lists.legs[coid]
        if r is None or not r.is_open or rep.new_qty <= 0 or not self.lists.governed(coid):
            e._replace(rep, now_ns, out)  # the ordinary path (and its answers)
            return
        self.lists.set_base(coid, rep.new_qty)
        self._refused.pop(coid, None)  # a new full size: a refusal of the old one says nothing
        if not leg.waiting:
            want = self.lists.want(coid, self.facts)
            extra = self.tops.open_qty(coid)  # a second order's open lots (``exec_topups``)
            if extra and want - r.cum_qty - extra <= 0:
                # smaller than the second order alone: that goes first, then the leg's
                # resize amends the first order (as ``_sync``) — once all have ended: their
                # answers queue (an answer at once would resize it with the rest still open)
                drained, self._draining = self._draining, True
                try:
                    self.tops.cancel_open(coid, now_ns, out)
                finally:
                    self._draining = drained
                self.touch([], now_ns, out)
                return
            rep = msgspec.structs.replace(rep, new_qty=max(1, want - r.cum_qty - extra))
            e._replace(rep, now_ns, out)
            return
        leg.order = amended(leg.order, rep.new_px)
        ev = OrderReplaced(
            coid, rep.instrument_id, rep.new_px, rep.new_qty, rep.ts_origin, now_ns, now_ns
        )
        e._route(ev, now_ns, out)

    # --- events ------------------------------------------------------------------------------
    def on_event(self, ev: Any, now_ns: int, out: list[object]) -> None:
        """An event of a leg passed the order table: count an OCO race, then let the rules act
        on the legs it may move."""
        coid = ev.client_order_id
        tp = type(ev)
        if tp is OrderReplaceRejected or tp is OrderCancelRejected:
            # the venue will not amend / cancel it: not asked again for the same size (a
            # venue that cannot amend keeps the leg at its size; counted in ``refused``); a
            # refused enlargement gets a second order for the difference (``exec_topups``)
            self.refused += 1
            want = self._refused[coid] = self.lists.want(coid, self.facts)
            r = self.e.table.get(coid)
            if tp is OrderReplaceRejected and r is not None and self._can_top_up(coid, r, want):
                self.tops.send(r, want - r.qty, now_ns, out)
            self.touch([c for c in self.lists.affected(coid) if c != coid], now_ns, out)
            return
        if isinstance(ev, OrderPartiallyFilled):
            self.lists.note_fill(coid, ev.fill_qty, self.facts)
        self.touch(self.lists.affected(coid), now_ns, out)

    def _can_top_up(self, coid: int, r: Any, want: int) -> bool:
        """Whether a refused amend of a working leg is an enlargement exec makes with a second
        order: the leg is exec's (not native), at the venue (not held, not armed in exec)."""
        leg = self.lists.legs[coid]
        return (
            want > r.qty
            and r.is_open
            and r.state not in _BUSY
            and not leg.native
            and not leg.waiting
            and coid not in self.e.emulator
        )

    def _in_flight(self, coid: int, r: Any) -> bool:
        """Whether this working leg went to the venue on its release / trigger and is not
        acknowledged yet (not held back by a halt or awaiting a retry)."""
        e = self.e
        return (
            r.state == OrderStatus.TRIGGERED
            and not r.emulated  # a triggered stop's growth waits for its ack (left: docs)
            and coid not in self.tops._first_done  # its first order ended: no more lots
            and coid not in e._held
            and coid not in e.emulator
            and not any(c == coid for _, _, c in e._retry_due)
            and not self.lists.legs[coid].native
        )

    def touch(self, coids: list[int], now_ns: int, out: list[object]) -> None:
        """Bring these legs to what the rules want (one pass at a time: what it causes queues)."""
        self._queue.extend(coids)
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                self._sync(self._queue.pop(0), now_ns, out)
        finally:
            self._draining = False

    def _sync(self, coid: int, now_ns: int, out: list[object]) -> None:
        lists = self.lists
        leg = lists.legs.get(coid)
        r = self.e.table.get(coid)
        if leg is None or leg.native or r is None or not r.is_open or r.state in _BUSY:
            return
        why = lists.dead(coid, self.facts)
        if leg.waiting:
            if why:
                leg.waiting = False
                self.ended += 1
                self.e._local_cancel(r.order, why, now_ns, now_ns, out)
                return
            want = lists.want(coid, self.facts)
            if want > 0:
                self._release(leg, r, want, now_ns, out)
            return
        if not why and not lists.governed(coid):
            return
        want = lists.want(coid, self.facts)
        if self._refused.get(coid) == want:
            return  # the venue refused to make it so: not asked again until the want moves
        if why or want <= r.cum_qty:
            self._end(r, why or "contingent: reduced to nothing by its OUO peers", now_ns, out)
        elif want > r.qty and self._in_flight(coid, r):
            # sent (released / triggered), not yet acknowledged: it cannot be amended yet (the
            # table refuses a replace of a TRIGGERED order), and a fill before the ack would
            # leave the growth lost; the difference goes to a second order (``exec_topups``)
            self.tops.send(r, want - r.qty, now_ns, out)
        elif want != r.qty and not self.tops.canceling_of(coid):  # (else: once they ended)
            extra = self.tops.open_qty(coid)  # a second order's open lots (``exec_topups``)
            first = want - r.cum_qty - extra  # what the first order should have open
            if first <= 0:  # smaller than the second order alone: that goes first
                self.tops.cancel_open(coid, now_ns, out)
                return
            self.resized += 1
            px = r.px if r.px or r.order.order_type not in _STOP_PX else r.stop_px
            rep = ReplaceOrder(
                coid, r.order.strategy_id, r.instrument_id, px, first, now_ns, now_ns
            )
            self.e._replace(rep, now_ns, out)

    def _release(self, leg: Any, r: Any, want: int, now_ns: int, out: list[object]) -> None:
        """A held child goes on at ``want`` lots: to the venue, or armed if exec emulates it."""
        e = self.e
        coid = r.client_order_id
        leg.waiting = False
        self.released += 1
        o = leg.order
        if want != r.qty:
            px = r.px if r.px or o.order_type not in _STOP_PX else o.stop_px
            resized = OrderReplaced(coid, r.instrument_id, px, want, o.ts_origin, now_ns, now_ns)
            e._route(resized, now_ns, out)
        order = msgspec.structs.replace(o, qty=want, ts_origin=now_ns)
        if r.emulated:
            why = e.emulator.add(order)
            if why:
                e._local_reject(order, why, now_ns, out)
            return
        parent = e.table.get(o.parent_id)
        trig_px = round(parent.avg_px) if parent is not None else 0
        ev = OrderTriggered(
            coid,
            o.instrument_id,
            o.side,
            0,
            trig_px,
            o.order_type,
            o.px,
            want,
            True,
            o.ts_origin,
            now_ns,
            now_ns,
        )
        e._route(ev, now_ns, out)
        r = e.table.get(coid)
        if r is None or r.state != OrderStatus.TRIGGERED:
            return
        if o.order_type == OrderType.MARKET_TO_LIMIT and o.order_type not in e.policy.native_types:
            iid = o.instrument_id
            limit, why = market_to_limit(
                order, e.emulator.bid.get(iid, 0), e.emulator.ask.get(iid, 0)
            )
            if limit is None:
                e._local_reject(order, why, now_ns, out)
                return
            order, r.px = limit, limit.px
        e._dispatch(order, now_ns, out)

    def _end(self, r: Any, why: str, now_ns: int, out: list[object]) -> None:
        """What is open of a working leg is canceled: locally if exec holds it, else at the
        venue."""
        e = self.e
        coid = r.client_order_id
        self.ended += 1
        if coid in e.emulator or coid in e._held:
            e._drop_local(coid)
            e._local_cancel(r.order, why, now_ns, now_ns, out)
            return
        self.why_ended[coid] = why
        c = CancelOrder(coid, r.order.strategy_id, r.instrument_id, now_ns, now_ns)
        e._cancel(c, now_ns, out)

    def named_cancel(self, ev: OrderCanceled) -> OrderCanceled:
        """The venue's ``OrderCanceled`` of a leg the list canceled, with the list's reason."""
        why = self.why_ended.pop(ev.client_order_id, None)
        return ev if why is None else msgspec.structs.replace(ev, reason=why)

    # --- restart -------------------------------------------------------------------------------
    def restore(
        self, now_ns: int, local: set[int] | None = None, requests: Iterable[object] = ()
    ) -> list[object]:
        """Bring the lists back from the order table after a restart (the table rebuilt from
        the journal and the venue first): every leg registered again; legs that never reached
        the venue (``local``; by default found by ``local_members``) held again, or armed if
        exec emulates them and their parent filled; then every leg brought to what the rules
        want now — a parent fill exec missed while down releases or grows its children, a
        peer's fill cancels its OCO peers. ``requests``: the cancel / replace requests exec
        took (the journal's), in order: a strategy's amend of a list-sized leg says its full
        size."""
        e = self.e
        out: list[object] = []
        orders = [r.order for r in e.table.orders.values()]
        if local is None:
            local = local_members(orders, e.table, e.venue)
        members = [o for o in orders if is_list_order(o)]
        for o in members:
            if o.client_order_id not in self.lists:
                self.lists.register(o, self.facts)
        for o in members:  # an OCO leg that filled second (by the venue's fill ids) raced
            r = e.table.get(o.client_order_id)
            if r is None or not r.fill_ids or o.contingency != OCO:
                continue
            first = min(r.fill_ids)
            for p in self.lists.legs[o.client_order_id].peers:
                pr = e.table.get(p)
                if pr is not None and pr.fill_ids and min(pr.fill_ids) < first:
                    self.lists.legs[o.client_order_id].raced = True
        for q in requests:
            c = getattr(q, "client_order_id", 0)
            if type(q) is ReplaceOrder and c in self.lists and self.lists.governed(c):
                self.lists.set_base(c, q.new_qty)
        for o in members:
            coid = o.client_order_id
            leg = self.lists.legs[coid]
            r = e.table.get(coid)
            leg.native = self._native_ok(o, late=False) and coid not in local
            leg.waiting = False
            if r is None or not r.is_open or coid not in local:
                continue
            r.emulated = e.emulates(o)  # a table rebuilt from the journal does not know it
            if r.px > 0 and r.px != o.px:  # an amend of the held leg (its OrderReplaced)
                leg.order = o = amended(o, r.px)
            if o.parent_id and not r.emulated:
                # never sent, so held: its size is the strategy's (amends included), exec never
                # resized it; released below if its parent's fills give it lots
                leg.waiting = True
            elif o.parent_id and self.lists.want(coid, self.facts) == 0:
                leg.waiting = True  # an emulated child its parent's fills have not released
            elif r.emulated and coid not in e.emulator:
                e.emulator.rearm(o, r.leaves_qty)
        self.touch([o.client_order_id for o in members], now_ns, out)
        e._flush(out)
        return out
