"""Performance analytics of an equity curve: the figures a trader reads first.

Everything here is a pure function of numpy arrays, so it can be checked against an independent
computation and used on any curve (a backtest's, a live run's, one strategy's). Conventions,
stated once because every figure depends on them:

- returns are simple period returns of equity, ``e[t] / e[t-1] - 1``; a curve whose equity is
  not positive has no returns (a ratio of a negative wealth means nothing) and the ratio figures
  are ``None``;
- annualisation uses ``periods_per_year``: for a curve sampled every ``dt`` of simulated or wall
  time it is calendar time, ``365.25 days / dt`` (``periods_per_year_of``) — markets that close
  overnight would use 252 × their session length instead, and the caller may pass that;
- the risk-free rate is annual and is spread evenly over the periods;
- standard deviations are sample ones (ddof = 1);
- VaR and expected shortfall are *historical*, one period ahead, reported as positive losses
  (fractions of equity): VaR at level 0.95 is minus the 5 % quantile of the returns (numpy's
  linear interpolation), ES the mean loss of the returns at or below that quantile;
- maximum drawdown is the largest fall from a running peak, as a positive fraction of the peak;
  Calmar is the annualised (geometric) return over it;
- beta is cov(r, r_b) / var(r_b) against the benchmark's period returns, alpha the annualised
  intercept, excess return the annualised mean of r − r_b (and, over the whole curve, the
  total return minus the benchmark's), tracking error and information ratio from r − r_b.

When to annualise (``annualisable``): scaling a 10-second demo's mean return by the number of
seconds in a year gives a "Sharpe -16242" that means nothing. The annualised figures (annualised
return, volatility, Sharpe, Sortino, Calmar, alpha, annualised excess return, tracking error,
information ratio) are therefore reported only when the curve has at least
``MIN_ANNUALISE_POINTS`` (30) points — enough returns for a mean and a deviation to be more than
noise — spanning at least ``MIN_ANNUALISE_SPAN_NS`` (one day of its own clock: simulated time in
a backtest, wall time in a run) — so at least 1/365 of the year the figure extrapolates to was
seen; below that they are None (null in summary.json) with the reason in ``annualise_note``.
The over-the-run figures do not extrapolate and are always given: total return, maximum
drawdown, the per-period volatility, VaR/ES per sample period, beta, and the excess total return.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

YEAR_NS = int(365.25 * 86_400 * 1_000_000_000)
DAY_NS = 86_400 * 1_000_000_000
#: the least a curve needs before annualised figures are reported (module docstring)
MIN_ANNUALISE_POINTS = 30
MIN_ANNUALISE_SPAN_NS = DAY_NS


def format_duration(seconds: float) -> str:
    """A short human duration for reports: "250 ms", "10.0 s", "5.0 min", "2.0 h", "3.0 d"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def annualisable(
    ts_ns: np.ndarray,
    min_points: int = MIN_ANNUALISE_POINTS,
    min_span_ns: int = MIN_ANNUALISE_SPAN_NS,
) -> tuple[bool, str]:
    """(whether a curve sampled at ``ts_ns`` is long enough to annualise, why not if it is not).

    The rule is the module docstring's: at least ``min_points`` points spanning at least
    ``min_span_ns`` (last time minus first)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    n = int(ts.size)
    span = int(ts[-1] - ts[0]) if n >= 2 else 0
    if n >= min_points and span >= min_span_ns:
        return True, ""
    return False, (
        f"run too short to annualise: {n} points over {format_duration(span / 1e9)}, "
        f"needs at least {min_points} points over at least {format_duration(min_span_ns / 1e9)}"
    )


def periods_per_year_of(ts_ns: np.ndarray) -> float:
    """Calendar annualisation factor of a curve sampled at ``ts_ns`` (median spacing)."""
    ts = np.asarray(ts_ns, dtype=np.float64)
    if ts.size < 2:
        return float("nan")
    dt = float(np.median(np.diff(ts)))
    return YEAR_NS / dt if dt > 0 else float("nan")


def simple_returns(values: np.ndarray) -> np.ndarray:
    """Period returns of a value series; empty when fewer than two points or any value is not
    positive (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return np.empty(0)
    return v[1:] / v[:-1] - 1.0


def _nan_if_empty(x: np.ndarray, need: int = 2) -> bool:
    return x.size < need


def sharpe(returns: np.ndarray, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualised Sharpe ratio: mean excess return over its standard deviation × √periods."""
    r = np.asarray(returns, dtype=np.float64)
    if _nan_if_empty(r):
        return float("nan")
    ex = r - risk_free / periods_per_year
    sd = float(np.std(ex, ddof=1))
    return float(np.mean(ex)) / sd * math.sqrt(periods_per_year) if sd > 0 else float("nan")


def sortino(
    returns: np.ndarray, periods_per_year: float, risk_free: float = 0.0, target: float = 0.0
) -> float:
    """Annualised Sortino ratio: mean excess return over the downside deviation (root mean
    square of the shortfalls below ``target`` per period, over every period)."""
    r = np.asarray(returns, dtype=np.float64)
    if _nan_if_empty(r):
        return float("nan")
    ex = r - risk_free / periods_per_year
    down = np.minimum(r - target, 0.0)
    dd = math.sqrt(float(np.mean(down * down)))
    return float(np.mean(ex)) / dd * math.sqrt(periods_per_year) if dd > 0 else float("nan")


def max_drawdown(values: np.ndarray) -> tuple[float, int, int]:
    """(largest drawdown as a positive fraction of the peak, peak index, trough index).

    (0.0, 0, 0) for a curve that never falls or has no positive peak."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0, 0, 0
    peaks = np.maximum.accumulate(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peaks > 0, (peaks - v) / peaks, 0.0)
    trough = int(np.argmax(dd))
    depth = float(dd[trough])
    if depth <= 0:
        return 0.0, 0, 0
    peak = int(np.argmax(v[: trough + 1]))
    return depth, peak, trough


def annualized_return(values: np.ndarray, periods_per_year: float) -> float:
    """Geometric annualised return of a curve: (end / start) ** (periods_per_year / n) − 1."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size - 1
    if n < 1 or v[0] <= 0 or v[-1] <= 0:
        return float("nan")
    try:
        return math.exp(math.log(v[-1] / v[0]) * periods_per_year / n) - 1.0
    except OverflowError:
        return float("inf")


def calmar(values: np.ndarray, periods_per_year: float) -> float:
    """Annualised return over the maximum drawdown (nan when there was no drawdown)."""
    dd = max_drawdown(values)[0]
    if dd <= 0:
        return float("nan")
    return annualized_return(values, periods_per_year) / dd


def var_es(returns: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Historical one-period value at risk and expected shortfall, as positive losses."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be within (0, 1), not {level}")
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return float("nan"), float("nan")
    q = float(np.quantile(r, 1.0 - level))
    tail = r[r <= q]
    return -q, -float(np.mean(tail))


def beta_alpha(
    returns: np.ndarray, bench_returns: np.ndarray, periods_per_year: float
) -> tuple[float, float]:
    """(beta, annualised alpha) of ``returns`` against the benchmark's returns."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(bench_returns, dtype=np.float64)
    if r.size != b.size or r.size < 2:
        return float("nan"), float("nan")
    vb = float(np.var(b, ddof=1))
    if vb <= 0:
        return float("nan"), float("nan")
    beta = float(np.cov(r, b, ddof=1)[0, 1]) / vb
    alpha = (float(np.mean(r)) - beta * float(np.mean(b))) * periods_per_year
    return beta, alpha


def relative(
    returns: np.ndarray, bench_returns: np.ndarray, periods_per_year: float
) -> dict[str, float]:
    """Excess return versus the benchmark: annualised mean, tracking error, information ratio."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(bench_returns, dtype=np.float64)
    if r.size != b.size or r.size < 2:
        nan = float("nan")
        return {"excess_return": nan, "tracking_error": nan, "information_ratio": nan}
    d = r - b
    te = float(np.std(d, ddof=1)) * math.sqrt(periods_per_year)
    ex = float(np.mean(d)) * periods_per_year
    return {
        "excess_return": ex,
        "tracking_error": te,
        "information_ratio": ex / te if te > 0 else float("nan"),
    }


def _clean(x: float) -> float | None:
    """JSON-friendly: non-finite figures become None."""
    return float(x) if x is not None and math.isfinite(x) else None


def summarize(
    ts_ns: np.ndarray,
    equity: np.ndarray,
    benchmark: np.ndarray | None = None,
    *,
    risk_free: float = 0.0,
    var_level: float = 0.95,
    periods_per_year: float | None = None,
    min_points: int = MIN_ANNUALISE_POINTS,
    min_span_ns: int = MIN_ANNUALISE_SPAN_NS,
) -> dict[str, Any]:
    """Every figure above for one equity curve (and benchmark price series, same times).

    Plain types only; a figure that cannot be computed (too few points, no variation, equity not
    positive, no benchmark) is None, and so is every annualised one when the curve is too short
    to annualise (``annualisable``; ``annualised`` False, the reason in ``annualise_note``)."""
    eq = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts_ns, dtype=np.int64)
    ppy = periods_per_year if periods_per_year is not None else periods_per_year_of(ts)
    r = simple_returns(eq)
    ok, note = annualisable(ts, min_points, min_span_ns)
    out: dict[str, Any] = {
        "points": int(eq.size),
        "span_s": float(ts[-1] - ts[0]) / 1e9 if ts.size >= 2 else 0.0,
        "periods_per_year": _clean(ppy),
        "sample_period_s": _clean(YEAR_NS / ppy / 1e9) if ppy and math.isfinite(ppy) else None,
        "annualised": ok,
        "annualise_note": note,
        "start_equity": _clean(eq[0]) if eq.size else None,
        "end_equity": _clean(eq[-1]) if eq.size else None,
        "total_return": _clean(eq[-1] / eq[0] - 1.0) if eq.size and eq[0] > 0 else None,
        "annualized_return": None,
        "volatility": None,
        "period_volatility": None,
        "sharpe": None,
        "sortino": None,
        "max_drawdown": None,
        "calmar": None,
        "var_level": var_level,
        "var": None,
        "expected_shortfall": None,
        "beta": None,
        "alpha": None,
        "excess_return": None,
        "excess_total_return": None,
        "tracking_error": None,
        "information_ratio": None,
    }
    if eq.size:
        out["max_drawdown"] = _clean(max_drawdown(eq)[0])
    if r.size == 0 or ppy is None or not math.isfinite(ppy):
        return out
    # over the run (per sample period): always
    out["period_volatility"] = _clean(float(np.std(r, ddof=1))) if r.size > 1 else None
    v, es = var_es(r, var_level)
    out["var"], out["expected_shortfall"] = _clean(v), _clean(es)
    if ok:  # annualised: only from a curve long enough (module docstring)
        out["annualized_return"] = _clean(annualized_return(eq, ppy))
        out["volatility"] = (
            _clean(float(np.std(r, ddof=1)) * math.sqrt(ppy)) if r.size > 1 else None
        )
        out["sharpe"] = _clean(sharpe(r, ppy, risk_free))
        out["sortino"] = _clean(sortino(r, ppy, risk_free))
        out["calmar"] = _clean(calmar(eq, ppy))
    if benchmark is not None:
        bench = np.asarray(benchmark, dtype=np.float64)
        # the benchmark may be unpriced at the first samples: compare from its first price on
        unpriced = np.flatnonzero(~(bench > 0))
        k = int(unpriced[-1]) + 1 if unpriced.size else 0
        rb = simple_returns(bench[k:])
        rk = simple_returns(eq[k:])
        if rb.size >= 2 and rb.size == rk.size:
            beta, alpha = beta_alpha(rk, rb, ppy)
            out["beta"] = _clean(beta)
            if ok:
                out["alpha"] = _clean(alpha)
                rel = relative(rk, rb, ppy)
                out.update({key: _clean(x) for key, x in rel.items()})
            out["excess_total_return"] = _clean(eq[-1] / eq[k] - bench[-1] / bench[k])
    return out
