"""Process-side recovery at start: a restarted exec rebuilds its state from its own journal
and the venue, and proves its positions agree with the venue's before it reports READY.

The sequence for exec (``recover_exec``), never waiting for the database:

1. take the orders still waiting for exec in its input ring (re-delivered after the crash);
2. load exec's journal (``procs.exec_journal``: what this run's exec took and published, cut
   at what the ``events`` ring shows really went out) and the write-ahead algo log, and let
   ``engine.reconcile.reconcile`` rebuild the order table and compare it with the venue;
3. check the result: the journal must hold every event the ring shows published (no ``gap``)
   and the fills it knows plus those found at the venue must give the venue's positions. If
   either fails, exec's view of what upstream saw is in doubt: ``UnsafeToTrade`` — exec logs
   why and exits ``EXIT_STOP_RUN``, and the supervisor stops the engine (exit code 1, the
   reason as its stop reason) instead of restarting it (publishing or trading on a wrong view
   would corrupt positions upstream);
4. hand back the events to publish, the rebuilt table, and the waiting orders minus those the
   venue already had (never placed twice); file the reconciliation events in PostgreSQL in the
   background, when there is one (a database that is down costs a log line, never a wait).

Why not PostgreSQL: it may be down exactly when exec crashed. The recorder then holds only
what it journaled since the outage, and a rebuild from that half — after waiting
``recovery_timeout_s`` for the database — refused hundreds of events of orders it no longer
knew and took exec's positions from half the fills (issue 11). Exec's journal is complete
whatever the database does; when it is missing or has a hole, exec does not trade (step 3).

Risk takes its positions from exec's positions table at start (``procs/risk.py``), which exec
rebuilt here first; it does not replay fills into positions (that would count them twice). Its
open orders it asks exec for (``procs.risk.AskExec``, ``RiskGate.restore_open``): exec answers
only from its main loop, so after this reconciliation, with the orders really open at the venue
— no database involved either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.algos.recovery import rebuild_parents
from engine.emulation import emulated_under
from engine.exec_lists import held_by_exec
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    CancelOrder,
    NewOrder,
    OrderCanceled,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderReplaceRejected,
    OrderTriggered,
    ReconciliationKind,
    ReplaceOrder,
)
from engine.reconcile import Reconciliation, reconcile
from engine.venues.base import ExecutionClient
from procs.algo_log import algo_log_path
from procs.algo_log import load as load_algo_log
from procs.exec_journal import (  # noqa: F401  (re-exported: the journal's API lived here)
    ExecJournal,
    JournalEntry,
    JournalState,
    exec_journal_path,
    load_exec_journal,
    open_exec_journal,
)
from procs.exec_topups import exec_topups_path, load_topups
from procs.exec_trails import exec_trails_path, load_trails
from procs.storage import open_recovery_source, run_id

log = logging.getLogger("gekko.recovery")


class UnsafeToTrade(Exception):
    """Recovery cannot vouch for exec's view of what upstream saw; the message says why."""


@dataclass
class ExecRecovery:
    result: Reconciliation | None = None
    backlog: list[Any] = field(default_factory=list)  # orders to process before the ring's next
    #: the journal's fills and account events, in order, for exec's portfolio (a settlement
    #: after its fills leaves the position flat, as it did before the crash)
    stored_fills: list[Any] = field(default_factory=list)
    #: algo parents to rebuild (``engine.algos.AlgoRecovery``; ``ExecEngine.restore_algos``)
    algo: Any = None
    #: order-list legs that never reached the venue (``ExecEngine.restore_lists``)
    local: set[int] = field(default_factory=set)
    requests: list[Any] = field(default_factory=list)  # the journal's replace requests
    #: trailing orders' last journaled (mark, level) (``procs.exec_trails``)
    trails: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: list legs' second orders: id -> (leg, lots) (``procs.exec_topups``; ``restore_topups``)
    topups: dict[int, tuple[int, int]] = field(default_factory=dict)


