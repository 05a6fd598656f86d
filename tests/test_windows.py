"""Streaming feature windows equal the training features; bars; the drift monitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bars import BarAggregator
from models.drift import DriftMonitor
from models.features import N_FEATURES, compute_features
from models.windows import FeatureWindows

price = st.one_of(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, -1.0, math.nan, math.inf]),  # invalid prices: zeroed, never NaN
)
bar = st.tuples(
    price,  # high
    price,  # low
    price,  # close
    st.one_of(st.floats(min_value=0, max_value=1e9), st.sampled_from([-5.0, math.nan])),  # volume
    st.integers(min_value=0, max_value=4 * 86_400 * 10**9),  # ts
)


@settings(max_examples=40, deadline=None)
@given(bars=st.lists(bar, min_size=1, max_size=40), capacity=st.integers(1, 16))
def test_streamed_rows_are_exactly_the_training_rows(bars: list, capacity: int) -> None:
    h, lo, c, v, ts = (np.array(col) for col in zip(*bars, strict=True))
    want = compute_features(c, h, lo, c, v, ts.astype(np.int64))
    w = FeatureWindows(2, capacity)
    for k, (bh, bl, bc, bv, bt) in enumerate(bars):
        w.push_bar(1, bh, bl, bc, bv, int(bt))
        n = min(k + 1, capacity)
        got = w.window(1, n)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        # bit-identical, not merely close: the model must see what it was trained on
        assert np.array_equal(got, want[k + 1 - n : k + 1]), (k, got, want[k + 1 - n : k + 1])
    assert w.count[0] == 0 and w.count[1] == len(bars)


def test_gather_builds_a_contiguous_batch_of_ready_windows() -> None:
    w = FeatureWindows(3, 4)
    rng = np.random.default_rng(1)
    for _ in range(6):
        for s in (0, 2):
            w.push_bar(s, 101.0, 99.0, 100.0 + rng.normal(), 10.0, 0)
    x = w.gather(np.array([2, 0]), 4)
    assert x.shape == (2, 4, N_FEATURES) and x.flags.c_contiguous
    assert np.array_equal(x[0], w.window(2)) and np.array_equal(x[1], w.window(0))
    assert x.base is w.batch or x.base is w.batch.base  # the preallocated buffer, no new array


def test_resize_keeps_the_newest_rows() -> None:
    w = FeatureWindows(1, 4)
    for k in range(6):
        w.push_bar(0, 1.0, 1.0, 100.0 + k, 1.0, k)
    before = w.window(0).copy()
    w.resize(8)
    assert w.count[0] == 4 and np.array_equal(w.window(0, 4), before)
    w.push_bar(0, 1.0, 1.0, 107.0, 1.0, 7)
    assert np.isclose(w.window(0, 1)[0, 0], math.log(107 / 105))  # prev close survived
    w.resize(2)
    assert np.array_equal(w.window(0, 2)[0], before[-1])


def test_time_bars_close_together_with_flat_bars_for_quiet_instruments() -> None:
    agg = BarAggregator(2, bar_ns=100)
    assert agg.due(1_050) == 0 and agg.start_ns == 1_000
    agg.on_quote(0, 99, 101)  # mid 100
    agg.on_quote(0, 103, 105)  # 104
    agg.on_quote(0, 97, 99)  # 98
    agg.on_trade(0, 7)
    assert agg.due(1_099) == 0
    assert agg.due(1_100) == 1
    agg.close_bar()
    assert (agg.open[0], agg.high[0], agg.low[0], agg.close[0], agg.volume[0]) == (
        100,
        104,
        98,
        98,
        7,
    )
    assert agg.valid.tolist() == [True, False]  # slot 1 never had a price
    assert (agg.closed_start_ns, agg.closed_end_ns) == (1_000, 1_100)
    agg.on_quote(1, 10, 12)
    assert agg.due(1_350) == 2  # the bar [1100, 1200) and the empty [1200, 1300)
    agg.close_bar()
    assert agg.valid.tolist() == [True, True]
    assert (agg.open[0], agg.close[0], agg.volume[0]) == (98, 98, 0)  # flat at the last mid
    agg.close_bar()
    assert (agg.closed_start_ns, agg.open[1], agg.high[1], agg.close[1]) == (1_200, 11, 11, 11)


def test_tick_bars_close_every_n_events() -> None:
    agg = BarAggregator(1, every_n_ticks=3)
    closes = []
    for k in range(7):
        agg.on_quote(0, 100 + k, 102 + k)
        if agg.tick(10 * k):
            agg.close_bar(10 * k)
            closes.append((agg.closed_start_ns, agg.open[0], agg.close[0]))
    assert closes == [(0, 101, 103), (30, 104, 106)]


def test_bar_aggregator_needs_one_mode() -> None:
    with pytest.raises(ValueError):
        BarAggregator(1)
    with pytest.raises(ValueError):
        BarAggregator(1, bar_ns=5, every_n_ticks=5)


def test_drift_fires_once_when_the_model_is_worse_than_naive_and_once_on_recovery() -> None:
    m = DriftMonitor(2, window=10, margin=0.2)
    rng = np.random.default_rng(0)
    events = []
    path = [float(x) for x in rng.normal(0, 1e-3, 200)]
    for k in range(1, 100):  # perfect forecasts: never drifting
        m.on_forecast(0, path[k])
        m.on_bar(0, path[k])
        if (ev := m.check()) is not None:
            events.append(ev)
    assert events == [] and m.samples == 10
    mae, naive = m.maes()
    assert mae == 0.0 and naive > 0
    for k in range(100, 130):  # forecasts of the wrong sign: twice as far off as naive
        m.on_forecast(0, -path[k])
        m.on_bar(0, path[k])
        if (ev := m.check()) is not None:
            events.append(ev)
    assert (
        len(events) == 1 and events[0].drifting and events[0].model_mae > events[0].naive_mae * 1.2
    )
    for k in range(130, 160):
        m.on_forecast(0, path[k])
        m.on_bar(0, path[k])
        if (ev := m.check()) is not None:
            events.append(ev)
    assert len(events) == 2 and not events[1].drifting
    m.reset()
    assert m.samples == 0 and not m.drifting and m.check() is None


def test_drift_scores_only_forecasts_that_were_made() -> None:
    m = DriftMonitor(1, window=3, margin=0.0)
    m.on_bar(0, 0.01)  # no forecast pending: not scored
    assert m.samples == 0
    m.on_forecast(0, 0.02)
    m.on_bar(0, math.nan)  # unusable return: not scored, forecast kept
    m.on_bar(0, 0.01)
    assert m.samples == 1 and m.maes() == pytest.approx((0.01, 0.01))
    with pytest.raises(ValueError):
        DriftMonitor(1, window=0)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.lists(st.tuples(st.booleans(), bar), min_size=3, max_size=3), min_size=1, max_size=12
    )
)
def test_push_all_equals_push_bar_slot_by_slot(steps: list) -> None:
    """The vectorised path (all instruments' bars at once) writes exactly the per-bar rows."""
    a, b = FeatureWindows(3, 5), FeatureWindows(3, 5)
    for step in steps:
        valid = np.array([v for v, _ in step])
        h, lo, c, vol, _ = (
            np.array(col, dtype=np.float64) for col in zip(*(x for _, x in step), strict=True)
        )
        ts = int(step[0][1][4])
        a.push_all(valid, h, lo, c, vol, ts)
        for s in range(3):
            if valid[s]:
                b.push_bar(s, h[s], lo[s], c[s], vol[s], ts)
    assert np.array_equal(a.count, b.count)
    for s in range(3):
        n = int(min(a.count[s], 5))
        if n:
            assert np.array_equal(a.window(s, n), b.window(s, n))
    ready = np.flatnonzero(a.count >= 5)
    if ready.size:
        assert np.array_equal(a.gather(ready, 5), np.stack([b.window(int(s)) for s in ready]))


def test_drift_batch_updates_equal_one_by_one() -> None:
    rng = np.random.default_rng(3)
    one, many = DriftMonitor(4, window=7), DriftMonitor(4, window=7)
    for _ in range(20):
        f = rng.normal(0, 1e-3, 4)
        r = rng.normal(0, 1e-3, 4)
        slots = np.flatnonzero(rng.random(4) < 0.7)
        for s in slots:
            one.on_forecast(int(s), float(f[s]))
        many.on_forecasts(slots, f[slots])
        for s in range(4):
            one.on_bar(s, float(r[s]))
        many.on_bars(np.arange(4), r)
        assert one.samples == many.samples
        assert one.maes() == pytest.approx(many.maes())
