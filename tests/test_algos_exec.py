"""Execution algorithms end to end through the real ExecEngine (OMS table + venue), on the
simulated exchange and behind the smart router."""

from __future__ import annotations

from engine.backtest import InlineRuntime
from engine.exec_engine import ExecEngine
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    AlgoState,
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderType,
    TimeInForce,
)
from engine.risk import RiskLimits
from engine.sources.synthetic import InstrumentSpec, SyntheticMarket
from engine.strategies.base import Strategy
from engine.strategy_host import StrategySpec
from engine.venues.multi import VenueSpec, build_sim_venues
from engine.venues.sim import SimExchange

IID = 1
INS = Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1.0)
TABLE = InstrumentTable([INS])
MS = 1_000_000
PARENT = 7 << 32 | 1


def parent_order(algo: int, qty: int, params: dict[str, float], px: int = 0) -> NewOrder:
    return NewOrder(
        client_order_id=PARENT,
        strategy_id=7,
        instrument_id=IID,
        side=1,
        order_type=OrderType.LIMIT if px else OrderType.MARKET,
        tif=TimeInForce.GTC,
        px=px,
        qty=qty,
        ts_origin=1,
        ts_approved=1,
        algo=int(algo),
        algo_params=params,
    )


class Driver:
    """What procs/exec and the backtest do: market data in, the clock polled on time."""

    def __init__(self, venue) -> None:
        self.exec = ExecEngine(venue, TABLE)
        self.out: list[object] = []
        self.now = 0

    def until(self, now: int) -> None:
        for _ in range(100_000):
            t = self.exec.next_event_ns()
            if t is None or t > now:
                break
            self.now = max(self.now, t)
            self.out += self.exec.poll(self.now)
        self.now = max(self.now, now)
        self.out += self.exec.poll(self.now)

    def md(self, msg) -> None:
        self.until(msg.ts_event)
        self.out += self.exec.on_market_data(msg, msg.ts_event)

    def order(self, o, now: int) -> None:
        self.until(now)
        self.out += self.exec.on_order(o, now)

    def about_parent(self) -> list[object]:
        return [e for e in self.out if getattr(e, "client_order_id", None) == PARENT]


def market(seed: int = 2) -> SyntheticMarket:
    spec = InstrumentSpec.from_instrument(INS, 50.0, annual_vol=0.2)
    return SyntheticMarket([spec], seed=seed, mean_interval_ns=MS)


