"""binanceusdm end to end, as real processes: the local USD-M futures server
(``python -m tests.venues binanceusdm``) and `gekko run --venue binanceusdm`.

Paper: the pre-flight lists the perpetual from the server (kind perpetual, margins from the
brackets and the ``leverage`` key), the run trades it through the simulated exchange on the
venue's stream and sends the venue nothing. Live: a TWAP buys 0.1 BTC at 10x; the venue pays
one funding time at mark 60000 and rate 0.01 % (-0.6 USDT), the account's wallet is moved out
to ~1000 USDT and the mark dropped to 50000, where the venue liquidates the long (clearance fee
0.1 * 50000 * 1.25 % = 62.5 USDT). The run's summary books each number the venue did.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.venue_e2e import (
    ServerProcess,
    Venue,
    _hex_keys,
    engine,
    fills,
    gekko_cmd,
    key_env,
    signed_fills,
    stop,
    summary,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(240)

PERP = Venue("binanceusdm", "BTC/USDT:USDT", "BTC", "USDT", 100, Decimal("0.001"), _hex_keys)
EXTRA = "leverage = 10\nperp_poll_s = 0.3\n"


def _post(srv: ServerProcess, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        f"{srv.rest_url}/__control/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _futures(srv: ServerProcess) -> dict[str, Any]:
    return srv.state()["futures"]["main"]


@pytest.mark.venue_matrix  # `make venues`: the paper path runs in tests/test_perp_paper.py too
def test_paper_run_trades_the_perpetual_and_sends_the_venue_nothing(tmp_path: Path) -> None:
    key, secret = PERP.keys()
    srv = ServerProcess(PERP, key, secret)
    try:
        cfg, _ = write_config(tmp_path, PERP, srv, live=False, duration_s=1.0, venue_extra=EXTRA)
        r = subprocess.run(
            gekko_cmd(cfg, PERP, "--duration", "3", "--quiet"),
            capture_output=True,
            text=True,
            timeout=200,
            cwd=tmp_path,
            env=key_env(PERP, key, secret),
        )
        st = srv.state()
    finally:
        srv.stop()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[0].startswith("PAPER trading on binanceusdm"), r.stdout[:300]
    s = summary(tmp_path)
    assert s["positions"][PERP.symbol]["position"] == PERP.qty == signed_fills(fills(tmp_path))
    # 0.1 BTC at ~60000 on 10x: initial margin 600, maintenance 0.4 % = 24 (the sim's account)
    margin = s["account"]["margin"]["binanceusdm"]
    assert margin["initial_margin"] == pytest.approx(600.0, rel=1e-3)
    assert margin["maintenance_margin"] == pytest.approx(24.0, rel=1e-3)
    assert s["account"]["liquidations"] == 0
    # the portfolio's cash is the account's USDT (the [portfolio] USD booked in it), not USD
    cash = s["portfolio"]["cash_by_currency"]
    assert set(cash) == {"USDT"} and cash["USDT"] == pytest.approx(1_000_000.0, abs=10.0)
    assert st["submitted"] == {} and "POST /fapi/v1/order" not in st["requests"]


def test_live_run_books_the_venues_funding_and_liquidation(tmp_path: Path) -> None:
    key, secret = PERP.keys()
    srv = ServerProcess(PERP, key, secret)
    try:
        cfg, _ = write_config(tmp_path, PERP, srv, live=True, duration_s=1.0, venue_extra=EXTRA)
        cmd = gekko_cmd(cfg, PERP, "--live", "--duration", "120", "--quiet")
        with engine(cmd, key_env(PERP, key, secret)) as proc:
            bought = lambda: _futures(srv)["positions"].get(PERP.symbol) == "0.10000000"  # noqa: E731
            assert wait_for(bought, 90, proc), proc.stderr.read() if proc.poll() else "no fill"
            _post(srv, "settings", {"mark_override": "60000.0", "funding_rate": "0.0001"})
            assert _post(srv, "fund", {})["paid"] == ["-0.60000000"]  # -0.1 * 60000 * 0.0001
            wallet = Decimal(_futures(srv)["wallet"])
            _post(srv, "transfer", {"amount": str(Decimal(1000) - wallet)})  # ~1000 left
            _post(srv, "settings", {"mark_override": "50000.0"})
            flat = lambda: Decimal(_futures(srv)["positions"][PERP.symbol]) == 0  # noqa: E731
            assert wait_for(lambda: srv.state()["force_orders"] == 1, 30, proc)
            assert wait_for(flat, 5, proc)
            wait_for(lambda: False, 2.0)  # the user stream and the REST poll reach the engine
            out, err = stop(proc)
        st = srv.state()
    finally:
        srv.stop()
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    s = summary(tmp_path)
    income = st["futures"]["main"]["income"]
    assert Decimal(income["FUNDING_FEE"]) == Decimal("-0.6")
    assert Decimal(income["INSURANCE_CLEAR"]) == Decimal("-62.5")  # 0.1 * 50000 * 1.25 %
    assert s["funding"] == pytest.approx(-0.6, abs=1e-9)
    assert s["account"]["liquidations"] == 1
    assert s["positions"][PERP.symbol]["position"] == 0  # the venue closed it, the run agrees
    assert s["account"]["by_currency"]["funding"] == {"USDT": -0.6}
    assert s["account"]["by_currency"]["liquidation_fees"] == {"USDT": 62.5}
    # the liquidation realized 0.1 * (50000 - the average entry), booked like a fill of ours
    fs = [f for f in fills(tmp_path) if f["type"] in ("OrderPartiallyFilled", "OrderFilled")]
    lots = sum(f["fill_qty"] for f in fs)
    assert lots == PERP.qty
    entry = sum(Decimal(f["fill_px"]) * f["fill_qty"] for f in fs) / lots * Decimal("0.1")
    pos = s["positions"][PERP.symbol]
    assert pos["realized"] == pytest.approx(float(Decimal("0.1") * (50000 - entry)), abs=1e-6)
    taker = sum(Decimal(str(f["fee"])) for f in fs)  # 5 bps of each fill's notional
    assert taker == pytest.approx(Decimal("0.0005") * Decimal("0.1") * entry, abs=Decimal("1e-6"))
    assert pos["fees"] == pytest.approx(float(taker) + 62.5, abs=1e-6)
