"""CostAwareForecast: it trades a forecast only when the expected move beats the round trip's
cost (half spread, taker fee and slippage through the visible book, in and out), holds for
``hold_bars`` forecasts, exits when the forecast turns, keeps to its turnover limits, and its
``signal`` controls (reversed, random) transform the forecast as documented."""

from __future__ import annotations

from typing import Any

import pytest

from engine.instruments import Instrument
from engine.messages import BookSnapshot, Forecast, IntentNew, Side, TimeInForce
from engine.strategies.cost_aware import CostAwareForecast, transform
from engine.strategies.params import ParamError
from engine.strategy_host import StrategyHost

S = 1_000_000_000
# the book below: mid 10,001 ticks, half spread 1 tick; 10 lots fill 5 @ 10,002 and 5 @ 10,003
# (average 10,002.5: 0.5 tick of slippage); fee 1 bp of 10,002.5 ~ 1.0 tick. One way 2.5 ticks,
# the round trip 5.0 ticks = a log move of about 5.0e-4 at this mid.
BIG = 6e-4  # ~6.0 ticks: pays for the round trip
SMALL = 4e-4  # ~4.0 ticks: does not


def _host(fee: float | None = 1.0, **params: Any) -> StrategyHost:
    params = {"size": 10, "steps": 1, "slippage_ticks": 2, "taker_fee_bps": 1.0} | params
    if fee is None:
        params.pop("taker_fee_bps")
    ins = [Instrument(instrument_id=1, symbol="AAPL", tick_size=0.01)]
    path = "engine.strategies.cost_aware:CostAwareForecast"
    host = StrategyHost([{"path": path, "params": params, "strategy_id": 4}], ins, on_error="raise")
    return host


def _start(host: StrategyHost) -> CostAwareForecast:
    host.start(0)
    snap = BookSnapshot(1, [10_000, 9_999, 9_998], [5, 5, 100], [10_002, 10_003, 10_004],
                        [5, 5, 100], 0, 0)  # fmt: skip
    host.on_market_data(snap, 0)
    return host.slots[0].strategy


def _f(mu: float, now: int, band: float | None = None) -> Forecast:
    q = [[mu - band], [mu], [mu + band]] if band is not None else []
    return Forecast(1, "v", now, now, [mu], [0.1, 0.5, 0.9] if q else [], q)


def _at(host: StrategyHost, mu: float, now: int, band: float | None = None) -> list[Any]:
    return host.on_forecast(_f(mu, now, band), now)


def test_no_trade_below_the_cost_and_a_trade_above_it() -> None:
    host = _host()
    s = _start(host)
    assert _at(host, SMALL, 1) == [] and _at(host, -SMALL, 2) == []
    assert s.below_cost == 2 and s.last_cost == pytest.approx(2 * (1 + 0.99995 + 0.5))  # the sell's
    (o,) = _at(host, BIG, 3)
    assert isinstance(o, IntentNew)
    assert (o.side, o.qty, o.px, o.tif) == (Side.BUY, 10, 10_004, TimeInForce.IOC)
    # a larger margin asks more of the same move
    host = _host(margin=1.5)
    s = _start(host)
    assert _at(host, BIG, 1) == [] and s.below_cost == 1


def test_the_fee_is_the_venues_unless_given_and_unknown_refuses_to_start() -> None:
    host = _host(fee=None)
    host.slots[0].ctx.taker_fees_bps = {1: 1.0}
    _start(host)
    assert len(_at(host, BIG, 1)) == 1
    host = _host(fee=None)
    host.slots[0].ctx.taker_fees_bps = {1: 3.0}  # 3 bp each way: 9 ticks round trip
    s = _start(host)
    assert _at(host, BIG, 1) == [] and s.below_cost == 1
    host = _host(fee=None)
    with pytest.raises(ValueError, match="taker_fee_bps"):
        _start(host)


def test_a_book_too_thin_within_the_limit_is_no_trade() -> None:
    host = _host(slippage_ticks=1, size=20)  # 10 lots within 10,003: not 20
    s = _start(host)
    assert _at(host, 1e-2, 1) == [] and s.thin == 1


def test_exit_after_the_holding_period_unless_the_forecast_renews_it() -> None:
    host = _host(hold_bars=3)
    s = _start(host)
    assert len(_at(host, BIG, 1)) == 1
    assert _at(host, SMALL, 2) == [] and _at(host, 1e-6, 3) == []  # held: bars 1 and 2
    (o,) = _at(host, SMALL, 4)  # bar 3: the hold is up and SMALL would not enter
    assert (o.side, o.qty) == (Side.SELL, 10) and (s.entries, s.exits) == (1, 1)
    host = _host(hold_bars=2)
    s = _start(host)
    assert len(_at(host, BIG, 1)) == 1
    assert _at(host, SMALL, 2) == [] and _at(host, BIG, 3) == []  # BIG at the end: renewed
    assert s.renewed == 1 and s.held[1] == 0
    assert _at(host, SMALL, 4) == []
    (o,) = _at(host, SMALL, 5)
    assert o.side == Side.SELL


def test_a_forecast_that_turns_exits_and_reverses_only_when_that_pays() -> None:
    host = _host(hold_bars=100)
    s = _start(host)
    assert len(_at(host, BIG, 1)) == 1
    (o,) = _at(host, -SMALL, 2)  # turned, too small to reverse on: out
    assert (o.side, o.qty) == (Side.SELL, 10)
    assert len(_at(host, BIG, 3)) == 1
    (o,) = _at(host, -BIG, 4)  # turned, and pays: from +10 to -10
    assert (o.side, o.qty) == (Side.SELL, 20) and s.targets[1] == -10


