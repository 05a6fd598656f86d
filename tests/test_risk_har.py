"""[risk] volatility = "har": the gate's HAR-logRV forecast is the offline one, it rescales the
window (VaR, the band, sizing follow it), its realised variance comes from the prices seen
between samples, and it falls back to the window's sigma (counted) where it has no forecast."""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from engine.backtest import InlineRuntime
from engine.har import HarForecaster
from engine.instruments import Instrument
from engine.risk import RiskLimits
from engine.risk_stats import ReturnSampler, RiskStats, rescale_to, return_variance
from engine.settings import SettingError
from engine.strategies.momentum import MomentumTaker
from engine.strategy_host import StrategyHost, StrategySpec
from models.volatility import har
from tests.test_backtest import FakeVenue
from tests.test_vol_risk import band_gate, jump_returns, walk


def clustered(t: int = 150, n: int = 2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Returns with a random-walk log volatility, and a less noisy RV of the same sigma."""
    rng = np.random.default_rng(seed)
    sig = 0.01 * np.exp(np.cumsum(rng.normal(0.0, 0.1, (t, n)), axis=0))
    r = rng.normal(0.0, 1.0, (t, n)) * sig
    rv = sig * sig * rng.chisquare(30, (t, n)) / 30
    return r, rv


# --- one implementation ------------------------------------------------------------------------
def test_the_gates_fit_is_the_offline_har_logrv_on_the_same_series() -> None:
    """Window by window (expanding, as the gate's window until it is full), the forecast of
    the next interval is ``models.volatility.har(log=True)``'s with the same refit points: the
    first fit at 2 x 22 rows, then every ``refit``."""
    _, rv = clustered()
    h = HarForecaster(2, refit=7)
    raw = []
    for k in range(1, 151):
        h.update(rv[:k])
        raw.append(h.raw.copy())
    raw = np.array(raw)
    assert np.isnan(raw[:43]).all()  # fewer than 44 rows: no forecast
    assert h.fallbacks.tolist() == [43, 43]
    for c in range(2):
        offline = har(rv[:, c], 44, log=True, refit=7)  # offline[j]: period 44 + j
        np.testing.assert_allclose(raw[43:149, c], offline[:106], rtol=1e-12)
    assert h.refits == 1 + (150 - 44) // 7
    # the level factor makes the in-sample mean forecast the mean RV of the fitted periods
    safe = rv[:, 0][: 44 + 7 * ((150 - 44) // 7)]
    assert h.level[0] == pytest.approx(np.mean(safe[22:]) / np.mean(_fitted(safe)), rel=1e-12)


def _fitted(rv: np.ndarray) -> np.ndarray:
    from engine.har import har_design, har_fit

    x, y, t = har_design(rv, True), np.log(rv), np.arange(21, len(rv) - 1)
    beta, s2 = har_fit(x, y, t)
    return np.exp(x[t] @ beta + 0.5 * s2)


def test_risk_stats_har_on_returns_alone_fits_the_squared_returns_and_rescales_the_window() -> None:
    full, _ = clustered(seed=2)
    r = full[:120]
    st = RiskStats(2, 0.99, 1.0, 20, volatility="har", har_refit=5)
    plain = RiskStats(2, 0.99, 1.0, 20)
    for k in range(1, 121):
        st.set_returns(r[:k])
    plain.set_returns(r)
    offline = har((full * full)[:, 1], 44, log=True, refit=5)  # the gate's RV here: r^2
    assert st.har.raw[1] == pytest.approx(offline[120 - 44], rel=1e-12)  # period 120
    want = st.har.level * st.har.raw
    np.testing.assert_allclose(st.var, want, rtol=1e-12)  # the window's variance is the forecast
    np.testing.assert_allclose(return_variance(r, "window"), plain.var, rtol=1e-12)
    # both VaRs see the rescaled window; the mean and correlation are the window's
    w = np.array([3e5, -1e5])
    st.set_exposure(w)
    scaled = rescale_to(r, st.har.var)
    pnl = scaled @ w
    z = NormalDist().inv_cdf(0.99)
    assert st.param_var() == pytest.approx(z * pnl.std(ddof=1) - pnl.mean(), rel=1e-9)
    assert st.hist_var() == pytest.approx(-np.quantile(pnl, 0.01), rel=1e-9)
    np.testing.assert_allclose(st.mu, plain.mu, rtol=1e-12)
    np.testing.assert_allclose(st.corr, plain.corr, atol=1e-12)


def test_var_follows_a_volatility_jump_faster_than_the_window() -> None:
    r = jump_returns()  # sigma 0.1 %, the last 40 rows 0.4 %
    rng = np.random.default_rng(7)
    sig = np.where(np.arange(len(r)) >= len(r) - 40, 0.004, 0.001)[:, None]
    rv = sig * sig * rng.chisquare(20, r.shape) / 20  # an RV from finer prices
    fine = np.ones(r.shape, dtype=np.bool_)
    window, harv = RiskStats(4, min_obs=20), RiskStats(4, min_obs=20, volatility="har")
    window.set_returns(r)
    harv.set_returns(r, rv, fine)
    assert (harv.rv_fine == len(r)).all()
    assert (harv.var > 2.5 * window.var).all()  # near the new (0.4 %)^2; the window lags
    w = np.full(4, 1e5)
    for st in (window, harv):
        st.set_exposure(w)
    assert harv.param_var() > 1.5 * window.param_var()
    assert harv.hist_var() > 1.5 * window.hist_var()
    # the same on squared returns alone, more slowly: still well above the window
    sq = RiskStats(4, min_obs=20, volatility="har")
    sq.set_returns(r)
    assert (sq.var > 1.5 * window.var).all()


def test_fine_rv_is_put_in_squared_return_units() -> None:
    """Noise in the mid inflates a fine RV's level: the fit sees it times the window's
    sum(r^2) / sum(RV) over the rows that have it, so the forecast is a return's variance."""
    r, rv = clustered(t=200, n=1, seed=4)
    fine = np.ones(r.shape, dtype=np.bool_)
    a = RiskStats(1, min_obs=20, volatility="har", har_refit=1)
    b = RiskStats(1, min_obs=20, volatility="har", har_refit=1)
    a.set_returns(r, rv, fine)
    b.set_returns(r, 9.0 * rv, fine)  # nine times the level: the same forecast
    assert a.var[0] == pytest.approx(b.var[0], rel=1e-9)
    assert a.rv_fine_used[0]
    # a few fine rows (a start on seeded history): squared returns throughout until 22
    few = fine.copy()
    few[:-21] = False
    c = RiskStats(1, min_obs=20, volatility="har", har_refit=1)
    sq = RiskStats(1, min_obs=20, volatility="har", har_refit=1)
    c.set_returns(r, 1e6 * rv, few)
    sq.set_returns(r)
    assert c.rv_fine[0] == 21 and not c.rv_fine_used[0] and c.var[0] == sq.var[0]
    few[-22] = True
    c.set_returns(r, 1e6 * rv, few)
    assert c.rv_fine_used[0] and c.var[0] != sq.var[0]


# --- fallbacks ---------------------------------------------------------------------------------
def test_short_history_and_an_instrument_that_never_moves_keep_the_window_sigma() -> None:
    r = np.random.default_rng(5).normal(0.0, 0.001, (120, 3))
    r[:, 2] = 0.0  # never moved: no positive RV, no log, no fit
    st = RiskStats(3, min_obs=20, volatility="har")
    st.set_returns(r[:30])  # ready (min_obs 20) but under HAR's 44 rows
    assert st.ready and not np.isfinite(st.har.var).any()
    np.testing.assert_allclose(st.var, r[:30].var(axis=0, ddof=1), rtol=1e-12)
    assert st.har.fallbacks.tolist() == [1, 1, 1] and st.har.refits == 0
    st.set_returns(r)
    assert st.har.refits == 1
    assert np.isfinite(st.har.var[:2]).all() and math.isnan(st.har.var[2])
    assert st.har.fallbacks.tolist() == [1, 1, 2]
    assert st.var[2] == 0.0 and st.var[0] == pytest.approx(st.har.var[0], rel=1e-12)
    # a non-finite fit (an overflowing forecast) is no forecast either
    st.har.beta[0, 0] = 1e300
    st.set_returns(r)
    assert math.isnan(st.har.var[0]) and st.har.fallbacks[0] == 2
    assert st.var[0] == pytest.approx(r[:, 0].var(ddof=1), rel=1e-12)


def test_the_fit_is_refitted_every_har_refit_intervals_only() -> None:
    r, _ = clustered(t=200, n=1)
    st = RiskStats(1, min_obs=20, volatility="har", har_refit=10)
    betas = []
    for k in range(44, 200):
        st.set_returns(r[:k])
        betas.append(st.har.beta[0].copy())
    changed = [i for i in range(1, len(betas)) if not np.array_equal(betas[i], betas[i - 1])]
    assert changed == list(range(10, len(betas), 10))
    assert st.har.refits == 1 + len(changed)


# --- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"volatility": "garch"}, "volatility"),
        ({"volatility": "HAR"}, "volatility"),
        ({"volatility": "har", "har_refit": 0}, "har_refit"),
        ({"har_refit": -5}, "har_refit"),
    ],
)
def test_bad_volatility_settings_are_refused(kw: dict, key: str) -> None:
    with pytest.raises(SettingError, match=key):
        RiskLimits(**kw)


