"""What a better variance forecast does to a VaR limit: a position held at the VaR budget.

The risk gate caps an order by parametric VaR (``z·σ·exposure`` within ``max_var_pct`` of
equity); the σ it uses decides how large a position the limit lets through. This is the
smallest honest test of that choice on real data: hold the instrument every period at the
exposure whose one-period parametric VaR equals the budget (capped at ``max_leverage``), with
σ from each forecaster's out-of-sample forecast, and compare what followed — drawdown,
realised volatility, and how often the loss broke the VaR (nominal ``1 - confidence``; the
Kupiec test says whether the breach rate is consistent with it). No fees, no fills: the engine
is not in the loop (docs/forecasting.md, "Volatility").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class VarBacktest:
    """One forecaster's run. Returns and drawdown in percent; ``breach_p``: Kupiec's
    likelihood-ratio p-value for ``breach_rate`` against the nominal rate."""

    model: str
    periods: int
    mean_exposure: float
    ann_return_pct: float
    ann_vol_pct: float
    max_drawdown_pct: float
    breaches: int
    breach_rate: float
    breach_p: float

    def to_dict(self) -> dict:
        return asdict(self)


def kupiec_p(breaches: int, n: int, rate: float) -> float:
    """Kupiec (1995) proportion-of-failures test: p-value of ``breaches`` in ``n`` periods
    under a true breach probability ``rate`` (chi-square, 1 degree of freedom)."""
    if n <= 0:
        return math.nan
    x = breaches
    pi = x / n

    def ll(p: float) -> float:
        a = (n - x) * math.log1p(-p) if x < n else 0.0
        return a + (x * math.log(p) if x > 0 else 0.0)

    lr = -2.0 * (ll(rate) - (ll(pi) if 0.0 < pi < 1.0 else 0.0))
    return float(math.erfc(math.sqrt(max(lr, 0.0) / 2.0)))  # chi2(1) survival function


def var_budget_backtest(
    model: str,
    ret_pct: np.ndarray,
    var_forecast: np.ndarray,
    *,
    budget_pct: float = 2.0,
    confidence: float = 0.99,
    max_leverage: float = 2.0,
    periods_per_year: float = 252.0,
) -> VarBacktest:
    """Long ``exposure_t = min(max_leverage, budget / (z·σ_t))`` of equity in period ``t``
    (``σ_t`` the forecast made before it, percent), earning the period's simple return."""
    z = NormalDist().inv_cdf(confidence)
    sigma = np.sqrt(np.maximum(var_forecast, 1e-12))
    w = np.minimum(max_leverage, budget_pct / (z * sigma))
    pnl = w * np.expm1(ret_pct / 100.0)  # fraction of equity
    equity = np.cumprod(1.0 + pnl)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    dd = float(np.max(1.0 - equity / peak)) if equity.size else 0.0
    var_frac = w * z * sigma / 100.0  # the VaR the sizing allowed, fraction of equity
    breaches = int(np.sum(-pnl > var_frac + 1e-12))
    n = int(pnl.size)
    years = n / periods_per_year
    return VarBacktest(
        model,
        n,
        float(w.mean()) if n else 0.0,
        100.0 * (float(equity[-1]) ** (1.0 / years) - 1.0) if n else 0.0,
        100.0 * float(pnl.std(ddof=1)) * math.sqrt(periods_per_year) if n > 1 else 0.0,
        100.0 * dd,
        breaches,
        breaches / n if n else math.nan,
        kupiec_p(breaches, n, 1.0 - confidence),
    )
