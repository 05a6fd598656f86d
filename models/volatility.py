"""Volatility forecasting: realised-variance targets, the forecasters, out-of-sample scoring.

Returns at bar horizons carry almost no predictable signal; their variance does (clustering,
long memory). This module builds a per-period variance target and scores one-step-ahead
variance forecasts against it, honestly: every forecast for period ``t`` uses data up to
``t - 1`` only, parameters are re-estimated every ``refit`` periods on an expanding (or
rolling) window and held fixed in between, and the comparison is a Diebold–Mariano test on
the per-period losses, not a table of means alone.

Targets (``VolSeries.rv``), best available first, all in squared percent log returns:

- intraday realised variance: the sum of squared intraday log returns of the period
  (:func:`series_from_intraday`, e.g. BTC 15-minute bars to daily RV);
- a range estimator from daily OHLC: Garman–Klass on the day's range plus the squared
  overnight return, an (approximately) unbiased proxy of the close-to-close variance
  (:func:`series_from_daily`);
- the squared return, always there (``VolSeries.sq``), unbiased but very noisy.

QLIKE and MSE rank forecasters consistently under any conditionally unbiased proxy (Patton
2011), so the evaluation reports against both the best proxy and the squared return.

Forecasters: EWMA (RiskMetrics, λ = 0.94) and GARCH(1,1) / EGARCH(1,1,1) (from ``arch``,
imported lazily: offline code only) on returns; HAR-RV (Corsi 2009: OLS of next period's RV on
the last period's, week's and month's mean RV) and its log form on the RV target. Docs and the
measured tables: docs/forecasting.md, "Volatility".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from engine.har import HAR_LAGS, har_design, har_fit
from models.data import NS, Bars
from models.stat_tests import DMResult, diebold_mariano

PCT = 100.0  # returns in percent: arch's optimiser is happiest with variances near 1
# HAR_LAGS (1, 5, 22): day, week, month in trading days (periods of a day); the fit is
# engine/har.py's, the one the risk gate runs ([risk] volatility = "har")
_GK_C = 2.0 * math.log(2.0) - 1.0


@dataclass
class VolSeries:
    """Per-period returns and variance targets, time-ordered; arrays of equal length.

    ``ret``: log return of the period in percent; ``rv``: the period's variance proxy (see the
    module docstring; ``proxy`` names it); ``sq``: ``ret ** 2``; ``ts_ns``: period start."""

    label: str
    ts_ns: np.ndarray
    ret: np.ndarray
    rv: np.ndarray
    proxy: str
    dropped: int = 0  # periods left out (too few intraday bars, missing daily bars)
    range_based: bool = False  # ``rv`` comes from daily ranges (see calibrate_range)
    scale: float = 1.0  # factor calibrate_range applied to ``rv``
    period_s: int = 86_400  # length of a period (daily bars: a trading day)

    @property
    def sq(self) -> np.ndarray:
        return self.ret * self.ret

    def __len__(self) -> int:
        return int(self.ret.shape[0])


# --- targets ---------------------------------------------------------------------------------


def garman_klass(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Garman–Klass (1980) open-to-close variance from one bar's OHLC (log units squared)."""
    hl = np.log(h / lo)
    co = np.log(c / o)
    return 0.5 * hl * hl - _GK_C * co * co


