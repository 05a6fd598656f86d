"""The rebalancer end to end: inline runtime, risk gate, simulated exchange, portfolio."""

from __future__ import annotations

import pytest

from engine.backtest import InlineRuntime
from engine.instruments import Instrument
from engine.messages import NewOrder, Quote, Side
from engine.risk import RiskLimits
from engine.strategies.base import StrategyContext
from engine.strategies.rebalancer import Rebalancer
from engine.strategy_host import StrategySpec
from engine.venues.sim import SimExchange

HOUR = 3_600 * 10**9
DAY = 24 * HOUR
INS = [
    Instrument(instrument_id=1, symbol="AAA", tick_size=0.01),
    Instrument(instrument_id=2, symbol="BBB", tick_size=0.01),
    Instrument(instrument_id=3, symbol="CCC", tick_size=0.01),
]
LIMITS = RiskLimits.off(max_order_notional=1e7, max_position_lots=100_000, max_open_orders=50)


def quotes(prices, days: float, step_ns: int = 6 * HOUR):
    """Quotes every ``step_ns`` for ``days``; ``prices(iid, t)`` gives the mid in dollars."""
    t = HOUR
    while t < days * DAY:
        for ins in INS:
            mid = round(prices(ins.instrument_id, t) * 100)
            yield Quote(ins.instrument_id, mid - 1, 1_000_000, mid + 1, 1_000_000, t, t)
        t += step_ns


def run(params, prices, days, **kw):
    venue = SimExchange(INS, latency_ns=1_000_000, taker_fee_bps=1.0)
    spec = StrategySpec(Rebalancer, params, strategy_id=5)
    rt = InlineRuntime(
        INS, [spec], LIMITS, venue, quotes(prices, days), initial_cash=1e5, benchmark="AAA", **kw
    )
    s = rt.run()
    return rt, s, venue, rt.host.strategy(5)


def weights(rt, strat):
    eq = rt.portfolio.equity()
    return {iid: rt.portfolio.market_value(iid) / eq for iid in (1, 2, 3)}, eq


def test_invests_to_targets_and_rebalances_drift_back():
    params = {"targets": {"AAA": 0.5, "BBB": 0.3}, "capital": 1e5, "interval_s": 86_400}

    def prices(iid, t):
        if iid == 1:
            return 100.0 if t < 3 * DAY else 150.0  # AAA jumps 50 % on day 3
        return 100.0

    rt, s, venue, strat = run(params, prices, 6)
    w, eq = weights(rt, strat)
    assert w[1] == pytest.approx(0.5, abs=0.01) and w[2] == pytest.approx(0.3, abs=0.01)
    assert w[3] == 0.0
    assert rt.portfolio.cash == pytest.approx(0.2 * eq, abs=0.01 * eq)
    sells = [o for o in s["orders_sent"] if isinstance(o, NewOrder) and o.side == Side.SELL]
    assert sells and {o.instrument_id for o in sells} == {1}  # the drift came from AAA
    assert all(o.ts_approved >= 3 * DAY for o in sells)
    # every order went through risk; the strategy's view, risk and the venue agree
    assert s["positions"] == s["risk_positions"]
    assert {k: v for k, v in s["positions"].items() if v} == {
        k: v for k, v in s["venue_positions"].items() if v
    }
    assert strat.cash == pytest.approx(rt.portfolio.cash)
    assert set(s["pnl_by_strategy"]) == {5}
    assert s["pnl_by_strategy"][5]["net"] == pytest.approx(s["pnl"]["net"])
    a = s["analytics"]
    assert a["points"] > 10 and a["beta"] is not None and a["max_drawdown"] is not None


