"""ops/store against a real PostgreSQL (the session's pgserver): migrations, COPY writes,
idempotency, partitions, the journal, recovery reads, retries."""

from __future__ import annotations

import os
import random

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.messages import (
    Bar,
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    Quote,
    RiskEvent,
    Trade,
)
from ops.store import migrate as mig
from ops.store.journal import Journal, iter_frames, read_records
from ops.store.pg import Backoff, run_tx
from ops.store.reader import load_run_state
from ops.store.writer import DAY_NS, Rows, Writer

RUN = 42


def _conn(dsn: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit)


@pytest.fixture
def db(pg_dsn: str) -> str:
    with _conn(pg_dsn) as c:
        mig.migrate(c)
    return pg_dsn


def _order(coid: int, iid: int = 1, qty: int = 10) -> NewOrder:
    return NewOrder(coid, 1, iid, 1, 2, 1, 10_000, qty, 5, 6)


def _fill(
    coid: int, fid: int, qty: int, leaves: int, cls: type = OrderPartiallyFilled
) -> OrderPartiallyFilled:
    return cls(
        coid,
        900 + coid,
        1,
        1,
        10_000,
        qty,
        10 - leaves,
        leaves,
        0.01,
        2,
        fid,
        5,
        100 + fid,
        110 + fid,
    )


def _trading_batch() -> list:
    return [
        _order(1),
        OrderAccepted(1, 901, 1, 1, 10_000, 10, 5, 100, 110),
        _fill(1, 1, 4, 6),
        _fill(1, 2, 6, 0, OrderFilled),
        _order(2),
        OrderAccepted(2, 902, 1, 1, 10_000, 10, 5, 101, 111),
        CancelOrder(2, 1, 1, 7, 8),
        OrderCanceled(2, 1, 10, "canceled", 7, 120, 130),
        RiskEvent(1, 1, 3, "max position", 2000.0, 1000.0, 99),
    ]


def _count(dsn: str, table: str) -> int:
    with _conn(dsn) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- migrations ------------------------------------------------------------------------------