def test_har_settings_from_the_config_file(tmp_path) -> None:
    from pathlib import Path

    from ops.config import parse_config

    base = (Path(__file__).resolve().parents[1] / "config.toml").read_text()
    text = base.replace('volatility = "window"', 'volatility = "har"', 1)
    cfg = parse_config(text.replace("har_refit = 20", "har_refit = 5", 1), tmp_path / "c.toml")
    assert (cfg.risk.volatility, cfg.risk.har_refit) == ("har", 5)
    with pytest.raises(Exception, match="har_refit"):
        parse_config(text.replace("har_refit = 20", "har_refit = 0", 1), tmp_path / "c.toml")
    with pytest.raises(ValueError):
        RiskStats(1, volatility="har", har_refit=0)
    with pytest.raises(ValueError):
        return_variance(np.zeros((5, 1)), "har")  # no fit to hold the refit clock


# --- the realised variance the gate sees ---------------------------------------------------
def test_sampler_rv_sums_the_squared_changes_seen_between_samples() -> None:
    s = ReturnSampler(3, 10)
    s.sample(np.array([100.0, 50.0, 10.0]))
    s.observe(np.array([101.0, 0.0, 10.0]))  # instrument 1: no price at this refresh
    s.observe(np.array([99.0, 0.0, 10.0]))
    assert s.sample(np.array([100.0, 51.0, 10.0]))
    r, rv, fine = s.window_rv()
    want0 = (101 / 100 - 1) ** 2 + (99 / 101 - 1) ** 2 + (100 / 99 - 1) ** 2
    assert rv[0, 0] == pytest.approx(want0, rel=1e-12) and r[0, 0] == 0.0
    assert rv[0, 1] == (51 / 50 - 1) ** 2 and not fine[0, 1]  # nothing between: r^2
    assert fine[0, 0] and fine[0, 2] and rv[0, 2] == 0.0  # seen, never moved
    assert s.sample(np.array([100.0, 51.0, 10.0]))  # no refresh between: squared return
    r, rv, fine = s.window_rv()
    assert not fine[1].any() and (rv[1] == r[1] ** 2).all()
    # seeded history: sampled only, the squared return
    seeded = ReturnSampler(1, 10)
    seeded.seed(np.array([[100.0], [101.0], [100.0]]))
    _, rv, fine = seeded.window_rv()
    assert not fine.any() and rv[:, 0] == pytest.approx([(0.01) ** 2, (100 / 101 - 1) ** 2])


