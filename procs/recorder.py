"""The recorder process: every ring into PostgreSQL, off the hot path.

- Market data (``md``) is read NON-gating: a slow or absent database never holds the feed
  back. What it misses (lapped) is counted (``md_missed``) and its lag is recorded
  (``md_lag_ns``: receive time to the moment we read it).
- Orders, execution events and risk events are read GATING and must all arrive. Each batch is
  appended to the on-disk journal (fsync'd) before the recorder reads on — a gating reader's
  cursor only moves when it polls again, so a record is always in the ring, the journal or the
  database — and then written with COPY. After a successful write the journal is truncated.
- When the database is down, records keep going to the journal; writes are retried with
  exponential backoff and jitter, and the whole journal is replayed (idempotently) when the
  database answers again. Market data read during an outage is dropped and counted.
- Positions and P&L are snapshotted from exec's positions table every ``snapshot_interval_s``.

The database itself is behind ``procs.storage.RecordStore`` (``ops.store.sink`` implements it).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import msgspec

from engine.messages import (
    AuditEvent,
    Control,
    ControlCommand,
    ModelRegistered,
    Quote,
    RiskEvent,
    Trade,
)
from procs.runtime import POSITION_DTYPE, STATE_READY, STATE_STOPPING, Worker, topology
from procs.storage import RecordStore, open_record_store
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.recorder")

GATING_RINGS = ("orders", "events", "risk")
#: records that are not trading messages, taken off ``control`` (the supervisor's audit trail)
#: and ``forecasts`` (infer's model registrations); everything else on those rings is not ours
AUDIT_TYPES = (AuditEvent, ModelRegistered)


class _Retry:
    """Exponential backoff with full jitter for the database writes."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 2.0) -> None:
        self.base_s, self.cap_s, self.attempts, self.next_at = base_s, cap_s, 0, 0.0

    def failed(self, now: float) -> float:
        delay = random.uniform(0.0, min(self.cap_s, self.base_s * (2**self.attempts)))
        self.attempts += 1
        self.next_at = now + delay
        return delay

    def ok(self) -> None:
        self.attempts, self.next_at = 0, 0.0


