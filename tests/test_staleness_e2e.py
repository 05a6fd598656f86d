"""The staleness guard with every process running (issue 11, item 4): a strategy frozen for a few
seconds (SIGSTOP, then SIGCONT) skips the market data it missed instead of trading it, and no
order built on data older than ``[risk] max_intent_age_ms`` is approved; killed, it restarts
from exec's positions (not flat) and skips what it missed while down."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.test_engine_e2e import (
    _alive,
    _children,
    _cmd,
    _wait_for,
    counter,
    eid,  # noqa: F401  (the fixture)
    is_ready,
    running_engine,
    set_key,
    summary_of,
    wait_counter,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

MAX_INVENTORY = 40
MM = f"""
[[strategies]]
id = 1
path = "engine.strategies.market_maker:MarketMaker"
instruments = ["MSFT", "XOM"]
[strategies.params]
half_spread_ticks = 1
size = 10
max_inventory = {MAX_INVENTORY}
requote_ticks = 1
"""


def _config(tmp_path: Path, engine_id: str) -> Path:
    cfg = write_config(tmp_path, engine_id, strategies=MM)
    text = cfg.read_text()
    for section, key, value in (
        ("storage.postgres", "mode", '"off"'),  # no record needed: fewer processes, faster start
        ("inference", "enabled", "false"),
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def _strategy_worker(sup_pid: int):  # type: ignore[no-untyped-def]
    for p in _children(sup_pid):
        cmd = _cmd(p)
        if "ops.worker" in cmd and "strategy" in cmd and _alive(p):
            return p
    return None


def test_frozen_strategy_skips_its_backlog_and_no_stale_order_is_approved(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    from ops.config import load_config

    cfg = _config(tmp_path, eid)
    c = load_config(cfg)
    max_age_ns = int(c.risk.max_intent_age_ms * 1e6)
    assert max_age_ns > 0 and c.processes.strategy.max_backlog_ms > 0  # the defaults are on
    with running_engine(cfg, tmp_path, eid) as proc:
        assert wait_counter(eid, "risk", "approved", 5, 60), "no trading"
        w = _strategy_worker(proc.pid)
        assert w is not None
        os.kill(w.pid, signal.SIGSTOP)  # frozen below the heartbeat timeout: not restarted
        try:
            time.sleep(3.0)
        finally:
            os.kill(w.pid, signal.SIGCONT)
        assert wait_counter(eid, "strategy", "md_skipped", 1, 30), "the backlog was not skipped"
        approved = counter(eid, "risk", "approved")
        assert wait_counter(eid, "risk", "approved", approved + 3, 30), "no trading after it"
        os.kill(w.pid, signal.SIGKILL)  # a crash: restarted, from exec's positions
        assert _wait_for(lambda: is_ready(eid, "strategy", not_pid=w.pid), 60), "no restart"
        approved = counter(eid, "risk", "approved")
        assert wait_counter(eid, "risk", "approved", approved + 3, 30), "no trading after it"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "behind the market" in err and "caught up" in err
    assert "strategy: restarted: positions from exec's table" in err
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["strategy"]  # the kill, not the freeze
    strat = s["counters"]["strategy"]
    assert strat["md_skipped"] > 0 and strat["backlog_episodes"] >= 1
    orders = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "orders.jsonl").read_text().splitlines()
    ]
    judged = [o for o in orders if o["type"] in ("NewOrder", "ReplaceOrder")]
    assert judged, "no orders recorded"
    late = [o for o in judged if o["ts_approved"] - o["ts_origin"] > max_age_ns]
    assert late == [], f"{len(late)} orders approved on stale data, e.g. {late[:3]}"
    # risk's reject counts by reason: whatever was refused as stale is counted as such
    assert s["counters"]["risk"]["rejected_stale"] >= 0
    for sym in ("MSFT", "XOM"):
        pos = s["positions"][sym]["position"]
        assert abs(pos) <= MAX_INVENTORY, (sym, pos)
    assert s["consistent"]
