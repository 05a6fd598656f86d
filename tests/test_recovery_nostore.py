"""Exec recovery with storage off (``[storage.postgres] mode = "off"``): no record, so exec's own
journal (``procs.recovery.ExecJournal``), the algo log and the venue rebuild its orders and algo
parents (``procs.recovery``).

The in-process tests crash exec the way a SIGKILL does: engine and venue objects are dropped,
only files survive (the simulated venue's record, the algo log, the exec journal) plus what was
published upstream — which the ``events`` ring's sequence number tells. The last tests do it to
real processes, started by ``gekko run`` as the other recovery tests do.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    BookSnapshot,
    CancelOrder,
    NewOrder,
    OpenOrderSnapshot,
    OpenOrdersRequest,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    TimeInForce,
)
from engine.venues.sim import SimExchange
from procs.algo_log import AlgoLog, algo_log_path
from procs.recovery import (
    ExecJournal,
    drop_answered_requests,
    exec_journal_path,
    load_exec_journal,
    open_exec_journal,
    recover_exec,
)
from procs.storage import RUN_ID_ENV

IID = 1
TABLE = InstrumentTable([Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1)])
MS = 1_000_000
S = 1_000 * MS
PARENT = 7 << 32 | 1
RUN = 4242


def _cfg(tmp: Path, mode: str = "off") -> Any:
    return SimpleNamespace(
        engine=SimpleNamespace(var_dir=str(tmp), id="nostore"),
        storage=SimpleNamespace(postgres=SimpleNamespace(mode=mode, recovery_timeout_s=1.0)),
        exec=ExecPolicy(),  # the [exec] policy: which orders exec emulates (recovery keeps them)
    )


def _order(coid: int, side: int, px: int, qty: int, **kw: Any) -> NewOrder:
    return NewOrder(
        coid, 7, IID, side, int(OrderType.LIMIT), int(TimeInForce.GTC), px, qty, 1, 1, **kw
    )


def _parent(qty: int = 100) -> NewOrder:
    return _order(
        PARENT,
        1,
        102,
        qty,
        algo=int(AlgoKind.TWAP),
        algo_params={"duration_s": 10.0, "slices": 10.0},
    )


def _book(t: int, depth: int) -> BookSnapshot:
    return BookSnapshot(IID, [100, 99], [40, 40], [101, 102], [7, depth], t, t, t // MS)


# --- the journal alone -------------------------------------------------------------------------


def test_journal_keeps_what_was_published_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.journal"
    j = ExecJournal(path)
    o1, o2 = _order(1, 1, 100, 5), _order(2, -1, 110, 3)
    acc1 = OrderAccepted(1, 11, IID, 1, 100, 5, 1, 2, 2)
    acc2 = OrderAccepted(2, 12, IID, -1, 110, 3, 1, 3, 3)
    fill = OrderPartiallyFilled(1, 11, IID, 1, 100, 2, 2, 3, 0.0, 1, 77, 1, 4, 4)
    cancel = CancelOrder(2, 7, IID, 5, 5)
    j.append(o1, [acc1], 0)  # seq 0 -> 1
    j.append(o2, [], 1)  # the venue answers later (latency)
    j.append(None, [acc2, fill], 1)  # seq 1 -> 3
    j.append(cancel, [], 3)
    j.append(o1, [], 3)  # the same order delivered again after a restart
    j.append(None, [OrderCanceled(2, IID, 3, "canceled", 1, 6, 6)], 3)  # journaled, not out
    j.close()
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00torn")  # killed mid-write
    st = load_exec_journal(path, published_seq=3)
    assert st.found and st.entries == 6 and st.unpublished == 1
    assert [o.client_order_id for o in st.orders] == [1, 2]  # the re-delivered one counts once
    assert st.events == [acc1, acc2, fill, cancel]
    # only part of the last batch went out (the ring filled mid-batch): the rest is left out
    pj = ExecJournal(tmp_path / "p.journal")
    pj.append(None, [acc1, acc2, fill], 10)
    pj.close()
    part = load_exec_journal(pj.path, published_seq=12)
    assert part.events == [acc1, acc2] and part.unpublished == 1
    # a new incarnation appends after the cut tail, publishing at the same sequence number the
    # lost batch had: that batch stays unpublished after a second crash too
    j2 = ExecJournal(path)
    j2.append(None, [OrderCanceled(2, IID, 3, "canceled", 1, 7, 7)], 3)
    j2.close()
    st2 = load_exec_journal(path, published_seq=4)
    assert st2.entries == 7 and isinstance(st2.events[-1], OrderCanceled)
    assert st2.events[-1].ts_recv == 7 and st2.unpublished == 1
    # garbage in the middle ends the reading, never raises
    data = bytearray(path.read_bytes())
    data[12] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_exec_journal(path, 10).entries == 0
    assert not load_exec_journal(tmp_path / "none.journal", 10).found


def test_journal_with_or_without_storage_and_a_new_run_removes_old_journals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_ID_ENV, str(RUN))
    with_db = open_exec_journal(_cfg(tmp_path, "embedded"), 0)  # kept with a database too
    assert with_db is not None and with_db.path == exec_journal_path(_cfg(tmp_path), RUN)
    with_db.close()
    old = exec_journal_path(_cfg(tmp_path), RUN - 1)
    old.write_bytes(b"")
    j = open_exec_journal(_cfg(tmp_path), 0)
    assert j is not None and j.path == exec_journal_path(_cfg(tmp_path), RUN)
    assert not old.exists()
    j.close()
    monkeypatch.setenv(RUN_ID_ENV, "0")
    assert open_exec_journal(_cfg(tmp_path), 0) is None  # outside a supervised run


# --- exec crashes in process ---------------------------------------------------------------------


class _Orders:
    """Stands for the ``orders`` consumer: what is still waiting (re-delivered)."""

    def __init__(self, waiting: list[Any]) -> None:
        self.waiting = waiting

    def poll_batch(self, n: int) -> list[Any]:
        out, self.waiting = self.waiting[:n], self.waiting[n:]
        return out


class Exec:
    """One exec incarnation as ``procs/exec.py`` wires it with storage off: venue (reloaded
    from its record), engine, algo log, journal; ``upstream`` is what went out on ``events``."""

    def __init__(self, tmp: Path, incarnation: int, upstream: list[Any]) -> None:
        self.cfg = _cfg(tmp)
        self.incarnation = incarnation
        self.venue = SimExchange(TABLE, latency_ns=MS, record_path=tmp / "sim.venue")
        self.engine = ExecEngine(self.venue, TABLE, ExecPolicy(), id_block=incarnation)
        self.alog = AlgoLog(algo_log_path(self.cfg, RUN))
        self.engine.algo.on_record = self.alog.append
        self.journal = open_exec_journal(self.cfg, incarnation)
        self.upstream = upstream
        self.now = 0
        self.depth = 50
        self.lose_next = False  # journal the next batch, then die before publishing it

    def emit(self, evs: list[Any], taken: Any = None) -> None:
        if evs or taken is not None:
            self.journal.append(taken, evs, len(self.upstream))
        if self.lose_next and evs:
            raise _Crash
        self.upstream += evs

    def order(self, o: Any) -> None:
        self.emit(self.engine.on_order(o, self.now), o)

    def run_until(self, t_end: int) -> None:
        t = self.now - self.now % (100 * MS) + 100 * MS
        while t <= t_end:
            self.emit(self.engine.poll(t))
            self.emit(self.engine.on_market_data(_book(t, self.depth), t))
            self.now = t
            t += 100 * MS
        self.now = t_end
        self.emit(self.engine.poll(t_end))

    def recover(self, waiting: list[Any]) -> Any:
        """What ``procs/exec.py`` does before READY."""
        self.emit(self.engine.on_market_data(_book(self.now, self.depth), self.now))
        w = SimpleNamespace(incarnation=self.incarnation, beat=lambda: None)
        events = SimpleNamespace(seq=len(self.upstream))
        rec = recover_exec(w, self.cfg, self.venue, _Orders(waiting), events)
        assert rec.result is not None
        self.engine.table = rec.result.table
        self.emit(rec.result.publish)
        for c in rec.result.to_cancel:
            self.emit(self.engine.cancel_at_venue(c, self.now))
        self.emit(self.engine.restore_algos(rec.algo, self.now))
        for o in rec.backlog:
            self.order(o)
        return rec


class _Crash(Exception):
    pass


def _check(
    tmp: Path, b: Exec, upstream: list[Any], qty: int, plain_ids: set[int], whole: bool = True
) -> None:
    """Every child fill reached upstream exactly once as a parent fill, the parent ended once
    (filled whole, or — ``whole=False`` — canceled with the rest when its window ended while
    exec was down), plain fills were published once each, nothing was placed twice."""
    frames = _read_venue(tmp)
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed))
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    vfills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    child = [f for f in vfills if f.client_order_id not in plain_ids]
    pf = [e for e in upstream if isinstance(e, OrderPartiallyFilled)]
    parent_fills = [f for f in pf if f.client_order_id == PARENT]
    assert sorted(f.fill_id for f in parent_fills) == sorted(f.fill_id for f in child)
    total = sum(f.fill_qty for f in parent_fills)
    assert total == qty if whole else total <= qty
    assert [f.cum_qty for f in parent_fills] == sorted(f.cum_qty for f in parent_fills)
    assert all(f.cum_qty + f.leaves_qty == qty for f in parent_fills)
    ends = [
        e
        for e in upstream
        if getattr(e, "client_order_id", None) == PARENT
        and isinstance(e, OrderFilled | OrderCanceled)
    ]
    assert len(ends) == 1 and isinstance(ends[0], OrderFilled) == (total == qty)
    if isinstance(ends[0], OrderCanceled):
        assert ends[0].leaves_qty == qty - total
    plain_up = sorted(f.fill_id for f in pf if f.client_order_id in plain_ids)
    assert plain_up == sorted(f.fill_id for f in vfills if f.client_order_id in plain_ids)


def _read_venue(tmp: Path) -> list[Any]:
    import struct

    from engine.messages import Message

    data = (tmp / "sim.venue").read_bytes()
    dec = msgspec.msgpack.Decoder(Message)
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            break
        out.append(dec.decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def _crash_and_recover(
    tmp: Path, crash_ms: int, down_ms: int, lose: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[Exec, list[Any]]:
    monkeypatch.setenv(RUN_ID_ENV, str(RUN))
    upstream: list[Any] = []
    a = Exec(tmp, 0, upstream)
    a.run_until(1 * MS)
    a.order(_parent())
    a.order(_order(7 << 32 | 2, 1, 95, 4))  # rests below the market: open throughout
    a.order(_order(7 << 32 | 3, -1, 100, 6))  # sells into the bid: fills
    try:
        a.run_until(crash_ms * MS)
        a.lose_next = lose
        a.run_until(crash_ms * MS + 300 * MS)
    except _Crash:
        pass
    a.journal.close()
    a.alog.close()
    del a  # SIGKILL: only the files and what went out survive
    b = Exec(tmp, 1, upstream)
    b.now = (crash_ms + 300 + down_ms) * MS
    b.recover([])
    return b, upstream


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crash_ms=st.integers(2, 9_000),
    down_ms=st.integers(0, 2_000),
    lose=st.booleans(),
)
@example(crash_ms=7_701, down_ms=2_000, lose=False)  # back after the window's end
@example(crash_ms=3_000, down_ms=100, lose=True)
def test_any_crash_point_parent_completes_once_and_upstream_equals_the_venue(
    crash_ms: int, down_ms: int, lose: bool
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        tmp = Path(d)
        b, upstream = _crash_and_recover(tmp, crash_ms, down_ms, lose, mp)
        b.run_until(max(b.now + 1 * S, 12 * S))
        # the window (10 s from 1 ms) ended while exec was down: canceled, not traded late
        late = crash_ms + 300 + down_ms >= 10_001
        _check(tmp, b, upstream, 100, {7 << 32 | 2, 7 << 32 | 3}, whole=not late)
        # the resting plain order is exec's again, as at the venue
        assert [o.client_order_id for o in b.engine.open_orders()] == [7 << 32 | 2]
        assert [o.client_order_id for o in b.venue.open_orders()] == [7 << 32 | 2]


def test_a_batch_journaled_but_never_published_is_published_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, upstream = _crash_and_recover(tmp_path, 3_000, 200, True, monkeypatch)
    st_ = load_exec_journal(exec_journal_path(b.cfg, RUN), len(upstream))
    assert st_.unpublished > 0  # the crash did lose a journaled batch on its way out
    fills = [e for e in upstream if isinstance(e, OrderPartiallyFilled)]
    assert len({(f.client_order_id, f.fill_id) for f in fills}) == len(fills)
    b.run_until(12 * S)
    _check(tmp_path, b, upstream, 100, {7 << 32 | 2, 7 << 32 | 3})


def test_two_crashes_in_a_row_each_losing_a_journaled_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second incarnation publishes at the sequence numbers the first one's lost batch had:
    the journal still tells that batch never went out."""
    b, upstream = _crash_and_recover(tmp_path, 2_000, 100, True, monkeypatch)
    b.run_until(4 * S)
    b.lose_next = True
    with pytest.raises(_Crash):  # the batch was journaled, then exec died
        b.run_until(5 * S)
    b.journal.close()
    b.alog.close()
    c = Exec(tmp_path, 2, upstream)
    c.now = 5 * S + 300 * MS
    c.recover([])
    c.run_until(12 * S)
    assert load_exec_journal(exec_journal_path(c.cfg, RUN), len(upstream)).unpublished >= 2
    _check(tmp_path, c, upstream, 100, {7 << 32 | 2, 7 << 32 | 3})


