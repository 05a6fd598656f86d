"""A child that reaches exec after its native parent went to the venue alone (engine.exec_lists):
the venue takes it where its client says so (``accepts_child``), else exec holds it and
releases it on the parent's fills like any child — never a lone ``submit_list([child])``."""

from __future__ import annotations

from engine.contingent import OTO
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import NewOrder, OrderTriggered, OrderType, Quote, Side, TimeInForce
from engine.venues.sim import SimExchange

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
BUY, SELL = Side.BUY, Side.SELL
LMT = OrderType.LIMIT


def new(coid, side, px, qty, **kw) -> NewOrder:
    return NewOrder(coid, 1, IID, side, LMT, TimeInForce.GTC, px, qty, 0, 0, 0, **kw)


class NativeVenue(SimExchange):
    """Runs OTO lists itself (hands each leg to the simulated book as a plain order: enough
    to see who sent what); ``late``: whether it takes a child after its parent."""

    def __init__(self, late: bool) -> None:
        super().__init__(INS)
        self.late = late
        self.lists: list[list[int]] = []

    def supports_contingency(self, kind: int) -> bool:
        return kind == OTO

    def accepts_child(self, child: NewOrder) -> str:
        return "" if self.late else "no child after its parent"

    def submit_list(self, orders, now_ns):
        self.lists.append([o.client_order_id for o in orders])
        return [ev for o in orders for ev in self.submit(o, now_ns)]


def run(late: bool):
    v = NativeVenue(late)
    e = ExecEngine(v, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(Quote(IID, 99, 10, 101, 10, 1, 1), 1)
    e.on_order(new(1, BUY, 100, 4, contingency=OTO), 2)
    e.poll(3)  # the entry goes alone
    e.on_order(new(2, SELL, 110, 4, parent_id=1), 4)
    e.poll(5)
    return e, v


def test_a_venue_that_takes_a_late_child_gets_it():
    e, v = run(late=True)
    assert v.lists == [[1], [2]] and e.lists.legs[2].native and not e.lists.legs[2].waiting


def test_a_late_child_the_venue_refuses_is_held_and_released_by_exec():
    e, v = run(late=False)
    assert v.lists == [[1]]  # never a lone submit_list([child])
    leg = e.lists.legs[2]
    assert not leg.native and leg.waiting
    assert {o.client_order_id for o in v.open_orders()} == {1}
    out = e.on_market_data(Quote(IID, 98, 10, 100, 10, 6, 6), 6)  # the entry fills
    assert [type(x).__name__ for x in out][:1] == ["OrderFilled"]
    assert not leg.waiting and any(isinstance(x, OrderTriggered) for x in out)
    assert {o.client_order_id for o in v.open_orders()} == {2}  # released by exec, plainly
    assert v.lists == [[1]]
