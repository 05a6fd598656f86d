"""LeaningMarketMaker: a micro forecast moves both quotes toward where it says the mid goes, the
controls move them the other way or by chance or not at all, and a stale forecast or a bar
model's forecast leans nothing."""

from __future__ import annotations

import pytest

from engine.messages import Forecast, IntentNew, IntentReplace, Side
from engine.strategies.base import load_strategy
from engine.strategies.leaning_maker import LeaningMarketMaker
from engine.strategies.params import ParamError
from engine.strategy_host import StrategyHost, StrategySpec
from tests.test_strategies import INS, ack_all, quote

MS = 1_000_000


def host(**params) -> StrategyHost:  # type: ignore[no-untyped-def]
    p = {"use_microprice": False, "half_spread_ticks": 3, "lean_ticks": 4, **params}
    return StrategyHost(
        [StrategySpec(LeaningMarketMaker, p, instruments=[1])], INS, on_error="raise"
    )


def micro(p_up: float, ts: int) -> Forecast:
    return Forecast(1, "micro:t", ts_origin=ts, ts_recv=ts, point=[0.0], ts_event=ts, p_up=p_up)


def quoted(h: StrategyHost, ts: int, p_up: float | None, market_ts: int | None = None) -> dict:
    """Quote the market at 1000 / 1002 (mid 1001), then hand it a forecast: the two prices."""
    out = h.on_market_data(quote(1, 1000, 1002, market_ts or ts), market_ts or ts)
    ack_all(h, out, ts)
    px = {i.side: i.px for i in out if isinstance(i, IntentNew)}
    if p_up is not None:
        for i in h.on_market_data(micro(p_up, ts), ts):
            if isinstance(i, IntentReplace):
                side = Side.BUY if i.client_order_id == _coids(h)[Side.BUY] else Side.SELL
                px[side] = i.new_px
    return px


def _coids(h: StrategyHost) -> dict:
    st = h.slots[0].strategy.state[1]
    return {Side.BUY: st.bid_coid, Side.SELL: st.ask_coid}


def test_it_loads_by_path_and_without_a_forecast_it_quotes_as_the_plain_maker() -> None:
    assert load_strategy("engine.strategies.leaning_maker:LeaningMarketMaker") is LeaningMarketMaker
    assert quoted(host(), 10 * MS, None) == {Side.BUY: 998, Side.SELL: 1004}


@pytest.mark.parametrize(
    ("signal", "p_up", "want"),
    [
        ("model", 0.9, {Side.BUY: 1001, Side.SELL: 1008}),  # fair 1004.2, bid clamped
        ("model", 0.1, {Side.BUY: 994, Side.SELL: 1001}),  # fair 997.8 (ask clamped above 1000)
        ("reversed", 0.9, {Side.BUY: 994, Side.SELL: 1001}),
        ("none", 0.9, {Side.BUY: 998, Side.SELL: 1004}),
    ],
)
def test_a_forecast_leans_both_quotes(signal: str, p_up: float, want: dict) -> None:
    h = host(signal=signal)
    assert quoted(h, 10 * MS, p_up) == want


def test_a_random_signal_leans_each_way_by_chance_and_reproducibly() -> None:
    def leans(seed: int) -> list[float]:
        h = host(signal="random", seed=seed)
        s = h.slots[0].strategy
        h.on_market_data(quote(1, 1000, 1002, 1), 1)
        out = []
        for k in range(200):
            h.on_market_data(micro(0.9, 2 + k), 2 + k)
            out.append(s.lean(1))
        return out

    a = leans(5)
    assert a == leans(5) and a != leans(6)
    assert 60 < sum(x > 0 for x in a) < 140 and {round(abs(x), 9) for x in a} == {3.2}


def test_a_stale_or_bar_forecast_leans_nothing() -> None:
    h = host(max_age_ms=100)
    s = h.slots[0].strategy
    h.on_market_data(quote(1, 1000, 1002, 1), 1)
    h.on_market_data(micro(0.9, 10 * MS), 10 * MS)
    assert s.lean(1) == pytest.approx(3.2)
    h.on_market_data(quote(1, 1000, 1002, 200 * MS), 200 * MS)  # 190 ms later: stale
    assert s.lean(1) == 0.0
    bar = Forecast(1, "bar", ts_origin=300 * MS, ts_recv=300 * MS, point=[0.01], ts_event=300 * MS)
    h.on_market_data(bar, 300 * MS)
    assert s.lean(1) == 0.0 and s.forecasts == 1


@pytest.mark.parametrize(
    "bad",
    [{"lean_ticks": -1.0}, {"signal": "maybe"}, {"max_age_ms": 0.0}, {"lean_ticks": float("nan")}],
)
def test_bad_params_are_refused(bad: dict) -> None:
    with pytest.raises((ParamError, ValueError)):
        host(**bad)