def test_restarted_exec_answers_risk_with_the_venue_open_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Risk restarted too: its request waits behind the re-delivered orders; exec answers after
    recovery with every plain order open at the venue and the parent's remainder."""
    monkeypatch.setenv(RUN_ID_ENV, str(RUN))
    upstream: list[Any] = []
    a = Exec(tmp_path, 0, upstream)
    a.run_until(1 * MS)
    a.order(_parent())
    for k in range(2, 5):
        a.order(_order(7 << 32 | k, 1, 90 + k, 2))
    a.run_until(2 * S)
    late = _order(7 << 32 | 9, -1, 130, 1)
    a.order(late)  # taken, journaled; its cursor not handed back: delivered again
    a.run_until(2 * S + 200 * MS)
    filled = sum(
        e.fill_qty
        for e in upstream
        if isinstance(e, OrderPartiallyFilled) and e.client_order_id == PARENT
    )
    a.journal.close()
    a.alog.close()
    del a
    b = Exec(tmp_path, 1, upstream)
    b.now = 2 * S + 500 * MS
    rec = b.recover([late])
    assert rec.backlog == []  # the venue has it: not sent twice
    ans = b.engine.open_order_snapshot(OpenOrdersRequest(5, 1), b.now)
    rows = {a.order_id: a.leaves_qty for a in ans if isinstance(a, OpenOrderSnapshot) and not a.end}
    venue_plain = {o.client_order_id: o.qty for o in b.venue.open_orders() if o.strategy_id == 7}
    assert venue_plain == {7 << 32 | k: q for k, q in [(2, 2), (3, 2), (4, 2), (9, 1)]}
    assert rows == {**venue_plain, PARENT: 100 - filled}


