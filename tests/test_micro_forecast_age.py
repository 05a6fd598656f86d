"""A micro model's forecasts carry their age as a bar model's do (``ts_origin`` the receive time
of the event's last message, ``ts_event`` its venue time, ``bar_ns`` 0: event time), and the
forecast strategies set to ``source = "micro"`` act on it: too old on arrival is ignored
(``max_age_ms``), and a target whose forecasts stopped (``stale_bars`` x the spacing of its last
two forecasts, venue clock) is flattened or held per ``stale`` — in ForecastTaker and in
CostAwareForecast, which keeps its plumbing."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.instruments import Instrument
from engine.messages import BookSnapshot, IntentNew, Quote, Side
from engine.strategy_host import StrategyHost
from models.lob_serving import MicroForecaster
from tests.test_lob_serving_guard import messages, signal_stream, train

MS = 1_000_000


@pytest.fixture(scope="module")
def forecasts(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Real micro forecasts (the serving code's) leaning up, for instrument 1."""
    model = train(tmp_path_factory.mktemp("age") / "m")
    out = MicroForecaster(model, {1: 1.0}, 0.0).on_messages(messages(signal_stream(400, 3)), 0)
    return [f for f in out if f.p_up > 0.6]


def _host(path: str, **params: Any) -> StrategyHost:
    ins = [Instrument(instrument_id=1, symbol="AAPL", tick_size=0.01)]
    host = StrategyHost([{"path": path, "params": params, "strategy_id": 3}], ins, on_error="raise")
    host.start(0)
    snap = BookSnapshot(1, [10_000, 9_999], [50, 50], [10_002, 10_003], [50, 50], 0, 0)
    host.on_market_data(snap, 0)
    return host


def _quote(host: StrategyHost, ts: int) -> list[Any]:
    return host.on_market_data(Quote(1, 10_000, 50, 10_002, 50, ts, ts), ts)


TAKER = "engine.strategies.forecast:ForecastTaker"
COST = "engine.strategies.cost_aware:CostAwareForecast"


def test_micro_forecasts_carry_their_age(forecasts: list) -> None:
    assert len(forecasts) >= 2
    for f in forecasts:
        assert f.bar_ns == 0 and f.ts_event > 0 and f.ts_origin == f.ts_recv == f.ts_event


def test_a_micro_forecast_too_old_on_arrival_is_ignored(forecasts: list) -> None:
    f = forecasts[0]
    for path, params in ((TAKER, {}), (COST, {"taker_fee_bps": 0.0, "margin": 0.0})):
        host = _host(path, size=4, source="micro", min_edge_bps=0.0, **params)
        s = host.slots[0].strategy
        assert host.on_forecast(f, f.ts_origin + 1500 * MS) == []  # past the 1 s default
        assert s.ignored == 1
        (o,) = host.on_forecast(f, f.ts_origin + 900 * MS)
        assert isinstance(o, IntentNew) and o.side == Side.BUY


def test_a_target_on_micro_forecasts_that_stopped_goes_stale(forecasts: list) -> None:
    a = forecasts[0]
    gap = 100 * MS
    b = msgspec.structs.replace(a, ts_event=a.ts_event + gap, ts_origin=a.ts_origin + gap)
    b.ts_recv = b.ts_origin
    for path, params in ((TAKER, {}), (COST, {"taker_fee_bps": 0.0, "margin": 0.0})):
        for stale in ("flatten", "hold"):
            host = _host(path, size=4, source="micro", min_edge_bps=0.0, stale=stale, **params)
            s = host.slots[0].strategy
            (o,) = host.on_forecast(a, a.ts_origin)
            assert o.side == Side.BUY
            host.on_forecast(b, b.ts_origin)  # same direction: the target stands
            deadline = b.ts_event + 3 * gap  # stale_bars (3) x the spacing of the last two
            assert _quote(host, deadline) == [] and s.stale_count == 0
            out = _quote(host, deadline + 1)
            assert s.stale_count == 1
            if stale == "flatten":
                (o,) = out
                assert isinstance(o, IntentNew) and (o.side, o.qty) == (Side.SELL, 4)
            else:
                assert out == [] and s.targets[1] == 4


def test_a_target_on_one_micro_forecast_goes_stale_after_its_age_limit(forecasts: list) -> None:
    """No spacing seen yet (the first forecast of an event-time model): the target lasts as
    long as the forecast may be acted on, ``max_age_ms``, and is then flattened."""
    a = forecasts[0]
    host = _host(TAKER, size=4, source="micro", min_edge_bps=0.0, max_age_ms=500)
    s = host.slots[0].strategy
    (o,) = host.on_forecast(a, a.ts_origin)
    assert o.side == Side.BUY
    assert _quote(host, a.ts_event + 500 * MS) == [] and s.stale_count == 0
    (o,) = _quote(host, a.ts_event + 500 * MS + 1)
    assert s.stale_count == 1 and (o.side, o.qty) == (Side.SELL, 4)
