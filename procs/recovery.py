"""Process-side recovery at start: exec and risk rebuild their state from the record, exec
reconciles it with the venue, before either reports READY.

The sequence for exec:

1. wait (beating) until the recorder has read everything already published on the ``orders``
   and ``events`` rings: then all of it is in the journal or the database;
2. take the orders still waiting for exec in its input ring (re-delivered after the crash);
3. load this run's orders and events (journal, then PostgreSQL) and let
   ``engine.reconcile.reconcile`` rebuild the order table and compare it with the venue;
4. file the reconciliation events, hand back the events to publish, the rebuilt table, and
   the waiting orders minus those the venue already had (never placed twice).

Risk rebuilds positions and open orders by replaying the recorded events through its gate, then
skips, on its own ring, the events it has just replayed (it resumes from an older cursor).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.messages import NewOrder
from engine.reconcile import Reconciliation, reconcile
from procs.storage import open_recovery_source, run_id, wait_recorder_caught_up

log = logging.getLogger("gekko.recovery")


@dataclass
class ExecRecovery:
    result: Reconciliation | None = None
    backlog: list[Any] = field(default_factory=list)  # orders to process before the ring's next
    stored_fills: list[Any] = field(default_factory=list)  # for the portfolio


def recover_exec(w: Any, cfg: Any, venue: Any, orders: Any, events_ring: Any) -> ExecRecovery:
    """Steps 1-4 above. With no store (storage off) only the waiting orders are taken."""
    out = ExecRecovery()
    source = open_recovery_source(cfg)
    if source is None or not run_id():
        return out
    t0 = time.monotonic()
    caught_up = wait_recorder_caught_up(
        [orders.ring, events_ring.ring if hasattr(events_ring, "ring") else events_ring],
        cfg.storage.postgres.recovery_timeout_s,
        w.beat,
    )
    if not caught_up:
        log.error(
            "recovery: the recorder did not catch up in time: recovering from what is recorded"
        )
    out.backlog = orders.poll_batch(1 << 16)
    pending = {o.client_order_id for o in out.backlog if isinstance(o, NewOrder)}
    state = source.load(run_id())
    now = time.monotonic_ns()
    res = reconcile(state.orders, state.events, venue, now, pending_new=pending)
    out.result = res
    out.stored_fills = [f for f in res.fills if f not in res.publish]
    if res.duplicates:
        out.backlog = [
            o
            for o in out.backlog
            if not (isinstance(o, NewOrder) and o.client_order_id in res.duplicates)
        ]
    source.record_reconciliation(run_id(), "exec", res.events)
    source.close()
    log.warning(
        "recovery: %d orders (%d open), %d events, %d from the journal; venue: %d differences resolved, "
        "%d events published, %d re-delivered orders suppressed, %d cancels sent (%.2fs)",
        len(res.table.orders),
        len(res.table.open_orders()),
        len(state.events),
        state.from_journal,
        len(res.events),
        len(res.publish),
        len(res.duplicates),
        len(res.to_cancel),
        time.monotonic() - t0,
    )
    return out


_ENC = msgspec.msgpack.Encoder()


class RiskRecovery:
    """Risk's state from the record, and the filter that skips events it replayed already."""

    def __init__(self) -> None:
        self.replayed: dict[bytes, int] = {}
        self.skipped = 0
        self._until = 0.0

    def seen(self, ev: Any) -> bool:
        """True (skip it) for a ring event already applied from the record (first copy only)."""
        if not self.replayed:
            return False
        if time.monotonic() > self._until:
            self.replayed.clear()
            return False
        key = _ENC.encode(ev)
        n = self.replayed.get(key)
        if not n:
            return False
        if n == 1:
            del self.replayed[key]
        else:
            self.replayed[key] = n - 1
        self.skipped += 1
        return True


def recover_risk(w: Any, cfg: Any, gate: Any, events: Any) -> RiskRecovery:
    """Replay this run's recorded execution events (and order approvals) through ``gate``.

    Events on risk's own ring that it had not read before it died are in the record too; those
    it replayed are skipped once when read from the ring (``RiskRecovery.seen``).
    """
    rec = RiskRecovery()
    source = open_recovery_source(cfg)
    if source is None or not run_id() or w.incarnation == 0:
        return rec  # a first start has nothing to recover
    wait_recorder_caught_up([events.ring], cfg.storage.postgres.recovery_timeout_s, w.beat)
    state = source.load(run_id())
    source.close()
    restore = getattr(gate, "restore_orders", None)
    if callable(restore):
        restore(state.orders)
    pos = events.pos if hasattr(events, "pos") else 0
    for ev in state.events:
        if hasattr(ev, "ts_event"):  # execution events (not the cancel/replace requests)
            gate.on_exec_event(ev)
            key = _ENC.encode(ev)
            rec.replayed[key] = rec.replayed.get(key, 0) + 1
    rec._until = time.monotonic() + 30.0
    log.warning(
        "recovery: risk replayed %d recorded events (ring cursor %d)", len(state.events), pos
    )
    return rec
