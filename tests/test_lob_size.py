"""The size half of the microstructure target: change sizes by hand, a size that the book state
sets is learnt (and beats the training mean significantly), a signed change the imbalance sets
beats the random walk's zero, and where nothing sets them the models do not claim a win."""

from __future__ import annotations

import numpy as np

from models.lob_data import BookEvents
from models.lob_size import (
    LogSize,
    change_sizes,
    evaluate_horizon_change,
    evaluate_next_size,
    format_size,
)
from tests.test_lob_features import _random_stream


def _stream(n: int, seed: int, informative: bool) -> BookEvents:
    """A level-1 book whose mid jumps by the spread (wide or narrow in regimes of 200 events),
    up when the bid queue is the larger one if ``informative`` (else a coin)."""
    rng = np.random.default_rng(seed)
    spread = np.repeat(rng.choice([2, 6], n // 200 + 1), 200)[:n]
    bsz, asz = rng.integers(1, 50, n), rng.integers(1, 50, n)
    bid = np.empty(n, np.int64)
    bid[0] = 10_000
    for i in range(1, n):
        jump = rng.random() < 0.3
        up = bsz[i - 1] > asz[i - 1] if informative else rng.random() < 0.5
        bid[i] = bid[i - 1] + (spread[i - 1] * (1 if up else -1) if jump else 0)
    ask = bid + spread
    ts = np.cumsum(rng.integers(1, 10**6, n))
    return BookEvents(
        "s", ts, bid[:, None], bsz[:, None], ask[:, None], asz[:, None], np.zeros(n), 1.0
    )


def test_change_sizes_by_hand() -> None:
    bid = np.array([10, 10, 11, 11, 11, 8, 8])[:, None]
    ev = BookEvents("h", np.arange(7), bid, np.ones((7, 1), np.int64), bid + 2, np.ones((7, 1), np.int64), np.zeros(7), 1.0)  # fmt: skip
    nxt, last = change_sizes(ev)
    np.testing.assert_array_equal(nxt, [1, 1, 3, 3, 3, np.nan, np.nan])
    np.testing.assert_array_equal(last, [np.nan, np.nan, 1, 1, 1, 3, 3])


def test_log_size_is_a_mean_forecast_not_a_median() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20_000, 2))
    size = np.exp(0.5 * x[:, 0] + rng.normal(0, 0.8, len(x)))
    f = LogSize().fit(x, size)
    assert abs(f.predict(x).mean() / size.mean() - 1) < 0.02  # smearing: the level of the mean
    assert abs(f.r.w[0] / x[:, 0].std() * 1.0 - 0.5) < 0.05  # the slope on the log scale


def test_a_size_the_spread_sets_is_learnt_and_beats_the_training_mean() -> None:
    r = evaluate_next_size(_stream(8000, 1, informative=True))
    mean, last, model = r.rows
    assert mean.name == "training mean" and model.name == "ridge on log size"
    assert model.mse < 0.2 * mean.mse and model.dm == "better"
    assert model.ci[1] < mean.ci[0]
    assert "| ridge on log size |" in format_size(r)


def test_a_signed_change_the_imbalance_sets_beats_zero_and_noise_does_not() -> None:
    r = evaluate_horizon_change(_stream(8000, 2, informative=True), events=1)
    zero, imb, full = r.rows
    assert imb.dm == "better" and full.dm == "better" and full.mse < 0.9 * zero.mse
    noise = evaluate_horizon_change(_stream(8000, 2, informative=False), events=1)
    assert all(row.dm != "better" for row in noise.rows[1:])


def test_a_time_horizon_and_a_random_book_run_end_to_end() -> None:
    ev = _random_stream(4000, 5, levels=1)
    r = evaluate_horizon_change(ev, dt_ns=50_000_000)
    assert r.n_test > 1000 and [x.name for x in r.rows][0] == "zero (no change)"
    s = evaluate_next_size(ev)
    assert s.n_test > 300 and np.isfinite([x.mse for x in s.rows]).all()