# --- real processes ----------------------------------------------------------------------------

TWAP_QTY = 160
TWAP_STRATEGY = 1

TWAP = f"""
[[strategies]]
id = {TWAP_STRATEGY}
path = "engine.strategies.scheduled:ScheduledExecution"
instruments = ["AAPL"]
[strategies.params]
algo = "twap"
side = "buy"
qty = {TWAP_QTY}
[strategies.params.algo_params]
duration_s = 8
slices = 8
"""


def _twap_config(tmp_path: Path, eid: str) -> Path:

    from tests.test_engine_e2e import set_key, write_config

    cfg = write_config(tmp_path, eid, strategies=TWAP)
    text = cfg.read_text()
    for section, key, value in (
        ("storage.postgres", "mode", '"off"'),
        ("inference", "enabled", "false"),  # fewer processes on a small test machine
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def _venue_fills(tmp_path: Path) -> list[OrderPartiallyFilled]:
    from tests.test_risk_recovery import venue_frames

    return [f for f in venue_frames(tmp_path) if isinstance(f, OrderPartiallyFilled)]


@pytest.mark.timeout(180)
def test_storage_off_sigkill_exec_mid_twap_the_parent_completes_once(tmp_path: Path) -> None:
    """No record: the restarted exec rebuilds the TWAP parent from its journal, the algo log and
    the venue; the parent finishes once, every child fill reaches upstream exactly once."""
    import json

    from tests.test_engine_e2e import _wait_for, health, is_ready, running_engine, summary_of
    from tests.test_risk_recovery import _checker, venue_frames

    eid = "n" + uuid.uuid4().hex[:7]
    cfg = _twap_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)
        check(_wait_for(lambda: len(_venue_fills(tmp_path)) >= 2, 60), "no child filled")
        old = health(eid)["exec"][0]
        os.kill(old, signal.SIGKILL)
        before = sum(f.fill_qty for f in _venue_fills(tmp_path))
        check(before < TWAP_QTY, "the parent was done before the crash: nothing to recover")
        check(_wait_for(lambda: is_ready(eid, "exec", not_pid=old), 60), "exec not back")
        check(
            _wait_for(lambda: sum(f.fill_qty for f in _venue_fills(tmp_path)) >= TWAP_QTY, 60),
            "the parent did not finish after the restart",
        )
        _wait_for(lambda: False, 0.5)  # the last parent fill goes out with the last child's
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert "recovery: rebuilt from exec's journal" in err, err[-3000:]
    assert "algo parents logged, 1 rebuilt" in err, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"]
    assert s["consistent"] is True  # exec's positions = the fills the engine published
    frames = venue_frames(tmp_path)
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed)) > 0  # no child placed twice
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    vfills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in vfills) == TWAP_QTY  # all children of the one parent
    seen = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "fills.jsonl").read_text().splitlines()
    ]
    mine = [f for f in seen if f["client_order_id"] >> 32 == TWAP_STRATEGY]
    assert len({f["client_order_id"] for f in mine}) == 1  # the parent's fills, upstream
    # upstream saw each venue fill exactly once, the parent end once
    assert sorted(f["fill_id"] for f in mine) == sorted(f.fill_id for f in vfills)
    assert sum(f["fill_qty"] for f in mine) == TWAP_QTY
    assert [f["type"] for f in mine].count("OrderFilled") == 1
    assert mine[-1]["type"] == "OrderFilled" and mine[-1]["cum_qty"] == TWAP_QTY
    assert [f["cum_qty"] for f in mine] == sorted(f["cum_qty"] for f in mine)


