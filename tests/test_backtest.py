"""InlineRuntime end to end: fills and consistent positions, latency measured, determinism,
kill switch through the whole topology."""

from __future__ import annotations

import itertools
import math

import pytest

from engine.backtest import InlineRuntime, run_backtest
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Quote,
    Side,
    TimeInForce,
    TradingState,
)
from engine.risk import RiskLimits
from engine.strategies.base import Strategy
from engine.strategies.market_maker import MarketMaker
from engine.strategies.momentum import MomentumTaker
from engine.strategy_host import StrategySpec

INS = [Instrument(instrument_id=1, symbol="AAA"), Instrument(instrument_id=2, symbol="BBB")]
LIMITS = RiskLimits.off(max_order_notional=1e9, max_position_lots=50, max_open_orders=20)


class FakeVenue:
    """A tiny top-of-book venue with a fixed latency: enough to exercise the runtime's plumbing.

    Orders arrive ``latency_ns`` after submission; a buy fills (all of it, at its limit or the
    ask) when the ask is at or below its price, a sell symmetrically; IOC/market remainders are
    canceled; acks, fills and cancel acks are reported ``latency_ns`` after they happen.
    """

    name = "fake"

    def __init__(self, latency_ns: int = 0) -> None:
        self.latency = latency_ns
        self.bid: dict[int, int] = {}
        self.ask: dict[int, int] = {}
        self.inbox: list[tuple[int, int, str, object]] = []  # (due, seq, what, msg)
        self.outbox: list[tuple[int, int, object]] = []
        self.resting: dict[int, list] = {}  # coid -> [order, px, qty]
        self.pos: dict[int, int] = {}
        self._seq = itertools.count()
        self._fid = itertools.count(1)

    def _later(self, now: int, what: str, msg: object) -> list:
        self.inbox.append((now + self.latency, next(self._seq), what, msg))
        return self._run(now)

    def submit(self, order, now_ns):
        return self._later(now_ns, "new", order)

    def cancel(self, c, now_ns):
        return self._later(now_ns, "cancel", c)

    def replace(self, r, now_ns):
        return self._later(now_ns, "replace", r)

    def on_market_data(self, msg, now_ns):
        if isinstance(msg, Quote):
            self.bid[msg.instrument_id] = msg.bid_px
            self.ask[msg.instrument_id] = msg.ask_px
        out = self._run(now_ns)
        for coid in list(self.resting):
            self._match(coid, now_ns)
        return out + self._due(now_ns)

    def poll(self, now_ns):
        return self._run(now_ns)

    def _emit(self, t: int, ev: object) -> None:
        ev.ts_recv = t + self.latency  # delivered (received by us) one latency later
        self.outbox.append((t + self.latency, next(self._seq), ev))

    def _due(self, now: int) -> list:
        self.outbox.sort(key=lambda x: (x[0], x[1]))
        out = [e for t, _, e in self.outbox if t <= now]
        self.outbox = [x for x in self.outbox if x[0] > now]
        return out

    def _run(self, now: int) -> list:
        self.inbox.sort(key=lambda x: (x[0], x[1]))
        while self.inbox and self.inbox[0][0] <= now:
            t, _, what, m = self.inbox.pop(0)
            if what == "new":
                self._emit(
                    t,
                    OrderAccepted(
                        m.client_order_id,
                        m.client_order_id,
                        m.instrument_id,
                        m.side,
                        m.px,
                        m.qty,
                        m.ts_origin,
                        t,
                        t,
                    ),
                )
                self.resting[m.client_order_id] = [m, m.px, m.qty]
                self._match(m.client_order_id, t)
                r = self.resting.get(m.client_order_id)
                if r and (m.tif == TimeInForce.IOC or m.order_type == OrderType.MARKET):
                    del self.resting[m.client_order_id]
                    self._emit(
                        t,
                        OrderCanceled(
                            m.client_order_id, m.instrument_id, r[2], "ioc", m.ts_origin, t, t
                        ),
                    )
            elif what == "cancel":
                r = self.resting.pop(m.client_order_id, None)
                if r:
                    self._emit(
                        t,
                        OrderCanceled(
                            m.client_order_id, m.instrument_id, r[2], "canceled", m.ts_origin, t, t
                        ),
                    )
            else:
                r = self.resting.get(m.client_order_id)
                if r:
                    r[1], r[2] = m.new_px, m.new_qty
                    self._emit(
                        t,
                        OrderReplaced(
                            m.client_order_id,
                            m.instrument_id,
                            m.new_px,
                            m.new_qty,
                            m.ts_origin,
                            t,
                            t,
                        ),
                    )
                    self._match(m.client_order_id, t)
        return self._due(now)

    def _match(self, coid: int, t: int) -> None:
        o, px, qty = self.resting[coid]
        iid = o.instrument_id
        market = o.order_type == OrderType.MARKET
        if o.side == Side.BUY and iid in self.ask and (market or self.ask[iid] <= px):
            fpx = self.ask[iid]
        elif o.side == Side.SELL and iid in self.bid and (market or self.bid[iid] >= px):
            fpx = self.bid[iid]
        else:
            return
        del self.resting[coid]
        self.pos[iid] = self.pos.get(iid, 0) + o.side * qty
        self._emit(
            t,
            OrderFilled(
                coid,
                coid,
                iid,
                o.side,
                fpx,
                qty,
                o.qty,
                0,
                0.01 * qty,
                2,
                next(self._fid),
                o.ts_origin,
                t,
                t,
            ),
        )

    def open_orders(self):
        return [r[0] for r in self.resting.values()]

    def positions(self):
        return dict(self.pos)