def recover_exec(
    w: Any, cfg: Any, venue: ExecutionClient, orders: Any, events: Any
) -> ExecRecovery:
    """Steps 1-4 above. ``events`` is exec's producer on the ``events`` ring: its sequence
    number tells which journaled events really went out. Raises ``UnsafeToTrade``."""
    out = ExecRecovery()
    if not run_id() or w.incarnation == 0:
        return out  # a first start of a run: the run's journal and venue session are empty
    path = exec_journal_path(cfg, run_id())
    if path is None or not path.exists():
        raise UnsafeToTrade(
            f"no exec journal at {path} (it could not be written): which orders and fills "
            "upstream has seen is unknown"
        )
    out.topups = load_topups(exec_topups_path(cfg, run_id()))  # (reconcile folds them in)
    _recover_from_journal(cfg, path, venue, orders, events, out)
    out.trails = load_trails(exec_trails_path(cfg, run_id()))
    assert out.result is not None
    check_positions(out)
    file_reconciliation(cfg, out.result.events + out.algo.events)
    return out


def check_positions(out: ExecRecovery) -> None:
    """Step 3: the fills exec knows (journaled, found at the venue, algo children) must give the
    venue's positions; a difference means fills upstream saw are missing from what exec
    rebuilt (a partial record) and nothing exec could publish would make it right."""
    assert out.result is not None
    bad = [e for e in out.result.events if e.kind == ReconciliationKind.POSITION_MISMATCH]
    if bad:
        raise UnsafeToTrade(
            "positions rebuilt from the journal and the venue's fills differ from the venue's: "
            + ", ".join(f"instrument {e.instrument_id}: {e.stored} vs {e.venue}" for e in bad)
        )


def file_reconciliation(cfg: Any, events: list[Any]) -> None:
    """Store what reconciliation found in PostgreSQL, if the engine has one, in the background:
    the log already says it, and a database that is down must not hold exec back."""
    if not events:
        return

    def store() -> None:
        source = open_recovery_source(cfg)
        if source is None:
            return
        try:
            source.record_reconciliation(run_id(), "exec", events)
        finally:
            source.close()

    threading.Thread(target=store, name="file-reconciliation", daemon=True).start()


def _rebuild(
    cfg: Any,
    venue: ExecutionClient,
    orders: Iterable[NewOrder],
    events: list[Any],
    out: ExecRecovery,
) -> tuple[Reconciliation, Any, list[Any]]:
    """Steps 3-4 on ``orders`` / ``events`` (the record's or the journal's) and ``out.backlog``
    (the waiting orders): fills ``out``; returns (the reconciliation, the algo recovery, the
    logged parents)."""
    pending = {o.client_order_id for o in out.backlog if isinstance(o, NewOrder)}
    now = time.monotonic_ns()
    # algo parents: from exec's write-ahead algo log, the record and the venue; their ids are
    # kept out of plain-order reconciliation, which would adopt or close their children
    starts, kids = load_algo_log(algo_log_path(cfg, run_id()))
    algo = rebuild_parents(starts, kids, events, venue, now)
    # order-list legs, session orders and emulated orders not triggered exec held or armed
    # itself (never at the venue) stay open: exec holds or arms them again
    # (``ExecEngine.restore_lists``); an emulated order that triggered went to the venue
    orders = list(orders)
    out.local = exec_local(orders, events, venue, cfg.exec)
    res = reconcile(
        orders,
        events,
        venue,
        now,
        pending_new=pending,
        algo_ids=algo.order_ids,
        local_ids=out.local,
        topups={x: leg for x, (leg, _) in out.topups.items()},
    )
    out.result = res
    out.algo = algo
    stored = {id(f) for f in res.fills if f not in res.publish}
    out.stored_fills = [e for e in events if id(e) in stored or type(e) in ACCOUNT_EVENT_TYPES] + [
        e
        for e in events
        if isinstance(e, OrderPartiallyFilled) and e.client_order_id in algo.order_ids
    ]
    if res.duplicates:
        out.backlog = [
            o
            for o in out.backlog
            if not (isinstance(o, NewOrder) and o.client_order_id in res.duplicates)
        ]
    # an amend of an algo parent is in the algo log before it takes effect: done, even when
    # its OrderReplaced died with exec (``restore_algos`` publishes it then)
    amended = [(lp.order.client_order_id, a.origin) for lp in starts for a in lp.amends if a.origin]
    out.backlog, answered = drop_answered_requests(
        out.backlog, [*events, *res.publish], also=amended
    )
    if answered:
        log.warning(
            "recovery: %d re-delivered cancel/replace requests already answered before the "
            "crash: not sent again",
            answered,
        )
    if starts:
        log.warning(
            "recovery: %d algo parents logged, %d rebuilt (%d child events upstream missed)",
            len(starts),
            len(algo.parents),
            len(algo.replay),
        )
    return res, algo, starts


