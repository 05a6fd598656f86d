"""Queries recovery needs: this run's orders, order events and account events (funding,
financing, settlements, liquidations, margin status: ``account_events``), from PostgreSQL plus
the journal.

Order matters: the journal is read *before* the database. The recorder truncates the journal
only after the same records are committed, so whatever the journal loses between our two reads
is already in the database when we read it; the other order could miss records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    CancelOrder,
    Message,
    NewOrder,
    OrderPartiallyFilled,
    ReplaceOrder,
)
from ops.store.journal import read_records
from ops.store.writer import digest

_DEC = msgspec.msgpack.Decoder(Message)
_ENC = msgspec.msgpack.Encoder()


@dataclass
class RunState:
    """What the record knows about one run, deduplicated, events in publication order."""

    orders: list[NewOrder] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # execution events and cancel/replace requests
    #: FundingPayment, Financing, Settlement, Liquidation, MarginStatus in publication order
    account_events: list[Any] = field(default_factory=list)
    from_journal: int = 0  # records found only in the journal

    @property
    def fills(self) -> list[OrderPartiallyFilled]:
        return [e for e in self.events if isinstance(e, OrderPartiallyFilled)]

    @property
    def last_fill_id(self) -> int:
        return max((f.fill_id for f in self.fills), default=0)


def load_run_state(
    conn: Any | None, run_id: int, journal_path: str | Path | None = None
) -> RunState:
    """Orders and events of ``run_id``: journal first, then the database (``conn`` may be None)."""
    journal = list(read_records(journal_path)) if journal_path else []
    state = RunState()
    seen_orders: set[int] = set()
    seen_events: set[bytes] = set()
    if conn is not None:
        for row in conn.execute(
            "SELECT client_order_id, strategy_id, instrument_id, side, order_type, tif, px, qty, ts_origin,"
            " ts_approved, stop_px, flags, expire_ns, algo, algo_params FROM orders WHERE run_id = %s"
            " ORDER BY ts_approved, client_order_id",
            (run_id,),
        ).fetchall():
            params = row[14] if isinstance(row[14], dict) else {}
            state.orders.append(NewOrder(*row[:14], algo_params=params))
            seen_orders.add(row[0])
        for h, msg in conn.execute(
            "SELECT event_hash, msg FROM order_events WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall():
            try:
                state.events.append(_DEC.decode(msg))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            seen_events.add(bytes(h))
        for h, msg in conn.execute(
            "SELECT event_hash, msg FROM account_events WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall():
            try:
                state.account_events.append(_DEC.decode(msg))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            seen_events.add(bytes(h))
    for rec in journal:  # only what the database does not have yet (it is newer)
        if isinstance(rec, ACCOUNT_EVENT_TYPES):
            h = digest(_ENC.encode(rec))
            if h not in seen_events:
                seen_events.add(h)
                state.account_events.append(rec)
                state.from_journal += 1
        elif isinstance(rec, NewOrder):
            if rec.client_order_id not in seen_orders:
                seen_orders.add(rec.client_order_id)
                state.orders.append(rec)
                state.from_journal += 1
        elif hasattr(rec, "client_order_id") and (
            isinstance(rec, CancelOrder | ReplaceOrder) or hasattr(rec, "ts_event")
        ):
            h = digest(_ENC.encode(rec))
            if h not in seen_events:
                seen_events.add(h)
                state.events.append(rec)
                state.from_journal += 1
    return state
