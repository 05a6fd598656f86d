"""Algo parents survive an exec restart (engine/algos/recovery.py, AlgoEngine.snapshot/restore,
ExecEngine.restore_algos, procs/algo_log.py), and exec's portfolio has the configured cash.

The in-process tests crash exec the way a SIGKILL does: the venue object and the engine are
dropped, only files survive (the simulated venue's record, exec's algo log) plus a prefix of
what exec published (the record). The last test does it to real processes."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.algos.engine import AlgoEngine
from engine.algos.recovery import AmendSnapshot, ParentSnapshot, rebuild_parents
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    AlgoState,
    BookSnapshot,
    Message,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    ReplaceOrder,
    TimeInForce,
)
from engine.reconcile import reconcile
from engine.strategies.scheduled import ScheduledExecution
from engine.venues.sim import SimExchange
from procs.algo_log import AlgoLog
from procs.algo_log import load as load_algo_log

IID = 1
TABLE = InstrumentTable([Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1)])
MS = 1_000_000
S = 1_000 * MS
PARENT = 7 << 32 | 1


def parent_order(qty: int = 100, **params: float) -> NewOrder:
    p = {"duration_s": 10.0, "slices": 10.0, **params}
    return NewOrder(
        client_order_id=PARENT,
        strategy_id=7,
        instrument_id=IID,
        side=1,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
        px=102,
        qty=qty,
        ts_origin=1,
        ts_approved=1,
        algo=int(AlgoKind.TWAP),
        algo_params=p,
    )


def book(t: int, depth: int = 50) -> BookSnapshot:
    return BookSnapshot(IID, [100, 99], [40, 40], [101, 102], [7, depth], t, t, t // MS)


class Exec:
    """One exec incarnation: its venue (reloaded from the record file), engine and algo log."""

    def __init__(self, tmp: Path, incarnation: int) -> None:
        self.venue = SimExchange(TABLE, latency_ns=MS, record_path=tmp / "sim.venue")
        self.engine = ExecEngine(self.venue, TABLE, ExecPolicy(), id_block=incarnation)
        self.log = AlgoLog(tmp / "x.algo")
        self.engine.algo.on_record = self.log.append
        self.out: list[object] = []  # what it published upstream
        self.now = 0
        self.depth = 50  # lots offered at 102 (thin: children fill partly)

    def run_until(self, t_end: int) -> None:
        """Market data every 100 ms, timers in between (what procs/exec does live)."""
        t = self.now - self.now % (100 * MS) + 100 * MS
        while t <= t_end:
            self.out += self.engine.poll(t)
            self.out += self.engine.on_market_data(book(t, self.depth), t)
            self.now = t
            t += 100 * MS
        self.now = t_end
        self.out += self.engine.poll(t_end)

    def recover(self, record: list[object], orders: list[NewOrder]) -> None:
        """What procs/recovery + procs/exec do after a restart."""
        self.out += self.engine.on_market_data(book(self.now, self.depth), self.now)
        starts, kids = load_algo_log(self.log.path)
        rec = rebuild_parents(starts, kids, record, self.venue, self.now)
        res = reconcile(orders, record, self.venue, self.now, algo_ids=rec.order_ids)
        self.engine.table = res.table
        self.out += res.publish
        self.out += self.engine.restore_algos(rec, self.now)


def venue_frames(tmp: Path) -> list[object]:
    data = (tmp / "sim.venue").read_bytes()
    dec = msgspec.msgpack.Decoder(Message)
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(dec.decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def parent_events(events: list[object]) -> list[object]:
    return [e for e in events if getattr(e, "client_order_id", None) == PARENT]


def check_no_child_twice_and_parent_whole(tmp: Path, upstream: list[object], qty: int) -> None:
    frames = venue_frames(tmp)
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed)) > 0  # no child reached the venue twice
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    venue_fills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    pf = [e for e in parent_events(upstream) if isinstance(e, OrderPartiallyFilled)]
    # upstream saw each child fill exactly once, as a parent fill with the child's fill id
    assert sorted(f.fill_id for f in pf) == sorted(f.fill_id for f in venue_fills)
    assert sum(f.fill_qty for f in pf) == sum(f.fill_qty for f in venue_fills) == qty
    assert [f.cum_qty for f in pf] == sorted(f.cum_qty for f in pf)  # cum never goes back
    assert all(f.cum_qty + f.leaves_qty == qty for f in pf)
    ends = [e for e in parent_events(upstream) if isinstance(e, OrderFilled | OrderCanceled)]
    assert len(ends) == 1 and isinstance(ends[0], OrderFilled)


def check_parent_invariants(tmp: Path, upstream: list[object], qty: int) -> None:
    """What must hold whatever happened: no child placed twice, every child fill seen upstream
    exactly once as a parent fill, parent fills never above the parent, one end."""
    frames = venue_frames(tmp)
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed))
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    venue_fills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    pf = [e for e in parent_events(upstream) if isinstance(e, OrderPartiallyFilled)]
    assert sorted(f.fill_id for f in pf) == sorted(f.fill_id for f in venue_fills)
    assert len({f.fill_id for f in pf}) == len(pf)
    total = sum(f.fill_qty for f in pf)
    assert total == sum(f.fill_qty for f in venue_fills) <= qty
    assert all(f.cum_qty + f.leaves_qty == qty for f in pf)
    assert [f.cum_qty for f in pf] == sorted(f.cum_qty for f in pf)
    ends = [e for e in parent_events(upstream) if isinstance(e, OrderFilled | OrderCanceled)]
    assert len(ends) == 1
    assert isinstance(ends[0], OrderFilled) == (total == qty)
    if isinstance(ends[0], OrderCanceled):
        assert ends[0].leaves_qty == qty - total


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crash_ms=st.integers(2, 11_500),
    down_ms=st.integers(0, 6_000),
    kept=st.floats(0.0, 1.0),
    passive=st.booleans(),
    depth=st.sampled_from([0, 3, 50]),
)
def test_any_crash_point_keeps_the_parent_whole(
    crash_ms: int, down_ms: int, kept: float, passive: bool, depth: int
) -> None:
    import tempfile

    order = parent_order(100, passive=float(passive))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a = Exec(tmp, 0)
        a.depth = depth
        a.run_until(1 * MS)
        a.out += a.engine.on_order(order, a.now)
        a.run_until(crash_ms * MS)
        record = a.out[: int(len(a.out) * kept)]  # what the recorder had stored
        del a
        b = Exec(tmp, 1)
        b.depth = depth
        b.now = (crash_ms + down_ms) * MS
        b.recover(record, [order])
        b.run_until(max(b.now + 1 * S, 12 * S))  # the end of the window, cancels answered
        check_parent_invariants(tmp, record + b.out, 100)
        assert not b.venue.open_orders()


def test_twap_parent_resumes_after_a_crash_with_a_lost_fill_and_a_child_in_flight(
    tmp_path: Path,
) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    # the 5th slice is due at 4.001 s: its child is sent, still on the wire when exec dies
    a.run_until(4 * S + 1 * MS)
    sent = [f for f in venue_frames(tmp_path) if type(f) is NewOrder]
    assert len(sent) == 4  # slices 0-3 reached the venue; slice 4 did not
    pf = [e for e in parent_events(a.out) if isinstance(e, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in pf) == 40
    # the record lost the last parent fill (the recorder had not read it)
    record = [e for e in a.out if e is not pf[-1]]
    del a  # SIGKILL: only the files survive
    b = Exec(tmp_path, 1)
    b.now = 4 * S + 500 * MS
    b.recover(record, [parent_order()])
    replayed = [e for e in parent_events(b.out) if isinstance(e, OrderPartiallyFilled)]
    assert [f.fill_id for f in replayed] == [pf[-1].fill_id]  # published now, once
    b.run_until(12 * S)
    upstream = record + b.out
    check_no_child_twice_and_parent_whole(tmp_path, upstream, 100)
    assert b.engine.algo.parent(PARENT).state == AlgoState.DONE
    assert not b.engine.open_orders()


def test_passive_parent_keeps_its_resting_child_and_finishes(tmp_path: Path) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(60, slices=6.0, passive=1.0), a.now)
    a.run_until(2 * S + 500 * MS)
    resting = a.venue.open_orders()
    assert len(resting) == 1  # a child rests at the bid (nobody sells to it here)
    record = list(a.out)
    del a
    b = Exec(tmp_path, 1)
    b.now = 3 * S
    b.recover(record, [parent_order(60, slices=6.0, passive=1.0)])
    p = b.engine.algo.parent(PARENT)
    assert p.open_children == 1 and p.open_qty == resting[0].qty  # adopted, not re-sent
    assert b.engine.state(resting[0].client_order_id) is not None  # the OMS knows it again
    b.run_until(12 * S)  # re-posted each slice, swept at the end
    check_no_child_twice_and_parent_whole(tmp_path, record + b.out, 60)
    assert not b.venue.open_orders()


def test_a_window_that_ended_while_exec_was_down_cancels_the_parent(tmp_path: Path) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    a.run_until(3 * S + 500 * MS)
    record = list(a.out)
    n_sent = len([f for f in venue_frames(tmp_path) if type(f) is NewOrder])
    del a
    b = Exec(tmp_path, 1)
    b.now = 30 * S  # back long after the 10 s window
    b.recover(record, [parent_order()])
    b.run_until(31 * S)
    assert len([f for f in venue_frames(tmp_path) if type(f) is NewOrder]) == n_sent
    ends = [e for e in parent_events(b.out) if isinstance(e, OrderCanceled)]
    assert len(ends) == 1
    assert "window ended while exec was down" in ends[0].reason
    assert ends[0].leaves_qty == 100 - 40
    assert not [e for e in parent_events(b.out) if isinstance(e, OrderAccepted)]  # seen before


def test_a_parent_upstream_never_saw_accepted_is_announced_then_worked(tmp_path: Path) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    a.run_until(1 * S + 500 * MS)
    del a
    b = Exec(tmp_path, 1)
    b.now = 2 * S
    b.recover([], [parent_order()])  # nothing reached the record
    ev = parent_events(b.out)
    assert isinstance(ev[0], OrderAccepted)
    b.run_until(12 * S)
    check_no_child_twice_and_parent_whole(tmp_path, b.out, 100)


def test_snapshot_restore_round_trip_continues_the_schedule() -> None:
    ids = iter(range(1000, 2000))
    e1 = AlgoEngine(TABLE, lambda: next(ids))
    out = e1.submit(parent_order(), 0)
    out += e1.on_timer(2 * S)  # slice 0 at the start, slices 1-2 now: children of 10 and 20
    kids = [o for o in out if type(o) is NewOrder]
    assert [k.qty for k in kids] == [10, 20]
    for k in kids[:1]:
        q = k.qty
        fill = OrderFilled(k.client_order_id, 5, IID, 1, 101, q, q, 0, 0.0, 1, 77, 0, 2 * S, 0)
        e1.on_child_event(fill, 2 * S)
    child = kids[1]  # still open when the snapshot is taken
    snaps = e1.snapshot()
    e2 = AlgoEngine(TABLE, lambda: next(ids))
    wire = msgspec.msgpack.encode(snaps)  # a snapshot can be stored and read back
    e2.restore(msgspec.msgpack.decode(wire, type=list[ParentSnapshot]), 2 * S)
    assert e2.snapshot() == snaps
    assert e2.is_child(child.client_order_id) and e2.parent(PARENT).filled == 10
    assert e2.parent(PARENT).open_qty == 20
    more = [o for o in e2.on_timer(5 * S) if type(o) is NewOrder]
    assert sum(o.qty for o in more) == 60 - 10 - 20  # target 60 at slice 5, net of the open child
    assert e2.restore(snaps, 5 * S) == [] and e2.duplicates == 1


def test_exec_portfolio_starts_with_the_configured_cash(tmp_path: Path) -> None:
    from ops.config import load_config
    from procs.exec import build_portfolio

    root = Path(__file__).resolve().parents[1]
    text = (root / "config.toml").read_text()
    at = text.index("cash = { USD = 1000000.0 }")
    text = text[:at] + "cash = { USD = 250000.0 }" + text[at + len("cash = { USD = 1000000.0 }") :]
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    pf = build_portfolio(cfg, cfg.instrument_table())
    assert pf.cash == 250_000.0 and pf.equity() == 250_000.0
    # buy 100 AAPL at 200.00 (ticks of 0.01), no fee: equity unchanged, the weight is its share
    pf.on_fill(OrderFilled(1 << 32 | 1, 1, 1, 1, 20_000, 100, 100, 0, 0.0, 1, 1, 0, 0, 0))
    pf.mark(1, 20_000)
    assert abs(pf.equity() - 250_000.0) < 1e-6
    assert abs(pf.weight(1) - 20_000.0 / 250_000.0) < 1e-9


# --- real processes: a TWAP parent working, amended, SIGKILL exec, the supervisor restarts it ---

E2E_STRATEGY = """
[[strategies]]
id = 1
path = "tests.test_algo_recovery:AmendingExecution"
instruments = ["AAPL"]
[strategies.params]
algo = "twap"
side = "buy"
qty = 280
limit_ticks = 50
amend_after = 2
amend_qty = 200
[strategies.params.algo_params]
duration_s = 14
slices = 14
"""


class AmendingExecution(ScheduledExecution):
    """``ScheduledExecution`` that amends its parent to ``amend_qty`` lots in total (same limit)
    once ``amend_after`` parent fills arrived: the strategy of the real-process test below.

    The replace carries the new OPEN quantity (the engine-wide meaning risk and exec read), so
    exec makes the total what it has filled + that. The strategy amends between slices (an
    ``AlgoProgress`` with no child open, all its fills seen), so no fill can race the request
    and the total is exactly ``amend_qty``. A cut, so risk books no extra exposure for it."""

    def __init__(self, ctx: Any, params: dict[str, Any]) -> None:
        params = dict(params)
        self.amend_after = int(params.pop("amend_after", 2))
        self.amend_qty = int(params.pop("amend_qty", 0))
        super().__init__(ctx, params)
        self.amended = False

    def on_order_event(self, ev: Any) -> None:
        super().on_order_event(ev)
        if self.amended or not self.amend_qty or len(self.fills) < self.amend_after:
            return
        if not isinstance(ev, AlgoProgress) or ev.client_order_id != self.parent:
            return
        o = self.ctx.open_orders.get(self.parent)
        if o is not None and ev.children_open == 0 and ev.filled_qty == o.cum_qty:
            self.amended = self.ctx.replace(self.parent, o.px, self.amend_qty - o.cum_qty)


def _e2e_config(tmp_path: Path, eid: str, dsn: str) -> Path:
    root = Path(__file__).resolve().parents[1]
    text = (root / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    at = text.index("[storage.postgres]")
    at = text.index('mode = "embedded"', at)
    text = text[:at] + f'mode = "{dsn}"' + text[at + len('mode = "embedded"') :]
    inf = text.index("\n[inference]")
    at = text.index("enabled = true", inf)  # no model serving: fewer processes on a small box
    text = text[:at] + "enabled = false" + text[at + len("enabled = true") :]
    text = text[: text.index("[[strategies]]")] + E2E_STRATEGY
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def _wait(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _parent_progress(dsn: str) -> tuple[int, int, int, int]:
    """(parent id, parent fills stored, lots, parent ends stored); zeros before it exists."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            row = c.execute("SELECT client_order_id FROM orders ORDER BY ts_approved").fetchone()
            if row is None:
                return 0, 0, 0, 0
            n, lots = c.execute(
                "SELECT count(*), coalesce(sum(qty), 0) FROM fills WHERE client_order_id = %s",
                row,
            ).fetchone()
            (ends,) = c.execute(
                "SELECT count(*) FROM order_events WHERE client_order_id = %s"
                " AND kind IN ('OrderFilled', 'OrderCanceled', 'OrderRejected')",
                row,
            ).fetchone()
            return row[0], int(n), int(lots), int(ends)
    except psycopg.Error:
        return 0, 0, 0, 0


