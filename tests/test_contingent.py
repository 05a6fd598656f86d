"""Order lists through ExecEngine on the simulated exchange (engine.contingent, engine.exec_lists)
— brackets, OTO, OCO, OUO, each rule by example — the native path a venue offers with
``supports_contingency`` / ``submit_list``, and a bracket sent by a strategy through the inline
runtime (strategy API -> risk approves each leg -> exec)."""

from __future__ import annotations

import pytest

from engine.backtest import run_backtest
from engine.contingent import OCO, OTO, OUO
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderTriggered,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.oms import OrderState
from engine.risk import RiskLimits
from engine.strategies.base import OrderSpec, Strategy
from engine.venues.sim import SimExchange

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
BUY, SELL = Side.BUY, Side.SELL
LMT, STP = OrderType.LIMIT, OrderType.STOP


def new(coid, side, px, qty, typ=LMT, stop_px=0, **kw) -> NewOrder:
    return NewOrder(coid, 1, IID, side, typ, TimeInForce.GTC, px, qty, 0, 0, stop_px, **kw)


def q(bid, ask, t, bq=10, aq=10) -> Quote:
    return Quote(IID, bid, bq, ask, aq, t, t)


def types(evs) -> list[str]:
    return [type(e).__name__ for e in evs]


@pytest.fixture
def ex():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(q(99, 101, 1), 1)
    return e, venue


def bracket(e, qty=10, child=None):
    child = child or qty
    e.on_order(new(1, BUY, 100, qty, contingency=OTO), 2)
    e.on_order(new(2, SELL, 110, child, parent_id=1, contingency=OCO, linked=[3]), 3)
    return e.on_order(new(3, SELL, 0, child, STP, 90, parent_id=1, contingency=OCO, linked=[2]), 4)


def test_bracket_children_are_held_until_the_entry_fills(ex):
    e, v = ex
    out = bracket(e)
    assert types(out) == ["OrderAccepted"] and out[0].venue_order_id == 0
    assert {o.client_order_id for o in v.open_orders()} == {1}  # only the entry is out
    assert e.state(2) == e.state(3) == OrderState.ACCEPTED
    assert e.lists.legs[2].waiting and e.lists.legs[3].waiting


def test_partial_entry_fills_release_then_grow_the_children(ex):
    e, v = ex
    bracket(e)
    out = e.on_market_data(q(98, 100, 5, aq=4), 5)
    assert types(out) == [
        "OrderPartiallyFilled",  # the entry: 4 of 10
        "OrderReplaced",  # take-profit sized to 4
        "OrderTriggered",  # ... and released to the venue
        "OrderAccepted",
        "OrderReplaced",  # stop-loss sized to 4, armed in exec's stop emulation
    ]
    tp = next(o for o in v.open_orders() if o.client_order_id == 2)
    assert (tp.px, tp.qty) == (110, 4) and e.emulator.held()[0].qty == 4
    out = e.on_market_data(q(98, 100, 6, aq=10), 6)  # the rest of the entry
    assert types(out) == ["OrderFilled", "OrderReplaced", "OrderReplaced"]
    assert [(x.client_order_id, x.qty) for x in out[1:]] == [(2, 10), (3, 10)]
    assert e.table.get(2).qty == 10 and e.emulator.held()[0].qty == 10
    assert e.list_stats["released"] == 2 and e.list_stats["resized"] == 2


def test_a_fill_of_one_exit_cancels_the_other(ex):
    e, v = ex
    bracket(e)
    e.on_market_data(q(98, 100, 5), 5)
    out = e.on_market_data(q(110, 112, 6, bq=3), 6)  # take-profit fills 3
    assert types(out) == ["OrderPartiallyFilled", "OrderCanceled"]
    assert out[1].client_order_id == 3 and out[1].reason == "contingent: OCO peer 2 filled"
    assert e.state(3) == OrderState.CANCELED and not e.emulator.held()
    assert e.list_stats["oco_races"] == 0


def test_stop_loss_fill_cancels_the_take_profit_at_the_venue(ex):
    e, v = ex
    bracket(e)
    e.on_market_data(q(98, 100, 5), 5)
    out = e.on_market_data(q(89, 91, 6), 6)
    assert isinstance(out[0], OrderTriggered) and out[0].client_order_id == 3
    assert any(isinstance(x, OrderFilled) and x.client_order_id == 3 for x in out)
    canceled = [x for x in out if isinstance(x, OrderCanceled)]
    assert [c.client_order_id for c in canceled] == [2] and not v.open_orders()
    assert e.position(IID) == 0 == v.positions()[IID]