def run(cfg: Any, engine_id: str, incarnation: int = 0, store: RecordStore | None = None) -> int:
    w = Worker("recorder", cfg, engine_id, incarnation)
    pg = cfg.storage.postgres
    store = store or open_record_store(cfg)
    md = w.consume("md")
    gating = {name: w.consume(name) for name in GATING_RINGS}
    control = w.consume("control")
    # infer's model registrations (gating: none is skipped) when the engine runs infer
    has_forecasts = any(
        s.name == "forecasts" and any(r == "recorder" for r, _ in s.consumers)
        for s in topology(cfg)
    )
    forecasts = w.consume("forecasts") if has_forecasts else None
    extra = [forecasts] if forecasts is not None else []
    waiter = w.waiter(md, control, *gating.values(), *extra)
    watched = {**gating, **({"forecasts": forecasts} if forecasts is not None else {})}
    positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    enc = msgspec.msgpack.Encoder()
    m = w.metrics
    c_md, c_missed, c_in = (
        m.counter_index("md_in"),
        m.counter_index("md_missed"),
        m.counter_index("records_in"),
    )
    c_rows, c_jr, _ = (
        m.counter_index("rows_written"),
        m.counter_index("journaled"),
        m.counter_index("journal_backlog"),
    )
    c_err, c_rep, c_ign = (
        m.counter_index("db_errors"),
        m.counter_index("replayed"),
        m.counter_index("ignored"),
    )
    h_flush, h_lag = m.hist("flush_ns"), m.hist("md_lag_ns")

    pending: list[tuple[Any, bytes]] = []  # journaled, not yet in the database
    md_buf: list[Any] = []
    first_at = 0.0
    retry = _Retry()
    # a journal left by the previous incarnation is replayed before anything new
    backlog = any(True for _ in store.journal_frames())
    if backlog:
        log.warning(
            "recorder: a journal with unwritten records was found: it will be replayed first"
        )
    last_snap = time.monotonic()
    last_missed = md.missed

    def flush(now: float) -> None:
        nonlocal backlog, first_at, md_buf, pending
        t0 = time.monotonic_ns()
        try:
            if backlog:
                n = store_replay(store)
                m.inc_i(c_rep, n)
                backlog = False
                log.warning("recorder: database reachable again: %d journaled records replayed", n)
            elif pending:
                m.inc_i(c_rows, store.write_gating(pending))
            store.journal_truncate()
            pending = []
            m.set("journal_backlog", 0)
            if md_buf:
                m.inc_i(c_rows, store.write_md(md_buf))
            retry.ok()
            m.set("db_rejected", int(getattr(store, "rejected", 0)))
        except Exception as exc:  # the database is down or refused: journal, retry later
            m.inc_i(c_err)
            backlog = True
            delay = retry.failed(now)
            if retry.attempts == 1 or retry.attempts % 20 == 0:
                log.error(
                    "recorder: database write failed (%s); journaling, retry in %.2fs",
                    _short(exc),
                    delay,
                )
            m.set("journal_backlog", len(pending))
            if md_buf:
                m.inc("md_dropped", len(md_buf))
        finally:
            md_buf = []
            first_at = 0.0
            h_flush.record(time.monotonic_ns() - t0)

    w.beat(STATE_READY)
    log.info("recorder ready (%s, wait=%s)", w.pinning, w.wait.kind)
    stopping = False
    try:
        while True:
            fresh: list[tuple[Any, bytes]] = []
            for ctl in control.poll_batch(16):
                if isinstance(ctl, Control) and ctl.command == ControlCommand.STOP:
                    stopping = True
                elif isinstance(ctl, AUDIT_TYPES):
                    fresh.append((ctl, enc.encode(ctl)))
            if forecasts is not None:
                for f in forecasts.poll_batch(1024):
                    if isinstance(f, AUDIT_TYPES):  # forecasts themselves are not recorded
                        fresh.append((f, enc.encode(f)))
            busy = False
            now_ns = time.monotonic_ns()
            for msg in md.poll_batch(4096):
                busy = True
                m.inc_i(c_md)
                md_buf.append(msg)
                t = type(msg)
                if (t is Quote or t is Trade) and msg.ts_recv:
                    h_lag.record(now_ns - msg.ts_recv)
            if md.missed != last_missed:
                m.inc_i(c_missed, md.missed - last_missed)
                last_missed = md.missed
            for name, c in gating.items():
                for msg in c.poll_batch(1024):
                    if name == "risk" and type(msg) is not RiskEvent:
                        m.inc_i(c_ign)  # replies to the strategy: the RiskEvent is the record
                        continue
                    fresh.append((msg, enc.encode(msg)))
            if fresh:
                busy = True
                # durable before we poll on (which hands the rings our cursor)
                store.journal_append([f for _, f in fresh])
                m.inc_i(c_jr, len(fresh))
                m.inc_i(c_in, len(fresh))
                pending.extend(fresh)
            now = time.monotonic()
            if (pending or md_buf) and not first_at:
                first_at = now
            due = first_at and (
                now - first_at >= pg.flush_interval_s or len(pending) + len(md_buf) >= pg.batch_rows
            )
            if (due or backlog) and now >= retry.next_at:
                flush(now)
            elif backlog and md_buf and now < retry.next_at:
                m.inc("md_dropped", len(md_buf))
                md_buf = []  # the database is down: market data is not journaled (counted)
            if pg.snapshot_interval_s and now - last_snap >= pg.snapshot_interval_s and not backlog:
                last_snap = now
                _snapshot(store, positions, len(cfg.instruments))
            w.processed += len(fresh)
            w.beat()
            if stopping and not busy and _drained(watched):
                flush(time.monotonic())
                give_up = time.monotonic() + min(5.0, cfg.supervisor.shutdown_timeout_s / 2)
                while backlog and time.monotonic() < give_up:  # a few more tries, backing off
                    time.sleep(max(0.0, retry.next_at - time.monotonic()))
                    w.beat()
                    flush(time.monotonic())
                if backlog:  # nothing is lost: the next start replays the journal
                    log.error(
                        "recorder: stopping with the database unreachable: records stay in the journal"
                    )
                break
            if not busy:
                waiter.wait_any(min(pg.flush_interval_s, cfg.supervisor.heartbeat_interval_s))
        _snapshot(store, positions, len(cfg.instruments))
        c = m.counters()
        lag = h_lag.snapshot()
        log.info(
            "recorder: %d trading records, %d rows written, %d market-data messages read, %d missed "
            "(lag p50 %.0fµs p99 %.0fµs), %d database errors, %d replayed, %d refused",
            c["records_in"],
            c["rows_written"],
            c["md_in"],
            c["md_missed"],
            lag.percentile(50) / 1e3 if lag.count else 0.0,
            lag.percentile(99) / 1e3 if lag.count else 0.0,
            c["db_errors"],
            c["replayed"],
            c["db_rejected"],
        )
    finally:
        w.beat(STATE_STOPPING)
        waiter.close()
        store.close()
        w.close()
    return 0


def store_replay(store: RecordStore) -> int:
    """Write every journaled record (idempotent: what is already stored is skipped)."""
    from engine.messages import Message

    dec = msgspec.msgpack.Decoder(Message)
    batch: list[tuple[Any, bytes]] = []
    n = 0
    for f in store.journal_frames():
        try:
            batch.append((dec.decode(f), f))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if len(batch) >= 5000:
            n += store.write_gating(batch)
            batch = []
    if batch:
        n += store.write_gating(batch)
    return n


def _snapshot(store: RecordStore, positions: SeqlockTable, n: int) -> None:
    try:
        rows = []
        for i in range(n):
            iid, pos, fills, mark, avg, realized, unrealized, fees = positions.read_tuple(i)
            if fills or pos:
                rows.append(
                    (
                        int(iid),
                        int(pos),
                        float(avg),
                        int(mark),
                        float(realized),
                        float(unrealized),
                        float(fees),
                    )
                )
        store.write_positions(rows)
    except Exception as exc:
        log.debug("recorder: positions snapshot skipped (%s)", _short(exc))


def _drained(gating: dict[str, Any]) -> bool:
    """Every trading producer has closed (or died) and we have read all it published."""
    from shm.region import pid_alive

    for c in gating.values():
        if c.has_data():
            return False
        r = c.ring
        if not r.closed and r.producer_pid and pid_alive(r.producer_pid):
            return False
    return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
