"""Each order type, time in force and flag through ExecEngine on the simulated exchange, and
exec's policies: emulated stops, retries, price-gap protection, halts, algorithm routing."""

from __future__ import annotations

import pytest

from engine.exec_engine import EXEC_STRATEGY_ID, VENUE_WIDE, ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    Liquidity,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaceRejected,
    OrderTriggered,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
    Trade,
)
from engine.oms import OrderState
from engine.venues.sim import DAY_NS, SimExchange

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
BUY, SELL = Side.BUY, Side.SELL
MKT, LMT = OrderType.MARKET, OrderType.LIMIT
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def new(coid, side, px, qty, *, typ=LMT, tif=GTC, flags=0, stop_px=0, expire_ns=0, ts=0, **kw):
    return NewOrder(coid, 1, IID, side, typ, tif, px, qty, ts, ts, stop_px, flags, expire_ns, **kw)


def quote(bid, ask, t, bq=10, aq=10):
    return Quote(IID, bid, bq, ask, aq, t, t)


def types(evs):
    return [type(e).__name__ for e in evs]


def fills(evs):
    return [e for e in evs if isinstance(e, OrderPartiallyFilled)]


@pytest.fixture
def ex():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(quote(99, 101, 1), 1)
    return e, venue


def test_market_order_takes_the_book(ex):
    e, v = ex
    out = e.on_order(new(1, BUY, 0, 5, typ=MKT), 2)
    assert types(out) == ["OrderAccepted", "OrderFilled"]
    assert out[1].fill_px == 101 and out[1].liquidity == Liquidity.TAKER
    assert e.state(1) == OrderState.FILLED and e.position(IID) == 5 == v.positions()[IID]


def test_ioc_leaves_nothing_resting(ex):
    e, v = ex
    out = e.on_order(new(1, BUY, 101, 15, tif=IOC), 2)
    assert sum(f.fill_qty for f in fills(out)) == 10
    assert isinstance(out[-1], OrderCanceled) and out[-1].leaves_qty == 5
    assert e.state(1) == OrderState.CANCELED and not v.open_orders() and not e.open_orders()
    out = e.on_order(new(2, BUY, 100, 5, tif=IOC), 3)  # not marketable: nothing at all
    assert types(out) == ["OrderAccepted", "OrderCanceled"] and not v.open_orders()


def test_fok_fills_all_or_nothing(ex):
    e, v = ex
    out = e.on_order(new(1, BUY, 101, 11, tif=FOK), 2)
    assert not fills(out) and e.state(1) == OrderState.CANCELED
    out = e.on_order(new(2, BUY, 101, 10, tif=FOK), 3)
    assert sum(f.fill_qty for f in fills(out)) == 10 and e.state(2) == OrderState.FILLED
    assert not v.open_orders() and e.position(IID) == 10


def test_post_only_never_takes(ex):
    e, v = ex
    out = e.on_order(new(1, BUY, 101, 5, flags=OrderFlag.POST_ONLY), 2)
    assert types(out) == ["OrderRejected"] and "POST_ONLY" in out[0].reason
    out = e.on_order(new(2, BUY, 100, 5, flags=OrderFlag.POST_ONLY), 3)
    assert types(out) == ["OrderAccepted"] and [o.client_order_id for o in v.open_orders()] == [2]
    # it fills as a maker when the market sells through its price
    out = e.on_market_data(Trade(IID, 99, 20, SELL, 4, 4), 4)
    assert fills(out) and all(f.liquidity == Liquidity.MAKER for f in fills(out))
    assert e.state(2) == OrderState.FILLED


def test_reduce_only_never_grows_a_position(ex):
    e, v = ex
    ro = OrderFlag.REDUCE_ONLY
    out = e.on_order(new(1, SELL, 99, 5, flags=ro), 2)  # flat: nothing to reduce
    assert types(out) == ["OrderRejected"] and "REDUCE_ONLY" in out[0].reason
    e.on_order(new(2, BUY, 0, 5, typ=MKT), 3)
    assert e.position(IID) == 5
    out = e.on_order(new(3, SELL, 99, 6, flags=ro), 4)  # larger than the position
    assert types(out) == ["OrderRejected"]
    out = e.on_order(new(4, SELL, 103, 5, flags=ro), 5)  # rests above the market
    assert types(out) == ["OrderAccepted"]
    e.on_market_data(quote(99, 101, 6, bq=50), 6)
    e.on_order(new(5, SELL, 0, 3, typ=MKT), 7)  # an ordinary sell shrinks the position to 2
    assert e.position(IID) == 2
    out = e.on_market_data(Trade(IID, 104, 50, BUY, 8, 8), 8)  # the market buys through 103
    assert sum(f.fill_qty for f in fills(out)) == 2
    assert e.position(IID) == 0 == v.positions()[IID]