def test_twap_through_exec_engine_on_the_simulated_exchange() -> None:
    venue = SimExchange(TABLE, latency_ns=200_000, jitter_ns=50_000, taker_fee_bps=1.0)
    d = Driver(venue)
    mkt = market()
    for msg in mkt.events(30):
        d.md(msg)
    t0 = d.now
    d.order(parent_order(AlgoKind.TWAP, 300, {"duration_s": 0.5, "slices": 5}), t0)
    for msg in mkt.events(1500):
        d.md(msg)
    ev = d.about_parent()
    assert isinstance(ev[0], OrderAccepted)
    fills = [e for e in ev if isinstance(e, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in fills) == 300 and isinstance(fills[-1], OrderFilled)
    assert all(f.cum_qty + f.leaves_qty == 300 for f in fills)
    prog = [e for e in ev if isinstance(e, AlgoProgress)]
    assert prog[-1].state == AlgoState.DONE
    # upstream never sees a child; the OMS table tracked every child to its end
    coids = {getattr(e, "client_order_id", PARENT) for e in d.out}
    assert coids <= {PARENT}
    children = [r for r in d.exec.table.orders.values() if r.client_order_id != PARENT]
    assert len(children) == 5 and all(not r.is_open for r in children)
    assert sum(r.cum_qty for r in children) == 300
    sent = sorted(r.submitted_ns for r in children)
    assert [t - t0 for t in sent] == [k * 100 * MS for k in range(5)]
    assert venue.positions() == {IID: 300}
    assert d.exec.anomalies == {} and d.exec.algo.anomalies == {}


def test_cancel_of_a_parent_through_exec_cancels_its_resting_child() -> None:
    venue = SimExchange(TABLE, latency_ns=100_000)
    d = Driver(venue)
    mkt = market(seed=4)
    for msg in mkt.events(30):
        d.md(msg)
    bid = venue.book(IID).best_bid()[0]
    d.order(parent_order(AlgoKind.ICEBERG, 200, {"display_qty": 20}, px=bid - 5), d.now)
    d.until(d.now + MS)
    assert [o.qty for o in venue.open_orders()] == [20]
    d.order(CancelOrder(PARENT, 7, IID, d.now, d.now), d.now)
    d.until(d.now + MS)
    end = [e for e in d.about_parent() if isinstance(e, OrderCanceled)]
    assert len(end) == 1 and end[0].leaves_qty == 200
    assert venue.open_orders() == [] and d.exec.table.open_count == 0


def test_twap_through_exec_engine_behind_the_smart_router() -> None:
    router = build_sim_venues(
        TABLE,
        [
            VenueSpec("A", taker_fee_bps=3.0, latency_ns=100_000),
            VenueSpec(
                "B", taker_fee_bps=0.5, latency_ns=150_000, px_offset_ticks=1, size_scale=0.3
            ),
        ],
    )
    d = Driver(router)
    mkt = market(seed=6)
    for msg in mkt.events(30):
        d.md(msg)
    d.order(parent_order(AlgoKind.TWAP, 600, {"duration_s": 0.4, "slices": 4}), d.now)
    for msg in mkt.events(1000):
        d.md(msg)
    fills = [e for e in d.about_parent() if isinstance(e, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in fills) == 600 and isinstance(fills[-1], OrderFilled)
    assert router.positions() == {IID: 600}
    assert router.legs_sent["A"] > 0 and router.legs_sent["B"] > 0  # both venues were used
    assert d.exec.anomalies == {} and d.exec.algo.anomalies == {}


# --- the whole pipeline: strategy -> risk -> exec -> venue, inline ------------------------------


class TwapBuyer(Strategy):
    """Asks once for a TWAP buy; remembers what came back about it."""

    def on_start(self) -> None:
        self.parent = 0
        self.fills: list[object] = []
        self.events: list[object] = []

    def on_quote(self, q) -> None:
        if not self.parent:
            self.parent = self.ctx.algo(
                AlgoKind.TWAP, IID, 1, 200, {"duration_s": 0.3, "slices": 6}, px=q.ask_px + 20
            )

    def on_fill(self, ev) -> None:
        self.fills.append(ev)

    def on_order_event(self, ev) -> None:
        self.events.append(ev)


def test_a_strategy_twap_goes_through_risk_and_exec_as_one_parent() -> None:
    venue = SimExchange(TABLE, latency_ns=100_000)
    spec = StrategySpec(TwapBuyer, instruments=[IID], strategy_id=5)
    limits = RiskLimits.off(max_order_notional=1e9, max_position_lots=1000, max_open_orders=20)
    rt = InlineRuntime(TABLE, [spec], limits, venue, market(seed=8), max_ticks=1500)
    s = rt.run()
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert len(news) == 1 and news[0].algo == AlgoKind.TWAP and news[0].qty == 200
    strat = rt.host.slots[0].strategy
    assert {f.client_order_id for f in strat.fills} == {strat.parent}
    assert sum(f.fill_qty for f in strat.fills) == 200 and isinstance(strat.fills[-1], OrderFilled)
    assert s["positions"][IID] == s["risk_positions"][IID] == venue.positions()[IID] == 200
    assert s["open_orders"] == 0 and s["anomalies"] == {}
    assert rt.exec.algo.parent(strat.parent).state == AlgoState.DONE


def test_scheduled_execution_strategy_runs_a_vwap_curve_from_its_params() -> None:
    from engine.strategies.scheduled import ScheduledExecution

    venue = SimExchange(TABLE, latency_ns=50_000)
    params = {
        "algo": "vwap",
        "side": "sell",
        "qty": 240,
        "limit_ticks": 30,
        "curve": [1, 0, 2],
        "algo_params": {"duration_s": 0.3, "slices": 6},
    }
    spec = StrategySpec(ScheduledExecution, params=params, instruments=[IID], strategy_id=4)
    limits = RiskLimits.off(max_order_notional=1e9, max_position_lots=1000, max_open_orders=20)
    rt = InlineRuntime(TABLE, [spec], limits, venue, market(seed=12), max_ticks=1200)
    s = rt.run()
    strat = rt.host.slots[0].strategy
    assert strat.parent and strat.ended is None
    assert sum(f.fill_qty for f in strat.fills) == 240 and s["positions"][IID] == -240
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert len(news) == 1 and news[0].algo_params == {
        "duration_s": 0.3,
        "slices": 6.0,
        "w0": 1.0,
        "w1": 0.0,
        "w2": 2.0,
    }
    # the middle third of the window has no volume in the curve: no child was sent in it
    par = rt.exec.algo.parent(strat.parent)
    start = par.order.ts_approved
    sent = [
        r.submitted_ns for r in rt.exec.table.orders.values() if r.client_order_id != strat.parent
    ]
    assert sent and not [t for t in sent if start + 100 * MS < t < start + 200 * MS]


def test_scheduled_execution_refuses_bad_params() -> None:
    import pytest

    from engine.strategies.base import StrategyContext
    from engine.strategies.scheduled import ScheduledExecution

    ctx = StrategyContext(4, [INS])
    for bad in ({"algo": "vwop"}, {"side": "long"}, {"qty": 0}, {"algo": "twap", "curve": [1]}):
        with pytest.raises(ValueError):
            ScheduledExecution(ctx, bad)
