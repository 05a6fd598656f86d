"""The fills COPY path after its speed-up (migration 0004, compiled bytea dumper, fast range
check), against a real PostgreSQL: still exactly once, byte-exact frames, publication order,
and out-of-range values refused rather than wrapped."""

from __future__ import annotations

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import OrderFilled, OrderPartiallyFilled
from ops.store import migrate as mig
from ops.store.pg import run_tx
from ops.store.reader import load_run_state
from ops.store.writer import Rows, Writer, digest, in_range

RUN = 77
_enc = msgspec.msgpack.Encoder()


@pytest.fixture
def db(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    return pg_dsn


def _fill(fid: int, iid: int = 1, liquidity: int = 1) -> OrderPartiallyFilled:
    cls = OrderFilled if fid % 2 else OrderPartiallyFilled
    return cls(
        fid // 2, 500 + fid, iid, 1, 10_000 + fid, 3, 3, 0, 0.01, liquidity, fid, 1, fid, fid
    )


def _rows(fills: list[OrderPartiallyFilled], run: int = RUN) -> Rows:
    rows = Rows()
    for f in fills:
        rows.add(run, f, _enc.encode(f))
    return rows


def test_a_fill_batch_resent_after_a_crash_is_stored_once_byte_exact_in_order(db: str) -> None:
    first = [_fill(i) for i in range(1, 101)]
    resent = [_fill(i) for i in range(51, 151)]  # the recorder died after committing 1..100
    w = Writer()
    with psycopg.connect(db) as c:
        run_tx(c, lambda conn: w.write(conn, _rows(first)))
        run_tx(c, lambda conn: w.write(conn, _rows(resent)))  # overlap: the staging path
        run_tx(c, lambda conn: w.write(conn, _rows(resent)))  # all duplicates
        fill_ids = [r[0] for r in c.execute("SELECT fill_id FROM fills ORDER BY fill_id")]
        events = c.execute(
            "SELECT event_hash, msg, client_order_id, kind FROM order_events WHERE run_id = %s"
            " ORDER BY seq",
            (RUN,),
        ).fetchall()
    assert fill_ids == list(range(1, 151))
    expected = [_fill(i) for i in range(1, 151)]
    # the exact frames, keyed by their digest, in publication order
    assert [bytes(m) for _, m, _, _ in events] == [_enc.encode(f) for f in expected]
    assert all(bytes(h) == digest(bytes(m)) for h, m, _, _ in events)
    assert [(coid, kind) for _, _, coid, kind in events] == [
        (f.client_order_id, type(f).__name__) for f in expected
    ]
    with psycopg.connect(db) as c:
        state = load_run_state(c, RUN)
    assert [e.fill_id for e in state.fills] == list(range(1, 151))


def test_the_database_itself_refuses_a_second_copy_of_an_event(db: str) -> None:
    f = _fill(3)
    frame = _enc.encode(f)
    with psycopg.connect(db) as c:
        run_tx(c, lambda conn: Writer().write(conn, _rows([f])))
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(
                "INSERT INTO order_events (run_id, event_hash, kind, client_order_id,"
                " instrument_id, reason, ts_event, msg) VALUES (%s, %s, 'x', %s, 1, '', 0, %s)",
                (RUN, digest(frame), f.client_order_id, frame),
            )
        c.rollback()
        # the same frame in another run is another event
        run_tx(c, lambda conn: Writer().write(conn, _rows([f], RUN + 1)))
        assert c.execute("SELECT count(*) FROM order_events").fetchone()[0] == 2


def test_values_out_of_a_narrow_column_are_refused_never_wrapped(db: str) -> None:
    fills = [_fill(i) for i in range(1, 11)]
    fills[2] = _fill(3, iid=2**31)  # instrument_id is int4 in order_events and fills
    fills[6] = _fill(7, liquidity=2**15)  # liquidity is int2 in fills only
    w = Writer()
    with psycopg.connect(db) as c:
        run_tx(c, lambda conn: w.write(conn, _rows(fills)))
        stored = [r[0] for r in c.execute("SELECT fill_id FROM fills ORDER BY fill_id")]
        n_events = c.execute("SELECT count(*) FROM order_events").fetchone()[0]
    assert stored == [1, 2, 4, 5, 6, 8, 9, 10]
    assert n_events == 9  # only the int4 overflow concerns order_events
    assert w.refused == 3  # one event row, two fill rows


_narrow_int = st.one_of(
    st.integers(-(2**16), 2**16),
    st.sampled_from([-(2**31) - 1, -(2**31), 2**31 - 1, 2**31, -(2**15) - 1, 2**15 - 1, 2**15]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_narrow_int, _narrow_int, _narrow_int), max_size=30))
def test_the_range_check_keeps_exactly_the_rows_that_fit(cols: list[tuple[int, int, int]]) -> None:
    # fills: instrument_id (int4) is column 4, side (int2) 5, liquidity (int2) 11
    data = [
        (1, k, 2, 3, iid, side, 5, 6, 7, 8, 0.1, liq, 9, 10, 11)
        for k, (iid, side, liq) in enumerate(cols)
    ]
    fits = [
        r
        for r in data
        if -(2**31) <= r[4] < 2**31 and -(2**15) <= r[5] < 2**15 and -(2**15) <= r[11] < 2**15
    ]
    assert in_range("fills", data) == fits
