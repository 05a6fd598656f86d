"""RiskGate: every limit at its edge, state tracking from execution events, the kill switch."""

from __future__ import annotations

import msgspec
import pytest

from engine.algos.engine import AlgoEngine
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    CancelOrder,
    CancelRejectReason,
    Control,
    ControlCommand,
    IntentCancel,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    RiskEvent,
    RiskEventKind,
    Side,
    TimeInForce,
    Trade,
    TradingState,
)
from engine.risk import RiskGate, RiskLimits

# tick 0.01, lot 1: notional = px_ticks * qty / 100
INS = [Instrument(instrument_id=1, symbol="AAA"), Instrument(instrument_id=3, symbol="CCC")]
LIMITS = RiskLimits.off(max_order_notional=10_000.0, max_position_lots=100, max_open_orders=5)

_n = 0


def new(qty=10, px=10_000, side=Side.BUY, iid=1, otype=OrderType.LIMIT, coid=None, ts=5):
    global _n
    _n += 1
    return IntentNew(
        client_order_id=coid if coid is not None else (1 << 32) | _n,
        strategy_id=1,
        instrument_id=iid,
        side=side,
        order_type=otype,
        tif=TimeInForce.GTC,
        px=px,
        qty=qty,
        ts_origin=ts,
        ts_created=ts + 1,
    )


def gate(**kw) -> RiskGate:
    return RiskGate(msgspec.structs.replace(LIMITS, **kw), INS)


def approved(out) -> NewOrder:
    assert len(out) == 1 and isinstance(out[0], NewOrder), out
    return out[0]


def rejected(out, reason: str) -> RiskEvent:
    ev = [m for m in out if isinstance(m, RiskEvent)]
    rej = [m for m in out if isinstance(m, OrderRejected)]
    assert len(ev) == 1 and len(rej) == 1 and len(out) == 2, out
    assert ev[0].kind == RiskEventKind.ORDER_REJECTED and reason in ev[0].reason
    assert rej[0].client_order_id == ev[0].client_order_id and reason in rej[0].reason
    return ev[0]


def fill(order: NewOrder, qty: int, leaves: int, fid: int = 1):
    cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
    return cls(
        order.client_order_id,
        1,
        order.instrument_id,
        order.side,
        order.px,
        qty,
        order.qty - leaves,
        leaves,
        0.0,
        1,
        fid,
        order.ts_origin,
        9,
        9,
    )


def test_approval_keeps_fields_and_origin():
    g = gate()
    it = new(ts=123)
    o = approved(g.on_intent(it, now_ns=456))
    assert (o.client_order_id, o.side, o.px, o.qty, o.instrument_id) == (
        it.client_order_id,
        it.side,
        it.px,
        it.qty,
        1,
    )
    assert o.ts_origin == 123 and o.ts_approved == 456


def test_notional_just_under_passes_just_over_rejected():
    g = gate()
    # 10 lots at 1000.00 (100_000 ticks) = 10_000.00 exactly: at the limit passes
    approved(g.on_intent(new(qty=10, px=100_000), 1))
    approved(g.on_intent(new(qty=1, px=999_999), 1))  # 9_999.99
    ev = rejected(g.on_intent(new(qty=1, px=1_000_001), 1), "max order notional")  # 10_000.01
    assert ev.value == pytest.approx(10_000.01) and ev.limit == 10_000.0


def test_market_order_valued_at_opposite_best_and_rejected_without_price():
    g = gate()
    rejected(g.on_intent(new(qty=1, px=0, otype=OrderType.MARKET), 1), "no price")
    g.on_market_data(Quote(1, 500_000, 5, 1_000_001, 5, 1, 1))
    rejected(g.on_intent(new(qty=1, px=0, otype=OrderType.MARKET), 1), "max order notional")
    approved(g.on_intent(new(qty=1, px=0, otype=OrderType.MARKET, side=Side.SELL), 1))
    g2 = gate()
    g2.on_market_data(Trade(1, 1000, 1, Side.BUY, 1, 1))
    approved(g2.on_intent(new(qty=1, px=0, otype=OrderType.MARKET), 1))
    assert g2.mark(1) == 1000.0