def test_a_child_never_outlives_its_cancelled_parent(ex):
    e, v = ex
    bracket(e)
    out = e.on_order(CancelOrder(1, 1, IID, 7, 7), 7)
    assert types(out) == ["OrderCanceled", "OrderCanceled", "OrderCanceled"]
    assert [x.client_order_id for x in out] == [1, 2, 3]
    assert "parent 1 ended with nothing filled" in out[1].reason
    assert not v.knows_order(2) and not v.knows_order(3) and not e.open_orders()


def test_a_part_filled_parent_leaves_its_children_at_its_fills(ex):
    e, v = ex
    bracket(e)
    e.on_market_data(q(98, 100, 5, aq=4), 5)
    e.on_order(CancelOrder(1, 1, IID, 7, 7), 7)
    assert e.state(1) == OrderState.CANCELED
    assert e.table.get(2).leaves_qty == 4 and e.emulator.held()[0].qty == 4


def test_children_of_a_parent_risk_refused_are_refused(ex):
    e, v = ex
    out = e.on_order(new(2, SELL, 110, 5, parent_id=99, contingency=OCO, linked=[3]), 3)
    assert types(out) == ["OrderRejected"] and "parent 99 unknown" in out[0].reason


def test_half_sized_children_take_their_share_of_the_fills(ex):
    e, v = ex
    bracket(e, qty=10, child=5)
    e.on_market_data(q(98, 100, 5, aq=3), 5)  # 3 of 10: a half child is 1 lot
    assert e.table.get(2).qty == 1
    e.on_market_data(q(98, 100, 6, aq=1), 6)  # 4 of 10: still 2
    e.on_market_data(q(98, 100, 7, aq=10), 7)
    assert e.table.get(2).qty == 5 and e.emulator.held()[0].qty == 5


def test_oto_child_released_at_once_when_the_parent_already_filled(ex):
    e, v = ex
    e.on_order(new(1, BUY, 101, 3, contingency=OTO), 2)  # takes the ask at once
    assert e.state(1) == OrderState.FILLED
    out = e.on_order(new(2, SELL, 105, 3, parent_id=1), 3)
    assert types(out) == ["OrderAccepted", "OrderTriggered", "OrderAccepted"]
    assert [o.client_order_id for o in v.open_orders()] == [2]


def test_ouo_fill_reduces_the_peer(ex):
    e, v = ex
    e.on_order(new(1, SELL, 104, 6, contingency=OUO, linked=[2]), 2)
    e.on_order(new(2, SELL, 106, 6, contingency=OUO, linked=[1]), 3)
    out = e.on_market_data(q(104, 105, 4, bq=2), 4)
    assert types(out) == ["OrderPartiallyFilled", "OrderReplaced"]
    assert out[1].client_order_id == 2 and out[1].qty == 4
    out = e.on_market_data(q(104, 105, 5, bq=10), 5)  # the other 4 of leg 1
    assert e.state(2) == OrderState.CANCELED  # reduced to nothing
    assert "OUO" in next(x for x in out if isinstance(x, OrderCanceled)).reason


def test_oco_peer_arriving_after_the_first_filled_is_refused(ex):
    e, v = ex
    e.on_order(new(1, SELL, 99, 2, contingency=OCO, linked=[2]), 2)  # fills on arrival
    out = e.on_order(new(2, SELL, 0, 2, STP, 90, contingency=OCO, linked=[1]), 3)
    assert types(out) == ["OrderRejected"] and "OCO peer 1 filled" in out[0].reason


def test_amending_a_held_child_sets_its_full_size(ex):
    e, v = ex
    bracket(e)
    out = e.on_order(ReplaceOrder(2, 1, IID, 112, 6, 5, 5), 5)
    assert types(out) == ["OrderReplaced"] and (out[0].px, out[0].qty) == (112, 6)
    e.on_market_data(q(98, 100, 6, aq=5), 6)  # half the entry: half of 6
    tp = next(o for o in v.open_orders() if o.client_order_id == 2)
    assert (tp.px, tp.qty) == (112, 3)


def test_bad_emulated_leg_is_refused_on_arrival(ex):
    e, v = ex
    e.on_order(new(1, BUY, 100, 5, contingency=OTO), 2)
    out = e.on_order(new(3, SELL, 0, 5, STP, 0, parent_id=1, contingency=OCO), 3)
    assert types(out) == ["OrderRejected"] and "stop price" in out[0].reason


