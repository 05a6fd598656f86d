"""Account events (funding, financing, settlement, liquidation, margin status) as rows of
``account_events`` (migration 0010).

Why one table for five messages: they are few per run and always read together — recovery and
the report want every money movement the venue made without an order of ours, in publication
order. The exact frame is kept (``msg``); the columns are what a query sums or filters without
decoding it (their meaning per message: the migration's comment).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from engine.instruments import Instrument
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    Settlement,
)

ACCOUNT_COLS = (
    "run_id",
    "event_hash",
    "kind",
    "instrument_id",
    "venue",
    "currency",
    "amount",
    "px",
    "qty",
    "ts_event",
    "msg",
)
ACCOUNT_TYPES = (
    "int8",
    "bytea",
    "text",
    "int4",
    "text",
    "text",
    "float8",
    "int8",
    "int8",
    "int8",
    "bytea",
)

_encode = msgspec.msgpack.Encoder().encode


def is_account_event(msg: Any) -> bool:
    return isinstance(msg, ACCOUNT_EVENT_TYPES)


def account_row(run_id: int, msg: Any, frame: bytes | None = None) -> tuple:
    """The ``account_events`` row of one account event (``frame``: its exact ring frame)."""
    frame = frame if frame is not None else _encode(msg)
    t = type(msg)
    iid, venue, ccy, amount, px, qty = -1, "", "", 0.0, 0, 0
    if t is FundingPayment:
        iid, ccy, amount, px, qty = (
            msg.instrument_id,
            msg.currency,
            msg.amount,
            msg.mark_px,
            msg.position,
        )
    elif t is Financing:
        iid, ccy, amount, qty = msg.instrument_id, msg.currency, msg.amount, msg.position
    elif t is Settlement:
        iid, amount, px, qty = msg.instrument_id, -float(msg.fee), msg.px, msg.position
    elif t is Liquidation:
        iid, amount, px, qty = msg.instrument_id, -float(msg.fee), msg.px, msg.side * msg.qty
    elif t is MarginStatus:
        venue, ccy, amount = msg.venue, msg.currency, msg.equity
    else:
        raise TypeError(f"not an account event: {t.__name__}")
    return (
        run_id,
        hashlib.blake2b(frame, digest_size=16).digest(),
        t.__name__,
        iid,
        venue,
        ccy,
        float(amount),
        int(px),
        int(qty),
        int(msg.ts_event),
        frame,
    )


#: the ``instruments`` table's own columns; every other Instrument key goes to ``spec``
_COLUMNS = {
    "instrument_id",
    "symbol",
    "venue",
    "asset_class",
    "sector",
    "tick_size",
    "lot_size",
    "currency",
    "kind",
}
_DEFAULTS = {
    f.name: f.default for f in msgspec.structs.fields(Instrument) if f.name not in _COLUMNS
}


def instrument_spec(ins: Any) -> dict[str, Any]:
    """The keys of an instrument's kind that differ from their defaults (``instruments.spec``,
    migration 0010): what a reader needs to rebuild its contract besides the plain columns."""
    return {k: getattr(ins, k) for k, d in _DEFAULTS.items() if getattr(ins, k, d) != d}
