"""Exec recovery never depends on the database (issue 11, item 2).

The scenario that broke: PostgreSQL dies mid-run, exec is SIGKILLed a few seconds later. Exec
used to wait for the database, then rebuild from the recorder's journal alone (only what was
recorded since the outage): the order table refused hundreds of events of orders it no longer
knew, exec's positions came from half the fills, and the run still exited 0. Now exec recovers
from its own journal, the venue and the algo log (``procs.recovery``), and a run whose positions
disagree with its fills exits non-zero, saying why (``ops.supervisor``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.messages import OrderPartiallyFilled

#: a restarted exec of the old code waited this long for the database before it fell back
RECOVERY_TIMEOUT_S = "3.0"


def _config(tmp_path: Path, eid: str, dsn: str) -> Path:
    from tests.test_recovery import _engine_config

    cfg = _engine_config(tmp_path, eid, dsn)
    text = cfg.read_text()
    text = re.sub(
        r"(?m)^recovery_timeout_s = .*$", f"recovery_timeout_s = {RECOVERY_TIMEOUT_S}", text
    )
    cfg.write_text(text)
    return cfg


def _venue_fills(tmp_path: Path) -> list[OrderPartiallyFilled]:
    from tests.test_risk_recovery import venue_frames

    return [f for f in venue_frames(tmp_path) if isinstance(f, OrderPartiallyFilled)]


def _venue_positions(tmp_path: Path) -> dict[int, int]:
    pos: dict[int, int] = {}
    for f in _venue_fills(tmp_path):
        pos[f.instrument_id] = pos.get(f.instrument_id, 0) + f.side * f.fill_qty
    return pos


@pytest.mark.timeout(240)
def test_database_down_then_exec_killed_recovers_from_its_journal(tmp_path: Path) -> None:
    """PostgreSQL stopped (and left down), then exec and risk SIGKILLed while orders keep
    coming: the new exec is back from its own journal without waiting for the database, the
    order table refuses nothing, the new risk takes its open orders from exec, exec's positions
    equal the fills the engine saw and the venue's, and the run exits 0 (it is consistent)."""
    from ops.store.pg import EmbeddedPostgres
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        health,
        is_ready,
        running_engine,
        summary_of,
        wait_counter,
    )
    from tests.test_recovery import _fills_stored
    from tests.test_risk_recovery import _checker

    base = Path(tempfile.mkdtemp(prefix="gkdb", dir="/tmp"))
    db = EmbeddedPostgres(base / "pg")
    eid = "b" + uuid.uuid4().hex[:7]
    try:
        dsn = db.start()
        cfg = _config(tmp_path, eid, dsn)
        with running_engine(cfg, tmp_path, eid) as proc:
            check = _checker(proc)
            check(_wait_for(lambda: _fills_stored(dsn) >= 3, 60), "never traded")
            db.stop()  # and it stays down to the end of the run
            check(wait_counter(eid, "recorder", "db_errors", 1, 30), "the recorder saw no outage")
            # trading goes on while the database is down: orders it never recorded
            n = counter(eid, "exec", "fills")
            check(wait_counter(eid, "exec", "fills", n + 5, 30), "no fills during the outage")
            old, old_risk = health(eid)["exec"][0], health(eid)["risk"][0]
            os.kill(old, signal.SIGKILL)
            os.kill(old_risk, signal.SIGKILL)
            check(_wait_for(lambda: is_ready(eid, "exec", not_pid=old), 60), "exec not back")
            check(_wait_for(lambda: is_ready(eid, "risk", not_pid=old_risk), 60), "risk?")
            n = len(_venue_fills(tmp_path))
            check(_wait_for(lambda: len(_venue_fills(tmp_path)) >= n + 5, 30), "no trading after")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=90)
    finally:
        db.stop()
        shutil.rmtree(base, ignore_errors=True)
    s = summary_of(tmp_path)
    assert sorted(r["worker"] for r in s["restarts"]) == ["exec", "risk"], err[-3000:]
    # the order table refused nothing (no event of an order it forgot)
    assert "refused by the order table" not in err, err[-3000:]
    assert s["counters"]["exec"]["anomalies"] == 0
    # positions: exec's table = the fills the engine published = the venue's own fills
    venue = _venue_positions(tmp_path)
    assert venue, "no fills at the venue"
    for sym, v in s["positions"].items():
        assert v["position"] == v["position_from_fills"] == venue.get(v["instrument_id"], 0), sym
    assert s["consistent"] is True
    assert proc.returncode == 0, err[-3000:]
    # rebuilt from exec's own journal; the database was neither waited for nor needed
    assert "recovery: rebuilt from exec's journal" in err, err[-3000:]
    assert "recovery: database unreachable" not in err, err[-3000:]
    # risk asked exec, which answered after its recovery (nothing from the database either)
    assert "open orders restored from exec's answer" in err, err[-3000:]
    assert "no answer from exec" not in err and "recovery (risk)" not in err, err[-3000:]