@pytest.mark.timeout(180)
def test_storage_off_exec_and_risk_killed_risk_gets_the_venue_open_orders(tmp_path: Path) -> None:
    """Exec and risk both SIGKILLed: the restarted exec rebuilds its orders from its journal and
    the venue before it answers; the restarted risk's question waits behind that, so it counts
    every order resting at the venue (the probes beyond max_open_orders stay refused) and the
    kill switch cancels each of them."""
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        gekko,
        health,
        is_ready,
        running_engine,
        summary_of,
        wait_counter,
    )
    from tests.test_risk_recovery import (
        RESTING,
        _checker,
        _config,
        _ours,
        _wait_canceled,
        _wait_resting,
        venue_frames,
    )

    eid = "m" + uuid.uuid4().hex[:7]
    cfg = _config(tmp_path, eid, "off")
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)
        resting = _wait_resting(check, tmp_path, eid)
        assert len(resting) == RESTING
        old_exec, old_risk = health(eid)["exec"][0], health(eid)["risk"][0]
        os.kill(old_exec, signal.SIGKILL)
        os.kill(old_risk, signal.SIGKILL)
        for name, old in (("exec", old_exec), ("risk", old_risk)):
            check(_wait_for(lambda n=name, o=old: is_ready(eid, n, not_pid=o), 60), f"{name}?")
        check(wait_counter(eid, "risk", "orders_restored", RESTING, 30), "answer not applied")
        n = counter(eid, "risk", "rejected")
        check(wait_counter(eid, "risk", "rejected", n + 2, 30), "no probe refused after")
        assert counter(eid, "risk", "orders_restored") == RESTING
        venue_open = {
            f.client_order_id for f in venue_frames(tmp_path) if isinstance(f, OrderAccepted)
        } - _ours(venue_frames(tmp_path), OrderCanceled)
        assert resting <= venue_open
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        _wait_canceled(check, tmp_path, resting)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(x["worker"] for x in summary_of(tmp_path)["restarts"]) == ["exec", "risk"]
    assert "recovery: rebuilt from exec's journal" in err, err[-3000:]
    assert f"{RESTING} open orders restored from exec's answer ({RESTING} sent)" in err, err[-3000:]
    assert "no answer from exec" not in err


