"""Live runs that meet trouble, for every real venue adapter, as real processes (the local
exchange server of each kind and `gekko run --venue <kind> --live`; shared pieces in
tests/venue_e2e.py):

- exec SIGKILLed while the venue holds its order's answer (``delay_ack``: the order is in the
  book, its ack not yet sent): the supervisor restarts exec, which finds the order by its client
  id instead of sending it again; every order reached the venue exactly once and the engine's
  position is the venue's balance;
- a reconnect storm (``disconnect`` and ``stall`` faults in a row over the control route): the
  engine keeps running (no worker restarted), the market data and the user stream come back,
  the venue's state shows where the operator looks (the log, `gekko status`), and the run ends
  consistent with the venue.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_engine_e2e import _children, _cmd, counter, is_ready, shm_entries
from tests.venue_e2e import (
    KINDS,
    VENUES,
    ServerProcess,
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
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(300)


def _live_line(proc: subprocess.Popen[str], kind: str) -> None:
    first = proc.stdout.readline()  # type: ignore[union-attr]
    assert first.strip() == f"LIVE trading on {kind}: real orders with real money", first


KILL_TWAP_S = 10.0  # 4 children, 2.5 s apart: exec's restart (seconds here) fits in the window


@pytest.mark.parametrize("kind", KINDS)
def test_exec_killed_mid_order_comes_back_without_losing_or_resending_it(
    tmp_path: Path, kind: str
) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    with server(v, key, secret) as srv:
        srv.fault("delay_ack", delay_s=3.0)  # the first order's answer: held 3 s
        # a TWAP window longer than exec's restart (a window that ends while exec is down
        # ends its parent by policy: nothing more would be sent after the restart)
        cfg, eid = write_config(tmp_path, v, srv, live=True, slices=4, duration_s=KILL_TWAP_S)
        cmd = gekko_cmd(cfg, v, "--live", "--duration", "120", "--quiet")
        with engine(cmd, key_env(v, key, secret)) as proc:
            _live_line(proc, kind)
            # the order is in the venue's book; exec waits for its answer: kill exec now
            held = lambda: srv.state()["fired"].get("delay_ack", 0) >= 1  # noqa: E731
            expect(held, 180, proc, "an order whose answer the venue holds")
            window_end = time.monotonic() + KILL_TWAP_S + 2.0
            victims = [c for c in _children(proc.pid) if "exec" in _cmd(c)]
            assert victims, "exec worker not found"
            old = victims[0].pid
            os.kill(old, signal.SIGKILL)
            expect(lambda: is_ready(eid, "exec", not_pid=old), 120, proc, "exec restarted")
            expect(
                # one order after the restart at least: the TWAP went on
                lambda: settled(srv, eid, v, orders=2, not_before=window_end),
                180,
                proc,
                "orders done, positions settled",
                srv.state,
            )
            out, err = stop(proc)
        st = srv.state()
    assert proc.returncode == 0, err[-4000:]
    s = summary(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"], s["restarts"]
    assert s["consistent"] is True and "failure" not in s
    assert position(s, v) == signed_fills(fills(tmp_path)) > 0
    assert_each_order_sent_once(st)  # the held order was not sent again
    assert_position_is_the_venue_balance(s, st, v)
    assert shm_entries(eid) == []


TWAP_S = 6.0  # the storm run's TWAP window (6 children)
STORM = [("disconnect", {}), ("stall", {"seconds": 1.5}), ("disconnect", {})]
STORM += [("stall", {"seconds": 1.5}), ("disconnect", {})]


def _accepted(srv: ServerProcess) -> int:
    """Websockets the server has accepted so far (a reconnect opens a new one)."""
    return sum(srv.state()["ws_accepted"].values())


def _status(cfg: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "ops.cli", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    return r.stdout + r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_reconnect_storm_keeps_the_engine_trading_and_consistent(tmp_path: Path, kind: str) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    with server(v, key, secret) as srv:
        # a silent stream is noticed after 1 s (the default, 10 s, would outlast the test)
        cfg, eid = write_config(
            tmp_path,
            v,
            srv,
            live=True,
            slices=6,
            duration_s=TWAP_S,
            venue_extra="stale_after_s = 1.0\n",
        )
        cmd = gekko_cmd(cfg, v, "--live", "--duration", "120", "--quiet")
        with engine(cmd, key_env(v, key, secret)) as proc:
            _live_line(proc, kind)
            expect(lambda: len(venue_orders(srv.state())) >= 1, 180, proc, "a first order")
            window_end = time.monotonic() + TWAP_S + 2.0  # the TWAP sends nothing after it
            for name, args in STORM:  # each fault, then the engine's new connection
                before = _accepted(srv)
                srv.fault(name, **args)
                expect(lambda b=before: _accepted(srv) > b, 60, proc, f"a reconnect after {name}")
            assert counter(eid, "feed", "md_reconnects") >= 1
            expect(
                lambda: settled(srv, eid, v, not_before=window_end),
                180,
                proc,
                "orders done, positions settled",
                srv.state,
            )
            back = f"venue {kind}: connected"  # `gekko status`, once the storm is over
            assert wait_for(lambda: back in _status(cfg), 60, proc)
            assert "market data: connected" in _status(cfg)
            out, err = stop(proc)
        st = srv.state()
    assert proc.returncode == 0, err[-4000:]
    # the supervisor logged the venue's state changes: away from connected and back
    states = re.findall(rf"venue {kind}: (\w+)", err)
    assert any(x != "connected" for x in states) and states[-1] == "connected", states
    md = re.findall(r"venue market data: (\w+)", err)  # the feed's side of it
    assert any(x != "connected" for x in md) and md[-1] == "connected", md
    s = summary(tmp_path)
    assert s["restarts"] == [] and s["consistent"] is True and "failure" not in s
    assert position(s, v) == signed_fills(fills(tmp_path)) > 0
    assert_each_order_sent_once(st)
    assert all(o["status"] != "open" for o in venue_orders(st))
    assert_position_is_the_venue_balance(s, st, v)
    assert shm_entries(eid) == []
