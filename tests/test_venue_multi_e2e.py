"""One venue down leaves the others and the simulator trading, as real processes: `gekko run` on
the shipped config with a simulated venue beside two paper Binance.US venues, each at its own
local server (``python -m tests.venues binanceus``). Both list BTC/USDT: the engine has one
instrument per venue, ``BTC/USDT@bn`` and ``BTC/USDT@bn2``, each fed by its own venue. The feed
reads all three markets (engine.venues.merged_data); a killed feed resumes the simulated market
where it was. One server is SIGKILLed mid-run: the simulator's instruments go on filling, the
other venue stays connected, the dead venue's market data is named down where the operator looks
(`gekko status`, the supervisor's log), its instrument alone is halted (its book is stale), and
the run ends consistent (positions = fills, the venues' instruments included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procs.venue_status import md_states, venue_names
from tests.conftest import ROOT
from tests.test_engine_e2e import _children, _cmd, counter, is_ready
from tests.test_preflight import set_key
from tests.venue_e2e import BASE, VENUES, engine, server, stop, summary, wait_for

pytestmark = pytest.mark.timeout(240)

TWAP = """
[[strategies]]
id = {sid}
path = "engine.strategies.scheduled:ScheduledExecution"
instruments = ["{name}"]
[strategies.params]
algo = "twap"
side = "buy"
qty = 1000
[strategies.params.algo_params]
duration_s = 1.0
slices = 2
"""
VENUE = """
[[venues]]
name = "{name}"
kind = "binanceus"
rest_url = "{rest_url}"
ws_url = "{ws_url}"
stale_after_s = 2.0
reconnect_max_s = 2.0
"""


def _config(tmp_path: Path, eid: str, servers: dict[str, Any]) -> Path:
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    text = set_key(text, "storage.postgres", 'mode = "off"')
    # the shipped strategies trade the simulator's; these each venue's BTC/USDT
    for k, name in enumerate(servers):
        text += TWAP.format(sid=8 + k, name=f"BTC/USDT@{name}")
    text += '\n[[venues]]\nname = "alpha"\nkind = "sim"\n'
    for name, srv in servers.items():
        text += VENUE.format(name=name, rest_url=srv.rest_url, ws_url=srv.ws_url)
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


def test_a_dead_venue_leaves_the_other_and_the_simulator_trading(tmp_path: Path) -> None:
    v = VENUES["binanceus"]
    key, secret = v.keys()
    eid = "vm" + os.urandom(4).hex()
    with server(v, key, secret) as bn, server(v, key, secret) as bn2:
        cfg = _config(tmp_path, eid, {"bn": bn, "bn2": bn2})
        cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg)]
        with engine([*cmd, "--duration", "120", "--quiet"], dict(os.environ)) as proc:
            first = proc.stdout.readline()  # type: ignore[union-attr]
            assert first.startswith("PAPER trading on bn, bn2"), first
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 0, 120, proc)
            # every market flows: both venues' TWAPs fill (2 slices each), and the simulator's
            assert wait_for(lambda: counter(eid, "exec", "fills") >= 10, 90, proc)
            assert "market data: connected" in _status(cfg)
            # a killed feed comes back: the venues from a fresh snapshot, the simulated market
            # where it was (md_paced), not from its start
            feed = next(c for c in _children(proc.pid) if "feed" in _cmd(c))
            paced = counter(eid, "feed", "md_paced")
            os.kill(feed.pid, signal.SIGKILL)
            assert wait_for(lambda: is_ready(eid, "feed", not_pid=feed.pid), 90, proc)
            assert wait_for(lambda: counter(eid, "feed", "md_paced") > paced + 100, 60, proc)
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 0, 60, proc)
            bn.proc.send_signal(signal.SIGKILL)  # one venue dies mid-run
            bn.proc.wait(timeout=30)
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 2, 60, proc)
            assert wait_for(lambda: "market data: bn down" in _status(cfg), 30, proc)
            fills = counter(eid, "exec", "fills")
            published = counter(eid, "feed", "md_out")
            # the simulator's instruments keep trading without it, the other venue's data flows
            assert wait_for(lambda: counter(eid, "exec", "fills") >= fills + 20, 90, proc)
            assert counter(eid, "feed", "md_out") > published + 500
            states = md_states(venue_names(_load(cfg)), counter(eid, "feed", "md_states"))
            assert states["bn2"] == "connected" and states["bn"] in ("down", "resyncing")
            out, err = stop(proc)
    assert proc.returncode == 0, err[-4000:]
    assert "venue market data: bn down" in err
    # its instrument halted on its stale book (fail closed); the other venue's and the
    # simulator's never
    halts = [ln for ln in err.splitlines() if "exchange status" in ln and "HALTED" in ln]
    assert halts and all("BTC/USDT@bn " in ln and "market data down" in ln for ln in halts), halts
    s = summary(tmp_path)
    assert s["consistent"] is True, s
    pos = s["positions"]
    for sym in ("BTC/USDT@bn", "BTC/USDT@bn2", "AAPL", "MSFT", "XOM"):
        assert sym in pos, (sym, sorted(pos))
        assert pos[sym]["position"] == pos[sym]["position_from_fills"], (sym, pos[sym])
    # each venue's TWAP filled whole on its own venue's book (bn's before it died)
    assert pos["BTC/USDT@bn"]["position"] == pos["BTC/USDT@bn2"]["position"] == 1000
    assert [r["worker"] for r in s["restarts"]] == ["feed"]  # the one we killed
    ready = [ln for ln in err.splitlines() if "feed ready" in ln]
    assert len(ready) == 2 and "resuming at event 0)" in ready[0], ready
    resumed = int(ready[1].rsplit("resuming at event ", 1)[1].rstrip(")"))
    assert resumed >= paced  # the simulated market went on from where it was


def _load(cfg: Path) -> Any:
    from ops.config import load_config

    return load_config(str(cfg))
