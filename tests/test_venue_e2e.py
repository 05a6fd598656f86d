"""Every real venue adapter end to end, as real processes: the local exchange server of each
kind (``python -m tests.venues``) and `gekko run --venue <kind>`, paper and then live.

- paper (the default): the run trades on the venue's live market data (Binance.US: the real
  capture where ../shared has it) through the simulated exchange, ends with positions equal to
  its fills, and never sends the venue an order;
- live (``live = true``, keys in the environment, ``--live``): the first line says LIVE, the
  TWAP's orders reach the server (each client id once), their fills come back, and the engine's
  position is the base asset the venue holds for the account.

SIGKILL of exec mid-order and a reconnect storm: tests/test_venue_e2e_faults.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_engine_e2e import shm_entries
from tests.venue_e2e import (
    KINDS,
    VENUES,
    assert_each_order_sent_once,
    assert_position_is_the_venue_balance,
    engine,
    expect,
    fills,
    gekko_cmd,
    key_env,
    position,
    server,
    settled,
    signed_fills,
    stop,
    summary,
    venue_orders,
    write_config,
)

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("kind", KINDS)
def test_paper_run_trades_on_the_venues_data_and_sends_it_nothing(
    tmp_path: Path, kind: str
) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    with server(v, key, secret, capture=True) as srv:
        cfg, eid = write_config(tmp_path, v, srv, live=False, duration_s=1.0)
        r = subprocess.run(
            gekko_cmd(cfg, v, "--duration", "3", "--quiet"),
            capture_output=True,
            text=True,
            timeout=200,
            cwd=tmp_path,
            env=key_env(v, key, secret),  # paper reads the account's fee tier with them
        )
        st = srv.state()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[0].startswith(f"PAPER trading on {kind}"), r.stdout[:300]
    s = summary(tmp_path)
    assert position(s, v) == v.qty == signed_fills(fills(tmp_path))  # the TWAP, all filled
    assert s["fills"] >= 4 and s["consistent"] is True and "failure" not in s
    assert s["ticks"] > 0  # the venue's market data reached the engine
    # paper never sends the venue an order: the server saw none
    assert st["submitted"] == {} and venue_orders(st) == []
    assert shm_entries(eid) == []


@pytest.mark.parametrize("kind", KINDS)
def test_live_run_orders_reach_the_venue_and_positions_equal_its_balances(
    tmp_path: Path, kind: str
) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    with server(v, key, secret) as srv:
        cfg, eid = write_config(tmp_path, v, srv, live=True, slices=4, duration_s=2.0)
        cmd = gekko_cmd(cfg, v, "--live", "--duration", "120", "--quiet")
        with engine(cmd, key_env(v, key, secret)) as proc:
            first = proc.stdout.readline()  # type: ignore[union-attr]
            assert first.strip() == f"LIVE trading on {kind}: real orders with real money", first
            expect(
                lambda: settled(srv, eid, v, orders=4),
                180,
                proc,
                "orders done, positions settled",
                srv.state,
            )
            out, err = stop(proc)
        st = srv.state()
    assert proc.returncode == 0, err[-4000:]
    s = summary(tmp_path)
    assert s["consistent"] is True and s["restarts"] == [] and "failure" not in s
    assert s["fills"] >= 4 and position(s, v) > 0
    assert position(s, v) == signed_fills(fills(tmp_path))
    assert_each_order_sent_once(st)
    assert len(venue_orders(st)) >= 4 and all(o["status"] != "open" for o in venue_orders(st))
    assert_position_is_the_venue_balance(s, st, v)
    assert key not in out + err and secret not in out + err
    assert shm_entries(eid) == []
