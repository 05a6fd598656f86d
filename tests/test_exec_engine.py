"""ExecEngine + OrderTable: idempotent submission, life-cycle states, anomalies counted not fatal."""

from __future__ import annotations

import pytest

from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
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
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
)
from engine.oms import OrderState, OrderTable

INS = [Instrument(instrument_id=1, symbol="AAA")]


class FakeVenue:
    """Acknowledges at once; everything else is scripted through ``due``."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[NewOrder] = []
        self.cancels: list[CancelOrder] = []
        self.replaces: list[ReplaceOrder] = []
        self.md: list[object] = []
        self.due: list[object] = []

    def submit(self, order, now_ns):
        self.submitted.append(order)
        return [
            OrderAccepted(
                order.client_order_id,
                1000 + len(self.submitted),
                order.instrument_id,
                order.side,
                order.px,
                order.qty,
                order.ts_origin,
                now_ns,
                now_ns,
            )
        ]

    def cancel(self, cancel, now_ns):
        self.cancels.append(cancel)
        return [
            OrderCanceled(
                cancel.client_order_id,
                cancel.instrument_id,
                0,
                "canceled",
                cancel.ts_origin,
                now_ns,
                now_ns,
            )
        ]

    def replace(self, rep, now_ns):
        self.replaces.append(rep)
        return [
            OrderReplaced(
                rep.client_order_id,
                rep.instrument_id,
                rep.new_px,
                rep.new_qty,
                rep.ts_origin,
                now_ns,
                now_ns,
            )
        ]

    def on_market_data(self, msg, now_ns):
        self.md.append(msg)
        out, self.due = self.due, []
        return out

    def poll(self, now_ns):
        out, self.due = self.due, []
        return out

    def open_orders(self):
        return []

    def positions(self):
        return {}


def order(coid=1, qty=10, px=100, otype=OrderType.LIMIT, side=Side.BUY) -> NewOrder:
    return NewOrder(coid, 1, 1, side, otype, TimeInForce.GTC, px, qty, ts_origin=5, ts_approved=6)


def fill(coid, qty, cum, leaves, fid, px=100, last=False):
    cls = OrderFilled if last else OrderPartiallyFilled
    return cls(coid, 1001, 1, Side.BUY, px, qty, cum, leaves, 0.01, 1, fid, 5, 20, 20)


@pytest.fixture
def ex():
    v = FakeVenue()
    return ExecEngine(v, INS), v


def test_duplicate_client_order_id_places_one_order(ex):
    e, v = ex
    first = e.on_order(order(), 10)
    assert [type(x) for x in first] == [OrderAccepted]
    assert e.on_order(order(), 11) == []
    assert e.on_order(order(qty=99), 12) == []  # same id, different content: still not resent
    assert len(v.submitted) == 1 and e.duplicates == 2 and e.sent == 1
    assert e.table.get(1).qty == 10


def test_life_cycle_and_cum_qty(ex):
    e, v = ex
    e.on_order(order(qty=10), 10)
    assert e.state(1) == OrderState.ACCEPTED
    v.due = [fill(1, 4, 4, 6, fid=1, px=100)]
    assert len(e.poll(20)) == 1
    r = e.table.get(1)
    assert r.state == OrderState.PARTIALLY_FILLED and (r.cum_qty, r.leaves_qty) == (4, 6)
    v.due = [fill(1, 6, 10, 0, fid=2, px=103, last=True)]
    assert len(e.on_market_data(Quote(1, 1, 1, 2, 1, 0, 0), 21)) == 1
    assert v.md and r.state == OrderState.FILLED and r.cum_qty == 10
    assert r.avg_px == pytest.approx((4 * 100 + 6 * 103) / 10)
    assert r.fees == pytest.approx(0.02)
    assert not e.open_orders()


def test_cancel_and_replace(ex):
    e, v = ex
    e.on_order(order(coid=1), 10)
    e.on_order(order(coid=2), 10)
    out = e.on_order(ReplaceOrder(1, 1, 1, 101, 7, 5, 11), 11)
    assert [type(x) for x in out] == [OrderReplaced]
    r = e.table.get(1)
    assert (r.state, r.px, r.leaves_qty) == (OrderState.ACCEPTED, 101, 7)
    out = e.on_order(CancelOrder(2, 1, 1, 5, 12), 12)
    assert [type(x) for x in out] == [OrderCanceled] and e.state(2) == OrderState.CANCELED
    # requests for finished or unknown orders never reach the venue
    assert e.on_order(CancelOrder(2, 1, 1, 5, 13), 13) == []
    assert e.on_order(ReplaceOrder(2, 1, 1, 1, 1, 5, 13), 13) == []
    assert e.on_order(CancelOrder(404, 1, 1, 5, 13), 13) == []
    assert len(v.cancels) == 1 and len(v.replaces) == 1 and e.ignored_requests == 3


def test_cancel_all_cancels_every_open_order(ex):
    e, v = ex
    for coid in (1, 2, 3):
        e.on_order(order(coid=coid), 10)
    v.due = [fill(2, 10, 10, 0, fid=1, last=True)]
    e.poll(11)
    out = e.cancel_all(12)
    assert sorted(x.client_order_id for x in out) == [1, 3]
    assert {c.client_order_id for c in v.cancels} == {1, 3}
    assert not e.open_orders()


def test_unsupported_order_type_rejected_without_venue(ex):
    e, v = ex
    out = e.on_order(order(otype=99), 10)
    assert [type(x) for x in out] == [OrderRejected] and "unsupported" in out[0].reason
    assert not v.submitted and e.state(1) == OrderState.REJECTED
    # a type the venue lacks is refused when emulation is off
    e2 = ExecEngine(v, INS, ExecPolicy(emulate=False))
    out = e2.on_order(order(otype=OrderType.STOP), 10)
    assert [type(x) for x in out] == [OrderRejected] and "emulation off" in out[0].reason
    assert not v.submitted
    out = e.on_order(NewOrder(2, 1, 7, 1, 2, 1, 100, 1, 0, 0), 10)
    assert "unknown instrument" in out[0].reason and not v.submitted
    e.on_order(order(coid=3, otype=OrderType.MARKET, px=0), 10)
    assert len(v.submitted) == 1


def test_anomalies_are_dropped_and_counted(ex):
    e, v = ex
    e.on_order(order(coid=1, qty=10), 10)
    e.on_order(order(coid=2, qty=10), 10)
    e.on_order(CancelOrder(2, 1, 1, 5, 11), 11)
    v.due = [
        fill(1, 3, 3, 7, fid=1),
        fill(1, 3, 3, 7, fid=1),  # duplicate fill_id
        fill(404, 1, 1, 0, fid=9, last=True),  # unknown order
        fill(2, 5, 5, 5, fid=2),  # after cancel
        OrderCanceled(2, 1, 0, "again", 5, 30, 30),  # event after terminal
        OrderAccepted(1, 1001, 1, 1, 100, 10, 5, 30, 30),  # second ack
        OrderExpired(405, 1, 0, 5, 30, 30),  # unknown order
    ]
    out = e.poll(30)
    forwarded = [x for x in out if not isinstance(x, OrderAnomaly)]
    assert len(forwarded) == 1 and forwarded[0].fill_id == 1
    # every dropped event is published as an OrderAnomaly record
    assert sorted(a.kind for a in out if isinstance(a, OrderAnomaly)) == sorted(e.anomalies)
    assert e.anomalies == {
        "duplicate_fill": 1,
        "fill_unknown_order": 1,
        "fill_after_terminal": 1,
        "event_after_terminal": 1,
        "duplicate_ack": 1,
        "event_unknown_order": 1,
    }
    assert e.table.get(1).cum_qty == 3 and e.state(2) == OrderState.CANCELED


def test_order_table_overfill_dropped_and_recorded():
    t = OrderTable()
    t.add(order(qty=5), 0)
    assert not t.apply(fill(1, 6, 6, 0, fid=1, last=True))
    assert t.anomalies == {"overfill": 1} and t.state(1) == OrderState.SUBMITTED
    a = t.anomaly_log[-1]
    assert (a.kind, a.fill_id, a.qty, a.state) == ("overfill", 1, 6, OrderState.SUBMITTED)
    assert t.get(1).cum_qty == 0 and t.position(1) == 0
    assert t.add(order(qty=5), 1) is None


def test_rejected_and_expired_are_terminal():
    t = OrderTable()
    t.add(order(coid=1), 0)
    t.add(order(coid=2), 0)
    assert t.apply(OrderRejected(1, 1, "no liquidity", 5, 1, 1))
    assert t.apply(OrderExpired(2, 1, 10, 5, 1, 1))
    assert t.state(1) == OrderState.REJECTED and t.state(2) == OrderState.EXPIRED
    assert t.open_orders() == []


def test_refused_cancel_or_replace_leaves_the_order_live():
    t = OrderTable()
    t.add(order(coid=1, qty=5), 0)
    assert t.apply(OrderAccepted(1, 7, 1, 1, 100, 5, 5, 1, 1))
    assert t.request_replace(1) and t.state(1) == OrderState.PENDING_REPLACE
    assert t.apply(OrderReplaced(1, 1, 101, 5, 5, 1, 1))
    assert t.request_replace(1)
    stp = ReplaceRejectReason.SELF_TRADE
    assert t.apply(OrderReplaceRejected(1, 1, stp, "self-trade prevention", 5, 2, 2))
    assert t.request_cancel(1) and t.state(1) == OrderState.PENDING_CANCEL
    assert t.apply(OrderCancelRejected(1, 1, CancelRejectReason.REFUSED, "busy", 5, 2, 2))
    r = t.get(1)
    assert r.is_open and (r.state, r.px, r.leaves_qty) == (OrderState.ACCEPTED, 101, 5)
    assert t.anomalies == {}
    # once the order is finished, a late refusal is an anomaly and is dropped
    assert t.apply(OrderCanceled(1, 1, 5, "user", 5, 3, 3))
    gone = OrderCancelRejected(1, 1, CancelRejectReason.NOT_OPEN, "no longer open", 5, 4, 4)
    assert not t.apply(gone)
    assert t.anomalies == {} and t.late_request_rejects == 1


def test_a_message_that_is_not_an_order_is_counted_not_fatal(ex):
    e, v = ex
    assert e.on_order(Quote(1, 1, 1, 2, 1, 0, 0), 10) == []
    assert e.not_orders == 1 and not v.submitted
