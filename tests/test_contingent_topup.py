"""A venue that refuses to enlarge a list leg (engine.exec_topups): exec sends a second order for
the difference and shows both as the one leg upstream — one size, fills of either as the leg's,
one end."""

from __future__ import annotations

from engine.contingent import OCO, OTO
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceRejectReason,
    Side,
    TimeInForce,
)
from engine.venues.sim import SimExchange

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
BUY, SELL = Side.BUY, Side.SELL
LMT, STP = OrderType.LIMIT, OrderType.STOP
ENTRY, TP, SL = 1, 2, 3


def new(coid, side, px, qty, typ=LMT, stop_px=0, **kw) -> NewOrder:
    return NewOrder(coid, 1, IID, side, typ, TimeInForce.GTC, px, qty, 0, 0, stop_px, **kw)


class NoEnlarge(SimExchange):
    """A simulated venue that amends an order down, never up."""

    def replace(self, rep, now_ns):
        o = next((x for x in self.open_orders() if x.client_order_id == rep.client_order_id), None)
        if o is not None and rep.new_qty > o.qty:
            why = "this venue cannot enlarge an order"
            return [
                OrderReplaceRejected.for_request(
                    rep, ReplaceRejectReason.INVALID, why, now_ns, now_ns
                )
            ]
        return super().replace(rep, now_ns)


def q(bid, ask, t, bq=10, aq=10) -> Quote:
    return Quote(IID, bid, bq, ask, aq, t, t)


def bracket():
    v = NoEnlarge(INS)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(q(99, 101, 1), 1)
    e.on_order(new(ENTRY, BUY, 100, 10, contingency=OTO), 2)
    e.on_order(new(TP, SELL, 110, 10, parent_id=ENTRY, contingency=OCO, linked=[SL]), 3)
    e.on_order(new(SL, SELL, 0, 10, STP, 90, parent_id=ENTRY, contingency=OCO, linked=[TP]), 4)
    e.on_market_data(q(98, 100, 5, aq=4), 5)  # the entry fills 4: the take-profit goes out at 4
    out = e.on_market_data(q(98, 100, 6, aq=6), 6)  # and 6 more: the venue cannot grow it
    return e, v, out


def venue_open(v):
    return sorted((o.client_order_id, o.qty) for o in v.open_orders())


def test_a_refused_enlargement_sends_a_second_order_shown_as_the_one_leg():
    e, v, out = bracket()
    assert e.table.get(ENTRY).cum_qty == 10
    (xid,) = [c for c, _ in venue_open(v) if c != TP]
    assert venue_open(v) == sorted([(TP, 4), (xid, 6)])  # the difference, at the venue
    grown = [x for x in out if isinstance(x, OrderReplaced) and x.client_order_id == TP]
    assert grown[-1].qty == 10 and e.table.get(TP).qty == 10
    assert all(getattr(x, "client_order_id", TP) != xid for x in out)  # upstream never sees it
    fills = [
        x for x in e.on_market_data(q(110, 112, 7, bq=20), 7) if isinstance(x, OrderPartiallyFilled)
    ]
    assert [(f.client_order_id, f.fill_qty) for f in fills] == [(TP, 4), (TP, 6)]
    assert type(fills[-1]) is OrderFilled and fills[-1].cum_qty == 10 and fills[-1].leaves_qty == 0
    assert not e.table.get(TP).is_open and e.table.get(TP).cum_qty == 10
    assert not e.table.get(SL).is_open  # its OCO peer filled
    assert e.table.position(IID) == 0 and venue_open(v) == [] and v.positions().get(IID, 0) == 0


def test_a_cancel_of_the_leg_ends_both_orders_once():
    e, v, _ = bracket()
    out = e.on_order(CancelOrder(TP, 1, IID, 8, 8), 8)
    ends = [x for x in out if isinstance(x, OrderCanceled)]
    assert [c.client_order_id for c in ends] == [TP]  # one end for the leg's two orders
    assert venue_open(v) == [] and not e.table.get(TP).is_open