def wave(n: int = 600, iid: int = 1, period: float = 80.0, amp: float = 40.0, step_ns: int = 1_000):
    """Quotes on a sine wave: trends both ways, so crossings happen in both directions."""
    for k in range(n):
        b = 10_000 + int(amp * math.sin(k / period * 2 * math.pi))
        yield Quote(iid, b, 5, b + 2, 5, ts_event=(k + 1) * step_ns, ts_recv=0)


MOM = StrategySpec(MomentumTaker, {"fast": 4, "slow": 16, "size": 2}, instruments=[1])


def test_momentum_end_to_end_fills_and_consistent_positions():
    venue = FakeVenue(latency_ns=300)
    s = run_backtest(INS, [MOM], LIMITS, venue, wave(), hop_latency_ns=50)
    assert s["ticks"] == 600
    assert s["orders"] >= 3 and s["fills"] >= 3 and s["rejects"] == 0
    fills_sum = sum(
        o.side * o.qty for o in s["orders_sent"] if isinstance(o, NewOrder)
    )  # every IOC order fills completely against this venue
    assert s["positions"][1] == fills_sum == s["risk_positions"][1] == s["venue_positions"][1]
    assert s["positions"][2] == 0
    assert s["tick_to_order_ns"]["count"] == s["orders"]
    # strategy→risk→exec: two hops, on every order
    assert s["tick_to_order_ns"]["p50"] == s["tick_to_order_ns"]["max"] == 100
    assert s["wall_ns_per_tick"]["count"] == 600
    assert s["pnl"]["fees"] == pytest.approx(0.01 * sum(o.qty for o in s["orders_sent"]))
    assert s["pnl"]["net"] == pytest.approx(s["pnl"]["equity"])
    assert s["open_orders"] == 0 and s["anomalies"] == {}


def test_same_data_same_orders_whatever_latency():
    def orders(latency_ns: int) -> list:
        s = run_backtest(INS, [MOM], LIMITS, FakeVenue(latency_ns), wave())
        return [o for o in s["orders_sent"] if isinstance(o, NewOrder)]

    base = orders(0)
    assert base
    for lat in (1, 999, 5_000, 50_000):
        got = orders(lat)
        key = [(o.client_order_id, o.side, o.qty, o.px, o.ts_origin) for o in got]
        assert key == [(o.client_order_id, o.side, o.qty, o.px, o.ts_origin) for o in base]


def test_feed_latency_stamps_ts_recv_and_origin():
    s = run_backtest(INS, [MOM], LIMITS, FakeVenue(), wave(), feed_latency_ns=700)
    for o in s["orders_sent"]:
        if isinstance(o, NewOrder):
            assert o.ts_origin % 1_000 == 700  # ts_event on the 1 µs grid + feed latency


def test_market_maker_end_to_end_with_requotes_and_cleanup():
    mm = StrategySpec(
        MarketMaker,
        {
            "half_spread_ticks": 1,
            "size": 1,
            "max_inventory": 5,
            "requote_ticks": 2,
            "use_microprice": False,
        },
        instruments=[1],
    )
    venue = FakeVenue(latency_ns=200)
    rt = InlineRuntime(INS, [mm], LIMITS, venue, wave(n=400, amp=10), hop_latency_ns=10)
    s = rt.run()
    assert s["orders"] >= 2 and s["replaces"] > 0 and s["fills"] > 0
    assert s["positions"][1] == s["risk_positions"][1] == venue.positions().get(1, 0)
    assert abs(s["positions"][1]) <= 5
    # stop canceled what was resting and the venue answered within the drain time
    assert s["open_orders"] == 0 and not venue.resting
    assert rt.risk.open_orders == {} and rt.host.open_orders() == {}


def test_risk_rejects_reach_the_strategy():
    limits = RiskLimits.off(max_order_notional=1e9, max_position_lots=1, max_open_orders=20)
    s = run_backtest(INS, [MOM], limits, FakeVenue(), wave())
    assert s["risk_rejects"] > 0 and s["rejects"] == s["risk_rejects"]
    assert s["orders"] == 0  # size 2 > max position 1: every new order is refused
    assert s["intents"] == s["risk_rejects"] + s["cancels"]