def test_a_replace_delivered_again_after_the_crash_does_not_reopen_filled_lots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch exec was working on when it died is delivered again. A replace already done
    (its ``OrderReplaced`` went out) must not be done twice: ``new_qty`` is the new OPEN
    quantity, so after the fills it caused it would re-open the filled lots."""
    from engine.messages import OrderReplaced, ReplaceOrder

    monkeypatch.setenv(RUN_ID_ENV, str(RUN))
    upstream: list[Any] = []
    a = Exec(tmp_path, 0, upstream)
    a.run_until(1 * MS)
    x = 7 << 32 | 9
    a.order(_order(x, 1, 95, 10))  # rests below the market
    a.run_until(3 * MS)
    rep = ReplaceOrder(x, 7, IID, 101, 20, 5 * MS, 5 * MS)  # crosses the 7 lots at 101
    a.order(rep)
    a.run_until(4 * MS)
    assert any(isinstance(e, OrderReplaced) and e.ts_origin == rep.ts_origin for e in upstream)
    a.journal.close()
    a.alog.close()
    del a  # SIGKILL before the orders cursor moved on: the replace is delivered again
    b = Exec(tmp_path, 1, upstream)
    b.now = 5 * MS
    rec = b.recover([rep])
    assert rec.backlog == []  # answered before the crash: not sent again
    b.run_until(20 * MS)  # anything in flight lands (the venue has 1 ms of latency)
    filled = sum(
        f.fill_qty
        for f in _read_venue(tmp_path)
        if isinstance(f, OrderPartiallyFilled) and f.client_order_id == x
    )
    open_qty = sum(o.qty for o in b.venue.open_orders() if o.client_order_id == x)
    assert filled > 0 and filled + open_qty == 20  # what the replace asked for, once
    # a request nobody answered yet (its ts_origin is new) is still sent
    again = ReplaceOrder(x, 7, IID, 101, 5, 6 * MS, 6 * MS)
    kept, dropped = drop_answered_requests([rep, again], upstream)
    assert kept == [again] and dropped == 1


def test_a_request_refused_before_the_crash_counts_as_answered() -> None:
    """A re-delivered cancel / replace whose typed refusal upstream already saw is not sent
    again; an order's own reject with the same ts_origin answers no request."""
    from engine.messages import (
        CancelRejectReason,
        OrderCancelRejected,
        OrderReplaceRejected,
        ReplaceOrder,
        ReplaceRejectReason,
    )

    cxl = CancelOrder(5, 7, IID, 11, 11)
    rep = ReplaceOrder(6, 7, IID, 101, 3, 12, 12)
    other = CancelOrder(8, 7, IID, 13, 13)
    upstream = [
        OrderCancelRejected.for_request(cxl, CancelRejectReason.NOT_OPEN, "", 1, 1),
        OrderReplaceRejected.for_request(rep, ReplaceRejectReason.INVALID, "", 1, 1),
        OrderRejected(8, IID, "busy", 13, 1, 1),
    ]
    assert drop_answered_requests([cxl, rep, other], upstream) == ([other], 2)