@pytest.mark.parametrize(
    "intent, reason",
    [
        (new(iid=2), "unknown instrument"),
        (new(iid=99), "unknown instrument"),
        (new(iid=-1), "unknown instrument"),
        (new(qty=0), "qty must be > 0"),
        (new(qty=-3), "qty must be > 0"),
        (new(px=0), "price must be > 0"),
        (new(px=-5), "price must be > 0"),
        (new(otype=OrderType.STOP_LIMIT), "stop price must be > 0"),
    ],
)
def test_basic_checks(intent, reason):
    rejected(gate().on_intent(intent, 1), reason)


def test_max_position_counts_open_orders_on_the_same_side():
    g = gate(max_order_notional=1e12)
    a = approved(g.on_intent(new(qty=60), 1))
    approved(g.on_intent(new(qty=40), 1))  # worst case 100 = limit
    ev = rejected(g.on_intent(new(qty=1), 1), "max position")
    assert (ev.value, ev.limit) == (101, 100)
    # selling is the other side: worst-case short is -100 at most
    approved(g.on_intent(new(qty=100, side=Side.SELL), 1))
    rejected(g.on_intent(new(qty=1, side=Side.SELL), 1), "max position")
    # fills move open quantity into the position: still 100 worst case on the buy side
    g.on_exec_event(fill(a, 60, 0))
    assert g.position[1] == 60 and g.open_buy[1] == 40
    rejected(g.on_intent(new(qty=1), 1), "max position")
    # a long position makes room on the sell side
    assert g.open_sell[1] == 100
    approved(g.on_intent(new(qty=60, side=Side.SELL), 1))  # 60 - 160 = -100


def test_position_is_per_instrument():
    g = gate(max_order_notional=1e12)
    approved(g.on_intent(new(qty=100, iid=1), 1))
    approved(g.on_intent(new(qty=100, iid=3), 1))


def test_a_real_venues_position_limit_is_notional_not_lots():
    """Its lot is the venue's quantity step (0.00001 BTC): 100 lots would be 0.001 BTC. Its
    worst-case position is valued at the order's price against max_position_notional instead;
    the simulator's instruments keep their lot limit."""
    btc = Instrument(instrument_id=3, symbol="BTC/USDT", venue="bn", lot_size=0.00001)
    lim = msgspec.structs.replace(LIMITS, max_order_notional=1e12, max_position_notional=1_000.0)
    g = RiskGate(lim, [INS[0], btc], notional_limited=[3])
    px = 6_000_000  # 60000.00 USDT: one lot is 0.6 USDT
    approved(g.on_intent(new(qty=1_000, px=px, iid=3), 1))  # 600 USDT, 1000 lots > 100
    approved(g.on_intent(new(qty=666, px=px, iid=3), 1))  # 999.6 in all, open orders counted
    ev = rejected(g.on_intent(new(qty=1, px=px, iid=3), 1), "max position notional")
    assert ev.value == pytest.approx(1_000.2) and ev.limit == 1_000.0
    approved(g.on_intent(new(qty=100, iid=1), 1))
    rejected(g.on_intent(new(qty=1, iid=1), 1), "max position")  # lots, as before


def test_max_open_orders_and_slots_freed_by_terminal_events():
    g = gate(max_order_notional=1e12)
    orders = [approved(g.on_intent(new(qty=1), 1)) for _ in range(5)]
    ev = rejected(g.on_intent(new(qty=1), 1), "max open orders")
    assert (ev.value, ev.limit) == (6, 5)
    g.on_exec_event(OrderCanceled(orders[0].client_order_id, 1, 1, "user", 0, 2, 2))
    g.on_exec_event(fill(orders[1], 1, 0))
    g.on_exec_event(OrderRejected(orders[2].client_order_id, 1, "venue", 0, 2, 2))
    for _ in range(3):
        approved(g.on_intent(new(qty=1), 1))
    rejected(g.on_intent(new(qty=1), 1), "max open orders")


def test_duplicate_open_id_gets_risk_event_only():
    g = gate()
    it = new()
    approved(g.on_intent(it, 1))
    out = g.on_intent(it, 2)
    assert len(out) == 1 and isinstance(out[0], RiskEvent) and "duplicate" in out[0].reason


