"""Conformal calibration (models/conformal.py): split offsets, their meta.json form, ACI."""

from __future__ import annotations

import numpy as np
import pytest

from models.conformal import adaptive, calibrated, fit_split, offsets_from_meta, shift
from models.probabilistic import coverage, gaussian_quantiles, level_coverage

LEVELS = (0.1, 0.5, 0.9)


def _biased_forecasts(y: np.ndarray) -> np.ndarray:
    """Over-confident and off-centre quantiles: the band holds far less than 80 %."""
    return gaussian_quantiles(np.full(y.shape, 0.3), np.full(y.shape, 0.4), LEVELS)


def test_split_offsets_bring_a_later_block_to_nominal_coverage():
    rng = np.random.default_rng(0)
    y = rng.standard_t(5, size=(40_000, 2))
    q = _biased_forecasts(y)
    cal, test = slice(0, 20_000), slice(20_000, None)
    raw = coverage(y[test], q[test, :, 0], q[test, :, -1])
    assert raw < 0.5
    off = fit_split(y[cal], q[cal], LEVELS)
    qc = calibrated(q[test], off)
    assert coverage(y[test], qc[..., 0], qc[..., -1]) == pytest.approx(0.8, abs=0.02)
    assert level_coverage(y[test], qc) == pytest.approx(LEVELS, abs=0.02)
    assert off.offsets.shape == (2, 3) and off.n == 20_000


def test_split_offsets_use_the_finite_sample_rank():
    # residuals y - q are 1..9 at every level: n = 9, (n+1)·0.9 = 9 -> the 9th; 0.1 -> the 1st;
    # 0.5 -> ceil(5) = the 5th
    y = np.arange(1.0, 10.0)[:, None]
    q = np.zeros((9, 1, 3))
    off = fit_split(y, q, LEVELS)
    assert off.offsets[0].tolist() == [1.0, 5.0, 9.0]
    with pytest.raises(ValueError):
        fit_split(y, np.zeros((9, 1, 2)), LEVELS)


def test_shift_is_in_place_and_keeps_quantiles_monotone():
    from models.conformal import keeps_order

    q = np.array([[[0.0, 0.1, 0.2]]], dtype=np.float32)
    off = np.array([[0.5, 0.0, -0.5]])
    assert not keeps_order(off)
    out = shift(q, off)
    assert out is q
    assert q[0, 0].tolist() == pytest.approx([-0.3, 0.1, 0.5])
    assert keeps_order(np.array([[-0.1, 0.0, 0.0]]))
    q2 = np.array([[[0.0, 0.1, 0.2]]], dtype=np.float32)
    assert shift(q2, np.array([[-0.1, 0.0, 0.0]]), sort=False)[0, 0].tolist() == pytest.approx(
        [-0.1, 0.1, 0.2]
    )


def test_offsets_round_trip_through_meta_and_refuse_a_mismatch():
    y = np.random.default_rng(3).standard_normal((500, 4))
    off = fit_split(y, _biased_forecasts(y), LEVELS, source="validation block")
    meta = {"conformal": off.to_meta()}
    got = offsets_from_meta(meta, 4, LEVELS)
    assert got.dtype == np.float32 and np.allclose(got, off.offsets, atol=1e-6)
    assert offsets_from_meta({}, 4, LEVELS) is None
    with pytest.raises(ValueError, match="levels"):
        offsets_from_meta(meta, 4, (0.05, 0.5, 0.95))
    with pytest.raises(ValueError, match="shape"):
        offsets_from_meta(meta, 3, LEVELS)
    bad = {"conformal": {**off.to_meta(), "offsets": [[float("nan")] * 3] * 4}}
    with pytest.raises(ValueError, match="finite"):
        offsets_from_meta(bad, 4, LEVELS)
    with pytest.raises(ValueError, match="method"):
        offsets_from_meta({"conformal": {**off.to_meta(), "method": "magic"}}, 4, LEVELS)


def _regime_change(n_cal: int, n_test: int, h: int):
    """Calibration errors at scale 1, test errors at scale 2 (a calmer training period)."""
    rng = np.random.default_rng(5)
    y_cal = rng.standard_normal((n_cal, h))
    y_test = 2.0 * rng.standard_normal((n_test, h))
    q_cal = gaussian_quantiles(np.zeros((n_cal, h)), np.ones((n_cal, h)), LEVELS)
    q_test = gaussian_quantiles(np.zeros((n_test, h)), np.ones((n_test, h)), LEVELS)
    return y_cal, q_cal, y_test, q_test


def test_adaptive_conformal_tracks_a_scale_change_that_split_misses():
    y_cal, q_cal, y_test, q_test = _regime_change(1000, 6000, 2)
    split = calibrated(q_test, fit_split(y_cal, q_cal, LEVELS))
    assert coverage(y_test, split[..., 0], split[..., -1]) < 0.6
    aci = adaptive(y_test, q_test, LEVELS, y_cal[..., None] - q_cal, gamma=0.01, window=500)
    assert coverage(y_test, aci[..., 0], aci[..., -1]) == pytest.approx(0.8, abs=0.02)