def test_the_first_order_filled_then_the_second_is_canceled_with_the_leg():
    e, v, _ = bracket()
    (xid,) = [c for c, _ in venue_open(v) if c != TP]
    e.on_market_data(q(110, 112, 7, bq=4), 7)  # 4 lots at 110: the first order fills
    assert venue_open(v) == [(xid, 6)] and e.table.get(TP).is_open
    assert e.table.get(TP).cum_qty == 4 and e.table.get(TP).leaves_qty == 6
    out = e.on_order(CancelOrder(TP, 1, IID, 8, 8), 8)
    ends = [x for x in out if isinstance(x, OrderCanceled)]
    assert [c.client_order_id for c in ends] == [TP] and venue_open(v) == []
    assert not e.table.get(TP).is_open and e.table.get(TP).cum_qty == 4


# --- across an exec restart (procs.exec_topups writes each top-up down; engine.reconcile folds
# it into its leg; TopUps.restore rebuilds the relation) ------------------------------------------
def journaled():
    """``bracket`` with what exec's journal and top-up file would hold of it."""
    v = NoEnlarge(INS)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    sent: dict[int, tuple[int, int]] = {}
    e._lw.tops.on_send = lambda x, leg, n: sent.__setitem__(x, (leg, n))
    orders = [
        new(ENTRY, BUY, 100, 10, contingency=OTO),
        new(TP, SELL, 110, 10, parent_id=ENTRY, contingency=OCO, linked=[SL]),
        new(SL, SELL, 0, 10, STP, 90, parent_id=ENTRY, contingency=OCO, linked=[TP]),
    ]
    events = e.on_market_data(q(99, 101, 1), 1)
    for t, o in enumerate(orders, 2):
        events += e.on_order(o, t)
    events += e.on_market_data(q(98, 100, 5, aq=4), 5)
    events += e.on_market_data(q(98, 100, 6, aq=6), 6)
    return e, v, orders, events, sent


def restarted(v, orders, events, sent, now):
    """A new exec over the same venue, as procs.recovery and procs.exec bring it back."""
    from engine.reconcile import reconcile
    from procs.recovery import exec_local

    legs = {x: leg for x, (leg, _) in sent.items()}
    local = exec_local(orders, events, v, ExecPolicy(max_retries=0))  # the held stop-loss
    res = reconcile(orders, events, v, now, local_ids=local, topups=legs)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None, id_block=1)
    e.table = res.table
    e.on_market_data(q(98, 100, now), now)
    restored = e.restore_topups(sent, now)
    out = res.publish + e.restore_lists(now, local, events)
    return e, out, restored


def test_a_restart_rebuilds_the_second_order_as_part_of_its_leg():
    _, v, orders, events, sent = journaled()
    (xid,) = sent
    assert sent[xid] == (TP, 6) and venue_open(v) == sorted([(TP, 4), (xid, 6)])
    e, out, restored = restarted(v, orders, events, sent, 7)
    assert restored == 1 and e._lw.tops.open_qty(TP) == 6
    assert e.table.get(xid) is None  # not adopted as an order of its own
    assert out == [] and e.table.get(TP).leaves_qty == 10  # reconciliation saw one leg of 10
    assert venue_open(v) == sorted([(TP, 4), (xid, 6)])  # nothing resent, nothing canceled
    fills = [
        x for x in e.on_market_data(q(110, 112, 8, bq=20), 8) if isinstance(x, OrderPartiallyFilled)
    ]
    assert [(f.client_order_id, f.fill_qty) for f in fills] == [(TP, 4), (TP, 6)]
    assert type(fills[-1]) is OrderFilled and not e.table.get(TP).is_open
    assert not e.table.get(SL).is_open and venue_open(v) == [] and e.table.position(IID) == 0


