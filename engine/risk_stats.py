"""Portfolio statistics for pre-trade risk: rolling returns, correlation, Value at Risk.

Why it is shaped like this: a pre-trade check must answer "what would the portfolio's VaR be
*after* this order?" in microseconds, for a book of a thousand instruments. Recomputing VaR from
the returns matrix per order is O(n·T); instead ``RiskStats`` keeps, for the current exposures
``w`` (signed money per instrument) and the window of returns ``R`` (T × n):

- the portfolio P&L series ``pnl = R @ w`` (T,), its mean and variance;
- ``cov_pw[j] = cov(pnl, R[:, j])`` and each instrument's mean and variance.

An order changing instrument ``i``'s exposure by ``d`` then gives, exactly,

- parametric: ``var(pnl + d·R_i) = var_p + 2·d·cov_pw[i] + d²·var_i`` — O(1);
- historical: the loss quantile of ``pnl + d·R_i`` — O(T) with an in-place quickselect on a
  preallocated scratch buffer (no allocation per order).

Exposure changes from fills update these caches in O(n + T) (``add_exposure``); new marks or a
new window of returns recompute them in O(n·T) (``set_exposure`` / ``set_returns``), off the
order path. The correlation matrix is recomputed only when the returns window changes.

Conventions (what an independent numpy/scipy computation must match; the tests do exactly this):

- returns are simple per-interval returns, one row per interval, oldest first;
- historical VaR = ``-numpy.quantile(pnl, 1 - confidence)`` (linear interpolation);
- parametric VaR = ``z·σ - μ`` with ``z = norm.ppf(confidence)``, ``σ`` the sample standard
  deviation (ddof=1) and ``μ`` the mean of ``pnl``;
- over a horizon of ``h`` intervals both scale by the square root of time (``μ`` by ``h``);
- correlation is Pearson's over the window (``numpy.corrcoef``); an instrument whose returns do
  not vary has correlation 0 with everything.

σ is the window's equally weighted one unless ``volatility = "ewma"``: then each instrument's
window is rescaled about its mean so its variance is the RiskMetrics EWMA forecast (λ per
return interval) — a variance that follows a volatility jump within tens of intervals instead of
hundreds — and both VaRs see it (:func:`ewma_rescale`; correlation is unchanged). With
``volatility = "har"`` the target variance is the HAR-logRV forecast of the next interval
(``engine.har.HarForecaster``) on each interval's realised variance — the sum of squared mid
changes the gate saw between two samples (its refreshes), put in squared-return units by the
window's ratio, or the squared interval return where it saw none (``ReturnSampler`` keeps both;
:func:`har_target`) — and the window's σ where HAR has no forecast. Which σ forecasts better,
and what it does to a VaR limit: ``gekko vol-eval``, docs/forecasting.md.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numba
import numpy as np

from engine.har import HarForecaster

HISTORICAL, PARAMETRIC, BOTH = 0, 1, 2
METHODS = {"historical": HISTORICAL, "parametric": PARAMETRIC, "both": BOTH}
VOLATILITY = ("window", "ewma", "har")


def ewma_rescale(r: np.ndarray, lam: float) -> np.ndarray:
    """Returns T x n rescaled about each column's mean so each column's sample variance
    (ddof 1) is its EWMA variance forecast: ``s <- lam*s + (1-lam)*(r_t - mean)^2`` through the
    window, started at the window's variance. A column that does not vary is left as it is."""
    t = r.shape[0]
    if t < 2:
        return r
    mu = r.mean(axis=0)
    x = r - mu
    x2 = x * x
    var = x2.sum(axis=0) / (t - 1)
    # the recursion unrolled: s_T = lam^T * var + (1 - lam) * sum_k lam^(T-1-k) * x_k^2
    wts = (1.0 - lam) * lam ** np.arange(t - 1, -1, -1, dtype=np.float64)
    s = lam**t * var + wts @ x2
    return _rescaled(mu, x, var, s)


