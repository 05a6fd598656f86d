"""Analytics figures equal an independent computation (plain loops, scipy) on the same data."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from engine import analytics as an

PPY = 252.0

curve_st = st.lists(st.floats(-0.2, 0.2, allow_nan=False), min_size=3, max_size=80).map(
    lambda rs: 100.0 * np.cumprod(1.0 + np.asarray([0.0, *rs]))
)


def brute_drawdown(v) -> float:
    worst = 0.0
    for i in range(len(v)):
        for j in range(i, len(v)):
            worst = max(worst, (v[i] - v[j]) / v[i])
    return worst


@settings(max_examples=100, deadline=None)
@given(eq=curve_st, rf=st.floats(0.0, 0.05))
def test_ratios_match_an_independent_computation(eq, rf):
    r = [eq[i] / eq[i - 1] - 1 for i in range(1, len(eq))]
    assume(statistics.pstdev(r) > 1e-9)
    d = stats.describe(r)
    ex = d.mean - rf / PPY
    assert an.sharpe(np.asarray(r), PPY, rf) == pytest.approx(
        ex / math.sqrt(d.variance) * math.sqrt(PPY), rel=1e-6
    )
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    if downside > 0:
        assert an.sortino(np.asarray(r), PPY, rf) == pytest.approx(
            ex / downside * math.sqrt(PPY), rel=1e-6
        )
    else:
        assert math.isnan(an.sortino(np.asarray(r), PPY, rf))
    dd = brute_drawdown(list(eq))
    assert an.max_drawdown(eq)[0] == pytest.approx(dd, abs=1e-12)
    if dd > 1e-12:
        ann = (eq[-1] / eq[0]) ** (PPY / (len(eq) - 1)) - 1
        assert an.calmar(eq, PPY) == pytest.approx(ann / dd, rel=1e-6)
    for level in (0.9, 0.95, 0.99):
        q = stats.scoreatpercentile(r, 100 * (1 - level))
        var, es = an.var_es(np.asarray(r), level)
        assert var == pytest.approx(-q, abs=1e-12)
        # the tail is cut at the VaR just checked: when the quantile falls on a return, the two
        # quantiles may differ by one rounding and put that return on different sides
        tail = [x for x in r if x <= -var]
        assert es == pytest.approx(-sum(tail) / len(tail), abs=1e-12)
        assert es >= var - 1e-12  # the shortfall is never smaller than the VaR


@settings(max_examples=100, deadline=None)
@given(eq=curve_st, noise=st.lists(st.floats(-0.05, 0.05), min_size=80, max_size=80))
def test_beta_alpha_and_excess_return_match_regression(eq, noise):
    n = len(eq)
    bench = 50.0 * np.cumprod(1.0 + np.asarray([0.0, *noise[: n - 1]]))
    r = eq[1:] / eq[:-1] - 1
    rb = bench[1:] / bench[:-1] - 1
    assume(np.std(rb) > 1e-9 and len(r) >= 3)
    reg = stats.linregress(rb, r)
    beta, alpha = an.beta_alpha(r, rb, PPY)
    assert beta == pytest.approx(reg.slope, rel=1e-6, abs=1e-9)
    assert alpha == pytest.approx(reg.intercept * PPY, rel=1e-6, abs=1e-9)
    diff = [a - b for a, b in zip(r, rb, strict=True)]
    rel = an.relative(r, rb, PPY)
    assert rel["excess_return"] == pytest.approx(statistics.fmean(diff) * PPY, abs=1e-9)
    assert rel["tracking_error"] == pytest.approx(statistics.stdev(diff) * math.sqrt(PPY), rel=1e-6)
    ts = np.arange(n, dtype=np.int64) * 1_000
    s = an.summarize(ts, eq, bench, periods_per_year=PPY)
    assert s["beta"] == pytest.approx(reg.slope, rel=1e-6, abs=1e-9)
    assert s["excess_total_return"] == pytest.approx(eq[-1] / eq[0] - bench[-1] / bench[0])


def test_known_curve():
    eq = np.array([100.0, 110.0, 99.0, 120.0, 108.0])
    depth, peak, trough = an.max_drawdown(eq)
    assert (depth, peak, trough) == (pytest.approx(0.1), 1, 2)
    assert an.annualized_return(eq, 4.0) == pytest.approx(0.08)  # 4 periods = one year
    assert an.periods_per_year_of(np.array([0, 10, 20])) == pytest.approx(an.YEAR_NS / 10)


def test_summary_handles_degenerate_curves():
    ts = np.arange(5) * 1_000_000_000
    flat = an.summarize(ts, np.full(5, 100.0))
    assert flat["sharpe"] is None and flat["max_drawdown"] == 0.0 and flat["calmar"] is None
    assert an.summarize(ts[:1], np.array([100.0]))["sharpe"] is None
    broke = an.summarize(ts, np.array([100.0, 50.0, -10.0, 5.0, 20.0]))
    assert broke["sharpe"] is None and broke["var"] is None  # no returns of a negative wealth
    empty = an.summarize(np.array([], dtype=np.int64), np.array([]))
    assert empty["points"] == 0 and empty["max_drawdown"] is None
    # a benchmark unpriced at the start is compared from its first price on
    eq = np.array([100.0, 101.0, 103.0, 102.0, 104.0])
    bench = np.array([0.0, 10.0, 10.2, 10.1, 10.3])
    s = an.summarize(ts, eq, bench)
    r, rb = eq[2:] / eq[1:-1] - 1, bench[2:] / bench[1:-1] - 1
    assert s["beta"] == pytest.approx(stats.linregress(rb, r).slope)
    with pytest.raises(ValueError):
        an.var_es(np.array([0.1, 0.2]), 1.5)
