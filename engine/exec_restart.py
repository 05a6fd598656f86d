"""Restarting exec's state: the order table, algo parents, order lists and session orders
back after a crash, and the comparison with the venue.

Why a module of its own: bringing exec back (rebuild, re-arm, re-hold, reconcile) is a job apart
from running orders, and ``engine.exec_engine`` stays about the running. ``ExecRestart`` is a
mixin of ``ExecEngine``: these are its methods, on its state. The recovery sequence of the exec
process is ``procs.recovery``; the contracts are docs/orders-and-algos.md and
docs/storage-and-recovery.md.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from engine.contingent import is_list_order
from engine.exec_lists import local_members
from engine.messages import OrderAccepted
from engine.oms import OrderSnapshot, OrderTable
from engine.order_states import OrderStatus
from engine.sessions import SESSION_TIFS, next_session_ns, session_time


class ExecRestart:
    """``ExecEngine``'s restart methods (see the module docstring): they use the engine's
    state (``table``, ``emulator``, ``_held``, ``algo``, ``lists``, ...), set in its
    ``__init__``."""

    def restore(self, snapshots: Iterable[OrderSnapshot]) -> None:
        """Rebuild the order table after a restart (``OrderTable.restore``), before any order.

        Emulated stops not yet triggered are armed again at their amended terms (a trailing
        stop's mark restarts from the market unless ``restore_trails`` gives it back; legs of
        order lists are left to ``restore_lists``, call it next); orders that
        were held (INITIALIZED) come back held — a later
        ``ExchangeStatus`` OPEN or ``set_trading_status(VENUE_WIDE, False, now)`` sends them.
        Exec's own id counter moves past every restored id of its block. Reconcile the result
        with the venue's open orders and positions before trading (DESIGN §7).
        """
        table = OrderTable.restore(snapshots)
        table.on_anomaly = self._anomalies.append
        self.table = table
        for r in table.open_orders():
            coid = r.client_order_id
            if is_list_order(r.order):
                continue  # list legs: ``restore_lists`` holds or arms them
            if r.emulated and not r.triggered:
                self.emulator.rearm(r.order, r.leaves_qty, r.px)
            elif r.state == OrderStatus.INITIALIZED:
                self._held[coid] = r.order
        lo = self._next_id
        for coid in table.orders:
            if lo < coid <= self._id_limit:
                self._next_id = max(self._next_id, coid)

    def restore_lists(
        self, now_ns: int, local: set[int] | None = None, requests: Iterable[object] = ()
    ) -> list[object]:
        """Bring the order lists back after a restart, once the order table is restored or
        rebuilt (``engine.exec_lists.ListWorker.restore``); returns the events to publish.
        ``local``: the legs that never reached the venue (``engine.exec_lists.local_members``,
        which is the default); ``requests``: the cancel / replace requests exec took, in
        order (the journal's: an amend of a list-sized leg sets its full size).

        At-the-open / at-the-close orders exec held (in ``local`` too) are held again until
        their session time — the one that was due when they arrived; if it passed while exec
        was down, they are canceled (``recovery: its session time passed while exec was
        down``): a missed open is not traded at the next one."""
        self._now = now_ns
        if local is None:
            orders = [r.order for r in self.table.orders.values()]
            local = local_members(orders, self.table, self.venue)
        out: list[object] = []
        self._restore_sessions(local, now_ns, out)
        self._restore_emulated(local, now_ns, out)
        return out + self._lw.restore(now_ns, local, requests)

    def restore_trails(self, trails: dict[int, tuple[int, int]]) -> int:
        """Give the trailing orders armed again (after ``restore`` / ``restore_lists``) the mark
        and level they had (``procs.exec_trails``: the last one exec journaled for each);
        returns how many it set."""
        n = 0
        for coid, (mark, stop) in trails.items():
            if self.emulator.trail_state(coid) is not None:
                self.emulator.set_trail(coid, mark, stop)
                n += 1
        return n

    def restore_topups(self, sent: dict[int, tuple[int, int]], now_ns: int) -> int:
        """The second orders of list legs (``engine.exec_topups``) still open at the venue
        made parts of their legs again (``sent``: id -> (leg, lots), ``procs.exec_topups``);
        on a table reconciled with those ids as ``topups``, before ``restore_lists`` (whose
        resizes of a leg count its top-ups' open lots)."""
        self._now = now_ns
        return self._lw.tops.restore(sent, now_ns)

    def _restore_emulated(self, local: set[int], now_ns: int, out: list[object]) -> None:
        """Plain orders exec emulated and never sent (in ``local``: not triggered, unknown to
        the venue) armed again, at their amended terms (the table's ``px``, set by the
        ``OrderReplaced`` of an amend); a table rebuilt from the journal does not know they are
        emulated, so it is said here. One the emulator refuses now is canceled."""
        for r in self.table.open_orders():
            o = r.order
            coid = o.client_order_id
            if coid not in local or coid in self.emulator or r.triggered:
                continue
            if is_list_order(o) or o.tif in SESSION_TIFS or not self.emulates(o):
                continue  # list legs: ``restore_lists``; session orders: ``_restore_sessions``
            r.emulated = True
            why = self.emulator.rearm(o, r.leaves_qty, r.px)
            if why:
                self._local_cancel(o, f"recovery: {why}", now_ns, now_ns, out)
            else:
                self.schedule_expiry(o, now_ns)
        self._flush(out)

    def _restore_sessions(self, local: set[int], now_ns: int, out: list[object]) -> None:
        off = self.wall_offset_ns
        for r in self.table.open_orders():
            o = r.order
            coid = o.client_order_id
            if o.tif not in SESSION_TIFS or coid not in local or coid in self._session_wait:
                continue  # (list legs never wait for a session: refused on arrival)
            ins = self.instruments.by_id(o.instrument_id)
            due = next_session_ns(o.ts_approved + off, ins.session_tz, session_time(ins, o.tif))
            if due - off <= now_ns:
                why = "recovery: its session time passed while exec was down"
                self._local_cancel(o, why, now_ns, now_ns, out)
                continue
            self._session_wait[coid] = o
            heapq.heappush(self._session_due, (due - off, coid))
        self._flush(out)

    def restore_algos(self, rec: Any, now_ns: int) -> list[object]:
        """Rebuild the algo parents that were working before a restart (after the order table
        is restored or reconciled); returns the events to publish.

        ``rec`` is an ``engine.algos.AlgoRecovery`` (``rebuild_parents``): children still open
        at the venue enter the order table in the venue's state (so their later events are
        accepted and their cancels go out), then ``AlgoEngine.restore`` rebuilds the parents,
        publishes the parent fills upstream missed and resumes or ends each parent by its
        policy. Child orders it makes go out through the ordinary path."""
        out: list[object] = []
        if self.algo is None or rec is None:
            return out
        self._now = now_ns
        for child, venue_oid, fills in rec.open_children:
            if self.table.add(child, now_ns) is None:
                continue  # already known (adopted by plain reconciliation): keep that record
            self.table.apply(OrderAccepted.for_order(child, venue_oid, now_ns, now_ns))
            for f in fills:
                self.table.apply(f)
        self._algo_out(self.algo.restore(rec.parents, now_ns, rec.replay), now_ns, out)
        self._flush(out)
        return out

    def reconcile(self) -> dict[str, Any]:
        """Compare the order table with what the venue reports (open orders, positions).

        Returns the differences, nothing changed: ``missing_at_venue`` (open here, sent, but
        not open there: ended unheard — ask the venue for its fills), ``unknown_open`` (open
        there, not open here: cancel them or adopt them), ``positions`` (instrument ->
        (ours, venue's)) where they differ. Confirmed fills are applied with
        ``table.accept_fill(anomaly)``.
        """
        venue_open = {o.client_order_id for o in self.venue.open_orders()}
        by_venue_id = {self._venue_id.get(c, c): c for c in self.table._open}
        local = (
            set(self._held)
            | set(self._session_wait)
            | {
                c
                for c in self.table._open
                if c in self.emulator
                or ((leg := self.lists.legs.get(c)) is not None and leg.waiting)
            }
        )
        missing = [
            c
            for v, c in by_venue_id.items()
            if v not in venue_open and c not in local and c not in self._retry_count
        ]
        unknown = sorted(v for v in venue_open if v not in by_venue_id)
        theirs = self.venue.positions()
        pos = {
            iid: (self.table.position(iid), theirs.get(iid, 0))
            for iid in set(theirs) | set(self.table.positions)
            if self.table.position(iid) != theirs.get(iid, 0)
        }
        return {"missing_at_venue": sorted(missing), "unknown_open": unknown, "positions": pos}
