"""Forecasts carry their age, and ForecastTaker acts on it: a forecast too old on arrival is
ignored (a safe default ``max_age_ms``), and a target whose forecast the market has left behind
(``stale_bars`` of its bars, venue clock) is flattened or held per ``stale``."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.codec import MESSAGE_DECODER
from engine.instruments import Instrument
from engine.messages import Forecast, IntentNew, Quote, Side
from engine.strategy_host import StrategyHost
from procs.infer import InferEngine
from tests._onnx_models import write_model
from tests.test_infer import Clock, make_cfg, market

MS = 1_000_000


def _host(**params: object) -> StrategyHost:
    ins = [Instrument(instrument_id=1, symbol="AAPL", tick_size=0.01)]
    host = StrategyHost(
        [{"path": "engine.strategies.forecast:ForecastTaker", "params": params, "strategy_id": 3}],
        ins,
        on_error="raise",
    )
    host.start(0)
    _quote(host, 0)
    return host


def _quote(host: StrategyHost, ts_event: int) -> list[object]:
    return host.on_market_data(Quote(1, 10_000, 50, 10_002, 50, ts_event, ts_event), ts_event)


def _up(ts_event: int, bar_ns: int = 100, origin: int | None = None) -> Forecast:
    o = ts_event if origin is None else origin
    return Forecast(1, "v", o, o, [0.01], [], [], ts_event, bar_ns)


def test_a_forecast_older_than_max_age_on_arrival_is_ignored_by_default() -> None:
    host = _host(size=4)
    taker = host.slots[0].strategy
    # computed from a tick 1.5 s before the strategy sees it: past the 1 s default
    assert host.on_forecast(_up(10, origin=10), 10 + 1500 * MS) == []
    assert taker.ignored == 1
    (o,) = host.on_forecast(_up(10, origin=10), 10 + 900 * MS)
    assert isinstance(o, IntentNew) and (o.side, o.qty) == (Side.BUY, 4)
    host = _host(size=4, max_age_ms=0.0)  # 0: no limit
    assert len(host.on_forecast(_up(10, origin=10), 10 + 10**12)) == 1


def test_a_stale_target_is_flattened_once() -> None:
    host = _host(size=4)
    taker = host.slots[0].strategy
    (o,) = host.on_forecast(_up(1_000), 1_000)
    assert (o.side, o.qty) == (Side.BUY, 4)
    assert _quote(host, 1_300) == []  # 3 bars of 100 ns: not past yet
    (o,) = _quote(host, 1_301)
    assert isinstance(o, IntentNew) and (o.side, o.qty) == (Side.SELL, 4)
    assert taker.targets[1] == 0 and taker.stale_count == 1
    assert _quote(host, 5_000) == []  # once
    # a fresh forecast trades again
    (o,) = host.on_forecast(_up(5_000), 5_000)
    assert (o.side, o.qty) == (Side.BUY, 4)


def test_hold_keeps_a_stale_target_and_counts_it() -> None:
    host = _host(size=4, stale="hold")
    taker = host.slots[0].strategy
    host.on_forecast(_up(1_000), 1_000)
    assert _quote(host, 2_000) == []
    assert taker.targets[1] == 4 and taker.stale_count == 1


def test_each_new_forecast_moves_the_deadline() -> None:
    host = _host(size=4)
    host.on_forecast(_up(1_000), 1_000)
    assert host.on_forecast(_up(1_100), 1_100) == []  # same target: no order
    assert _quote(host, 1_350) == []  # 1_100 + 300: not yet
    assert len(_quote(host, 1_401)) == 1


def test_tick_bars_use_the_spacing_of_the_last_two_forecasts() -> None:
    host = _host(size=4)
    host.on_forecast(_up(1_000, bar_ns=0), 1_000)
    assert _quote(host, 10**9) == []  # one forecast, no bar length: never stale
    host.on_forecast(_up(10**9 + 50, bar_ns=0), 10**9 + 50)
    deadline = 10**9 + 50 + 3 * (10**9 + 50 - 1_000)
    assert _quote(host, deadline) == []
    (o,) = _quote(host, deadline + 1)
    assert o.side == Side.SELL


def test_a_forecast_the_market_has_already_left_behind_is_ignored() -> None:
    host = _host(size=4)
    _quote(host, 2_000)
    assert host.on_forecast(_up(1_000), 2_000) == []  # deadline 1_300 < 2_000
    assert host.slots[0].strategy.ignored == 1


def test_stale_bars_zero_never_flattens_and_skips_quotes() -> None:
    host = _host(size=4, stale_bars=0.0)
    host.on_forecast(_up(1_000), 1_000)
    assert _quote(host, 10**12) == []
    assert "quote" not in host.slots[0].subs


@pytest.mark.parametrize(
    ("params", "key"), [({"stale": "sell"}, "stale"), ({"stale_bars": -1.0}, "stale_bars")]
)
def test_bad_stale_params_are_refused(params: dict[str, object], key: str) -> None:
    with pytest.raises(Exception, match=key):
        _host(**params)


def test_an_old_forecast_frame_decodes_with_unknown_age() -> None:
    f = Forecast(1, "v", 5, 6, [0.1], [0.5], [[0.1]], 7, 8)
    # the frame as it was: the tag, then the first 7 fields
    old = msgspec.msgpack.encode(msgspec.msgpack.decode(msgspec.msgpack.encode(f))[:8])
    g = MESSAGE_DECODER.decode(old)
    assert isinstance(g, Forecast) and (g.ts_event, g.bar_ns) == (0, 0) and g.ts_recv == 6
    assert MESSAGE_DECODER.decode(msgspec.msgpack.encode(f)) == f


def test_infer_stamps_the_bar_close_and_bar_length_on_each_forecast(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", input_size=4, bar_seconds=0.05)
    cfg = make_cfg(d)
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    seen = 0
    for m in market(cfg, 6_000):
        for f in eng.on_market_data(m):
            if isinstance(f, Forecast):
                assert f.ts_event == m.ts_event and f.bar_ns == 50 * MS  # type: ignore[attr-defined]
                seen += 1
    assert seen > 0


def test_flattening_waits_for_a_market_to_take_from() -> None:
    host = _host(size=4)
    taker = host.slots[0].strategy
    host.on_forecast(_up(1_000), 1_000)
    empty = Quote(1, 0, 0, 0, 0, 2_000, 2_000)  # both sides empty: nothing to sell into
    assert host.on_market_data(empty, 2_000) == []
    assert taker.targets[1] == 4 and taker.stale_count == 1
    (o,) = _quote(host, 2_100)
    assert (o.side, o.qty) == (Side.SELL, 4) and taker.stale_count == 1
    assert _quote(host, 2_200) == []


def test_a_taker_trades_only_the_kind_of_model_it_is_set_for() -> None:
    micro = msgspec.structs.replace(_up(10), model_version="micro:x", p_up=0.9)
    host = _host(size=4)  # source = "bar" (the default): a micro forecast is not its
    assert host.on_forecast(micro, 10) == []
    assert len(host.on_forecast(_up(10), 10)) == 1
    host = _host(size=4, source="micro")
    assert host.on_forecast(_up(10), 10) == []
    (o,) = host.on_forecast(micro, 10)
    assert (o.side, o.qty) == (Side.BUY, 4)
    with pytest.raises(Exception, match="source"):
        _host(source="both")
