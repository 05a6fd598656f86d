"""Stateful property test of the whole exec path: ExecEngine + the simulated exchange.

Hypothesis drives a random market (quotes, trades), random orders of every type, time in force
and flag, cancels, replaces, resent duplicates and halts. After every step: exec's order table
agrees with the venue on which orders are open, its position equals both the venue's and the
sum of the fills it forwarded, no order is overfilled, and a consistent venue produces no
anomaly at all.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OrderFlag,
    OrderPartiallyFilled,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
    Trade,
)
from engine.oms import OrderState
from engine.order_states import TERMINAL
from engine.venues.sim import SimExchange

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
TYPES = [int(t) for t in OrderType]
TIFS = [int(TimeInForce.GTC), int(TimeInForce.IOC), int(TimeInForce.FOK), int(TimeInForce.DAY)]


class ExecMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.v = SimExchange(INS)
        self.e = ExecEngine(self.v, INS, ExecPolicy(price_gap_bps=50), algo_engine=None)
        self.t = 1_000
        self.mid = 1_000
        self.coid = 0
        self.sent: list[NewOrder] = []
        self.forwarded = 0
        self._feed(self.e.on_market_data(Quote(IID, 999, 10, 1_001, 10, self.t, self.t), self.t))

    def _tick(self) -> int:
        self.t += 1_000
        return self.t

    def _feed(self, out: list[object]) -> None:
        for ev in out:
            if isinstance(ev, OrderPartiallyFilled):
                self.forwarded += ev.side * ev.fill_qty

    @rule(move=st.integers(-6, 6), bq=st.integers(1, 20), aq=st.integers(1, 20))
    def quote(self, move: int, bq: int, aq: int) -> None:
        self.mid = max(20, self.mid + move)
        t = self._tick()
        q = Quote(IID, self.mid - 1, bq, self.mid + 1, aq, t, t)
        self._feed(self.e.on_market_data(q, t))

    @rule(
        side=st.sampled_from([Side.BUY, Side.SELL]), off=st.integers(-3, 3), qty=st.integers(1, 15)
    )
    def trade(self, side: int, off: int, qty: int) -> None:
        t = self._tick()
        self._feed(self.e.on_market_data(Trade(IID, self.mid + off, qty, side, t, t), t))

    @precondition(lambda self: self.coid < 40)
    @rule(
        typ=st.sampled_from(TYPES),
        tif=st.sampled_from(TIFS),
        side=st.sampled_from([Side.BUY, Side.SELL]),
        off=st.integers(-4, 4),
        stop_off=st.integers(1, 5),
        qty=st.integers(1, 12),
        flags=st.sampled_from([0, int(OrderFlag.POST_ONLY), int(OrderFlag.REDUCE_ONLY)]),
        stale=st.booleans(),
    )
    def new_order(self, typ, tif, side, off, stop_off, qty, flags, stale) -> None:
        self.coid += 1
        px = (
            0
            if typ in (OrderType.MARKET, OrderType.STOP, OrderType.TRAILING_STOP)
            else self.mid + off
        )
        stop = self.mid + side * stop_off if typ in (OrderType.STOP, OrderType.STOP_LIMIT) else 0
        if typ == OrderType.TRAILING_STOP:
            stop = stop_off
        t = self._tick()
        origin = 1_000 if stale else t
        o = NewOrder(self.coid, 1, IID, side, typ, tif, px, qty, origin, t, stop, flags)
        self.sent.append(o)
        self._feed(self.e.on_order(o, t))

    @precondition(lambda self: self.sent)
    @rule(k=st.integers(0, 100))
    def resend(self, k: int) -> None:
        before = self.e.sent
        self._feed(self.e.on_order(self.sent[k % len(self.sent)], self._tick()))
        assert self.e.sent == before  # an id already seen is never sent again

    @precondition(lambda self: self.sent)
    @rule(k=st.integers(0, 100))
    def cancel(self, k: int) -> None:
        coid = self.sent[k % len(self.sent)].client_order_id
        self._feed(self.e.on_order(CancelOrder(coid, 1, IID, self.t, self.t), self._tick()))

    @precondition(lambda self: self.sent)
    @rule(k=st.integers(0, 100), off=st.integers(-4, 4), qty=st.integers(1, 12))
    def replace(self, k: int, off: int, qty: int) -> None:
        coid = self.sent[k % len(self.sent)].client_order_id
        rep = ReplaceOrder(coid, 1, IID, self.mid + off, qty, self.t, self.t)
        self._feed(self.e.on_order(rep, self._tick()))

    @rule(halted=st.booleans())
    def status(self, halted: bool) -> None:
        kind = ExchangeStatusKind.HALTED if halted else ExchangeStatusKind.OPEN
        t = self._tick()
        self._feed(self.e.on_market_data(ExchangeStatus(IID, kind, "", t, t), t))

    @invariant()
    def positions_agree(self) -> None:
        pos = self.e.position(IID)
        assert pos == self.forwarded == self.v.positions().get(IID, 0)

    @invariant()
    def orders_agree_with_the_venue(self) -> None:
        at_venue = {o.client_order_id for o in self.v.open_orders()}
        table = self.e.table
        held = {o.client_order_id for o in self.e.held_orders()}  # a halt keeps them here
        resting = set()
        for coid, r in table.orders.items():
            assert 0 <= r.cum_qty <= r.qty
            assert (r.state in TERMINAL) == (not r.is_open)
            local = coid in held or r.state == OrderState.INITIALIZED
            local = local or (r.emulated and not r.triggered)
            if r.is_open and not local:
                resting.add(coid)
        assert at_venue == resting
        assert table.anomalies == {}


ExecMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestExecStateMachine = ExecMachine.TestCase
