"""A live venue behind reconciliation and a state gate: what exec talks to for a real exchange.

``ReconciledVenue`` wraps one live execution client (``engine.venues.ccxt_exec``, or any client
with ``state()`` and ``reconcile_snapshot()``) and is itself an ``ExecutionClient``:

- **gate**: a new order (or a replace) goes out only while the venue is ``connected``
  (``engine.venue_state``); otherwise it is refused at once, saying the venue's state and why —
  never queued into a venue that is down, banned, resyncing or halted. Cancels always go out.
- **applied once**: every fill passes through the venue's record (``engine.venue_recon``) by
  fill id, so a fill the user stream and the REST backfill both report reaches exec once; an
  order's end that reconciliation already closed is not passed on again.
- **reconciliation after every (re)connect**: from the first connect, and every time the client
  goes down and comes back, new orders wait (``resyncing``) until a snapshot refreshed after
  the drop (``reconcile_snapshot().generation`` greater than when the drop was seen) has been
  compared with the record; what it finds is acted on here, in ``poll`` — missed fills and
  orders that ended unheard are published, unknown orders are adopted / canceled / halt the
  venue per ``external_orders``, and a balance our fills cannot explain halts the venue (after
  a second snapshot agrees, when the client can refresh on request: ``request_reconcile()``).
- **never blocks**: ``reconcile_snapshot()`` returns what the client's own thread fetched last;
  nothing here waits on the network, so it runs inside exec's hot loop.

A venue-wide ``ExchangeStatus`` from the client is taken as its state, not passed on: passed
on, it would halt every venue behind the router (``engine.exec_engine`` halts venue-wide).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceOrder,
    ReplaceRejectReason,
)
from engine.venue_recon import Findings, VenueRecord, compare
from engine.venue_state import (
    AdoptedOrder,
    VenueState,
    VenueStatus,
    external_orders_policy,
    state_of,
)
from engine.venues.base import ExecutionClient, VenueEvent
from engine.venues.live_view import track_external, view_of

__all__ = ["ReconciledVenue", "wrap_live"]

_ENDS = (OrderCanceled, OrderExpired, OrderRejected)
_FILLS = (OrderPartiallyFilled, OrderFilled)


class ReconciledVenue:
    """See the module docstring. ``instruments``: those traded at this venue (balances are
    checked for their base assets); ``external_orders``: ``"adopt" | "cancel" | "halt"``."""

    def __init__(
        self,
        inner: ExecutionClient,
        instruments: Iterable[Instrument],
        *,
        external_orders: str = "halt",
    ) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", "venue"))
        ins = list(instruments)
        mine = [i for i in ins if i.venue == self.name]
        self.instruments = mine or ins  # one venue in the config: every instrument is its
        self._own_ids = [i.instrument_id for i in mine]  # halted with it (``_announce``)
        self._was_up = False
        self._said_halted = False
        self._tick = {i.instrument_id: i.tick_size for i in self.instruments}
        self.policy = external_orders_policy({"external_orders": external_orders})
        self.record = VenueRecord()
        self._in_flight: set[int] = set()  # submitted, not yet answered
        self._drop_gen: int | None = -1  # resyncing until a snapshot newer than this is done
        self._done_gen: int | None = None
        self._asked = False  # a fresh view was asked for since the drop
        self._halt = ""  # why reconciliation halted the venue ("" = it did not)
        self._recheck = ""  # a balance difference waiting for a second snapshot
        self._killed = False  # the kill switch is on: unknown open orders are canceled
        self._raw: Any = None  # the client's last snapshot, and our view of it
        self._view: Any = None
        self._status = VenueStatus(self.name, VenueState.DOWN, "not connected yet", 0)
        #: what reconciliation did, one line each, for the process to log (``take_notes``)
        self.notes: list[str] = []
        #: told the baseline when reconciliation sets one (the process keeps it for a restart)
        self.on_baseline: Callable[[dict[str, float]], None] | None = None
        self.reconciliations = 0
        self.duplicates_dropped = 0  # fills / ends seen twice (stream and REST, or replays)
        self.refused = 0  # new orders and replaces refused while not connected
        self.foreign_events = 0  # events of orders neither sent nor adopted here (dropped)
        self.last_round_trip_ns = 0  # submit to the venue's first answer, of the last answered

    # --- state -----------------------------------------------------------------------------------
    @property
    def checks_balances(self) -> bool:
        """Start-up reconciliation leaves positions to this venue's balance check
        (``engine.reconcile``) — unless the client's account holds no balances of what it
        trades (``holds_balances`` False: a betting venue, whose bets are no assets): then
        start-up compares positions as for any venue."""
        return bool(getattr(self.inner, "holds_balances", True))

    def venue_status(self) -> VenueStatus:
        return self._status

    def trades_instrument(self, instrument_id: int) -> bool:
        """Whether this venue trades the instrument (``engine.routing`` routes by it): its own
        instruments, or every one when none names it."""
        return not self._own_ids or instrument_id in self._own_ids

    def restore_baseline(self, baseline: dict[str, float]) -> None:
        """The run's baseline from before a restart (what the process kept of ``on_baseline``),
        so that balances moved while exec was down are not taken into a new baseline."""
        self.record.baseline = dict(baseline)

    def _compute(self) -> tuple[VenueState, str]:
        if self._halt:
            return VenueState.HALTED, self._halt
        st, why = state_of(self.inner)
        if st != VenueState.CONNECTED:
            return st, why
        if self._drop_gen is not None:
            return VenueState.RESYNCING, "reconciling open orders, fills and balances"
        if self._recheck:
            return VenueState.RESYNCING, f"balances differ, checking again: {self._recheck}"
        return VenueState.CONNECTED, ""

    def _update(self, now_ns: int) -> None:
        st, why = self._compute()
        if st != self._status.state or why != self._status.reason:
            self._status = VenueStatus(self.name, st, why, now_ns)

    def take_notes(self) -> list[str]:
        out, self.notes = self.notes, []
        return out

    # --- requests --------------------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        self._update(now_ns)
        s = self._status
        if s.state != VenueState.CONNECTED:
            self.refused += 1
            why = f"venue {self.name} {s.state.word}" + (f": {s.reason}" if s.reason else "")
            return [OrderRejected.for_order(order, why, now_ns, now_ns)]
        self.record.sent(order, now_ns)
        self._in_flight.add(order.client_order_id)
        return self._through(self.inner.submit(order, now_ns))

    def supports_contingency(self, kind: int) -> bool:
        """Whether the client runs order lists of ``kind`` itself (``engine.contingent``)."""
        f = getattr(self.inner, "supports_contingency", None)
        return bool(callable(f) and f(kind))

    def accepts_child(self, child: NewOrder) -> str:
        """Why the client cannot take a child whose list it runs after the parent went alone
        ("" = it can; a client without ``accepts_child`` cannot: exec holds the child)."""
        f = getattr(self.inner, "accepts_child", None)
        return f(child) if callable(f) else "the venue takes no child after its parent"

    def submit_list(self, orders: list[NewOrder], now_ns: int) -> list[VenueEvent]:
        """A native order list: gated like ``submit`` (every leg refused while not
        connected) and every leg recorded, so its events are ours."""
        self._update(now_ns)
        s = self._status
        if s.state != VenueState.CONNECTED:
            self.refused += len(orders)
            why = f"venue {self.name} {s.state.word}" + (f": {s.reason}" if s.reason else "")
            return [OrderRejected.for_order(o, why, now_ns, now_ns) for o in orders]
        for o in orders:
            self.record.sent(o, now_ns)
            self._in_flight.add(o.client_order_id)
        return self._through(self.inner.submit_list(orders, now_ns))  # type: ignore[attr-defined]

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        return self._through(self.inner.cancel(cancel, now_ns))

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        s = self._status
        if s.state != VenueState.CONNECTED:
            self.refused += 1
            detail = f"venue {self.name} {s.state.word}: {s.reason}"
            R = ReplaceRejectReason.HALTED
            return [OrderReplaceRejected.for_request(replace, R, detail, now_ns, now_ns)]
        return self._through(self.inner.replace(replace, now_ns))

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        return self._through(self.inner.on_market_data(msg, now_ns))

    def poll(self, now_ns: int) -> list[VenueEvent]:
        out = self._through(self.inner.poll(now_ns))
        self._watch(now_ns, out)
        self._update(now_ns)
        self._announce(now_ns, out)
        return out

    def _announce(self, now_ns: int, out: list[VenueEvent]) -> None:
        """Once the venue has traded (or reconciliation halts it, at start too), a stop and the
        end of one is also an ``ExchangeStatus`` per instrument of this venue, so risk halts
        those instruments and strategies hear it (instead of a refusal per order). Only
        instruments that name this venue: one that several venues share keeps trading on the
        others."""
        s = self._status
        if s.state == VenueState.CONNECTED:
            self._was_up = True
            if not self._said_halted:
                return
            self._said_halted, kind, why = False, ExchangeStatusKind.OPEN, f"{self.name} connected"
        elif not self._said_halted and (self._was_up or s.state == VenueState.HALTED):
            self._said_halted, kind = True, ExchangeStatusKind.HALTED
            why = f"{self.name} {s.state.word}: {s.reason}"
        else:
            return
        for iid in self._own_ids:
            out.append(ExchangeStatus(iid, int(kind), why, now_ns, now_ns))

    def __getattr__(self, attr: str) -> Any:  # queries, fees, book, close: the client's
        return getattr(self.inner, attr)

    def seed(self, orders: Iterable[Any], fills: Iterable[OrderPartiallyFilled]) -> None:
        """After a restart's reconciliation (``engine.reconcile``): the open orders it rebuilt
        (``OrderRecord``s of this venue) and every fill it knows, so the first snapshot compares
        against them instead of calling them unknown and history missing."""
        fills = list(fills)
        for r in orders:
            self.record.sent(r.order, 0)
            mine = self.record.orders[r.client_order_id]
            mine.qty = r.cum_qty + r.leaves_qty
        for f in fills:
            self.record.fill(f, self._tick.get(f.instrument_id, 0.0))

    # --- the operator ----------------------------------------------------------------------------
    def resume(self, now_ns: int) -> None:
        """An operator's resume: lift a reconciliation halt and take the venue's balances as
        the new baseline (whoever moved them, the operator has seen it), after a fresh snapshot."""
        self._killed = False
        if not self._halt and not self._recheck:
            return
        self.notes.append(
            f"{self.name}: resumed by the operator (was: {self._halt or self._recheck})"
        )
        self._halt = self._recheck = ""
        f = getattr(self.inner, "resume", None)
        if callable(f):
            f()
        self.record.baseline = None
        self._drop_gen = self._snapshot_gen()
        self._request_refresh()
        self._update(now_ns)

    def kill(self, now_ns: int) -> list[VenueEvent]:
        """The kill switch at this venue: cancel every order open there that the record does not
        have open (external ones; exec cancels its own through the ordinary path) — those in
        the last snapshot now, and, until a resume, every one a later snapshot shows (a fresh
        one is asked for)."""
        self._killed = True
        snap = self._snapshot()
        out: list[VenueEvent] = []
        if snap is not None:
            mine = set(self.record.open_ids())
            for o in snap.open_orders:
                if o.client_order_id not in mine:
                    out += self._cancel_foreign(o, now_ns)
        self._request_refresh()
        return out

    # --- events from the client ------------------------------------------------------------------
    def _through(self, events: list[VenueEvent]) -> list[VenueEvent]:
        if not events:
            return events
        out: list[VenueEvent] = []
        rec = self.record
        for ev in events:
            tp = type(ev)
            if tp is ExchangeStatus and ev.instrument_id < 0:  # type: ignore[attr-defined]
                continue  # the venue's state: ``state()`` says it (module docstring)
            coid = getattr(ev, "client_order_id", None)
            if coid is not None and coid not in rec.orders:
                self.foreign_events += 1  # an order not ours (yet): reconciliation decides
                continue
            if tp in _FILLS:
                self._answered(coid, ev)
                if not rec.fill(ev, self._tick.get(ev.instrument_id, 0.0)):  # type: ignore[attr-defined]
                    self.duplicates_dropped += 1
                    continue
            elif tp in _ENDS:
                self._answered(coid, ev)
                if coid in rec.orders and not rec.close(coid):  # type: ignore[arg-type]
                    self.duplicates_dropped += 1
                    continue
            elif tp is OrderAccepted:
                self._answered(coid, ev)
            elif tp is OrderReplaced:
                rec.replaced(coid, ev.px, ev.qty)  # type: ignore[arg-type,attr-defined]
            out.append(ev)
        return out

    def _answered(self, coid: Any, ev: Any) -> None:
        """The venue's first answer to an order in flight: its round trip is measured (once per
        order, from its ``sent_ns`` to the answer's ``ts_recv``, both monotonic)."""
        if coid in self._in_flight:
            self._in_flight.discard(coid)
            o = self.record.orders.get(coid)
            ts = getattr(ev, "ts_recv", 0)
            if o is not None and ts:
                self.last_round_trip_ns = max(0, ts - o.sent_ns)

    def venue_stats(self, now_ns: int) -> dict[str, Any]:
        """For the operator's views (procs/venue_status.py writes it to shm once a second):
        sessions reopened, reconciliations, the request budget, 429/418 answers, the clock
        offset, the last order round trip, and the orders in flight with the oldest one's age.
        Figures the client does not keep are 0."""
        inner = self.inner
        stats = getattr(inner, "stats", None) or {}
        guard = getattr(inner, "guard", None)
        orders = self.record.orders
        sent = [o.sent_ns for c in list(self._in_flight) if (o := orders.get(c)) and o.sent_ns]
        budget_left = 1.0
        offset_ms = 0
        if guard is not None:
            budget_left = guard.budget.left_ratio(now_ns / 1e9)
            offset_ms = guard.clock.offset_ms
        return {
            "venue": self.name,
            "reconnects": int(stats.get("reconnects", 0)),
            "resyncs": self.reconciliations,
            "budget_left": float(budget_left),
            "http_429": int(getattr(guard, "rate_limited", 0)),
            "http_418": int(getattr(guard, "bans", 0)),
            "clock_offset_ms": int(offset_ms),
            "round_trip_ns": int(self.last_round_trip_ns),
            "in_flight": len(sent),
            "oldest_sent_ns": min(sent) if sent else 0,
        }

    # --- reconciliation --------------------------------------------------------------------------
    def _snapshot(self) -> Any:
        """The client's last REST view in reconciliation's terms (converted once per view)."""
        f = getattr(self.inner, "reconcile_snapshot", None)
        raw = f() if callable(f) else None
        if raw is not self._raw:
            self._raw, self._view = raw, view_of(self.inner, raw)
        return self._view

    def _snapshot_gen(self) -> int:
        snap = self._snapshot()
        return -1 if snap is None else int(snap.generation)

    def _request_refresh(self) -> bool:
        """Ask the client for a fresh REST view; False if it cannot be asked."""
        f = getattr(self.inner, "request_reconcile", None)
        if callable(f):
            f()  # CcxtExecutionClient: a full REST view at its next housekeeping round
            return True
        return False

    def _set_halt(self, reason: str) -> None:
        self._halt = reason
        self.notes.append(f"{self.name}: halted: {reason}")
        f = getattr(self.inner, "halt", None)
        if callable(f):
            f(reason)  # the client refuses order entry too

    def _watch(self, now_ns: int, out: list[VenueEvent]) -> None:
        """Note a drop; reconcile each new snapshot; end ``resyncing`` once one newer than the
        drop is done. A client back to connected without a fresh view (a ban ended: nothing
        reconnected) is asked for one, once per drop."""
        st, _ = state_of(self.inner)
        snap = self._snapshot()
        gen = None if snap is None else int(snap.generation)
        if st != VenueState.CONNECTED:
            if self._drop_gen is None:
                self._drop_gen = -1 if gen is None else gen
            self._asked = False
        elif self._drop_gen is not None and not self._asked and gen is not None:
            self._asked = gen > self._drop_gen or self._request_refresh()
        if snap is None or gen == self._done_gen:
            return
        self._done_gen = gen
        self._reconcile(snap, now_ns, out)
        if self._drop_gen is not None and gen is not None and gen > self._drop_gen:
            self._drop_gen = None

    def _reconcile(self, snap: Any, now_ns: int, out: list[VenueEvent]) -> None:
        self.reconciliations += 1
        had = self.record.baseline
        f = compare(self.record, snap, self.instruments, self._in_flight)
        if had is None and self.record.baseline is not None and self.on_baseline is not None:
            self.on_baseline(dict(self.record.baseline))
        self._apply_missing(f, now_ns, out)
        for coid in f.ended:
            o = self.record.orders[coid]
            self.record.close(coid)
            leaves = max(0, o.qty - o.filled)
            why = f"reconciliation: not open at venue {self.name}"
            out.append(
                OrderCanceled(
                    coid, o.order.instrument_id, leaves, why, o.order.ts_origin, now_ns, now_ns
                )
            )
        for v in f.stale_open:
            self.notes.append(
                f"{self.name}: order {v.client_order_id} closed here, open there: canceled"
            )
            out += self.inner.cancel(_cancel_of(v, now_ns), now_ns)
        self._external(f, snap, now_ns, out)
        self._balances(f)
        if f.differences or f.foreign_fills:
            self.notes.append(
                f"{self.name}: reconciliation {snap.generation}: {len(f.missing)} missed fills "
                f"applied, {len(f.ended)} orders ended unheard, {len(f.external)} unknown open "
                f"({self.policy}), {len(f.stale_open)} stale open canceled, "
                f"{len(f.foreign_fills)} fills of orders not ours"
            )

    def _apply_missing(self, f: Findings, now_ns: int, out: list[VenueEvent]) -> None:
        """Missed fills, re-stated against the record (cum / leaves from what it has seen)."""
        rec = self.record
        for m in f.missing:
            o = rec.orders[m.client_order_id]
            if m.client_order_id in self._in_flight:  # its ack was missed too
                self._in_flight.discard(m.client_order_id)
                out.append(OrderAccepted.for_order(o.order, m.venue_order_id, now_ns, now_ns))
            cum = o.filled + m.fill_qty
            leaves = max(0, o.qty - cum)
            cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
            ev = cls(
                m.client_order_id,
                m.venue_order_id,
                m.instrument_id,
                m.side,
                m.fill_px,
                m.fill_qty,
                cum,
                leaves,
                m.fee,
                m.liquidity,
                m.fill_id,
                m.ts_origin,
                m.ts_event,
                m.ts_recv,  # when the client learned it (the balance check compares by it)
            )
            if rec.fill(ev, self._tick.get(m.instrument_id, 0.0)):
                out.append(ev)

    def _external(self, f: Findings, snap: Any, now_ns: int, out: list[VenueEvent]) -> None:
        if not f.external:
            return
        raw = getattr(snap, "raw_external", {})
        ids = ", ".join(_describe(v, raw.get(v.client_order_id)) for v in f.external[:5])
        policy = "cancel" if self._killed else self.policy  # after a kill: nothing stays open
        if policy == "adopt":
            for v in f.external:
                track_external(self.inner, snap, v.client_order_id, now_ns)
                self.record.sent(v, now_ns)
                out.append(AdoptedOrder(v, self.name))
            self.notes.append(f"{self.name}: adopted {len(f.external)} unknown open orders ({ids})")
        elif policy == "cancel":
            for v in f.external:
                track_external(self.inner, snap, v.client_order_id, now_ns)
                out += self._cancel_foreign(v, now_ns)
            self.notes.append(
                f"{self.name}: canceled {len(f.external)} unknown open orders ({ids})"
            )
        else:
            self._set_halt(
                f"{len(f.external)} open orders at the venue unknown to our record ({ids}); "
                'external_orders = "halt"'
            )

    def _cancel_foreign(self, v: NewOrder, now_ns: int) -> list[VenueEvent]:
        self.inner.cancel(_cancel_of(v, now_ns), now_ns)  # its answers are not ours to publish
        return []

    def _balances(self, f: Findings) -> None:
        if not f.balance_errors:
            self._recheck = ""
            return
        diff = "; ".join(f.balance_errors)
        if self._recheck or not self._request_refresh():
            self._recheck = ""
            self._set_halt(f"balances our fills do not explain: {diff}")
        else:
            self._recheck = diff
            self.notes.append(f"{self.name}: balances differ, checking again: {diff}")


def _describe(v: NewOrder, raw: dict[str, Any] | None) -> str:
    """An order as the operator finds it at the venue: its venue id and client id."""
    if not raw:
        return str(v.client_order_id)
    return f"venue id {raw.get('id')}" + (
        f" client id {raw.get('clientOrderId')}" if raw.get("clientOrderId") else ""
    )


def _cancel_of(v: NewOrder, now_ns: int) -> CancelOrder:
    return CancelOrder(v.client_order_id, v.strategy_id, v.instrument_id, now_ns, now_ns)


def wrap_live(client: ExecutionClient, config: Any) -> ExecutionClient:
    """``client`` behind a ``ReconciledVenue`` when it is a live one (it has
    ``reconcile_snapshot``), with its venue's ``external_orders``; any other client as it is.
    ``config`` is its ``engine.venues.registry.VenueConfig``."""
    if not callable(getattr(client, "reconcile_snapshot", None)):
        return client
    policy = external_orders_policy(config.settings)
    return ReconciledVenue(client, config.instruments, external_orders=policy)  # type: ignore[return-value]
