"""Probabilistic scores (models/probabilistic.py): pinball, CRPS, coverage, EWMA band, seeds."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from models.probabilistic import (
    coverage,
    crps,
    crps_weights,
    ewma_sigma,
    fmt_spread,
    gaussian_quantiles,
    level_coverage,
    pinball,
    prob_score,
    seed_summary,
)


def test_pinball_weighs_misses_by_level():
    q = np.array([[0.0, 0.0]])
    assert pinball(np.array([1.0]), q, [0.1, 0.9])[0] == pytest.approx([0.1, 0.9])
    assert pinball(np.array([-1.0]), q, [0.1, 0.9])[0] == pytest.approx([0.9, 0.1])
    assert pinball(np.array([0.0]), q, [0.1, 0.9])[0] == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError):
        pinball(np.array([0.0]), q, [0.5])


def test_crps_of_fine_quantile_grid_matches_the_gaussian_closed_form():
    levels = np.arange(0.0005, 1.0, 0.001)
    nd = NormalDist()
    for y, sigma in ((0.0, 1.0), (1.3, 1.0), (-0.4, 2.5)):
        q = gaussian_quantiles(np.array([0.0]), np.array([sigma]), levels)
        z = y / sigma
        exact = sigma * (z * (2 * nd.cdf(z) - 1) + 2 * nd.pdf(z) - 1 / math.sqrt(math.pi))
        assert crps(np.array([y]), q, levels)[0] == pytest.approx(exact, rel=2e-3)


def test_crps_weights_partition_the_unit_interval():
    w = crps_weights([0.1, 0.5, 0.9])
    assert w == pytest.approx([0.3, 0.4, 0.3])
    for bad in ([0.5, 0.1], [0.0, 0.5], [0.5, 1.0], []):
        with pytest.raises(ValueError):
            crps_weights(bad)


def test_coverage_counts_the_band_inclusive():
    y = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert coverage(y, np.full(5, -1.0), np.full(5, 1.0)) == pytest.approx(0.6)
    assert math.isnan(coverage(np.zeros(0), np.zeros(0), np.zeros(0)))


def test_gaussian_quantiles_and_level_coverage():
    q = gaussian_quantiles(np.array([1.0, 2.0]), np.array([1.0, 0.5]), [0.1, 0.5, 0.9])
    z = NormalDist().inv_cdf(0.9)
    assert q[0] == pytest.approx([1 - z, 1.0, 1 + z])
    assert q[1] == pytest.approx([2 - 0.5 * z, 2.0, 2 + 0.5 * z])
    rng = np.random.default_rng(1)
    y = rng.standard_normal((40_000, 2))
    qs = gaussian_quantiles(np.zeros((40_000, 2)), np.ones((40_000, 2)), [0.1, 0.5, 0.9])
    assert level_coverage(y, qs) == pytest.approx([0.1, 0.5, 0.9], abs=0.01)
    s = prob_score("n", y, qs, [0.1, 0.5, 0.9])
    assert s.coverage == pytest.approx(0.8, abs=0.01) and s.nominal == pytest.approx(0.8)
    assert s.width == pytest.approx(2 * z) and s.n == 40_000
    # a band too narrow scores worse on both pinball and CRPS than the true one
    narrow = prob_score("x", y, qs * 0.3, [0.1, 0.5, 0.9])
    assert narrow.pinball > s.pinball and narrow.crps > s.crps
    assert s.level_error < 0.01 and narrow.level_error > 0.1  # 0.1 -> ~0.31, 0.9 -> ~0.69


def test_ewma_sigma_is_the_riskmetrics_recursion_and_causal():
    rng = np.random.default_rng(2)
    r = rng.standard_normal(300) * 0.01
    got = ewma_sigma(r, 0.94, warmup=20)
    var = float(np.mean(r[:20] ** 2))
    for t in range(300):
        var = 0.94 * var + 0.06 * r[t] ** 2
        assert got[t] == pytest.approx(math.sqrt(var))
    r2 = r.copy()
    r2[200:] *= 10  # the future does not change what was known before it (warmup aside)
    assert np.array_equal(ewma_sigma(r2)[:200], got[:200])


def test_seed_summary_mean_and_sample_spread():
    s = seed_summary([1.0, 2.0, 3.0, float("nan")])
    assert (s.mean, s.std, s.lo, s.hi, s.n) == (2.0, 1.0, 1.0, 3.0, 3)
    assert fmt_spread(s, ".2f") == "2.00 ± 1.00"
    one = seed_summary([0.5])
    assert one.std == 0.0 and fmt_spread(one, ".1f", scale=100) == "50.0"
    assert fmt_spread(seed_summary([])) == "-"