def test_cancel_always_passes():
    g = gate()
    c = IntentCancel(client_order_id=42, strategy_id=1, instrument_id=1, ts_origin=7, ts_created=8)
    out = g.on_intent(c, 9)
    assert len(out) == 1 and isinstance(out[0], CancelOrder)
    assert (out[0].client_order_id, out[0].ts_origin, out[0].ts_approved) == (42, 7, 9)


def test_replace_checked_and_rejected_replace_cancels_the_original():
    g = gate(max_order_notional=1e12)
    o = approved(g.on_intent(new(qty=50), 1))
    rep = IntentReplace(
        o.client_order_id, 1, 1, new_px=10_001, new_qty=100, ts_origin=3, ts_created=3
    )
    r = g.on_intent(rep, 4)
    assert len(r) == 1 and isinstance(r[0], ReplaceOrder) and r[0].new_qty == 100
    g.on_exec_event(OrderReplaced(o.client_order_id, 1, 10_001, 100, 3, 5, 5))
    assert g.open_buy[1] == 100
    too_big = IntentReplace(o.client_order_id, 1, 1, 10_001, 101, 6, 6)
    out = g.on_intent(too_big, 7)
    assert [type(m) for m in out] == [RiskEvent, CancelOrder]
    assert "max position" in out[0].reason and out[1].client_order_id == o.client_order_id
    # reducing is always allowed
    assert isinstance(
        g.on_intent(IntentReplace(o.client_order_id, 1, 1, 9_000, 10, 8, 8), 8)[0], ReplaceOrder
    )
    # replace of an order risk does not know: recorder only
    out = g.on_intent(IntentReplace(777, 1, 1, 1, 1, 9, 9), 9)
    assert [type(m) for m in out] == [RiskEvent]


def test_kill_switch_cancels_everything_and_blocks_until_resume():
    g = gate(max_order_notional=1e12)
    orders = [approved(g.on_intent(new(qty=1, iid=iid), 1)) for iid in (1, 3, 1)]
    out = g.on_control(Control(command=ControlCommand.KILL, ts=50, arg="operator"))
    ks = [m for m in out if isinstance(m, RiskEvent)]
    assert len(ks) == 1 and ks[0].kind == RiskEventKind.KILL_SWITCH and ks[0].reason == "operator"
    assert ks[0].state == TradingState.HALTED
    cancels = [m for m in out if isinstance(m, CancelOrder)]
    assert {c.client_order_id for c in cancels} == {o.client_order_id for o in orders}
    assert g.state == TradingState.HALTED

    rejected(g.on_intent(new(qty=1), 51), "trading halted")
    # a replace while halted cancels instead; a cancel still passes
    out = g.on_intent(IntentReplace(orders[0].client_order_id, 1, 1, 5, 1, 52, 52), 52)
    assert [type(m) for m in out] == [RiskEvent, CancelOrder]
    assert isinstance(
        g.on_intent(IntentCancel(orders[0].client_order_id, 1, 1, 53, 53), 53)[0], CancelOrder
    )
    # halt does not lift by itself: time passes, events arrive, still halted
    for o in orders:
        g.on_exec_event(OrderCanceled(o.client_order_id, o.instrument_id, 1, "kill", 0, 60, 60))
    assert not g.open_orders and g.open_buy.sum() == 0
    rejected(g.on_intent(new(qty=1), 10**12), "trading halted")

    out = g.on_control(Control(command=ControlCommand.RESUME, ts=70))
    assert out[0].kind == RiskEventKind.RESUMED and g.state == TradingState.ACTIVE
    approved(g.on_intent(new(qty=1), 71))


