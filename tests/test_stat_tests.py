"""The Diebold–Mariano test: its statistic by hand, its size under equal loss, its power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.stat_tests import diebold_mariano


def test_the_statistic_matches_a_direct_computation_at_horizon_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(1.0, 400), rng.exponential(1.1, 400)
    r = diebold_mariano(a, b)
    d = a - b
    n = d.size
    dm = d.mean() / math.sqrt(d.var() / n) * math.sqrt((n - 1) / n)
    assert r.stat == pytest.approx(dm, rel=1e-12)
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(dm), n - 1), rel=1e-12)
    assert r.mean_diff == pytest.approx(d.mean())


def test_a_clearly_lower_loss_is_called_better_and_the_reverse_worse() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(size=500) ** 2
    r = diebold_mariano(noise, noise + 0.5 + rng.normal(0, 0.1, 500))
    assert r.p_value < 1e-6 and r.verdict() == "better"
    assert diebold_mariano(noise + 0.5, noise).verdict() == "worse"


def test_equal_losses_reject_about_five_percent_of_the_time() -> None:
    rejections = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        rejections += (
            diebold_mariano(rng.normal(size=200) ** 2, rng.normal(size=200) ** 2).p_value < 0.05
        )
    assert 0.02 <= rejections / 300 <= 0.09


def test_overlapping_multi_step_losses_widen_the_variance() -> None:
    rng = np.random.default_rng(5)
    e = rng.normal(size=600)
    # an MA(3) loss differential: what 4-step forecasts' overlapping errors look like
    d = np.convolve(e, np.ones(4), mode="valid") + 0.15
    one = diebold_mariano(d, np.zeros_like(d), horizon=1)
    four = diebold_mariano(d, np.zeros_like(d), horizon=4)
    assert abs(four.stat) < abs(one.stat) and four.p_value > one.p_value


def test_degenerate_inputs_give_no_verdict_rather_than_an_error() -> None:
    x = np.ones(50)
    assert diebold_mariano(x, x).p_value == 1.0
    assert diebold_mariano(x[:2], x[:2] + 1).verdict() == "no significant difference"
    with pytest.raises(ValueError):
        diebold_mariano(x, x[:10])
    y = x.copy()
    y[3] = np.nan
    assert diebold_mariano(y, x + 1).n == 49
