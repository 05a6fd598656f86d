"""The risk engine with every process running: the daily-loss circuit breaker and the kill switch
end to end — after the trip no strategy order reaches exec, open orders are canceled, and the
state survives a crash and restart of the risk process."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import psutil
import pytest

from engine.messages import RiskEventKind, TradingState
from procs.runtime import POSITION_DTYPE
from shm.seqlock import SeqlockTable
from tests.test_engine_e2e import (
    _alive,
    _children,
    _cmd,
    _wait_for,
    counter,
    eid,  # noqa: F401  (the fixture)
    gekko,
    is_ready,
    running_engine,
    summary_of,
    wait_counter,
    write_config,
)

pytestmark = pytest.mark.timeout(180)


def risk_config(tmp_path: Path, engine_id: str, **risk: float) -> Path:
    """The default config with ``[risk]`` keys replaced."""
    cfg = write_config(tmp_path, engine_id)
    text = cfg.read_text()
    head, tail = text[: text.index("[risk]")], text[text.index("[risk]") :]
    for key, value in risk.items():
        tail, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value!r}", tail, count=1)
        assert n == 1, key
    cfg.write_text(head + tail)
    return cfg


def state_of(tmp_path: Path, engine_id: str) -> dict:
    p = tmp_path / "var" / f"risk-state-{engine_id}.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def records(tmp_path: Path, name: str) -> list[dict]:
    path = tmp_path / "var" / "last_run" / name
    return [json.loads(x) for x in path.read_text().splitlines()]


def risk_worker(sup_pid: int) -> psutil.Process | None:
    for p in _children(sup_pid):
        cmd = _cmd(p)
        if "ops.worker" in cmd and "risk" in cmd and _alive(p):
            return p
    return None


def test_breaker_halts_cancels_survives_a_risk_restart_then_flatten_and_resume(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    """One engine run (each start costs seconds): the daily-loss breaker trips; risk is killed
    and restarted and stays HALTED; `gekko kill --flatten` closes the positions; `gekko resume`
    brings trading back."""
    # $5 of daily loss on $1M trips it: the momentum taker pays the spread and fees within seconds
    cfg = risk_config(
        tmp_path, eid, capital=1_000_000.0, daily_loss_reduce_pct=0.0, daily_loss_halt_pct=0.0005
    )
    with running_engine(cfg, tmp_path, eid) as proc:
        assert _wait_for(lambda: state_of(tmp_path, eid).get("state") == "HALTED", 60), state_of(
            tmp_path, eid
        )
        trip = state_of(tmp_path, eid)
        assert trip["source"] == "daily_loss" and "daily loss" in trip["reason"]
        old = risk_worker(proc.pid)
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)  # a crash: the supervisor restarts it
        assert _wait_for(lambda: is_ready(eid, "risk", not_pid=old.pid), 90)
        assert (w := risk_worker(proc.pid)) is not None and w.pid != old.pid
        # the strategies keep trying; the restarted risk refuses them
        assert wait_counter(eid, "risk", "rejected", counter(eid, "risk", "rejected") + 3)
        r = gekko("status", "--config", str(cfg))
        assert r.returncode == 0 and "running" in r.stdout
        assert "HALTED" in r.stdout and "daily_loss" in r.stdout, r.stdout
        # the operator: flatten, then resume
        # exec's positions table (shared memory): every position closes, nothing reopens
        table = SeqlockTable.attach(eid, "positions", POSITION_DTYPE)
        try:
            held = {int(r["instrument_id"]) for r in table.read_all() if r["position"] != 0}
            r = gekko("kill", "--flatten", "--config", str(cfg))
            assert r.returncode == 0, r.stderr
            assert _wait_for(lambda: not table.read_all()["position"].any(), 60), table.read_all()
        finally:
            table.close()
        approved = counter(eid, "risk", "approved")
        r = gekko("resume", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        # trading again: new strategy orders approved after the resume. (The state file may
        # already say HALTED again: a $5 breaker re-trips within a few taker fills, sooner than
        # a loaded machine polls the file; the risk record below shows the ACTIVE stretch.)
        assert wait_counter(eid, "risk", "approved", approved + 3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [x["worker"] for x in s["restarts"]] == ["risk"]
    assert "trading state HALTED restored" in err
    assert s["trading_state"] == state_of(tmp_path, eid)  # the run summary says it too
    resumes = [
        e
        for e in records(tmp_path, "risk.jsonl")
        if e["type"] == "RiskEvent" and e["kind"] == int(RiskEventKind.RESUMED)
    ]
    assert [(e["reason"], e["state"]) for e in resumes] == [("gekko resume", TradingState.ACTIVE)]
    t_trip, t_resume = int(trip["since_ns"]), int(resumes[0]["ts"])
    orders = records(tmp_path, "orders.jsonl")
    strategy_new = [o for o in orders if o["type"] == "NewOrder" and o["strategy_id"] != 0]
    assert any(o["ts_approved"] < t_trip for o in strategy_new), "traded before the trip"
    late = [o for o in strategy_new if t_trip <= o["ts_approved"] < t_resume]
    assert late == [], "a strategy order reached exec while the engine was halted"
    assert [o for o in strategy_new if o["ts_approved"] >= t_resume], "no trading after resume"
    # the breaker canceled what was open, at the moment it tripped
    trip_cancels = [o for o in orders if o["type"] == "CancelOrder" and o["ts_approved"] == t_trip]
    approved = {o["client_order_id"] for o in strategy_new}
    assert trip_cancels and {c["client_order_id"] for c in trip_cancels} <= approved
    # ... and the cancels took: nothing of the strategies filled while halted
    fills = records(tmp_path, "fills.jsonl")
    assert not [
        f
        for f in fills
        if f["client_order_id"] >> 32 != 0 and t_trip + 500_000_000 < f["ts_recv"] < t_resume
    ]
    assert s["risk_rejects"] > 0  # the orders the strategies still sent were refused
    # flatten, by the restarted risk from the positions it rebuilt: its own market orders, one per
    # instrument with a position, numbered in the new incarnation's block
    own = [o for o in orders if o["type"] == "NewOrder" and o["strategy_id"] == 0]
    assert {o["instrument_id"] for o in own} == held
    assert all(t_trip < o["ts_approved"] < t_resume for o in own)
    assert all(o["order_type"] == 1 and o["client_order_id"] >> 24 == 1 for o in own)
    assert len({o["instrument_id"] for o in own}) == len(own)