def test_flatten_sends_reduce_only_closing_orders():
    g = gate(max_order_notional=1e12)
    o = approved(g.on_intent(new(qty=7), 1))
    g.on_exec_event(fill(o, 7, 0))
    s = approved(g.on_intent(new(qty=2, iid=3, side=Side.SELL), 1))
    g.on_exec_event(fill(s, 2, 0))
    out = g.on_control(Control(command=ControlCommand.FLATTEN, ts=9))
    flat = {m.instrument_id: m for m in out if isinstance(m, NewOrder)}
    assert (flat[1].side, flat[1].qty) == (Side.SELL, 7)
    assert (flat[3].side, flat[3].qty) == (Side.BUY, 2)
    assert all(m.order_type == OrderType.MARKET for m in flat.values())
    assert all(m.strategy_id == 0 for m in flat.values())
    assert g.state == TradingState.HALTED
    # flatten orders count as open and their fills flatten the position
    g.on_exec_event(fill(flat[1], 7, 0))
    assert g.position[1] == 0 and flat[1].client_order_id not in g.open_orders


def test_refused_replace_releases_its_reservation_and_order_stays_open():
    g = gate(max_order_notional=1e12)
    o = approved(g.on_intent(new(qty=10), 1))
    g.on_intent(IntentReplace(o.client_order_id, 1, 1, 10_000, 30, 2, 2), 2)
    assert g.open_buy[1] == 30
    stp = ReplaceRejectReason.SELF_TRADE
    g.on_exec_event(OrderReplaceRejected(o.client_order_id, 1, stp, "self-trade", 2, 3, 3))
    assert g.open_buy[1] == 10 and o.client_order_id in g.open_orders
    unknown = CancelRejectReason.UNKNOWN_ORDER
    g.on_exec_event(OrderCancelRejected(o.client_order_id, 1, unknown, "unknown", 2, 3, 3))
    assert g.open_buy[1] == 10 and o.client_order_id in g.open_orders


def test_cancel_all_control_keeps_state():
    g = gate()
    approved(g.on_intent(new(qty=1), 1))
    out = g.on_control(Control(command=ControlCommand.CANCEL_ALL, ts=2))
    assert [type(m) for m in out] == [CancelOrder] and g.state == TradingState.ACTIVE


def test_fill_of_unknown_order_still_moves_position():
    g = gate()
    g.on_exec_event(OrderFilled(999, 1, 1, Side.SELL, 100, 4, 4, 0, 0.0, 1, 1, 0, 1, 1))
    assert g.position[1] == -4


# --- replacing an algo parent: new_qty is the new OPEN quantity, as for any order ---------------

S = 1_000_000_000


def _parent_with_fills(g: RiskGate, otype: int, px: int) -> tuple[AlgoEngine, NewOrder]:
    """Risk in front of a real ``AlgoEngine`` (exec's part that works parents): a BUY TWAP parent
    of 80 lots (8 slices of 10), approved by ``g``, whose first 3 slices filled (30 lots); every
    parent event went back to ``g`` as exec publishes it."""
    ids = iter(range(1000, 2000))
    algo = AlgoEngine(InstrumentTable(INS), lambda: next(ids))
    params = {"duration_s": 8.0, "slices": 8.0}
    it = msgspec.structs.replace(new(qty=80, px=px, otype=otype), algo=int(AlgoKind.TWAP))
    parent = approved(g.on_intent(msgspec.structs.replace(it, algo_params=params), 1))
    out = algo.submit(parent, 0) + algo.on_timer(2 * S)
    up = [m for m in out if type(m) not in (NewOrder, CancelOrder, ReplaceOrder)]
    for k in [m for m in out if type(m) is NewOrder]:
        q, cid = k.qty, k.client_order_id
        f = OrderFilled(cid, 5, 1, k.side, 10_000, q, q, 0, 0.0, 1, cid, 0, 2 * S, 2 * S)
        up += algo.on_child_event(f, 2 * S)
    for ev in up:
        g.on_exec_event(ev)
    assert algo.parent(parent.client_order_id).filled == 30
    assert (g.position[1], g.open_buy[1]) == (30, 50)
    return algo, parent


def _amend(g: RiskGate, algo: AlgoEngine, parent: NewOrder, px: int, qty: int) -> list[object]:
    """Risk's answer to a replace of the parent; an approved one is handed to the algo engine
    and its events go back to risk, as in the running system."""
    out = g.on_intent(IntentReplace(parent.client_order_id, 1, 1, px, qty, 3 * S, 3 * S), 3 * S)
    if len(out) == 1 and isinstance(out[0], ReplaceOrder):
        for ev in algo.amend(out[0], 3 * S):
            g.on_exec_event(ev)
    return out


