"""config.toml: the shipped file loads; every kind of mistake names its key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT

BASE = (ROOT / "config.toml").read_text()


def test_shipped_config_loads() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert cfg.engine.id == "gekko"
    assert [s.path.split(":")[1] for s in cfg.strategies] == [
        "MarketMaker",
        "MomentumTaker",
        "ForecastTaker",
    ]
    assert len(cfg.instrument_table()) == len(cfg.instruments) >= 1


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (("max_open_orders = 100", "max_open_orders = 0"), "risk.max_open_orders", "must be > 0"),
        (
            ("max_open_orders = 100", 'max_open_orders = "many"'),
            "risk.max_open_orders",
            "Expected `int`",
        ),
        (("[sim]\n", "[sim]\nlatncy_us = 1\n"), "sim.latncy_us", "unknown key"),
        (("md_capacity = 4194304", "md_capacity = 5000"), "rings.md_capacity", "power of two"),
        (('wait = "block"', 'wait = "nap"'), "processes.feed.wait", "must be one of"),
        (('id = "gekko"', 'id = "has space"'), "engine.id", "letters or digits"),
        (("tick_size = 0.01", "tick_size = -0.01"), "instruments[0].tick_size", "must be > 0"),
        (
            ('instruments = ["AAPL"]', 'instruments = ["NOPE"]'),
            "strategies[1].instruments",
            "unknown instrument",
        ),
        (('source = "synthetic"', 'source = "replay"'), "market.replay_quotes", "a replay needs"),
        (
            ('replay_quotes = ""', 'replay_quotes = "/no/such.csv"'),
            "market.replay_quotes",
            "no such file",
        ),
    ],
)
def test_mistakes_name_the_key(edit: tuple[str, str], key: str, problem: str) -> None:
    old, new = edit
    assert old in BASE
    text = BASE.replace(old, new, 1)
    if "no/such" in new:
        text = text.replace('source = "synthetic"', 'source = "replay"')
    with pytest.raises(ConfigError) as err:
        parse_config(text, "my.toml")
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith("my.toml: ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
