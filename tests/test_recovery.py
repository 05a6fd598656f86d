"""Recovery: the simulated venue's own durable record, and start-up reconciliation of the
stored record against the venue (engine/reconcile.py)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import (
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaceRejected,
    ReconciliationKind,
    ReplaceOrder,
)
from engine.oms import OrderStatus
from engine.reconcile import reconcile
from engine.venues.sim import SimExchange, prune_records
from tests.test_sim_exchange import BUY, SELL, TABLE, new, snap, trade

K = ReconciliationKind
BOOK = snap([(100, 50), (99, 20)], [(101, 10), (102, 20)])


def _venue(path: Path | None) -> SimExchange:
    v = SimExchange(TABLE, record_path=path)
    v.on_market_data(BOOK, 1)
    return v


def _session(v: SimExchange) -> list:
    """Some trading: a taker that fills, a resting order partly filled, one canceled, one open."""
    out = []
    out += v.submit(new(1, BUY, 101, 4), 10)  # takes 4 at 101
    out += v.submit(new(2, BUY, 100, 30), 11)  # rests behind 50
    out += v.submit(new(3, SELL, 105, 5), 12)  # rests
    out += v.submit(new(4, SELL, 106, 5), 13)
    out += v.cancel(CancelOrder(4, 1, 1, 14, 14), 14)
    out += v.on_market_data(trade(100, 60, SELL), 15)  # 50 ahead, then 10 of ours
    return out


def test_the_venue_record_survives_the_process_and_refuses_reused_ids(tmp_path: Path) -> None:
    path = tmp_path / "sim.venue"
    v1 = _venue(path)
    # refused requests go into the record first (their own types, read back like the rest;
    # they use no order id)
    (refused,) = v1.cancel(CancelOrder(77, 1, 1, 5, 5), 5)
    assert isinstance(refused, OrderCancelRejected)
    (refused,) = v1.replace(ReplaceOrder(78, 1, 1, 106, 1, 6, 6), 6)
    assert isinstance(refused, OrderReplaceRejected)
    events = _session(v1)
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert [f.fill_qty for f in fills] == [4, 10]
    open1, pos1 = v1.open_orders(), v1.positions()
    # exec dies (no close): a new venue object on the same file is the same venue
    v2 = _venue(path)
    assert v2.open_orders() == open1
    assert [o.client_order_id for o in v2.open_orders()] == [2, 3]
    assert v2.positions() == pos1 == {1: 14}
    assert v2.fills_since(0) == fills
    assert v2.fills_since(fills[0].fill_id) == fills[1:]
    assert v2.knows_order(4) and not v2.knows_order(99) and not v2.knows_order(77)
    # an order sent again after the crash is refused, not placed twice
    again = v2.submit(new(2, BUY, 100, 30), 20)
    assert isinstance(again[0], OrderRejected) and "duplicate" in again[0].reason
    # the reloaded resting order still trades, and fill ids continue
    more = v2.on_market_data(trade(100, 5, SELL), 21)
    assert [(f.client_order_id, f.fill_qty) for f in more] == [(2, 5)]
    assert more[0].fill_id == fills[-1].fill_id + 1
    v2.close_record()
    # a torn last write (killed mid-append) is cut off, not misread
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x93")
    v3 = _venue(path)
    assert v3.positions() == {1: 19}
    assert len(v3.fills_since(0)) == 3
    assert prune_records(tmp_path, keep=path) == 0
    assert prune_records(tmp_path) == 1 and not path.exists()


def test_reconcile_publishes_what_the_record_missed(tmp_path: Path) -> None:
    v = _venue(tmp_path / "a.venue")
    events = _session(v)
    orders = [
        new(c, s, p, q)
        for c, s, p, q in (
            (1, BUY, 101, 4),
            (2, BUY, 100, 30),
            (3, SELL, 105, 5),
            (4, SELL, 106, 5),
        )
    ]
    # the record lost the tail: only the first fill and acks of 1 and 2 reached it
    kept = [e for e in events if isinstance(e, OrderAccepted) and e.client_order_id in (1, 2)]
    kept += [e for e in events if isinstance(e, OrderPartiallyFilled)][:1]
    r = reconcile(orders, kept, v, now_ns=99)
    kinds = [e.kind for e in r.events]
    assert kinds.count(K.MISSING_FILL) == 1
    assert K.MISSING_ACK in kinds  # order 3 was open at the venue, SUBMITTED in the record
    assert K.UNKNOWN_AT_VENUE in kinds  # order 4 was canceled at the venue
    t = r.table
    assert t.get(2).cum_qty == 10 and t.get(2).is_open
    assert t.get(3).state == OrderStatus.ACCEPTED
    assert not t.get(4).is_open and not t.get(1).is_open
    pub = [type(e).__name__ for e in r.publish]
    assert pub == ["OrderAccepted", "OrderPartiallyFilled", "OrderCanceled"]
    assert not [e for e in r.events if e.kind == K.POSITION_MISMATCH]
    # the record is now complete: reconciling it again finds nothing
    again = reconcile(orders, kept + r.publish, v, now_ns=100)
    assert again.events == [] and again.publish == []


def test_reconcile_suppresses_redelivered_orders_and_adopts_unknown_ones(tmp_path: Path) -> None:
    v = _venue(None)
    v.submit(new(7, BUY, 99, 5), 10)  # at the venue, recorded as an order, never acknowledged
    v.submit(new(8, SELL, 110, 5), 11)  # at the venue, missing from the record entirely
    orders = [new(7, BUY, 99, 5), new(9, BUY, 98, 5)]  # 9: approved, never reached exec's venue
    r = reconcile(orders, [], v, now_ns=50, pending_new={7, 9})
    assert r.duplicates == {7}
    assert r.table.get(9) is None  # exec will send it from its input
    assert r.table.get(8) is not None and r.table.get(8).is_open
    kinds = {e.kind for e in r.events}
    assert {K.DUPLICATE_SUPPRESSED, K.UNKNOWN_LOCALLY, K.MISSING_ACK} <= kinds
    assert all(not isinstance(e, OrderCanceled) for e in r.publish)


# --- the whole engine: SIGKILL exec mid-run, with the database up and with it down ------------

E2E_SIM = "latency_us = 2000.0"  # requests spend 2 ms on the wire: some are always in flight


def _engine_config(tmp_path: Path, eid: str, dsn: str) -> Path:
    from tests.test_engine_e2e import write_config

    cfg = write_config(tmp_path, eid)
    text = cfg.read_text()
    start = text.index("[storage.postgres]")
    at = text.index('mode = "embedded"', start)
    text = text[:at] + f'mode = "{dsn}"' + text[at + len('mode = "embedded"') :]
    text = text.replace("latency_us = 50.0", E2E_SIM)
    inf = text.find("[inference]")
    if inf >= 0:  # no model serving here: fewer processes on a small test machine
        at = text.find("enabled = true", inf)
        text = text[:at] + "enabled = false" + text[at + len("enabled = true") :]
    cfg.write_text(text)
    return cfg


def _venue_record(tmp_path: Path) -> tuple[list, list]:
    """(every frame, fills) of the simulated exchange's own record of the run."""
    import struct

    import msgspec

    from engine.messages import Message

    (path,) = (tmp_path / "var" / "venue").glob("*.venue")
    data = path.read_bytes()
    dec = msgspec.msgpack.Decoder(Message)
    frames, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        frames.append(dec.decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return frames, [f for f in frames if isinstance(f, OrderPartiallyFilled)]


def _stored(dsn: str) -> tuple[list, list, list]:
    import psycopg

    with psycopg.connect(dsn) as c:
        fills = c.execute(
            "SELECT fill_id, client_order_id, instrument_id, side, px, qty FROM fills ORDER BY fill_id"
        ).fetchall()
        orders = [r[0] for r in c.execute("SELECT client_order_id FROM orders")]
        recon = c.execute("SELECT kind, action FROM reconciliation_events").fetchall()
    return fills, orders, recon


def _fills_stored(dsn: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            return c.execute("SELECT count(*) FROM fills").fetchone()[0]
    except psycopg.Error:
        return -1


def _kill_exec_and_check(
    tmp_path: Path, eid: str, dsn: str, db_down: Any = None, stop_while_restarting: bool = False
) -> None:
    import json
    import os
    import signal

    from procs.runtime import STATE_READY
    from tests.test_engine_e2e import (
        _alive,
        _children,
        _cmd,
        _wait_for,
        counter,
        health,
        running_engine,
        summary_of,
        wait_counter,
    )

    cfg = _engine_config(tmp_path, eid, dsn)

    def check(ok: bool, what: str) -> None:
        if not ok:  # stop the engine and show what it said
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=90)
            raise AssertionError(f"{what}\n{err[-4000:]}")

    with running_engine(cfg, tmp_path, eid) as proc:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 5, 60)
        check(_wait_for(lambda: _fills_stored(dsn) >= 3, 120), "no fills recorded: never traded")
        # orders resting and in flight: exec keeps receiving new ones
        n = counter(eid, "exec", "new_orders")
        check(wait_counter(eid, "exec", "new_orders", n + 5), "no orders reaching exec")
        before = _fills_stored(dsn)
        if db_down is not None:
            db_down.stop()
            # the recorder has met the outage (and journals from here on)
            check(wait_counter(eid, "recorder", "db_errors", 1), "the recorder saw no outage")
        victim = [c for c in _children(proc.pid) if "exec" in _cmd(c)][0]
        os.kill(victim.pid, signal.SIGKILL)
        if stop_while_restarting:
            # told to stop between exec's incarnations (dead, not yet replaced): the restart
            # comes up (recovers, handles what it was sent) before the others drain, and the
            # record still misses nothing
            assert _wait_for(lambda: not _alive(victim), 30)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        else:

            def exec_row() -> tuple[int, int, int]:
                return health(eid).get("exec", (0, 0, 0))

            # the new exec has started (its health row) and recovers while the database is down
            check(_wait_for(lambda: exec_row()[0] not in (0, victim.pid), 90), "no restart")
            if db_down is not None:
                db_down.restart()
            check(_wait_for(lambda: exec_row()[1] == STATE_READY, 90), "exec never came up")
            # trading again: fills made after the restart reach the database
            after = max(before, _fills_stored(dsn))
            check(
                _wait_for(lambda: _fills_stored(dsn) > after + 3, 60),
                "no trading after the restart",
            )
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"], err[-3000:]
    frames, venue_fills = _venue_record(tmp_path)
    fills, orders, recon = _stored(dsn)
    # the fills in PostgreSQL are exactly the exchange's own: none lost, none twice
    assert fills == [
        (f.fill_id, f.client_order_id, f.instrument_id, f.side, f.fill_px, f.fill_qty)
        for f in venue_fills
    ]
    assert len(venue_fills) > 0
    # no order placed twice: every order reached the venue once, and was recorded
    placed = [f.client_order_id for f in frames if type(f).__name__ == "NewOrder"]
    assert len(placed) == len(set(placed)) > 0
    assert not [f for f in frames if isinstance(f, OrderRejected) and "duplicate" in f.reason]
    assert set(placed) <= set(orders)
    # and each order's life as stored equals the venue's: same filled quantity, closed on both
    # sides after the clean stop; orders that never reached the venue are closed, unfilled
    import psycopg

    from engine.oms import OrderTable
    from ops.store.reader import load_run_state

    with psycopg.connect(dsn) as c:
        (run_id,) = c.execute("SELECT run_id FROM runs").fetchone()
        state = load_run_state(c, run_id)
    table = OrderTable.rebuild(state.orders, state.events)
    venue_cum: dict[int, int] = {}
    for f in venue_fills:
        venue_cum[f.client_order_id] = venue_cum.get(f.client_order_id, 0) + f.fill_qty
    for coid, r in table.orders.items():
        assert r.cum_qty == venue_cum.get(coid, 0), coid
    assert [r.client_order_id for r in table.open_orders() if r.client_order_id in placed] == []
    assert "recovery:" in err
    if db_down is not None:  # the outage really happened, and the journal carried it
        assert "journaling" in err and "replayed" in err, err[-3000:]
    # what the engine itself saw (the supervisor's record) agrees with the venue too
    seen = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "fills.jsonl").read_text().splitlines()
    ]
    assert sorted(f["fill_id"] for f in seen) == [f.fill_id for f in venue_fills]
    assert s["consistent"] is True
    assert isinstance(recon, list)