def parkinson(h: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Parkinson (1980) variance from one bar's high and low (log units squared)."""
    hl = np.log(h / lo)
    return hl * hl / (4.0 * math.log(2.0))


def series_from_daily(bars: Bars) -> VolSeries:
    """Daily bars to returns and the range proxy: Garman–Klass of the day plus the squared
    overnight return (previous close to open), so the proxy targets the close-to-close
    variance a returns model forecasts. The first bar has no previous close and is dropped."""
    ok = np.isfinite(bars.open + bars.high + bars.low + bars.close)  # a missing day: left out
    o, h, lo, c = bars.open[ok], bars.high[ok], bars.low[ok], bars.close[ok]
    ret = PCT * np.diff(np.log(c))
    night = PCT * np.log(o[1:] / c[:-1])
    day = PCT * PCT * garman_klass(o[1:], h[1:], lo[1:], c[1:])
    rv = np.maximum(day, 0.0) + night * night
    ts = bars.ts_ns[ok][1:].copy()
    dropped = int((~ok).sum())
    return VolSeries(bars.symbol, ts, ret, rv, "Garman-Klass + overnight", dropped, True)


def calibrate_range(s: VolSeries, start: int, mode: str = "auto") -> VolSeries:
    """A range proxy rescaled so its mean over the training periods equals the mean squared
    return's there. Ranges of daily index data run well below the close-to-close variance
    (S&P 500: by a factor of about 1.5 — stale quotes smooth the index, a day is not sampled
    continuously), and a biased proxy would favour the models fitted on it. ``mode``:
    ``"on"`` always, ``"off"`` never, ``"auto"`` only when the training periods show the bias
    (a HAC t-test of mean(r^2 - proxy) = 0 rejects at 5 %): with heavy tails a few crash days
    set the ratio, and an unneeded factor fitted to them biases the proxy instead. Intraday RV
    is left as it is."""
    if not s.range_based or mode == "off":
        return s
    p = diebold_mariano(s.sq[:start], s.rv[:start], horizon=5).p_value
    if mode == "auto" and not p < 0.05:
        return replace(s, proxy=f"{s.proxy} (uncalibrated: training bias p={p:.2g})")
    k = float(np.mean(s.sq[:start]) / np.mean(s.rv[:start]))
    proxy = f"{s.proxy}, x{k:.3g} (training mean r^2 / mean proxy; bias p={p:.2g})"
    return replace(s, rv=s.rv * k, proxy=proxy, scale=k)


def series_from_intraday(
    bars: Bars, period_s: int = 86_400, min_coverage: float = 0.5
) -> VolSeries:
    """Intraday bars to per-period (UTC-aligned) returns and realised variance: the sum of
    squared log returns between consecutive bars whose later bar falls in the period (a return
    across a gap counts whole: its variance happened). A period with fewer than
    ``min_coverage`` of its expected bars is dropped (counted in ``dropped``)."""
    r = PCT * np.diff(np.log(bars.close))
    pid = bars.ts_ns[1:] // (int(period_s) * NS)
    uniq, first, counts = np.unique(pid, return_index=True, return_counts=True)
    ret = np.add.reduceat(r, first)
    rv = np.add.reduceat(r * r, first)
    expected = period_s / max(bars.bar_seconds(), 1e-9)
    keep = counts >= min_coverage * expected
    ts = uniq * int(period_s) * NS
    label = f"{bars.symbol} {_period_name(period_s)}"
    dropped = int((~keep).sum())
    return VolSeries(
        label, ts[keep], ret[keep], rv[keep], "intraday RV", dropped, period_s=int(period_s)
    )


def _period_name(period_s: int) -> str:
    return f"{period_s // 86_400}d" if period_s % 86_400 == 0 else f"{period_s // 3600}h"


# --- forecasters: each returns f with f[j] = forecast of period start + j's variance ----------


def ewma(ret: np.ndarray, start: int, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics: ``s[t+1] = lam * s[t] + (1 - lam) * ret[t] ** 2``, started at the mean
    squared return of the training periods (no parameter is estimated)."""
    s = float(np.mean(ret[:start] ** 2))
    out = np.empty(len(ret) - start)
    for t in range(len(ret)):
        if t >= start:
            out[t - start] = s
        s = lam * s + (1.0 - lam) * ret[t] * ret[t]
    return out


def rolling_window(ret: np.ndarray, start: int, window: int = 500) -> np.ndarray:
    """The risk gate's sigma today (engine/risk_stats.py): the sample variance (ddof 1) of
    the last ``window`` returns, equally weighted."""
    out = np.empty(len(ret) - start)
    for t in range(start, len(ret)):
        out[t - start] = float(np.var(ret[max(0, t - window) : t], ddof=1))
    return out


def _fit_blocks(
    n: int, start: int, refit: int, window: int, fit_block: Callable[[int, int, int], np.ndarray]
) -> np.ndarray:
    """Run ``fit_block(lo, k, stop)`` for each refit point ``k`` (estimate on ``[lo, k)``,
    forecast periods ``k..stop-1``) and concatenate the forecasts."""
    out = []
    for k in range(start, n, max(1, refit)):
        lo = max(0, k - window) if window > 0 else 0
        out.append(fit_block(lo, k, min(n, k + max(1, refit))))
    return np.concatenate(out) if out else np.empty(0)


def arch_forecast(
    ret: np.ndarray, start: int, *, vol: str = "GARCH", refit: int = 20, window: int = 0
) -> tuple[np.ndarray, int]:
    """GARCH(1,1) (``vol="GARCH"``) or EGARCH(1,1,1) (``"EGARCH"``) with a constant mean and
    normal errors, estimated with ``arch`` on each refit window; between refits the variance is
    filtered forward with the estimated parameters over the returns as they arrive. Returns
    the forecasts and how many fits did not converge: such a fit's parameters are replaced by
    the last converged ones (a short sample's EGARCH otherwise explodes), or used as they are
    when there are none yet."""
    from arch import arch_model
    from arch.utility.exceptions import ConvergenceWarning

    o = 1 if vol == "EGARCH" else 0
    failed = 0
    good = None  # the last converged parameters

    def block(lo: int, k: int, stop: int) -> np.ndarray:
        nonlocal failed, good
        # the model sees data up to stop - 1 only: forecasts of periods < stop need no more
        am = arch_model(ret[lo:stop], mean="Constant", vol=vol, p=1, o=o, q=1, dist="normal")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = am.fit(last_obs=k - lo, disp="off", show_warning=False)
        if res.convergence_flag == 0:
            good = res.params
        else:
            failed += 1
            res = am.fix(good, last_obs=k - lo) if good is not None else res
        # the forecast made at index i (data up to i) is for period i + 1
        fc = res.forecast(horizon=1, start=k - lo - 1, reindex=False)
        return np.asarray(fc.variance.values[: stop - k, 0], dtype=np.float64)

    return _fit_blocks(len(ret), start, refit, window, block), failed


def har_lags(period_s: int) -> tuple[int, ...]:
    """HAR's horizons in periods: a day, a week and a month of trading days for daily periods;
    for intraday periods the last period, a day and a week (24/7 markets)."""
    if period_s >= 86_400:
        return HAR_LAGS
    per_day = max(2, 86_400 // int(period_s))
    return (1, per_day, 7 * per_day)


def har(
    rv: np.ndarray,
    start: int,
    *,
    log: bool = False,
    refit: int = 20,
    window: int = 0,
    lags: tuple[int, ...] = HAR_LAGS,
) -> np.ndarray:
    """HAR-RV by OLS (``log=True``: on log RV, forecast ``exp(fit + s²/2)``, the lognormal
    mean). A level forecast is floored at the smallest positive training RV: a negative or zero
    variance forecast has no QLIKE."""
    train = rv[:start][rv[:start] > 0]
    safe = np.where(rv > 0, rv, float(train.min()) if train.size else 1e-12)  # for the logs
    x = har_design(safe, log, lags)
    y = np.log(safe) if log else rv
    first = max(lags) - 1  # first origin with every regressor

    def block(lo: int, k: int, stop: int) -> np.ndarray:
        # origins t in [max(lo, first), k - 1) have targets t + 1 < k: all known at k
        t = np.arange(max(lo, first), k - 1)
        if t.size < 2 * x.shape[1]:
            raise ValueError(f"HAR needs more training periods than {k} (lags {lags})")
        beta, s2 = har_fit(x, y, t)
        pred = x[k - 1 : stop - 1] @ beta  # origin j - 1 forecasts period j
        if log:
            return np.exp(pred + 0.5 * s2)
        return np.maximum(pred, float(np.min(safe[lo:k])))

    return _fit_blocks(len(rv), start, refit, window, block)


# --- scoring ---------------------------------------------------------------------------------


def qlike(proxy: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-period QLIKE, ``proxy/f - log(proxy/f) - 1``: 0 for a perfect forecast, robust to a
    noisy unbiased proxy (Patton 2011). Undefined (NaN) where the proxy is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = proxy / f
        out = q - np.log(q) - 1.0
    return np.where(proxy > 0, out, np.nan)


def mse(proxy: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-period squared error of the variance forecast."""
    return (proxy - f) ** 2


@dataclass
class VolEval:
    """Out-of-sample forecasts of every model over periods ``start..``; losses on a proxy."""

    series: VolSeries
    start: int
    refit: int
    window: int
    forecasts: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)

    def losses(self, proxy: str = "rv") -> dict[str, dict[str, np.ndarray]]:
        """``{model: {"qlike": .., "mse": ..}}`` on the periods where the proxy is positive
        (the same periods for every model)."""
        p = (self.series.rv if proxy == "rv" else self.series.sq)[self.start :]
        keep = p > 0
        return {
            m: {"qlike": qlike(p[keep], f[keep]), "mse": mse(p[keep], f[keep])}
            for m, f in self.forecasts.items()
        }


WINDOW = 500  # returns in the risk gate's window (config.toml [risk] returns_window)
MODELS = ("Window-500", "EWMA", "GARCH(1,1)", "EGARCH", "HAR-RV", "HAR-logRV")
BASELINES = ("GARCH(1,1)", "EGARCH", "EWMA", "Window-500")
CANDIDATES = ("HAR-RV", "HAR-logRV")


def run_models(
    s: VolSeries,
    start: int,
    *,
    refit: int = 20,
    window: int = 0,
    with_arch: bool = True,
    calibrate: str = "auto",
) -> VolEval:
    """Every model's one-step-ahead forecasts of periods ``start..`` (``with_arch=False``
    leaves out GARCH and EGARCH, whose estimation dominates the run time). A range proxy is
    first calibrated on the training periods (:func:`calibrate_range`, ``calibrate``)."""
    lags = har_lags(s.period_s)
    if not 2 * max(lags) <= start < len(s):
        raise ValueError(f"start {start} must be in [{2 * max(lags)}, {len(s)})")
    s = calibrate_range(s, start, calibrate)
    ev = VolEval(s, start, refit, window, {})
    ev.forecasts["Window-500"] = rolling_window(s.ret, start, WINDOW)
    ev.forecasts["EWMA"] = ewma(s.ret, start)
    if with_arch:
        for name, vol in (("GARCH(1,1)", "GARCH"), ("EGARCH", "EGARCH")):
            f, failed = arch_forecast(s.ret, start, vol=vol, refit=refit, window=window)
            ev.forecasts[name] = f
            if failed:
                ev.notes.append(f"{name}: {failed} fits did not converge (the last converged kept)")
    for name, log in (("HAR-RV", False), ("HAR-logRV", True)):
        ev.forecasts[name] = har(s.rv, start, log=log, refit=refit, window=window, lags=lags)
    return ev


@dataclass(frozen=True)
class Comparison:
    """A candidate against a baseline on one loss: ``ratio`` < 1 and ``dm.mean_diff`` < 0
    mean the candidate's loss is lower; ``dm.p_value`` says whether that is more than noise."""

    candidate: str
    baseline: str
    loss: str
    ratio: float
    dm: DMResult


def compare(
    ev: VolEval, proxy: str = "rv", candidates: tuple[str, ...] = CANDIDATES
) -> tuple[dict[str, dict[str, float]], list[Comparison]]:
    """Mean losses per model and a Diebold–Mariano test of each candidate against each
    baseline present, on QLIKE and MSE."""
    losses = ev.losses(proxy)
    means = {m: {k: float(np.nanmean(v)) for k, v in d.items()} for m, d in losses.items()}
    out = []
    for c in candidates:
        for b in BASELINES:
            if c not in losses or b not in losses:
                continue
            for loss in ("qlike", "mse"):
                dm = diebold_mariano(losses[c][loss], losses[b][loss], horizon=1)
                out.append(Comparison(c, b, loss, means[c][loss] / means[b][loss], dm))
    return means, out


def block_ratios(
    ev: VolEval, candidate: str, baseline: str, proxy: str = "rv", blocks: int = 4
) -> list[float]:
    """The candidate's mean QLIKE over the baseline's in each of ``blocks`` consecutive parts
    of the test period: one number hides whether a win holds throughout or comes from one
    turbulent stretch (models here are deterministic: blocks stand in for seeds)."""
    losses = ev.losses(proxy)
    c, b = losses[candidate]["qlike"], losses[baseline]["qlike"]
    return [
        float(np.nanmean(cc) / np.nanmean(bb))
        for cc, bb in zip(np.array_split(c, blocks), np.array_split(b, blocks), strict=True)
    ]
