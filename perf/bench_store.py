"""pyperf suite: the PostgreSQL system of record (embedded pgserver), and room for the other
stores (Redis benchmarks are separate functions registered in ``BENCHMARKS``).

PostgreSQL benchmarks, all against a real server the main process starts from ``pgserver`` in a
temporary directory (workers get its DSN through ``--dsn``):

- ``pg_write_row``: one fill INSERTed and committed (autocommit: one durable commit each) —
  the single-row write latency, against the spec's 500 µs target / 2 ms maximum;
- ``pg_write_row_async``: the same with ``synchronous_commit = off`` (the commit does not wait
  for the WAL flush; what the recorder uses for market data, never for trading records);
- ``pg_read_row``: one fill SELECTed by primary key — the single-row read latency;
- ``pg_copy_fills`` / ``pg_copy_quotes``: ``ops.store.writer.Writer`` COPYing a batch of
  10,000 rows in one transaction (fills through the idempotent path: straight in under a
  savepoint, no duplicate to stage; quotes into their day partition) — time per row, i.e.
  1 / throughput;
- ``pg_insert_fills`` / ``pg_insert_quotes`` (baseline): a plain ``INSERT`` per row in a loop,
  same rows, one transaction;
- ``pg_copy_fills_0003`` (baseline): ``pg_copy_fills`` into copies of ``order_events`` and
  ``fills`` laid out as before migration 0004 (``order_events`` keyed by (run_id, event_hash),
  plus an index on (run_id, seq)), in a schema of their own: what 0004 changed, measured in the
  same run on the same machine.

A fill message is two rows (its ``order_events`` row with the exact frame, and its ``fills``
row): "fills/s" counts fill messages, i.e. pairs of rows.

Run ``python perf/bench_store.py --fast``; the main process prints rows/s, the COPY/INSERT
ratios and the latencies against the spec at the end. ``--only REGEX`` runs a subset.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyperf  # noqa: E402

from engine.messages import OrderFilled, Quote  # noqa: E402

BATCH = 10_000
WRITE_TARGET_S, WRITE_MAX_S = 500e-6, 2e-3
_conn: Any = None
_seq = [0]
_run = random.getrandbits(40)


def _db(args: argparse.Namespace) -> Any:
    global _conn
    if _conn is None:
        import psycopg

        _conn = psycopg.connect(args.dsn, autocommit=True)
    return _conn


def _fill(i: int) -> OrderFilled:
    return OrderFilled(i, i, 1 + i % 3, 1, 19_000 + i % 50, 10, 10, 0, 0.02, 2, i, 1, 2, 3)


def _quote(i: int) -> Quote:
    return Quote(1 + i % 3, 19_000, 100, 19_001, 120, 1_700_000_000_000_000_000 + i, i, i)


def _next_ids(n: int) -> range:
    start = _seq[0]
    _seq[0] += n
    return range(start, start + n)


# --- PostgreSQL ---------------------------------------------------------------------------------

_FILL_INSERT = (
    "INSERT INTO fills (run_id, fill_id, client_order_id, venue_order_id, instrument_id, side, px, qty,"
    " cum_qty, leaves_qty, fee, liquidity, ts_origin, ts_event, ts_recv)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_QUOTE_INSERT = (
    "INSERT INTO quotes (run_id, instrument_id, bid_px, bid_qty, ask_px, ask_qty, ts_event, ts_recv, seq)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def pg_write_row(args: argparse.Namespace) -> Callable[[int], float]:
    from ops.store.writer import Rows

    conn = _db(args)

    def run(loops: int) -> float:
        rows = Rows()
        for i in _next_ids(loops):
            rows.add(_run, _fill(i))
        data = rows.fills
        cur = conn.cursor()
        t = perf_counter()
        for r in data:
            cur.execute(_FILL_INSERT, r)  # autocommit: each row is its own durable transaction
        return perf_counter() - t

    return run


def pg_write_row_async(args: argparse.Namespace) -> Callable[[int], float]:
    """The same with ``synchronous_commit = off`` (what the recorder uses for market data)."""
    import psycopg

    conn = psycopg.connect(args.dsn, autocommit=True)
    conn.execute("SET synchronous_commit = off")
    args_conn = argparse.Namespace(dsn=args.dsn)
    global _conn
    saved, _conn = _conn, conn
    try:
        return pg_write_row(args_conn)
    finally:
        _conn = saved


def pg_read_row(args: argparse.Namespace) -> Callable[[int], float]:
    conn = _db(args)
    with conn.cursor() as cur:  # something to read
        cur.execute("SELECT count(*) FROM fills WHERE run_id = %s", (_run + 1,))
        if cur.fetchone()[0] == 0:
            from ops.store.writer import Rows, Writer

            rows = Rows()
            for i in range(1000):
                rows.add(_run + 1, _fill(i))
            with conn.transaction():
                Writer().write(conn, rows)

    def run(loops: int) -> float:
        cur = conn.cursor()
        q = "SELECT client_order_id, px, qty, fee FROM fills WHERE run_id = %s AND fill_id = %s"
        key = _run + 1
        t = perf_counter()
        for i in range(loops):
            cur.execute(q, (key, i % 1000))
            cur.fetchone()
        return perf_counter() - t

    return run


#: schema holding the trading tables as they were before migration 0004 (the fills baseline)
_BEFORE_0004 = "before_0004"
_BEFORE_0004_SQL = (
    f"CREATE SCHEMA {_BEFORE_0004}",
    f"CREATE TABLE {_BEFORE_0004}.fills (LIKE public.fills INCLUDING ALL)",
    f"CREATE TABLE {_BEFORE_0004}.order_events (LIKE public.order_events INCLUDING DEFAULTS)",
    f"ALTER TABLE {_BEFORE_0004}.order_events ADD PRIMARY KEY (run_id, event_hash)",
    f"CREATE INDEX ON {_BEFORE_0004}.order_events (run_id, seq)",
)


def _copy(
    args: argparse.Namespace, make: Callable[[int], Any], schema: str = ""
) -> Callable[[int], float]:
    from ops.store.writer import Rows, Writer

    conn = _db(args)
    if schema:  # its own connection: the tables of that schema first, the rest from public
        import psycopg

        conn = psycopg.connect(args.dsn, autocommit=True, options=f"-c search_path={schema},public")
    writer = Writer()

    def run(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            rows = Rows()
            for i in _next_ids(BATCH):
                rows.add(_run, make(i))
            t = perf_counter()
            with conn.transaction():
                writer.write(conn, rows)
            total += perf_counter() - t
        return total

    return run


def _insert(
    args: argparse.Namespace, make: Callable[[int], Any], sql: str, table: str
) -> Callable[[int], float]:
    from ops.store.writer import Rows, Writer

    conn = _db(args)
    Writer().ensure_partitions(conn, "quotes", 6, [(0,) * 6 + (_quote(0).ts_event,)])

    def run(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            rows = Rows()
            for i in _next_ids(BATCH):
                rows.add(_run, make(i))
            data = getattr(rows, table)
            t = perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                for r in data:
                    cur.execute(sql, r)
            total += perf_counter() - t
        return total

    return run


BENCHMARKS: list[tuple[str, Callable[[argparse.Namespace], Callable[[int], float]], int]] = [
    # (name, factory of func(loops) -> seconds, inner loops: rows per loop)
    ("pg_write_row", pg_write_row, 1),
    ("pg_write_row_async", pg_write_row_async, 1),
    ("pg_read_row", pg_read_row, 1),
    ("pg_copy_fills", lambda a: _copy(a, _fill), BATCH),
    ("pg_copy_fills_0003", lambda a: _copy(a, _fill, _BEFORE_0004), BATCH),
    ("pg_insert_fills", lambda a: _insert(a, _fill, _FILL_INSERT, "fills"), BATCH),
    ("pg_copy_quotes", lambda a: _copy(a, _quote), BATCH),
    ("pg_insert_quotes", lambda a: _insert(a, _quote, _QUOTE_INSERT, "quotes"), BATCH),
]


def print_summary(results: dict[str, pyperf.Benchmark]) -> None:
    def med(name: str) -> float | None:
        b = results.get(name)
        return b.median() if b is not None else None

    out = ["", "== PostgreSQL (embedded pgserver) =="]
    for name, what in (
        ("pg_write_row", "single-row write (INSERT + commit)"),
        ("pg_write_row_async", "single-row write, no WAL flush wait"),
        ("pg_read_row", "single-row read"),
    ):
        m = med(name)
        if m is not None:
            verdict = (
                "meets"
                if m <= WRITE_TARGET_S
                else ("within max" if m <= WRITE_MAX_S else "OVER max")
            )
            out.append(f"  {what:<36} {m * 1e6:8.1f} µs   ({verdict}: target 500 µs, max 2 ms)")
    for kind in ("fills", "quotes"):
        c, i = med(f"pg_copy_{kind}"), med(f"pg_insert_{kind}")
        if c is not None:
            line = f"  COPY {kind:<7} {1 / c:12,.0f} rows/s"
            if i is not None:
                line += f"   INSERT per row {1 / i:10,.0f} rows/s   COPY/INSERT = {i / c:5.1f}x"
            line += "   (aim: 200,000+ rows/s)"
            out.append(line)
    c, b = med("pg_copy_fills"), med("pg_copy_fills_0003")
    if c is not None and b is not None:
        out.append(
            f"  COPY fills, tables as before migration 0004 {1 / b:12,.0f} fills/s"
            f"   now / before = {b / c:4.2f}x"
        )
    print("\n".join(out), flush=True)


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(("--dsn", args.dsn))
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=4, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = (
        "PostgreSQL system of record: row latency, COPY vs INSERT per row"
    )
    runner.argparser.add_argument(
        "--only", metavar="REGEX", default=None, help="run only matching benchmarks"
    )
    runner.argparser.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    args = runner.parse_args()
    base = None
    server = None
    if not args.worker and not args.dsn:
        import pgserver
        import psycopg

        from ops.store.migrate import migrate

        base = tempfile.mkdtemp(prefix="gkbench", dir="/tmp")
        server = pgserver.get_server(Path(base) / "pg", cleanup_mode="delete")
        args.dsn = server.get_uri()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            migrate(conn)
            for sql in _BEFORE_0004_SQL:
                conn.execute(sql)
    results: dict[str, pyperf.Benchmark] = {}
    try:
        for name, factory, inner in BENCHMARKS:
            if args.only and not re.search(args.only, name):
                continue
            func = factory(args) if args.worker else (lambda loops: 0.0)
            bench = runner.bench_time_func(name, func, inner_loops=inner)
            if bench is not None:
                results[name] = bench
        if not args.worker and results:
            print_summary(results)
    finally:
        if server is not None:
            server.cleanup()
        if base:
            shutil.rmtree(base, ignore_errors=True)
        os.environ.pop("GEKKO_BENCH_DSN", None)


if __name__ == "__main__":
    main()