def _replaced(dsn: str, parent: int) -> int:
    """How many OrderReplaced of the parent the record holds."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            (n,) = c.execute(
                "SELECT count(*) FROM order_events WHERE client_order_id = %s"
                " AND kind = 'OrderReplaced'",
                (parent,),
            ).fetchone()
            return int(n)
    except psycopg.Error:
        return 0


def test_sigkill_exec_mid_twap_after_an_amend_the_amended_parent_completes_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    """Real processes: the strategy's TWAP parent (280 lots) is amended to 200 after two fills,
    then exec is SIGKILLed; the restarted exec rebuilds the AMENDED parent from its algo log
    and the parent fills exactly 200, once."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import uuid

    import psutil
    import psycopg

    eid = "a" + uuid.uuid4().hex[:7]
    cfg = _e2e_config(tmp_path, eid, pg_dsn)
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--duration", "120"]
    proc = subprocess.Popen(
        [*cmd, "--quiet"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def execs() -> list[psutil.Process]:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for k in kids:
            try:
                if "exec" in k.cmdline() and k.status() != psutil.STATUS_ZOMBIE:
                    out.append(k)
            except psutil.Error:
                pass
        return out

    def stop() -> str:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        return err

    try:
        # the parent is working, amended: some of its slices have filled, more are to come
        ok = _wait(lambda: _parent_progress(pg_dsn)[1] >= 3, 150)
        assert ok, "the TWAP parent never filled:\n" + stop()[-4000:]
        ok = _wait(lambda: _replaced(pg_dsn, _parent_progress(pg_dsn)[0]) >= 1, 30)
        assert ok, "the amend never reached the record:\n" + stop()[-4000:]
        parent, n_before, lots_before, ends = _parent_progress(pg_dsn)
        assert ends == 0 and lots_before < 200
        (victim,) = execs()
        os.kill(victim.pid, signal.SIGKILL)
        assert _wait(lambda: any(p.pid != victim.pid for p in execs()), 60), stop()[-4000:]
        # the restarted exec rebuilds the parent and finishes it: one end, fully filled
        ok = _wait(lambda: _parent_progress(pg_dsn)[3] >= 1, 90)
        assert ok, "the parent never ended after the restart:\n" + stop()[-4000:]
    finally:
        err = stop()
    assert proc.returncode == 0, err[-3000:]
    assert "algo parents logged, 1 rebuilt" in err, err[-3000:]
    summary = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    assert [r["worker"] for r in summary["restarts"]] == ["exec"]
    assert summary["consistent"] is True  # exec's positions = the fills the engine published
    # the exchange's own record: every child placed once, children summing to the parent
    (vpath,) = (tmp_path / "var" / "venue").glob("*.venue")
    data = vpath.read_bytes()
    dec = msgspec.msgpack.Decoder(Message)
    frames, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        frames.append(dec.decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed)) > 0
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    vfills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in vfills) == 200  # no plain orders here: all are children
    # the record: the parent filled once, each child fill once as a parent fill, in order
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute(
            "SELECT fill_id, qty, cum_qty, leaves_qty FROM fills WHERE client_order_id = %s"
            " ORDER BY cum_qty",
            (parent,),
        ).fetchall()
        ends = c.execute(
            "SELECT kind FROM order_events WHERE client_order_id = %s"
            " AND kind IN ('OrderFilled', 'OrderCanceled', 'OrderRejected')",
            (parent,),
        ).fetchall()
    assert ends == [("OrderFilled",)]
    assert sorted(r[0] for r in rows) == sorted(f.fill_id for f in vfills)
    assert sum(r[1] for r in rows) == 200 and rows[-1][2:] == (200, 0)
    assert all(cum + leaves in (280, 200) for _, _, cum, leaves in rows)  # before / after
    assert len(rows) > n_before  # fills after the restart too
    # what the engine published (the supervisor's record of the events ring) agrees
    seen = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "fills.jsonl").read_text().splitlines()
    ]
    mine = [f for f in seen if f["client_order_id"] == parent]
    assert sum(f["fill_qty"] for f in mine) == 200
    assert len({f["fill_id"] for f in mine}) == len(mine)