def test_gtd_and_day_orders_expire(ex):
    e, v = ex
    e.on_order(new(1, BUY, 98, 5, tif=TimeInForce.GTD, expire_ns=1_000), 2)
    e.on_order(new(2, BUY, 97, 5, tif=TimeInForce.DAY), 2)
    assert e.poll(999) == []
    out = e.poll(1_000)
    assert types(out) == ["OrderExpired"] and e.state(1) == OrderState.EXPIRED
    out = e.poll(DAY_NS)
    assert types(out) == ["OrderExpired"] and e.state(2) == OrderState.EXPIRED
    assert not v.open_orders()


def test_replace_amends_price_and_quantity(ex):
    e, v = ex
    e.on_order(new(1, BUY, 98, 5), 2)
    out = e.on_order(ReplaceOrder(1, 1, IID, 99, 8, 0, 0), 3)
    assert types(out) == ["OrderReplaced"]
    r = e.table.get(1)
    assert (r.state, r.px, r.qty, r.leaves_qty) == (OrderState.ACCEPTED, 99, 8, 8)
    assert v.open_orders()[0].px == 99
    out = e.on_order(ReplaceOrder(1, 1, IID, 0, 8, 0, 0), 4)  # refused by the venue
    assert types(out) == ["OrderReplaceRejected"] and out[0].reason == ReplaceRejectReason.INVALID
    assert e.state(1) == OrderState.ACCEPTED


def test_idempotent_client_order_ids_place_one_order(ex):
    e, v = ex
    e.on_order(new(1, BUY, 98, 5), 2)
    assert e.on_order(new(1, BUY, 98, 5), 3) == []
    assert e.on_order(new(1, SELL, 50, 1), 3) == []
    assert len(v.open_orders()) == 1 and e.duplicates == 2 and e.sent == 1
    e.on_order(CancelOrder(1, 1, IID, 0, 0), 4)
    assert e.state(1) == OrderState.CANCELED
    assert e.on_order(CancelOrder(1, 1, IID, 0, 0), 5) == []


# --- emulated stops -------------------------------------------------------------------------


def test_stop_is_emulated_and_triggers_a_market_order(ex):
    e, v = ex
    out = e.on_order(new(1, SELL, 0, 5, typ=OrderType.STOP, stop_px=95), 2)
    assert types(out) == ["OrderAccepted"] and out[0].venue_order_id == 0
    assert not v.open_orders() and e.table.get(1).emulated
    assert e.on_market_data(quote(96, 98, 3), 3) == []
    out = e.on_market_data(quote(95, 97, 4), 4)
    trig = [x for x in out if isinstance(x, OrderTriggered)]
    assert len(trig) == 1 and trig[0].emulated and trig[0].trigger_px == 95
    assert trig[0].order_type == MKT
    f = fills(out)
    assert f and f[-1].fill_px == 95 and isinstance(f[-1], OrderFilled)
    assert e.state(1) == OrderState.FILLED and e.position(IID) == -5


def test_stop_limit_sends_a_limit_at_its_price(ex):
    e, v = ex
    e.on_order(new(1, BUY, 106, 5, typ=OrderType.STOP_LIMIT, stop_px=105), 2)
    assert e.on_market_data(quote(103, 104, 3), 3) == []
    out = e.on_market_data(quote(104, 105, 4, aq=3), 4)
    trig = [x for x in out if isinstance(x, OrderTriggered)]
    assert trig and (trig[0].order_type, trig[0].px) == (LMT, 106)
    assert sum(f.fill_qty for f in fills(out)) == 3  # 3 shown at 105; the rest rests at 106
    assert [(o.px, o.qty) for o in v.open_orders()] == [(106, 2)]
    assert e.state(1) == OrderState.PARTIALLY_FILLED


def test_trailing_stop_by_amount_triggers_at_the_trailed_price(ex):
    e, v = ex
    e.on_market_data(quote(100, 102, 2), 2)
    e.on_order(new(1, SELL, 0, 5, typ=OrderType.TRAILING_STOP, stop_px=3), 3)
    assert e.emulator.stop_px(1) == 97  # bid 100 - 3
    for t, bid in enumerate((104, 110, 108), start=4):  # the market rises, then dips
        assert e.on_market_data(quote(bid, bid + 2, t), t) == []
    assert e.emulator.stop_px(1) == 107  # followed the high of 110, not the dip
    out = e.on_market_data(quote(107, 109, 10), 10)
    trig = [x for x in out if isinstance(x, OrderTriggered)]
    assert trig and trig[0].stop_px == 107 and trig[0].trigger_px == 107
    assert fills(out)[-1].fill_px == 107 and e.position(IID) == -5


