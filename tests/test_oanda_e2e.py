"""`gekko run --venue oanda` as real processes against the local v20 server: paper on its
pricing stream (the server never sees an order), and live with the three gates (every TWAP
child reaches OANDA once; the engine's position is the account's).

The server runs on the test's own thread (tests/venues/oanda.py): the engine's workers are
processes that reach it over 127.0.0.1 like any other venue.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.venue_e2e import (
    Venue,
    engine,
    expect,
    fills,
    gekko_cmd,
    key_env,
    leaked_keys,
    position,
    signed_fills,
    stop,
    summary,
    write_config,
)
from tests.venues.oanda import ACCOUNT, TOKEN, OandaServer

pytestmark = pytest.mark.timeout(240)

FX = Venue("oanda", "EUR/USD", "EUR", "USD", 1000, Decimal(1), lambda: (TOKEN, ACCOUNT))


@pytest.fixture
def srv() -> Iterator[OandaServer]:
    s = OandaServer(tick_s=0.05, heartbeat_s=1.0).start()
    yield s
    s.stop()


def _run(tmp_path: Path, srv: OandaServer, live: bool) -> subprocess.CompletedProcess[str]:
    extra = f'stream_url = "{srv.rest_url}"\naccount_id = "{ACCOUNT}"\n'
    cfg, _ = write_config(tmp_path, FX, srv, live=live, duration_s=1.0, venue_extra=extra)  # type: ignore[arg-type]
    args = ("--duration", "3", "--quiet") + (("--live",) if live else ())
    return subprocess.run(
        gekko_cmd(cfg, FX, *args),
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        env=key_env(FX, TOKEN, ACCOUNT),  # the token and the account id (api_key, api_secret)
    )


def _orders_sent(srv: OandaServer) -> int:
    return sum(n for k, n in srv.state()["requests"].items() if k == "POST orders")


def test_paper_run_trades_on_oandas_prices_and_sends_it_nothing(
    tmp_path: Path, srv: OandaServer
) -> None:
    r = _run(tmp_path, srv, live=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[0].startswith("PAPER trading on oanda"), r.stdout[:300]
    s = summary(tmp_path)
    assert position(s, FX) == FX.qty == signed_fills(fills(tmp_path))  # the TWAP, all filled
    assert s["ticks"] > 0 and s["consistent"] is True and "failure" not in s
    st = srv.state()
    assert _orders_sent(srv) == 0 and st["accounts"][ACCOUNT]["positions"] == []
    # the prices were read with the account's token (the feed had the keys) ...
    assert st["requests"].get("GET pricing/stream", 0) >= 1
    # ... and the keys were written nowhere
    assert leaked_keys(tmp_path, TOKEN, TOKEN) == []  # the account id is no secret
    assert TOKEN not in r.stdout + r.stderr


def test_live_run_sends_each_order_once_and_books_financing_paid_while_the_stream_was_down(
    tmp_path: Path, srv: OandaServer
) -> None:
    """A live run: every TWAP child reaches OANDA once and the engine ends with the account's
    position; it holds EUR/USD over a (Wednesday) rollover that OANDA pays while the
    transaction stream is down: the log is read from our last id, and the run's financing is
    what OANDA booked."""
    extra = f'stream_url = "{srv.rest_url}"\naccount_id = "{ACCOUNT}"\n'
    cfg, _ = write_config(tmp_path, FX, srv, live=True, duration_s=1.0, venue_extra=extra)  # type: ignore[arg-type]
    cmd = gekko_cmd(cfg, FX, "--duration", "30", "--quiet", "--live")

    def held() -> bool:
        pos = srv.state()["accounts"][ACCOUNT]["positions"]
        return bool(pos) and Decimal(pos[0]["long"]["units"]) == FX.qty

    with engine(cmd, key_env(FX, TOKEN, ACCOUNT)) as proc:
        expect(held, 60, proc, "the TWAP filled at OANDA")
        srv.faults.arm("fill_while_down")  # the stream drops; nothing is streamed meanwhile
        wednesday = dt.datetime(2026, 12, 9, 17, 0, tzinfo=ZoneInfo("America/New_York"))
        tx = srv.rollover(when_ns=int(wednesday.timestamp() * 1e9))
        asked = _log_reads(srv)
        srv.faults.clear("fill_while_down")
        # the client reads the log after the rollover (a reconnect, or a heartbeat ahead of it)
        expect(lambda: _log_reads(srv) > asked, 30, proc, "the log read after the rollover")
        time.sleep(0.5)  # from exec through the rings to the portfolio
        out, err = stop(proc)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    assert out.splitlines()[0].startswith("LIVE trading on oanda"), out[:300]
    assert srv.withheld >= 1  # the financing never came on the stream
    s = summary(tmp_path)
    assert position(s, FX) == FX.qty == signed_fills(fills(tmp_path))
    st = srv.state()["accounts"][ACCOUNT]
    (pos,) = st["positions"]
    assert Decimal(pos["long"]["units"]) == FX.qty  # OANDA holds what the engine says it holds
    cids = [o["clientExtensions"]["id"] for o in st["orders"] if o["state"] == "FILLED"]
    assert len(cids) == len(set(cids)) == _orders_sent(srv) >= 2  # each child sent once
    want = float(tx["financing"])
    assert want < 0  # long EUR at a negative long rate: the account pays, three days' worth
    assert s["financing"] == pytest.approx(want, abs=1e-6), s
    assert leaked_keys(tmp_path, TOKEN, TOKEN) == []  # the account id is no secret


def _log_reads(srv: OandaServer) -> int:
    return int(srv.state()["requests"].get("GET transactions/sinceid", 0))
