"""Volatility targets, forecasters and their scoring (models/volatility.py, gekko vol-eval).

Short simulated series only (seconds): the full-data tables come from `gekko vol-eval` and are
in docs/forecasting.md."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from models.data import NS, Bars
from models.volatility import (
    PCT,
    VolSeries,
    arch_forecast,
    block_ratios,
    calibrate_range,
    compare,
    ewma,
    garman_klass,
    har,
    har_design,
    parkinson,
    qlike,
    rolling_window,
    run_models,
    series_from_daily,
    series_from_intraday,
)

pytest.importorskip("arch")


def sv_paths(days: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-price paths of a stochastic-volatility market: the daily variance follows a
    persistent log-AR(1); returns the daily variances (log units) and the paths [days, steps+1]
    (each day opens at the previous close)."""
    rng = np.random.default_rng(seed)
    lv = np.empty(days)
    lv[0] = np.log(1e-4)
    for t in range(1, days):
        lv[t] = np.log(1e-4) + 0.95 * (lv[t - 1] - np.log(1e-4)) + 0.3 * rng.standard_normal()
    var = np.exp(lv)
    inc = rng.standard_normal((days, steps)) * np.sqrt(var / steps)[:, None]
    paths = np.concatenate([np.zeros((days, 1)), np.cumsum(inc, axis=1)], axis=1)
    paths += np.concatenate([[0.0], np.cumsum(paths[:-1, -1])])[:, None]
    return var, paths


def daily_bars(paths: np.ndarray) -> Bars:
    p = 100.0 * np.exp(paths)
    n = p.shape[0]
    ts = (np.arange(n, dtype=np.int64) + 18_000) * 86_400 * NS
    return Bars("SIM", ts, p[:, 0], p.max(1), p.min(1), p[:, -1], np.ones(n))


def test_range_estimators_are_unbiased_and_far_less_noisy_than_squared_returns() -> None:
    rng = np.random.default_rng(2)  # constant variance 1e-4 a day, 400 steps a day
    inc = rng.standard_normal((3000, 400)) * np.sqrt(1e-4 / 400)
    paths = np.concatenate([np.zeros((3000, 1)), np.cumsum(inc, axis=1)], axis=1)
    o, h, lo, c = (np.exp(a) for a in (paths[:, 0], paths.max(1), paths.min(1), paths[:, -1]))
    gk, pk, sq = garman_klass(o, h, lo, c), parkinson(h, lo), np.log(c / o) ** 2
    # discrete sampling shrinks the range a little (400 steps: a few percent)
    assert 0.9 < gk.mean() / 1e-4 < 1.03
    assert 0.9 < pk.mean() / 1e-4 < 1.03
    assert 0.93 < sq.mean() / 1e-4 < 1.07
    assert gk.var() < sq.var() / 4  # the reason to use the range at all


def test_daily_series_adds_the_overnight_gap_and_leaves_out_missing_days() -> None:
    b = daily_bars(sv_paths(6, 10, seed=3)[1])
    for a in (b.open, b.high, b.low, b.close):
        a[3] *= 1.01  # a gap over night 2 -> 3
    b.close[4] = np.nan  # a missing day
    s = series_from_daily(b)
    assert s.dropped == 1 and len(s) == 4 and s.range_based
    night = PCT * np.log(b.open[3] / b.close[2])
    day = PCT * PCT * garman_klass(b.open[3], b.high[3], b.low[3], b.close[3])
    assert night > 0.9 and s.rv[2] == pytest.approx(day + night**2)  # bar 3 is period 2
    assert s.ret[3] == pytest.approx(PCT * np.log(b.close[5] / b.close[3]))  # across the hole


def test_intraday_rv_sums_squared_returns_per_period_and_drops_sparse_periods() -> None:
    rng = np.random.default_rng(4)
    ts = np.arange(72, dtype=np.int64) * 3600 * NS  # three UTC days of hourly bars
    keep = np.ones(72, dtype=bool)
    keep[50:70] = False  # day 3 keeps 4 of 24 bars
    close = 100.0 * np.exp(np.cumsum(rng.standard_normal(72) * 0.01))
    ts, close = ts[keep], close[keep]
    b = Bars("X", ts, close, close, close, close, np.ones(len(ts)))
    s = series_from_intraday(b, 86_400)
    r = PCT * np.diff(np.log(close))
    assert len(s) == 2 and s.dropped == 1 and not s.range_based
    assert s.rv[0] == pytest.approx(np.sum(r[:23] ** 2))  # day 1: returns ending at bars 1..23
    assert s.rv[1] == pytest.approx(np.sum(r[23:47] ** 2))
    assert s.ret[1] == pytest.approx(PCT * np.log(close[47] / close[23]))
    assert calibrate_range(s, 2) is s  # intraday RV is not rescaled