def test_a_backtest_with_har_samples_rv_at_its_refreshes_and_refits() -> None:
    limits = RiskLimits.off(
        max_order_notional=1e9,
        max_position_lots=10**6,
        max_open_orders=20,
        capital=1e6,
        max_var_pct=0.0005,
        returns_interval_s=10e-6,  # ten quotes an interval
        refresh_interval_ms=0.002,  # about five refreshes in each
        min_history=20,
        volatility="har",
        har_refit=10,
    )
    ins = [Instrument(instrument_id=1, symbol="AAA")]
    spec = StrategySpec(
        MomentumTaker, {"fast": 4, "slow": 16, "size": 20, "long_only": True}, instruments=[1]
    )
    rt = InlineRuntime(ins, [spec], limits, FakeVenue(), walk(), risk_returns=True)
    rt.run()
    st = rt.risk.stats
    assert st.t > 250 and st.rv_fine[1] > 0.9 * st.t  # nearly every interval from the refreshes
    _, rv, fine = rt.risk_stage.returns.window_rv()
    r = rt.risk_stage.returns.matrix()
    f = fine[:, 1]
    assert (rv[f, 1] != r[f, 1] ** 2).mean() > 0.5  # sums of the refreshes' legs, not r^2
    assert st.har.refits > 20 and np.isfinite(st.har.var[1])
    assert st.var[1] == pytest.approx(st.har.var[1], rel=1e-12)
    assert [e for e in rt.risk_events if "VaR" in e.reason]