def test_the_record_keeps_a_parents_algorithm_and_parameters(pg_dsn: str) -> None:
    import psycopg

    from ops.store import migrate as mig
    from ops.store.pg import run_tx
    from ops.store.reader import load_run_state
    from ops.store.writer import Rows, Writer

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    plain = msgspec.structs.replace(parent_order(), client_order_id=5, algo=0, algo_params={})
    odd = msgspec.structs.replace(  # a NaN parameter (the algo rejects it) must not break a batch
        parent_order(), client_order_id=6, algo_params={"duration_s": float("nan")}
    )
    for _ in range(2):  # the second write is all duplicates: the staged ON CONFLICT path
        rows = Rows()
        for o in (parent_order(), plain, odd):
            rows.add(9, o)
        with psycopg.connect(pg_dsn) as c:
            run_tx(c, lambda conn, rows=rows: Writer().write(conn, rows))
    with psycopg.connect(pg_dsn) as c:
        state = load_run_state(c, 9)
    by_id = {o.client_order_id: o for o in state.orders}
    assert by_id[PARENT] == parent_order()  # algo and algo_params exactly as sent
    assert by_id[5].algo == 0 and by_id[5].algo_params == {}
    assert by_id[6].algo == AlgoKind.TWAP and list(by_id[6].algo_params) == ["duration_s"]