def exec_local(
    orders: Iterable[NewOrder], events: Iterable[Any], venue: Any, policy: Any
) -> set[int]:
    """The orders exec held or armed itself and never sent (the venue does not know them):
    order-list legs and session orders (``held_by_exec``), and emulated orders (by ``policy``,
    the ``[exec]`` section) that never triggered — one that triggered went to the venue.
    Reconciliation keeps them open; ``ExecEngine.restore_lists`` holds or arms them again."""
    fired = {e.client_order_id for e in events if isinstance(e, OrderTriggered)}
    return {
        o.client_order_id
        for o in orders
        if (held_by_exec(o) or (emulated_under(policy, o) and o.client_order_id not in fired))
        and not venue.knows_order(o.client_order_id)
    }


def drop_answered_requests(
    backlog: list[Any], events: Iterable[Any], also: Iterable[tuple[int, int]] = ()
) -> tuple[list[Any], int]:
    """The waiting orders without the cancel / replace requests that were answered before the
    crash, and how many were dropped.

    Why: exec's ``orders`` cursor moves on only when it asks for its next batch, so the batch it
    was working on when it died is delivered again. A ``NewOrder`` is kept out by reconciliation
    (the venue knows its id); a request has no id of its own, and doing it twice is not
    harmless — ``ReplaceOrder.new_qty`` is the new *open* quantity, so a replace applied again
    after a fill would re-open the filled lots. Every event a request causes carries its
    ``ts_origin`` (``engine.venues.sim``), so an ``OrderReplaced`` / ``OrderCanceled`` / request
    reject with the request's order id and ``ts_origin`` in what upstream saw (the record, the
    journal, or what reconciliation publishes now) means it was done. A request whose answer
    was lost with exec is still sent: the venue then refuses a second cancel, and reconciliation
    has already published the venue's state for a replace it applied. ``also``: more
    (order id, ts_origin) pairs known done (amends of algo parents, from the algo log)."""
    done: set[tuple[int, int]] = set(also)
    for e in events:
        if isinstance(
            e, OrderReplaced | OrderCanceled | OrderCancelRejected | OrderReplaceRejected
        ):
            done.add((e.client_order_id, e.ts_origin))
    kept = [
        o
        for o in backlog
        if not (
            isinstance(o, CancelOrder | ReplaceOrder) and (o.client_order_id, o.ts_origin) in done
        )
    ]
    return kept, len(backlog) - len(kept)


def _recover_from_journal(
    cfg: Any, path: Path, venue: ExecutionClient, orders: Any, events: Any, out: ExecRecovery
) -> None:
    """Steps 1-2 on exec's journal (module docstring), and its half of step 3: no gap."""
    t0 = time.monotonic()
    seq = int(getattr(events, "seq", 0))
    out.backlog = orders.poll_batch(1 << 16)
    st = load_exec_journal(path, seq)
    if st.gap:
        raise UnsafeToTrade(
            f"exec journal {path} lacks {st.gap} of the events the ring shows published "
            f"({st.entries} entries read, {st.skipped} unreadable; a failed write or a cut "
            "file): exec cannot tell which fills upstream saw"
        )
    # re-delivered orders the journal may lack (taken, crash before the entry was written)
    known = {o.client_order_id for o in st.orders}
    orders_all = st.orders + [
        o for o in out.backlog if isinstance(o, NewOrder) and o.client_order_id not in known
    ]
    res, algo, starts = _rebuild(cfg, venue, orders_all, st.events, out)
    out.requests = [e for e in st.events if isinstance(e, ReplaceOrder)]
    kinds = Counter(int(e.kind) for e in res.events + algo.events)
    log.warning(
        "recovery: rebuilt from exec's journal %s (%d entries, %d orders, %d events; %d "
        "journaled events never published, left out) and the venue (%d open orders, %d fills), "
        "%d algo parents from the algo log, without the database: %d orders (%d open), %d "
        "differences resolved %s, %d events published, %d re-delivered orders suppressed, %d "
        "cancels sent (%.2fs)",
        path,
        st.entries,
        len(st.orders),
        len(st.events),
        st.unpublished,
        len(venue.open_orders()),
        len(venue.fills_since(0)),
        len(starts),
        len(res.table.orders),
        len(res.table.open_orders()),
        len(res.events) + len(algo.events),
        dict(sorted(kinds.items())),
        len(res.publish),
        len(res.duplicates),
        len(res.to_cancel),
        time.monotonic() - t0,
    )