def test_no_trade_inside_the_drift_band():
    params = {"targets": {"AAA": 0.5}, "capital": 1e5, "interval_s": 86_400, "drift_band": 0.05}

    def prices(iid, t):
        return 100.0 if t < 2 * DAY else 105.0  # +5 %: weight 0.5 -> ~0.512, inside the band

    rt, s, venue, strat = run(params, prices, 5)
    buys_then_nothing = [o.ts_approved for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert buys_then_nothing and max(buys_then_nothing) < DAY
    assert strat.rebalances == 1


def test_cash_buffer_scales_targets_and_order_cap_splits_trades():
    params = {
        "targets": {"AAA": 0.6, "BBB": 0.4},
        "capital": 1e5,
        "interval_s": 3_600 * 6,
        "cash_buffer": 0.1,
        "max_order_notional": 20_000,
    }
    rt, s, venue, strat = run(params, lambda iid, t: 100.0, 3)
    w, eq = weights(rt, strat)
    assert w[1] == pytest.approx(0.54, abs=0.01) and w[2] == pytest.approx(0.36, abs=0.01)
    assert rt.portfolio.cash >= 0.09 * eq
    orders = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert max(o.px * o.qty * 0.01 for o in orders) <= 20_000
    assert len({o.ts_approved for o in orders}) >= 3  # 54 000 of AAA took three intervals


def test_params_are_validated():
    ctx = StrategyContext(1, INS)
    for bad in (
        {},
        {"targets": {"ZZZ": 0.5}},
        {"targets": {"AAA": 0.7, "BBB": 0.7}},
        {"targets": {"AAA": -0.1}},
        {"targets": {"AAA": 0.5}, "drift_band": 2},
        {"targets": {"AAA": 0.5}, "capital": 0},
        {"targets": {"AAA": 0.5}, "substitutes": {"AAA": "AAA"}},
        {"targets": {"AAA": 0.5}, "harvest_threshold": 0},
    ):
        with pytest.raises(ValueError):
            Rebalancer(ctx, bad)


def _dip_path(iid, t):
    if iid != 1:
        return 100.0
    for day, px in ((3, 100.0), (6, 80.0), (9, 95.0)):
        if t < day * DAY:
            return px
    return 70.0


@pytest.mark.parametrize("avoid", [False, True])
def test_wash_sale_windows_only_bind_when_asked(avoid):
    params = {"targets": {"AAA": 0.5}, "capital": 1e5, "interval_s": 86_400}
    if avoid:
        params["avoid_wash_sales"] = True
    rt, s, venue, strat = run(params, _dip_path, 12)
    orders = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    sells = [o.ts_approved for o in orders if o.side == Side.SELL]
    assert len(sells) == 1 and 6 * DAY <= sells[0] < 7 * DAY  # trimmed after the rally
    late_buys = [o.ts_approved for o in orders if o.side == Side.BUY and o.ts_approved > sells[0]]
    pf = rt.portfolio
    if avoid:
        # the trim named the cheap lot bought in the dip: a gain, so no window, no wash sale
        assert pf.positions[1].realized > 0 and pf.summary()["wash_sales"] == 0
        assert late_buys  # no loss, so nothing stops the next buy
    else:
        # FIFO closed the oldest lot at a loss while the dip's lot was still held: a wash sale
        assert pf.positions[1].realized < 0 and pf.summary()["wash_sales"] == 1
        assert late_buys


def test_a_trim_that_would_be_a_wash_sale_is_refused():
    rt, s, venue, strat = run(
        {"targets": {"AAA": 0.5}, "capital": 1e5, "interval_s": 86_400, "avoid_wash_sales": True},
        lambda iid, t: 100.0,
        2,
    )
    book = strat.books[1]
    assert len(book.lots) == 1 and book.position > 10
    soon = book.lots[0].ts + DAY
    # below cost, a partial sale leaves a lot bought a day ago behind: a wash sale, refused
    assert strat.lots_to_sell(1, 10, 9_000.0, soon) is None
    # selling it all leaves nothing behind; a gain is always allowed; so is waiting 31 days
    assert strat.lots_to_sell(1, book.position, 9_000.0, soon) == [book.lots[0].ref]
    assert strat.lots_to_sell(1, 10, 20_000.0, soon) == [book.lots[0].ref]
    assert strat.lots_to_sell(1, 10, 9_000.0, book.lots[0].ts + 31 * DAY) is not None