class NativeVenue(SimExchange):
    """A simulated venue that says it runs order lists itself (as OANDA's take-profit /
    stop-loss on fill): it records what it was handed and accepts each leg."""

    def __init__(self, instruments, kinds) -> None:
        super().__init__(instruments)
        self.kinds = kinds
        self.lists: list[list[int]] = []

    def supports_contingency(self, kind: int) -> bool:
        return kind in self.kinds

    def submit_list(self, orders, now_ns):
        self.lists.append([o.client_order_id for o in orders])
        return [
            OrderAccepted.for_order(o, 1000 + o.client_order_id, now_ns, now_ns) for o in orders
        ]


def test_native_venue_gets_the_whole_bracket_at_once():
    v = NativeVenue(INS, {OTO, OCO})
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    assert bracket(e) == []  # collected: nothing out before the poll
    out = e.poll(5)
    assert v.lists == [[1, 2, 3]] and types(out) == ["OrderAccepted"] * 3
    assert all(e.lists.legs[c].native for c in (1, 2, 3))
    assert e.state(3) == OrderState.ACCEPTED and not e.emulator.held()


def test_a_venue_without_oco_gets_only_what_it_can_do_natively():
    v = NativeVenue(INS, {OTO})  # OTO native, OCO not: the children are exec's
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    bracket(e)
    e.poll(5)
    assert v.lists == [[1]] and e.lists.legs[2].waiting


# --- a strategy's bracket through risk -----------------------------------------------------------
class BracketOnce(Strategy):
    """Sends one bracket on the first quote; the test's market fills the entry, then the
    take-profit."""

    sent: tuple[int, int, int] | None = None

    def on_quote(self, quote: Quote) -> None:
        if BracketOnce.sent is None:
            BracketOnce.sent = self.ctx.bracket(IID, BUY, 5, 100, 104, 95)


def test_a_strategy_bracket_goes_through_risk_leg_by_leg():
    BracketOnce.sent = None
    venue = SimExchange(INS)
    limits = RiskLimits.off(max_order_notional=1e6, max_position_lots=100, max_open_orders=50)
    market = [q(99, 101, 1_000), q(98, 100, 2_000_000), q(104, 106, 3_000_000)]
    s = run_backtest(INS, [BracketOnce], limits, venue, market)
    e, tp, sl = BracketOnce.sent
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert [(o.client_order_id, o.contingency, o.parent_id, o.linked) for o in news] == [
        (e, OTO, 0, []),
        (tp, OCO, e, [sl]),
        (sl, OCO, e, [tp]),
    ]  # each leg approved by risk as its own order
    assert s["risk_rejects"] == 0 and s["positions"][IID] == 0 and s["open_orders"] == 0
    assert s["pnl"]["realized"] > 0  # bought at 100, sold at 104


def test_strategy_oco_and_oto_helpers_name_their_peers():
    from engine.strategies.base import StrategyContext

    ctx = StrategyContext(7, INS)
    a, b = ctx.oco(OrderSpec(IID, SELL, 2, 110), OrderSpec(IID, SELL, 2, None, STP, stop_px=90))
    p, c = ctx.oto(OrderSpec(IID, BUY, 2, 100), OrderSpec(IID, SELL, 2, 105))
    u1, u2 = ctx.oco(OrderSpec(IID, SELL, 1, 110), OrderSpec(IID, SELL, 1, 111), reduce=True)
    it = {i.client_order_id: i for i in ctx.take_intents()}
    assert (it[a].contingency, it[a].linked, it[b].linked) == (OCO, [b], [a])
    assert it[b].order_type == STP and it[b].stop_px == 90 and it[a].list_id == a == it[b].list_id
    assert (it[p].contingency, it[c].parent_id, it[c].list_id) == (OTO, p, p)
    assert it[u1].contingency == OUO == it[u2].contingency
    with pytest.raises(ValueError):
        ctx.oco(OrderSpec(IID, SELL, 1, 110))


class NoAmendVenue(SimExchange):
    """A venue that cannot amend: every replace is refused."""

    def replace(self, replace, now_ns):
        from engine.messages import OrderReplaceRejected, ReplaceRejectReason

        return [
            OrderReplaceRejected.for_request(
                replace, ReplaceRejectReason.UNSUPPORTED, "no amends here", now_ns, now_ns
            )
        ]


