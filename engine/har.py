"""HAR-logRV: the one implementation of the fit, for the risk gate and the offline evaluation.

Why here: ``gekko vol-eval`` (models/volatility.py) found HAR-logRV (Corsi 2009 on log
realised variance: OLS of the next period's log RV on the logs of the mean RV over the last 1, 5
and 22 periods) the better variance forecaster by QLIKE, and ``[risk] volatility = "har"``
puts it in the gate. Both call :func:`har_design` and :func:`har_fit` so the gate's forecast is
the scored one; numpy only (no arch/scipy on the runtime path).

The gate's variant (:class:`HarForecaster`) adds what a live window needs: refits every
``refit`` intervals (not per order), a zero RV (a mid that did not move) replaced by the
smallest positive one of the window (a log needs it), and a level factor fitted with β — the
mean RV over the fitted periods over the mean in-sample forecast — so the forecast is
mean-unbiased in sample whatever the residuals' shape (``exp(s²/2)`` alone assumes lognormal
errors: on squared returns, whose log is far from normal, it runs about 4x high). No forecast
(too little history, no positive RV, a non-finite or non-positive value): NaN, and the caller
keeps the window's σ. Contract and measurements: docs/risk.md, docs/forecasting.md.
"""

from __future__ import annotations

import numpy as np

HAR_LAGS = (1, 5, 22)  # the last period, "week" and "month" of periods


def trailing_means(rv: np.ndarray, lags: tuple[int, ...]) -> np.ndarray:
    """``out[j, t]`` = the mean of ``rv[t - lags[j] + 1 .. t]`` along axis 0 (NaN before the
    lag is filled); ``rv`` is (T,) or (T, n), the result (len(lags), T[, n])."""
    t_len = rv.shape[0]
    out = np.full((len(lags), *rv.shape), np.nan)
    cs = np.concatenate((np.zeros((1, *rv.shape[1:])), np.cumsum(rv, axis=0)))
    for j, lag in enumerate(lags):
        t = np.arange(lag - 1, t_len)
        out[j, t] = (cs[t + 1] - cs[t + 1 - lag]) / lag
    return out


def har_design(rv: np.ndarray, log: bool = False, lags: tuple[int, ...] = HAR_LAGS) -> np.ndarray:
    """HAR regressors at each origin ``t`` (data up to ``t``) of a (T,) RV series: intercept and
    the mean RV over the last ``lags`` periods (their logs for the log form); rows before the
    longest lag is filled are NaN."""
    x = np.empty((len(rv), 1 + len(lags)))
    x[:, 0] = 1.0
    x[:, 1:] = trailing_means(np.asarray(rv, dtype=np.float64), lags).T
    if log:
        x[:, 1:] = np.log(x[:, 1:])
    return x


def har_fit(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    """OLS of ``y[t + 1]`` on ``x[t]`` over origins ``t``: (β, residual variance with
    ``len(t) - len(β)`` degrees of freedom)."""
    beta, *_ = np.linalg.lstsq(x[t], y[t + 1], rcond=None)
    resid = y[t + 1] - x[t] @ beta
    return beta, float(resid @ resid) / max(1, t.size - x.shape[1])


def positive_floor(rv: np.ndarray) -> np.ndarray:
    """``rv`` with each column's values <= 0 (and non-finite ones) replaced by its smallest
    positive value; a column with none is all NaN (no log exists)."""
    rv = np.where(np.isfinite(rv), rv, 0.0)
    pos = rv > 0
    lo = np.where(pos, rv, np.inf).min(axis=0)
    return np.where(pos, rv, np.where(np.isfinite(lo), lo, np.nan))


class HarForecaster:
    """Per column of a (T, n) RV window: HAR-logRV fitted every ``refit`` calls of
    :meth:`update` (the first as soon as the window has ``min_rows``), its one-step-ahead
    variance forecast at every call (see the module doc). Counts what it did: ``refits``,
    ``fallbacks[i]`` (calls where column ``i`` had no forecast)."""

    def __init__(self, n: int, refit: int = 20, lags: tuple[int, ...] = HAR_LAGS) -> None:
        if refit < 1:
            raise ValueError("refit must be >= 1")
        self.n, self.refit, self.lags = int(n), int(refit), tuple(lags)
        self.min_rows = 2 * max(self.lags)  # as vol-eval's first forecast: two months of periods
        p = 1 + len(self.lags)
        self.beta = np.full((self.n, p), np.nan)
        self.s2 = np.full(self.n, np.nan)
        self.level = np.full(self.n, np.nan)  # mean RV / mean in-sample forecast, at the fit
        self.raw = np.full(self.n, np.nan)  # exp(x·β + s²/2): the offline HAR-logRV forecast
        self.var = np.full(self.n, np.nan)  # level · raw: the gate's forecast (NaN: none)
        self.age = 0  # calls since the last refit
        self.fitted = False
        self.refits = 0
        self.fallbacks = np.zeros(self.n, dtype=np.int64)

    def update(self, rv: np.ndarray) -> np.ndarray:
        """The forecast of the interval after the window ``rv`` (T x n, oldest first), per
        column; NaN where there is none (counted in ``fallbacks``). On the sampling clock."""
        rv = np.asarray(rv, dtype=np.float64)
        if rv.ndim != 2 or rv.shape[1] != self.n:
            raise ValueError(f"rv must be T x {self.n}, not {rv.shape}")
        self.age += 1
        if rv.shape[0] >= self.min_rows and (not self.fitted or self.age >= self.refit):
            self._refit(positive_floor(rv))
        self.raw[:] = np.nan
        self.var[:] = np.nan
        if self.fitted:
            # the last origin's regressors from the whole window's sums, as the fit's design
            x = np.log(trailing_means(positive_floor(rv), self.lags)[:, -1])  # (lags, n)
            with np.errstate(over="ignore", invalid="ignore"):
                pred = self.beta[:, 0] + np.einsum("ln,nl->n", x, self.beta[:, 1:])
                self.raw[:] = np.exp(pred + 0.5 * self.s2)
                v = self.level * self.raw
            ok = np.isfinite(v) & (v > 0)
            self.var[ok] = v[ok]
        self.fallbacks += ~np.isfinite(self.var)
        return self.var

    def _refit(self, safe: np.ndarray) -> None:
        """β, s² and the level of every column from the window (refit work may allocate)."""
        self.age = 0
        self.fitted = True
        self.refits += 1
        t = np.arange(max(self.lags) - 1, safe.shape[0] - 1)
        for i in range(self.n):
            self.beta[i], self.s2[i], self.level[i] = np.nan, np.nan, np.nan
            col = safe[:, i]
            if not np.isfinite(col).all():
                continue  # no positive RV in the window: no log, no fit
            x = har_design(col, True, self.lags)
            y = np.log(col)
            beta, s2 = har_fit(x, y, t)
            fit = np.exp(x[t] @ beta + 0.5 * s2)
            level = float(np.mean(col[t + 1]) / np.mean(fit))
            if np.isfinite(beta).all() and np.isfinite(s2) and np.isfinite(level) and level > 0:
                self.beta[i], self.s2[i], self.level[i] = beta, s2, level
