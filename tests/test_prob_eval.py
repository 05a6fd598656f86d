"""The probabilistic half of `gekko eval`: quantile baselines, DM rows, conformal rows, seeds,
statsforecast baselines (models/prob_baselines.py, prob_eval.py, stat_baselines.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.data import generated_bars
from models.evaluate import evaluate_predictor, format_report
from models.prob_baselines import drift_point, quantile_baselines
from models.prob_eval import dm_rows, format_seeds, seed_summary_dict
from models.probabilistic import gaussian_quantiles

LEVELS = (0.1, 0.5, 0.9)


def test_drift_point_is_the_mean_of_the_known_history():
    ret = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    got = drift_point(ret, np.array([1, 2, 3, 6]), 2)
    assert got[:, 0].tolist() == [0.0, 1.0, 1.5, 3.0] and np.array_equal(got[:, 0], got[:, 1])


def test_quantile_baselines_use_only_the_past():
    rng = np.random.default_rng(0)
    ret = rng.standard_normal(400) * 0.01
    first = np.arange(300, 400)
    a = quantile_baselines(ret, first, 250, 3, LEVELS)
    moved = ret.copy()
    moved[320:] *= 50.0  # later returns change nothing at origins before them
    b = quantile_baselines(moved, first, 250, 3, LEVELS)
    for name in ("random walk", "drift naive", "EWMA Gaussian"):
        assert a[name].shape == (100, 3, 3)
        assert np.array_equal(a[name][:21], b[name][:21]), name
        assert np.all(np.diff(a[name], axis=-1) >= 0), name
    assert not np.array_equal(a["EWMA Gaussian"][21:], b["EWMA Gaussian"][21:])
    assert np.allclose(a["random walk"][0, 0], np.quantile(ret[1:250], LEVELS))


def test_dm_rows_compare_the_model_and_its_calibrated_bands_with_every_baseline():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((3000, 2))
    y = signal + 0.5 * rng.standard_normal((3000, 2))
    sigma = np.full(y.shape, 0.5)
    points = {"m": signal, "zero": np.zeros_like(y)}
    quants = {
        "m": gaussian_quantiles(signal, sigma, LEVELS),
        "m + split conformal": gaussian_quantiles(signal, sigma, LEVELS),
        "wide": gaussian_quantiles(np.zeros_like(y), np.full(y.shape, 1.2), LEVELS),
    }
    rows = {(d.model, d.baseline, d.loss): d for d in dm_rows("m", points, quants, y, LEVELS)}
    assert set(rows) == {
        ("m", "zero", "squared error"),
        ("m", "wide", "CRPS"),
        ("m + split conformal", "wide", "CRPS"),
    }
    assert all(d.verdict() == "model better" and d.p_value < 1e-6 for d in rows.values())
    worse = dm_rows("zero", points, {}, y, LEVELS)
    assert [d.verdict() for d in worse] == ["model worse"]


def _report(seed: int, mae: float, p: float) -> dict:
    return {
        "seed": seed,
        "table": [{"name": "m", "mae": mae, "rmse": mae, "mase": 1.0, "dir_acc": None}],
        "probabilistic": [{"name": "m", "pinball": 1.0, "crps": 2.0, "coverage": 0.8}],
        "dm": [
            {
                "model": "m",
                "baseline": "rw",
                "loss": "CRPS",
                "p_value": p,
                "verdict": "model worse" if p < 0.05 else "no significant difference",
            }
        ],
    }


def test_seed_summary_gives_mean_spread_and_the_dm_range():
    s = seed_summary_dict([_report(0, 1.0, 0.01), _report(1, 3.0, 0.2)], ["m"])
    assert s["seeds"] == [0, 1]
    assert s["scores"]["m"]["MAE"]["mean"] == 2.0
    assert s["scores"]["m"]["MAE"]["std"] == pytest.approx(2**0.5)
    assert "dir. acc. %" not in s["scores"]["m"]  # never called: no row to average
    (dm,) = s["dm"]
    assert (dm["p_min"], dm["p_max"], dm["model_worse"], dm["n_seeds"]) == (0.01, 0.2, 1, 2)
    text = format_seeds(s)
    assert "over 2 seeds (0, 1)" in text and "2 ± 1.41" in text and "0.01 – 0.2" in text


def test_evaluate_predictor_scores_the_stored_conformal_bands():
    bars = [generated_bars("random_walk", 1200, seed=3)]

    def narrow(x: np.ndarray):  # a model whose bands are far too narrow
        m = x.shape[0]
        return np.zeros((m, 2), np.float32), np.tile(
            np.array([-1e-5, 0.0, 1e-5], np.float32), (m, 2, 1)
        )

    off = np.tile(np.array([-0.0013, 0.0, 0.0013]), (2, 1))
    rep = evaluate_predictor(narrow, bars, 16, 2, LEVELS, name="toy", offsets=off)
    prob = {p.name: p for p in rep.prob}
    assert set(prob) == {
        "toy",
        "toy + stored conformal",
        "random walk",
        "drift naive",
        "EWMA Gaussian",
    }
    assert prob["toy"].coverage < 0.1 and prob["toy + stored conformal"].coverage > 0.6
    assert {r.name for r in rep.rows} >= {"toy", "drift naive"}
    assert any(d.model == "toy + stored conformal" for d in rep.dm)
    json.dumps(rep.to_dict())
    text = format_report(rep)
    assert "| toy + stored conformal" in text and "Diebold–Mariano" in text and "RMSE" in text


def test_evaluate_predictor_scores_what_adaptive_serving_would_give():
    from models.conformal import adaptive

    bars = [generated_bars("random_walk", 1200, seed=3)]
    band = np.array([-1e-5, 0.0, 1e-5], np.float32)

    def narrow(x: np.ndarray):
        m = x.shape[0]
        return np.zeros((m, 2), np.float32), np.tile(band, (m, 2, 1))

    rng = np.random.default_rng(1)  # calibration residuals of a much calmer market
    resid = rng.normal(0, 1e-4, (300, 2, 1)) - band.astype(np.float64)
    off = np.tile(np.array([-0.00013, 0.0, 0.00013]), (2, 1))
    rep = evaluate_predictor(
        narrow, bars, 16, 2, LEVELS, name="toy", offsets=off, residuals=resid, aci_gamma=0.02
    )
    prob = {p.name: p for p in rep.prob}
    fixed, aci = prob["toy + stored conformal"], prob["toy + stored adaptive conformal"]
    assert fixed.coverage < 0.3 and aci.coverage == pytest.approx(0.8, abs=0.04)
    assert "| toy + stored adaptive conformal" in format_report(rep)
    # the row is the offline ACI from the stored residuals on the test windows
    from models.data import make_windows

    x, y = make_windows(bars[0].features(), 16, 2)
    start = len(x) - int(len(x) * 0.4)
    qa = adaptive(
        y[start:], np.tile(band, (len(x) - start, 2, 1)).astype(float), LEVELS, resid, 0.02
    )
    inside = (y[start:] >= qa[..., 0]) & (y[start:] <= qa[..., -1])
    assert inside.mean() == pytest.approx(aci.coverage, abs=1e-12)


def test_interval_keys_map_levels_to_statsforecast_outputs():
    from models.stat_baselines import _interval_keys

    asks, keys = _interval_keys([0.05, 0.25, 0.5, 0.75, 0.95])
    assert asks == [90, 50] and keys == ["lo-90", "lo-50", "mean", "hi-50", "hi-90"]


def test_statsforecast_baselines_learn_an_ar1_and_stay_causal():
    pytest.importorskip("statsforecast")
    from models.stat_baselines import StatBaselines

    rng = np.random.default_rng(4)
    e = rng.standard_normal(1500) * 0.01
    ret = np.zeros(1500)
    for t in range(1, 1500):
        ret[t] = 0.6 * ret[t - 1] + e[t]
    first = np.arange(1200, 1400)
    sb = StatBaselines(("AutoARIMA",))
    pts, qs = sb(ret, first, 1100, 2, LEVELS, ("s", 0))
    y = ret[first]
    mse = float(np.mean((pts["AutoARIMA"][:, 0] - y) ** 2))
    assert mse < 0.8 * float(np.mean(y**2))  # the random walk's (zero) forecast
    q = qs["AutoARIMA"]
    assert q.shape == (200, 2, 3) and np.all(np.diff(q, axis=-1) >= 0)
    assert 0.65 < float(((y >= q[:, 0, 0]) & (y <= q[:, 0, 2])).mean()) < 0.95
    assert sb(ret, first, 1100, 2, LEVELS, ("s", 0))[0] is pts  # memoised per block
    moved = ret.copy()
    moved[1300:] += 1.0
    p2, _ = StatBaselines(("AutoARIMA",))(moved, first, 1100, 2, LEVELS, ("s", 0))
    assert np.array_equal(p2["AutoARIMA"][:101], pts["AutoARIMA"][:101])


def test_gekko_eval_over_seeds_reports_calibrated_bands_and_their_spread(tmp_path, capsys):
    pytest.importorskip("torch")
    from ops.cli import main

    out = tmp_path / "r.json"
    argv = ["eval", "--source", "random_walk", "--bars", "1500", "--input-size", "16"]
    argv += ["--horizon", "2", "--hidden", "16", "--epochs", "3", "--folds", "2"]
    argv += ["--seeds", "0,1", "--no-stat-baselines", "--no-progress", "--json", str(out)]
    assert main([*argv, "--html", str(tmp_path / "r.html")]) == 0
    text = capsys.readouterr().out
    assert "## seed 1" in text and "over 2 seeds (0, 1)" in text and "Diebold–Mariano" in text
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "<h2>Calibration" in page and "nhits + adaptive conformal" in page
    assert "<script" not in page
    rep = json.loads(out.read_text())
    assert [r["seed"] for r in rep["seeds"]] == [0, 1]
    for r in rep["seeds"]:
        cov = {p["name"]: p["coverage"] for p in r["probabilistic"]}
        raw = abs(cov["nhits"] - 0.8)
        for cal in ("nhits + split conformal", "nhits + adaptive conformal"):
            assert abs(cov[cal] - 0.8) < min(raw, 0.06), cal
        assert {"random walk", "drift naive", "EWMA Gaussian"} <= set(cov)
    scores = rep["summary"]["scores"]
    assert scores["nhits"]["MAE"]["n"] == 2 and scores["nhits"]["MAE"]["std"] > 0
    assert scores["random walk"]["MAE"]["std"] == 0.0  # baselines do not depend on the seed


def test_gekko_train_stores_split_offsets_that_serving_applies(tmp_path):
    pytest.importorskip("torch")
    from models.serving import load_model
    from ops.cli import main
    from tests.test_train import _no_record_config

    argv = ["train", "--config", _no_record_config(tmp_path), "--source", "random_walk"]
    argv += ["--bars", "900", "--input-size", "16", "--horizon", "2", "--hidden", "16"]
    argv += ["--epochs", "2", "--folds", "0", "--no-progress", "--no-checkpoint"]
    assert main([*argv, "--out", str(tmp_path / "cal")]) == 0
    assert main([*argv, "--out", str(tmp_path / "raw"), "--conformal", "none"]) == 0
    meta = json.loads((tmp_path / "cal" / "meta.json").read_text())
    c = meta["conformal"]
    assert c["method"] == "split" and c["levels"] == [0.1, 0.5, 0.9]
    assert np.asarray(c["offsets"]).shape == (2, 3) and c["n_calibration"] > 100
    assert "--conformal split" in meta["training"]["command"]
    assert "conformal" not in json.loads((tmp_path / "raw" / "meta.json").read_text())
    x = np.random.default_rng(1).standard_normal((5, 16, 5)).astype(np.float32) * 1e-3
    _, q_raw = load_model(tmp_path / "raw").run(x)  # same seed, same data: same weights
    _, q_cal = load_model(tmp_path / "cal").run(x)
    want = np.sort(q_raw + np.asarray(c["offsets"], np.float32), axis=-1)
    assert np.allclose(q_cal, want, atol=1e-7)


def test_the_calibration_plot_shows_each_levels_miss_in_points():
    from ops.eval_report import calibration_chart, render

    rep = {
        "data": "toy",
        "architecture": "m",
        "folds": 2,
        "input_size": 8,
        "horizon": 1,
        "levels": [0.1, 0.9],
        "table": [{"name": "m", "mae": 1.0, "rmse": 1.0, "mase": 1.0, "dir_acc": None, "n": 5}],
        "probabilistic": [
            {"name": "m", "pinball": 1.0, "crps": 1.0, "coverage": 0.5, "nominal": 0.8,
             "width": 1.0, "level_error": 0.25, "observed": [0.35, 0.85]},
        ],
        "dm": [],
    }  # fmt: skip
    svg = calibration_chart([rep])
    assert "τ=0.1 m: +25.00" in svg and "τ=0.9 m: -5.00" in svg
    other = {**rep, "probabilistic": [{**rep["probabilistic"][0], "observed": [0.15, 0.95]}]}
    assert "τ=0.1 m: +15.00" in calibration_chart([rep, other])  # mean over seeds
    assert "25.0 pt" in render([rep])


def test_without_scipy_the_dm_tests_are_skipped_with_a_reason(monkeypatch):
    import models.prob_eval

    monkeypatch.setattr(models.prob_eval, "dm_missing", lambda: "DM skipped: no scipy")
    bars = [generated_bars("random_walk", 600, seed=2)]

    def zero(x: np.ndarray):
        m = x.shape[0]
        return np.zeros((m, 1), np.float32), np.zeros((m, 1, 3), np.float32)

    rep = evaluate_predictor(zero, bars, 8, 1, LEVELS, name="z")
    assert rep.dm == [] and rep.notes == ["DM skipped: no scipy"] and rep.prob
    assert "note: DM skipped: no scipy" in format_report(rep)