def test_a_venue_that_cannot_amend_gets_a_second_order_for_the_difference():
    """(Round 1 kept such a child at its size; the child now tracks its parent's fills with a
    second order for each refused enlargement: engine/exec_topups.py.)"""
    v = NoAmendVenue(INS)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(q(99, 101, 1), 1)
    bracket(e)
    e.on_market_data(q(98, 100, 5, aq=4), 5)  # released at 4
    out = e.on_market_data(q(98, 100, 6, aq=3), 6)  # 7 filled: the amend to 7 is refused once
    assert types(out).count("OrderReplaceRejected") == 1
    assert e.table.get(2).qty == 7 and e.list_stats["refused"] == 1  # topped up by 3
    assert sorted(o.qty for o in v.open_orders() if o.side == SELL) == [3, 4]
    assert e.emulator.held()[0].qty == 7  # the stop-loss is exec's own: it grows
    out = e.on_market_data(q(98, 100, 7, aq=3), 7)  # 10 filled: asked once more, then topped up
    assert types(out).count("OrderReplaceRejected") == 1 and e.list_stats["refused"] == 2
    assert e.table.get(2).qty == 10
    assert sorted(o.qty for o in v.open_orders() if o.side == SELL) == [3, 3, 4]


def test_cancel_all_ends_held_children_locally(ex):
    e, v = ex
    bracket(e)
    out = e.cancel_all(8)
    assert sorted(x.client_order_id for x in out if isinstance(x, OrderCanceled)) == [1, 2, 3]
    assert not v.knows_order(2) and not e.open_orders()


def test_an_expired_parent_ends_its_children(ex):
    e, v = ex
    day_end = 86_400 * 1_000_000_000
    e.on_order(NewOrder(1, 1, IID, BUY, LMT, TimeInForce.DAY, 90, 5, 0, 0, contingency=OTO), 2)
    e.on_order(new(2, SELL, 110, 5, parent_id=1), 3)
    out = e.poll(day_end + 1)
    assert [type(x).__name__ for x in out] == ["OrderExpired", "OrderCanceled"]
    assert out[1].client_order_id == 2 and "parent 1 ended" in out[1].reason


def test_a_table_snapshot_restores_the_lists(ex):
    """ExecEngine.restore (stored OrderSnapshots) then restore_lists: the same lists, the same
    held and armed legs, and the run goes on from there."""
    e, v = ex
    bracket(e, qty=10, child=5)
    e.on_market_data(q(98, 100, 5, aq=1), 5)  # 1 of 10: the half-size children still held
    e2 = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None, id_block=1)
    e2.restore(e.table.snapshot())
    assert e2.restore_lists(6) == []
    assert e2.lists.state() == e.lists.state() and e2.lists.legs[3].waiting
    e2.on_market_data(q(98, 100, 7, aq=9), 7)  # the rest: children released at 5
    assert e2.table.get(2).qty == 5 and e2.emulator.held()[0].qty == 5
    e2.on_market_data(q(89, 91, 8), 8)  # the stop-loss fires, the take-profit is canceled
    assert e2.state(3) == OrderState.FILLED and e2.state(2) == OrderState.CANCELED


def test_a_held_gtd_child_expires_while_its_parent_waits(ex):
    e, v = ex
    e.on_order(new(1, BUY, 90, 5, contingency=OTO), 2)
    child = NewOrder(
        2, 1, IID, SELL, LMT, TimeInForce.GTD, 110, 5, 0, 0, expire_ns=1_000, parent_id=1
    )
    e.on_order(child, 3)
    out = e.poll(1_000)
    assert types(out) == ["OrderExpired"] and out[0].client_order_id == 2
    assert e.state(2) == OrderState.EXPIRED and not e.lists.legs[2].waiting
    e.on_market_data(q(88, 90, 5), 5)  # the parent fills later: the expired child stays ended
    assert e.state(1) == OrderState.FILLED and not v.knows_order(2)


def test_a_market_to_limit_child_takes_the_touch_when_released(ex):
    e, v = ex
    e.on_order(new(1, BUY, 100, 4, contingency=OTO), 2)
    e.on_order(new(2, SELL, 0, 4, OrderType.MARKET_TO_LIMIT, parent_id=1), 3)
    e.on_market_data(q(97, 101, 4, bq=1), 4)  # the touch for a sell: 1 lot bid at 97
    out = e.on_market_data(q(97, 100, 5, bq=1), 5)  # the entry fills
    sells = [x for x in out if isinstance(x, OrderPartiallyFilled) and x.client_order_id == 2]
    assert [(f.fill_px, f.fill_qty) for f in sells] == [(97, 1)]
    assert [(o.px, o.qty) for o in v.open_orders()] == [(97, 3)]  # the rest rests at 97