def test_sigkill_exec_mid_run_orders_and_fills_match_the_venue(tmp_path: Path, pg_dsn: str) -> None:
    _kill_exec_and_check(tmp_path, "r" + uuid.uuid4().hex[:7], pg_dsn)


def test_a_stop_while_exec_restarts_waits_for_it_and_the_record_misses_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    _kill_exec_and_check(tmp_path, "s" + uuid.uuid4().hex[:7], pg_dsn, stop_while_restarting=True)


def test_sigkill_exec_with_the_database_stopped_and_started_mid_run(tmp_path: Path) -> None:
    from ops.store.pg import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="gkdb", dir="/tmp"))
    db = EmbeddedPostgres(base / "pg")
    try:
        dsn = db.start()
        _kill_exec_and_check(tmp_path, "d" + uuid.uuid4().hex[:7], dsn, db_down=db)
    finally:
        db.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- property: whatever prefix of the record survived, reconciliation restores the venue's truth


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "cancel", "trade"]),
            st.integers(1, 12),  # client order id
            st.sampled_from([BUY, SELL]),
            st.integers(-3, 3),  # price offset from the touch
            st.integers(1, 30),  # quantity
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(0.0, 1.0),
)
def test_reconcile_restores_the_venue_truth_from_any_surviving_prefix(
    actions: list, kept: float
) -> None:
    v = _venue(None)
    orders: dict[int, Any] = {}
    published: list = []
    t = 10
    for kind, coid, side, off, qty in actions:
        t += 1
        if kind == "new" and coid not in orders:
            px = (100 if side == BUY else 101) + off
            orders[coid] = new(coid, side, px, qty)
            published += v.submit(orders[coid], t)
        elif kind == "cancel":
            published += v.cancel(CancelOrder(coid, 1, 1, t, t), t)
        else:
            published += v.on_market_data(trade(100 + off, qty, side), t)
    cut = int(len(published) * kept)
    r = reconcile(list(orders.values()), published[:cut], v, now_ns=t + 1)
    venue_cum: dict[int, int] = {}
    for f in v.fills_since(0):
        venue_cum[f.client_order_id] = venue_cum.get(f.client_order_id, 0) + f.fill_qty
    for coid, rec in r.table.orders.items():
        assert rec.cum_qty == venue_cum.get(coid, 0)
    assert {x.client_order_id for x in r.table.open_orders()} == {
        o.client_order_id for o in v.open_orders()
    }
    # once what was published is recorded, a second reconciliation has nothing left to fix
    again = reconcile(list(orders.values()), published[:cut] + r.publish, v, now_ns=t + 2)
    assert [e.kind for e in again.events if e.kind != K.POSITION_MISMATCH] == []
