"""The deflated Sharpe ratio and the probability of backtest overfitting (ops/sweep_stats.py)
against values worked out by hand and the published example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ops.sweep_stats import (
    deflated_sharpe,
    expected_max_sharpe,
    moments,
    pbo_cscv,
    probabilistic_sharpe,
    sharpe,
)


def test_deflated_sharpe_of_the_papers_worked_example() -> None:
    """Bailey & López de Prado (2014): 100 trials whose annualised Sharpe ratios vary by 1/2,
    the best at 2.5 annualised over 1250 daily returns with skewness -3 and kurtosis 10: the
    luck threshold SR0 is 0.1132 per day and the DSR 0.9004."""
    sr0 = expected_max_sharpe(0.5 / 250, 100)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    dsr = probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, skew=-3.0, kurt=10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_probabilistic_sharpe_by_hand() -> None:
    # SR 0.1 over 101 normal returns vs 0: z = 0.1 * 10 / sqrt(1 + 0.1^2 / 2) = 0.997509
    assert probabilistic_sharpe(0.1, 0.0, 101) == pytest.approx(0.8407413, abs=1e-6)
    # the estimate equal to the benchmark: a coin flip, whatever the moments
    assert probabilistic_sharpe(0.3, 0.3, 50, skew=-1.0, kurt=6.0) == pytest.approx(0.5)


def test_moments_and_sharpe_by_hand() -> None:
    # deviations -3 -2 -1 6: m2 = 50/4, m3 = 180/4, m4 = 1394/4
    skew, kurt = moments(np.array([1.0, 2.0, 3.0, 10.0]))
    assert skew == pytest.approx(45 / 12.5**1.5)
    assert kurt == pytest.approx(348.5 / 12.5**2)
    assert sharpe(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # mean 2, sd 1
    assert sharpe(np.zeros(10)) == 0.0  # no variation: no risk taken, nothing earned
    assert moments(np.zeros(5)) == (0.0, 3.0)


def test_expected_max_sharpe_grows_with_trials_and_dispersion() -> None:
    assert expected_max_sharpe(0.01, 1) == 0.0
    values = [expected_max_sharpe(0.01, n) for n in (2, 10, 100, 1000)]
    assert values == sorted(values) and values[0] > 0
    assert expected_max_sharpe(0.04, 10) == pytest.approx(2 * expected_max_sharpe(0.01, 10))


def test_deflated_sharpe_uses_the_trials_dispersion() -> None:
    rng = np.random.default_rng(3)
    best = rng.normal(0.05, 1.0, 500)
    alone = deflated_sharpe(best, [sharpe(best)])
    many = deflated_sharpe(best, [sharpe(best), *rng.normal(0.0, 0.05, 99)])
    assert alone.sr0 == 0.0 and many.sr0 > 0.0
    assert many.dsr < alone.dsr  # the same track record, tried 100 times: less convincing
    assert many.n_trials == 100 and many.n_obs == 500


def test_pbo_of_two_trials_that_swap_places_is_one() -> None:
    """Two blocks, two splits. A wins the first half and loses the second, B the opposite: the
    in-sample best is the out-of-sample worst in both splits (rank 1 of 2, logit ln(1/2))."""
    a = [0.02, 0.04, -0.01, -0.03]
    b = [-0.01, -0.02, 0.03, 0.05]
    res = pbo_cscv(np.column_stack([a, b]), blocks=2)
    assert res.splits == 2
    assert res.pbo == 1.0
    assert res.logits == pytest.approx((math.log(0.5), math.log(0.5)))


def test_pbo_of_a_trial_best_in_both_halves_is_zero() -> None:
    a = [0.02, 0.04, 0.03, 0.05]
    b = [-0.01, -0.02, 0.01, 0.00]
    res = pbo_cscv(np.column_stack([a, b]), blocks=2)
    assert res.pbo == 0.0
    assert res.logits == pytest.approx((math.log(2.0), math.log(2.0)))  # rank 2 of 2: w = 2/3


def test_pbo_tells_noise_from_skill() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (480, 30))
    assert 0.2 < pbo_cscv(noise, 8).pbo < 0.8  # the best of noise is a coin flip out of sample
    skill = noise.copy()
    skill[:, 11] += 0.6
    res = pbo_cscv(skill, 8)
    assert res.pbo == 0.0 and res.splits == math.comb(8, 4)


def test_pbo_refuses_too_little_data() -> None:
    with pytest.raises(ValueError, match="CSCV needs"):
        pbo_cscv(np.zeros((10, 1)), 4)
    with pytest.raises(ValueError, match="CSCV needs"):
        pbo_cscv(np.zeros((7, 3)), 4)
