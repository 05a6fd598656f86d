"""Recovery: the simulated venue's own durable record, and start-up reconciliation of the
stored record against the venue (engine/reconcile.py)."""

from __future__ import annotations

from pathlib import Path

from engine.messages import (
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderPartiallyFilled,
    OrderRejected,
    ReconciliationKind,
)
from engine.oms import OrderStatus
from engine.reconcile import reconcile
from engine.venues.sim import SimExchange, prune_records
from tests.test_sim_exchange import BUY, SELL, TABLE, new, snap, trade

K = ReconciliationKind
BOOK = snap([(100, 50), (99, 20)], [(101, 10), (102, 20)])


def _venue(path: Path | None) -> SimExchange:
    v = SimExchange(TABLE, record_path=path)
    v.on_market_data(BOOK, 1)
    return v


def _session(v: SimExchange) -> list:
    """Some trading: a taker that fills, a resting order partly filled, one canceled, one open."""
    out = []
    out += v.submit(new(1, BUY, 101, 4), 10)  # takes 4 at 101
    out += v.submit(new(2, BUY, 100, 30), 11)  # rests behind 50
    out += v.submit(new(3, SELL, 105, 5), 12)  # rests
    out += v.submit(new(4, SELL, 106, 5), 13)
    out += v.cancel(CancelOrder(4, 1, 1, 14, 14), 14)
    out += v.on_market_data(trade(100, 60, SELL), 15)  # 50 ahead, then 10 of ours
    return out


def test_the_venue_record_survives_the_process_and_refuses_reused_ids(tmp_path: Path) -> None:
    path = tmp_path / "sim.venue"
    v1 = _venue(path)
    events = _session(v1)
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert [f.fill_qty for f in fills] == [4, 10]
    open1, pos1 = v1.open_orders(), v1.positions()
    # exec dies (no close): a new venue object on the same file is the same venue
    v2 = _venue(path)
    assert v2.open_orders() == open1
    assert [o.client_order_id for o in v2.open_orders()] == [2, 3]
    assert v2.positions() == pos1 == {1: 14}
    assert v2.fills_since(0) == fills
    assert v2.fills_since(fills[0].fill_id) == fills[1:]
    assert v2.knows_order(4) and not v2.knows_order(99)
    # an order sent again after the crash is refused, not placed twice
    again = v2.submit(new(2, BUY, 100, 30), 20)
    assert isinstance(again[0], OrderRejected) and "duplicate" in again[0].reason
    # the reloaded resting order still trades, and fill ids continue
    more = v2.on_market_data(trade(100, 5, SELL), 21)
    assert [(f.client_order_id, f.fill_qty) for f in more] == [(2, 5)]
    assert more[0].fill_id == fills[-1].fill_id + 1
    v2.close_record()
    # a torn last write (killed mid-append) is cut off, not misread
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x93")
    v3 = _venue(path)
    assert v3.positions() == {1: 19}
    assert len(v3.fills_since(0)) == 3
    assert prune_records(tmp_path, keep=path) == 0
    assert prune_records(tmp_path) == 1 and not path.exists()


def test_reconcile_publishes_what_the_record_missed(tmp_path: Path) -> None:
    v = _venue(tmp_path / "a.venue")
    events = _session(v)
    orders = [
        new(c, s, p, q)
        for c, s, p, q in (
            (1, BUY, 101, 4),
            (2, BUY, 100, 30),
            (3, SELL, 105, 5),
            (4, SELL, 106, 5),
        )
    ]
    # the record lost the tail: only the first fill and acks of 1 and 2 reached it
    kept = [e for e in events if isinstance(e, OrderAccepted) and e.client_order_id in (1, 2)]
    kept += [e for e in events if isinstance(e, OrderPartiallyFilled)][:1]
    r = reconcile(orders, kept, v, now_ns=99)
    kinds = [e.kind for e in r.events]
    assert kinds.count(K.MISSING_FILL) == 1
    assert K.MISSING_ACK in kinds  # order 3 was open at the venue, SUBMITTED in the record
    assert K.UNKNOWN_AT_VENUE in kinds  # order 4 was canceled at the venue
    t = r.table
    assert t.get(2).cum_qty == 10 and t.get(2).is_open
    assert t.get(3).state == OrderStatus.ACCEPTED
    assert not t.get(4).is_open and not t.get(1).is_open
    pub = [type(e).__name__ for e in r.publish]
    assert pub == ["OrderAccepted", "OrderPartiallyFilled", "OrderCanceled"]
    assert not [e for e in r.events if e.kind == K.POSITION_MISMATCH]
    # the record is now complete: reconciling it again finds nothing
    again = reconcile(orders, kept + r.publish, v, now_ns=100)
    assert again.events == [] and again.publish == []


def test_reconcile_suppresses_redelivered_orders_and_adopts_unknown_ones(tmp_path: Path) -> None:
    v = _venue(None)
    v.submit(new(7, BUY, 99, 5), 10)  # at the venue, recorded as an order, never acknowledged
    v.submit(new(8, SELL, 110, 5), 11)  # at the venue, missing from the record entirely
    orders = [new(7, BUY, 99, 5), new(9, BUY, 98, 5)]  # 9: approved, never reached exec's venue
    r = reconcile(orders, [], v, now_ns=50, pending_new={7, 9})
    assert r.duplicates == {7}
    assert r.table.get(9) is None  # exec will send it from its input
    assert r.table.get(8) is not None and r.table.get(8).is_open
    kinds = {e.kind for e in r.events}
    assert {K.DUPLICATE_SUPPRESSED, K.UNKNOWN_LOCALLY, K.MISSING_ACK} <= kinds
    assert all(not isinstance(e, OrderCanceled) for e in r.publish)