def test_iceberg_keeps_its_one_displayed_child_across_a_restart(tmp_path: Path) -> None:
    from engine.messages import Trade

    ice = msgspec.structs.replace(
        parent_order(30), px=100, algo=int(AlgoKind.ICEBERG), algo_params={"display_qty": 10.0}
    )
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(ice, a.now)
    a.run_until(500 * MS)
    (shown,) = a.venue.open_orders()  # one child of 10 rests at 100, behind the book's 40
    assert shown.qty == 10
    record = list(a.out)
    del a
    b = Exec(tmp_path, 1)
    b.now = 1 * S
    b.recover(record, [ice])
    assert b.venue.open_orders() == [shown]  # adopted, nothing new shown
    t = b.now
    for _ in range(20):  # sellers hit the bid: the queue ahead, then our child, then the next
        t += 10 * MS
        b.out += b.engine.poll(t)
        b.out += b.engine.on_market_data(Trade(IID, 100, 15, -1, t, t), t)
        assert len(b.venue.open_orders()) <= 1  # never more than display_qty shown
    b.out += b.engine.poll(t + 10 * MS)
    check_no_child_twice_and_parent_whole(tmp_path, record + b.out, 30)


def test_a_cancel_requested_before_the_crash_ends_the_parent(tmp_path: Path) -> None:
    from engine.messages import CancelOrder

    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(60, slices=6.0, passive=1.0), a.now)
    a.run_until(1 * S + 500 * MS)
    # the cancel was recorded; exec died before the venue answered it
    record = [*a.out, CancelOrder(PARENT, 7, IID, a.now, a.now)]
    del a
    b = Exec(tmp_path, 1)
    b.now = 2 * S
    b.recover(record, [parent_order(60, slices=6.0, passive=1.0)])
    b.run_until(3 * S)
    assert not b.venue.open_orders()
    (end,) = [e for e in parent_events(b.out) if isinstance(e, OrderCanceled)]
    assert end.reason == "canceled"
    assert not [e for e in parent_events(b.out) if isinstance(e, OrderFilled)]