def test_trailing_stop_by_percent_for_a_buy(ex):
    e, v = ex
    o = new(1, BUY, 0, 2, typ=OrderType.TRAILING_STOP, algo_params={"trail_pct": 2.0})
    e.on_market_data(quote(9_998, 10_000, 2), 2)
    e.on_order(o, 3)
    assert e.emulator.stop_px(1) == 10_200
    e.on_market_data(quote(8_998, 9_000, 4), 4)
    assert e.emulator.stop_px(1) == 9_180  # 2 % above the low
    assert e.on_market_data(quote(9_100, 9_179, 5), 5) == []
    out = e.on_market_data(quote(9_178, 9_180, 6), 6)
    assert any(isinstance(x, OrderTriggered) for x in out) and e.position(IID) == 2


def test_emulated_orders_cancel_amend_and_expire_locally(ex):
    e, v = ex
    e.on_order(new(1, SELL, 0, 5, typ=OrderType.STOP, stop_px=90), 2)
    out = e.on_order(ReplaceOrder(1, 1, IID, 92, 4, 0, 0), 3)
    assert types(out) == ["OrderReplaced"] and e.emulator.stop_px(1) == 92
    assert e.state(1) == OrderState.ACCEPTED and e.table.get(1).qty == 4
    out = e.on_order(CancelOrder(1, 1, IID, 0, 0), 4)
    assert types(out) == ["OrderCanceled"] and e.state(1) == OrderState.CANCELED
    assert e.on_market_data(quote(80, 82, 5), 5) == [] and e.position(IID) == 0
    e.on_order(new(2, SELL, 0, 5, typ=OrderType.STOP, stop_px=50, tif=4, expire_ns=100), 6)
    assert types(e.poll(100)) == ["OrderExpired"] and e.state(2) == OrderState.EXPIRED
    out = e.on_order(new(3, SELL, 0, 5, typ=OrderType.STOP), 7)  # no stop price
    assert types(out) == ["OrderRejected"] and "stop price" in out[0].reason


# --- policies -------------------------------------------------------------------------------


class FlakyVenue(SimExchange):
    """The simulated exchange behind a gateway that is busy for the first ``busy`` orders."""

    def __init__(self, busy: int) -> None:
        super().__init__(INS)
        self.busy = busy
        self.ids: list[int] = []

    def submit(self, order, now_ns):
        self.ids.append(order.client_order_id)
        if self.busy > 0:
            self.busy -= 1
            return [OrderRejected(order.client_order_id, IID, "venue busy", 0, now_ns, now_ns)]
        return super().submit(order, now_ns)


def test_retry_policy_resends_under_a_fresh_id_and_reports_on_the_original():
    v = FlakyVenue(busy=2)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=3, retry_backoff_ms=1e-5), algo_engine=None)
    e.on_market_data(quote(99, 101, 1), 1)
    assert e.on_order(new(1, BUY, 0, 5, typ=MKT), 2) == []  # refused: retry at 2 + 10
    assert e.poll(11) == [] and v.ids == [1]
    out = e.on_order(ReplaceOrder(1, 1, IID, 0, 3, 0, 0), 11)  # not at the venue: refused
    assert isinstance(out[0], OrderReplaceRejected) and e.state(1) == OrderState.SUBMITTED
    assert out[0].reason == ReplaceRejectReason.PENDING_RETRY
    assert e.poll(12) == []  # refused again: retry at 12 + 20
    assert e.poll(31) == [] and len(v.ids) == 2
    out = e.poll(32)
    assert types(out) == ["OrderAccepted", "OrderFilled"]
    assert all(x.client_order_id == 1 for x in out) and e.state(1) == OrderState.FILLED
    assert len(set(v.ids)) == 3 and v.ids[0] == 1 and e.retried == 2
    # retries exhausted: the venue's reason goes upstream
    v2 = FlakyVenue(busy=5)
    e2 = ExecEngine(v2, INS, ExecPolicy(max_retries=1, retry_backoff_ms=1e-5), algo_engine=None)
    e2.on_order(new(1, BUY, 0, 5, typ=MKT), 2)
    out = e2.poll(100)
    assert types(out) == ["OrderRejected"] and out[0].reason == "venue busy"
    assert e2.state(1) == OrderState.REJECTED