class Quoter(Strategy):
    """Keeps one bid resting 10 ticks below the market, re-placing it when it disappears."""

    def on_quote(self, q: Quote) -> None:
        if not self.ctx.open_orders:
            self.ctx.buy(q.instrument_id, 1, q.bid_px - 10)


def test_kill_switch_in_the_stream_cancels_and_blocks_until_resume():
    src = list(wave(n=300))
    src.insert(100, Control(command=ControlCommand.KILL, ts=src[100].ts_event - 1, arg="test"))
    src.insert(201, Control(command=ControlCommand.RESUME, ts=src[201].ts_event - 1))
    rt = InlineRuntime(INS, [StrategySpec(Quoter, instruments=[1])], LIMITS, FakeVenue(100), src)
    s = rt.run()
    killed_at = src[100].ts
    cancels = [o for o in s["orders_sent"] if isinstance(o, CancelOrder)]
    assert cancels and cancels[0].ts_origin == killed_at  # the kill canceled the resting bid
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    # no order reached the venue between KILL and RESUME; some did after
    assert not [o for o in news if killed_at < o.ts_approved < src[201].ts]
    assert [o for o in news if o.ts_approved > src[201].ts]
    assert s["risk_rejects"] > 0
    assert s["trading_state"] == TradingState.ACTIVE


def test_controls_argument_and_halt_at_end():
    ctl = Control(command=ControlCommand.KILL, ts=150_000)
    rt = InlineRuntime(
        INS,
        [StrategySpec(Quoter, instruments=[1])],
        LIMITS,
        FakeVenue(),
        wave(n=300),
        controls=[ctl],
    )
    s = rt.run()
    assert s["trading_state"] == TradingState.HALTED
    assert all(o.ts_approved <= 150_000 for o in s["orders_sent"] if isinstance(o, NewOrder))


def test_timer_and_max_ticks_bound_an_endless_source():
    calls = []

    class Ticker(Strategy):
        def on_timer(self, now_ns: int) -> None:
            calls.append(now_ns)

    def endless():
        for k in itertools.count():
            yield Quote(1, 100, 1, 101, 1, ts_event=(k + 1) * 1_000, ts_recv=0)

    s = run_backtest(
        INS, [Ticker], LIMITS, FakeVenue(), endless(), max_ticks=100, timer_interval_ns=10_000
    )
    assert s["ticks"] == 100
    assert calls == list(range(11_000, 100_001, 10_000))


class Spinner(Strategy):
    """Answers every reject with another order at zero latency: a livelock."""

    def on_quote(self, q: Quote) -> None:
        self.ctx.buy(q.instrument_id, 0, q.bid_px)

    def on_order_event(self, ev) -> None:
        if isinstance(ev, OrderRejected):
            self.ctx.buy(ev.instrument_id, 0, 100)


def test_livelock_is_detected():
    with pytest.raises(RuntimeError, match="livelock"):
        run_backtest(INS, [Spinner], LIMITS, FakeVenue(), wave(n=3))


class HintingVenue(FakeVenue):
    """The fake venue plus ``next_event_ns``: the runtime can deliver events exactly when due."""

    def next_event_ns(self):
        times = [x[0] for x in self.inbox] + [x[0] for x in self.outbox]
        return min(times) if times else None


class FillChaser(Strategy):
    """Buys once at market, then sells 1 lot at market as soon as the buy fills."""

    def on_quote(self, q: Quote) -> None:
        if not self.params.get("done"):
            self.params["done"] = True
            self.ctx.buy(q.instrument_id, 1)

    def on_fill(self, ev) -> None:
        if ev.side == Side.BUY:
            self.ctx.sell(ev.instrument_id, 1)


def sparse_quotes(n: int = 20, step_ns: int = 1_000_000):
    for k in range(n):
        yield Quote(1, 10_000, 5, 10_002, 5, ts_event=(k + 1) * step_ns, ts_recv=0)


@pytest.mark.parametrize(
    "venue_cls, kwargs, reaction_ns",
    [
        (FakeVenue, {}, 1_000_000 - 2 * 300),  # heard at the next tick, 1 ms later
        (FakeVenue, {"poll_interval_ns": 250}, 150),  # polls at +250, +500, +750
        (HintingVenue, {}, 0),  # exactly when due
    ],
)
def test_fill_reaction_time_depends_on_how_the_venue_is_polled(venue_cls, kwargs, reaction_ns):
    spec = StrategySpec(FillChaser, instruments=[1])
    s = run_backtest(INS, [spec], LIMITS, venue_cls(300), sparse_quotes(), **kwargs)
    buy, sell = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    # the buy fills at venue time t0 + 300 and the fill is due back at t0 + 600
    due = buy.ts_approved + 600
    assert sell.ts_origin == due  # the intent's origin is the fill's receive stamp
    assert sell.ts_approved - due == reaction_ns
    assert s["positions"][1] == 0 and s["fills"] == 2