def test_adaptive_conformal_uses_only_outcomes_already_known():
    y_cal, q_cal, y_test, q_test = _regime_change(200, 300, 3)
    resid = y_cal[..., None] - q_cal
    base = adaptive(y_test, q_test, LEVELS, resid, gamma=0.05)
    t0 = 150
    y2 = y_test.copy()
    for h in range(3):  # every outcome at or after window t0's first target bar
        y2[max(0, t0 - h) :, h] += 10.0
    moved = adaptive(y2, q_test, LEVELS, resid, gamma=0.05)
    assert np.array_equal(moved[: t0 + 1], base[: t0 + 1])
    assert not np.array_equal(moved[t0 + 1 :], base[t0 + 1 :])


def test_serving_adds_the_stored_offsets_to_every_quantile_output(tmp_path):
    import json

    from models.serving import ModelError, load_model
    from tests._onnx_models import write_model

    raw_dir = write_model(tmp_path / "raw", band=0.02)
    d = write_model(tmp_path / "cal", band=0.02)
    meta = json.loads((d / "meta.json").read_text())
    off = [[-0.01, 0.0, 0.01], [-0.02, 0.001, 0.02], [0.0, 0.0, 0.05]]
    meta["conformal"] = {"method": "split", "levels": [0.1, 0.5, 0.9], "offsets": off}
    (d / "meta.json").write_text(json.dumps(meta))
    x = np.random.default_rng(0).standard_normal((4, 8, 5)).astype(np.float32)
    p_raw, q_raw = load_model(raw_dir).run(x)
    p_cal, q_cal = load_model(d).run(x)
    assert np.array_equal(p_raw, p_cal)  # the point forecast is not touched
    assert np.allclose(q_cal, q_raw + np.array(off, np.float32), atol=1e-7)
    crossing = [[0.05, 0.0, -0.05]] * 3  # would cross the model's quantiles: sorted again
    meta["conformal"]["offsets"] = crossing
    (d / "meta.json").write_text(json.dumps(meta))
    _, q_x = load_model(d).run(x)
    assert np.allclose(q_x, np.sort(q_raw + np.array(crossing, np.float32), axis=-1), atol=1e-7)
    assert np.all(np.diff(q_x, axis=-1) >= 0)
    meta["conformal"]["offsets"] = off[:2]  # calibrated for another horizon: refused
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="conformal: offsets must be finite, shape"):
        load_model(d)


def test_online_adaptive_gives_what_the_batch_version_gives():
    from models.conformal import OnlineAdaptive

    rng = np.random.default_rng(7)
    L, H, m = 5, 3, 400
    ret = rng.standard_normal(m + L + H) * np.where(np.arange(m + L + H) > 200, 2.0, 1.0)
    y = np.stack([ret[L + h : L + h + m] for h in range(H)], axis=1)  # y[t, h] = ret[t+L+h]
    q = gaussian_quantiles(np.zeros((m, H)), np.ones((m, H)), LEVELS)
    cal = rng.standard_normal((150, H))[..., None] - gaussian_quantiles(
        np.zeros((150, H)), np.ones((150, H)), LEVELS
    )
    batch = adaptive(y, q, LEVELS, cal, gamma=0.02, window=100)
    online = OnlineAdaptive(LEVELS, cal, gamma=0.02, window=100)
    got = np.empty_like(batch)
    for t in range(m):
        online.observe(ret[t + L - 1])  # the last bar of window t's input has just closed
        got[t] = online.calibrate(q[t])
    assert np.allclose(got, batch, atol=1e-12)
    assert not np.allclose(got, q)  # it did move the bands


def test_online_adaptive_keeps_its_sorted_window_equal_to_a_full_sort_with_ties():
    from models.conformal import OnlineAdaptive

    rng = np.random.default_rng(9)
    H, S = 2, 3
    cal = rng.integers(-3, 4, (40, H, 3)).astype(np.float64)  # few values: many ties
    aci = OnlineAdaptive(LEVELS, cal, gamma=0.1, n_slots=S)
    for _ in range(300):
        valid = rng.random(S) < 0.8
        aci.observe_bars(valid, rng.integers(-4, 5, S).astype(np.float64))
        slots = np.flatnonzero(rng.random(S) < 0.9)
        q = rng.integers(-2, 3, (len(slots), H, 3)).astype(np.float32)
        aci.calibrate_rows(slots, np.sort(q, axis=-1))
    assert aci.hits[:, 0].min() > 100  # every slot judged many outcomes
    assert np.array_equal(aci.srt, np.sort(aci.pool, axis=1).transpose(0, 2, 3, 1))
    assert not np.array_equal(aci.pool[0], cal)  # the window did turn over
