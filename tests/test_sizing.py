"""Fractional Kelly sizing: the formula, the caps, forecasts, and the strategy helper."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from engine.instruments import Instrument
from engine.messages import Forecast, Quote
from engine.sizing import (
    SizingLimits,
    forecast_moments,
    kelly_fraction,
    kelly_lots,
    order_lots,
)
from engine.strategies.base import StrategyContext

NO_CAP = SizingLimits(max_weight=1e6)


def test_kelly_fraction_formula_and_unusable_inputs():
    assert kelly_fraction(0.02, 0.04, fraction=1.0) == pytest.approx(0.5)
    assert kelly_fraction(0.02, 0.04) == pytest.approx(0.25)  # half Kelly by default
    assert kelly_fraction(0.01, 0.04, fraction=1.0, risk_free=0.03) == pytest.approx(-0.5)
    for mu, var in ((float("nan"), 0.04), (0.01, 0.0), (0.01, -1.0), (0.01, float("inf"))):
        assert kelly_fraction(mu, var) == 0.0
    with pytest.raises(ValueError):
        kelly_fraction(0.01, 0.04, fraction=-1)


def test_kelly_lots_capped_by_weight_position_and_order_limits():
    # equity 1e6, price 100.00 (10_000 ticks × 0.01): 1 lot = 100
    uncapped = kelly_lots(0.02, 0.04, 1e6, 10_000, 0.01, fraction=1.0, limits=NO_CAP)
    assert uncapped == 5_000  # 50 % of equity
    assert kelly_lots(0.02, 0.04, 1e6, 10_000, 0.01, fraction=1.0) == 500  # 5 % cap
    assert kelly_lots(-0.02, 0.04, 1e6, 10_000, 0.01, fraction=1.0) == -500
    lim = SizingLimits(max_weight=0.05, max_position_lots=300)
    assert kelly_lots(0.02, 0.04, 1e6, 10_000, 0.01, limits=lim) == 300
    assert kelly_lots(0.02, 0.04, -5.0, 10_000, 0.01) == 0  # no equity, no position
    assert kelly_lots(0.02, 0.04, 1e6, 0, 0.01) == 0
    lim = SizingLimits(max_order_notional=25_000.0)
    assert order_lots(500, 100, 10_000, 0.01, lim) == 250
    assert order_lots(-500, 100, 10_000, 0.01, lim) == -250
    assert order_lots(120, 100, 10_000, 0.01, lim) == 20
    with pytest.raises(ValueError):
        SizingLimits(max_weight=0)


@settings(max_examples=200, deadline=None)
@given(
    mu=st.floats(-1, 1),
    var=st.floats(1e-6, 1),
    equity=st.floats(1, 1e9),
    price=st.integers(1, 10**7),
    frac=st.floats(0, 1),
)
def test_kelly_never_exceeds_the_weight_cap_and_has_the_forecast_sign(mu, var, equity, price, frac):
    lots = kelly_lots(mu, var, equity, price, 0.01, fraction=frac)
    assert abs(lots) * price * 0.01 <= 0.05 * equity * (1 + 1e-12)
    assert lots == 0 or (lots > 0) == (mu > 0)


def test_forecast_moments_from_quantiles():
    z = stats.norm.ppf(0.9)
    sigma = 0.02
    f = Forecast(
        1,
        "v1",
        0,
        0,
        [0.001, 0.003],
        [0.1, 0.5, 0.9],
        [[-0.01, -z * sigma], [0.0, 0.003], [0.01, z * sigma]],
    )
    mu, var = forecast_moments(f)
    assert mu == pytest.approx(0.003)
    assert var == pytest.approx(sigma**2)
    mu, var = forecast_moments(Forecast(1, "v1", 0, 0, [0.002]))
    assert mu == 0.002 and math.isnan(var)
    assert kelly_fraction(mu, var) == 0.0
    assert all(math.isnan(x) for x in forecast_moments(Forecast(1, "v1", 0, 0, [])))


def test_strategy_context_helper_uses_the_mid_and_the_caps():
    ins = Instrument(instrument_id=3, symbol="XOM", tick_size=0.01)
    ctx = StrategyContext(1, [ins])
    assert ctx.kelly_lots(3, 0.02, 0.04, 1e6) == 0  # no quote yet
    ctx.quotes[3] = Quote(3, 9_999, 10, 10_001, 10, 0, 0)
    assert ctx.kelly_lots(3, 0.02, 0.04, 1e6) == 500  # half Kelly 25 % -> capped at 5 %
    assert ctx.kelly_lots(3, 0.0008, 0.04, 1e6) == 100  # half Kelly 1 % of 1e6 at 100.00
    ctx.sizing_limits = SizingLimits(max_weight=0.05, max_position_lots=50)
    assert ctx.kelly_lots(3, 0.02, 0.04, 1e6) == 50


def test_a_real_venues_instrument_is_capped_in_notional_not_lots():
    """Its lot is the venue's quantity step (0.00001 BTC): 2000 lots would be 0.02 BTC."""
    from engine.risk import RiskLimits

    lim = SizingLimits.from_risk(
        RiskLimits(max_position_pct=50.0, max_position_notional=30_000.0), notional_ids=[7]
    )
    # equity 1e6 at 60000.00 (6_000_000 ticks x 0.01 x 0.00001 lot): one lot is 0.6
    full = kelly_lots(0.02, 0.04, 1e6, 6_000_000, 1e-7, fraction=1.0, limits=lim, instrument_id=7)
    assert full == 50_000  # 30 000 of notional, far above 2000 lots
    other = kelly_lots(0.02, 0.04, 1e6, 6_000_000, 1e-7, fraction=1.0, limits=lim)
    assert other == lim.max_position_lots == 2_000  # the simulator's instruments: in lots


def test_limits_come_from_the_risk_config_in_both_runtimes():
    from engine.backtest import InlineRuntime
    from engine.risk import RiskLimits
    from engine.strategies.base import Strategy
    from engine.venues.sim import SimExchange
    from ops.config import load_config
    from procs.build import build_strategy_host
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "config.toml")
    host = build_strategy_host(cfg)
    lim = host.slots[0].ctx.sizing_limits
    assert lim.max_weight == pytest.approx(cfg.risk.max_position_pct / 100)
    assert lim.max_position_lots == cfg.risk.max_position_lots
    assert lim.max_order_notional == cfg.risk.max_order_notional

    ins = [Instrument(instrument_id=3, symbol="XOM", tick_size=0.01)]
    limits = RiskLimits.off(max_order_notional=1e4, max_position_lots=70, max_open_orders=5)
    rt = InlineRuntime(ins, [Strategy], limits, SimExchange(ins), [])
    ctx = rt.host.slots[0].ctx
    assert ctx.sizing_limits == SizingLimits(1.0, 70, 1e4)  # no % limit: no leverage
    ctx.quotes[3] = Quote(3, 9_999, 10, 10_001, 10, 0, 0)
    assert ctx.kelly_lots(3, 0.02, 0.04, 1e6) == 70
