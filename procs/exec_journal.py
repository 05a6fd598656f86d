"""Exec's own journal: what it took from ``orders`` and published on ``events``, for recovery.

Exec always keeps it (``var/exec/<engine>-<run>.journal``), with or without a database, so a
restarted exec rebuilds its order table from this file, the venue and the algo log
(``procs.recovery``) and never waits for PostgreSQL — which may be down exactly when exec
crashed. One frame (``procs.framed_file``) per order exec takes, with the events that order
caused, and one per other batch of events it publishes (market data, timers).

Why it can stand for what upstream has seen, exactly once:

- An entry is written *before* its events are published, together with the ``events`` ring's
  publication sequence number at that moment. The ring lives in shared memory and outlives
  exec, so at the restart its sequence says how many of the last entry's events really went
  out: ``load_exec_journal`` keeps those and drops the rest, which reconciliation then finds
  at the venue (a fill upstream missed is published once). Writing after publishing instead
  would leave a window in which upstream saw a fill the journal lacks and recovery would
  publish it a second time: risk, the strategies and the portfolio do not drop a repeated fill
  by fill id, so at-least-once would count it twice.
- Exec is the only producer of ``events``, so the entries' sequence numbers must tile the
  ring's: an entry starting beyond where the previous one could end (or the ring beyond the
  last one) means events went out that the journal lacks — a failed write, a cut or corrupt
  file. ``JournalState.gap`` counts them; recovery then refuses to trade on it (fail closed).
- A crash after the venue took an order but before its entry was written loses nothing: the
  ``orders`` consumer hands its cursor back only when it asks for the next batch, so that
  order is delivered again and reconciliation keeps it from being sent twice.
- The appends are plain ``write`` calls (no fsync): they survive the process, which is what an
  exec restart recovers from, like the algo log and the simulated venue's record. Cost: one
  ``writev`` per order, after the venue call (``perf/bench_oms.py``, ``exec-sim-journal``).

What it does not do: survive the loss of the host or of ``var/``; stay small (it grows for the
whole run; the first exec of a new run removes the old ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import ACCOUNT_EVENT_TYPES, CancelOrder, Message, NewOrder, ReplaceOrder
from procs.framed_file import append_frame, open_for_append, read_frames
from procs.storage import run_id

log = logging.getLogger("gekko.recovery")

_MAX_FRAME = 64 << 20


def exec_journal_path(cfg: Any, rid: int) -> Path | None:
    """Where run ``rid``'s exec journal lives (None outside a supervised run)."""
    if not rid:
        return None
    return Path(cfg.engine.var_dir) / "exec" / f"{cfg.engine.id}-{rid}.journal"


class JournalEntry(msgspec.Struct, array_like=True):
    """One write: the events ring's sequence number before ``events`` were published, the
    order exec took from ``orders`` that caused them (None for market data, timers, ...)."""

    seq: int
    taken: Message | None
    events: list[Message]


class ExecJournal:
    """The append side (exec, one writer). See the module docstring."""

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
        a restart finds the hole (``JournalState.gap``) and refuses to trade on it."""
        buf = self._buf
        self._enc.encode_into((seq, taken, events), buf)
        try:
            append_frame(self._fd, buf)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.error(
                    "exec journal %s: write failed (%s): a restart of exec will not trust it",
                    self.path,
                    exc,
                )
            return
        self.appended += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_exec_journal(cfg: Any, incarnation: int) -> ExecJournal | None:
    """Exec's journal in a supervised run (None outside one). The first incarnation of a run
    removes earlier runs' journals."""
    path = exec_journal_path(cfg, run_id())
    if path is None:
        return None
    if incarnation == 0:
        for old in path.parent.glob(f"{cfg.engine.id}-*.journal"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    try:
        j = ExecJournal(path)
    except OSError as exc:
        log.error(
            "exec: no journal at %s (%s): a restart will have to rebuild from the record", path, exc
        )
        return None
    log.info("exec: journaling orders and events to %s for recovery", path)
    return j


@dataclass
class JournalState:
    """What ``load_exec_journal`` read: the record's shape (``orders``, ``events``)."""

    orders: list[NewOrder] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # execution, account events, requests, in order
    entries: int = 0
    unpublished: int = 0  # journaled events the ring shows never went out (dropped here)
    skipped: int = 0  # entries that did not decode
    found: bool = False  # the file exists
    from_journal: int = 0  # (the record's field; everything here is from the journal)
    #: events the ring shows were published that no entry holds (a failed write, a cut file)
    gap: int = 0


def load_exec_journal(path: str | Path | None, published_seq: int) -> JournalState:
    """Read the journal. ``published_seq``: the ``events`` ring's publication sequence number
    now (a fresh producer's ``seq``). An entry's events beyond the next entry's sequence number
    (beyond ``published_seq`` for the last one) were never published and are left out: the
    sequence number of the ring that outlived every incarnation is the judge, so this holds
    after any number of crashes. Events keep what the record keeps (orders' execution events,
    cancel / replace requests, and the account events: a settlement or a liquidation moves a
    position as a fill does, a payment moves cash); a message seen twice (an order delivered again after a
    restart) counts once. Events published that no entry holds are counted in ``gap``."""
    st = JournalState()
    if path is None:
        return st
    path = Path(path)
    st.found = path.exists()
    dec = msgspec.msgpack.Decoder(JournalEntry)
    entries: list[JournalEntry] = []
    for f in read_frames(path, _MAX_FRAME):
        try:
            entries.append(dec.decode(f))
        except (msgspec.DecodeError, msgspec.ValidationError):
            st.skipped += 1
    st.entries = len(entries)
    keep = _Keeper(st)
    end = 0  # the ring's sequence number after what the entries so far can account for
    for k, e in enumerate(entries):
        st.gap += max(0, e.seq - end)
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
        end = e.seq + n
    st.gap += max(0, published_seq - end)
    st.from_journal = len(st.orders) + len(st.events)
    if st.skipped:
        log.warning("exec journal %s: %d entries that do not decode were skipped", path, st.skipped)
    return st


class _Keeper:
    """Adds a journaled message to the state once: orders by id, events by their bytes."""

    def __init__(self, st: JournalState) -> None:
        self.st = st
        self.enc = msgspec.msgpack.Encoder()
        self.orders: set[int] = set()
        self.seen: set[bytes] = set()

    def __call__(self, m: Any) -> None:
        if isinstance(m, NewOrder):
            if m.client_order_id not in self.orders:
                self.orders.add(m.client_order_id)
                self.st.orders.append(m)
        elif isinstance(m, ACCOUNT_EVENT_TYPES) or (
            hasattr(m, "client_order_id")
            and (isinstance(m, CancelOrder | ReplaceOrder) or hasattr(m, "ts_event"))
        ):
            key = self.enc.encode(m)
            if key not in self.seen:
                self.seen.add(key)
                self.st.events.append(m)
