"""models: features (one definition, vectorised == streaming), scaling, windows, splits,
model shapes, registry. Fast: no training here (tests/test_train.py trains)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.data import (
    Bars,
    data_sha256,
    final_split,
    generated_bars,
    load_table,
    make_windows,
    walk_forward,
)
from models.features import (
    FEATURES,
    NS_PER_DAY,
    FeatureStats,
    compute_features,
    feature_row,
)
from models.registry import (
    RegistryError,
    list_models,
    next_version,
    read_meta,
    verify_onnx_hash,
    write_meta,
)
from models.scaling import Scaler

# --- features ---------------------------------------------------------------------------------


def test_feature_values_follow_the_contract():
    ts = (
        np.array([0, 6 * 3600, 12 * 3600, 18 * 3600], dtype=np.int64) * 1_000_000_000
        + 5 * NS_PER_DAY
    )
    close = np.array([100.0, 110.0, 99.0, 99.0])
    high = close * 1.02
    low = close * 0.99
    vol = np.array([0.0, 10.0, 1e6, 3.0])
    f = compute_features(close, high, low, close, vol, ts)
    assert f.dtype == np.float32 and f.shape == (4, len(FEATURES))
    assert f[0, 0] == 0.0  # first bar has no previous close
    assert f[1, 0] == pytest.approx(math.log(110 / 100), rel=1e-6)
    assert f[2, 0] == pytest.approx(math.log(99 / 110), rel=1e-6)
    assert f[3, 0] == 0.0
    assert np.allclose(f[:, 1], math.log(1.02 / 0.99), rtol=1e-6)
    assert np.allclose(f[:, 2], np.log1p(vol), rtol=1e-6)
    # time of day: 00:00, 06:00, 12:00, 18:00 UTC
    assert np.allclose(f[:, 3], [0, 1, 0, -1], atol=1e-6)
    assert np.allclose(f[:, 4], [1, 0, -1, 0], atol=1e-6)


def test_invalid_bars_give_no_nan_and_are_counted():
    c = np.array([100.0, -1.0, np.nan, 100.0, 101.0, np.inf])
    h = np.array([101.0, 101.0, 101.0, np.nan, 100.0, 102.0])  # bar 4: high < low
    lo = np.array([99.0, 99.0, 99.0, 99.0, 101.5, 0.0])
    v = np.array([1.0, -5.0, np.nan, 1.0, 1.0, np.inf])
    stats = FeatureStats()
    f = compute_features(c, h, lo, c, v, np.arange(6, dtype=np.int64), stats)
    assert np.isfinite(f).all()
    assert stats.bad_close == 3 and stats.bad_range == 3 and stats.bad_volume == 3
    # a return needs two valid closes: bars 1, 2, 3 (prev invalid), 5 are zero
    assert f[1, 0] == f[2, 0] == f[3, 0] == f[5, 0] == 0.0
    assert f[4, 0] == pytest.approx(math.log(101 / 100), rel=1e-6)


def test_mismatched_columns_are_refused():
    with pytest.raises(ValueError, match="same length"):
        compute_features(np.ones(3), np.ones(3), np.ones(2), np.ones(3), np.ones(3), np.zeros(3))


prices = st.one_of(
    st.floats(1e-3, 1e6, allow_nan=False),
    st.sampled_from([0.0, -1.0, float("nan"), float("inf")]),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(prices, prices, prices, st.one_of(st.floats(-10, 1e9), st.just(np.nan))),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 2**62),
)
def test_streaming_rows_equal_vectorised_rows(bars, t0):
    """The per-bar twin (used by streaming windows) must produce bit-identical rows."""
    h = np.array([b[0] for b in bars])
    lo = np.array([b[1] for b in bars])
    c = np.array([b[2] for b in bars])
    v = np.array([b[3] for b in bars])
    ts = t0 + np.arange(len(bars), dtype=np.int64) * 61_000_000_123
    full = compute_features(c, h, lo, c, v, ts)
    prev = float("nan")
    for i in range(len(bars)):
        row = feature_row(prev, h[i], lo[i], c[i], v[i], int(ts[i]))
        assert np.array_equal(row, full[i]), (i, row, full[i])
        prev = c[i]
    assert np.isfinite(full).all()


# --- scaling ----------------------------------------------------------------------------------


def test_scalers():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(3, 2, 20000), np.full(20000, 7.0), rng.standard_t(2, 20000)], 1)
    std = Scaler.fit(x, "standard")
    rob = Scaler.fit(x, "robust")
    assert std.center[0] == pytest.approx(3, abs=0.05) and std.scale[0] == pytest.approx(
        2, rel=0.03
    )
    assert rob.center[0] == pytest.approx(3, abs=0.05) and rob.scale[0] == pytest.approx(
        2, rel=0.05
    )
    assert std.scale[1] == 1.0 and rob.scale[1] == 1.0  # constant column: never divide by 0
    assert rob.scale[2] < std.scale[2]  # heavy tails: the robust scale ignores the outliers
    z = rob.transform(x)
    assert np.isfinite(z).all() and np.allclose(z[:, 1], 0.0)
    assert Scaler.from_dict(rob.to_dict()) == rob
    with pytest.raises(ValueError):
        Scaler.fit(x, "minmax")


# --- windows and splits -----------------------------------------------------------------------


def test_windows_line_up_inputs_and_targets():
    n, L, H = 50, 8, 3
    feats = np.arange(n * 5, dtype=np.float32).reshape(n, 5)
    x, y = make_windows(feats, L, H)
    assert x.shape == (n - L - H + 1, L, 5) and y.shape == (n - L - H + 1, H)
    for i in (0, 17, len(x) - 1):
        assert np.array_equal(x[i], feats[i : i + L])
        assert np.array_equal(y[i], feats[i + L : i + L + H, 0])
    x0, y0 = make_windows(feats[:5], L, H)
    assert x0.shape == (0, L, 5) and y0.shape == (0, H)


def test_walk_forward_folds_are_ordered_and_purged():
    H = 4
    folds = walk_forward(1000, 3, H)
    assert len(folds) == 3
    tests = [f.test for f in folds]
    assert tests[0][0] == 600 and tests[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(tests, tests[1:], strict=False))  # contiguous
    for f in folds:
        # window i's targets are bars i+L .. i+L+H-1: a gap of H windows keeps them disjoint
        assert f.train[0] == 0 and f.train[1] + H <= f.val[0]
        assert f.val[1] + H <= f.test[0]
        assert f.val[1] > f.val[0]
    assert folds[1].train[1] > folds[0].train[1]  # expanding
    with pytest.raises(ValueError, match="not enough windows"):
        walk_forward(12, 3, H)
    fs = final_split(100, H)
    assert fs.train[1] + H == fs.val[0] and fs.val[1] == 100


def test_generated_bars_are_seeded_and_valid():
    a = generated_bars("sine", 500, seed=3)
    b = generated_bars("sine", 500, seed=3)
    c = generated_bars("random_walk", 500, seed=3)
    assert data_sha256([a]) == data_sha256([b]) != data_sha256([c])
    assert (a.high >= np.maximum(a.open, a.close)).all() and (
        a.low <= np.minimum(a.open, a.close)
    ).all()
    assert a.bar_seconds() == 60
    with pytest.raises(ValueError):
        generated_bars("lunar", 10)


def test_load_table_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "bars.csv"
    csv.write_text(
        "Datetime,Open,High,Low,Close,Volume,Symbol\n"
        "2021-09-27 14:45:00+01:00,1,2,0.5,1.5,10,A\n"
        "2021-09-27 14:30:00+01:00,1,2,0.5,1.2,10,A\n"
        "2021-09-27 14:30:00+01:00,1,2,0.5,1.0,10,B\n"
    )
    series = load_table(csv)
    assert [s.symbol for s in series] == ["A", "B"]
    a = series[0]
    assert len(a) == 2 and a.close.tolist() == [1.2, 1.5]  # sorted by time
    assert a.ts_ns[0] == np.datetime64("2021-09-27T13:30:00", "ns").astype(np.int64)
    pq.write_table(
        pa.table(
            {
                "ts": [3, 1, 2],
                "open": [1.0] * 3,
                "high": [2.0] * 3,
                "low": [0.5] * 3,
                "close": [1.0, 1.1, 1.2],
            }
        ),
        tmp_path / "b.parquet",
    )
    (p,) = load_table(tmp_path / "b.parquet")
    assert p.ts_ns.tolist() == [1_000_000_000, 2_000_000_000, 3_000_000_000]  # seconds -> ns
    assert p.volume.tolist() == [0.0, 0.0, 0.0]
    exact = tmp_path / "ns.csv"
    exact.write_text("ts_ns,open,high,low,close\n1700000000123456789,1,1,1,1\n5,1,1,1,1\n")
    (e,) = load_table(exact)
    assert e.ts_ns.tolist() == [5, 1700000000123456789]  # exact, even past 2**53
    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n1,2\n")
    with pytest.raises(ValueError, match="need columns"):
        load_table(bad)
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "missing.csv")


# --- model shapes (torch) ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["nhits", "nbeatsx"])
@pytest.mark.parametrize(
    "L,H,quantiles", [(16, 4, (0.1, 0.5, 0.9)), (7, 1, (0.5,)), (30, 5, (0.05, 0.25, 0.75, 0.95))]
)
def test_model_shapes_and_monotone_quantiles(arch, L, H, quantiles):
    torch = pytest.importorskip("torch")
    from models.train import TrainConfig, build_model

    cfg = TrainConfig(architecture=arch, input_size=L, horizon=H, quantiles=quantiles)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (11, L, len(FEATURES))).astype(np.float32)
    model = build_model(cfg, Scaler.fit(x, "robust")).eval()
    with torch.no_grad():
        point, q = model(torch.from_numpy(x))
    assert point.shape == (11, H) and q.shape == (11, H, len(quantiles))
    assert torch.isfinite(point).all() and torch.isfinite(q).all()
    assert (q[:, :, 1:] >= q[:, :, :-1]).all()  # quantiles never cross


def test_scaling_is_inside_the_model():
    """Shifting and stretching the raw target feature and the scaler together leaves the
    forecast in scaled units unchanged: the model consumes raw features."""
    torch = pytest.importorskip("torch")
    from models.train import TrainConfig, build_model

    cfg = TrainConfig(architecture="nhits", input_size=8, horizon=2)
    x = np.random.default_rng(1).normal(0, 1, (4, 8, 5)).astype(np.float32)
    s1 = Scaler("standard", (0.0,) * 5, (1.0,) * 5)
    s2 = Scaler("standard", (5.0, 0, 0, 0, 0), (3.0, 1, 1, 1, 1))
    torch.manual_seed(0)
    m1 = build_model(cfg, s1).eval()
    m2 = build_model(cfg, s2).eval()
    m2.core.load_state_dict(m1.core.state_dict())
    x2 = x.copy()
    x2[:, :, 0] = x[:, :, 0] * 3.0 + 5.0
    with torch.no_grad():
        p1, q1 = m1(torch.from_numpy(x))
        p2, q2 = m2(torch.from_numpy(x2))
    assert torch.allclose(p2, p1 * 3.0 + 5.0, atol=1e-4)
    assert torch.allclose(q2, q1 * 3.0 + 5.0, atol=1e-4)


# --- registry ---------------------------------------------------------------------------------


def _meta(**kw):
    m = {
        "format": 1,
        "name": "m",
        "version": "v1",
        "architecture": "nhits",
        "features": list(FEATURES),
        "target": "ret",
        "input_size": 8,
        "horizon": 2,
        "quantiles": [0.1, 0.9],
        "bar_seconds": 60,
        "scaler": {"kind": "robust", "in_graph": True},
        "hyperparameters": {},
        "training": {"data": "x"},
        "metrics": {},
        "onnx_sha256": "0",
        "created": "2026-01-01T00:00:00+00:00",
    }
    m.update(kw)
    return m


def test_registry_versions_meta_and_listing(tmp_path):
    root = tmp_path / "models"
    assert next_version(root, "m") == "v1"
    for v in ("v1", "v2", "v10"):
        d = root / "m" / v
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"onnx" + v.encode())
        from models.registry import file_sha256

        write_meta(d, _meta(version=v, onnx_sha256=file_sha256(d / "model.onnx")))
    assert next_version(root, "m") == "v11"
    meta = read_meta(root / "m" / "v2")
    assert meta["version"] == "v2"
    verify_onnx_hash(root / "m" / "v2", meta)
    (root / "m" / "v2" / "model.onnx").write_bytes(b"trunc")
    with pytest.raises(RegistryError, match="sha256"):
        verify_onnx_hash(root / "m" / "v2", meta)
    rows = list_models(root, include_shipped=False)
    assert sorted(r["version"] for r in rows) == ["v1", "v10", "v2"]
    (root / "m" / "v1" / "meta.json").write_text("{not json")
    rows = list_models(root, include_shipped=False)
    assert any("error" in r for r in rows)
    with pytest.raises(RegistryError, match="lacks"):
        write_meta(tmp_path, {"format": 1})
    with pytest.raises(RegistryError):
        next_version(root, "../escape")
    (tmp_path / "meta.json").write_text(json.dumps(_meta(format=2)))
    with pytest.raises(RegistryError, match="format"):
        read_meta(tmp_path)


def test_shipped_model_is_listed_and_consistent():
    from models.registry import SHIPPED

    if not (SHIPPED / "meta.json").exists():
        pytest.fail("models/shipped/default is missing")
    meta = read_meta(SHIPPED)
    verify_onnx_hash(SHIPPED, meta)
    assert meta["features"] == list(FEATURES) and meta["target"] == "ret"
    assert meta["scaler"]["in_graph"] is True
    assert meta["training"]["command"].startswith("gekko train")
    assert (SHIPPED / "model.onnx").stat().st_size < 1_000_000
    assert list_models("/nonexistent")[0]["path"] == str(SHIPPED)


def test_bars_len():
    b = Bars("x", *(np.zeros(3) for _ in range(6)))
    assert len(b) == 3 and b.bar_seconds() == 0


def test_runtime_paths_work_without_torch(tmp_path):
    """The engine's side of models (features, data, registry, evaluation of an exported model,
    `gekko models list`, `gekko eval --model`) must not need torch: it is only in the extras."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from ops.cli import main\n"
        "import models.features, models.data, models.registry, models.evaluate\n"
        "assert main(['models', 'list']) == 0\n"
        "rc = main(['eval', '--source', 'sine', '--bars', '600', '--model',\n"
        "           'models/shipped/default'])\n"
        "assert rc == 0, rc\n"
        "assert sys.modules['torch'] is None\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from models.registry import SHIPPED

    shipped = read_meta(SHIPPED)["version"]  # the row is named after the shipped version
    assert f"| nhits {shipped}" in r.stdout and "| random walk" in r.stdout


def test_sub_second_bars_keep_their_length():
    """Bars recorded from the demo (0.2 s) must not read as 0 s: infer would serve wrong bars."""
    ts = (np.arange(50) * 200_000_000).astype(np.int64)
    b = Bars("x", ts, *(np.ones(50) for _ in range(5)))
    assert b.bar_seconds() == pytest.approx(0.2)
    from models.evaluate import default_season

    assert default_season(b.bar_seconds(), 50) == 1  # under two days of bars: persistence
    assert default_season(0.2, 2 * 432_000) == 432_000  # bars per day at 0.2 s
