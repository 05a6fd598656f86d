"""A micro model in `gekko backtest`: its forecasts arrive where the infer process would publish
them (after the last message of an event, before the next), they are the ones serving computes,
a strategy with ``source = "micro"`` trades on them, and a LOBSTER day's healed levels are counted
in the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.messages import Forecast, Quote, Trade
from models.lob_serving import MicroForecaster
from procs.infer_micro import MicroBacktest
from tests.test_lob_features import _random_stream
from tests.test_lob_serving import _l1, _messages, _model

ROOT = Path(__file__).resolve().parents[1]
LOBSTER = ROOT.parent / "shared" / "data" / "lobster"
AAPL10 = LOBSTER / "AAPL_2012-06-21_34200000_57600000_{}_10.csv"


def _bursty(n: int, seed: int):  # type: ignore[no-untyped-def]
    raw = _l1(_random_stream(n, seed))
    raw.ts[1::2] = raw.ts[0::2]  # bursts: two messages at one time
    return raw


def test_a_coalesced_models_forecast_follows_the_last_message_of_its_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = _bursty(1500, 11)
    d = _model(tmp_path, raw.coalesced(), coalesce=True)
    msgs = _messages(raw)
    t0 = int(raw.ts[0])
    noise = Forecast(  # a bar model's forecast passes through
        instrument_id=7,
        model_version="bar-model",
        ts_origin=t0,
        ts_recv=t0,
        point=[0.0],
        ts_event=t0,
    )
    stream = msgs[:5] + [noise] + msgs[5:]
    out = list(MicroBacktest(MicroForecaster(d, {7: raw.tick}, 0.0)).interleave(stream))
    micro = [m for m in out if type(m) is Forecast and m.model_version != "bar-model"]
    # the same forecasts as serving the whole stream as one batch
    want = MicroForecaster(d, {7: raw.tick}, 0.0).on_messages(msgs, 0)
    assert len(micro) == len(want) > 100
    np.testing.assert_allclose([f.p_up for f in micro], [f.p_up for f in want], atol=1e-12)
    assert [m for m in out if type(m) is not Forecast or m is noise] == stream  # nothing lost
    for k, m in enumerate(out):  # each right after its time's last message
        if type(m) is Forecast and m is not noise:
            before = [x for x in out[:k] if type(x) is not Forecast]
            after = [x for x in out[k + 1 :] if type(x) is not Forecast]
            assert before[-1].ts_event == m.ts_event
            assert not after or after[0].ts_event > m.ts_event


def test_an_uncoalesced_models_forecast_follows_its_own_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = _l1(_random_stream(1200, 12))
    d = _model(tmp_path, raw, coalesce=False)
    msgs = _messages(raw)
    mb = MicroBacktest(MicroForecaster(d, {7: raw.tick}, 0.0))
    out = list(mb.interleave(msgs))
    want = MicroForecaster(d, {7: raw.tick}, 0.0).on_messages(msgs, 0)
    got = [m for m in out if type(m) is Forecast]
    assert len(got) == len(want) == mb.forecasts > 100 and mb.busy_ns > 0
    for k, m in enumerate(out):
        if type(m) is Forecast:
            assert type(out[k - 1]) in (Quote, Trade) and out[k - 1].ts_event == m.ts_event


def _lobster_config(tmp_path: Path, model: Path | None, strategy: str = "") -> str:
    text = (ROOT / "config.toml").read_text()
    text = text.replace('source = "synthetic"', 'source = "replay"', 1)
    text = text.replace(
        'replay_lobster_messages = ""',
        f'replay_lobster_messages = "{AAPL10.as_posix().format("message")}"',
    )
    text = text.replace(
        'replay_lobster_orderbook = ""',
        f'replay_lobster_orderbook = "{AAPL10.as_posix().format("orderbook")}"',
    )
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path}"')
    if model is not None:
        text = text.replace('micro_model_dir = ""', f'micro_model_dir = "{model}"', 1)
    if strategy:
        start = text.index("[[strategies]]\nid = 1")
        end = text.index("# A target-weight rebalancer")
        text = text[:start] + strategy + text[end:]
    return text


def _aapl_model(tmp_path: Path) -> Path:
    from models.lob_data import lobster_events
    from models.lob_eval import samples
    from models.lob_export import export_micro
    from models.lob_models import LinearLogit

    ev = lobster_events(
        AAPL10.as_posix().format("message"), AAPL10.as_posix().format("orderbook")
    ).coalesced()
    x, y, _, _ = samples(ev)
    meta = {"expected_move": 100.0, "tick": 100.0, "coalesce": True, "levels": 10}
    meta["stream"] = "AAPL-L10"
    return export_micro(LinearLogit().fit(x, y), tmp_path / "micro", meta)


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="no LOBSTER sample in ../shared/data/lobster")
def test_gekko_backtest_serves_the_micro_model_and_a_micro_taker_trades_on_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ops.backtest_build import build_backtest
    from ops.cli import format_backtest
    from ops.config import parse_config

    model = _aapl_model(tmp_path)
    strategy = (
        '[[strategies]]\nid = 3\npath = "engine.strategies.cost_aware:CostAwareForecast"\n'
        'instruments = ["AAPL"]\n[strategies.params]\nsource = "micro"\nsize = 1\nsteps = 1\n'
        "margin = 0.0\ntaker_fee_bps = 0.0\n\n"
    )
    cfg = parse_config(_lobster_config(tmp_path, model, strategy), tmp_path / "c.toml")
    bt = build_backtest(cfg)
    assert bt.overlay.micro is not None
    summary = bt.runtime.run()
    assert summary["replay_engine"] == "exact"
    assert "micro model" in summary["replay_note"]
    strat = bt.runtime.host.slots[0].strategy
    assert bt.overlay.micro.forecasts > 20
    assert strat.forecasts == bt.overlay.micro.forecasts  # every one reached the strategy
    assert strat.entries > 0 and summary["fills"] > 0
    # without the model the same strategy never trades
    off = parse_config(_lobster_config(tmp_path, None, strategy), tmp_path / "d.toml")
    bt2 = build_backtest(off)
    s2 = bt2.runtime.run()
    assert bt2.overlay.micro is None and s2["fills"] == 0
    summary["micro_forecasts"] = bt.overlay.micro.forecasts
    summary["micro_inference_s"] = bt.overlay.micro.busy_ns / 1e9
    text = format_backtest(summary, cfg, 1.0)
    assert f"micro forecasts {bt.overlay.micro.forecasts}" in text


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="no LOBSTER sample in ../shared/data/lobster")
@pytest.mark.parametrize("engine", ["fast", "exact"])
def test_a_lobster_days_healed_levels_are_counted_as_repairs(tmp_path, engine) -> None:  # type: ignore[no-untyped-def]
    from ops.backtest_build import build_backtest
    from ops.cli import format_backtest
    from ops.config import parse_config

    amzn = LOBSTER / "AMZN_2012-06-21_34200000_57600000_{}_1.csv"
    text = _lobster_config(tmp_path, None)
    text = text.replace(AAPL10.as_posix().format("message"), amzn.as_posix().format("message"))
    text = text.replace(AAPL10.as_posix().format("orderbook"), amzn.as_posix().format("orderbook"))
    text = text.replace("replay_lobster_levels = 10", "replay_lobster_levels = 1")
    text = text.replace('engine = "fast"', f'engine = "{engine}"', 1)
    cfg = parse_config(text, tmp_path / "c.toml")
    bt = build_backtest(cfg, 5000)
    summary = bt.runtime.run()
    assert summary["replay_engine"] == engine
    heals = bt.rejects.repairs.get("lobster_heals", 0)
    assert heals > 0 and bt.rejects.total == 0  # repaired, not rejected
    summary["md_repaired"] = dict(bt.rejects.repairs)
    assert f"market data repaired: lobster_heals {heals}" in format_backtest(summary, cfg, 1.0)
