"""The shipped model and the demo agree on the bars: the model in models/shipped/default was
trained on exactly the bars `gekko run --config config.toml` serves it, so its forecasts are for
the horizon it learned (no "trained on N s bars" mismatch in the demo's log)."""

from __future__ import annotations

import itertools
import json
import logging
import shlex
from pathlib import Path

import pytest

from engine.messages import Forecast
from models.registry import SHIPPED, read_meta
from ops.config import load_config
from procs.build import build_market
from procs.infer import InferEngine
from tests.conftest import ROOT


def _command_options(meta: dict) -> dict[str, str]:
    """``--key value`` pairs of the recorded ``gekko train`` command."""
    argv = shlex.split(meta["training"]["command"])
    assert argv[:2] == ["gekko", "train"]
    opts: dict[str, str] = {}
    for k, tok in enumerate(argv[2:], start=2):
        if tok.startswith("--"):
            nxt = argv[k + 1] if k + 1 < len(argv) else ""
            opts[tok[2:]] = "" if nxt.startswith("--") else nxt
    return opts


def test_the_shipped_model_was_trained_on_the_bars_the_demo_serves() -> None:
    meta = read_meta(SHIPPED)
    cfg = load_config(ROOT / "config.toml")
    opts = _command_options(meta)
    # trained on the demo's own market (the synthetic market of config.toml) ...
    assert opts["source"] == "synthetic" and opts["config"] == "config.toml"
    assert cfg.market.source == "synthetic"
    # ... in bars of the length meta.json declares ...
    assert float(opts["bar-seconds"]) == meta["bar_seconds"] > 0
    assert f"{float(opts['bar-seconds']):g} s bars" in meta["training"]["data"]
    # ... which is the length the demo's [inference] serves (0 = the model's own)
    served = cfg.inference.bar_seconds or meta["bar_seconds"]
    assert served == meta["bar_seconds"]
    assert cfg.inference.every_n_ticks == 0  # time bars, not tick bars
    # and it is still small enough to ship
    assert (SHIPPED / "model.onnx").stat().st_size < 200_000


def test_the_demo_config_serves_the_shipped_model_without_a_bar_mismatch(caplog) -> None:
    """InferEngine on config.toml as `gekko run` builds it: the model's own bar length, no
    mismatch log line, and forecasts for every instrument once 12 bars have closed."""
    cfg = load_config(ROOT / "config.toml")
    meta = read_meta(SHIPPED)
    clock = itertools.count(1_000, 1_000)
    with caplog.at_level(logging.INFO):
        eng = InferEngine(cfg, clock=lambda: next(clock))
        eng.poll_model()
    assert eng.model is not None and eng.model.version == meta["version"]
    assert eng.bars is not None and eng.bars.bar_ns == round(meta["bar_seconds"] * 1e9)
    assert not [r for r in caplog.records if "trained on" in r.getMessage()]
    forecasts: list[Forecast] = []
    for k, m in enumerate(itertools.islice(build_market(cfg), 40_000)):
        if hasattr(m, "ts_recv"):
            m.ts_recv = 10**12 + k
        forecasts += [f for f in eng.on_market_data(m) if isinstance(f, Forecast)]
        if eng.counts["runs"] >= 3:
            break
    assert eng.counts["runs"] >= 3, eng.counts
    assert {f.instrument_id for f in forecasts} == {i.instrument_id for i in cfg.instruments}
    assert all(len(f.point) == meta["horizon"] for f in forecasts)


@pytest.mark.parametrize(("bar_s", "expect"), [("0.2", 0.2), ("1", 1)])
def test_training_keeps_the_bar_length_in_meta_json(tmp_path: Path, bar_s: str, expect) -> None:
    """Sub-second synthetic bars are recorded as they are (they were once rounded up to 1 s,
    which made infer serve the wrong bars); whole seconds stay an integer."""
    pytest.importorskip("torch")
    from ops.cli import main

    out = tmp_path / "m"
    # the demo's market, but var/ under tmp_path and no database: training must not start
    # (and register a toy model in) the checkout's embedded PostgreSQL
    text = (ROOT / "config.toml").read_text()
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    at = text.index('mode = "embedded"', text.index("[storage.postgres]"))
    text = text[:at] + 'mode = "off"' + text[at + len('mode = "embedded"') :]
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(text)
    argv = [
        "train",
        "--config",
        str(cfg_path),
        "--source",
        "synthetic",
        "--sim-seconds",
        str(30 * float(bar_s)),
        "--bar-seconds",
        bar_s,
        "--input-size",
        "4",
        "--horizon",
        "1",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--folds",
        "0",
        "--no-checkpoint",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["bar_seconds"] == expect and type(meta["bar_seconds"]) is type(expect)
    assert f"--bar-seconds {float(bar_s)}" in meta["training"]["command"]
