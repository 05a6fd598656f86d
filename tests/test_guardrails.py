"""Serving guardrails: a model that does not fit the running configuration (bar length,
features, instruments, horizon) is refused at start and at hot swap with a reason, and the last
good model keeps serving (docs/forecasting.md, "Serving guardrails")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from engine.messages import Forecast, ModelRejected, ModelSwapped
from models.guardrails import ServingSpec, misfits
from models.registry import SHIPPED, read_meta
from ops.config import ConfigError, load_config, parse_config
from procs.infer import InferEngine
from tests._onnx_models import write_model
from tests.conftest import ROOT
from tests.test_infer import Clock, make_cfg, market


def test_a_daily_model_swapped_into_short_bars_is_refused_and_forecasts_go_on(
    tmp_path: Path,
) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=4, bar_seconds=0.05, created="2026-01-01T00:00:00")
    cfg = make_cfg(reg, bar_seconds=0.0)  # 0: the model's own bar length
    eng = InferEngine(cfg, clock=Clock())
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped) and ev.new_version == "v1"
    msgs = market(cfg, 9_000)
    out = [f for m in msgs[:3000] for f in eng.on_market_data(m)]
    assert out and {f.model_version for f in out} == {"v1"}
    # a daily model appears: before the guardrail it was swapped in, the bars became daily
    # and the engine silently stopped forecasting
    write_model(reg / "v2", "v2", input_size=4, bar_seconds=86_400, created="2026-01-02T00:00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and ev.version == "v2"
    assert "bar" in ev.reason and "86400" in ev.reason and "0.05" in ev.reason
    assert eng.model is not None and eng.model.version == "v1"
    out = [f for m in msgs[3000:] for f in eng.on_market_data(m) if isinstance(f, Forecast)]
    assert out and {f.model_version for f in out} == {"v1"}


def _set_meta(d: Path, **keys: object) -> Path:
    meta = json.loads((d / "meta.json").read_text())
    meta.update(keys)
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_a_model_of_another_bar_length_is_refused_at_start_unless_mismatch_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = write_model(tmp_path / "daily", input_size=4, bar_seconds=86_400)
    eng = InferEngine(make_cfg(d, bar_seconds=0.05), clock=Clock())
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and "[inference] bar_seconds" in ev.reason
    assert eng.model is None
    # warn: served on the configured bars, and the log says so
    with caplog.at_level(logging.WARNING):
        eng = InferEngine(make_cfg(d, bar_seconds=0.05, mismatch="warn"), clock=Clock())
        (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped) and eng.bars is not None
    assert eng.bars.bar_ns == 50_000_000
    assert "serving it anyway" in caplog.text


def test_tick_bars_pin_the_first_models_bar_length_for_later_versions(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=4, bar_seconds=1, created="2026-01-01T00:00:00")
    eng = InferEngine(make_cfg(reg, every_n_ticks=100), clock=Clock())
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped)
    write_model(reg / "v2", "v2", input_size=4, bar_seconds=60, created="2026-01-02T00:00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and "model v1, served first" in ev.reason
    # the same bar length: swapped in
    write_model(reg / "v3", "v3", input_size=6, bar_seconds=1, created="2026-01-03T00:00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelSwapped) and ev.new_version == "v3"


def test_a_shorter_horizon_is_refused(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=4, horizon=3, created="2026-01-01T00:00:00")
    eng = InferEngine(make_cfg(reg, every_n_ticks=100), clock=Clock())
    eng.poll_model()
    write_model(reg / "v2", "v2", input_size=4, horizon=2, created="2026-01-02T00:00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and "horizon is 2 steps but 3 are needed" in ev.reason
    write_model(reg / "v3", "v3", input_size=4, horizon=5, created="2026-01-03T00:00:00")
    (ev,) = eng.poll_model()  # a longer one holds the steps the strategies read
    assert isinstance(ev, ModelSwapped) and ev.new_version == "v3"
    # the config's horizon is checked at start
    d = write_model(tmp_path / "short", input_size=4, horizon=3)
    (ev,) = InferEngine(make_cfg(d, every_n_ticks=100, horizon=4), clock=Clock()).poll_model()
    assert isinstance(ev, ModelRejected) and "[inference] horizon" in ev.reason


def test_a_model_trained_for_other_instruments_is_refused(tmp_path: Path) -> None:
    d = _set_meta(write_model(tmp_path / "btc", input_size=4), instruments=["BTC-USD", "AAPL"])
    (ev,) = InferEngine(make_cfg(d, every_n_ticks=100), clock=Clock()).poll_model()
    assert isinstance(ev, ModelRejected)
    assert "not for ['MSFT', 'XOM']" in ev.reason
    cfg = make_cfg(d, every_n_ticks=100, instruments=["AAPL"])
    (ev,) = InferEngine(cfg, clock=Clock()).poll_model()
    assert isinstance(ev, ModelSwapped)


def test_a_swap_to_other_features_is_refused_and_the_old_model_serves(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    write_model(reg / "v1", "v1", input_size=4, created="2026-01-01T00:00:00")
    eng = InferEngine(make_cfg(reg, every_n_ticks=100), clock=Clock())
    eng.poll_model()
    swapped = ("range", "ret", "log_volume", "tod_sin", "tod_cos")
    write_model(reg / "v2", "v2", input_size=4, features=swapped, created="2026-01-02T00:00:00")
    (ev,) = eng.poll_model()
    assert isinstance(ev, ModelRejected) and "input layout" in ev.reason
    assert eng.model is not None and eng.model.version == "v1"


def test_shipped_meta_fits_the_demo_config() -> None:
    """The shipped model's meta.json (no instruments, no training statistics) still serves."""
    meta = read_meta(SHIPPED)
    cfg = load_config(ROOT / "config.toml")
    spec = ServingSpec.from_config(cfg.inference, [i.symbol for i in cfg.instruments])
    assert misfits(meta, spec) == []
    pinned = spec.pinned_by(meta)
    assert (pinned.bar_seconds, pinned.horizon) == (0.2, 4)


@pytest.mark.parametrize(
    ("line", "key"),
    [('mismatch = "ignore"', "inference.mismatch"), ("horizon = -1", "inference.horizon")],
)
def test_guardrail_config_errors_name_the_key(line: str, key: str) -> None:
    text = (ROOT / "config.toml").read_text()
    at = text.index("\n[inference]\n") + len("\n[inference]\n")
    with pytest.raises(ConfigError) as err:
        parse_config(
            text[:at] + line + "\n" + text[at:].replace(line.split(" =")[0] + " =", "#", 1)
        )
    assert err.value.key == key
