"""The order table and its transition table: legal moves only, anomalies recorded, rebuildable.

The stateful hypothesis test drives random orders, venue events (acks, fills — partial, full,
duplicated, oversized —, cancels, replaces, rejects, expiries, events for unknown orders) and
local requests against ``OrderTable`` and checks after every step: no illegal state, no illegal
transition, a finished order never changes, filled quantity never exceeds the order's, and the
position the table reports equals the position from the fills it accepted.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.messages import (
    CancelRejectReason,
    NewOrder,
    OrderAccepted,
    OrderAnomaly,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderTriggered,
    OrderType,
    ReplaceRejectReason,
    Side,
    TimeInForce,
)
from engine.oms import OrderSnapshot, OrderTable
from engine.order_states import (
    FLAT,
    ILLEGAL,
    LIVE,
    N_EVENTS,
    OPEN,
    TERMINAL,
    TRANSITIONS,
    OrderEvent,
    OrderStatus,
    target,
)

S = OrderStatus
E = OrderEvent


def order(coid: int, qty: int = 10, side: int = Side.BUY, iid: int = 1) -> NewOrder:
    return NewOrder(coid, 1, iid, side, OrderType.LIMIT, TimeInForce.GTC, 100, qty, 5, 6)


def fill(coid: int, qty: int, fid: int, side: int = Side.BUY, iid: int = 1, last: bool = False):
    cls = OrderFilled if last else OrderPartiallyFilled
    return cls(coid, 77, iid, side, 100, qty, 0, 0, 0.0, 1, fid, 5, 9, 9)


def ack(coid: int) -> OrderAccepted:
    return OrderAccepted(coid, 77, 1, 1, 100, 10, 5, 9, 9)


# --- the table itself ---------------------------------------------------------------------


def test_transition_table_is_complete_and_terminal_states_are_final():
    assert set(TRANSITIONS) == set(OrderStatus)
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED} == TERMINAL
    assert set(OrderStatus) == OPEN | TERMINAL and not OPEN & TERMINAL
    for s in OrderStatus:
        for e in OrderEvent:
            want = TRANSITIONS[s].get(e, ILLEGAL)
            assert FLAT[s * N_EVENTS + e] == want == target(s, e)
    # the life cycle of the issue is there, end to end
    path = [E.SUBMIT, E.ACK, E.PARTIAL_FILL, E.FILL]
    s = S.INITIALIZED
    for e in path:
        s = S(target(s, e))
    assert s == S.FILLED
    assert target(S.ACCEPTED, E.TRIGGER) == S.TRIGGERED
    assert target(S.PENDING_CANCEL, E.CANCEL_REJECT) == LIVE
    assert target(S.CANCELED, E.PARTIAL_FILL) == ILLEGAL


def test_fill_after_cancel_duplicate_fill_and_unknown_order_are_recorded_not_applied():
    t = OrderTable()
    seen: list[OrderAnomaly] = []
    t.on_anomaly = seen.append
    t.add(order(1), 0)
    assert t.apply(ack(1))
    assert t.apply(fill(1, 4, fid=1))
    assert not t.apply(fill(1, 4, fid=1))  # the same fill again
    assert t.request_cancel(1)
    assert t.apply(OrderCanceled(1, 1, 6, "canceled", 5, 10, 10))
    assert not t.apply(fill(1, 2, fid=2))  # crossed the cancel
    assert not t.apply(fill(99, 1, fid=3))  # never ours
    assert not t.apply(OrderExpired(98, 1, 0, 5, 11, 11))
    assert [a.kind for a in seen] == [
        "duplicate_fill",
        "fill_after_terminal",
        "fill_unknown_order",
        "event_unknown_order",
    ]
    assert seen[1].state == S.CANCELED and (seen[1].fill_id, seen[1].qty) == (2, 2)
    assert seen[2].state == -1
    r = t.get(1)
    assert (r.state, r.cum_qty, r.leaves_qty) == (S.CANCELED, 4, 0)
    assert t.position(1) == 4
    assert list(t.anomaly_log) == seen


def test_fills_during_pending_cancel_count_and_a_refused_cancel_restores_the_live_state():
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    t.apply(ack(1))
    assert t.request_cancel(1) and t.state(1) == S.PENDING_CANCEL
    assert t.apply(fill(1, 3, fid=1))
    assert t.state(1) == S.PENDING_CANCEL and t.get(1).leaves_qty == 7
    assert t.apply(OrderCancelRejected(1, 1, CancelRejectReason.REFUSED, "too late", 5, 9, 9))
    assert t.state(1) == S.PARTIALLY_FILLED
    assert t.apply(fill(1, 7, fid=2, last=True)) and t.state(1) == S.FILLED
    assert t.open_count == 0 and t.position(1) == 10
    # a late refusal of a request is a normal race, not an anomaly
    late = OrderCancelRejected(1, 1, CancelRejectReason.NOT_OPEN, "no longer open", 5, 9, 9)
    assert not t.apply(late)
    assert not t.apply(OrderReplaceRejected(1, 1, ReplaceRejectReason.NOT_OPEN, "", 5, 9, 9))
    assert t.late_request_rejects == 2 and t.anomalies == {}


def test_an_order_rejected_is_the_order_s_end_whatever_its_reason_text_says():
    """No string protocol: only the types say "a request was refused"."""
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    t.apply(ack(1))
    assert t.request_cancel(1)
    assert t.apply(OrderRejected(1, 1, "cancel rejected: too late", 5, 9, 9))
    assert t.state(1) == S.REJECTED and t.late_request_rejects == 0


def test_two_replaces_in_flight_stay_pending_until_both_are_answered():
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    t.apply(ack(1))
    assert t.request_replace(1) and t.request_replace(1)
    assert t.apply(OrderReplaced(1, 1, 101, 8, 5, 9, 9))
    assert t.state(1) == S.PENDING_REPLACE
    refused = OrderReplaceRejected(1, 1, ReplaceRejectReason.INVALID, "px", 5, 9, 9)
    assert t.apply(refused)
    r = t.get(1)
    assert (r.state, r.px, r.qty, r.leaves_qty) == (S.ACCEPTED, 101, 8, 8)
    # an answer nobody asked for is illegal
    assert not t.apply(refused)
    assert t.anomalies == {"illegal_transition": 1}


def test_overfill_and_duplicate_ack_are_anomalies():
    t = OrderTable()
    t.add(order(1, qty=5), 0)
    assert t.apply(ack(1))
    assert not t.apply(ack(1))
    assert not t.apply(fill(1, 6, fid=1))
    assert not t.apply(fill(1, 0, fid=2))
    assert t.anomalies == {"duplicate_ack": 1, "overfill": 1, "bad_fill": 1}
    assert t.get(1).cum_qty == 0 and t.state(1) == S.ACCEPTED


def test_venue_fill_that_says_done_closes_the_order_short():
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    assert t.apply(fill(1, 4, fid=1, last=True))
    r = t.get(1)
    assert (r.state, r.cum_qty, r.leaves_qty) == (S.FILLED, 4, 0) and not r.is_open


def test_local_requests_refused_where_the_table_forbids_them():
    t = OrderTable()
    t.add(order(1), 0, submitted=False)
    assert t.state(1) == S.INITIALIZED
    assert not t.request_cancel(1)  # nothing at the venue to cancel
    assert t.submit(1) and t.state(1) == S.SUBMITTED
    assert not t.submit(1)
    t.apply(OrderRejected(1, 1, "no", 5, 9, 9))
    assert not t.request_cancel(1) and not t.request_replace(1) and not t.submit(1)
    assert not t.request_cancel(404)


def test_snapshot_restore_round_trip_keeps_states_fill_ids_and_positions():
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    t.add(order(2, qty=5, side=Side.SELL), 0)
    t.add(order(3, qty=5), 0)
    for c in (1, 2, 3):
        t.apply(ack(c))
    t.apply(fill(1, 4, fid=11))
    t.apply(fill(2, 5, fid=12, side=Side.SELL, last=True))
    t.request_cancel(3)
    stored = msgspec.json.encode(t.snapshot())
    snaps = msgspec.json.decode(stored, type=list[OrderSnapshot])
    u = OrderTable.restore(snaps)
    for c in (1, 2, 3):
        a, b = t.get(c), u.get(c)
        assert (a.state, a.cum_qty, a.leaves_qty, a.qty, a.fill_ids) == (
            b.state,
            b.cum_qty,
            b.leaves_qty,
            b.qty,
            b.fill_ids,
        )
    assert u.positions == t.positions == {1: -1}
    assert [r.client_order_id for r in u.open_orders()] == [1, 3]
    assert not u.apply(fill(1, 4, fid=11))  # replayed after the restart: still a duplicate
    assert u.apply(OrderCanceled(3, 1, 5, "canceled", 5, 9, 9)) and u.state(3) == S.CANCELED
    bad = msgspec.structs.replace(snaps[0], state=42)
    with pytest.raises(ValueError):
        OrderTable.restore([bad])


def test_rebuild_by_replaying_orders_and_events_gives_the_same_table():
    events = [ack(1), fill(1, 3, fid=1), ack(2), fill(2, 5, fid=2, last=True), fill(1, 3, fid=1)]
    live = OrderTable()
    orders = [order(1), order(2, qty=5)]
    for o in orders:
        live.add(o, 0)
    for ev in events:
        live.apply(ev)
    again = OrderTable.rebuild(orders, events)
    assert again.positions == live.positions == {1: 8}
    assert {c: r.state for c, r in again.orders.items()} == {1: S.PARTIALLY_FILLED, 2: S.FILLED}
    assert again.anomalies == live.anomalies == {"duplicate_fill": 1}


# --- the stateful property test ---------------------------------------------------------------

_LIVE_TARGETS = {S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.PENDING_REPLACE, S.TRIGGERED}


def _allowed(prev: int, events: tuple[int, ...]) -> set[int]:
    out = {prev}
    for e in events:
        t = target(prev, e)
        if t == LIVE:
            out |= _LIVE_TARGETS
        elif t != ILLEGAL:
            out.add(t)
    return out


class OmsMachine(RuleBasedStateMachine):
    """Random orders and venue events against one OrderTable."""

    def __init__(self) -> None:
        super().__init__()
        self.t = OrderTable()
        self.next_coid = 1
        self.next_fid = 1
        self.fills: list[OrderPartiallyFilled] = []  # every fill event sent (for duplicates)
        self.forwarded_pos: dict[int, int] = {}
        self.prev: dict[int, int] = {}

    coids = st.integers(min_value=1, max_value=12)

    # --- helpers -----------------------------------------------------------------------------
    def _apply(self, ev: object, *events: int) -> None:
        coid = getattr(ev, "client_order_id", 0)
        before = self.t.state(coid)
        ok = self.t.apply(ev)
        after = self.t.state(coid)
        if before is not None:
            assert after in _allowed(before, events), (before, after, ev)
            if not ok:
                assert after == before  # an anomaly leaves the order as it was
        if ok and isinstance(ev, OrderPartiallyFilled):
            self.forwarded_pos[ev.instrument_id] = (
                self.forwarded_pos.get(ev.instrument_id, 0) + ev.side * ev.fill_qty
            )

    def _side(self, coid: int) -> tuple[int, int]:
        r = self.t.get(coid)
        return (r.side, r.instrument_id) if r is not None else (Side.BUY, 1)

    # --- rules ---------------------------------------------------------------------------------
    @precondition(lambda self: self.next_coid <= 12)
    @rule(
        qty=st.integers(1, 20),
        side=st.sampled_from([Side.BUY, Side.SELL]),
        iid=st.integers(1, 2),
        sent=st.booleans(),
    )
    def new_order(self, qty: int, side: int, iid: int, sent: bool) -> None:
        o = order(self.next_coid, qty=qty, side=side, iid=iid)
        assert self.t.add(o, 0, submitted=sent) is not None
        assert self.t.add(o, 1) is None  # idempotent
        self.next_coid += 1

    @rule(coid=coids)
    def submit(self, coid: int) -> None:
        before = self.t.state(coid)
        if self.t.submit(coid):
            assert target(before, E.SUBMIT) != ILLEGAL

    @rule(coid=coids)
    def venue_ack(self, coid: int) -> None:
        self._apply(OrderAccepted(coid, 500 + coid, 1, 1, 100, 10, 5, 9, 9), E.ACK)

    @rule(coid=coids, qty=st.integers(-1, 25), last=st.booleans())
    def venue_fill(self, coid: int, qty: int, last: bool) -> None:
        side, iid = self._side(coid)
        self.next_fid += 1
        ev = (OrderFilled if last else OrderPartiallyFilled)(
            coid, 500 + coid, iid, side, 100, qty, 0, 0, 0.0, 1, self.next_fid, 5, 9, 9
        )
        self.fills.append(ev)
        self._apply(ev, E.PARTIAL_FILL, E.FILL)

    @precondition(lambda self: self.fills)
    @rule(k=st.integers(0, 1000))
    def duplicate_fill(self, k: int) -> None:
        self._apply(self.fills[k % len(self.fills)], E.PARTIAL_FILL, E.FILL)

    @rule(coid=coids)
    def request_cancel(self, coid: int) -> None:
        before = self.t.state(coid)
        if self.t.request_cancel(coid):
            assert target(before, E.CANCEL_REQUEST) != ILLEGAL

    @rule(coid=coids)
    def request_replace(self, coid: int) -> None:
        before = self.t.state(coid)
        if self.t.request_replace(coid):
            assert target(before, E.REPLACE_REQUEST) != ILLEGAL

    @rule(coid=coids)
    def venue_canceled(self, coid: int) -> None:
        self._apply(OrderCanceled(coid, 1, 0, "canceled", 5, 9, 9), E.CANCELED)

    @rule(
        coid=coids,
        kind=st.sampled_from(["cancel", "replace", "order"]),
        reason=st.integers(1, 10),
        detail=st.sampled_from(["", "x", "cancel rejected: x", "replace rejected: x"]),
    )
    def venue_reject(self, coid: int, kind: str, reason: int, detail: str) -> None:
        if kind == "order":  # the order's own reject, whatever its text says: no prefix protocol
            self._apply(OrderRejected(coid, 1, detail, 5, 9, 9), E.REJECT)
            return
        r = self.t.get(coid)
        terms = None if r is None else (r.px, r.qty, r.cum_qty, r.leaves_qty, r.venue_order_id)
        late = self.t.late_request_rejects
        if kind == "cancel":
            reason = min(reason, len(CancelRejectReason))
            self._apply(OrderCancelRejected(coid, 1, reason, detail, 5, 9, 9), E.CANCEL_REJECT)
        else:
            self._apply(OrderReplaceRejected(coid, 1, reason, detail, 5, 9, 9), E.REPLACE_REJECT)
        if r is not None:  # a refused request leaves the order's terms as they were
            assert (r.px, r.qty, r.cum_qty, r.leaves_qty, r.venue_order_id) == terms
            if r.state in TERMINAL:  # crossed the order's end: counted, never an anomaly
                assert self.t.late_request_rejects == late + 1

    @rule(coid=coids, qty=st.integers(1, 20))
    def venue_replaced(self, coid: int, qty: int) -> None:
        self._apply(OrderReplaced(coid, 1, 101, qty, 5, 9, 9), E.REPLACED)

    @rule(coid=coids)
    def venue_expired(self, coid: int) -> None:
        self._apply(OrderExpired(coid, 1, 0, 5, 9, 9), E.EXPIRED)

    @rule(coid=coids)
    def triggered(self, coid: int) -> None:
        self._apply(OrderTriggered(coid, 1, 1, 99, 99, 1, 0, 10, True, 5, 9, 9), E.TRIGGER)

    # --- invariants ----------------------------------------------------------------------------
    @invariant()
    def states_legal_and_terminal_final(self) -> None:
        for coid, r in self.t.orders.items():
            assert r.state in OrderStatus.__members__.values()
            prev = self.prev.get(coid)
            if prev is not None and prev in TERMINAL:
                assert r.state == prev, "a finished order changed"
            self.prev[coid] = r.state
            assert (coid in self.t._open) == (r.state not in TERMINAL)

    @invariant()
    def quantities_consistent(self) -> None:
        for r in self.t.orders.values():
            assert 0 <= r.cum_qty <= r.qty
            if r.is_open:
                assert r.leaves_qty == r.qty - r.cum_qty
            else:
                assert r.leaves_qty == 0

    @invariant()
    def position_equals_fills(self) -> None:
        pos = {k: v for k, v in self.t.positions.items() if v}
        assert pos == {k: v for k, v in self.forwarded_pos.items() if v}
        from_orders: dict[int, int] = {}
        for r in self.t.orders.values():
            from_orders[r.instrument_id] = from_orders.get(r.instrument_id, 0) + r.side * r.cum_qty
        assert pos == {k: v for k, v in from_orders.items() if v}


OmsMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOmsStateMachine = OmsMachine.TestCase


def test_a_confirmed_anomalous_fill_is_applied_once_by_reconciliation():
    t = OrderTable()
    t.add(order(1, qty=10), 0)
    t.apply(ack(1))
    t.request_cancel(1)
    t.apply(OrderCanceled(1, 1, 10, "canceled", 5, 9, 9))
    assert not t.apply(fill(1, 3, fid=7))  # crossed the cancel
    a = t.anomaly_log[-1]
    assert a.kind == "fill_after_terminal" and t.position(1) == 0
    assert t.accept_fill(a)  # the venue confirms it
    r = t.get(1)
    assert (r.state, r.cum_qty, t.position(1)) == (S.CANCELED, 3, 3)
    assert not t.accept_fill(a) and not t.apply(fill(1, 3, fid=7))  # never twice
    t.add(order(2, qty=5), 0)
    assert not t.apply(fill(2, 6, fid=8))
    assert t.accept_fill(t.anomaly_log[-1])
    r = t.get(2)
    assert (r.state, r.qty, r.cum_qty, r.leaves_qty) == (S.FILLED, 6, 6, 0)
    assert t.position(1) == 9
