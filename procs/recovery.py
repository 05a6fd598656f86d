"""Process-side recovery at start: exec rebuilds its state from the record and reconciles it
with the venue before it reports READY.

The sequence for exec:

1. wait (beating) until the recorder has read everything already published on the ``orders``
   and ``events`` rings: then all of it is in the journal or the database;
2. take the orders still waiting for exec in its input ring (re-delivered after the crash);
3. load this run's orders and events (journal, then PostgreSQL) and let
   ``engine.reconcile.reconcile`` rebuild the order table and compare it with the venue;
4. file the reconciliation events, hand back the events to publish, the rebuilt table, and
   the waiting orders minus those the venue already had (never placed twice).

Risk takes its positions from exec's positions table at start (``procs/risk.py``), which exec
rebuilt here first; it does not replay fills into positions (that would count them twice). Its
open orders come back from the record (``recover_risk``, steps 1 and 3 above on risk's rings) so
the kill switch and the breakers can cancel them (``engine.risk.RiskGate.restore``). With
storage off there is no record: ``recover_risk`` returns None and the restarted risk asks exec
instead (``procs.risk.AskExec``, ``RiskGate.restore_open``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from engine.algos import rebuild_parents
from engine.messages import NewOrder, OrderPartiallyFilled
from engine.reconcile import Reconciliation, reconcile
from procs.algo_log import algo_log_path
from procs.algo_log import load as load_algo_log
from procs.storage import open_recovery_source, run_id, wait_recorder_caught_up

log = logging.getLogger("gekko.recovery")


@dataclass
class ExecRecovery:
    result: Reconciliation | None = None
    backlog: list[Any] = field(default_factory=list)  # orders to process before the ring's next
    stored_fills: list[Any] = field(default_factory=list)  # for the portfolio
    #: algo parents to rebuild (``engine.algos.AlgoRecovery``; ``ExecEngine.restore_algos``)
    algo: Any = None


def recover_exec(w: Any, cfg: Any, venue: Any, orders: Any, events_ring: Any) -> ExecRecovery:
    """Steps 1-4 above. With no store (storage off) only the waiting orders are taken."""
    out = ExecRecovery()
    source = open_recovery_source(cfg)
    if source is None or not run_id() or w.incarnation == 0:
        return out  # a first start of a run: the run's record and venue session are empty
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
    # algo parents: from exec's write-ahead algo log, the record and the venue; their ids are
    # kept out of plain-order reconciliation, which would adopt or close their children
    starts, kids = load_algo_log(algo_log_path(cfg, run_id()))
    algo = rebuild_parents(starts, kids, state.events, venue, now)
    res = reconcile(
        state.orders, state.events, venue, now, pending_new=pending, algo_ids=algo.order_ids
    )
    out.result = res
    out.algo = algo
    out.stored_fills = [f for f in res.fills if f not in res.publish] + [
        e
        for e in state.events
        if isinstance(e, OrderPartiallyFilled) and e.client_order_id in algo.order_ids
    ]
    if res.duplicates:
        out.backlog = [
            o
            for o in out.backlog
            if not (isinstance(o, NewOrder) and o.client_order_id in res.duplicates)
        ]
    source.record_reconciliation(run_id(), "exec", res.events + algo.events)
    if starts:
        log.warning(
            "recovery: %d algo parents logged, %d rebuilt (%d child events upstream missed)",
            len(starts),
            len(algo.parents),
            len(algo.replay),
        )
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


@dataclass
class RiskRecovery:
    orders: list[Any] = field(default_factory=list)  # every NewOrder of this run
    events: list[Any] = field(default_factory=list)  # execution events and requests, in order


def recover_risk(w: Any, cfg: Any, orders_out: Any, events_in: Any) -> RiskRecovery | None:
    """A restarted risk process's view of this run's orders: wait (beating) until the recorder
    has read what risk published on ``orders`` and exec on ``events``, then load the record
    (journal, then PostgreSQL). None when there is nothing to load: storage off, or the run's
    first risk start."""
    source = open_recovery_source(cfg)
    if source is None or not run_id() or w.incarnation == 0:
        return None
    t0 = time.monotonic()
    try:
        if not wait_recorder_caught_up(
            [orders_out.ring, events_in.ring], cfg.storage.postgres.recovery_timeout_s, w.beat
        ):
            log.error(
                "recovery (risk): the recorder did not catch up in time: open orders from what "
                "is recorded"
            )
        state = source.load(run_id())
    finally:
        source.close()
    log.warning(
        "recovery (risk): %d orders, %d events (%d from the journal) in %.2fs",
        len(state.orders),
        len(state.events),
        state.from_journal,
        time.monotonic() - t0,
    )
    return RiskRecovery(list(state.orders), list(state.events))
