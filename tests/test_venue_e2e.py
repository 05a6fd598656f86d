"""Every real venue adapter end to end, as real processes: the local exchange server of each
kind (``python -m tests.venues``) and `gekko run --venue <kind>`, paper here.

Paper (the default): the run loads the venue's markets in its pre-flight (over ccxt, from the
local server), trades on the venue's live market data (Binance.US: the real capture where
../shared has it) through the simulated exchange (a TWAP of market orders matched against the
venue's book), ends with positions equal to its fills, and never sends the venue an order. API
keys are used (the account's fee tier) and appear nowhere the run writes: logs, summaries,
reports, journals and, on Binance.US (keys from the encrypted keystore, PostgreSQL and the
Redis bridge on), every PostgreSQL table and every Redis key of the engine; neither does the
keystore's passphrase.

Live (the first line says LIVE, orders reach the venue once each, positions = the venue's
balances), with exec SIGKILLed mid-order and a reconnect storm in the same run:
tests/test_venue_e2e_faults.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.test_engine_e2e import shm_entries
from tests.test_preflight import set_key
from tests.test_secrets_e2e import _redis_blobs, _tables_holding
from tests.venue_e2e import (
    KINDS,
    VENUES,
    fills,
    gekko_cmd,
    key_env,
    keystore_for,
    leaked_keys,
    position,
    server,
    signed_fills,
    summary,
    venue_orders,
    write_config,
)

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("kind", KINDS)
def test_paper_run_trades_on_the_venues_data_sends_it_nothing_and_keeps_keys_out_of_everything(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    storage = kind == "binanceus"  # PostgreSQL and Redis searched for the keys too (once)
    env = key_env(v, key, secret)  # paper reads the account's fee tier with them
    venue_extra, config_extra, passphrase = "", "", ""
    if storage:  # the keys from the encrypted keystore instead
        venue_extra, config_extra, passphrase = keystore_for(tmp_path, v, key, secret)
        env = dict(os.environ)
    with server(v, key, secret, capture=True) as srv:
        cfg, eid = write_config(
            tmp_path,
            v,
            srv,
            live=False,
            duration_s=1.0,
            storage=storage,
            venue_extra=venue_extra,
            config_extra=config_extra,
        )
        if storage:  # the test's servers: every table and every Redis key searched after
            pg_dsn, redis_url = (request.getfixturevalue(f) for f in ("pg_dsn", "redis_url"))
            text = set_key(cfg.read_text(), "storage.postgres", f'mode = "{pg_dsn}"')
            cfg.write_text(set_key(text, "storage.redis", f'mode = "{redis_url}"'))
        r = subprocess.run(
            gekko_cmd(cfg, v, "--duration", "3", "--quiet"),
            capture_output=True,
            text=True,
            timeout=200,
            cwd=tmp_path,
            env=env,
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
    # the keys were used (Binance.US: the account's fee tier was asked for, its fees charged
    # by the simulated exchange) and written nowhere
    needles = [key, secret] + ([passphrase] if passphrase else [])
    assert leaked_keys(tmp_path, *needles) == []
    assert not any(n in r.stdout + r.stderr for n in needles)
    if storage:
        assert sum(n for k, n in st["requests"].items() if "/sapi/v1/asset/" in k) >= 1
        assert s["positions"][v.symbol]["fees"] > 0
        var = tmp_path / "var"
        stores = {p.relative_to(var).parts[0] for p in var.rglob("*") if p.is_file()}
        assert {"journal", "last_run"} <= stores  # what was searched, beside the servers
        assert (var / "last_run" / "report.html").exists()  # the report: searched too
        blobs = _redis_blobs(redis_url, eid)
        assert blobs  # the bridge wrote the engine's keys: each searched
        for n in needles:
            assert [k for k, b in blobs.items() if n.encode() in b] == [], "in Redis"
            assert _tables_holding(pg_dsn, n) == [], "in PostgreSQL"