def test_amending_a_partly_filled_parent_near_the_position_limit_sizes_the_open_quantity():
    # position 30 + 50 open = 80 worst case; limit 100. New open 70: 30 + 70 = 100, at the limit
    g = gate(max_order_notional=1e12)
    algo, parent = _parent_with_fills(g, OrderType.LIMIT, 10_000)
    (rep,) = _amend(g, algo, parent, 10_000, 70)
    assert isinstance(rep, ReplaceOrder) and rep.new_qty == 70
    assert algo.parent(parent.client_order_id).qty == 100  # the engine's total: 30 filled + 70
    assert (g.position[1], g.open_buy[1], g.open_orders[parent.client_order_id].reserved) == (
        30,
        70,
        0,
    )
    ev = rejected(g.on_intent(new(qty=1), 4 * S), "max position")  # the book is full: 101
    assert (ev.value, ev.limit) == (101, 100)
    # just over: 71 open would make 101; the replace is refused and the parent canceled
    g2 = gate(max_order_notional=1e12)
    algo2, parent2 = _parent_with_fills(g2, OrderType.LIMIT, 10_000)
    out = _amend(g2, algo2, parent2, 10_000, 71)
    assert [type(m) for m in out] == [RiskEvent, CancelOrder]
    assert "max position" in out[0].reason and (out[0].value, out[0].limit) == (101, 100)
    assert algo2.parent(parent2.client_order_id).qty == 80  # never reached exec
    # a LIMIT parent still needs a price
    g3 = gate(max_order_notional=1e12)
    algo3, parent3 = _parent_with_fills(g3, OrderType.LIMIT, 10_000)
    out = _amend(g3, algo3, parent3, 0, 20)
    assert [type(m) for m in out] == [RiskEvent, CancelOrder]
    assert "price must be > 0" in out[0].reason


def test_a_market_parent_replaced_at_px_0_stays_market_and_is_checked_as_one():
    g = gate(max_order_notional=1e12)
    g.on_market_data(Quote(1, 9_990, 50, 10_010, 50, 1, 1))
    algo, parent = _parent_with_fills(g, OrderType.MARKET, 0)
    (rep,) = _amend(g, algo, parent, 0, 70)  # more: 30 + 70 = 100, at the position limit
    assert isinstance(rep, ReplaceOrder) and (rep.new_px, rep.new_qty) == (0, 70)
    p = algo.parent(parent.client_order_id)
    assert (p.qty, p.order.px, p.order.order_type) == (100, 0, OrderType.MARKET)
    assert (g.position[1], g.open_buy[1], g.open_orders[parent.client_order_id].px) == (30, 70, 0)
    (rep,) = _amend(g, algo, parent, 0, 20)  # and back down: still market
    assert isinstance(rep, ReplaceOrder) and g.open_buy[1] == 20 and p.qty == 50
    # it is checked like a new market order of that size: 71 more would make 101 ...
    out = _amend(g, algo, parent, 0, 71)
    assert [type(m) for m in out] == [RiskEvent, CancelOrder] and "max position" in out[0].reason
    # ... and valued at the opposite best: 90 lots at 100.10 = 9_009 against the notional limit
    for limit, ok in ((9_009.0, True), (9_008.99, False)):
        g2 = gate(max_order_notional=limit, max_position_lots=1000)
        g2.on_market_data(Quote(1, 9_990, 50, 10_010, 50, 1, 1))
        algo2, parent2 = _parent_with_fills(g2, OrderType.MARKET, 0)  # 80 lots: 8_008
        out = _amend(g2, algo2, parent2, 0, 90)
        if ok:
            assert len(out) == 1 and isinstance(out[0], ReplaceOrder)
            assert algo2.parent(parent2.client_order_id).qty == 120
        else:
            assert [type(m) for m in out] == [RiskEvent, CancelOrder]
            assert "max order notional" in out[0].reason and out[0].value == pytest.approx(9_009)
