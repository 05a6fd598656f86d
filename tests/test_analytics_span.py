"""When the run summary annualises: only a curve of at least 30 points spanning at least a day
(engine.analytics.annualisable); shorter runs get the over-the-run figures and an explicit n/a."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from engine import analytics as an
from ops.report import format_analytics

SEC = 1_000_000_000
ANNUALISED = (
    "annualized_return",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "alpha",
    "excess_return",
    "tracking_error",
    "information_ratio",
)


def curve(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    eq = 1e6 * np.cumprod(1.0 + np.concatenate([[0.0], rng.normal(0, 1e-4, n - 1)]))
    bench = 100.0 * np.cumprod(1.0 + np.concatenate([[0.0], rng.normal(0, 1e-4, n - 1)]))
    return eq, bench


def test_a_ten_second_demo_gets_raw_figures_and_no_annualised_ones():
    eq, bench = curve(11)
    ts = np.arange(11, dtype=np.int64) * SEC  # 10 s sampled every second, like `gekko run`
    s = an.summarize(ts, eq, bench, periods_per_year=an.YEAR_NS / SEC)
    assert (
        s["annualised"] is False
        and "too short to annualise: 11 points over 10.0 s" in (s["annualise_note"])
    )
    assert all(s[k] is None for k in ANNUALISED)
    r = eq[1:] / eq[:-1] - 1
    assert s["total_return"] == pytest.approx(eq[-1] / eq[0] - 1)
    assert s["period_volatility"] == pytest.approx(np.std(r, ddof=1))
    q = stats.scoreatpercentile(r, 5)
    assert s["var"] == pytest.approx(-q) and s["expected_shortfall"] == pytest.approx(
        -np.mean(r[r <= q])
    )
    assert s["max_drawdown"] is not None and s["span_s"] == 10.0 and s["sample_period_s"] == 1.0
    rb = bench[1:] / bench[:-1] - 1
    assert s["beta"] == pytest.approx(stats.linregress(rb, r).slope)
    assert s["excess_total_return"] == pytest.approx(eq[-1] / eq[0] - bench[-1] / bench[0])
    back = json.loads(json.dumps(s))  # summary.json: null, never an absurd number
    assert all(back[k] is None for k in ANNUALISED)
    text = "\n".join(format_analytics(s, {}))
    assert "n/a (run too short to annualise" in text and "Sharpe -" not in text
    assert "return " in text and "max DD" in text and "VaR/ES 95% per 1.0 s sample" in text
    assert "beta" in text and "alpha, annualised excess return, information ratio n/a" in text


@pytest.mark.parametrize(
    ("points", "span_ns", "expected"),
    [
        (30, an.DAY_NS, True),  # the least that annualises
        (30, an.DAY_NS - 1, False),  # a nanosecond short of a day
        (29, 2 * an.DAY_NS, False),  # long enough, too few points
        (400, 30 * an.DAY_NS, True),
    ],
)
def test_the_rule_at_its_edges(points, span_ns, expected):
    eq, bench = curve(points, seed=points)
    ts = np.linspace(0, span_ns, points).astype(np.int64)
    ts[-1] = span_ns
    ppy = an.YEAR_NS / (span_ns / (points - 1))
    s = an.summarize(ts, eq, bench, periods_per_year=ppy)
    assert an.annualisable(ts) == (expected, s["annualise_note"])
    assert s["annualised"] is expected
    r = eq[1:] / eq[:-1] - 1
    if expected:  # the annualised figures are the usual ones
        assert s["sharpe"] == pytest.approx(an.sharpe(r, ppy))
        assert s["calmar"] == pytest.approx(an.calmar(eq, ppy))
        assert s["alpha"] == pytest.approx(an.beta_alpha(r, bench[1:] / bench[:-1] - 1, ppy)[1])
        assert "Sharpe " + f"{s['sharpe']:.2f}" in "\n".join(format_analytics(s, {}))
    else:
        assert all(s[k] is None for k in ANNUALISED)
        assert s["var"] is not None and s["beta"] is not None


@settings(max_examples=60, deadline=None)
@given(
    rs=st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=2, max_size=60),
    step_s=st.floats(0.001, 7_200.0),
)
@example(rs=[0.0] * 30, step_s=1.0)  # enough points, too short a span: CI found np.False_ here
def test_over_the_run_figures_never_depend_on_the_clock_and_the_rule_decides(rs, step_s):
    """Stretching time changes only whether annualised figures appear, never the raw ones."""
    eq = 100.0 * np.cumprod(1.0 + np.asarray([0.0, *rs]))
    base = np.arange(eq.size, dtype=np.int64)
    short = an.summarize(base * SEC // 1000, eq)  # a millisecond apart: never annualised
    ts = (base * step_s * SEC).astype(np.int64)
    s = an.summarize(ts, eq)
    for k in ("total_return", "max_drawdown", "var", "expected_shortfall", "period_volatility"):
        assert s[k] == short[k]
    expect = bool(eq.size >= 30 and ts[-1] - ts[0] >= an.DAY_NS)
    assert s["annualised"] is expect and short["annualised"] is False
    if not expect:
        assert all(s[k] is None for k in ANNUALISED)
