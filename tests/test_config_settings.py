"""config.toml loads straight into the engine's settings structs (issue 12 item 5).

Each setting is stated once: its struct field (default, unit, check) and its line in config.toml.
These tests hold the two together (every key documented, with the code's default), check that
the values derived in other units are right, and that a bad value still exits 2 naming its key.
"""

from __future__ import annotations

import copy
import pickle
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.backtest import InlineRuntime
from engine.exec_policy import ExecPolicy
from engine.messages import OrderType
from engine.portfolio_settings import PortfolioSettings
from engine.risk import RiskGate
from engine.risk_limits import RiskLimits
from engine.settings import SettingError
from engine.venues.sim import SimExchange
from ops.config import ConfigError, parse_config
from tests.conftest import ROOT
from tests.test_preflight import gekko

BASE = (ROOT / "config.toml").read_text()
MINIMAL = '[[instruments]]\ninstrument_id = 0\nsymbol = "A"\n'

#: keys config.toml deliberately sets to something other than the code's default, and why
SHIPPED_OVERRIDES = {
    "market.jump_rate_per_s": "the demo market jumps now and then; by default it does not",
    "portfolio.benchmark": "names one of the shipped instruments; by default there is none",
    "inference.enabled": "the shipped config serves the shipped model; by default no infer",
    "processes.infer.poll_interval_ms": "1 ms if infer is ever switched to poll",
    "sweep.strategy": "the shipped config sweeps the momentum taker; by default the first entry",
    "sweep.params": "the momentum taker's EMA spans; by default nothing is swept",
}


def _same(code: Any, file: Any) -> bool:
    return (list(code) if isinstance(code, tuple) else code) == file


def _differences(raw: dict[str, Any], loaded: Any, default: Any, prefix: str) -> list[str]:
    """Keys of ``raw`` whose value is not the default (nested tables walked; arrays of tables,
    the instruments and strategies, have no defaults to compare)."""
    out = []
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(getattr(loaded, key, None), msgspec.Struct):
            out += _differences(
                value, getattr(loaded, key), getattr(default, key), f"{prefix}{key}."
            )
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            continue  # [[instruments]], [[strategies]]: no defaults to compare
        elif not isinstance(default, msgspec.Struct) or key not in default.__struct_fields__:
            continue  # a dict-valued key's entries
        elif not _same(getattr(default, key), value):
            out.append(f"{prefix}{key}")
    return out


def test_config_toml_states_the_code_defaults() -> None:
    """Every value config.toml states is the struct's default, but the documented overrides: the
    file documents the code, and a config that leaves a key out gets what the file says."""
    raw = msgspec.toml.decode(BASE)
    loaded, default = parse_config(BASE), parse_config(MINIMAL)
    assert sorted(_differences(raw, loaded, default, "")) == sorted(SHIPPED_OVERRIDES)


@pytest.mark.parametrize(
    ("section", "cls"),
    [("risk", RiskLimits), ("exec", ExecPolicy), ("portfolio", PortfolioSettings)],
)
def test_engine_sections_load_into_the_engine_structs_and_document_every_key(
    section: str, cls: type
) -> None:
    raw = msgspec.toml.decode(BASE)[section]
    assert set(raw) == set(cls.__struct_fields__)  # every field has its documented line
    assert type(getattr(parse_config(BASE), section)) is cls
    assert getattr(parse_config(MINIMAL), section) == cls()  # left out: the struct's defaults


def test_min_history_is_30_everywhere() -> None:
    assert RiskLimits().min_history == 30
    assert "min_history = 30 " in BASE
    assert parse_config(MINIMAL).risk.min_history == 30


def test_derived_units() -> None:
    lim = RiskLimits(
        flash_window_s=1.5,
        flash_cooldown_s=2.25,
        refresh_interval_ms=10.0,
        max_intent_age_ms=250.5,
        var_horizon_days=2.0,
        trading_day_s=23_400.0,
        returns_interval_s=60.0,
    )
    assert lim.flash_window_ns == 1_500_000_000 and lim.flash_cooldown_ns == 2_250_000_000
    assert lim.flash_samples == 150 + 2  # the window over the refresh interval, + 2
    assert lim.max_intent_age_ns == 250_500_000
    assert lim.var_horizon == 780.0  # 2 days of 390 one-minute returns
    assert lim.returns_interval_ns == 60_000_000_000 and lim.refresh_interval_ns == 10_000_000
    assert RiskLimits(flash_window_s=100.0, refresh_interval_ms=1.0).flash_samples == 4096  # cap
    assert RiskLimits.off().var_horizon == 1.0  # off(): one return interval
    moved = msgspec.structs.replace(lim, max_intent_age_ms=0.0)  # derived again, not copied
    assert moved.max_intent_age_ns == 0 and lim.max_intent_age_ns == 250_500_000
    for again in (copy.copy(lim), copy.deepcopy(lim), pickle.loads(pickle.dumps(lim))):
        assert (
            again == lim and again.flash_samples == 152 and again.max_intent_age_ns == 250_500_000
        )
    pol = ExecPolicy(retry_backoff_ms=1.5, retry_on=("Busy", "RATE limit"))
    assert pol.retry_backoff_ns == 1_500_000 and pol.retry_on == ("busy", "rate limit")
    assert pol.native_types == {int(OrderType.MARKET), int(OrderType.LIMIT)}
    assert PortfolioSettings(equity_interval_s=0.25).equity_interval_ns == 250_000_000
    sim = parse_config("[sim]\nlatency_us = 12.5\njitter_us = 0.5\n" + MINIMAL).sim
    assert sim.venue_settings() == {
        "maker_fee_bps": -0.5,
        "taker_fee_bps": 2.0,
        "latency_ns": 12_500,
        "jitter_ns": 500,
        "liquidation_buffer": 1.0,
        "commission_pct": 5.0,
        "account": "cash",
        "position_mode": "netting",
        "leverage": 0.0,
    }