def test_stopped_strategies_do_not_act_on_late_events():
    spec = StrategySpec(FillChaser, instruments=[1])
    # the buy goes out on the last tick; its fill arrives after stop: no sell may follow
    s = run_backtest(INS, [spec], LIMITS, FakeVenue(300), sparse_quotes(1))
    assert [o.side for o in s["orders_sent"] if isinstance(o, NewOrder)] == [Side.BUY]
    assert s["positions"][1] == 1


# --- against the real simulated exchange and synthetic market --------------------------------


def sim_setup(latency_ns: int, seed: int = 3):
    from engine.sources.synthetic import InstrumentSpec, SyntheticMarket
    from engine.venues.sim import SimExchange

    market = SyntheticMarket(
        [
            InstrumentSpec.from_instrument(INS[0], 100.0, vol=2e-4),
            InstrumentSpec.from_instrument(INS[1], 50.0, vol=2e-4),
        ],
        0.5,
        seed=seed,
    )
    venue = SimExchange(
        INS,
        latency_ns=latency_ns,
        response_latency_ns=latency_ns,
        maker_fee_bps=-0.5,
        taker_fee_bps=2.0,
        seed=1,
    )
    return market, venue


SIM_SPECS = [
    StrategySpec(
        MarketMaker,
        {"half_spread_ticks": 2, "size": 3, "max_inventory": 20, "skew_ticks_per_lot": 0.1},
        instruments=[1],
    ),
    StrategySpec(MomentumTaker, {"fast": 20, "slow": 100, "size": 5}, instruments=[2]),
]
SIM_LIMITS = RiskLimits.off(max_order_notional=1e6, max_position_lots=100, max_open_orders=50)


def test_end_to_end_with_sim_exchange_and_synthetic_market():
    market, venue = sim_setup(50_000)
    rt = InlineRuntime(
        INS,
        SIM_SPECS,
        SIM_LIMITS,
        venue,
        market,
        max_ticks=8_000,
        hop_latency_ns=2_000,
        poll_interval_ns=20_000,
    )
    s = rt.run()
    assert s["ticks"] == 8_000 and s["orders"] > 20 and s["fills"] > 20 and s["replaces"] > 0
    # one truth for positions: the venue's fills, the portfolio, risk and the strategies agree
    by_venue = {1: 0, 2: 0}
    for f in venue.fills:
        by_venue[f.instrument_id] += f.side * f.fill_qty
    assert s["positions"] == s["risk_positions"] == by_venue
    assert {k: v for k, v in by_venue.items() if v} == {
        k: v for k, v in s["venue_positions"].items() if v
    }
    strat_pos = {iid: sum(rt.host.context(sid).position(iid) for sid in (1, 2)) for iid in (1, 2)}
    assert strat_pos == by_venue
    assert s["fills"] == len(venue.fills)
    assert s["pnl"]["fees"] == pytest.approx(sum(f.fee for f in venue.fills))
    assert s["pnl"]["net"] == pytest.approx(s["pnl"]["equity"], abs=1e-6)
    assert abs(s["positions"][1]) <= 20  # the market maker's inventory cap
    # shutdown: every order ended, nothing rests at the venue, no anomaly
    assert s["open_orders"] == 0 and venue.open_orders() == [] and s["anomalies"] == {}
    # md-driven orders: two hops from tick to venue
    md_lat = [
        o.ts_approved + 2_000 - o.ts_origin
        for o in s["orders_sent"]
        if isinstance(o, NewOrder) and o.strategy_id == 2
    ]
    assert md_lat and set(md_lat) == {4_000}


def test_sim_momentum_orders_independent_of_latency():
    def momentum_orders(latency_ns: int):
        market, venue = sim_setup(latency_ns)
        s = run_backtest(INS, SIM_SPECS, SIM_LIMITS, venue, market, max_ticks=8_000)
        return [
            (o.client_order_id, o.side, o.qty, o.px, o.ts_origin)
            for o in s["orders_sent"]
            if isinstance(o, NewOrder) and o.strategy_id == 2
        ]

    base = momentum_orders(0)
    assert len(base) >= 5
    assert momentum_orders(200_000) == base
    assert momentum_orders(3_000_000) == base


def test_sim_backtest_is_deterministic():
    def once():
        market, venue = sim_setup(100_000, seed=11)
        s = run_backtest(
            INS, SIM_SPECS, SIM_LIMITS, venue, market, max_ticks=4_000, hop_latency_ns=1_000
        )
        s.pop("wall_ns_per_tick")
        return s

    assert once() == once()