def test_range_calibration_matches_the_training_mean_squared_return_only() -> None:
    s = series_from_daily(daily_bars(sv_paths(300, 20, seed=5)[1]))
    c = calibrate_range(s, 100, "on")
    assert np.mean(c.rv[:100]) == pytest.approx(np.mean(s.sq[:100]))
    assert np.allclose(c.rv, s.rv * c.scale) and c.scale != 1.0
    s.ret[100:] *= 3.0  # the test periods do not move it
    assert calibrate_range(s, 100, "on").scale == pytest.approx(c.scale)
    assert calibrate_range(s, 100, "off") is s


def test_auto_calibration_only_when_the_training_periods_show_a_bias() -> None:
    rng = np.random.default_rng(11)
    var = np.exp(rng.standard_normal(600))
    ret = np.sqrt(var) * rng.standard_normal(600)
    rv = var * rng.chisquare(10, 600) / 10  # unbiased, less noisy than ret ** 2
    s = VolSeries("x", np.arange(600), ret, rv, "range", range_based=True)
    assert calibrate_range(s, 500).scale == 1.0  # left alone
    biased = replace(s, rv=0.6 * rv)  # an index's smoothed range
    c = calibrate_range(biased, 500)
    assert c.scale == pytest.approx(np.mean(s.sq[:500]) / np.mean(biased.rv[:500]))
    # the rescaled proxy has the training squared returns' mean (the 0.6 bias undone)
    assert np.mean(c.rv[:500]) == pytest.approx(np.mean(s.sq[:500]))


def test_ewma_is_the_riskmetrics_recursion() -> None:
    r = np.random.default_rng(6).standard_normal(50)
    got = ewma(r, 10)
    s = np.mean(r[:10] ** 2)
    want = []
    for t in range(50):
        if t >= 10:
            want.append(s)
        s = 0.94 * s + 0.06 * r[t] ** 2
    assert np.allclose(got, want)


def test_rolling_window_is_the_sample_variance_of_the_last_returns() -> None:
    r = np.random.default_rng(12).standard_normal(30)
    got = rolling_window(r, 10, window=8)
    assert got[0] == pytest.approx(np.var(r[2:10], ddof=1))
    assert got[-1] == pytest.approx(np.var(r[21:29], ddof=1))


def test_har_regressors_are_trailing_means() -> None:
    rv = np.arange(1.0, 41.0)
    x = har_design(rv)
    assert np.isnan(x[20, 3]) and not np.isnan(x[21, 3])
    assert x[30, 1:] == pytest.approx([31.0, np.mean(rv[26:31]), np.mean(rv[9:31])])
    assert np.allclose(har_design(rv, log=True)[30, 1:], np.log(x[30, 1:]))


@pytest.mark.parametrize("model", ["har", "har_log", "garch"])
def test_forecasts_never_see_the_period_they_forecast(model: str) -> None:
    """Changing period j's data (and all after it) leaves every forecast of periods <= j as
    it was: forecasts are made from strictly earlier data, with parameters fitted earlier."""
    var, paths = sv_paths(260, 20, seed=7)
    s = series_from_daily(daily_bars(paths))
    start, j = 160, 205

    def run(ret: np.ndarray, rv: np.ndarray) -> np.ndarray:
        if model == "garch":
            return arch_forecast(ret, start, refit=30)[0]
        return har(rv, start, log=model == "har_log", refit=30)

    base = run(s.ret, s.rv)
    ret2, rv2 = s.ret.copy(), s.rv.copy()
    ret2[j:] *= 5.0
    rv2[j:] *= 25.0
    moved = run(ret2, rv2)
    assert base.shape == (len(s) - start,)
    assert np.allclose(base[: j - start + 1], moved[: j - start + 1])
    assert not np.allclose(base[j - start + 1 :], moved[j - start + 1 :])


