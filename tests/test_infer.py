"""The infer state machine inline: bars → windows → one batched call per close → forecasts;
hot swap, refused models, no model, drift; and the ForecastTaker strategy on its forecasts."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from engine.instruments import Instrument
from engine.messages import (
    DriftEvent,
    Forecast,
    IntentNew,
    ModelRejected,
    ModelSwapped,
    Quote,
    Side,
    TimeInForce,
)
from engine.strategy_host import StrategyHost
from models.features import compute_features
from ops.config import Config, parse_config
from procs.build import build_market
from procs.infer import InferEngine
from tests._onnx_models import write_model
from tests.conftest import ROOT


def make_cfg(model_dir: Path, **inference: object) -> Config:
    """config.toml with its [inference] keys overridden."""
    text = (ROOT / "config.toml").read_text()
    values = {"model_dir": str(model_dir), "every_n_ticks": 0, "bar_seconds": 0.05, **inference}
    start = text.index("\n[inference]\n") + 1
    end = text.index("\n[", start + 1)
    section = text[start:end]
    for key, v in values.items():
        lit = f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)
        section, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {lit}", section)
        assert n == 1, key
    return parse_config(text[:start] + section + text[end:])


def market(cfg: Config, n: int) -> list[object]:
    msgs = list(itertools.islice(build_market(cfg), n))
    for k, m in enumerate(msgs):  # a receive time per message, as the feed stamps it
        if hasattr(m, "ts_recv"):
            m.ts_recv = 10**12 + k
    return msgs


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        self.t += 1000
        return self.t


def test_one_batched_call_per_bar_close_and_forecasts_equal_the_model(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", input_size=8, scale=2.0, bias=0.001, bar_seconds=0.05)
    cfg = make_cfg(d)
    eng = InferEngine(cfg, clock=Clock())
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped) and ev.new_version == "1" and ev.old_version == ""
    forecasts: list[Forecast] = []
    closing: dict[int, int] = {}
    for m in market(cfg, 12_000):
        out = eng.on_market_data(m)
        for f in out:
            assert isinstance(f, Forecast)
            closing[eng.counts["runs"]] = m.ts_recv  # type: ignore[attr-defined]
        forecasts += out
    assert eng.counts["bars"] >= 10 and eng.counts["runs"] == eng.counts["bars"] - 7
    # every run covers all three instruments (one batch), in instrument order
    assert len(forecasts) == 3 * eng.counts["runs"]
    assert [f.instrument_id for f in forecasts[:6]] == [1, 2, 3, 1, 2, 3]
    # the forecast is the model applied to the last 8 bars' features: here 2 * mean(ret) + bias
    win = eng.windows
    assert win is not None
    last = forecasts[-3:]
    for slot, f in enumerate(last):
        want = 2.0 * float(win.window(slot, 8)[:, 0].astype(np.float64).mean()) + 0.001
        assert f.point == pytest.approx([want] * 3, rel=1e-5, abs=1e-7)
        assert f.levels == [0.1, 0.5, 0.9] and len(f.quantiles) == 3 and len(f.quantiles[0]) == 3
        assert f.quantiles[0][0] < f.point[0] < f.quantiles[2][0]
        assert f.model_version == "1"
        assert f.ts_origin == closing[eng.counts["runs"]]  # the tick that closed the bar
        assert f.ts_recv > 0


def test_window_rows_equal_training_features_of_the_same_bars(tmp_path: Path) -> None:
    """What infer feeds the model is exactly compute_features over the bars it built."""
    d = write_model(tmp_path / "m", input_size=4)
    cfg = make_cfg(d, every_n_ticks=300)
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    bars = []
    for m in market(cfg, 6_000):
        before = eng.counts["bars"]
        eng.on_market_data(m)
        if eng.counts["bars"] != before:
            b = eng.bars
            assert b is not None
            bars.append((b.closed_start_ns, b.high[0], b.low[0], b.close[0], b.volume[0]))
    ts, h, lo, c, v = (np.array(x) for x in zip(*bars, strict=True))
    want = compute_features(c, h, lo, c, v, ts.astype(np.int64))
    assert eng.windows is not None
    assert np.array_equal(eng.windows.window(0, 4), want[-4:])


def test_hot_swap_and_a_refused_version_keep_forecasting(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=6, created="2026-01-01T00:00:00+00:00")
    cfg = make_cfg(reg, every_n_ticks=200)
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    msgs = market(cfg, 9_000)
    out = [f for m in msgs[:3000] for f in eng.on_market_data(m)]
    assert out and {f.model_version for f in out} == {"v1"}
    # a broken newer version: refused, v1 keeps serving
    write_model(
        reg / "v2", "v2", input_size=6, onnx_features=4, created="2026-01-02T00:00:00+00:00"
    )
    (ev,) = eng.poll_model()
    assert (
        isinstance(ev, ModelRejected)
        and ev.version == "v2"
        and "expected [batch, 6, 5]" in ev.reason
    )
    assert eng.poll_model() == []
    out = [f for m in msgs[3000:6000] for f in eng.on_market_data(m)]
    assert out and {f.model_version for f in out} == {"v1"}
    # a good newer version with a longer window: swapped in, windows grown, history kept
    write_model(reg / "v3", "v3", input_size=10, created="2026-01-03T00:00:00+00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped) and (ev.old_version, ev.new_version) == ("v1", "v3")
    assert eng.windows is not None and eng.windows.capacity == 10
    out = [f for m in msgs[6000:] for f in eng.on_market_data(m)]
    assert out and {f.model_version for f in out} == {"v3"}
    assert eng.counts["model_swaps"] == 1 and eng.counts["model_rejects"] == 1


def test_without_a_model_nothing_is_published_and_nothing_raises(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "missing")
    eng = InferEngine(cfg)
    assert eng.poll_model() == []
    assert all(eng.on_market_data(m) == [] for m in market(cfg, 2000))
    # a truncated file is refused the same way
    d = write_model(tmp_path / "bad")
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:100])
    eng = InferEngine(make_cfg(d))
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and "truncated" in ev.reason
    assert all(eng.on_market_data(m) == [] for m in market(cfg, 2000))


def test_a_model_worse_than_naive_raises_one_drift_event(tmp_path: Path) -> None:
    # a constant forecast of +1% per bar: far worse than forecasting no move
    d = write_model(tmp_path / "m", input_size=4, scale=0.0, bias=0.01)
    cfg = make_cfg(d, every_n_ticks=100, drift_window=20, drift_margin=0.5)
    eng = InferEngine(cfg, clock=Clock())
    eng.poll_model()
    every = [
        e for m in market(cfg, 8_000) for e in eng.on_market_data(m) if isinstance(e, DriftEvent)
    ]
    events = [e for e in every if e.kind == "error"]
    assert len(events) == 1
    (e,) = events
    assert e.drifting == 1 and e.model_mae > e.naive_mae * 1.5 and e.samples == 20
    assert e.model_version == "1"
    # its band (+-0.8% around +1%) never holds the return either: one coverage event
    (c,) = [e for e in every if e.kind == "coverage"]
    assert c.drifting == 1 and c.stat == 0.0 and c.threshold == pytest.approx(0.8)


# --- the strategy ---------------------------------------------------------------------------------


def _host(**params: object) -> StrategyHost:
    ins = [Instrument(instrument_id=1, symbol="AAPL", tick_size=0.01)]
    host = StrategyHost(
        [{"path": "engine.strategies.forecast:ForecastTaker", "params": params, "strategy_id": 3}],
        ins,
        on_error="raise",
    )
    host.start(0)
    host.on_market_data(Quote(1, 10_000, 50, 10_002, 50, 1, 1), 1)
    return host


def _f(
    point: list[float], lo: list[float] | None = None, hi: list[float] | None = None
) -> Forecast:
    q = [lo, [p for p in point], hi] if lo is not None and hi is not None else []
    return Forecast(1, "v", 77, 78, point, [0.1, 0.5, 0.9] if q else [], q)


def test_forecast_taker_direction_from_point_size_from_quantile_spread() -> None:
    host = _host(size=10, min_edge_bps=1.0, slippage_ticks=2)
    # a confident up move (band all above zero): full size, marketable IOC buy
    (o,) = host.on_forecast(_f([0.002], [0.001], [0.003]), 5)
    assert isinstance(o, IntentNew)
    assert (o.side, o.qty, o.px, o.tif, o.ts_origin) == (Side.BUY, 10, 10_004, TimeInForce.IOC, 77)
    # down, with a band twice as wide as the move: conviction 0.5 of the way -> target -5
    (o,) = host.on_forecast(_f([-0.001], [-0.003], [0.001]), 6)
    assert (o.side, o.qty, o.px) == (Side.SELL, 15, 9_998)
    # a move under the edge: flat
    (o,) = host.on_forecast(_f([0.00001], [-0.001], [0.001]), 7)
    assert (o.side, o.qty) == (Side.BUY, 5)
    # the same target again: no order
    assert host.on_forecast(_f([0.00002], [-0.001], [0.001]), 8) == []


def test_forecast_taker_ignores_unusable_forecasts() -> None:
    host = _host(size=4)
    assert host.on_forecast(_f([]), 5) == []
    assert host.on_forecast(_f([float("nan")]), 5) == []
    other = Forecast(9, "v", 0, 0, [0.01])
    assert host.on_forecast(other, 5) == []
    (o,) = host.on_forecast(_f([0.01]), 5)  # no quantiles: full size
    assert o.qty == 4


def test_backtest_stream_interleaves_forecasts_at_their_simulated_time(tmp_path: Path) -> None:
    from procs.infer import with_forecasts

    d = write_model(tmp_path / "m", input_size=4)
    cfg = make_cfg(d, every_n_ticks=200)
    plain = list(itertools.islice(build_market(cfg), 3000))
    mixed = list(with_forecasts(cfg, itertools.islice(build_market(cfg), 3000)))
    fc = [k for k, m in enumerate(mixed) if isinstance(m, Forecast)]
    assert len(fc) == 3 * (3000 // 200 - 3)  # a forecast per instrument per close, once 4 bars
    assert [m for m in mixed if not isinstance(m, Forecast)] == plain
    for k in fc:  # right after the message that closed the bar, on its clock
        prev = next(m for m in reversed(mixed[:k]) if not isinstance(m, Forecast))
        f = mixed[k]
        assert f.ts_recv == f.ts_origin == prev.ts_event
    off = make_cfg(d, enabled=False)
    assert list(with_forecasts(off, iter(plain))) == plain


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('providers = ["cu-da"]', "inference.providers[0]"),
        ("providers = []", "inference.providers"),
        ('instruments = ["NOPE"]', "inference.instruments"),
        ("intra_op_threads = 0", "inference.intra_op_threads"),
        ("bar_seconds = -1.0", "inference.bar_seconds"),
        ("drift_window = 0", "inference.drift_window"),
        ("drift_margin = -0.5", "inference.drift_margin"),
        ("model_dri = 'x'", "inference.model_dri"),
    ],
)
def test_inference_config_errors_name_the_key(line: str, key: str) -> None:
    from ops.config import ConfigError

    text = (ROOT / "config.toml").read_text()
    at = text.index("\n[inference]\n") + len("\n[inference]\n")
    with pytest.raises(ConfigError) as err:
        parse_config(
            text[:at] + line + "\n" + text[at:].replace(line.split(" =")[0] + " =", "#", 1)
        )
    assert err.value.key == key


def test_a_bad_newest_version_at_start_falls_back_to_the_good_one_beneath(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=4, created="2026-01-01T00:00:00+00:00")
    write_model(reg / "v2", "v2", input_size=4, batch=1, created="2026-01-02T00:00:00+00:00")
    eng = InferEngine(make_cfg(reg, every_n_ticks=100), clock=Clock())
    rejected, swapped = eng.poll_model()
    assert isinstance(rejected, ModelRejected) and rejected.version == "v2"
    assert "frozen" in rejected.reason
    assert isinstance(swapped, ModelSwapped) and swapped.new_version == "v1"
    assert eng.model is not None and eng.model.version == "v1"
    assert eng.poll_model() == []