# --- fail closed: a journal exec cannot trust, positions that disagree --------------------------


def test_a_journal_with_a_hole_or_none_is_not_traded_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events the ring shows published that no entry holds (a failed write, a cut file), or no
    journal at all: exec cannot tell which fills upstream saw, so recovery refuses
    (``UnsafeToTrade``) instead of publishing or trading on a guess."""
    from procs.recovery import UnsafeToTrade, load_exec_journal, recover_exec
    from procs.storage import RUN_ID_ENV
    from tests.test_recovery_nostore import MS, RUN, Exec, _order

    monkeypatch.setenv(RUN_ID_ENV, str(RUN))
    upstream: list = []
    a = Exec(tmp_path, 0, upstream)
    a.run_until(1 * MS)
    a.order(_order(7 << 32 | 3, -1, 100, 6))  # sells into the bid: fills
    a.order(_order(7 << 32 | 4, 1, 95, 4))  # rests
    a.run_until(5 * MS)
    a.journal.close()
    a.alog.close()
    path = a.journal.path
    whole = load_exec_journal(path, len(upstream))
    assert whole.gap == 0 and whole.entries > 2
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the tail is gone (a torn frame is cut off)
    cut = load_exec_journal(path, len(upstream))
    assert cut.gap > 0
    b = Exec(tmp_path, 1, upstream)
    with pytest.raises(UnsafeToTrade, match="lacks"):
        b.recover([])
    b.journal.close()
    b.alog.close()
    path.unlink()
    w = SimpleNamespace(incarnation=1, beat=lambda: None)
    with pytest.raises(UnsafeToTrade, match="no exec journal"):
        recover_exec(w, b.cfg, b.venue, None, SimpleNamespace(seq=len(upstream)))


def test_positions_that_disagree_with_the_venue_stop_recovery() -> None:
    """Fills the venue has that exec neither journaled nor found as new (a partial record):
    nothing exec could publish makes upstream right, so it does not trade."""
    from engine.messages import ReconciliationEvent, ReconciliationKind
    from engine.oms import OrderTable
    from engine.reconcile import Reconciliation
    from procs.recovery import ExecRecovery, UnsafeToTrade, check_positions

    ok = ExecRecovery(result=Reconciliation(table=OrderTable()))
    check_positions(ok)
    bad = ReconciliationEvent(
        int(ReconciliationKind.POSITION_MISMATCH), 0, 1, -73, -106, "venue position is the truth", 9
    )
    ok.result.events.append(bad)
    with pytest.raises(UnsafeToTrade, match="instrument 1: -73 vs -106"):
        check_positions(ok)


def test_inconsistency_names_each_instrument() -> None:
    from ops.report import inconsistency

    good = {"positions": {"AAPL": {"position": -106, "position_from_fills": -106}}}
    assert inconsistency(good) == "" and inconsistency({}) == ""
    bad = {"positions": {**good["positions"], "XOM": {"position": -73, "position_from_fills": 5}}}
    assert (
        inconsistency(bad) == "positions inconsistent with fills: XOM -73 in exec vs +5 from fills"
    )


def _off_config(tmp_path: Path, eid: str) -> Path:
    from tests.test_recovery import _engine_config

    cfg = _engine_config(tmp_path, eid, "off")
    text = re.sub(r"(?m)^shutdown_timeout_s = .*$", "shutdown_timeout_s = 2.0", cfg.read_text())
    cfg.write_text(text)
    return cfg


@pytest.mark.timeout(180)
def test_positions_inconsistent_with_fills_at_the_end_fail_the_run(tmp_path: Path) -> None:
    """Exec's positions table forced away from the fills the engine published (exec frozen, a
    row overwritten, then the engine stopped): the run exits 3 and says which instrument."""
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable
    from tests.test_engine_e2e import _wait_for, health, running_engine, summary_of
    from tests.test_risk_recovery import _checker

    eid = "c" + uuid.uuid4().hex[:7]
    cfg = _off_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)
        check(_wait_for(lambda: len(_venue_fills(tmp_path)) >= 3, 60), "never traded")
        exec_pid = health(eid)["exec"][0]
        os.kill(exec_pid, signal.SIGSTOP)  # the supervisor kills it at the shutdown timeout
        table = SeqlockTable.attach(eid, "positions", POSITION_DTYPE)
        try:
            row = list(table.read_tuple(0))
            row[1] += 1000
            table.write(0, tuple(row))
        finally:
            table.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    s = summary_of(tmp_path)
    assert s["consistent"] is False
    assert proc.returncode == 3, err[-3000:]
    assert s["exit_code"] == 3 and "in exec vs" in s["failure"]
    assert "run failed: positions inconsistent with fills:" in err, err[-3000:]
    assert "FAILED (exit code 3): positions inconsistent with fills" in out + err


@pytest.mark.timeout(180)
def test_a_cut_exec_journal_halts_the_engine_with_a_reason(tmp_path: Path) -> None:
    """Exec's journal loses its tail, then exec is SIGKILLed: the new exec does not trade on
    what is left (it would publish again fills upstream already counted); the engine stops,
    exit code 1, the reason as the run's stop reason."""
    from tests.test_engine_e2e import _wait_for, health, running_engine, summary_of
    from tests.test_risk_recovery import _checker

    eid = "h" + uuid.uuid4().hex[:7]
    cfg = _off_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)
        check(_wait_for(lambda: len(_venue_fills(tmp_path)) >= 3, 60), "never traded")
        (path,) = (tmp_path / "var" / "exec").glob("*.journal")
        old = health(eid)["exec"][0]
        os.kill(old, signal.SIGSTOP)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        os.kill(old, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # the engine stops by itself
    assert proc.returncode == 1, err[-3000:]
    assert "exec: not trading: exec journal" in err and "lacks" in err, err[-3000:]
    s = summary_of(tmp_path)
    assert s["stop_reason"].startswith("exec stopped the run: not trading: exec journal")
    assert [r["worker"] for r in s["restarts"]] == ["exec"]  # restarted once, then no more


def test_rebuild_replays_requests_as_requests_not_unknown_events() -> None:
    """The journal and the record hold the cancel / replace requests exec took: a rebuilt table
    takes them as requests (a cancel still pending at the crash is sent again to the venue),
    never as ``unknown_event`` anomalies."""
    from engine.messages import CancelOrder, OrderAccepted, ReplaceOrder
    from engine.oms import OrderStatus, OrderTable
    from engine.reconcile import reconcile
    from tests.test_recovery import _venue
    from tests.test_sim_exchange import BUY, new

    v = _venue(None)
    o1, o2 = new(1, BUY, 99, 5), new(2, BUY, 98, 5)
    evs = v.submit(o1, 10) + v.submit(o2, 11)
    assert [type(e) for e in evs] == [OrderAccepted, OrderAccepted]
    rep = ReplaceOrder(1, 1, 1, 99, 3, 12, 12)
    evs += [rep, *v.replace(rep, 12)]
    evs += [CancelOrder(2, 1, 1, 13, 13)]  # taken; exec died before the venue got it
    t = OrderTable.rebuild([o1, o2], evs)
    assert t.anomaly_count == 0
    assert t.get(1).leaves_qty == 3 and t.get(1).state == OrderStatus.ACCEPTED
    assert t.get(2).state == OrderStatus.PENDING_CANCEL
    r = reconcile([o1, o2], evs, v, now_ns=20)
    assert [c.client_order_id for c in r.to_cancel] == [2]
    assert r.table.anomaly_count == 0