def test_the_algo_log_cuts_a_torn_tail_and_keeps_the_rest(tmp_path: Path) -> None:
    log = AlgoLog(tmp_path / "t.algo")
    child = msgspec.structs.replace(parent_order(), client_order_id=99, algo=0, algo_params={})
    log.append(PARENT, parent_order(), 5)
    log.append(PARENT, child, 6)
    log.close()
    with open(tmp_path / "t.algo", "ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # killed mid-append
    starts, kids = load_algo_log(tmp_path / "t.algo")
    assert [s[:2] for s in starts] == [(parent_order(), 5)] and kids == {PARENT: [child]}
    again = AlgoLog(tmp_path / "t.algo")  # reopened: the torn bytes are cut, appends go on
    again.append(PARENT, msgspec.structs.replace(child, client_order_id=100), 7)
    again.close()
    assert [c.client_order_id for c in load_algo_log(tmp_path / "t.algo")[1][PARENT]] == [99, 100]


def test_two_crashes_in_a_row(tmp_path: Path) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    a.run_until(3 * S + 1 * MS)
    record = a.out[:-3]
    del a
    b = Exec(tmp_path, 1)
    b.now = 3 * S + 300 * MS
    b.recover(record, [parent_order()])
    b.run_until(6 * S + 1 * MS)
    record += b.out  # all of the second incarnation's events reached the record this time
    del b
    c = Exec(tmp_path, 2)
    c.now = 7 * S
    c.recover(record, [parent_order()])
    c.run_until(12 * S)
    check_no_child_twice_and_parent_whole(tmp_path, record + c.out, 100)


# --- amends and recorded VWAP profiles across a crash ---------------------------------------------


def amend_parent(qty: int, px: int, now: int) -> ReplaceOrder:
    return ReplaceOrder(PARENT, 7, IID, px, qty, now, now)


def check_amended_parent_whole(tmp: Path, upstream: list[object], qty: int) -> None:
    """No child placed twice; every child fill once upstream as a parent fill; the parent filled
    exactly its amended ``qty`` and ended once."""
    frames = venue_frames(tmp)
    placed = [f.client_order_id for f in frames if type(f) is NewOrder]
    assert len(placed) == len(set(placed)) > 0
    venue_fills = [f for f in frames if isinstance(f, OrderPartiallyFilled)]
    pf = [e for e in parent_events(upstream) if isinstance(e, OrderPartiallyFilled)]
    assert sorted(f.fill_id for f in pf) == sorted(f.fill_id for f in venue_fills)
    assert sum(f.fill_qty for f in pf) == qty
    assert [f.cum_qty for f in pf] == sorted(f.cum_qty for f in pf)
    ends = [e for e in parent_events(upstream) if isinstance(e, OrderFilled | OrderCanceled)]
    assert len(ends) == 1 and isinstance(ends[0], OrderFilled) and ends[0].cum_qty == qty


def test_a_parent_amended_before_the_crash_resumes_amended(tmp_path: Path) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    a.run_until(3 * S + 500 * MS)  # slices 0-3: 40 filled
    assert a.engine.algo.parent(PARENT).filled == 40
    # to a total of 160: 120 open, over 6 slices
    a.out += a.engine.on_order(amend_parent(120, 102, a.now), a.now)
    a.run_until(5 * S + 500 * MS)
    record = list(a.out)
    del a
    b = Exec(tmp_path, 1)
    b.now = 6 * S
    b.recover(record, [parent_order()])
    p = b.engine.algo.parent(PARENT)
    assert (p.qty, p.order.px, p.filled) == (160, 102, 80)  # the AMENDED parent came back
    assert not [e for e in parent_events(b.out) if isinstance(e, OrderReplaced)]  # seen before
    b.run_until(12 * S)
    kids = [f.qty for f in venue_frames(tmp_path) if type(f) is NewOrder]
    # the rebased schedule (120 over the 6 slices left), before and after the crash
    assert kids[4:] == [20] * 6
    check_amended_parent_whole(tmp_path, record + b.out, 160)


def test_an_amend_logged_but_never_published_is_published_after_the_crash(
    tmp_path: Path,
) -> None:
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(parent_order(), a.now)
    a.run_until(2 * S + 500 * MS)
    record = list(a.out)  # the recorder saw nothing after this
    assert a.engine.algo.parent(PARENT).filled == 30
    amend = amend_parent(20, 102, a.now)
    a.out += a.engine.on_order(amend, a.now)  # to a total of 50
    del a
    b = Exec(tmp_path, 1)
    b.now = 3 * S
    # the amend request is delivered again after the crash: the algo log says it was done
    # (its OrderReplaced never went out), so recovery does not apply it a second time
    from procs.recovery import drop_answered_requests

    starts, _ = load_algo_log(b.log.path)
    logged = [(lp.order.client_order_id, am.origin) for lp in starts for am in lp.amends]
    assert drop_answered_requests([amend], record, also=logged) == ([], 1)
    assert drop_answered_requests([amend], record) == ([amend], 0)  # the record alone: unknown
    b.recover(record, [parent_order()])
    (rep,) = [e for e in parent_events(b.out) if isinstance(e, OrderReplaced)]
    assert (rep.px, rep.qty) == (102, 50 - 30)  # the new open quantity
    assert rep.ts_origin == amend.ts_origin  # answers the request, as if just done
    b.run_until(12 * S)
    check_amended_parent_whole(tmp_path, record + b.out, 50)


def test_a_repriced_resting_child_is_adopted_at_its_new_price(tmp_path: Path) -> None:
    order = parent_order(60, slices=6.0, passive=1.0)
    a = Exec(tmp_path, 0)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(order, a.now)
    a.run_until(2 * S + 500 * MS)
    (resting,) = a.venue.open_orders()
    assert resting.px == 100  # at the bid
    t_amend = a.now
    filled = a.engine.algo.parent(PARENT).filled
    assert filled == 10
    a.out += a.engine.on_order(amend_parent(30 - filled, 99, a.now), a.now)  # a total of 30
    a.run_until(a.now + 10 * MS)  # the replace reached the venue
    (moved,) = a.venue.open_orders()  # same child, replaced at the venue: new limit, cut
    assert moved.client_order_id == resting.client_order_id
    assert (moved.px, moved.qty) == (99, min(resting.qty, 30))
    record = list(a.out)
    del a
    b = Exec(tmp_path, 1)
    b.now = 3 * S
    b.recover(record, [order])
    p = b.engine.algo.parent(PARENT)
    c = p.children[moved.client_order_id]
    assert (c.px, c.leaves, c.is_open) == (99, moved.qty, True)  # the venue's price and size
    assert (p.qty, p.order.px) == (30, 99)
    b.run_until(12 * S)
    new = [f for f in venue_frames(tmp_path) if type(f) is NewOrder]
    assert all(f.px <= 99 for f in new if f.ts_origin >= t_amend)
    assert not b.venue.open_orders()
    (end,) = [e for e in parent_events(b.out) if isinstance(e, OrderFilled | OrderCanceled)]
    pf = [e for e in parent_events(record + b.out) if isinstance(e, OrderPartiallyFilled)]
    assert all(f.fill_px <= 99 for f in pf if f.ts_event > t_amend)  # nobody sells at <= 99
    assert isinstance(end, OrderCanceled) and end.leaves_qty == 30 - sum(f.fill_qty for f in pf)
    assert b.engine.algo.anomalies == {}


def test_snapshot_restore_round_trip_keeps_an_amend() -> None:
    ids = iter(range(1000, 2000))
    e1 = AlgoEngine(TABLE, lambda: next(ids))
    out = e1.submit(parent_order(), 0)
    out += e1.on_timer(2 * S)
    for k in [o for o in out if type(o) is NewOrder]:
        q = k.qty
        fill = OrderFilled(
            k.client_order_id, 5, IID, 1, 101, q, q, 0, 0.0, 1, k.client_order_id, 0, 2 * S, 0
        )
        e1.on_child_event(fill, 2 * S)
    assert e1.parent(PARENT).filled == 30
    e1.amend(amend_parent(140, 103, 2 * S), 2 * S)  # a total of 170: 140 over the 7 slices to come
    snaps = e1.snapshot()
    assert snaps[0].order == parent_order() and len(snaps[0].amends) == 1  # as accepted + amend
    wire = msgspec.msgpack.encode(snaps)
    e2 = AlgoEngine(TABLE, lambda: next(ids))
    e2.restore(msgspec.msgpack.decode(wire, type=list[ParentSnapshot]), 2 * S)
    assert e2.snapshot() == snaps
    p = e2.parent(PARENT)
    assert (p.qty, p.order.px) == (170, 103)
    more = [o for o in e2.on_timer(5 * S) if type(o) is NewOrder]
    assert sum(o.qty for o in more) == 30 + 3 * 20 - 30  # slices 3-5 of the rebased schedule
    assert {o.px for o in more} == {103}


def _recorded_vwap_exec(tmp: Path, incarnation: int, volume: bool) -> Exec:
    """An exec whose algo engine keeps 1 s volume buckets of a 20 s "day" (seeded if asked)."""
    from engine.messages import Trade

    e = Exec(tmp, incarnation)
    algo = AlgoEngine(TABLE, e.engine.next_exec_id, volume_buckets=20, volume_period_ns=20 * S)
    algo.on_record = e.log.append
    e.engine.algo = algo
    if volume:  # yesterday: little early in the window, a lot late in it
        trades = [Trade(IID, 100, 1 + (t // S) ** 2, 1, t, t) for t in range(0, 20 * S, 100 * MS)]
        algo.load_volume(IID, trades)
    return e


def test_vwap_on_recorded_volume_resumes_on_its_profile_after_a_crash(tmp_path: Path) -> None:
    order = msgspec.structs.replace(
        parent_order(200, slices=10.0),
        algo=int(AlgoKind.VWAP),
        algo_params={
            "duration_s": 10.0,
            "slices": 10.0,
            "profile": 0.0,
        },
    )
    a = _recorded_vwap_exec(tmp_path, 0, volume=True)
    a.run_until(1 * MS)
    a.out += a.engine.on_order(order, a.now)
    assert isinstance(parent_events(a.out)[0], OrderAccepted)
    shares = list(a.engine.algo.parent(PARENT).impl.shares)
    assert shares[4] < 0.3  # back-loaded: far from flat
    a.run_until(4 * S + 500 * MS)
    record = list(a.out)
    del a
    b = _recorded_vwap_exec(tmp_path, 1, volume=False)  # the volume died with exec
    b.now = 5 * S
    b.recover(record, [order])
    p = b.engine.algo.parent(PARENT)
    assert p.is_working and p.impl is not None, [e for e in b.out if isinstance(e, OrderCanceled)]
    assert p.impl.shares == shares  # the same schedule, from the logged profile
    b.run_until(12 * S)
    kids = [f.qty for f in venue_frames(tmp_path) if type(f) is NewOrder]
    targets = [int(200 * s + 1e-9) for s in shares]
    assert kids == [t - (targets[i - 1] if i else 0) for i, t in enumerate(targets) if t]
    check_no_child_twice_and_parent_whole(tmp_path, record + b.out, 200)


def test_an_algo_log_written_before_amends_and_profiles_still_loads(tmp_path: Path) -> None:
    import zlib

    # the old entry shape: [parent, ts, order], no amend and no profile fields
    old = msgspec.msgpack.encode([PARENT, 5, parent_order()])
    (tmp_path / "old.algo").write_bytes(struct.pack("<II", len(old), zlib.crc32(old)) + old)
    log = AlgoLog(tmp_path / "old.algo")  # reopened and appended to by today's exec
    log.append(PARENT, parent_order(150), 9, amend=AmendSnapshot(ts=9, qty=150, px=102))
    log.close()
    (lp,) = load_algo_log(tmp_path / "old.algo")[0]
    assert (lp.order, lp.start_ns, lp.profile) == (parent_order(), 5, None)
    assert [(a.ts, a.qty, a.px) for a in lp.amends] == [(9, 150, 102)]
