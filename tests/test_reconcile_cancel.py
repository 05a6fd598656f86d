"""The cancels reconciliation decides (``ReconcileResult.to_cancel``) reach the venue: an order
the venue has open that the record has closed, and one whose cancel was pending at the crash.
Exec's ordinary cancel path drops both (the table has the order closed, or its cancel already
pending), so recovery sends them with ``ExecEngine.cancel_at_venue``."""

from __future__ import annotations

from engine.exec_engine import ExecEngine, ExecPolicy
from engine.messages import CancelOrder, OrderAccepted, OrderCanceled
from engine.oms import OrderStatus
from engine.reconcile import reconcile
from tests.test_recovery import TABLE, _venue
from tests.test_sim_exchange import BUY, new


def engine_after(v, orders, evs, now):
    res = reconcile(orders, evs, v, now_ns=now)
    e = ExecEngine(v, TABLE, ExecPolicy(max_retries=0), algo_engine=None)
    e.table = res.table
    return e, res


def venue_open(v) -> list[int]:
    return sorted(o.client_order_id for o in v.open_orders())


def test_an_order_closed_in_the_record_but_open_at_the_venue_is_canceled_there() -> None:
    v = _venue(None)
    o1, o2 = new(1, BUY, 99, 5), new(2, BUY, 98, 5)
    evs = v.submit(o1, 10) + v.submit(o2, 11)
    assert [type(x) for x in evs] == [OrderAccepted, OrderAccepted]
    evs.append(OrderCanceled(2, o2.instrument_id, 5, "canceled", 12, 12, 12))  # the record's
    e, res = engine_after(v, [o1, o2], evs, 20)
    assert [c.client_order_id for c in res.to_cancel] == [2]
    assert e.table.get(2).state == OrderStatus.CANCELED
    for c in res.to_cancel:
        e.cancel_at_venue(c, 21)
    assert venue_open(v) == [1]  # canceled at the venue; the other order untouched
    assert e.table.get(2).state == OrderStatus.CANCELED


def test_a_cancel_pending_at_the_crash_is_sent_again() -> None:
    v = _venue(None)
    o1, o2 = new(1, BUY, 99, 5), new(2, BUY, 98, 5)
    evs = v.submit(o1, 10) + v.submit(o2, 11)
    evs.append(CancelOrder(2, 1, o2.instrument_id, 13, 13))  # taken; exec died before sending
    e, res = engine_after(v, [o1, o2], evs, 20)
    assert e.table.get(2).state == OrderStatus.PENDING_CANCEL
    out = []
    for c in res.to_cancel:
        out += e.cancel_at_venue(c, 21)
    assert venue_open(v) == [1]
    assert [type(x) for x in out] == [OrderCanceled]  # upstream learns the end
    assert e.table.get(2).state == OrderStatus.CANCELED
