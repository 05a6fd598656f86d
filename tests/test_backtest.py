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
LIMITS = RiskLimits(max_order_notional=1e9, max_position_lots=50, max_open_orders=20)


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
    limits = RiskLimits(max_order_notional=1e9, max_position_lots=1, max_open_orders=20)
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
