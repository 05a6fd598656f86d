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
    ModelRegistered,
    Quote,
    RiskEvent,
    Trade,
)
from procs.loop import Input, Loop, Timer
from procs.runtime import POSITION_DTYPE, STATE_READY, Worker, topology
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
    w.consume("control")
    # infer's model registrations (gating: none is skipped) when the engine runs infer
    has_forecasts = any(
        s.name == "forecasts" and any(r == "recorder" for r, _ in s.consumers)
        for s in topology(cfg)
    )
    watched = dict(gating)
    if has_forecasts:
        watched["forecasts"] = w.consume("forecasts")
    positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    rec = _Recorder(w, cfg, store, md, positions)
    inputs = [Input("forecasts", on_batch=rec.on_audit_batch, batch=1024)] if has_forecasts else []
    inputs.append(Input("md", on_batch=rec.on_md, batch=4096, counter="md_in"))
    for name in GATING_RINGS:
        handler = rec.on_risk if name == "risk" else rec.on_trading
        inputs.append(Input(name, on_batch=handler, batch=1024))
    loop = Loop(
        w,
        inputs,
        [Timer(0, rec.end_of_pass)],
        idle_s=min(pg.flush_interval_s, cfg.supervisor.heartbeat_interval_s),
        on_other=rec.on_audit,  # the supervisor's audit records on control
        drained=lambda: _drained(watched),
        on_stop=rec.stop,
    )
    w.beat(STATE_READY)
    log.info("recorder ready (%s, wait=%s)", w.pinning, w.wait.kind)
    return loop.run(on_exit=store.close)


