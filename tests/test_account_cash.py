"""A run on a margin venue books its cash in the account's currency (ops.venue_run.account_cash):
a paper binanceusdm run's USD cash is its USDT, once — in the portfolio exec and the record keep
and in the simulated account — not USD beside a USDT account holding the same money again."""

from __future__ import annotations

from typing import Any

import pytest

from engine.venues.ccxt_markets import VenueMarket
from engine.venues.perp_kinds import paper_balance
from ops.config import parse_config
from ops.venue_run import pick_venue, resolve_run
from procs.build import venue_configs
from procs.exec import build_portfolio
from tests.test_venue_wiring import BASE, BTC, fake_loader

PERP = VenueMarket(
    symbol="BTC/USDT:USDT",
    venue_symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick="0.1",
    lot="0.001",
    min_notional="5",
    instrument={
        "kind": "perpetual",
        "funding_interval_s": 28800,
        "initial_margin": 0.1,
        "maintenance_margin": 0.004,
    },
)
USDM = '\n[[venues]]\nname = "usdm"\nkind = "binanceusdm"\nrest_url = "http://127.0.0.1:9"\n'


def run(extra: str = "", *, live: bool = False, venue: str = USDM, market: Any = PERP) -> Any:
    cfg = parse_config(BASE + venue + extra, "c.toml")
    picked, only = pick_venue(cfg, cfg.venues[0].name)
    gates = {only: object()} if live else None  # the loader never looks at the keys
    return resolve_run(picked, only=only, loader=fake_loader({market.symbol: market}), live=gates)


def test_a_paper_usdm_run_books_the_usd_cash_as_usdt_everywhere():
    cfg = run()
    usd = parse_config(BASE, "c.toml").portfolio.cash["USD"]
    assert cfg.portfolio.cash == {"USDT": usd}
    (venue,) = [c for c in venue_configs(cfg, with_keys=False) if c.name == "usdm"]
    assert venue.settings["balance"] == {"USDT": usd}
    assert paper_balance(venue, {"USDT"}) == {"USDT": usd}  # the simulated account: once
    p = build_portfolio(cfg, cfg.instrument_table())  # exec's (the record's is built alike)
    assert p.cash_by_currency == {"USDT": usd} and p.cash == pytest.approx(usd)


def test_a_paper_balance_is_the_portfolios_cash_too():
    cfg = run("paper_balance = { USDT = 5000.0 }\n")
    assert cfg.portfolio.cash == {"USDT": 5000.0}
    live = run("paper_balance = { USDT = 5000.0 }\n", live=True)  # live: the venue's own
    assert live.portfolio.cash == {"USDT": parse_config(BASE, "c.toml").portfolio.cash["USD"]}


def test_a_cash_account_keeps_the_configured_cash():
    spot = '\n[[venues]]\nname = "bn"\nkind = "binanceus"\nrest_url = "http://127.0.0.1:9"\n'
    cfg = run(venue=spot, market=BTC)
    assert cfg.portfolio.cash == parse_config(BASE, "c.toml").portfolio.cash