def test_migrate_applies_every_file_once_and_reports_status(pg_dsn: str) -> None:
    with _conn(pg_dsn) as c:
        assert [s["state"] for s in mig.status(c)] == ["pending"] * len(mig.load_migrations())
        done = mig.migrate(c)
        assert [m.version for m in done] == [m.version for m in mig.load_migrations()]
        assert mig.migrate(c) == []  # idempotent
        assert {s["state"] for s in mig.status(c)} == {"applied"}
        tables = {
            r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    for t in (
        "instruments",
        "quotes",
        "trades",
        "bars",
        "orders",
        "order_events",
        "fills",
        "positions",
        "pnl_snapshots",
        "risk_events",
        "models",
        "audit_log",
        "reconciliation_events",
        "schema_migrations",
    ):
        assert t in tables


def test_migration_files_must_be_numbered_without_gaps(tmp_path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="without gaps"):
        mig.load_migrations(tmp_path)
    (tmp_path / "bad.sql").write_text("")
    with pytest.raises(ValueError, match="NNNN_name"):
        mig.load_migrations(tmp_path)


def test_a_failing_migration_leaves_nothing_behind(pg_dsn: str, tmp_path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE b (x int); SELECT nonsense_column FROM a;")
    with _conn(pg_dsn) as c:
        with pytest.raises(psycopg.Error):
            mig.migrate(c, tmp_path)
        assert [s["state"] for s in mig.status(c, tmp_path)] == ["applied", "pending"]
        assert c.execute("SELECT to_regclass('b')").fetchone()[0] is None


# --- writer ----------------------------------------------------------------------------------


def test_trading_records_are_stored_exactly_once_however_often_written(db: str) -> None:
    rows = Rows()
    for m in _trading_batch():
        rows.add(RUN, m)
    w = Writer()
    with _conn(db, autocommit=False) as c:
        for _ in range(3):  # a restarted recorder, a journal replay: the same records again
            run_tx(c, lambda conn: w.write(conn, rows))
    assert _count(db, "orders") == 2
    assert _count(db, "fills") == 2
    assert _count(db, "order_events") == 6  # 2 acks, 2 fills, a cancel request, a cancel
    assert _count(db, "risk_events") == 1
    with _conn(db) as c:
        kinds = [r[0] for r in c.execute("SELECT kind FROM order_events ORDER BY seq")]
        assert kinds == [
            "OrderAccepted",
            "OrderPartiallyFilled",
            "OrderFilled",
            "OrderAccepted",
            "CancelOrder",
            "OrderCanceled",
        ]  # noqa: E501 - publication order
    # another run may reuse the same client order ids: they are different orders
    rows2 = Rows()
    for m in _trading_batch():
        rows2.add(RUN + 1, m)
    with _conn(db, autocommit=False) as c:
        run_tx(c, lambda conn: w.write(conn, rows2))
    assert _count(db, "orders") == 4


def test_market_data_goes_to_day_partitions(db: str) -> None:
    day = 20_000
    msgs = [
        Quote(1, 100, 5, 101, 7, day * DAY_NS + 1, 11, 1),
        Quote(2, 200, 5, 201, 7, (day + 1) * DAY_NS + 5, 12, 2),
        Trade(1, 100, 3, -1, day * DAY_NS + 2, 13, 77),
        Bar(1, day * DAY_NS, day * DAY_NS + 60, 1, 3, 1, 2, 100, 4),
        Quote(3, 1, 1, 2, 1, -5, 0, 0),  # before the epoch: refused, counted
    ]
    rows = Rows()
    for m in msgs:
        rows.add(RUN, m)
    assert rows.ignored == 1
    with _conn(db, autocommit=False) as c:
        run_tx(c, lambda conn: Writer().write(conn, rows))
    with _conn(db) as c:
        parts = {
            r[0]
            for r in c.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'quotes'"
            )
        }
        assert parts == {f"quotes_d{day}", f"quotes_d{day + 1}"}
        assert c.execute(f"SELECT count(*) FROM quotes_d{day}").fetchone()[0] == 1
        assert c.execute(
            "SELECT bid_px, ask_qty, seq FROM quotes WHERE instrument_id = 2"
        ).fetchone() == (200, 7, 2)
        assert c.execute("SELECT px, side, trade_id FROM trades").fetchone() == (100, -1, 77)
        assert c.execute("SELECT volume FROM bars").fetchone() == (100,)


def test_positions_are_upserted_and_snapshotted(db: str) -> None:
    with _conn(db, autocommit=False) as c:
        run_tx(
            c, lambda conn: Writer.write_positions(conn, RUN, [(1, 10, 100.5, 101, 1.0, 2.0, 0.1)])
        )
        run_tx(
            c, lambda conn: Writer.write_positions(conn, RUN, [(1, -5, 99.0, 98, 3.0, -1.0, 0.2)])
        )
    with _conn(db) as c:
        assert c.execute("SELECT position, mark_px FROM positions").fetchall() == [(-5, 98)]
        assert c.execute("SELECT count(*) FROM pnl_snapshots").fetchone()[0] == 2


# --- retries ---------------------------------------------------------------------------------


def test_run_tx_retries_a_real_serialization_failure(db: str) -> None:
    with _conn(db) as c:
        c.execute("CREATE TABLE acct (k int PRIMARY KEY, v int)")
        c.execute("INSERT INTO acct VALUES (1, 0)")
    attempts = []
    other = _conn(db)

    def tx(conn: psycopg.Connection) -> int:
        attempts.append(1)
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        v = conn.execute("SELECT v FROM acct WHERE k = 1").fetchone()[0]
        if len(attempts) == 1:  # a concurrent writer commits under our feet, once
            other.execute("UPDATE acct SET v = v + 100 WHERE k = 1")
        conn.execute("UPDATE acct SET v = %s WHERE k = 1", (v + 1,))
        return v + 1

    with _conn(db, autocommit=False) as c:
        assert run_tx(c, tx) == 101
    other.close()
    assert len(attempts) == 2
    with _conn(db) as c:
        assert c.execute("SELECT v FROM acct").fetchone() == (101,)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    b = Backoff(0.1, 1.0, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(12)]
    ceilings = [min(1.0, 0.1 * 2**k) for k in range(12)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 0.1  # it does grow
    b.reset()
    assert b.next_delay() <= 0.1


# --- journal ---------------------------------------------------------------------------------


def test_journal_round_trip_torn_tail_and_truncate(tmp_path) -> None:
    j = Journal(tmp_path / "j.journal")
    batch = _trading_batch()
    assert j.append(batch) == len(batch)
    assert list(j.records()) == batch
    size = os.path.getsize(j.path)
    j.close()
    with open(j.path, "ab") as f:  # a crash mid-append: half a frame
        f.write(b"\x40\x00\x00\x00\x01\x02")
    assert list(read_records(j.path)) == batch
    j2 = Journal(j.path)
    j2.append([_order(9)])
    assert j2.torn == 1
    assert list(j2.records()) == [*batch, _order(9)]
    assert os.path.getsize(j.path) > size
    j2.truncate()
    assert list(j2.records()) == []
    j2.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=30),
    st.integers(0, 1 << 20),
    st.booleans(),
)
def test_journal_cut_anywhere_reads_back_a_prefix(
    tmp_path, coids: list[int], where: int, flip: bool
) -> None:
    path = tmp_path / "p.journal"
    path.unlink(missing_ok=True)
    j = Journal(path, fsync=False)
    msgs = [_order(c) for c in coids]
    j.append(msgs)
    j.close()
    raw = path.read_bytes()
    blob = bytearray(raw[: where % (len(raw) + 1)])
    if flip and blob:
        blob[-1] ^= 0xFF  # a corrupt last byte must not yield a wrong record
    path.write_bytes(bytes(blob))
    got = list(read_records(path))
    assert got == msgs[: len(got)]
    assert sum(1 for _ in iter_frames(path)) == len(got)


# --- recovery reads --------------------------------------------------------------------------


def test_run_state_merges_journal_and_database_without_duplicates(db: str, tmp_path) -> None:
    batch = _trading_batch()
    stored, journaled_only = batch[:4], batch[4:]
    rows = Rows()
    for m in stored:
        rows.add(RUN, m)
    with _conn(db, autocommit=False) as c:
        run_tx(c, lambda conn: Writer().write(conn, rows))
    j = Journal(tmp_path / "r.journal")
    j.append(batch[2:])  # overlaps with the database (a crash between COPY and truncate)
    with _conn(db, autocommit=False) as c:
        state = load_run_state(c, RUN, j.path)
    assert state.orders == [_order(1), _order(2)]
    assert state.events == [m for m in batch if not isinstance(m, NewOrder | RiskEvent)]
    assert state.from_journal == len([m for m in journaled_only if not isinstance(m, RiskEvent)])
    assert state.last_fill_id == 2
    # the database down: the journal alone
    alone = load_run_state(None, RUN, j.path)
    assert [o.client_order_id for o in alone.orders] == [2]
    assert msgspec.structs.asdict(alone.events[0]) == msgspec.structs.asdict(batch[2])
