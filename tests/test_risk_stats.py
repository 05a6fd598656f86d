"""VaR and correlation: the numba kernels and caches equal an independent numpy/scipy computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from engine.risk_stats import ReturnSampler, RiskStats, quantile_inplace


def returns(t: int, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.standard_t(4, size=(t, 1)) * 0.01
    return common * rng.uniform(0.2, 1.5, n) + rng.standard_t(5, size=(t, n)) * 0.015


def hist_var(pnl: np.ndarray, conf: float = 0.99) -> float:
    return float(-np.quantile(pnl, 1 - conf))


def param_var(pnl: np.ndarray, conf: float = 0.99) -> float:
    return float(sps.norm.ppf(conf) * pnl.std(ddof=1) - pnl.mean())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.floats(0.0, 1.0),
)
def test_quantile_inplace_equals_numpy(values: list[float], q: float) -> None:
    a = np.array(values)
    expect = np.quantile(a, q)
    got = quantile_inplace(a.copy(), a.shape[0], q)
    assert got == pytest.approx(expect, rel=1e-12, abs=1e-9)


def test_var_of_the_portfolio_equals_numpy_scipy() -> None:
    r = returns(500, 40)
    w = np.random.default_rng(2).normal(0, 1e5, 40)
    s = RiskStats(40, 0.99, 1.0, min_obs=20)
    s.set_returns(r)
    s.set_exposure(w)
    pnl = r @ w
    assert s.hist_var() == pytest.approx(hist_var(pnl), rel=1e-9)
    assert s.param_var() == pytest.approx(param_var(pnl), rel=1e-9)
    # at 95 % too, and over a 10-interval horizon (square root of time; the mean scales by h)
    s95 = RiskStats(40, 0.95, 10.0)
    s95.set_returns(r)
    s95.set_exposure(w)
    assert s95.hist_var() == pytest.approx(hist_var(pnl, 0.95) * np.sqrt(10), rel=1e-9)
    expect = sps.norm.ppf(0.95) * pnl.std(ddof=1) * np.sqrt(10) - pnl.mean() * 10
    assert s95.param_var() == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize("i, d", [(0, 5e4), (7, -2e5), (39, 1.0), (12, 0.0)])
def test_var_after_an_order_equals_recomputing_from_scratch(i: int, d: float) -> None:
    r = returns(250, 40, seed=3)
    w = np.random.default_rng(4).normal(0, 1e5, 40)
    s = RiskStats(40)
    s.set_returns(r)
    s.set_exposure(w)
    after = w.copy()
    after[i] += d
    pnl = r @ after
    assert s.hist_var(i, d) == pytest.approx(hist_var(pnl), rel=1e-9)
    assert s.param_var(i, d) == pytest.approx(param_var(pnl), rel=1e-9)


def test_incremental_exposure_updates_equal_a_full_recompute() -> None:
    r = returns(300, 25, seed=5)
    s = RiskStats(25)
    s.set_returns(r)
    s.set_exposure(np.zeros(25))
    rng = np.random.default_rng(6)
    w = np.zeros(25)
    for _ in range(50):  # fills: one instrument at a time
        i, d = int(rng.integers(25)), float(rng.normal(0, 1e4))
        s.add_exposure(i, d)
        w[i] += d
    pnl = r @ w
    assert np.allclose(s.pnl, pnl)
    assert s.hist_var() == pytest.approx(hist_var(pnl), rel=1e-9)
    assert s.param_var() == pytest.approx(param_var(pnl), rel=1e-9)


def test_correlation_equals_numpy_corrcoef_and_flat_series_correlate_with_nothing() -> None:
    r = returns(120, 12, seed=7)
    r[:, 5] = 0.0  # an instrument that never moved
    s = RiskStats(12)
    s.set_returns(r)
    expect = np.corrcoef(np.delete(r, 5, axis=1), rowvar=False)
    got = np.delete(np.delete(s.corr, 5, axis=0), 5, axis=1)
    assert np.allclose(got, expect, atol=1e-12)
    assert np.all(s.corr[5] == 0.0)


def test_max_signed_corr_counts_direction_and_only_held_positions() -> None:
    r = returns(200, 5, seed=8)
    s = RiskStats(5)
    s.set_returns(r)
    c = np.corrcoef(r, rowvar=False)
    signs = np.array([0.0, 1.0, -1.0, 0.0, 1.0])
    v, j = s.max_corr(0, 1.0, signs)
    cands = {k: c[0, k] * signs[k] for k in (1, 2, 4)}
    best = max(cands, key=cands.get)
    assert (j, v) == (best, pytest.approx(cands[best]))
    v, j = s.max_corr(0, -1.0, signs)
    cands = {k: -c[0, k] * signs[k] for k in (1, 2, 4)}
    best = max(cands, key=cands.get)
    assert (j, v) == (best, pytest.approx(cands[best]))
    assert s.max_corr(3, 1.0, np.zeros(5)) == (-np.inf, -1)


def test_not_ready_before_min_obs_and_bad_shapes_refused() -> None:
    s = RiskStats(3, min_obs=10)
    assert not s.ready and s.hist_var() == 0.0 and s.param_var() == 0.0
    s.set_returns(returns(9, 3))
    assert not s.ready
    s.set_returns(returns(10, 3))
    assert s.ready
    with pytest.raises(ValueError, match="T x 3"):
        s.set_returns(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="confidence"):
        RiskStats(3, confidence=1.5)
    r = returns(30, 3)
    r[4, 1] = np.nan  # a hole in the data counts as no move, never poisons the whole matrix
    s.set_returns(r)
    assert np.isfinite(s.corr).all() and np.isfinite(s.var).all()


def test_return_sampler_makes_simple_returns_in_a_rolling_window() -> None:
    smp = ReturnSampler(2, window=3)
    assert not smp.sample(np.array([100.0, 0.0]))  # first sample: no return yet
    assert smp.sample(np.array([110.0, 50.0]))  # the second instrument had no price: 0 return
    assert smp.sample(np.array([99.0, 55.0]))
    m = smp.matrix()
    assert np.allclose(m, [[0.1, 0.0], [-0.1, 0.1]])
    smp.sample(np.array([99.0, 55.0]))
    smp.sample(np.array([198.0, 0.0]))  # a missing price keeps the last one
    m = smp.matrix()
    assert m.shape == (3, 2) and np.allclose(m, [[-0.1, 0.1], [0.0, 0.0], [1.0, 0.0]])


def test_ewma_volatility_rescales_each_window_to_its_ewma_variance() -> None:
    """volatility = "ewma": each instrument's σ is the RiskMetrics EWMA through the window
    (computed here by hand), both VaRs follow it, correlation and means do not move."""
    from engine.risk_stats import ewma_rescale

    r = returns(200, 3, seed=4)
    r[150:, 0] *= 4.0  # instrument 0's volatility jumped late in the window
    w = np.array([1e6, -5e5, 2e5])
    plain = RiskStats(3, 0.99, 1.0, 20)
    ewma = RiskStats(3, 0.99, 1.0, 20, volatility="ewma", lam=0.94)
    for s in (plain, ewma):
        s.set_exposure(w)
        s.set_returns(r)
    x = r - r.mean(axis=0)
    want = x.var(axis=0, ddof=1)
    for row in x:
        want = 0.94 * want + 0.06 * row * row
    assert np.allclose(ewma.var, want, rtol=1e-10)
    assert ewma.var[0] > 2.0 * plain.var[0]  # the window's σ lags the jump; the EWMA's does not
    assert np.allclose(ewma.corr, plain.corr) and np.allclose(ewma.mu, plain.mu)
    scaled = ewma_rescale(r, 0.94)
    assert ewma.param_var() == pytest.approx(param_var(scaled @ w), rel=1e-9)
    assert ewma.hist_var() == pytest.approx(hist_var(scaled @ w), rel=1e-9)
    assert ewma.param_var() > plain.param_var()
    flat = np.zeros((30, 2))
    assert np.array_equal(ewma_rescale(flat, 0.94), flat)
    with pytest.raises(ValueError, match="volatility"):
        RiskStats(3, volatility="garch")


def test_the_risk_gate_takes_its_volatility_from_the_limits() -> None:
    from engine.instruments import Instrument
    from engine.risk import RiskGate, RiskLimits
    from engine.settings import SettingError

    ins = [Instrument(instrument_id=1, symbol="AAA")]
    assert RiskGate(RiskLimits(), ins).stats.volatility == "window"
    gate = RiskGate(RiskLimits(volatility="ewma", volatility_lambda=0.97), ins)
    assert (gate.stats.volatility, gate.stats.lam) == ("ewma", 0.97)
    gate = RiskGate(RiskLimits(volatility="har", har_refit=5), ins)
    assert (gate.stats.volatility, gate.stats.har.refit) == ("har", 5)
    with pytest.raises(SettingError, match="volatility"):
        RiskLimits(volatility="garch")
    with pytest.raises(SettingError, match="volatility_lambda"):
        RiskLimits(volatility_lambda=1.0)
