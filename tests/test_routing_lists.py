"""SmartRouter and order lists / betting selections (engine.routing): a list goes whole to the
one venue that takes it, else exec emulates it; a betting selection several venues trade is
refused (odds are not prices)."""

from __future__ import annotations

from engine.contingent import OCO, OTO
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    NewOrder,
    OrderAccepted,
    OrderRejected,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.routing import SmartRouter
from engine.venues.sim import SimExchange

IID, BET = 1, 4
INS = InstrumentTable(
    [
        Instrument(instrument_id=IID, symbol="AAA"),
        Instrument(instrument_id=BET, symbol="HORSE", kind="betting", market_id="1.23"),
    ]
)
BUY, SELL = Side.BUY, Side.SELL
LMT, STP = OrderType.LIMIT, OrderType.STOP


def new(coid, side, px, qty, typ=LMT, stop_px=0, iid=IID, **kw) -> NewOrder:
    return NewOrder(coid, 1, iid, side, typ, TimeInForce.GTC, px, qty, 0, 0, stop_px, **kw)


class NativeVenue(SimExchange):
    """A simulated venue that runs order lists of ``kinds`` itself and records them."""

    def __init__(self, kinds, name="N") -> None:
        super().__init__(INS, name=name)
        self.kinds = kinds
        self.lists: list[list[int]] = []

    def supports_contingency(self, kind: int) -> bool:
        return kind in self.kinds

    def submit_list(self, orders, now_ns):
        self.lists.append([o.client_order_id for o in orders])
        return [
            OrderAccepted.for_order(o, 1000 + o.client_order_id, now_ns, now_ns) for o in orders
        ]


class OneInstrument(SimExchange):
    """A plain venue that trades only ``IID``."""

    def trades_instrument(self, iid: int) -> bool:
        return iid == IID


def legs():
    return [
        new(1, BUY, 100, 10, contingency=OTO),
        new(2, SELL, 110, 10, parent_id=1, contingency=OCO, linked=[3]),
        new(3, SELL, 0, 10, STP, 90, parent_id=1, contingency=OCO, linked=[2]),
    ]


def test_router_forwards_a_list_whole_to_the_venue_that_takes_it():
    plain, native = SimExchange(INS, name="P"), NativeVenue({OTO, OCO})
    router = SmartRouter({"P": plain, "N": native}, instruments=INS)
    assert router.supports_contingency(OTO) and router.list_venue([IID], {OTO, OCO}) == "N"
    e = ExecEngine(router, INS, ExecPolicy(max_retries=0), algo_engine=None)
    for k, o in enumerate(legs()):
        e.on_order(o, 2 + k)
    out = e.poll(10)
    assert native.lists == [[1, 2, 3]] and plain.open_orders() == []
    assert [type(ev) for ev in out] == [OrderAccepted] * 3
    assert all(e.lists.legs[c].native for c in (1, 2, 3))
    assert router.knows_order(2) and router.legs_sent == {"P": 0, "N": 3}


def test_a_list_no_single_venue_takes_is_emulated_by_exec():
    native = NativeVenue({OTO})  # no OCO anywhere: the children stay exec's
    router = SmartRouter({"P": SimExchange(INS, name="P"), "N": native}, instruments=INS)
    assert router.list_venue([IID], {OTO, OCO}) is None
    e = ExecEngine(router, INS, ExecPolicy(max_retries=0), algo_engine=None)
    for k, o in enumerate(legs()):
        e.on_order(o, 2 + k)
    e.poll(10)
    assert native.lists == [[1]]  # the entry alone (OTO native), the OCO children held
    assert e.lists.legs[2].waiting and e.lists.legs[3].waiting


def test_list_venue_needs_the_venue_to_trade_every_instrument():
    class NarrowNative(NativeVenue):
        def trades_instrument(self, iid: int) -> bool:
            return iid == BET

    router = SmartRouter({"N": NarrowNative({OTO, OCO})}, instruments=INS)
    assert router.list_venue([IID], {OTO}) is None
    evs = router.submit_list(legs(), 5)
    assert [type(e) for e in evs] == [OrderRejected] * 3
    assert "no single venue" in evs[0].reason


def test_betting_selection_at_several_venues_is_refused():
    router = SmartRouter(
        {"A": SimExchange(INS, name="A"), "B": SimExchange(INS, name="B")}, instruments=INS
    )
    evs = router.submit(new(7, BUY, 200, 5, iid=BET), 1)
    assert [type(e) for e in evs] == [OrderRejected]
    assert "odds are not prices" in evs[0].reason and "A, B" in evs[0].reason
    assert router.list_venue([BET], set()) is None
    ok = router.submit(new(8, BUY, 100, 5), 1)  # an ordinary instrument routes as before
    assert not any(type(e) is OrderRejected for e in ok)


def test_betting_selection_at_one_venue_routes():
    a, b = SimExchange(INS, name="A"), OneInstrument(INS, name="B")
    router = SmartRouter({"A": a, "B": b}, instruments=INS)
    router.on_market_data(Quote(BET, 190, 10, 200, 10, 1, 1), 1)
    evs = router.submit(new(7, BUY, 200, 5, iid=BET), 2)
    assert not any(type(e) is OrderRejected for e in evs)
    assert router.legs_sent == {"A": 1, "B": 0}
