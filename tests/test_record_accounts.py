"""Account events in the record (migration 0010): the recorder stores funding, financing,
settlements, liquidations and margin status once each, recovery reads them back in publication
order from PostgreSQL and the journal, instruments keep their kind, and the run summary and
report show the P&L components apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.enums import RiskEventKind, SettlementKind
from engine.instruments import Instrument
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderFilled,
    RiskEvent,
    Settlement,
)
from ops.config import parse_config
from ops.html_report import render
from ops.report import RunRecord, format_summary, net_pnl
from ops.report_accounts import AccountTally, tally_from_pg
from ops.report_data import from_run
from ops.store import migrate as mig
from ops.store.journal import Journal
from ops.store.pg import run_tx
from ops.store.reader import load_run_state
from ops.store.writer import Rows, Writer

RUN = 17

CONFIG = """
[engine]
id = "acct"

[sim]
account = "margin"

[portfolio]
cash = { USDT = 100000.0, USD = 100000.0 }
base_currency = "USD"
fx_rates = { USDT = 0.5 }

[[instruments]]
instrument_id = 1
symbol = "BTC-PERP"
kind = "perpetual"
funding_interval_s = 28800
initial_margin = 0.05
maintenance_margin = 0.025
tick_size = 0.1
lot_size = 0.001
currency = "USDT"
initial_price = 60000.0

