"""Forecasts in backtests, batched across bar closes (procs.infer_batch, ForecastOverlay): every
batch step equals its event-by-event twin, and ``with_forecasts`` yields exactly the sequence
the event-by-event ``InferEngine`` gives (the path it had before it was batched)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.bars import BarAggregator, ClosedBars
from engine.md_columns import from_messages, to_messages
from engine.messages import BookDelta, BookSnapshot, Forecast, Quote, Trade
from models.drift import DriftMonitor
from models.windows import FeatureWindows
from procs.build import build_market
from procs.infer import ForecastOverlay, InferEngine, with_forecasts
from tests._onnx_models import write_model
from tests.conftest import ROOT
from tests.test_infer import make_cfg

SHIPPED = ROOT / "models" / "shipped" / "default"


def one_by_one(cfg: Any, source: Iterable[Any], eng_out: list[Any] | None = None) -> Iterator[Any]:
    """``with_forecasts`` as it was before batching: one ``on_market_data`` per message."""
    now = [0]
    eng = InferEngine(cfg, clock=lambda: now[0])
    eng.poll_model()
    if eng_out is not None:
        eng_out.append(eng)
    for msg in source:
        yield msg
        ts = getattr(msg, "ts_event", None)
        if ts is None:
            continue
        now[0] = ts
        for f in eng.on_market_data(msg, ts_recv=ts):
            if isinstance(f, Forecast):
                f.ts_recv = ts
                yield f


def events(n: int, slots: int, seed: int, step_ns: int) -> tuple[np.ndarray, ...]:
    """Random events: times with quiet spells, slots (-1: none), mids (NaN: no price), lots."""
    rng = np.random.default_rng(seed)
    gaps = rng.integers(0, step_ns, n)
    gaps[rng.random(n) < 0.02] *= 200  # long silences (skipped past max_gap_bars)
    ts = 10**15 + np.cumsum(gaps)
    slot = rng.integers(-1, slots, n)
    mid = np.round(rng.normal(1000, 5, n) * 2) / 2
    mid[rng.random(n) < 0.5] = np.nan
    mid[np.arange(n) < n // 10] = np.where(slot[: n // 10] == 0, np.nan, mid[: n // 10])
    qty = np.where(rng.random(n) < 0.3, rng.integers(0, 5, n), 0).astype(np.float64)
    return ts, slot, mid, qty


@pytest.mark.parametrize(("bar_ns", "every_n"), [(1000, 0), (0, 7)])
def test_feed_closes_the_bars_event_by_event_closes(bar_ns: int, every_n: int) -> None:
    ts, slot, mid, qty = events(5000, 3, seed=1, step_ns=300)
    ref = BarAggregator(3, bar_ns=bar_ns, every_n_ticks=every_n, max_gap_bars=5)
    want = []
    for i in range(len(ts)):
        t = int(ts[i])
        for _ in range(ref.due(t)):
            ref.close_bar()
            want.append((i, ref.closed_start_ns, ref.closed_end_ns, ref.open.copy(),
                         ref.high.copy(), ref.low.copy(), ref.close.copy(),
                         ref.volume.copy(), ref.valid.copy()))  # fmt: skip
        s = int(slot[i])
        if s >= 0:
            if not np.isnan(mid[i]):
                ref.price(s, float(mid[i]))
            ref.on_trade(s, qty[i])
        if ref.tick(t):
            ref.close_bar(t)
            want.append((i, ref.closed_start_ns, ref.closed_end_ns, ref.open.copy(),
                         ref.high.copy(), ref.low.copy(), ref.close.copy(),
                         ref.volume.copy(), ref.valid.copy()))  # fmt: skip
    agg = BarAggregator(3, bar_ns=bar_ns, every_n_ticks=every_n, max_gap_bars=5)
    out = ClosedBars.alloc(7, 3)  # small: feed stops when it is full and goes on from there
    got, i = [], 0
    while i < len(ts):
        i = agg.feed(ts, slot, mid, qty, out, i)
        for k in range(out.n):
            cols = (out.open, out.high, out.low, out.close, out.volume, out.valid)
            got.append((int(out.at[k]), int(out.start_ns[k]), int(out.end_ns[k]),
                        *(c[k].copy() for c in cols)))  # fmt: skip
    assert len(got) == len(want) > 100
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3]
        for a, b in zip(g[3:], w[3:], strict=True):
            np.testing.assert_array_equal(a, b)
    assert (agg.start_ns, agg._ticks, agg.bars_closed) == (ref.start_ns, ref._ticks, len(want))
    np.testing.assert_array_equal(agg.close, ref.close)


def test_push_bars_leaves_the_windows_push_all_leaves() -> None:
    rng = np.random.default_rng(2)
    nb, ns, cap = 40, 4, 6
    valid = rng.random((nb, ns)) < 0.8
    valid[:10, 1] = False  # a slot that has no bar for a while
    close = np.where(valid, rng.normal(100, 1, (nb, ns)), np.nan)
    high, low = close + rng.random((nb, ns)), close - rng.random((nb, ns))
    low[3, 2] = high[3, 2] + 1  # a bad range: replaced, the same way in both
    vol = rng.integers(0, 50, (nb, ns)).astype(np.float64)
    ts = 10**15 + np.arange(nb) * 10**9
    ref, win = FeatureWindows(ns, cap), FeatureWindows(ns, cap)
    for b in range(3):  # some history first, both ways
        for w in (ref, win):
            w.push_all(valid[b], high[b], low[b], close[b], vol[b], int(ts[b]))
    pushed = win.push_bars(valid[3:], high[3:], low[3:], close[3:], vol[3:], ts[3:])
    for b in range(3, nb):
        rows = ref.push_all(valid[b], high[b], low[b], close[b], vol[b], int(ts[b]))
        np.testing.assert_array_equal(pushed.count[b - 3], ref.count)
        ok = np.flatnonzero(valid[b])
        np.testing.assert_array_equal(pushed.ret[b - 3, ok], rows[ok, 0])
        ready = np.flatnonzero(ref.count >= 4)
        np.testing.assert_array_equal(
            pushed.gather(np.full(len(ready), b - 3), ready, 4), ref.gather(ready, 4)
        )
    np.testing.assert_array_equal(win.count, ref.count)
    np.testing.assert_array_equal(win._prev_close, ref._prev_close)
    np.testing.assert_array_equal(win.gather(np.arange(ns), cap), ref.gather(np.arange(ns), cap))


def test_drift_replay_changes_state_where_bar_by_bar_does() -> None:
    rng = np.random.default_rng(3)
    nb, ns = 600, 3
    valid = rng.random((nb, ns)) < 0.9
    ret = rng.normal(0, 1e-4, (nb, ns)).astype(np.float32)
    fc_ok = valid & (rng.random((nb, ns)) < 0.9)
    noise = np.where(np.arange(nb) % 200 < 100, 3e-4, 1e-6)[:, None]  # drift comes and goes
    fc = (ret.astype(np.float64) + rng.normal(0, 1, (nb, ns)) * noise).astype(np.float32)
    ref, mon = DriftMonitor(ns, window=30, margin=0.2), DriftMonitor(ns, window=30, margin=0.2)
    want = []
    for b in range(nb):
        s = np.flatnonzero(valid[b])
        ref.on_bars(s, ret[b, s])
        f = np.flatnonzero(fc_ok[b])
        ref.on_forecasts(f, fc[b, f])
        st = ref.check()
        if st is not None:
            want.append((b, st))
    got, b = [], 0
    while b < nb:
        b = mon.replay(valid, ret, fc_ok, fc.astype(np.float64), b)
        if b < nb:
            st = mon.check()
            if st is not None:
                got.append((b, st))
            b += 1
    assert got == want and len(want) >= 4
    assert (mon.samples, mon._i, mon.drifting) == (ref.samples, ref._i, ref.drifting)


def test_batched_model_calls_equal_one_window_at_a_time() -> None:
    """The model over 1,000 real windows in one call and one call per window: equal within
    1e-6 (absolute, on returns of ~1e-4; bit for bit on onnxruntime's CPU provider here)."""
    # the shipped 0.2 s model on much shorter bars (many bars quickly): served with a warning
    cfg = make_cfg(SHIPPED, bar_seconds=0.005, mismatch="warn")
    eng = InferEngine(cfg)
    eng.poll_model()
    model = eng.model
    win = FeatureWindows(3, model.input_size)
    bars = BarAggregator(3, bar_ns=5_000_000)
    xs = []
    for msg in itertools.islice(build_market(cfg), 40_000):
        for _ in range(bars.due(msg.ts_event)):
            bars.close_bar()
            win.push_all(bars.valid, bars.high, bars.low, bars.close, bars.volume, 0)
            ready = np.flatnonzero(win.count >= model.input_size)
            xs.append(win.gather(ready, model.input_size).copy())
        if isinstance(msg, Quote):
            bars.on_quote(eng.slot_of[msg.instrument_id], msg.bid_px, msg.ask_px)
    x = np.ascontiguousarray(np.concatenate(xs)[:1000])
    assert len(x) == 1000
    point, quant = model.run(x)
    for i in range(0, 1000, 37):
        p1, q1 = model.run(x[i : i + 1])
        np.testing.assert_allclose(p1[0], point[i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(q1[0], quant[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bars", ["time", "ticks"])
def test_with_forecasts_yields_the_event_by_event_sequence(tmp_path: Path, bars: str) -> None:
    if bars == "time":  # the shipped model on short bars, a short drift window: drift events too
        cfg = make_cfg(SHIPPED, bar_seconds=0.01, drift_window=40, mismatch="warn")
    else:
        cfg = make_cfg(write_model(tmp_path / "m", input_size=4), every_n_ticks=50)
    msgs = list(itertools.islice(build_market(cfg), 30_000))
    engs: list[Any] = []
    want = list(one_by_one(cfg, msgs, engs))
    ForecastOverlay.READ_AHEAD = 1000  # many read-ahead batches, bars across their edges
    try:
        got = list(with_forecasts(cfg, iter(msgs)))
    finally:
        ForecastOverlay.READ_AHEAD = 8192
    n_fc = sum(isinstance(m, Forecast) for m in want)
    assert n_fc > 300
    assert got == want
    if bars == "time":
        assert engs[0].counts["drift_events"] >= 1


def test_overlay_on_rows_gives_the_forecasts_with_forecasts_interleaves() -> None:
    cfg = make_cfg(SHIPPED, bar_seconds=0.01, mismatch="warn")
    msgs = [
        m
        for m in itertools.islice(build_market(cfg), 30_000)
        if type(m) in (Quote, Trade, BookDelta)
    ]
    want = list(with_forecasts(cfg, msgs))
    rows = from_messages(msgs)
    ov = ForecastOverlay(cfg)
    assert ov.enabled
    got: list[Any] = []
    for a in range(0, len(rows), 777):
        batch = rows[a : a + 777]
        fcs = ov.on_rows(batch)
        assert len(ov.after) == len(fcs)
        assert [f.ts_recv for f in fcs] == batch["ts_event"][ov.after].tolist()
        j = 0
        for k in range(len(batch)):
            got.append(msgs[a + k])
            while j < len(fcs) and ov.after[j] == k:
                got.append(fcs[j])
                j += 1
    assert sum(isinstance(m, Forecast) for m in got) > 300
    assert got == want


def test_a_source_error_comes_after_what_came_before_it() -> None:
    cfg = make_cfg(SHIPPED, bar_seconds=0.01, mismatch="warn")
    msgs = list(itertools.islice(build_market(cfg), 12_000))

    def broken() -> Iterator[Any]:
        yield from msgs
        raise ValueError("bad row")

    want = list(one_by_one(cfg, msgs))
    got: list[Any] = []
    with pytest.raises(ValueError, match="bad row"):
        for m in with_forecasts(cfg, broken()):
            got.append(m)
    assert got == want and any(isinstance(m, Forecast) for m in got)


@pytest.mark.parametrize("per_call", [2, 7, 1024])  # windows per model call: < 1, 2, many closes
def test_a_failing_model_batch_is_run_again_close_by_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_call: int
) -> None:
    from models.serving import LoadedModel
    from procs import infer_batch

    monkeypatch.setattr(infer_batch, "MODEL_BATCH", per_call)

    cfg = make_cfg(write_model(tmp_path / "m", input_size=4), every_n_ticks=50)
    msgs = list(itertools.islice(build_market(cfg), 10_000))
    want = list(one_by_one(cfg, msgs))
    real = LoadedModel.run

    def small_only(self: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) > 3:  # 3 instruments: only a per-close call passes
            raise RuntimeError("batch too large")
        return real(self, x)

    fcs = [m for m in want if isinstance(m, Forecast)]
    ov = ForecastOverlay(cfg)  # the model loaded (its trial runs are batches of several)
    monkeypatch.setattr(LoadedModel, "run", small_only)
    assert ov.on_messages(msgs) == fcs
    assert ov.eng.counts["infer_errors"] == 0

    def down(self: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("provider down")

    monkeypatch.setattr(LoadedModel, "run", real)
    ov = ForecastOverlay(cfg)
    monkeypatch.setattr(LoadedModel, "run", down)
    assert ov.on_messages(msgs) == []
    assert ov.eng.counts["infer_errors"] == len(fcs) // 3  # one per close, as before


class _Columnar:
    """A synthetic market as a columnar source: its opening snapshots, then rows."""

    def __init__(self, msgs: list[Any]) -> None:
        k = next(i for i, m in enumerate(msgs) if not isinstance(m, BookSnapshot))
        self.pre, self.rows = msgs[:k], from_messages(msgs[k:])

    def preamble(self) -> list[Any]:
        return list(self.pre)

    def batches(self) -> Iterator[np.ndarray]:
        for a in range(0, len(self.rows), 4096):
            yield self.rows[a : a + 4096]

    def __iter__(self) -> Iterator[Any]:
        yield from self.pre
        yield from to_messages(self.rows)


def test_fast_replay_with_the_overlay_trades_as_the_message_path(tmp_path: Path) -> None:
    """The overlay in engine.replay_fast (preamble included: the opening snapshots are tick-bar
    ticks) gives the strategies the forecasts with_forecasts gives the message path."""
    from engine.backtest import InlineRuntime
    from procs.build import build_venue

    cfg = make_cfg(write_model(tmp_path / "m", input_size=4, scale=50.0), every_n_ticks=50)
    msgs = list(itertools.islice(build_market(cfg), 12_000))
    inst = cfg.instrument_table()
    runs = []
    for engine in ("exact", "fast"):
        src = _Columnar(msgs)
        ov = ForecastOverlay(cfg)
        kw: dict[str, Any] = {"engine": engine, **cfg.portfolio.backtest_kwargs()}
        if engine == "fast":
            kw["overlay"] = ov
        rt = InlineRuntime(
            inst,
            cfg.strategy_specs(),
            cfg.risk,
            build_venue(cfg, inst),
            src if engine == "fast" else with_forecasts(cfg, src, ov),
            exec_policy=cfg.exec,
            **kw,
        )
        runs.append((rt, rt.run(), ov.eng.counts["forecasts_out"]))
        assert rt.replay_engine == engine
    (ex, a, na), (fa, b, nb) = runs
    assert na == nb > 100
    for k in ("ticks", "intents", "fills", "positions", "pnl_by_strategy"):
        assert a[k] == b[k], k
    assert ex.fill_log == fa.fill_log
    assert b["pnl_by_strategy"][3]["fills"] > 0  # strategy 3: the ForecastTaker traded