# --- the band and sizing follow it -------------------------------------------------------------
def test_the_sigma_scaled_band_follows_the_har_sigma() -> None:
    r = jump_returns()
    window = band_gate(price_band_sigmas=6.0, volatility="window")
    harg = band_gate(price_band_sigmas=6.0, volatility="har")
    window.set_returns(r)
    harg.set_returns(r)
    assert (harg.band_pct[:4] > 1.2 * window.band_pct[:4]).all()
    np.testing.assert_allclose(harg.band_pct[:4], 600.0 * np.sqrt(harg.stats.har.var), rtol=1e-12)


def test_sizing_follows_the_har_sigma() -> None:
    """The strategy side's tracker runs the gate's fit: after a jump in volatility, a smaller
    volatility-targeted position than the window's sigma gives."""
    ins = [Instrument(instrument_id=3, symbol="XOM", tick_size=0.01)]
    rng = np.random.default_rng(9)
    path = np.concatenate([rng.normal(0, 0.001, 200), rng.normal(0, 0.004, 30)])
    sizes, trackers = {}, {}
    for vol in ("window", "har"):
        host = StrategyHost([StrategySpec(MomentumTaker, {"fast": 2, "slow": 3})], ins)
        lim = RiskLimits(returns_interval_s=1.0, min_history=30, volatility=vol, har_refit=5)
        host.set_risk_limits(lim)
        ctx = host.slots[0].ctx
        px = 10_000.0
        for k, rr in enumerate(np.append(path, 0.0)):
            for j, f in enumerate((1.0005, 0.9995, 1.0)):  # mids inside each interval
                q = int(round(px * f))
                ctx.quotes[3] = msgspec.structs.replace(_quote(q), instrument_id=3)
                ctx.now_ns = k * 1_000_000_000 + j * 100_000_000
                ctx.observe_volatility(3)
            px *= 1 + rr
        sizes[vol], trackers[vol] = ctx.vol_target_lots(3, 100.0), ctx.volatility
    tr = trackers["har"]
    assert tr.har is not None and tr.har.refits > 10
    assert tr.sampler.window_rv()[2][:, 3].all()  # every interval's RV from the mids seen
    assert ctx.sigma(3) > 0 and 0 < sizes["har"] < 0.75 * sizes["window"]


def _quote(px: int):
    from engine.messages import Quote

    return Quote(0, px - 1, 10, px + 1, 10, 0, 0)


# --- the risk process says which RV each instrument gets -------------------------------------
def test_the_process_counts_and_logs_the_rv_source_at_each_refit(caplog) -> None:
    from procs.risk import HarLog

    class Metrics:
        def __init__(self) -> None:
            self.v: dict[str, int] = {}

        def set(self, k: str, v: int) -> None:
            self.v[k] = v

    cfg = SimpleNamespace(
        instruments=[SimpleNamespace(instrument_id=i, symbol=s) for i, s in enumerate("ABC")]
    )
    w = SimpleNamespace(metrics=Metrics())
    hl = HarLog(w, cfg)
    r, rv = clustered(t=60, n=3)
    r[:, 2] = 0.0
    fine = np.zeros(r.shape, dtype=np.bool_)
    fine[:, 0] = True  # A: the refreshes' prices; B: squared returns; C: never moved
    fine[-21:, 1] = True  # B: too few rows from finer prices for the fit to use them
    st = RiskStats(3, min_obs=20, volatility="har")
    with caplog.at_level(logging.INFO, logger="gekko.risk"):
        st.set_returns(r[:50], rv[:50], fine[:50])
        hl.note(st)
        st.set_returns(r[:51], rv[:51], fine[:51])
        hl.note(st)  # no refit: no new line
    lines = [m for m in caplog.messages if "HAR volatility refit" in m]
    assert len(lines) == 1
    assert "prices: A;" in lines[0] and "return only: B, C;" in lines[0]
    assert "window sigma: C" in lines[0]
    assert w.metrics.v == {"rv_fine_instruments": 1, "har_fallbacks": 2}
