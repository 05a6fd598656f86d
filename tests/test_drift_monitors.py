"""The live monitors fire where they should: error drift (paired z against the model's trained
ratio to naive), band coverage, input drift (PSI vs meta.json feature_stats); the batch replay of
each changes state where bar by bar does; a trained model's meta carries its feature_stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.messages import DriftEvent
from models.drift import CoverageMonitor, DriftMonitor, reference_ratio
from models.features import FEATURES
from models.input_drift import InputDriftMonitor, training_stats
from models.registry import SHIPPED, read_meta
from procs.infer import InferEngine
from tests._onnx_models import write_model
from tests.test_infer import Clock, make_cfg, market


def _feed(m: DriftMonitor, r: np.ndarray, f: np.ndarray) -> list:
    out = []
    for k in range(len(r)):
        m.on_forecast(0, float(f[k]))
        m.on_bar(0, float(r[k]))
        if (st := m.check()) is not None:
            out.append(st)
    return out


def test_error_drift_fires_for_a_skill_less_model_the_ratio_rule_misses() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0, 1e-3, 3000)
    f = rng.normal(0, 5e-4, 3000)  # forecasts with no skill at all: pure noise
    m = DriftMonitor(1, window=500)
    events = _feed(m, r, f)
    mae, naive = m.maes()
    assert mae < naive * 1.2  # the old MAE x 1.2 rule: never fires
    assert events and events[0].drifting and events[0].z > 3.0
    # a model that forecasts the return's sign share of the move: never drifts
    good = DriftMonitor(1, window=500)
    assert _feed(good, r, 0.3 * r) == []


def test_error_drift_is_judged_against_the_models_trained_ratio() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0, 1e-3, 3000)
    f = rng.normal(0, 5e-4, 3000)
    trained_as_bad = DriftMonitor(1, window=500, reference=1.2)  # as bad as it was in training
    assert _feed(trained_as_bad, r, f) == []
    meta = read_meta(SHIPPED)  # older meta: the ratio comes from its metrics table
    assert reference_ratio(meta) == pytest.approx(5.9506499362337866e-05 / 5.818123255015375e-05)
    assert reference_ratio({"metrics": {}}) == 1.0


def _cover(m: CoverageMonitor, r: np.ndarray, half: float) -> list:
    out = []
    s = np.array([0])
    for k in range(len(r)):
        m.on_forecasts(s, np.array([-half]), np.array([half]))
        m.on_bars(s, np.array([r[k]]))
        if (st := m.check()) is not None:
            out.append(st)
    return out


def test_coverage_fires_on_a_narrow_band_not_on_a_calibrated_one() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0, 1.0, 4000)
    ok = CoverageMonitor(1, window=500)
    ok.set_levels([0.1, 0.5, 0.9])
    assert _cover(ok, r, 1.2816) == []  # the true 10-90% band
    assert ok.coverage() == pytest.approx(0.8, abs=0.05)
    narrow = CoverageMonitor(1, window=500)
    narrow.set_levels([0.1, 0.5, 0.9])
    (st,) = _cover(narrow, r, 0.9)  # covers ~63%
    assert st.miscalibrated and st.coverage < 0.75 and st.z < -3
    none = CoverageMonitor(1, window=500)
    none.set_levels([0.5])  # no band: nothing monitored
    assert _cover(none, r, 0.1) == []


def test_coverage_replay_changes_state_where_bar_by_bar_does() -> None:
    rng = np.random.default_rng(4)
    nb, ns = 900, 3
    valid = rng.random((nb, ns)) < 0.9
    ret = rng.normal(0, 1.0, (nb, ns)).astype(np.float32)
    fc_ok = valid & (rng.random((nb, ns)) < 0.9)
    half = np.where(np.arange(nb) % 300 < 150, 1.28, 0.5)[:, None] * np.ones((1, ns))
    lo, hi = -half, half
    ref, mon = CoverageMonitor(ns, window=60), CoverageMonitor(ns, window=60)
    ref.set_levels([0.1, 0.9])
    mon.set_levels([0.1, 0.9])
    want = []
    for b in range(nb):
        ref.on_bars(np.flatnonzero(valid[b]), ret[b, valid[b]])
        f = np.flatnonzero(fc_ok[b])
        ref.on_forecasts(f, lo[b, f], hi[b, f])
        if (st := ref.check()) is not None:
            want.append((b, st))
    got, b = [], 0
    while b < nb:
        b = mon.replay(valid, ret, fc_ok, lo, hi, b)
        if b < nb:
            if (st := mon.check()) is not None:
                got.append((b, st))
            b += 1
    assert got == want and len(want) >= 4
    assert (mon.samples, mon._i, mon.miscalibrated) == (ref.samples, ref._i, ref.miscalibrated)


def _stats(rng: np.random.Generator, n: int = 5000) -> dict:
    x = rng.normal(0, 1, (n, len(FEATURES)))
    return training_stats(x, FEATURES)


def test_input_drift_names_the_shifted_feature() -> None:
    rng = np.random.default_rng(5)
    mon = InputDriftMonitor(window=500, threshold=0.25)
    assert mon.set_stats(_stats(rng), FEATURES) == ""
    same = rng.normal(0, 1, (1500, len(FEATURES))).astype(np.float32)
    for k in range(0, 1500, 3):
        mon.on_rows(same[k : k + 3])
        assert mon.check() is None
    assert mon.psi().max() < 0.1
    shifted = same.copy()
    shifted[:, 2] = shifted[:, 2] * 3 + 1  # log_volume: another regime
    events = []
    for k in range(0, 1500, 3):
        mon.on_rows(shifted[k : k + 3])
        if (st := mon.check()) is not None:
            events.append(st)
    (st,) = events
    assert st.drifting and st.feature == "log_volume" and st.psi > 0.25
    # a meta without statistics (the shipped model's): not monitored, and it says why
    assert "no feature_stats" in mon.set_stats(read_meta(SHIPPED).get("feature_stats"), FEATURES)
    assert not mon.enabled and mon.check() is None


def test_input_drift_replay_changes_state_where_close_by_close_does() -> None:
    rng = np.random.default_rng(6)
    stats = _stats(rng)
    ref, mon = InputDriftMonitor(window=90), InputDriftMonitor(window=90)
    ref.set_stats(stats, FEATURES)
    mon.set_stats(stats, FEATURES)
    per = rng.integers(0, 4, 700)  # rows per close
    ends = np.cumsum(per)
    rows = rng.normal(0, 1, (int(ends[-1]), len(FEATURES))).astype(np.float32)
    close_of_row = np.repeat(np.arange(700), per)
    rows[(close_of_row // 150) % 2 == 1, 0] += 2.0  # shift comes and goes
    want, start = [], 0
    for b in range(700):
        ref.on_rows(rows[start : ends[b]])
        start = int(ends[b])
        if (st := ref.check()) is not None:
            want.append((b, st))
    got, b = [], 0
    while b < 700:
        b = mon.replay(rows, ends, b)
        if b < 700:
            if (st := mon.check()) is not None:
                got.append((b, st))
            b += 1
    assert got == want and len(want) >= 4
    assert np.array_equal(mon._counts, ref._counts) and mon.samples == ref.samples


def test_infer_publishes_an_input_drift_event_for_a_model_trained_elsewhere(
    tmp_path: Path,
) -> None:
    d = write_model(tmp_path / "m", input_size=4)
    cfg = make_cfg(d, every_n_ticks=30, drift_window=40)
    msgs = market(cfg, 6_000)
    # "training" rows: this market's own feature rows, as infer computes them ...
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    rows: list[np.ndarray] = []
    eng.inputs.on_rows = rows.append  # type: ignore[method-assign]
    for m in msgs:
        eng.on_market_data(m)
    x = np.concatenate(rows).astype(np.float64)
    x[:, 2] += 20  # ... but where volume was e^20 times larger
    meta = json.loads((d / "meta.json").read_text())
    meta["feature_stats"] = training_stats(x, FEATURES)
    (d / "meta.json").write_text(json.dumps(meta))
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    evs = [
        e
        for m in msgs
        for e in eng.on_market_data(m)
        if isinstance(e, DriftEvent) and e.kind == "input"
    ]
    assert evs and evs[0].drifting == 1 and evs[0].detail == "log_volume"
    assert evs[0].stat > evs[0].threshold == 0.25


def test_training_writes_feature_stats_into_meta(tmp_path: Path) -> None:
    from ops.cli import main
    from tests.test_train import _no_record_config

    root = tmp_path / "reg"
    args = ["--config", _no_record_config(tmp_path), "--source", "sine", "--bars", "400"]
    args += ["--input-size", "8", "--horizon", "2", "--hidden", "8", "--epochs", "1"]
    assert main(["train", *args, "--folds", "0", "--no-progress", "--root", str(root)]) == 0
    (d,) = [p.parent for p in root.rglob("meta.json")]
    meta = json.loads((d / "meta.json").read_text())
    st = meta["feature_stats"]
    assert st["features"] == list(FEATURES) and st["rows"] > 100
    assert all(abs(sum(s) - 1) < 1e-9 for s in st["shares"])
    assert meta["instruments"] == ["sine"]  # what it was trained on (models/guardrails.py)
    mon = InputDriftMonitor()
    assert mon.set_stats(st, FEATURES) == "" and mon.enabled


def test_backtest_overlay_leaves_every_monitor_as_the_live_engine_does(tmp_path: Path) -> None:
    from procs.infer import ForecastOverlay

    d = write_model(tmp_path / "m", input_size=4, band=0.0004)
    meta = json.loads((d / "meta.json").read_text())
    meta["feature_stats"] = _stats(np.random.default_rng(8))
    (d / "meta.json").write_text(json.dumps(meta))
    cfg = make_cfg(d, every_n_ticks=40, drift_window=30)
    msgs = market(cfg, 8_000)
    live = InferEngine(cfg, clock=Clock())
    live.poll_model()
    for m in msgs:
        live.on_market_data(m)
    ov = ForecastOverlay(cfg)
    for k in range(0, len(msgs), 1000):
        ov.on_messages(msgs[k : k + 1000])
    eng = ov.eng
    assert live.inputs.enabled and live.inputs.samples == eng.inputs.samples == 30
    assert np.array_equal(live.inputs._counts, eng.inputs._counts)
    assert live.inputs.drifting == eng.inputs.drifting
    assert live.coverage.samples == eng.coverage.samples == 30
    assert np.array_equal(live.coverage._hits, eng.coverage._hits)
    assert live.coverage.miscalibrated == eng.coverage.miscalibrated
    assert live.drift.samples == eng.drift.samples and live.drift.drifting == eng.drift.drifting


def test_an_old_drift_event_frame_decodes_as_an_error_event() -> None:
    import msgspec

    from engine.codec import MESSAGE_DECODER

    e = DriftEvent("v", 1, 0.2, 0.1, 0.0, 500, 9, "input", 0.4, 0.25, "ret")
    # the frame as it was: the tag, then the first 7 fields
    old = msgspec.msgpack.encode(msgspec.msgpack.decode(msgspec.msgpack.encode(e))[:8])
    g = MESSAGE_DECODER.decode(old)
    assert isinstance(g, DriftEvent) and (g.kind, g.stat, g.detail) == ("error", 0.0, "")
    assert MESSAGE_DECODER.decode(msgspec.msgpack.encode(e)) == e