class _Recorder:
    """The recorder's handlers: each pass's trading records are journaled together at its end
    (``end_of_pass``, before the next poll hands the rings our cursor), then written in batches."""

    def __init__(
        self, w: Worker, cfg: Any, store: RecordStore, md: Any, positions: SeqlockTable
    ) -> None:
        self.w = w
        self.cfg = cfg
        self.pg = cfg.storage.postgres
        self.store = store
        self.md = md
        self.positions = positions
        self.enc = msgspec.msgpack.Encoder()
        m = self.m = w.metrics
        self.c_missed, self.c_in = m.counter_index("md_missed"), m.counter_index("records_in")
        self.c_rows, self.c_jr = m.counter_index("rows_written"), m.counter_index("journaled")
        self.c_err, self.c_rep = m.counter_index("db_errors"), m.counter_index("replayed")
        self.c_ign = m.counter_index("ignored")
        self.h_flush, self.h_lag = m.hist("flush_ns"), m.hist("md_lag_ns")
        self.fresh: list[tuple[Any, bytes]] = []  # this pass's records, not yet journaled
        self.pending: list[tuple[Any, bytes]] = []  # journaled, not yet in the database
        self.md_buf: list[Any] = []
        self.first_at = 0.0
        self.retry = _Retry()
        # a journal left by the previous incarnation is replayed before anything new
        self.backlog = any(True for _ in store.journal_frames())
        if self.backlog:
            log.warning(
                "recorder: a journal with unwritten records was found: it will be replayed first"
            )
        self.last_snap = time.monotonic()
        self.last_missed = md.missed

    # --- the inputs ----------------------------------------------------------------------------
    def on_audit(self, msg: Any) -> None:
        if isinstance(msg, AUDIT_TYPES):
            self.fresh.append((msg, self.enc.encode(msg)))

    def on_audit_batch(self, msgs: list[Any]) -> None:
        for f in msgs:
            self.on_audit(f)  # forecasts themselves are not recorded

    def on_md(self, msgs: list[Any]) -> None:
        now_ns = time.monotonic_ns()
        self.md_buf.extend(msgs)
        h_lag = self.h_lag
        for msg in msgs:
            t = type(msg)
            if (t is Quote or t is Trade) and msg.ts_recv:
                h_lag.record(now_ns - msg.ts_recv)

    def on_trading(self, msgs: list[Any]) -> None:
        enc = self.enc
        self.fresh.extend((msg, enc.encode(msg)) for msg in msgs)

    def on_risk(self, msgs: list[Any]) -> None:
        for msg in msgs:
            if type(msg) is not RiskEvent:
                self.m.inc_i(self.c_ign)  # replies to the strategy: the RiskEvent is the record
                continue
            self.fresh.append((msg, self.enc.encode(msg)))

    # --- every pass: journal, write when due, snapshot -----------------------------------------
    def end_of_pass(self, now_ns: int) -> bool:
        m, md, pg, fresh = self.m, self.md, self.pg, self.fresh
        if md.missed != self.last_missed:
            m.inc_i(self.c_missed, md.missed - self.last_missed)
            self.last_missed = md.missed
        if fresh:
            # durable before we poll on (which hands the rings our cursor)
            self.store.journal_append([f for _, f in fresh])
            m.inc_i(self.c_jr, len(fresh))
            m.inc_i(self.c_in, len(fresh))
            self.pending.extend(fresh)
        now = time.monotonic()
        if (self.pending or self.md_buf) and not self.first_at:
            self.first_at = now
        due = self.first_at and (
            now - self.first_at >= pg.flush_interval_s
            or len(self.pending) + len(self.md_buf) >= pg.batch_rows
        )
        if (due or self.backlog) and now >= self.retry.next_at:
            self.flush(now)
        elif self.backlog and self.md_buf and now < self.retry.next_at:
            m.inc("md_dropped", len(self.md_buf))
            self.md_buf = []  # the database is down: market data is not journaled (counted)
        snap_due = pg.snapshot_interval_s and now - self.last_snap >= pg.snapshot_interval_s
        if snap_due and not self.backlog:
            self.last_snap = now
            _snapshot(self.store, self.positions, len(self.cfg.instruments))
        self.store.tick(now)  # the audit chain's anchor, when due
        self.w.processed += len(fresh)
        self.fresh = []
        return bool(fresh)

    def flush(self, now: float) -> None:
        """Replay the journal (after an outage) or write what is pending, then the market data;
        on failure everything stays journaled and the next try backs off."""
        m, store = self.m, self.store
        t0 = time.monotonic_ns()
        try:
            if self.backlog:
                n = store_replay(store)
                m.inc_i(self.c_rep, n)
                self.backlog = False
                log.warning("recorder: database reachable again: %d journaled records replayed", n)
            elif self.pending:
                m.inc_i(self.c_rows, store.write_gating(self.pending))
            store.journal_truncate()
            self.pending = []
            m.set("journal_backlog", 0)
            if self.md_buf:
                m.inc_i(self.c_rows, store.write_md(self.md_buf))
            self.retry.ok()
            m.set("db_rejected", int(getattr(store, "rejected", 0)))
        except Exception as exc:  # the database is down or refused: journal, retry later
            m.inc_i(self.c_err)
            self.backlog = True
            delay = self.retry.failed(now)
            if self.retry.attempts == 1 or self.retry.attempts % 20 == 0:
                log.error(
                    "recorder: database write failed (%s); journaling, retry in %.2fs",
                    _short(exc),
                    delay,
                )
            m.set("journal_backlog", len(self.pending))
            if self.md_buf:
                m.inc("md_dropped", len(self.md_buf))
        finally:
            self.md_buf = []
            self.first_at = 0.0
            self.h_flush.record(time.monotonic_ns() - t0)

    # --- STOP, once every trading producer is done ---------------------------------------------
    def stop(self) -> None:
        """The last write (a few more tries if the database is down), the last snapshot, and
        one line saying what the process did."""
        self.flush(time.monotonic())
        give_up = time.monotonic() + min(5.0, self.cfg.supervisor.shutdown_timeout_s / 2)
        while self.backlog and time.monotonic() < give_up:  # a few more tries, backing off
            time.sleep(max(0.0, self.retry.next_at - time.monotonic()))
            self.w.beat()
            self.flush(time.monotonic())
        if self.backlog:  # nothing is lost: the next start replays the journal
            log.error(
                "recorder: stopping with the database unreachable: records stay in the journal"
            )
        _snapshot(self.store, self.positions, len(self.cfg.instruments))
        c = self.m.counters()
        lag = self.h_lag.snapshot()
        log.info(
            "recorder: %d trading records, %d rows written, %d market-data messages read, %d missed "
            "(lag p50 %.1fms p99 %.1fms), %d database errors, %d replayed, %d refused",
            c["records_in"],
            c["rows_written"],
            c["md_in"],
            c["md_missed"],
            lag.percentile(50) / 1e6 if lag.count else 0.0,
            lag.percentile(99) / 1e6 if lag.count else 0.0,
            c["db_errors"],
            c["replayed"],
            c["db_rejected"],
        )


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
