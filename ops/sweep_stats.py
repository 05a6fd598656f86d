"""Is the best trial of a sweep skill or luck: the deflated Sharpe ratio and the probability of
backtest overfitting, pure functions of returns (numpy; the normal distribution of the stdlib).

Why these two: the more parameter sets a sweep tries, the higher its best Sharpe ratio climbs
by chance alone. The **deflated Sharpe ratio** (Bailey & López de Prado, 2014) is the
probability that the best trial's true Sharpe ratio beats the best one would expect from that
many trials of zero skill, allowing for its track length and for non-normal returns (skewness,
fat tails). The **probability of backtest overfitting** (Bailey, Borwein, López de Prado & Zhu,
2015; combinatorially symmetric cross-validation, CSCV) asks how often the configuration that
is best in one half of the data ranks below the median in the other half.

Conventions (docs/sweeps.md says how to read them):
- Sharpe ratios here are per period (the equity curve's sample period), never annualised;
  returns with no variation have a Sharpe ratio of 0 (no risk taken, nothing earned);
- kurtosis is the plain fourth standardised moment (3 for normal returns), skewness the third,
  both the population (biased) estimates the paper uses;
- the number of trials N is the count of completed trials: trials of a grid are correlated, so
  this is the conservative side (it deflates more than their effective number would);
- CSCV ranks with average ranks for ties; a split counts as overfit when the logit of the
  in-sample best's out-of-sample relative rank is <= 0 (at or below the median).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def sharpe(returns: np.ndarray) -> float:
    """Mean over sample standard deviation (ddof 1) of per-period returns; 0 without variation."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    sd = float(np.std(r, ddof=1))
    return float(np.mean(r)) / sd if sd > 0 else 0.0


def moments(returns: np.ndarray) -> tuple[float, float]:
    """(skewness, kurtosis) of ``returns``; the normal's (0, 3) when they have no variation."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0, 3.0
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    if m2 <= 0:
        return 0.0, 3.0
    return float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2


def probabilistic_sharpe(
    sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurt: float = 3.0
) -> float:
    """P(true Sharpe > ``sr_benchmark``) given the estimate ``sr`` from ``n_obs`` returns."""
    if n_obs < 2:
        return float("nan")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if var <= 0:
        return float("nan")
    return _N.cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var))


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float:
    """The Sharpe ratio the best of ``n_trials`` zero-skill trials reaches on average, when the
    trials' estimates vary with ``sr_variance`` (the paper's SR0)."""
    if n_trials < 2 or sr_variance <= 0:
        return 0.0
    a = _N.inv_cdf(1.0 - 1.0 / n_trials)
    b = _N.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


@dataclass(frozen=True)
class Deflated:
    dsr: float  # P(the best trial's true Sharpe > sr0)
    sr0: float  # the best Sharpe expected from luck alone
    sharpe: float  # the best trial's (per period)
    n_trials: int
    n_obs: int


def deflated_sharpe(best_returns: np.ndarray, trial_sharpes: list[float] | np.ndarray) -> Deflated:
    """The deflated Sharpe ratio of the trial with ``best_returns`` among trials whose Sharpe
    ratios are ``trial_sharpes`` (the best's included)."""
    srs = np.asarray(trial_sharpes, dtype=np.float64)
    n = int(srs.size)
    var = float(np.var(srs, ddof=1)) if n >= 2 else 0.0
    sr0 = expected_max_sharpe(var, n)
    r = np.asarray(best_returns, dtype=np.float64)
    sr = sharpe(r)
    skew, kurt = moments(r)
    return Deflated(probabilistic_sharpe(sr, sr0, int(r.size), skew, kurt), sr0, sr, n, r.size)


def _avg_rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    xs = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _sharpe_cols(m: np.ndarray) -> np.ndarray:
    sd = np.std(m, axis=0, ddof=1)
    mean = np.mean(m, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)


@dataclass(frozen=True)
class Overfitting:
    pbo: float  # share of the splits where the in-sample best is at or below the OOS median
    logits: tuple[float, ...]  # one per split
    splits: int


def pbo_cscv(returns: np.ndarray, blocks: int = 8) -> Overfitting:
    """Probability of backtest overfitting of ``returns`` (T periods x N trials) by CSCV: the
    rows cut into ``blocks`` (even) consecutive blocks; every choice of half of them is an
    in-sample set, the rest its out-of-sample; the performance of a trial is its Sharpe ratio."""
    m = np.asarray(returns, dtype=np.float64)
    t, n = m.shape
    if n < 2 or blocks < 2 or blocks % 2 or t < 2 * blocks:
        raise ValueError(
            f"CSCV needs >= 2 trials and >= {2 * blocks} periods, got {n} trials x {t} periods"
        )
    parts = np.array_split(np.arange(t), blocks)
    logits = []
    for chosen in itertools.combinations(range(blocks), blocks // 2):
        rest = [b for b in range(blocks) if b not in chosen]
        is_rows = np.concatenate([parts[b] for b in chosen])
        oos_rows = np.concatenate([parts[b] for b in rest])
        best = int(np.argmax(_sharpe_cols(m[is_rows])))  # the first of equals
        w = _avg_rank(_sharpe_cols(m[oos_rows]))[best] / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
    lg = tuple(logits)
    return Overfitting(sum(x <= 0 for x in lg) / len(lg), lg, len(lg))