def test_qlike_is_zero_at_the_truth_and_minimised_by_it_under_a_noisy_proxy() -> None:
    assert qlike(np.array([2.0]), np.array([2.0]))[0] == 0.0
    assert np.isnan(qlike(np.array([0.0]), np.array([1.0]))[0])
    rng = np.random.default_rng(8)
    var = np.exp(rng.standard_normal(20_000))
    proxy = var * rng.standard_normal(20_000) ** 2  # unbiased, very noisy
    true = np.nanmean(qlike(proxy, var))
    assert true < np.nanmean(qlike(proxy, 0.7 * var))
    assert true < np.nanmean(qlike(proxy, 1.4 * var))


def test_har_on_informative_rv_beats_garch_and_the_comparison_says_so() -> None:
    """Where the realised variance measures the day's variance well (a range from 50 steps a
    day), HAR on it beats GARCH on returns with a significant DM test; the same test against
    EWMA on the noisy squared-return target is reported too."""
    _, paths = sv_paths(700, 50, seed=9)
    s = series_from_daily(daily_bars(paths))
    ev = run_models(s, 350, refit=70)
    assert set(ev.forecasts) == {
        "Window-500",
        "EWMA",
        "GARCH(1,1)",
        "EGARCH",
        "HAR-RV",
        "HAR-logRV",
    }
    assert all(f.shape == (len(s) - 350,) and np.all(f > 0) for f in ev.forecasts.values())
    means, comps = compare(ev, "rv")
    got = {(c.candidate, c.baseline, c.loss): c for c in comps}
    c = got[("HAR-logRV", "GARCH(1,1)", "qlike")]
    assert c.ratio < 1.0 and c.dm.verdict() == "better", c
    assert c.ratio == pytest.approx(means["HAR-logRV"]["qlike"] / means["GARCH(1,1)"]["qlike"])
    assert len(comps) == 2 * 4 * 2  # every candidate x baseline x loss
    assert block_ratios(ev, "HAR-logRV", "GARCH(1,1)", blocks=1) == [pytest.approx(c.ratio)]
    quarters = block_ratios(ev, "HAR-logRV", "GARCH(1,1)")
    assert len(quarters) == 4 and min(quarters) < c.ratio < max(quarters)


def test_run_models_refuses_a_start_without_enough_history() -> None:
    s = VolSeries("x", np.arange(100), np.ones(100), np.ones(100), "p")
    with pytest.raises(ValueError, match="start"):
        run_models(s, 20, with_arch=False)


