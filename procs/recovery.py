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

Storage off (``[storage.postgres] mode = "off"``): no recorder, no record. Exec then keeps its
own: the **exec journal** (``ExecJournal``, ``var/exec/<engine>-<run>.journal``), one frame per
order exec takes from ``orders`` together with the events that order caused, and one per other
batch of events it publishes (market data, timers). A restarted exec loads it
(``load_exec_journal``) and runs steps 2-4 above on it exactly as on the record — the same
``reconcile`` and ``rebuild_parents`` — with the venue and the write-ahead algo log.

Why the journal can stand for what upstream has seen, exactly once:

- An entry is written *before* its events are published, together with the ``events`` ring's
  publication sequence number at that moment. The ring lives in shared memory and outlives
  exec, so at the restart its sequence says how many of the last entry's events really went
  out: ``load_exec_journal`` keeps those and drops the rest, which reconciliation then finds
  at the venue (a fill upstream missed is published once; a parent fill carries its child's
  venue fill id, so ``rebuild_parents`` knows exactly which child fills upstream saw). Writing
  after publishing instead would leave a window in which upstream saw a fill the journal lacks
  and recovery would publish it a second time: risk, the strategies and the portfolio do not
  drop a repeated fill by fill id (risk only right after its own restart), so at-least-once
  would count it twice.
