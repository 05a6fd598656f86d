"""One venue down leaves the others and the simulator trading, as real processes: `gekko run` on
the shipped config with a simulated venue beside a paper Binance.US venue at the local server
(``python -m tests.venues binanceus``). The feed reads both (engine.venues.merged_data); the
server is SIGKILLed mid-run; the simulator's instruments go on filling, the dead venue's market
data is named down where the operator looks (`gekko status`, the supervisor's log), its
instrument is halted (its book is stale), and the run ends consistent (positions = fills, the
venue's instrument included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_engine_e2e import counter
from tests.test_preflight import set_key
from tests.venue_e2e import BASE, VENUES, engine, server, stop, summary, wait_for

pytestmark = pytest.mark.timeout(240)

TWAP = """
[[strategies]]
id = 9
path = "engine.strategies.scheduled:ScheduledExecution"
instruments = ["BTC/USDT"]
[strategies.params]
algo = "twap"
side = "buy"
qty = 1000
[strategies.params.algo_params]
duration_s = 1.0
slices = 2
"""


def _config(tmp_path: Path, eid: str, rest_url: str, ws_url: str) -> Path:
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    text = set_key(text, "storage.postgres", 'mode = "off"')
    text += TWAP  # the shipped strategies trade the simulator's; this one the venue's
    text += (
        '\n[[venues]]\nname = "alpha"\nkind = "sim"\n'
        f'\n[[venues]]\nname = "bn"\nkind = "binanceus"\nrest_url = "{rest_url}"\n'
        f'ws_url = "{ws_url}"\nstale_after_s = 2.0\nreconnect_max_s = 2.0\n'
    )
    path = tmp_path / "gekko.toml"
    path.write_text(text)
    return path


def _status(cfg: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "ops.cli", "status", "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.stdout


def test_a_dead_venue_leaves_the_simulator_trading(tmp_path: Path) -> None:
    v = VENUES["binanceus"]
    key, secret = v.keys()
    eid = "vm" + os.urandom(4).hex()
    with server(v, key, secret) as srv:
        cfg = _config(tmp_path, eid, srv.rest_url, srv.ws_url)
        cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg)]
        with engine([*cmd, "--duration", "120", "--quiet"], dict(os.environ)) as proc:
            first = proc.stdout.readline()  # type: ignore[union-attr]
            assert first.startswith("PAPER trading on bn"), first
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 0, 120, proc)
            # both markets flow: the venue's TWAP fills (2 slices) and the simulator's strategies
            assert wait_for(lambda: counter(eid, "exec", "fills") >= 10, 90, proc)
            assert "market data: connected" in _status(cfg)
            srv.proc.send_signal(signal.SIGKILL)  # the venue dies mid-run
            srv.proc.wait(timeout=30)
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 2, 60, proc)
            assert wait_for(lambda: "market data: bn down" in _status(cfg), 30, proc)
            fills = counter(eid, "exec", "fills")
            published = counter(eid, "feed", "md_out")
            # the simulator's instruments keep trading without the venue
            assert wait_for(lambda: counter(eid, "exec", "fills") >= fills + 20, 90, proc)
            assert counter(eid, "feed", "md_out") > published + 500
            out, err = stop(proc)
    assert proc.returncode == 0, err[-4000:]
    assert "venue market data: bn down" in err
    # its instruments halted on its stale book (fail closed), the simulator's never
    halts = [ln for ln in err.splitlines() if "exchange status" in ln and "HALTED" in ln]
    assert halts and all("BTC/USDT" in ln and "market data down" in ln for ln in halts), halts
    s = summary(tmp_path)
    assert s["consistent"] is True, s
    pos = s["positions"]
    for sym in ("BTC/USDT", "AAPL", "MSFT", "XOM"):
        assert sym in pos, (sym, sorted(pos))
        assert pos[sym]["position"] == pos[sym]["position_from_fills"], (sym, pos[sym])
    assert pos["BTC/USDT"]["position"] == 1000  # the venue's TWAP filled whole before it died
    assert [r["worker"] for r in s["restarts"]] == []  # nothing had to restart
