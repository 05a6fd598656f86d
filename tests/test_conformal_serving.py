"""Adaptive conformal bands in serving (``[inference] conformal = "adaptive"``): the infer
engine's bands are models/conformal.py's ``OnlineAdaptive`` on the same outcomes, per
instrument; the backtest batch path gives the same forecasts; "fixed" is unchanged; a volatility
regime change that takes the fixed band off nominal is corrected; bad settings are refused."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.messages import Forecast, Quote
from models.conformal import OnlineAdaptive, fit_split, residuals_from_meta
from ops.config import ConfigError
from procs.build import build_market
from procs.infer import ForecastOverlay, InferEngine, with_forecasts
from tests._onnx_models import write_model
from tests.test_infer import Clock, make_cfg, market
from tests.test_infer_batch import one_by_one

LEVELS = (0.1, 0.5, 0.9)
BAR = 0.004  # seconds: the synthetic market closes ~110 bars per 10,000 messages


def cfg_for(d: Path, **inference: Any) -> Any:
    return make_cfg(d, bar_seconds=BAR, **inference)


def calibrated_model(
    d: Path, sigma: float, n_cal: int = 300, band: float = 0.02, **kw: Any
) -> Path:
    """A tiny model (tests/_onnx_models) whose meta.json carries split offsets and the
    calibration residuals behind them, fitted on N(0, sigma) one-bar returns."""
    write_model(d, band=band, **{"bar_seconds": BAR, **kw})
    meta = json.loads((d / "meta.json").read_text())
    H = meta["horizon"]
    rng = np.random.default_rng(11)
    y = rng.normal(0.0, sigma, (n_cal, H))
    q = np.broadcast_to(np.array([(t - 0.5) * band for t in LEVELS]), (n_cal, H, 3))
    q = q + kw.get("bias", 0.0)
    meta["conformal"] = fit_split(y, q, LEVELS, source="test").to_meta()
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def serve(cfg: Any, msgs: list[Any]) -> tuple[InferEngine, list[Forecast], list[np.ndarray]]:
    """Event by event through InferEngine; also each close's (valid, returns) the engine saw
    and, as a third column, how many forecasts that close made."""
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    seen: list[np.ndarray] = []
    push = eng.windows.push_all  # type: ignore[union-attr]

    def record(valid, *cols):  # type: ignore[no-untyped-def]
        rows = push(valid, *cols)
        seen.append(np.c_[valid.astype(np.float64), rows[:, 0].astype(np.float64), 0 * valid])
        return rows

    eng.windows.push_all = record  # type: ignore[union-attr,method-assign]
    out: list[Forecast] = []
    for m in msgs:
        before = len(seen)
        fcs = [f for f in eng.on_market_data(m) if isinstance(f, Forecast)]
        if fcs:
            assert len(seen) == before + 1  # one close made them
            seen[-1][:, 2] = len(fcs)
        out += fcs
    return eng, out, seen


def test_served_bands_are_online_adaptive_on_the_same_outcomes_per_instrument(tmp_path):
    d = calibrated_model(tmp_path / "m", sigma=2e-4, input_size=8, scale=2.0, bias=1e-5)
    raw_dir = write_model(tmp_path / "raw", input_size=8, scale=2.0, bias=1e-5, bar_seconds=BAR)
    cfg = cfg_for(d, conformal="adaptive", conformal_gamma=0.05)
    msgs = market(cfg, 20_000)
    eng, got, seen = serve(cfg, msgs)
    _, raw, _ = serve(cfg_for(raw_dir), msgs)  # the same model's uncalibrated bands
    assert len(got) == len(raw) > 200
    meta = json.loads((d / "meta.json").read_text())
    resid = residuals_from_meta(meta, 3, LEVELS)
    assert resid is not None and resid.shape == (300, 3, 3)
    ref = {iid: OnlineAdaptive(LEVELS, resid, gamma=0.05) for iid in eng.iids}
    k = 0
    for vr in seen:
        for s, iid in enumerate(eng.iids):
            if vr[s, 0]:
                ref[iid].observe(vr[s, 1])
        for _ in range(int(vr[0, 2])):
            f, r = got[k], raw[k]
            assert f.instrument_id == r.instrument_id and f.point == r.point
            want = ref[f.instrument_id].calibrate(np.array(r.quantiles, dtype=np.float64).T)
            assert np.array_equal(
                np.array(f.quantiles, dtype=np.float32).T, want.astype(np.float32)
            )
            k += 1
    assert k == len(got)
    moved = [
        not np.allclose(eng.aci.offsets(s), ref[iid].offsets()) for s, iid in enumerate(eng.iids)
    ]  # type: ignore[union-attr]
    assert not any(moved)  # the engine's state is the reference's, instrument by instrument
    assert not np.allclose(ref[eng.iids[0]].offsets(), ref[eng.iids[1]].offsets())
    start = OnlineAdaptive(LEVELS, resid).offsets()  # before any outcome: the train-time offsets
    assert np.allclose(start, meta["conformal"]["offsets"], atol=1e-6)


def test_fixed_mode_serves_what_it_served_before(tmp_path):
    d = calibrated_model(tmp_path / "m", sigma=2e-4, input_size=8, scale=2.0)
    old = calibrated_model(tmp_path / "old", sigma=2e-4, input_size=8, scale=2.0)
    meta = json.loads((old / "meta.json").read_text())
    del meta["conformal"]["residuals"]  # a model from before residuals were stored
    (old / "meta.json").write_text(json.dumps(meta))
    cfg = cfg_for(d)
    assert cfg.inference.conformal == "fixed"
    msgs = market(cfg, 8_000)
    eng, got, _ = serve(cfg, msgs)
    _, before, _ = serve(cfg_for(old), msgs)
    assert eng.aci is None and len(got) > 100
    assert [(f.instrument_id, f.point, f.quantiles) for f in got] == [
        (f.instrument_id, f.point, f.quantiles) for f in before
    ]
    # the fixed offsets are applied: not the raw model's band
    _, raw, _ = serve(
        cfg_for(write_model(tmp_path / "raw", input_size=8, scale=2.0, bar_seconds=BAR)), msgs
    )
    assert got[0].quantiles != raw[0].quantiles


def test_a_model_without_residuals_serves_fixed_offsets_in_adaptive_mode(tmp_path, caplog):
    d = write_model(tmp_path / "m", input_size=8, bar_seconds=BAR)
    with caplog.at_level(logging.WARNING, "gekko.models.serving"):
        eng, got, _ = serve(cfg_for(d, conformal="adaptive"), market(cfg_for(d), 3_000))
    assert eng.aci is None and got
    assert "has no calibration residuals" in caplog.text


@pytest.mark.parametrize("bars", ["time", "ticks"])
def test_the_backtest_batch_path_gives_the_live_adaptive_forecasts(tmp_path, bars):
    d = calibrated_model(tmp_path / "m", sigma=1e-4, input_size=4, scale=3.0)
    extra = {"every_n_ticks": 50} if bars == "ticks" else {"bar_seconds": BAR}
    cfg = make_cfg(d, conformal="adaptive", conformal_gamma=0.05, mismatch="warn", **extra)
    msgs = list(itertools.islice(build_market(cfg), 30_000))
    engs: list[Any] = []
    want = list(one_by_one(cfg, msgs, engs))
    ForecastOverlay.READ_AHEAD = 1000  # many read-ahead batches, bars across their edges
    try:
        got = list(with_forecasts(cfg, iter(msgs)))
    finally:
        ForecastOverlay.READ_AHEAD = 8192
    assert sum(isinstance(m, Forecast) for m in want) > 300
    assert got == want
    fixed = list(one_by_one(make_cfg(d, mismatch="warn", **extra), msgs))
    assert [m for m in fixed if isinstance(m, Forecast)] != [
        m for m in want if isinstance(m, Forecast)
    ]  # the adaptation did move the bands
    assert engs[0].aci.hits.sum(axis=0)[0] > 300  # type: ignore[union-attr]


def regime_quotes(iid: int, n_calm: int, n_wild: int, sigma: float, bar_ns: int):
    """One quote per bar: log mid returns N(0, sigma), then N(0, 3 sigma)."""
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, sigma, n_calm + n_wild)
    r[n_calm:] *= 3.0
    mid = 1e7 * np.exp(np.cumsum(r))
    msgs = []
    for i, m in enumerate(mid):
        px = int(round(m))
        t = 10**15 + i * bar_ns + bar_ns // 2
        msgs.append(Quote(iid, px - 1, 10, px + 1, 10, t, t))
    return msgs, np.log(np.round(mid))


def test_a_volatility_regime_change_is_corrected_by_the_adaptive_band(tmp_path, caplog):
    sigma = 1e-3
    d = calibrated_model(tmp_path / "m", sigma=sigma, input_size=8, scale=0.0, band=0.002)
    msgs, logmid = regime_quotes(1, 300, 4000, sigma, int(BAR * 1e9))
    out = {}
    caplog.set_level(logging.INFO, "gekko.infer")
    for mode in ("fixed", "adaptive"):
        cfg = cfg_for(d, conformal=mode, conformal_gamma=0.02, instruments=["AAPL"])
        eng = InferEngine(cfg, clock=Clock())
        eng.poll_model()
        hits = []
        for i, m in enumerate(msgs[:-1]):
            for f in eng.on_market_data(m):
                if isinstance(f, Forecast):
                    # issued at the close of the bar of quote i - 1; its step 1 is quote i's bar
                    y = logmid[i] - logmid[i - 1]
                    hits.append((i, f.quantiles[0][0] <= y <= f.quantiles[-1][0]))
        wild = np.array([h for i, h in hits if i >= 300 + 1000])
        out[mode] = (wild.mean(), eng)
    fixed, adaptive = out["fixed"][0], out["adaptive"][0]
    assert fixed < 0.5  # calibrated on the calm block: the wild block falls out of the band
    assert adaptive == pytest.approx(0.8, abs=0.03)
    served, counterfactual, n = out["adaptive"][1].aci.coverage()
    assert n > 4000 and counterfactual < 0.5 and served > counterfactual + 0.25
    # the live report: every drift_window outcomes, the served band beside the fixed one's
    lines = [r.getMessage() for r in caplog.records if "adaptive bands" in r.getMessage()]
    assert len(lines) == n // cfg.inference.drift_window
    last = [float(v) for v in re.findall(r"(?:coverage|offsets:) (\d\.\d+)", lines[-1])]
    assert last[0] == pytest.approx(0.8, abs=0.06) and last[1] < 0.5


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("conformal", '"magic"', 'must be "fixed" or "adaptive"'),
        ("conformal_gamma", "0.0", "must be within"),
        ("conformal_gamma", "1.5", "must be within"),
        ("conformal_gamma", "nan", "must be within"),
    ],
)
def test_bad_conformal_settings_are_refused(key, value, why):
    from ops.config import parse_config
    from tests.conftest import ROOT

    text = (ROOT / "config.toml").read_text()
    a = text.index(f"\n{key} = ") + 1
    b = text.index("\n", a)
    with pytest.raises(ConfigError, match=why) as exc:
        parse_config(text[:a] + f"{key} = {value}" + text[b:])
    assert f"inference.{key}" in str(exc.value)


def test_stored_residuals_that_do_not_fit_the_model_refuse_it(tmp_path):
    from models.serving import ModelError, load_model

    d = calibrated_model(tmp_path / "m", sigma=1e-3)
    meta = json.loads((d / "meta.json").read_text())
    meta["conformal"]["residuals"] = [[[0.0, 0.0]] * 3]  # two levels for a three-level model
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="residuals must have shape"):
        load_model(d)