def test_after_a_restart_a_cancel_of_the_leg_ends_its_second_order_too():
    e0, v, orders, events, sent = journaled()
    (xid,) = sent
    events += e0.on_market_data(q(110, 112, 7, bq=4), 7)  # the first order fills (4 lots)
    assert venue_open(v) == [(xid, 6)]
    e, _, restored = restarted(v, orders, events, sent, 8)
    assert restored == 1 and e.table.get(TP).is_open and e.table.get(TP).leaves_qty == 6
    out = e.on_order(CancelOrder(TP, 1, IID, 9, 9), 9)
    ends = [x for x in out if isinstance(x, OrderCanceled)]
    assert [c.client_order_id for c in ends] == [TP] and venue_open(v) == []
    assert not e.table.get(TP).is_open and e.table.get(TP).cum_qty == 4


def test_a_fill_of_the_second_order_while_exec_was_down_is_the_legs():
    _, v, orders, events, sent = journaled()
    (xid,) = sent
    v.on_market_data(q(110, 112, 7, bq=10), 7)  # both orders fill while exec is down
    assert venue_open(v) == []
    e, out, restored = restarted(v, orders, events, sent, 8)
    assert restored == 0
    fills = [(x.client_order_id, x.fill_qty) for x in out if isinstance(x, OrderPartiallyFilled)]
    assert fills == [(TP, 4), (TP, 6)] and e.table.get(TP).cum_qty == 10
    assert not e.table.get(TP).is_open and e.table.get(xid) is None


def test_the_top_up_file_keeps_every_second_order(tmp_path):
    from procs.exec_topups import TopUpLog, load_topups

    log = TopUpLog(tmp_path / "x.topups")
    log.append(7, 2, 6)
    log.append(8, 3, 1)
    log.close()
    assert load_topups(tmp_path / "x.topups") == {7: (2, 6), 8: (3, 1)}


def test_a_second_order_whose_leg_ended_is_canceled_at_the_restart():
    """The leg's end is journaled (its first order canceled), its second order's cancel was
    lost with exec: the restarted exec cancels it, never adopts it."""
    _, v, orders, events, sent = journaled()
    (xid,) = sent
    v.cancel(CancelOrder(TP, 1, IID, 7, 7), 7)
    events.append(OrderCanceled(TP, IID, 10, "canceled", 7, 7, 7))
    assert venue_open(v) == [(xid, 6)]
    e, out, restored = restarted(v, orders, events, sent, 8)
    assert restored == 0 and e.table.get(xid) is None
    assert venue_open(v) == [] and not e.table.get(TP).is_open
    assert all(getattr(x, "client_order_id", 0) != xid for x in out)


def test_a_child_grown_before_the_venue_acknowledged_it_gets_a_second_order():
    """With venue latency the take-profit goes out at the entry's first lot and the entry fills
    its second before the venue acknowledges it: it cannot be amended yet (the growth was
    dropped, the leg stayed at 1 lot), so the difference goes to a second order."""
    v = SimExchange(INS, latency_ns=3_000_000, response_latency_ns=3_000_000)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    ms = 1_000_000
    e.on_market_data(q(99, 101, ms), ms)
    e.on_order(new(ENTRY, BUY, 100, 2, contingency=OTO), 2 * ms)
    e.on_order(new(TP, SELL, 108, 2, parent_id=ENTRY, contingency=OCO, linked=[SL]), 3 * ms)
    e.on_order(new(SL, SELL, 0, 2, STP, 92, parent_id=ENTRY, contingency=OCO, linked=[TP]), 4 * ms)
    e.on_market_data(q(100, 101, 5 * ms, 1, 1), 5 * ms)
    e.poll(55 * ms)
    e.on_market_data(q(85, 86, 56 * ms, 1, 1), 56 * ms)
    e.poll(57 * ms)
    e.poll(107 * ms)  # the venue fills the entry 1 + 1: the take-profit goes out in between
    assert e.table.get(ENTRY).cum_qty == 2
    tp = e.table.get(TP)
    assert tp.qty == 2 and tp.leaves_qty == 2  # not left at 1 lot
    e.poll(157 * ms)
    e.poll(207 * ms)
    (xid,) = [c for c, _ in venue_open(v) if c != TP]
    assert venue_open(v) == sorted([(TP, 1), (xid, 1)])  # the difference, at the venue
    assert e.table.get(TP).qty == 2
