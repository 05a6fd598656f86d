"""Batched writes of ring messages into PostgreSQL with COPY.

Why COPY: one round trip and one parse for a whole batch instead of one per row (see
``perf/bench_store.py`` for the ratio against an INSERT per row).

Two kinds of rows, two paths:

- market data (quotes, trades, bars) is COPYed straight into its day's partition: it is
  append-only and a rare duplicate after a recorder restart harms nobody;
- trading records (orders, order events, fills, risk events) must be stored exactly once even
  though they may be delivered twice (a recorder restarted mid-batch re-reads it; the journal is
  replayed after an outage). Each table has a unique natural key — (run, client order id), (run,
  fill id), (run, client order id, digest of the exact frame) for events (migration 0004: the
  order id first, so new keys land beside the recent orders, not at random) — so a duplicate
  cannot be stored. The batch is COPYed straight in (inside a savepoint); only if a duplicate
  makes that fail is it COPYed into a temporary staging table and moved with
  ``INSERT ... ON CONFLICT DO NOTHING``.

Commits stay the caller's: trading records commit synchronously (the journal is truncated only
after), market data with ``synchronous_commit = off`` (``ops.store.sink``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import msgspec
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg.types.string import BytesBinaryDumper

from engine.messages import (
    AuditEvent,
    Bar,
    CancelOrder,
    MarkPrice,
    ModelRegistered,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    Quote,
    ReplaceOrder,
    RiskEvent,
    Trade,
)
from ops.store.account_rows import (
    ACCOUNT_COLS,
    ACCOUNT_TYPES,
    account_row,
    instrument_spec,
    is_account_event,
)
from ops.store.audit import audit_rows, model_row, write_rows
from ops.store.audit_chain import Head

DAY_NS = 86_400 * 1_000_000_000

ORDER_COLS = (
    "run_id",
    "client_order_id",
    "strategy_id",
    "instrument_id",
    "side",
    "order_type",
    "tif",
    "px",
    "qty",
    "stop_px",
    "flags",
    "expire_ns",
    "ts_origin",
    "ts_approved",
    "algo",  # migration 0003: an algo parent's algorithm and parameters
    "algo_params",
)
EVENT_COLS = (
    "run_id",
    "event_hash",
    "kind",
    "client_order_id",
    "instrument_id",
    "reason",
    "ts_event",
    "msg",
)
FILL_COLS = (
    "run_id",
    "fill_id",
    "client_order_id",
    "venue_order_id",
    "instrument_id",
    "side",
    "px",
    "qty",
    "cum_qty",
    "leaves_qty",
    "fee",
    "liquidity",
    "ts_origin",
    "ts_event",
    "ts_recv",
)
RISK_COLS = (
    "run_id",
    "event_hash",
    "kind",
    "instrument_id",
    "client_order_id",
    "reason",
    "value",
    "limit_value",
    "ts",
    "state",
)
QUOTE_COLS = (
    "run_id",
    "instrument_id",
    "bid_px",
    "bid_qty",
    "ask_px",
    "ask_qty",
    "ts_event",
    "ts_recv",
    "seq",
)
TRADE_COLS = ("run_id", "instrument_id", "px", "qty", "side", "ts_event", "ts_recv", "trade_id")
MARK_COLS = (  # migration 0011: a perpetual's venue mark (MarkPrice)
    "run_id",
    "instrument_id",
    "mark_px",
    "index_px",
    "funding_rate",
    "next_funding_ns",
    "ts_event",
    "ts_recv",
)
BAR_COLS = (
    "run_id",
    "instrument_id",
    "start_ns",
    "end_ns",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trades",
)

#: PostgreSQL types of those columns, in order: batches are COPYed in binary (no text
#: formatting and parsing of every number); they must match the tables exactly
_I8, _I4, _I2, _F8, _T, _B = "int8", "int4", "int2", "float8", "text", "bytea"
TYPES: dict[str, tuple[str, ...]] = {
    "orders": (_I8, _I8, _I4, _I4, _I2, _I2, _I2, _I8, _I8, _I8, _I4, _I8, _I8, _I8, _I2, "jsonb"),
    "order_events": (_I8, _B, _T, _I8, _I4, _T, _I8, _B),
    "fills": (_I8, _I8, _I8, _I8, _I4, _I2, _I8, _I8, _I8, _I8, _F8, _I2, _I8, _I8, _I8),
    "risk_events": (_I8, _B, _I2, _I4, _I8, _T, _F8, _F8, _I8, _I2),
    "quotes": (_I8, _I4, _I8, _I8, _I8, _I8, _I8, _I8, _I8),
    "trades": (_I8, _I4, _I8, _I8, _I2, _I8, _I8, _I8),
    "bars": (_I8, _I4, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8),
    "marks": (_I8, _I4, _I8, _I8, _F8, _I8, _I8, _I8),
    "account_events": ACCOUNT_TYPES,  # migration 0010 (ops/store/account_rows.py)
}

#: narrow integer columns: binary COPY would silently wrap a value out of their range, so rows
#: with one are refused (counted) before the COPY — never stored wrong
_RANGE = {_I4: (-(2**31), 2**31 - 1), _I2: (-(2**15), 2**15 - 1)}
_NARROW = {
    t: [(i, *_RANGE[ty]) for i, ty in enumerate(tys) if ty in _RANGE] for t, tys in TYPES.items()
}


def in_range(table: str, data: list[tuple]) -> list[tuple]:
    """The rows of ``data`` whose narrow integer columns hold their values.

    Almost every batch is entirely in range: each narrow column's minimum and maximum are found
    at C speed (``map``/``itemgetter``, no Python code per row) and the batch is returned as it
    is; only a batch holding a bad value is filtered row by row.
    """
    checks = _NARROW[table]
    if not data:
        return data
    for i, lo, hi in checks:
        col = list(map(itemgetter(i), data))
        if min(col) < lo or max(col) > hi:
            return [r for r in data if all(lo <= r[i] <= hi for i, lo, hi in checks)]
    return data


#: staging table -> (target table, columns, conflict key)
_STAGED = {
    "orders": (ORDER_COLS, "(run_id, client_order_id)"),
    "order_events": (EVENT_COLS, "(run_id, client_order_id, event_hash)"),  # migration 0004
    "fills": (FILL_COLS, "(run_id, fill_id)"),
    "risk_events": (RISK_COLS, "(run_id, event_hash)"),
    "account_events": (ACCOUNT_COLS, "(run_id, event_hash)"),
}
_EVENT_TYPES = (
    OrderAccepted,
    OrderRejected,
    OrderPartiallyFilled,
    OrderCanceled,
    OrderExpired,
    OrderReplaced,
    OrderCancelRejected,
    OrderReplaceRejected,
    CancelOrder,
    ReplaceOrder,
)

_encode = msgspec.msgpack.Encoder().encode


def _json_text(obj: Any) -> str:
    """JSON for jsonb columns: msgspec writes a NaN or an infinity as null, where the standard
    library would write a token PostgreSQL refuses (failing the whole batch)."""
    return msgspec.json.encode(obj).decode()


def digest(frame: bytes) -> bytes:
    """The idempotency key of an event: 16 bytes of BLAKE2b over its exact MessagePack frame."""
    return hashlib.blake2b(frame, digest_size=16).digest()


class Rows:
    """A batch split into per-table row lists (plain tuples, COPY-ready)."""

    __slots__ = (
        "quotes",
        "trades",
        "bars",
        "marks",
        "orders",
        "order_events",
        "fills",
        "risk_events",
        "account_events",
        "audit",
        "models",
        "ignored",
    )

    def __init__(self) -> None:
        self.quotes: list[tuple] = []
        self.trades: list[tuple] = []
        self.bars: list[tuple] = []
        self.marks: list[tuple] = []  # a perpetual's venue mark (0011)
        self.orders: list[tuple] = []
        self.order_events: list[tuple] = []
        self.fills: list[tuple] = []
        self.risk_events: list[tuple] = []
        self.account_events: list[tuple] = []  # funding, financing, settlements, ... (0010)
        self.audit: list[tuple] = []  # audit_log rows (ops.store.audit)
        self.models: list[tuple] = []  # models rows
        self.ignored = 0

    def __len__(self) -> int:
        return (
            len(self.quotes)
            + len(self.trades)
            + len(self.bars)
            + len(self.marks)
            + len(self.orders)
            + len(self.order_events)
            + len(self.fills)
            + len(self.risk_events)
            + len(self.account_events)
            + len(self.audit)
            + len(self.models)
        )

    def add(self, run_id: int, msg: Any, frame: bytes | None = None) -> None:
        """Route one message to its table(s); anything the record does not keep is counted."""
        t = type(msg)
        if t is Quote:
            if msg.ts_event >= 0:
                self.quotes.append(
                    (
                        run_id,
                        msg.instrument_id,
                        msg.bid_px,
                        msg.bid_qty,
                        msg.ask_px,
                        msg.ask_qty,
                        msg.ts_event,
                        msg.ts_recv,
                        msg.seq,
                    )
                )
                return
        elif t is Trade:
            if msg.ts_event >= 0:
                self.trades.append(
                    (
                        run_id,
                        msg.instrument_id,
                        msg.px,
                        msg.qty,
                        msg.side,
                        msg.ts_event,
                        msg.ts_recv,
                        msg.trade_id,
                    )
                )
                return
        elif t is Bar:
            if msg.start_ns >= 0:
                self.bars.append(
                    (
                        run_id,
                        msg.instrument_id,
                        msg.start_ns,
                        msg.end_ns,
                        msg.open,
                        msg.high,
                        msg.low,
                        msg.close,
                        msg.volume,
                        msg.trades,
                    )
                )
                return
        elif t is MarkPrice:
            if msg.ts_event >= 0:
                self.marks.append(
                    (
                        run_id,
                        msg.instrument_id,
                        msg.mark_px,
                        msg.index_px,
                        float(msg.funding_rate),
                        msg.next_funding_ns,
                        msg.ts_event,
                        msg.ts_recv,
                    )
                )
                return
        elif self._add_record(run_id, t, msg, frame):
            return
        self.ignored += 1

    def _add_record(self, run_id: int, t: type, msg: Any, frame: bytes | None) -> bool:
        """A trading record (order, execution event, risk event, audit / model record) to its
        table(s); False when ``msg`` is none of these. Market data stays inline in ``add``: a
        call per quote would show in perf/bench_store."""
        if t is NewOrder:
            self.orders.append(
                (
                    run_id,
                    msg.client_order_id,
                    msg.strategy_id,
                    msg.instrument_id,
                    msg.side,
                    msg.order_type,
                    msg.tif,
                    msg.px,
                    msg.qty,
                    msg.stop_px,
                    msg.flags,
                    msg.expire_ns,
                    msg.ts_origin,
                    msg.ts_approved,
                    msg.algo,
                    Jsonb(msg.algo_params, dumps=_json_text),
                )
            )
            return True
        elif isinstance(msg, _EVENT_TYPES):
            self._add_event(run_id, t, msg, frame)
            return True
        elif t is RiskEvent:
            frame = frame if frame is not None else _encode(msg)
            self.risk_events.append(
                (
                    run_id,
                    digest(frame),
                    msg.kind,
                    msg.instrument_id,
                    msg.client_order_id,
                    msg.reason,
                    float(msg.value),
                    float(msg.limit),
                    msg.ts,
                    msg.state,
                )
            )
            return True
        elif is_account_event(msg):
            self.account_events.append(account_row(run_id, msg, frame))
            return True
        elif t is AuditEvent or t is ModelRegistered:
            self.audit += audit_rows(run_id, msg, frame)
            if t is ModelRegistered:
                self.models.append(model_row(msg))
            return True
        return False

    def _add_event(self, run_id: int, t: type, msg: Any, frame: bytes | None) -> None:
        """An execution event (idempotent by its frame's digest); a fill also to ``fills``."""
        frame = frame if frame is not None else _encode(msg)
        reason = getattr(msg, "reason", "")
        if t is OrderCancelRejected or t is OrderReplaceRejected:
            reason = msg.text  # the column is text: "not_open: order is no longer open"
        self.order_events.append(
            (
                run_id,
                digest(frame),
                t.__name__,
                msg.client_order_id,
                msg.instrument_id,
                reason,
                getattr(msg, "ts_event", 0) or getattr(msg, "ts_approved", 0),
                frame,
            )
        )
        if isinstance(msg, OrderPartiallyFilled):
            self.fills.append(
                (
                    run_id,
                    msg.fill_id,
                    msg.client_order_id,
                    msg.venue_order_id,
                    msg.instrument_id,
                    msg.side,
                    msg.fill_px,
                    msg.fill_qty,
                    msg.cum_qty,
                    msg.leaves_qty,
                    float(msg.fee),
                    msg.liquidity,
                    msg.ts_origin,
                    msg.ts_event,
                    msg.ts_recv,
                )
            )


def _copy(
    cur: Any,
    table: str,
    cols: Sequence[str],
    rows: Iterable[tuple],
    types: Sequence[str] | None = None,
) -> None:
    fmt = " (FORMAT BINARY)" if types else ""
    if types and _B in types:
        # by type name, psycopg picks the dumper registered last for bytea: the DB-API
        # ``Binary`` wrapper's, in Python (about 0.4 µs a value: most of an order_events row's
        # formatting). Our values are plain bytes: its compiled bytes dumper writes the same
        # bytes. Registered on this cursor only.
        cur.adapters.register_dumper(bytes, BytesBinaryDumper)
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN{fmt}") as cp:
        if types:
            cp.set_types(list(types))
        write = cp.write_row
        for r in rows:
            write(r)


class Writer:
    """Writes ``Rows`` batches; knows which day partitions exist. Audit rows go into the hash
    chain of ``engine_id`` (``ops.store.audit_chain``); ``head`` is that chain's head after the
    last ``write`` that appended to it (None otherwise): the caller anchors it once committed."""

    def __init__(self, engine_id: str = "") -> None:
        self._partitions: set[tuple[str, int]] = set()
        self.refused = 0  # rows with a value out of their column's range (never written)
        self.engine_id = engine_id
        self.head: Head | None = None
        #: the chain head this writer's last committed write left (the caller sets it): a
        #: database that no longer holds it was tampered with (``audit_chain.append``)
        self.committed: Head | None = None

    def _checked(self, table: str, data: list[tuple]) -> list[tuple]:
        good = in_range(table, data)
        self.refused += len(data) - len(good)
        return good

    def ensure_partitions(self, conn: Any, table: str, key_index: int, rows: list[tuple]) -> None:
        days = {r[key_index] // DAY_NS for r in rows}
        for day in days - {d for t, d in self._partitions if t == table}:
            lo, hi = day * DAY_NS, (day + 1) * DAY_NS
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
            )
            self._partitions.add((table, day))

    def write(self, conn: Any, rows: Rows) -> int:
        """Write one batch inside the caller's transaction; returns the rows handed to COPY."""
        n = 0
        self.head = None
        with conn.cursor() as cur:
            for table, cols, key in (
                ("quotes", QUOTE_COLS, 6),
                ("trades", TRADE_COLS, 5),
                ("bars", BAR_COLS, 2),
                ("marks", MARK_COLS, 6),
            ):
                data = self._checked(table, getattr(rows, table))
                if data:
                    self.ensure_partitions(conn, table, key, data)
                    _copy(cur, table, cols, data, TYPES[table])
                    n += len(data)
            for table, (cols, conflict) in _STAGED.items():
                data = self._checked(table, getattr(rows, table))
                if not data:
                    continue
                n += len(data)
                # fast path: straight in. Duplicates are rare (a recorder restart, a journal
                # replay); one makes the whole COPY fail, and only then is the batch staged
                try:
                    with conn.transaction():  # a savepoint
                        _copy(cur, table, cols, data, TYPES[table])
                    continue
                except UniqueViolation:
                    pass
                stage = f"_stage_{table}"
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                    f"SELECT {', '.join(cols)} FROM {table} WITH NO DATA"
                )
                _copy(cur, stage, cols, data, TYPES[table])
                cur.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {stage} "
                    f"ON CONFLICT {conflict} DO NOTHING"
                )
                cur.execute(f"TRUNCATE {stage}")
        if rows.audit or rows.models:  # a few per run: plain idempotent statements
            self.head = write_rows(
                conn, rows.audit, rows.models, self.engine_id, expect=self.committed
            )
            n += len(rows.audit) + len(rows.models)
        return n

    # --- state that is not a ring message -------------------------------------------------------
    @staticmethod
    def write_positions(conn: Any, run_id: int, rows: Sequence[tuple]) -> None:
        """Upsert the latest positions and append them to the P&L history.

        ``rows``: (instrument_id, position, avg_px, mark_px, realized, unrealized, fees).
        """
        if not rows:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO positions (run_id, instrument_id, position, avg_px, mark_px, realized, unrealized, fees)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, instrument_id) DO UPDATE SET"
                " position = EXCLUDED.position, avg_px = EXCLUDED.avg_px, mark_px = EXCLUDED.mark_px,"
                " realized = EXCLUDED.realized, unrealized = EXCLUDED.unrealized, fees = EXCLUDED.fees,"
                " updated_at = now()",
                [(run_id, *r) for r in rows],
            )
            _copy(
                cur,
                "pnl_snapshots",
                (
                    "run_id",
                    "instrument_id",
                    "position",
                    "mark_px",
                    "realized",
                    "unrealized",
                    "fees",
                ),
                [(run_id, r[0], r[1], r[3], r[4], r[5], r[6]) for r in rows],
            )

    @staticmethod
    def write_run(conn: Any, run_id: int, engine_id: str, config_path: str) -> None:
        conn.execute(
            "INSERT INTO runs (run_id, engine_id, config_path) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (run_id, engine_id, config_path),
        )

    @staticmethod
    def write_instruments(conn: Any, instruments: Iterable[Any]) -> None:
        """Upsert each instrument: its plain columns, its kind and its kind's keys (``spec``)."""
        for i in instruments:
            conn.execute(
                "INSERT INTO instruments (instrument_id, symbol, venue, asset_class, sector, tick_size, lot_size,"
                " currency, kind, spec) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (instrument_id) DO UPDATE SET"
                " symbol = EXCLUDED.symbol, venue = EXCLUDED.venue, asset_class = EXCLUDED.asset_class,"
                " sector = EXCLUDED.sector, tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size,"
                " currency = EXCLUDED.currency, kind = EXCLUDED.kind, spec = EXCLUDED.spec,"
                " updated_at = now()",
                (
                    i.instrument_id,
                    i.symbol,
                    i.venue,
                    i.asset_class,
                    i.sector,
                    i.tick_size,
                    i.lot_size,
                    i.currency,
                    getattr(i, "kind", "spot"),
                    Jsonb(instrument_spec(i), dumps=_json_text),
                ),
            )

    @staticmethod
    def write_reconciliation(conn: Any, run_id: int, process: str, events: Sequence[Any]) -> None:
        """``events``: engine.messages.ReconciliationEvent structs."""
        if not events:
            return
        with conn.cursor() as cur:
            _copy(
                cur,
                "reconciliation_events",
                (
                    "run_id",
                    "process",
                    "kind",
                    "client_order_id",
                    "instrument_id",
                    "stored",
                    "venue",
                    "action",
                    "ts",
                ),
                [
                    (
                        run_id,
                        process,
                        e.kind,
                        e.client_order_id,
                        e.instrument_id,
                        e.stored,
                        e.venue,
                        e.action,
                        e.ts,
                    )
                    for e in events
                ],
            )