def test_turnover_limits_hold_back_entries_never_exits() -> None:
    host = _host(hold_bars=1, max_trades_per_minute=2)
    s = _start(host)
    t = 1
    for _ in range(2):  # two round trips: enter, then out when the hold is up
        assert len(_at(host, BIG, t)) == 1
        assert len(_at(host, SMALL, t + 1)) == 1
        t += 2
    assert _at(host, BIG, t) == [] and s.throttled == 1  # a third entry within the minute
    assert len(_at(host, BIG, 1 + 60 * S)) == 1  # the first one has left the minute
    host = _host(hold_bars=1, max_trades_per_hour=1, min_gap_ms=1000.0)
    s = _start(host)
    assert len(_at(host, BIG, 1)) == 1
    assert len(_at(host, -BIG, 2)) == 1  # the reversal is held back, the exit is not
    assert s.targets[1] == 0 and s.throttled == 1
    assert _at(host, BIG, 2 * S) == []  # past the gap, but one per hour
    assert len(_at(host, BIG, 1 + 3600 * S)) == 1
    host = _host(hold_bars=1, min_gap_ms=1000.0)
    s = _start(host)
    assert len(_at(host, BIG, 1)) == 1 and len(_at(host, SMALL, 2)) == 1
    assert _at(host, BIG, 3) == [] and s.throttled == 1
    assert len(_at(host, BIG, 1 + S)) == 1


def test_reversed_negates_the_forecast_and_mirrors_its_band() -> None:
    f = Forecast(1, "v", 5, 6, [1e-4, 2e-4], [0.1, 0.5, 0.9],
                 [[-1e-4, 0.0], [1e-4, 2e-4], [3e-4, 5e-4]], 7, 8)  # fmt: skip
    r = transform(f, -1.0)
    assert r.point == [-1e-4, -2e-4]
    assert r.quantiles == [[-3e-4, -5e-4], [-1e-4, -2e-4], [1e-4, -0.0]]
    assert (r.ts_origin, r.ts_recv, r.ts_event, r.bar_ns, r.levels) == (5, 6, 7, 8, f.levels)
    assert transform(f, 1.0) is f
    micro = Forecast(1, "v", 5, 6, [3e-5], ts_event=7, p_up=0.8)  # a micro model's: P(up) too
    r = transform(micro, -1.0)
    assert r.point == [-3e-5] and r.p_up == pytest.approx(0.2)
    host = _host(signal="reversed")
    _start(host)
    (o,) = _at(host, BIG, 1)  # the model says up: the control sells
    assert o.side == Side.SELL


def test_random_flips_each_forecasts_sign_from_its_seed_keeping_magnitudes() -> None:
    def signs(seed: int) -> list[float]:
        host = _host(signal="random", seed=seed)
        s = _start(host)
        out = []
        for k in range(400):
            mu = 1e-5 * (k + 1)
            g = s.signal_of(_f(mu, k, band=1e-5))
            assert abs(g.point[0]) == mu  # the same magnitude, in the same order
            assert g.quantiles[0][0] <= g.point[0] <= g.quantiles[-1][0]
            out.append(g.point[0] / mu)
        return out

    a = signs(3)
    assert a == signs(3) and a != signs(4)  # seeded: reproducible, and the seed matters
    assert 0.4 < a.count(-1.0) / len(a) < 0.6  # about half flipped
    host = _host(signal="random", seed=3)
    _start(host)
    orders = [o.side for k in range(40) for o in _at(host, BIG, 10 * S * (k + 1))]
    assert Side.BUY in orders and Side.SELL in orders  # always up, traded both ways


def test_bad_params_are_refused() -> None:
    for bad in ({"signal": "oracle"}, {"margin": -1.0}, {"max_trades_per_minute": -1}):
        with pytest.raises(ParamError):
            _host(**bad)


def test_the_host_tells_each_strategy_the_venues_taker_fee() -> None:
    from ops.config import load_config
    from procs.build import build_strategy_host
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "config.toml")
    host = build_strategy_host(cfg)
    want = {i.instrument_id: cfg.sim.taker_fee_bps for i in cfg.instrument_table()}
    assert want and all(dict(s.ctx.taker_fees_bps) == want for s in host.slots)


def test_the_commented_example_in_config_toml_parses() -> None:
    import tomllib

    from engine.strategies.params import parse_params
    from tests.conftest import ROOT

    text = (ROOT / "config.toml").read_text()
    i = text.index('# [[strategies]]\n# id = 3\n# path = "engine.strategies.cost_aware')
    block = []
    for line in text[i:].splitlines():
        if not line.startswith("# "):
            break
        block.append(line[2:])
    (spec,) = tomllib.loads("\n".join(block))["strategies"]
    p = parse_params(CostAwareForecast.Params, spec["params"])
    assert p.signal == "model" and p.taker_fee_bps < 0 and "max_trades_per_hour" in spec["params"]


def test_gekko_backtest_tells_strategies_the_venues_taker_fee(tmp_path) -> None:
    from ops.backtest_build import build_backtest
    from ops.config import parse_config
    from tests.conftest import ROOT

    text = (
        (ROOT / "config.toml").read_text().replace("taker_fee_bps = 2.0", "taker_fee_bps = 0.7", 1)
    )
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path}"', 1)
    cfg = parse_config(text, tmp_path / "config.toml")
    rt = build_backtest(cfg, 1000).runtime
    assert {dict(s.ctx.taker_fees_bps).get(1) for s in rt.host.slots} == {0.7}