[[instruments]]
instrument_id = 2
symbol = "EUR/USD"
kind = "fx"
base_currency = "EUR"
pip_size = 0.0001
tick_size = 0.00001
lot_size = 1000.0
initial_margin = 0.0333
maintenance_margin = 0.0167
initial_price = 1.1
"""


def _events() -> list[Any]:
    """One of each account event, as a venue would publish them on the events ring."""
    return [
        FundingPayment(1, 0.0001, 600_000, 10, -6.0, "USDT", 1_000, 1_001, payment_id=1),
        Financing(2, 5, -0.75, "USD", 3, 2_000, 2_001, payment_id=2),
        MarginStatus("sim", "USD", 900.0, 300.0, 150.0, 2_500, margin_call=True),
        Liquidation(1, -1, 590_000, 4, 1.5, 3_000, 3_001, liquidation_id=3),
        Settlement(1, int(SettlementKind.EXPIRY), 595_000, 1, 6, 4_000, 4_001, 4, fee=0.25),
        FundingPayment(1, -0.0002, 600_000, 6, 7.2, "USDT", 5_000, 5_001, payment_id=5),
    ]


@pytest.fixture
def db(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    return pg_dsn


def _write(dsn: str, msgs: list[Any]) -> int:
    rows = Rows()
    for m in msgs:
        rows.add(RUN, m)
    assert rows.ignored == 0  # every account event has its table
    with psycopg.connect(dsn) as c:
        return run_tx(c, lambda conn: Writer().write(conn, rows))


def test_account_events_are_stored_once_with_their_columns(db: str) -> None:
    evs = _events()
    assert _write(db, evs) == len(evs)
    _write(db, evs[2:])  # a recorder restart re-reads a batch: stored once
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT kind, instrument_id, venue, currency, amount, px, qty, ts_event"
            " FROM account_events WHERE run_id = %s ORDER BY seq",
            (RUN,),
        ).fetchall()
    assert rows == [
        ("FundingPayment", 1, "", "USDT", -6.0, 600_000, 10, 1_000),
        ("Financing", 2, "", "USD", -0.75, 0, 5, 2_000),
        ("MarginStatus", -1, "sim", "USD", 900.0, 0, 0, 2_500),
        ("Liquidation", 1, "", "", -1.5, 590_000, -4, 3_000),  # the closing sell; fee paid
        ("Settlement", 1, "", "", -0.25, 595_000, 6, 4_000),
        ("FundingPayment", 1, "", "USDT", 7.2, 600_000, 6, 5_000),
    ]


def test_recovery_reads_them_back_from_the_database_and_the_journal(
    db: str, tmp_path: Path
) -> None:
    evs = _events()
    order = NewOrder(1, 1, 1, 1, 2, 1, 600_000, 10, 5, 6)
    fill = OrderFilled(1, 9, 1, 1, 600_000, 10, 10, 0, 0.3, 2, 1, 5, 900, 901)
    _write(db, [order, fill, *evs[:3]])
    j = Journal(tmp_path / "r.journal")
    j.append(evs[1:])  # overlaps what the database holds (a crash between COPY and truncate)
    with psycopg.connect(db) as c:
        state = load_run_state(c, RUN, j.path)
    assert state.account_events == evs
    assert state.events == [fill]  # the account events are not order events
    assert state.from_journal == 3
    alone = load_run_state(None, RUN, j.path)  # the database down: the journal alone
    assert alone.account_events == evs[1:]


def test_instruments_keep_their_kind_and_its_keys(db: str) -> None:
    cfg = parse_config(CONFIG, "a.toml")
    with psycopg.connect(db) as c:
        run_tx(c, lambda conn: Writer.write_instruments(conn, cfg.instruments))
        got = dict(
            (r[0], (r[1], r[2]))
            for r in c.execute("SELECT symbol, kind, spec FROM instruments").fetchall()
        )
    assert got["BTC-PERP"] == (
        "perpetual",
        {"initial_margin": 0.05, "maintenance_margin": 0.025, "funding_interval_s": 28800},
    )
    kind, spec = got["EUR/USD"]
    assert kind == "fx" and spec["base_currency"] == "EUR" and spec["pip_size"] == 0.0001
    assert "expiry_ns" not in spec  # defaults are left out


def test_the_run_summary_shows_the_pnl_components_apart() -> None:
    cfg = parse_config(CONFIG, "a.toml")
    rec = RunRecord(cfg)
    rec.on_order(NewOrder(1, 1, 1, 1, 2, 1, 600_000, 10, 5, 6))
    rec.on_event(OrderFilled(1, 9, 1, 1, 600_000, 10, 10, 0, 0.3, 2, 1, 5, 900, 901))
    for e in _events():
        rec.on_event(e)
    rec.on_risk(RiskEvent(int(RiskEventKind.MARGIN_CALL), -1, 0, "margin call", 900, 150, 2_500))
    s = rec.summary({}, None)
    # funding in USDT (-6 + 7.2) at 0.5 USD; financing in USD; the expiry's fee is a fee (in
    # exec's fees already), not a betting commission
    assert s["funding"] == pytest.approx(0.6)
    assert s["financing"] == pytest.approx(-0.75)
    assert s["commission"] == 0.0
    acct = s["account"]
    assert acct["by_currency"]["funding"] == {"USDT": pytest.approx(1.2)}
    assert acct["by_currency"]["liquidation_fees"] == {"USDT": 1.5}
    assert (acct["settlements"], acct["liquidations"], acct["margin_calls"]) == (1, 1, 1)
    assert acct["margin"]["sim"]["margin_call"] is True
    # the fill, the liquidation's sell of 4 and the settlement of the 6 left: flat by the record
    assert rec.fill_position[1] == 0
    s.update(realized=10.0, unrealized=0.0, fees=0.3)
    assert net_pnl(s) == pytest.approx(10.0 - 0.3 + 0.6 - 0.75)
    text = format_summary(s | {"positions": {}}, cfg)
    assert "funding +0.60" in text and "financing -0.75" in text and "commission" not in text
    assert f"net {net_pnl(s):+.2f}" in text
    assert "funding +1.20 USDT" in text and "liquidation fees +1.50 USDT" in text
    assert "settlements 1  liquidations 1  margin calls 1" in text
    assert "MARGIN CALL" in text
    page = render(from_run(rec, s, {}, cfg, RUN))
    for figure in ("funding", "financing", "liquidations", "margin calls"):
        assert f"<td>{figure}</td>" in page


def test_a_betting_markets_commission_is_its_own_component() -> None:
    cfg = parse_config(
        '[engine]\nid = "bet"\n[sim]\naccount = "betting"\n[[instruments]]\ninstrument_id = 3\n'
        'symbol = "HOME"\nkind = "betting"\nmarket_id = "1.1"\noutcome = "Home"\n'
        'currency = "GBP"\ninitial_price = 3.0\n[portfolio]\nfx_rates = { GBP = 1.25 }\n',
        "b.toml",
    )
    rec = RunRecord(cfg)
    rec.on_event(OrderFilled(1, 9, 3, 1, 300, 40, 40, 0, 0.0, 2, 1, 5, 900, 901))  # back 40 @ 3
    rec.on_event(Settlement(3, int(SettlementKind.RESOLVED), 0, 1, 40, 9, 9, 7, fee=4.0))
    s = rec.summary({}, None)
    assert s["commission"] == pytest.approx(5.0)  # 4 GBP at 1.25
    assert s["account"]["by_currency"]["commission"] == {"GBP": 4.0}
    assert "commission 5.00" in format_summary(s | {"positions": {}}, cfg)
    page = render(from_run(rec, s, {}, cfg, RUN))
    assert "<td>commission</td>" in page


def test_both_sources_of_the_report_agree(db: str) -> None:
    # a betting selection of another venue: its settlement's fee is the market's commission
    bet = Settlement(9, int(SettlementKind.RESOLVED), 0, 1, 40, 6_000, 6_001, 8, fee=2.0)
    evs = [*_events(), bet]
    _write(db, evs)
    cfg = parse_config(CONFIG, "a.toml")
    home = Instrument(
        instrument_id=9, symbol="HOME", kind="betting", market_id="1.1", currency="GBP"
    )
    with psycopg.connect(db) as c:  # the recorder writes the instruments at its start
        run_tx(c, lambda conn: Writer.write_instruments(conn, [*cfg.instruments, home]))
    tally = AccountTally({1: "USDT", 2: "USD", 9: "GBP"}, {}, betting=[9])
    for e in evs:
        tally.on_event(e)
    with psycopg.connect(db) as c:
        pg = tally_from_pg(c, RUN)
    mine = tally.summary()["account"]["by_currency"]
    assert pg["by_currency"] == mine and mine["commission"] == {"GBP": 2.0}
    assert (pg["settlements"], pg["liquidations"], pg["margin_status"]) == (2, 1, 1)


@pytest.mark.timeout(120)
def test_the_recorder_process_stores_them_from_the_events_ring(
    tmp_path: Path, pg_dsn: str, engine_id: str
) -> None:
    from tests.test_recorder import RUN_ID, Rig

    rig = Rig(tmp_path, engine_id, pg_dsn)
    try:
        rig.start()
        rig.prod["events"].publish_batch(_events())
        assert rig.stop() == 0
        assert rig.counters()["ignored"] == 0
        with psycopg.connect(pg_dsn) as c:
            kinds = [
                r[0]
                for r in c.execute(
                    "SELECT kind FROM account_events WHERE run_id = %s ORDER BY seq", (RUN_ID,)
                )
            ]
            state = load_run_state(c, RUN_ID)
    finally:
        rig.close()
    assert kinds == [type(e).__name__ for e in _events()]
    assert state.account_events == _events()