def test_vol_eval_command_prints_the_tables_and_writes_json(tmp_path, capsys) -> None:
    from ops.cli import main

    b = daily_bars(sv_paths(400, 20, seed=10)[1])
    csv = tmp_path / "bars.csv"
    rows = ["ts_ns,open,high,low,close,volume"]
    rows += [
        f"{t},{float(o)!r},{float(h)!r},{float(lo)!r},{float(c)!r},1"
        for t, o, h, lo, c in zip(b.ts_ns, b.open, b.high, b.low, b.close, strict=True)
    ]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "vol.json"
    rc = main(["vol-eval", "--source", str(csv), "--train", "200", "--refit", "100",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| HAR-logRV | GARCH(1,1) |" in text and "Garman-Klass" in text
    rep = json.loads(out.read_text())
    assert rep["train"] == 200 and rep["test_periods"] == 399 - 200
    assert set(rep["models"]["GARCH(1,1)"]) == {"qlike_proxy", "mse_proxy", "qlike_r^2", "mse_r^2"}
    assert all(0.0 <= t["p_value"] <= 1.0 for t in rep["tests"])
    assert [len(rep["blocks"]["HAR-RV"][k]) for k in ("proxy", "r^2")] == [4, 4]
    gate = {"gate: volatility=window", "gate: volatility=ewma"}
    gate |= {"gate: volatility=har, RV=r^2", "gate: volatility=har, RV=proxy"}
    assert gate <= set(rep["models"])  # scored beside the models (QLIKE, MSE)
    assert {b["model"] for b in rep["var_backtest"]} == set(rep["models"])
    assert {"gate: volatility=har, RV=proxy", "HAR-logRV"} <= {t["candidate"] for t in rep["tests"]}
    assert "| Window-500 |" in text.split("VaR budget")[1]
    assert main(["vol-eval", "--source", str(tmp_path / "none.csv")]) == 2


def test_var_budget_backtest_sizes_to_the_budget_and_counts_breaches() -> None:
    from models.vol_backtest import kupiec_p, var_budget_backtest

    z = 2.3263478740408408  # 99 %
    ret = np.array([1.0, -10.0, 2.0, -1.0])  # percent
    var = np.array([1.0, 1.0, 4.0, 100.0])  # sigma 1, 1, 2, 10 %
    b = var_budget_backtest("m", ret, var, budget_pct=2.0, max_leverage=0.5)
    w = np.minimum(0.5, 2.0 / (z * np.sqrt(var)))  # 0.5 (capped), 0.5, 0.43, 0.086
    pnl = w * np.expm1(ret / 100)
    assert b.mean_exposure == pytest.approx(w.mean())
    assert b.breaches == 1  # only the -10 % day lost more than its VaR (0.5 * z * 1 %)
    eq = np.cumprod(1 + pnl)
    assert b.max_drawdown_pct == pytest.approx(100 * (1 - eq[1] / eq[0]))
    assert kupiec_p(10, 1000, 0.01) == pytest.approx(1.0)
    assert kupiec_p(30, 1000, 0.01) < 1e-4 < kupiec_p(14, 1000, 0.01)
    assert 0.0 <= kupiec_p(0, 100, 0.01) <= 1.0


def test_a_sigma_that_lags_the_volatility_breaks_the_var_more_often() -> None:
    """Volatility jumps x4 half-way: a 500-period window keeps the old sigma far too long,
    so the position stays too big and the VaR breaks at many times the nominal rate; EWMA
    adapts within weeks."""
    from models.vol_backtest import var_budget_backtest

    rng = np.random.default_rng(13)
    sd = np.r_[np.full(1000, 0.5), np.full(500, 2.0)]
    ret = sd * rng.standard_normal(1500)
    lag = var_budget_backtest("w", ret[1000:], rolling_window(ret, 1000))
    fast = var_budget_backtest("e", ret[1000:], ewma(ret, 1000))
    assert lag.breach_rate > 3 * fast.breach_rate and lag.breach_p < 0.01
    assert lag.max_drawdown_pct > fast.max_drawdown_pct


def test_the_gates_variance_is_its_window_or_its_ewma() -> None:
    """vol-eval's "gate" rows run engine.risk_stats itself: volatility = "window" is the sample
    variance of the last 500 simple returns; "ewma" the RiskMetrics recursion through them."""
    from ops.vol_cmds import gate_variance

    ret = np.random.default_rng(14).standard_normal(620)
    ret[560:] *= 3.0
    simple = np.expm1(ret / 100.0)
    win = gate_variance(ret, 600, "window")
    assert win == pytest.approx(1e4 * rolling_window(simple, 600), rel=1e-9)
    x = simple[100:600] - simple[100:600].mean()
    s = x.var(ddof=1)
    for v in x:
        s = 0.94 * s + 0.06 * v * v
    ew = gate_variance(ret, 600, "ewma")
    assert ew[0] == pytest.approx(1e4 * s, rel=1e-9) and ew[0] > 2.0 * win[0]


def test_the_gates_har_row_is_the_offline_har_logrv_on_the_gates_window() -> None:
    """vol-eval's "gate: volatility=har" rows run RiskStats itself: its first forecast is the
    offline HAR-logRV fitted on the window's 500 periods (the proxy put in squared-return units
    by the window's ratio), times the level factor; with r^2 only, on the squared returns."""
    from engine.har import har_design, har_fit
    from ops.vol_cmds import gate_variance

    rng = np.random.default_rng(15)
    sd = np.exp(np.cumsum(rng.normal(0.0, 0.05, 620)))
    ret = sd * rng.standard_normal(620)
    rv = sd * sd * rng.chisquare(20, 620) / 20
    simple = np.expm1(ret / 100.0)

    def offline(series: np.ndarray) -> float:
        x, y, t = har_design(series, True), np.log(series), np.arange(21, 499)
        beta, s2 = har_fit(x, y, t)
        level = np.mean(series[t + 1]) / np.mean(np.exp(x[t] @ beta + 0.5 * s2))
        raw = har(np.r_[series, 1.0], 500, log=True, refit=20)[0]  # period 500 of the window
        return 1e4 * level * raw

    w = rv[100:600] / 1e4
    units = w * (simple[100:600] ** 2).sum() / w.sum()
    got = gate_variance(ret, 600, "har", rv_pct2=rv)
    assert got[0] == pytest.approx(offline(units), rel=1e-9)
    sq = gate_variance(ret, 600, "har")
    assert sq[0] == pytest.approx(offline(simple[100:600] ** 2), rel=1e-9)
    assert np.isfinite(got).all() and np.isfinite(sq).all()
