"""Accounts and instrument kinds in config.toml: what cannot be modelled is refused naming the
key (exit 2), the ISO conveniences set the ns keys, and config.toml's examples load."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops.account_config import iso_ns
from ops.config import ConfigError, parse_config
from tests.conftest import ROOT

PERP = """kind = "perpetual"
funding_interval_s = 28800
initial_margin = 0.05
maintenance_margin = 0.025
initial_price = 60000.0
tick_size = 0.1
lot_size = 0.001
currency = "USDT"
"""
BETTING = """kind = "betting"
market_id = "1.234"
outcome = "Home"
initial_price = 2.5
"""
BINARY = """kind = "binary"
market_id = "m1"
outcome = "Yes"
tick_size = 0.01
initial_price = 0.4
"""
FUTURE = """kind = "future"
initial_margin = 0.1
maintenance_margin = 0.05
"""


def config(ins: str = "", sim: str = "", venues: str = "") -> str:
    if "symbol =" not in ins:
        ins = f'instrument_id = 1\nsymbol = "X"\n{ins}'
    return f'[engine]\nid = "kinds"\n\n[sim]\n{sim}\n{venues}\n[[instruments]]\n{ins}'


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "k.toml")
    return err.value


@pytest.mark.parametrize(
    ("ins", "sim", "key", "words"),
    [
        (PERP, "", "sim.account", 'needs account = "margin"'),
        (PERP.replace("initial_margin = 0.05\nmaintenance_margin = 0.025\n", ""),
         'account = "margin"', "instruments[0].initial_margin", "posts margin"),
        (FUTURE + 'expiry = "2027-03-26"', "", "sim.account", 'needs account = "margin"'),
        (BETTING, "", "sim.account", 'account = "betting"'),
        ("", 'account = "betting"', "sim.account", "holds only them"),
        (BINARY, 'account = "betting"', "sim.account", "holds only them"),
        (BINARY.replace("0.4", "1.2"), "", "instruments[0].initial_price", "(0, 1)"),
        (BINARY.replace("tick_size = 0.01", "tick_size = 0.03"), "",
         "instruments[0].tick_size", "divide 1"),
        (BINARY + 'resolution = "1"\n', "", "instruments[0].resolves", "needs the time"),
        (BINARY + "initial_margin = 0.5\n", 'account = "margin"',
         "instruments[0].initial_margin", "paid in full"),
        (BETTING.replace("2.5", "1.0"), 'account = "betting"',
         "instruments[0].initial_price", "1.01 to 1000"),
        (BETTING + "tick_size = 0.03\n", 'account = "betting"',
         "instruments[0].tick_size", "divide 0.01"),
        ("", 'position_mode = "hedging"', "sim.position_mode", "needs a margin account"),
        (BINARY, 'account = "margin"\nposition_mode = "hedging"', "sim.position_mode",
         "paid in full"),
        ("", "leverage = 5", "sim.leverage", "no leverage"),
        (PERP, 'account = "margin"\nleverage = 50', "sim.leverage", "1 / initial_margin = 20"),
        (PERP, 'account = "margin"\nleverage = 0.5', "sim.leverage", "must be >= 1"),
        ("", 'account = "loan"', "sim.account", "must be one of"),
        ("", "liquidation_buffer = 0", "sim.liquidation_buffer", "(0, 10]"),
        ("", "commission_pct = 100", "sim.commission_pct", "[0, 100)"),
        (FUTURE, 'account = "margin"', "instruments[0].expiry", "needs its expiry"),
        (FUTURE + 'expiry = "26 March"', 'account = "margin"', "instruments[0].expiry",
         "ISO-8601"),
        (FUTURE + 'expiry = "2027-03-26"\nexpiry_ns = 5', 'account = "margin"',
         "instruments[0].expiry", "disagree"),
    ],
)  # fmt: skip
def test_what_cannot_be_modelled_is_refused_naming_the_key(
    ins: str, sim: str, key: str, words: str
) -> None:
    err = refused(config(ins, sim))
    assert err.key == key, err
    assert words in err.problem, err


def test_a_real_venue_offers_only_its_own_account() -> None:
    venue = '[[venues]]\nname = "bus"\nkind = "binanceus"\n'
    err = refused(config(sim="", venues=venue + 'position_mode = "hedging"\n'))
    assert err.key == "venues[0].position_mode" and "nets positions" in err.problem
    assert "does not implement hedging" in err.problem
    err = refused(config(venues=venue + 'account = "margin"\n'))
    assert err.key == "venues[0].account" and "cash" in err.problem
    # left out: the venue's own, and its settings carry it to the venue's clients
    cfg = parse_config(config(venues=venue), "k.toml")
    assert cfg.venues[0].account == "cash"
    assert cfg.venues[0].venue_settings()["account"] == "cash"


def test_every_simulated_venue_of_an_instrument_is_checked() -> None:
    venues = (
        '[[venues]]\nname = "a"\naccount = "margin"\n\n[[venues]]\nname = "b"\naccount = "cash"\n'
    )
    err = refused(config(PERP, venues=venues))
    assert err.key == "venues[1].account"


def test_accepted_accounts_reach_the_venue_settings() -> None:
    cfg = parse_config(config(PERP, 'account = "margin"\nleverage = 10'), "k.toml")
    s = cfg.sim.venue_settings()
    assert (s["account"], s["position_mode"], s["leverage"]) == ("margin", "netting", 10.0)
    assert s["liquidation_buffer"] == 1.0 and s["commission_pct"] == 5.0
    bet = parse_config(config(BETTING, 'account = "betting"\ncommission_pct = 2'), "k.toml")
    assert bet.sim.venue_settings()["commission_pct"] == 2.0
    assert parse_config(config(), "k.toml").sim.venue_settings()["account"] == "cash"


def test_hedging_is_accepted_on_a_simulated_margin_venue_and_reaches_venue_and_risk() -> None:
    from procs.build import hedging_instrument_ids, venue_accounts

    text = config(PERP, 'account = "margin"\nposition_mode = "hedging"')
    cfg = parse_config(text, "k.toml")
    assert cfg.sim.venue_settings()["position_mode"] == "hedging"
    assert venue_accounts(cfg)["sim"].hedging
    assert hedging_instrument_ids(cfg) == [1]
    assert hedging_instrument_ids(parse_config(config(PERP, 'account = "margin"'), "k.toml")) == []


def test_iso_dates_become_ns() -> None:
    cfg = parse_config(
        config(FUTURE + 'expiry = "2027-03-26T08:00:00Z"', 'account = "margin"'), "k.toml"
    )
    ins = cfg.instrument_table().by_symbol("X")
    assert ins.expiry_ns == 1_806_048_000 * 1_000_000_000  # 2027-03-26 08:00 UTC
    cfg = parse_config(config(BINARY + 'resolves = "2026-12-31T23:00:00+01:00"'), "k.toml")
    assert cfg.instrument_table().by_symbol("X").resolves_ns == iso_ns("2026-12-31T22:00:00")
    assert iso_ns("1970-01-02") == 86_400 * 1_000_000_000


def _examples() -> list[tuple[str, str]]:
    """config.toml's commented instrument-kind examples: (the account they need, the table)."""
    text = (ROOT / "config.toml").read_text()
    out = []
    for m in re.finditer(
        r"^# \[\[instruments\]\] +# example: [^\n]*account = \"(\w+)\"", text, re.M
    ):
        block = []
        for line in text[m.start() :].splitlines()[1:]:
            if not line.startswith("# ") or line.startswith("# [["):
                break
            block.append(line[2:])
        out.append((m.group(1), "\n".join(block)))
    return out


def test_config_toml_examples_of_each_kind_load() -> None:
    examples = _examples()
    kinds = set()
    for account, table in examples:
        cfg = parse_config(config(table, f'account = "{account}"'), "k.toml")
        kinds.add(cfg.instruments[0].kind)
    assert kinds == {"perpetual", "future", "fx", "binary", "betting"}


def test_a_refusal_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(config(PERP).replace('id = "kinds"', f'id = "kinds"\nvar_dir = "{tmp_path}"'))
    r = subprocess.run(
        [sys.executable, "-m", "ops.cli", "backtest", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{cfg}: sim.account:" in r.stderr and "Traceback" not in r.stderr