def test_a_reason_not_worth_retrying_is_final():
    v = SimExchange(INS)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=3), algo_engine=None)
    out = e.on_order(new(1, BUY, 100, 0), 2)  # qty 0: the venue refuses, retrying cannot help
    assert types(out) == ["OrderRejected"] and e.retried == 0


def test_price_gap_blocks_a_market_order_after_the_book_moved():
    v = SimExchange(INS)
    e = ExecEngine(v, INS, ExecPolicy(price_gap_bps=100), algo_engine=None)
    e.on_market_data(quote(9_990, 10_010, 10), 10)  # mid 10_000 when the strategy decided
    e.on_market_data(quote(10_190, 10_210, 20), 20)  # mid 10_200: +200 bps
    out = e.on_order(new(1, BUY, 0, 1, typ=MKT, ts=10), 21)
    assert types(out) == ["OrderRejected"] and "price gap" in out[0].reason
    assert e.gap_rejects == 1 and not v.fills
    out = e.on_order(new(2, BUY, 0, 1, typ=MKT, ts=20), 22)  # decided on the current book
    assert types(out) == ["OrderAccepted", "OrderFilled"]
    out = e.on_order(new(3, BUY, 10_000, 1, typ=MKT, ts=20), 23)  # px = the price it saw
    assert types(out) == ["OrderRejected"]
    out = e.on_order(new(4, BUY, 10_000, 1, ts=10), 24)  # a limit order carries its own cap
    assert types(out) == ["OrderAccepted"]


@pytest.mark.parametrize("policy", ["hold", "reject"])
def test_halt_holds_or_rejects_new_orders(policy):
    v = SimExchange(INS)
    e = ExecEngine(v, INS, ExecPolicy(halt_policy=policy), algo_engine=None)
    e.on_market_data(quote(99, 101, 1), 1)
    halt = ExchangeStatus(IID, ExchangeStatusKind.HALTED, "LULD pause", 2, 2)
    assert types(e.on_market_data(halt, 2)) == ["ExchangeStatus"]
    out = e.on_order(new(1, BUY, 0, 5, typ=MKT), 3)
    out += e.on_order(new(2, BUY, 0, 5, typ=MKT), 3)
    if policy == "reject":
        assert types(out) == ["OrderRejected"] * 2 and "halted" in out[0].reason
        return
    assert out == [] and [o.client_order_id for o in e.held_orders()] == [1, 2]
    assert e.state(1) == OrderState.INITIALIZED and not v.fills
    out = e.on_order(CancelOrder(2, 1, IID, 0, 0), 4)  # canceled while held: never sent
    assert types(out) == ["OrderCanceled"]
    # the venue obeys the status too (it saw the HALTED): it reopens before exec sends
    v.on_market_data(ExchangeStatus(IID, ExchangeStatusKind.OPEN, "", 5, 5), 5)
    out = e.set_trading_status(IID, False, 5)
    assert types(out) == ["OrderAccepted", "OrderFilled"] and out[0].client_order_id == 1
    assert [f.client_order_id for f in v.fills] == [1] and not e.held_orders()
    e.set_trading_status(VENUE_WIDE, True, 6)
    assert e.on_order(new(3, BUY, 0, 5, typ=MKT), 7) == []
    assert types(e.set_trading_status(VENUE_WIDE, False, 8)) == ["OrderAccepted", "OrderFilled"]


# --- algorithm routing ------------------------------------------------------------------------


class FakeAlgo:
    """The AlgoEngine contract in miniature: a parent becomes one child for its whole qty."""

    def __init__(self, next_child_id) -> None:
        self.next_id = next_child_id
        self.parents: dict[int, NewOrder] = {}
        self.children: dict[int, int] = {}
        self.child_events: list[object] = []

    def is_child(self, coid):
        return coid in self.children

    def is_parent(self, coid):
        return coid in self.parents

    def submit(self, parent, now_ns):
        self.parents[parent.client_order_id] = parent
        cid = self.next_id()
        self.children[cid] = parent.client_order_id
        child = new(cid, parent.side, parent.px, parent.qty, typ=parent.order_type)
        acc = OrderAccepted(parent.client_order_id, 0, IID, parent.side, 0, parent.qty, 0, 0, 0)
        return [acc, child]

    def cancel(self, parent_coid, now_ns):
        return [CancelOrder(c, 1, IID, 0, 0) for c, p in self.children.items() if p == parent_coid]

    def on_child_event(self, ev, now_ns):
        self.child_events.append(ev)
        pid = self.children[ev.client_order_id]
        if isinstance(ev, OrderCanceled):
            return [OrderCanceled(pid, IID, ev.leaves_qty, "parent canceled", 0, now_ns, now_ns)]
        return []

    def on_market_data(self, msg, now_ns):
        return []

    def on_timer(self, now_ns):
        return []


