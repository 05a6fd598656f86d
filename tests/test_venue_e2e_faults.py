"""Live runs, for every real venue adapter, as real processes (the local exchange server of each
kind and `gekko run --venue <kind> --live`, keys in the environment; shared pieces in
tests/venue_e2e.py). One run per adapter proves, in order:

- the first line says LIVE, and the TWAP's orders reach the server signed with the keys;
- exec SIGKILLed while the venue holds its order's answer (``delay_ack``: the order is in the
  book, its ack not yet sent): the supervisor restarts exec, which finds the order by its client
  id instead of sending it again, and the TWAP goes on (an order after the restart);
- then a reconnect storm (``disconnect`` and ``stall`` faults in a row over the control route):
  the engine keeps running (no worker restarted but the exec we killed), the market data and the
  user stream come back, the venue's state shows where the operator looks (the log,
  `gekko status`);
- and the run ends consistent with the venue: every order reached it exactly once, none is left
  open, the engine's position is the base asset the venue holds for the account, and the keys
  appear nowhere the run writes.

Paper runs: tests/test_venue_e2e.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
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
    keystore_for,
    leaked_keys,
    position,
    server,
    settled,
    signed_fills,
    stop,
    summary,
    venue_orders,
    write_config,
)

pytestmark = pytest.mark.timeout(300)

# 4 children, 2.5 s apart: exec's restart (seconds here) fits in the window (a window that ends
# while exec is down ends its parent by policy: nothing more would be sent)
TWAP_S, SLICES = 10.0, 4
STORM = [("disconnect", {}), ("stall", {"seconds": 1.5}), ("disconnect", {})]
STORM += [("stall", {"seconds": 1.5}), ("disconnect", {})]
# the call that asks the venue what the key may do (engine/venues/ccxt_permissions.py)
_PROBES = {
    "binanceus": "/sapi/v1/account/apiRestrictions",
    "coinbase": "/api/v3/brokerage/key_permissions",
    "kraken": "/0/private/WithdrawMethods",
}


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


def _venue_metrics(tmp_path: Path, eid: str, kind: str) -> dict[str, float]:
    """The live venue's figures as Prometheus scrapes them (docs/metrics.md), once exec has
    published them (at most a second after a change)."""
    from prometheus_client.parser import text_string_to_metric_families

    addr = (tmp_path / "var" / "run" / f"metrics-{eid}.addr").read_text().strip()
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        fams = text_string_to_metric_families(r.read().decode())
    out: dict[str, float] = {}
    for f in fams:
        for s in f.samples:
            if s.labels.get("venue", kind) != kind:
                continue
            key = s.name + "".join(
                f"|{k}={s.labels[k]}"
                for k in ("state", "code", "worker", "action")
                if k in s.labels
            )
            out[key] = out.get(key, 0.0) + s.value
    return out


def _has_all(text: str, parts: tuple[str, ...]) -> bool:
    return all(x in text for x in parts)


def _kill_exec_mid_order(srv: ServerProcess, proc: subprocess.Popen[str], eid: str) -> None:
    """Waits for the order whose answer the venue holds (in its book, exec waiting for the
    answer), SIGKILLs exec, waits for the new one."""
    held = lambda: srv.state()["fired"].get("delay_ack", 0) >= 1  # noqa: E731
    expect(held, 180, proc, "an order whose answer the venue holds")
    victims = [c for c in _children(proc.pid) if "exec" in _cmd(c)]
    assert victims, "exec worker not found"
    old = victims[0].pid
    os.kill(old, signal.SIGKILL)
    expect(lambda: is_ready(eid, "exec", not_pid=old), 120, proc, "exec restarted")


def _workers_with(proc: subprocess.Popen[str], var: str) -> list[str]:
    """The workers whose environment holds ``var`` (ops.venue_keys.worker_env)."""
    out = []
    for c in _children(proc.pid):
        cmd = _cmd(c)
        if "ops.worker" in cmd:
            try:
                env = c.environ()
            except Exception:  # gone meanwhile
                continue
            if var in env:
                out.append(cmd[cmd.index("ops.worker") + 1])
    return sorted(out)


def _storm(srv: ServerProcess, proc: subprocess.Popen[str], eid: str) -> None:
    """Each fault, then the engine's new connection."""
    for name, args in STORM:
        before = _accepted(srv)
        srv.fault(name, **args)
        expect(lambda b=before: _accepted(srv) > b, 60, proc, f"a reconnect after {name}")
    assert counter(eid, "feed", "md_reconnects") >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_live_run_says_live_survives_exec_sigkill_mid_order_and_a_reconnect_storm_and_ends_equal_to_the_venue(  # noqa: E501
    tmp_path: Path, kind: str
) -> None:
    v = VENUES[kind]
    key, secret = v.keys()
    # Binance.US: the keys from the encrypted keystore (its passphrase in a 0600 file), so
    # exec's restart loads them again from it; the others: from the environment
    venue_extra, config_extra, passphrase = "", "", ""
    env = key_env(v, key, secret)
    if kind == "binanceus":
        venue_extra, config_extra, passphrase = keystore_for(tmp_path, v, key, secret)
        env = dict(os.environ)
    with server(v, key, secret) as srv:
        # a silent stream is noticed after 1 s (the default, 10 s, would outlast the test)
        cfg, eid = write_config(
            tmp_path,
            v,
            srv,
            live=True,
            slices=SLICES,
            duration_s=TWAP_S,
            venue_extra="stale_after_s = 1.0\n" + venue_extra,
            config_extra=config_extra,
        )
        srv.fault("delay_ack", delay_s=3.0)  # the first order's answer: held 3 s
        cmd = gekko_cmd(cfg, v, "--live", "--duration", "120", "--quiet")
        with engine(cmd, env) as proc:
            first = proc.stdout.readline()  # type: ignore[union-attr]
            assert first.strip() == f"LIVE trading on {kind}: real orders with real money", first
            _kill_exec_mid_order(srv, proc, eid)
            if kind != "binanceus":  # keys in the environment: exec's alone among the workers
                assert _workers_with(proc, f"GEKKO_{kind.upper()}_API_SECRET") == ["exec"]
            window_end = time.monotonic() + TWAP_S  # the TWAP sends nothing after it
            # one order after the restart: the TWAP went on (before the storm, which may cost
            # the children due during it their slot)
            orders = lambda: len(venue_orders(srv.state()))  # noqa: E731
            expect(lambda: orders() >= 2, 60, proc, "an order after the restart", srv.state)
            _storm(srv, proc, eid)
            expect(
                lambda: settled(srv, eid, v, orders=2, not_before=window_end),
                180,
                proc,
                "orders done, positions settled",
                srv.state,
            )
            # `gekko status`, once the storm is over: both back, in one look
            back = (f"venue {kind}: connected", "market data: connected")
            expect(
                lambda: _has_all(_status(cfg), back),
                60,
                proc,
                "the venue and its market data connected in `gekko status`",
                lambda: _status(cfg),
            )
            # the same, as Prometheus sees it: the storm's reconnects, exec's restart, the orders
            m: dict[str, float] = {}

            def scraped() -> bool:
                m.clear()
                m.update(_venue_metrics(tmp_path, eid, kind))
                return m.get("gekko_venue_reconnects_total", 0) >= 1

            expect(scraped, 30, proc, "the venue's reconnects in the scrape", lambda: m)
            out, err = stop(proc)
        st = srv.state()
    assert m["gekko_venue_state|state=connected"] == 1, m
    assert m["gekko_venue_state|state=down"] == 0
    assert m["gekko_venue_resyncs_total"] >= 1  # reconciled after each reconnect
    assert 0 < m["gekko_venue_rate_budget_remaining_ratio"] <= 1
    assert m["gekko_venue_order_round_trip_seconds"] > 0
    assert m["gekko_venue_orders_in_flight"] == 0 and m["gekko_venue_oldest_in_flight_seconds"] == 0
    assert m["gekko_worker_restarts_total|worker=exec"] == 1
    assert m["gekko_market_data_reconnects_total"] >= 1
    assert m["gekko_orders_total|action=new"] >= 1  # the TWAP parent (its children: exec's)
    assert proc.returncode == 0, err[-4000:]
    # the supervisor logged the venue's state changes: away from connected and back
    states = re.findall(rf"venue {kind}: (\w+)", err)
    assert any(x != "connected" for x in states) and states[-1] == "connected", states
    md = re.findall(r"venue market data: (\w+)", err)  # the feed's side of it
    assert any(x != "connected" for x in md) and md[-1] == "connected", md
    s = summary(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"], s["restarts"]  # the one we killed
    assert s["consistent"] is True and "failure" not in s
    assert position(s, v) == signed_fills(fills(tmp_path)) > 0
    assert_each_order_sent_once(st)  # the held order was not sent again
    assert len(venue_orders(st)) >= 2 and all(o["status"] != "open" for o in venue_orders(st))
    assert_position_is_the_venue_balance(s, st, v)
    assert key not in out + err and secret not in out + err
    more = (passphrase,) if passphrase else ()
    assert leaked_keys(tmp_path, key, secret, *more) == []
    assert not passphrase or passphrase not in out + err
    # the venue was asked what the key may do (it cannot withdraw: the run went live)
    assert sum(n for k, n in st["requests"].items() if _PROBES[kind] in k) == 1
    assert shm_entries(eid) == []