- A crash after the venue took an order but before its entry was written loses nothing: the
  ``orders`` consumer hands its cursor back only when it asks for the next batch, so that
  order is delivered again; re-delivered ``NewOrder``s join the journal's orders, and like
  with a record each is kept out of the table unless the venue knows it, and then not sent
  twice (``reconcile``'s ``pending_new``).
- The appends are plain ``write`` calls (no fsync): they survive the process, which is what an
  exec restart recovers from, like the algo log and the simulated venue's record.

What it does not do: survive the loss of the host or of ``var/`` (nothing would, without a
record); and the journal only grows during a run (a new run starts a new one and removes the
old ones). Without the journal file (it could not be opened) exec starts with an empty order
table, logged as an error. A restarted risk asks exec for its open orders; exec answers only
from its main loop, so after this reconciliation (``procs.risk.AskExec``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.algos import rebuild_parents
from engine.messages import (
    CancelOrder,
    Message,
    NewOrder,
    OrderCanceled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    ReplaceOrder,
)
from engine.reconcile import Reconciliation, reconcile
from procs.algo_log import algo_log_path
from procs.algo_log import load as load_algo_log
from procs.framed_file import append_frame, open_for_append, read_frames
from procs.storage import open_recovery_source, run_id, wait_recorder_caught_up

log = logging.getLogger("gekko.recovery")


@dataclass
class ExecRecovery:
    result: Reconciliation | None = None
    backlog: list[Any] = field(default_factory=list)  # orders to process before the ring's next
    stored_fills: list[Any] = field(default_factory=list)  # for the portfolio
    #: algo parents to rebuild (``engine.algos.AlgoRecovery``; ``ExecEngine.restore_algos``)
    algo: Any = None


def recover_exec(w: Any, cfg: Any, venue: Any, orders: Any, events: Any) -> ExecRecovery:
    """Steps 1-4 above, from the record; with storage off from exec's journal (steps 2-4).

    ``events`` is exec's producer on the ``events`` ring (or the ring itself, with a record):
    with storage off its sequence number tells which journaled events really went out."""
    out = ExecRecovery()
    if not run_id() or w.incarnation == 0:
        return out  # a first start of a run: the run's record and venue session are empty
    source = open_recovery_source(cfg)
    if source is None:
        if no_record(cfg):
            return _recover_from_journal(cfg, venue, orders, events, out)
        return out
    t0 = time.monotonic()
    ring = events.ring if hasattr(events, "ring") else events
    caught_up = wait_recorder_caught_up(
        [orders.ring, ring], cfg.storage.postgres.recovery_timeout_s, w.beat
    )
    if not caught_up:
        log.error(
            "recovery: the recorder did not catch up in time: recovering from what is recorded"
        )
    out.backlog = orders.poll_batch(1 << 16)
    state = source.load(run_id())
    res, algo, starts = _rebuild(cfg, venue, state.orders, state.events, out)
    source.record_reconciliation(run_id(), "exec", res.events + algo.events)
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


def _rebuild(
    cfg: Any, venue: Any, orders: Iterable[NewOrder], events: list[Any], out: ExecRecovery
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
    res = reconcile(orders, events, venue, now, pending_new=pending, algo_ids=algo.order_ids)
    out.result = res
    out.algo = algo
    out.stored_fills = [f for f in res.fills if f not in res.publish] + [
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
        if isinstance(e, OrderReplaced | OrderCanceled) or (
            isinstance(e, OrderRejected)
            and e.reason.startswith(("cancel rejected", "replace rejected"))
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


# --- storage off: exec's own journal ----------------------------------------------------------


def no_record(cfg: Any) -> bool:
    """Whether this engine runs without a system of record (``[storage.postgres] mode = "off"``):
    then exec keeps its journal and recovers from it."""
    return getattr(getattr(getattr(cfg, "storage", None), "postgres", None), "mode", "") == "off"


def exec_journal_path(cfg: Any, rid: int) -> Path | None:
    """Where run ``rid``'s exec journal lives (None outside a supervised run)."""
    if not rid:
        return None
    return Path(cfg.engine.var_dir) / "exec" / f"{cfg.engine.id}-{rid}.journal"


_MAX_FRAME = 64 << 20


class JournalEntry(msgspec.Struct, array_like=True):
    """One write: the events ring's sequence number before ``events`` were published, the
    order exec took from ``orders`` that caused them (None for market data, timers, ...)."""

    seq: int
    taken: Message | None
    events: list[Message]


class ExecJournal:
    """The append side (exec, one writer; storage off only). See the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = open_for_append(self.path, _MAX_FRAME)  # a torn tail is cut off
        self._enc = msgspec.msgpack.Encoder()
        self._buf = bytearray(256)
        self.appended = 0
        self.failed = 0

    def append(self, taken: Any, events: list[Any], seq: int) -> None:
        """Write one entry before ``events`` are published (``seq``: the producer's sequence
        number now). A failed write is logged and counted, never raised: trading goes on, and
        a restart would then republish what the missing entry held."""
        buf = self._buf
        self._enc.encode_into((seq, taken, events), buf)
        try:
            append_frame(self._fd, buf)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.error(
                    "exec journal %s: write failed (%s): recovery may repeat events", self.path, exc
                )
            return
        self.appended += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_exec_journal(cfg: Any, incarnation: int) -> ExecJournal | None:
    """Exec's journal when there is no record (storage off, supervised run), else None. The
    first incarnation of a run removes earlier runs' journals."""
    path = exec_journal_path(cfg, run_id())
    if path is None or not no_record(cfg):
        return None
    if incarnation == 0:
        for old in path.parent.glob(f"{cfg.engine.id}-*.journal"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    try:
        j = ExecJournal(path)
    except OSError as exc:
        log.error("exec: no journal at %s (%s): a restart will not know its orders", path, exc)
        return None
    log.info("exec: storage off: journaling orders and events to %s for recovery", path)
    return j


@dataclass
class JournalState:
    """What ``load_exec_journal`` read: the record's shape (``orders``, ``events``)."""

    orders: list[NewOrder] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # execution events and requests, in order
    entries: int = 0
    unpublished: int = 0  # journaled events the ring shows never went out (dropped here)
    skipped: int = 0  # entries that did not decode
    found: bool = False  # the file exists
    from_journal: int = 0  # (the record's field; everything here is from the journal)


def load_exec_journal(path: str | Path | None, published_seq: int) -> JournalState:
    """Read the journal. ``published_seq``: the ``events`` ring's publication sequence number
    now (a fresh producer's ``seq``). An entry's events beyond the next entry's sequence number
    (beyond ``published_seq`` for the last one) were never published and are left out: the
    sequence number of the ring that outlived every incarnation is the judge, so this holds
    after any number of crashes. Events keep what the record keeps (orders' execution events and cancel / replace
    requests); a message seen twice (an order delivered again after a restart) counts once."""
    st = JournalState()
    if path is None:
        return st
    path = Path(path)
    st.found = path.exists()
    dec = msgspec.msgpack.Decoder(JournalEntry)
    enc = msgspec.msgpack.Encoder()
    seen_orders: set[int] = set()
    seen: set[bytes] = set()

    def keep(m: Any) -> None:
        if isinstance(m, NewOrder):
            if m.client_order_id not in seen_orders:
                seen_orders.add(m.client_order_id)
                st.orders.append(m)
        elif hasattr(m, "client_order_id") and (
            isinstance(m, CancelOrder | ReplaceOrder) or hasattr(m, "ts_event")
        ):
            key = enc.encode(m)
            if key not in seen:
                seen.add(key)
                st.events.append(m)

    entries: list[JournalEntry] = []
    for f in read_frames(path, _MAX_FRAME):
        try:
            entries.append(dec.decode(f))
        except (msgspec.DecodeError, msgspec.ValidationError):
            st.skipped += 1
    st.entries = len(entries)
    for k, e in enumerate(entries):
        if e.taken is not None:
            keep(e.taken)
        # what went out of this entry: up to the next entry's sequence number (written after
        # it, so the ring's position then; lower if an incarnation died before publishing
        # it), or the ring's position now for the last one
        limit = entries[k + 1].seq if k + 1 < len(entries) else published_seq
        n = max(0, min(len(e.events), limit - e.seq))
        st.unpublished += len(e.events) - n
        for m in e.events[:n]:
            keep(m)
    st.from_journal = len(st.orders) + len(st.events)
    if st.skipped:
        log.warning("exec journal %s: %d entries that do not decode were skipped", path, st.skipped)
    return st


def _recover_from_journal(
    cfg: Any, venue: Any, orders: Any, events: Any, out: ExecRecovery
) -> ExecRecovery:
    """Storage off: steps 2-4 on exec's journal instead of the record (module docstring)."""
    t0 = time.monotonic()
    path = exec_journal_path(cfg, run_id())
    seq = int(getattr(events, "seq", 0))
    out.backlog = orders.poll_batch(1 << 16)
    st = load_exec_journal(path, seq)
    if not st.found:
        log.error(
            "recovery (storage off): no record and no exec journal at %s: the order table "
            "starts empty (orders open at the venue are not managed)",
            path,
        )
        return out
    # re-delivered orders the journal may lack (taken, crash before the entry was written)
    known = {o.client_order_id for o in st.orders}
    orders_all = st.orders + [
        o for o in out.backlog if isinstance(o, NewOrder) and o.client_order_id not in known
    ]
    res, algo, starts = _rebuild(cfg, venue, orders_all, st.events, out)
    kinds = Counter(int(e.kind) for e in res.events + algo.events)
    log.warning(
        "recovery (storage off): no record; rebuilt from exec's journal %s (%d entries, %d "
        "orders, %d events; %d journaled events never published, left out) and the venue "
        "(%d open orders, %d fills), %d algo parents from the algo log: %d orders (%d open), "
        "%d differences resolved %s, %d events published, %d re-delivered orders suppressed, "
        "%d cancels sent (%.2fs)",
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
