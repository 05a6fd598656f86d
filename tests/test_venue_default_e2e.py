"""`gekko run --venue binanceus` on the shipped config trades paper out of the box, as real
processes: the shipped strategies trade the simulator's equities, so the venue gets the default
strategy (ops/venue_run.default_strategy: the momentum taker on its first symbol, long only,
sized in the quote currency above the venue's minimum notional), the run's first lines say so,
its orders pass the venue's rules and risk's limits (a real venue's position limit is notional:
``[risk] max_position_notional``; 2000 lots of 0.00001 BTC would be no position) and fill
against the venue's book (the local server replaying the real capture), and nothing is sent to
the venue."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.test_engine_e2e import counter
from tests.test_preflight import set_key
from tests.venue_e2e import BASE, VENUES, engine, server, stop, summary, venue_orders, wait_for

pytestmark = pytest.mark.timeout(240)


def test_venue_run_on_the_shipped_config_trades_paper_with_the_default_strategy(
    tmp_path: Path,
) -> None:
    v = VENUES["binanceus"]
    key, secret = v.keys()
    eid = "vd" + os.urandom(4).hex()
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "storage.postgres", 'mode = "off"')  # faster; the rest as shipped
    with server(v, key, secret, capture=True) as srv:
        text += (
            f'\n[[venues]]\nname = "binanceus"\nkind = "binanceus"\n'
            f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\n'
        )
        cfg = tmp_path / "gekko.toml"
        cfg.write_text(text)
        cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--venue", v.kind]
        with engine([*cmd, "--duration", "150", "--quiet"], dict(os.environ)) as proc:
            first = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
            assert first[0].startswith("PAPER trading on binanceus"), first
            assert first[1].startswith("default strategy on BTC/USDT: momentum taker"), first
            assert wait_for(lambda: counter(eid, "exec", "fills") >= 1, 150, proc)
            out, err = stop(proc)
        st = srv.state()
    assert proc.returncode == 0, err[-4000:]
    assert venue_orders(st) == []  # paper: the venue was only read
    s = summary(tmp_path)
    assert s["consistent"] is True, s
    pos = s["positions"]["BTC/USDT"]
    assert pos["position"] == pos["position_from_fills"] >= 0  # long only
    assert s["fills"] >= 1, s
    refused = {**s["risk_rejects_by_reason"], **s["venue_rules_rejects_by_reason"]}
    assert not [r for r in refused if "position" in r or "notional" in r], refused