def test_algo_parents_go_to_the_algo_engine_and_children_through_the_oms():
    v = SimExchange(INS)
    e = ExecEngine(v, INS, ExecPolicy(), algo_engine=None, id_block=3)
    algo = FakeAlgo(e.next_exec_id)
    e.algo = algo
    e.on_market_data(quote(99, 101, 1), 1)
    parent = new(7 << 32 | 1, BUY, 98, 5, algo=1)
    out = e.on_order(parent, 2)
    # upstream sees the parent's accept, not the child's venue events
    assert types(out) == ["OrderAccepted"] and out[0].client_order_id == parent.client_order_id
    (cid,) = algo.children
    assert (cid >> 32, cid >> 24 & 0xFF) == (EXEC_STRATEGY_ID, 3)  # exec's own id space
    assert e.state(cid) == OrderState.ACCEPTED  # tracked like any order
    assert [type(x).__name__ for x in algo.child_events] == ["OrderAccepted"]
    assert e.on_order(parent, 3) == [] and e.duplicates == 1
    out = e.on_order(CancelOrder(parent.client_order_id, 7, IID, 0, 0), 4)
    assert types(out) == ["OrderCanceled"] and out[0].client_order_id == parent.client_order_id
    assert e.state(cid) == OrderState.CANCELED and not v.open_orders()


def test_algo_order_without_an_algo_engine_is_rejected():
    e = ExecEngine(SimExchange(INS), INS, algo_engine=None)
    out = e.on_order(new(1, BUY, 98, 5, algo=1), 2)
    assert types(out) == ["OrderRejected"] and "algorithms" in out[0].reason


def test_anomalies_from_the_venue_are_published_not_raised(ex):
    e, v = ex
    e.on_order(new(1, BUY, 0, 5, typ=MKT), 2)
    late = OrderCanceled(1, IID, 0, "late", 0, 3, 3)
    unknown = OrderExpired(404, IID, 0, 0, 3, 3)
    out = _route(e, late) + _route(e, unknown)
    assert types(out) == ["OrderAnomaly", "OrderAnomaly"]
    assert [a.kind for a in out] == ["event_after_terminal", "event_unknown_order"]
    assert e.state(1) == OrderState.FILLED


def _route(e: ExecEngine, ev: object) -> list[object]:
    """A venue event arriving out of the blue (as from a reconnecting gateway)."""
    out: list[object] = []
    e._route(ev, 3, out)
    e._flush(out)
    return out


def test_restore_after_a_restart_rearms_stops_and_keeps_fills(ex):
    e, v = ex
    e.on_order(new(3, BUY, 0, 4, typ=MKT), 2)
    e.on_order(new(1, SELL, 120, 5), 3)
    e.on_order(new(2, SELL, 0, 5, typ=OrderType.STOP, stop_px=90), 3)
    snaps = e.table.snapshot()
    e2 = ExecEngine(v, INS, ExecPolicy(), algo_engine=None)  # the restarted exec, same venue
    e2.restore(snaps)
    assert e2.position(IID) == 4 and e2.state(1) == OrderState.ACCEPTED
    assert e2.state(3) == OrderState.FILLED and 2 in e2.emulator
    assert e2.on_order(new(3, BUY, 0, 4, typ=MKT), 4) == []  # replayed by risk: not resent
    out = e2.on_market_data(quote(90, 92, 5), 5)
    assert any(isinstance(x, OrderTriggered) for x in out) and e2.position(IID) == -1
    out = e2.on_order(CancelOrder(1, 1, IID, 0, 0), 6)
    assert types(out) == ["OrderCanceled"] and not v.open_orders()


def test_reconcile_reports_what_the_venue_did_behind_exec_s_back(ex):
    e, v = ex
    e.on_order(new(1, BUY, 98, 5), 2)
    e.on_order(new(2, BUY, 97, 5), 2)
    e.on_order(new(3, SELL, 0, 5, typ=OrderType.STOP, stop_px=50), 2)  # local: not missing
    assert e.reconcile() == {"missing_at_venue": [], "unknown_open": [], "positions": {}}
    v.cancel(CancelOrder(2, 1, IID, 0, 0), 3)  # events lost (a dropped connection)
    v.submit(new(9, BUY, 96, 1), 3)  # an order exec never sent
    v.submit(new(10, BUY, 0, 2, typ=MKT), 3)
    rec = e.reconcile()
    assert rec["missing_at_venue"] == [2] and rec["unknown_open"] == [9]
    assert rec["positions"] == {IID: (0, 2)}