def _rescaled(mu: np.ndarray, x: np.ndarray, var: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mu + x·k`` with ``k = sqrt(target / var)`` where the column varies and the target is
    a positive number, 1 elsewhere (that column keeps the window's σ)."""
    k = np.ones_like(var)
    ok = (var > 0) & np.isfinite(target) & (target > 0)
    k[ok] = np.sqrt(target[ok] / var[ok])
    return mu + x * k


def rescale_to(r: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T x n rescaled about each column's mean so its sample variance (ddof 1) is ``target``;
    a column whose target is NaN (no forecast) or that does not vary is left as it is."""
    t = r.shape[0]
    if t < 2:
        return r
    mu = r.mean(axis=0)
    x = r - mu
    return _rescaled(mu, x, (x * x).sum(axis=0) / (t - 1), np.asarray(target))


#: rows from finer prices an instrument's window needs before its fit uses them: fewer give a
#: noisy level ratio on exactly the latest rows (after a start on seeded history), which the
#: HAR regressors weigh most; until then its RV is the squared return throughout
FINE_MIN_ROWS = 22


def rv_in_return_units(r: np.ndarray, rv: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Each interval's RV on the scale of the squared interval return: the rows measured from
    finer prices (``fine``) times the window's sum of their squared returns over the sum of
    their RV (noise in the mid inflates a fine RV's level, not its ups and downs); the other
    rows are the squared return itself, and every row of a column with fewer than
    ``FINE_MIN_ROWS`` fine ones."""
    fine = fine & (fine.sum(axis=0) >= FINE_MIN_ROWS)
    rv = np.where(fine & np.isfinite(rv), rv, r * r)
    num = np.where(fine, r * r, 0.0).sum(axis=0)
    den = np.where(fine, rv, 0.0).sum(axis=0)
    k = np.ones(r.shape[1])
    ok = den > 0
    k[ok] = num[ok] / den[ok]
    return np.where(fine, rv * k, rv)


def har_target(
    r: np.ndarray, har: HarForecaster, rv: np.ndarray | None = None, fine: np.ndarray | None = None
) -> np.ndarray:
    """The HAR-logRV variance forecast of the interval after the window ``r`` (T x n simple
    returns, finite), NaN per column without one: one ``har.update`` (its refit clock)."""
    if rv is None or fine is None or rv.shape != r.shape:
        rv, fine = r * r, np.zeros(r.shape, dtype=np.bool_)
    return har.update(rv_in_return_units(r, rv, fine))


def return_variance(
    r: np.ndarray,
    volatility: str = "window",
    lam: float = 0.94,
    har: HarForecaster | None = None,
    rv: np.ndarray | None = None,
    fine: np.ndarray | None = None,
) -> np.ndarray:
    """Each column's variance (ddof 1) of a T x n returns window as ``RiskStats`` holds it
    (``RiskStats.var``): the window's, its EWMA forecast (``"ewma"``), or its HAR forecast
    (``"har"``: ``har`` holds the fit and advances one interval, ``rv``/``fine`` as
    ``RiskStats.set_returns`` takes them; the window's where no forecast); 0 for fewer than 2
    rows. The one definition a sigma outside the gate (sizing) must share."""
    r = np.where(np.isfinite(r), r, 0.0)
    if volatility == "har":
        if har is None:
            raise ValueError('volatility "har" needs its HarForecaster')
        target = har_target(r, har, rv, fine)
        if r.shape[0] < 2:
            return np.zeros(r.shape[1])
        r = rescale_to(r, target)
    if r.shape[0] < 2:
        return np.zeros(r.shape[1])
    if volatility == "ewma":
        r = ewma_rescale(r, lam)
    return r.var(axis=0, ddof=1)


@numba.njit(cache=True, nogil=True)
def _select(a: np.ndarray, n: int, k: int) -> float:
    """The k-th smallest (0-based) of ``a[:n]``, reordering ``a`` in place (quickselect);
    afterwards every element past ``k`` is >= it."""
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = a[(lo + hi) >> 1]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(cache=True, nogil=True)
def quantile_inplace(a: np.ndarray, n: int, q: float) -> float:
    """``numpy.quantile(a[:n], q)`` (linear interpolation), reordering ``a[:n]``; no allocation."""
    h = (n - 1) * q
    k = int(math.floor(h))
    if k >= n - 1:
        k = n - 1
        return _select(a, n, k)
    lo = _select(a, n, k)
    hi = a[k + 1]
    for t in range(k + 2, n):  # the next order statistic: the smallest of what lies above k
        if a[t] < hi:
            hi = a[t]
    return lo + (h - k) * (hi - lo)


@numba.njit(cache=True, nogil=True)
def hist_var_after(
    pnl: np.ndarray, r_i: np.ndarray, d: float, scratch: np.ndarray, q: float, scale: float
) -> float:
    """Historical VaR of ``pnl + d·r_i`` at loss quantile ``q``, times ``scale``."""
    n = pnl.shape[0]
    for t in range(n):
        scratch[t] = pnl[t] + d * r_i[t]
    return -quantile_inplace(scratch, n, q) * scale


@numba.njit(cache=True, nogil=True)
def max_signed_corr(corr: np.ndarray, signs: np.ndarray, i: int, s_i: float) -> tuple[float, int]:
    """The highest correlation between a position of sign ``s_i`` in ``i`` and any held position
    ``j`` (``signs[j]`` ±1, 0 if flat), counting direction: long/long at 0.8 is 0.8, long/short
    at 0.8 is -0.8 (a hedge). Returns (value, j); (-inf, -1) if nothing else is held."""
    best = -np.inf
    arg = -1
    c_row = corr[i]
    for j in range(c_row.shape[0]):
        s = signs[j]
        if j == i or s == 0.0:
            continue
        v = c_row[j] * s * s_i
        if v > best:
            best = v
            arg = j
    return best, arg


@numba.njit(cache=True, nogil=True)
def var_after(
    pnl: np.ndarray,
    rt: np.ndarray,
    i: int,
    d: float,
    scratch: np.ndarray,
    q: float,
    scale: float,
    z: float,
    horizon: float,
    var_p: float,
    cov_pw: np.ndarray,
    var: np.ndarray,
    mu_p: float,
    mu: np.ndarray,
    method: int,
) -> float:
    """VaR of the portfolio with instrument i's exposure changed by ``d``, in one call:
    ``method`` 0 historical, 1 parametric, 2 the larger of both (see the module doc)."""
    hist = 0.0
    if method != 1:
        hist = hist_var_after(pnl, rt[i], d, scratch, q, scale)
    if method == 0:
        return hist
    v = var_p + 2.0 * d * cov_pw[i] + d * d * var[i]
    if v < 0.0:
        v = 0.0
    param = z * math.sqrt(v) * scale - (mu_p + d * mu[i]) * horizon
    if method == 1:
        return param
    return hist if hist > param else param


@numba.njit(cache=True, nogil=True, fastmath=True)
def _exposure_full(
    rt: np.ndarray,
    mu: np.ndarray,
    w: np.ndarray,
    pnl: np.ndarray,
    cov_pw: np.ndarray,
) -> tuple[float, float]:
    """pnl = R·w and cov_pw[j] = cov(pnl, R_j) = (R_j·pnl − T·μ_j·mean(pnl)) / (T − 1); returns
    (var(pnl), mean(pnl)). O(n·T), no n × n product. Plain loops on one core: BLAS's thread
    pool would compete with the pinned processes (and on a loaded host is many times slower);
    fastmath lets LLVM vectorise the sums (the order of additions changes, not the result
    beyond rounding)."""
    n, t = rt.shape
    for k in range(t):
        pnl[k] = 0.0
    for j in range(n):
        wj = w[j]
        if wj == 0.0:
            continue
        r = rt[j]
        for k in range(t):
            pnl[k] += wj * r[k]
    mean = 0.0
    for k in range(t):
        mean += pnl[k]
    mean /= t
    var_p = 0.0
    for k in range(t):
        e = pnl[k] - mean
        var_p += e * e
    var_p /= max(t - 1, 1)
    for j in range(n):
        r = rt[j]
        acc = 0.0
        for k in range(t):
            acc += r[k] * pnl[k]
        cov_pw[j] = (acc - t * mu[j] * mean) / max(t - 1, 1)
    return var_p, mean


@numba.njit(cache=True, nogil=True)
def _add_exposure(
    rt: np.ndarray,
    cov_col: np.ndarray,
    pnl: np.ndarray,
    cov_pw: np.ndarray,
    i: int,
    d: float,
) -> None:
    """pnl += d·R_i and cov(pnl, R_j) += d·cov(R_i, R_j) for every j."""
    r = rt[i]
    for t in range(pnl.shape[0]):
        pnl[t] += d * r[t]
    for j in range(cov_pw.shape[0]):
        cov_pw[j] += d * cov_col[j]


def correlation_from_cov(cov: np.ndarray) -> np.ndarray:
    """Pearson correlation from a covariance matrix; 0 where a variable does not vary."""
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ok = sd > 0
    inv = np.zeros_like(sd)
    inv[ok] = 1.0 / sd[ok]
    c = cov * inv[:, None] * inv[None, :]
    np.clip(c, -1.0, 1.0, out=c)
    np.fill_diagonal(c, np.where(ok, 1.0, 0.0))
    return c


class RiskStats:
    """Returns window, correlation and incremental VaR for ``n`` instruments (see module doc).

    ``confidence`` e.g. 0.99; ``horizon`` in return intervals (1 with daily returns and a 1-day
    VaR). Until ``set_returns`` has been given at least ``min_obs`` rows, ``ready`` is False and
    VaR/correlation are not available (the gate then skips those two checks, and says so).
    """

    def __init__(
        self,
        n: int,
        confidence: float = 0.99,
        horizon: float = 1.0,
        min_obs: int = 20,
        volatility: str = "window",
        lam: float = 0.94,
        har_refit: int = 20,
    ) -> None:
        if not 0.5 < confidence < 1.0:
            raise ValueError("confidence must be within (0.5, 1)")
        if volatility not in VOLATILITY or not 0.0 < lam < 1.0:
            raise ValueError(f"volatility must be one of {VOLATILITY}, lam within (0, 1)")
        self.volatility = volatility
        self.lam = float(lam)
        #: volatility = "har": the fit, refitted every ``har_refit`` windows (its counters say
        #: how often it had no forecast); ``rv_fine[i]``: rows of instrument i's window whose
        #: RV came from finer prices (the rest: the squared interval return; the fit uses them
        #: from ``FINE_MIN_ROWS`` on: ``rv_fine_used``)
        self.har = HarForecaster(n, har_refit) if volatility == "har" else None
        self.rv_fine = np.zeros(n, dtype=np.int64)
        self.n = n
        self.confidence = confidence
        self.q = 1.0 - confidence
        self.horizon = float(horizon)
        self.scale = math.sqrt(self.horizon)
        self.z = NormalDist().inv_cdf(confidence)
        self.min_obs = max(3, int(min_obs))
        self.w = np.zeros(n)
        self._empty(0)

    def _empty(self, t: int) -> None:
        n = self.n
        self.t = t
        self.rt = np.zeros((n, t))  # returns by instrument: row i is R[:, i], contiguous
        self.mu = np.zeros(n)
        self.var = np.zeros(n)
        self.cov_cols: np.ndarray = np.zeros((n, n)) if t else np.zeros((n, 0))
        self.corr = np.zeros((n, n)) if t else np.zeros((n, 0))
        self.pnl = np.zeros(t)
        self.scratch = np.zeros(max(t, 1))
        self.cov_pw = np.zeros(n)
        self.var_p = 0.0  # var(pnl)
        self.mu_p = 0.0  # mean(pnl)

    @property
    def ready(self) -> bool:
        return self.t >= self.min_obs

    @property
    def rv_fine_used(self) -> np.ndarray:
        """Per instrument: True where the HAR fit takes its RV from finer prices."""
        return self.rv_fine >= FINE_MIN_ROWS

    # --- recomputation (off the order path) ------------------------------------------------
    def set_returns(
        self, r: np.ndarray, rv: np.ndarray | None = None, fine: np.ndarray | None = None
    ) -> None:
        """A new window of returns, T × n, oldest row first (non-finite values count as 0);
        rescaled to the EWMA variance first when ``volatility`` is ``"ewma"``, to the HAR
        forecast when ``"har"`` (``rv``: each row's realised variance, ``fine``: where it came
        from finer prices, as ``ReturnSampler.window`` gives them; without them the squared
        returns). One call is one interval of the HAR refit clock."""
        r = np.asarray(r, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != self.n:
            raise ValueError(f"returns must be T x {self.n}, not {r.shape}")
        r = np.where(np.isfinite(r), r, 0.0)
        if self.volatility == "ewma":
            r = ewma_rescale(r, self.lam)
        elif self.har is not None:
            has = fine is not None and np.shape(fine) == r.shape
            self.rv_fine = np.sum(fine, axis=0, dtype=np.int64) if has else np.zeros(self.n, int)
            r = rescale_to(r, har_target(r, self.har, rv, fine))
        t = r.shape[0]
        self._empty(t)
        if t == 0:
            return
        self.rt = np.ascontiguousarray(r.T)
        self.mu = r.mean(axis=0)
        x = r - self.mu
        cov = (x.T @ x) / max(t - 1, 1)
        self.cov_cols = np.ascontiguousarray(cov)  # symmetric: row j is column j
        self.var = np.diag(cov).copy()
        self.corr = correlation_from_cov(cov)
        self.set_exposure(self.w)

    def set_exposure(self, w: np.ndarray) -> None:
        """Exposures (signed money per instrument) changed wholesale, e.g. new marks."""
        if self.w.shape == np.shape(w):
            self.w[:] = w
        else:
            self.w = np.array(w, dtype=np.float64)
        if self.t == 0:
            return
        self.var_p, self.mu_p = _exposure_full(self.rt, self.mu, self.w, self.pnl, self.cov_pw)

    def add_exposure(self, i: int, d: float) -> None:
        """Instrument ``i``'s exposure changed by ``d`` (a fill): O(n + T)."""
        self.w[i] += d
        if self.t:
            self.var_p += 2.0 * d * float(self.cov_pw[i]) + d * d * float(self.var[i])
            self.mu_p += d * float(self.mu[i])
            _add_exposure(self.rt, self.cov_cols[i], self.pnl, self.cov_pw, i, d)

    # --- queries -------------------------------------------------------------------------------
    def var_after(self, i: int, d: float, method: int = BOTH) -> float:
        """VaR with instrument ``i``'s exposure changed by ``d``: ``HISTORICAL``, ``PARAMETRIC``
        or ``BOTH`` (the larger). One numba call: the pre-trade path."""
        if self.t < 2:
            return 0.0
        return var_after(
            self.pnl,
            self.rt,
            i,
            d,
            self.scratch,
            self.q,
            self.scale,
            self.z,
            self.horizon,
            self.var_p,
            self.cov_pw,
            self.var,
            self.mu_p,
            self.mu,
            method,
        )

    def hist_var(self, i: int = 0, d: float = 0.0) -> float:
        """Historical VaR of the portfolio with instrument ``i``'s exposure changed by ``d``."""
        return self.var_after(i, d, HISTORICAL)

    def param_var(self, i: int = 0, d: float = 0.0) -> float:
        """Parametric (normal) VaR of the portfolio with instrument ``i``'s exposure changed by
        ``d``: O(1) from the cached moments."""
        return self.var_after(i, d, PARAMETRIC)

    def max_corr(self, i: int, side: float, signs: np.ndarray) -> tuple[float, int]:
        """See ``max_signed_corr``; (-inf, -1) before any returns."""
        if self.t == 0:
            return -np.inf, -1
        v, j = max_signed_corr(self.corr, signs, i, side)
        return float(v), int(j)


@numba.njit(cache=True, nogil=True)
def _observe(p: np.ndarray, prev: np.ndarray, acc: np.ndarray, seen: np.ndarray) -> None:
    """Each positive price: its squared simple change from the instrument's previous price
    into ``acc`` (when there was one), counted in ``seen``; it becomes the previous price."""
    for i in range(p.shape[0]):
        x = p[i]
        if not x > 0.0:  # also NaN
            continue
        if prev[i] > 0.0:
            d = x / prev[i] - 1.0
            acc[i] += d * d
            seen[i] += 1
        prev[i] = x


class ReturnSampler:
    """Turns mid prices sampled every interval into rows of simple returns, kept in a rolling
    window (a ring of ``window`` rows). An instrument without a price in either sample gets a
    0 return for that interval (no information is not a move).

    Beside each return row, the interval's realised variance: the sum of squared simple mid
    changes along the prices ``observe`` was shown between the two samples (the risk process's
    refreshes; ``volatility = "har"``), ending at the sample's price, and whether any were
    shown (``window``'s ``fine``); with none it is the squared return itself."""

    def __init__(self, n: int, window: int) -> None:
        self.window = max(2, int(window))
        self.buf = np.zeros((self.window, n))
        self.rv = np.zeros((self.window, n))
        self.fine = np.zeros((self.window, n), dtype=np.bool_)
        self.count = 0
        self.head = 0
        self.last = np.zeros(n)
        self.prev = np.zeros(n)  # the last price seen, sampled or observed
        self.acc = np.zeros(n)  # squared changes observed since the last sample
        self.seen = np.zeros(n, dtype=np.int64)

    def observe(self, prices: np.ndarray) -> None:
        """Prices between two samples (every instrument's, by id; 0 = none): allocation-free."""
        _observe(np.asarray(prices, dtype=np.float64), self.prev, self.acc, self.seen)

    def observe_one(self, i: int, price: float) -> None:
        """One instrument's price between two samples (a strategy's mid change)."""
        if price > 0:
            if self.prev[i] > 0:
                d = price / self.prev[i] - 1.0
                self.acc[i] += d * d
                self.seen[i] += 1
            self.prev[i] = price

    def sample(self, prices: np.ndarray) -> bool:
        """Add one sample; True if a return row was appended (not on the very first sample)."""
        p = np.asarray(prices, dtype=np.float64)
        first = not self.last.any()
        ok = (self.last > 0) & (p > 0)
        row = np.zeros_like(p)
        row[ok] = p[ok] / self.last[ok] - 1.0
        # the interval's RV: what was observed, plus the last leg to the sample's price
        leg = np.zeros_like(p)
        has = ok & (self.prev > 0)
        leg[has] = p[has] / self.prev[has] - 1.0
        rv = np.where(ok, self.acc + leg * leg, 0.0)
        fine = ok & (self.seen > 0)
        self.last = np.where(p > 0, p, self.last)
        self.prev = np.where(p > 0, p, self.prev)
        self.acc[:] = 0.0
        self.seen[:] = 0
        if first:
            return False
        self.buf[self.head] = row
        self.rv[self.head] = np.where(fine, rv, row * row)
        self.fine[self.head] = fine
        self.head = (self.head + 1) % self.window
        self.count = min(self.count + 1, self.window)
        return True

    def seed(self, prices: np.ndarray) -> np.ndarray:
        """Fill the window from recorded history: ``prices`` is T × n, one row per past sample
        time (oldest first, 0 where an instrument had no price yet), as the live loop would
        have sampled them. Each row goes through ``sample`` itself, so a seeded window is the
        window the live sampler would hold had it run through that history, and the next live
        sample's return is measured from the last seeded price. Returns how many returns each
        instrument got (rows where it had a price in both samples). Start-up only, not the
        order path."""
        p = np.asarray(prices, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.last.shape[0]:
            raise ValueError(f"prices must be T x {self.last.shape[0]}, not {p.shape}")
        p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
        valid = []
        for row in p:
            before = self.last > 0
            if self.sample(row):
                valid.append(before & (row > 0))
        kept = valid[-self.window :]  # older rows left the window again
        if not kept:
            return np.zeros(p.shape[1], dtype=np.int64)
        return np.sum(kept, axis=0, dtype=np.int64)

    def matrix(self) -> np.ndarray:
        """The window, oldest row first."""
        return self._ordered(self.buf)

    def window_rv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(returns, realised variance, fine) of the window, oldest row first: what
        ``RiskStats.set_returns`` takes."""
        return self._ordered(self.buf), self._ordered(self.rv), self._ordered(self.fine)

    def _ordered(self, a: np.ndarray) -> np.ndarray:
        if self.count < self.window:
            return a[: self.count].copy()
        return np.concatenate([a[self.head :], a[: self.head]])