def test_the_engine_gets_the_converted_values() -> None:
    cfg = parse_config("[risk]\nmax_intent_age_ms = 40.0\nflash_window_s = 2.0\n" + MINIMAL)
    gate = RiskGate(cfg.risk, cfg.instrument_table())
    assert gate.limits.max_intent_age_ns == 40_000_000
    ins = cfg.instrument_table()
    rt = InlineRuntime(ins, [], cfg.risk, SimExchange(ins), [], exec_policy=cfg.exec)
    assert rt.exec.max_order_age_ns == 40_000_000  # risk's staleness limit, at exec too
    assert rt.exec.policy is cfg.exec
    assert rt.risk_stage.refresh_ns == 20_000_000  # [risk] refresh_interval_ms, as in gekko run


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[risk]\nmax_position_pct = 150\n", "risk.max_position_pct", "percentage within 0..100"),
        ("[risk]\nmin_history = 600\n", "risk.min_history", "within 3..returns_window"),
        ("[risk]\ncapital = 0.0\n", "risk.capital", "must be > 0 when a % of equity"),
        ("[risk]\nflash_window_s = -1.0\n", "risk.flash_window_s", "must be > 0"),
        ("[risk]\nflash_window_ns = 5\n", "risk.flash_window_ns", "unknown key"),  # derived
        ("[risk]\nvar_horizon = 5.0\n", "risk.var_horizon", "unknown key"),
        ("[risk]\nhistory_file = 'x.txt'\n", "risk.history_file", "must be a .csv or .parquet"),
        ("[exec]\nretry_backoff_ms = -1.0\n", "exec.retry_backoff_ms", "must be >= 0"),
        ("[exec]\nretry_backoff_ns = 5\n", "exec.retry_backoff_ns", "unknown key"),
        ("[exec]\nid_block = 3\n", "exec.id_block", "unknown key"),  # not a setting
        ("[sim]\nmaker_fee_bps = 2000.0\n", "sim.maker_fee_bps", "within ±1000 bps"),
        ("[sim]\njitter_us = -1.0\n", "sim.jitter_us", "must be >= 0"),
        ('[[venues]]\nname = "a"\njitter_us = -1.0\n', "venues[0].jitter_us", "must be >= 0"),
        (
            '[[instruments]]\ninstrument_id = 5\nsymbol = "B"\nlot_size = 0.0\n',
            "instruments[0].lot_size",
            "must be > 0 (instrument B)",
        ),
        (
            '[[instruments]]\ninstrument_id = 5\nsymbol = "B"\nannual_vol = -1.0\n',
            "instruments[0].annual_vol",
            "must be >= 0",
        ),
        (
            '[[instruments]]\ninstrument_id = 5\nsymbol = "B"\ntick = 0.1\n',
            "instruments[0].tick",
            "unknown key",
        ),
    ],
)
def test_a_bad_engine_setting_names_its_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text + MINIMAL, "my.toml")
    assert err.value.key == key and problem in err.value.problem
    assert str(err.value).startswith(f"my.toml: {key}: ")


def test_a_struct_built_in_code_names_the_key_too() -> None:
    with pytest.raises(SettingError) as err:
        RiskLimits(max_var_pct=-1.0)
    assert err.value.key == "max_var_pct" and str(err.value).startswith("max_var_pct: ")
    with pytest.raises(SettingError, match="^halt_policy: "):
        ExecPolicy(halt_policy="pause")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_position_pct = 5.0", "max_position_pct = 150.0", "risk.max_position_pct: must be a"),
        ('halt_policy = "hold"', 'halt_policy = "pause"', "exec.halt_policy: must be 'hold' or"),
    ],
)
def test_a_bad_engine_setting_exits_2_naming_the_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    eid = "c" + uuid.uuid4().hex[:7]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    assert old in text
    cfg = tmp_path / "config.toml"
    cfg.write_text(text.replace(old, new, 1))
    r = gekko("backtest", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"{cfg}: {expected}" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "var").exists()  # nothing started
    assert not [p for p in Path("/dev/shm").iterdir() if eid in p.name]
