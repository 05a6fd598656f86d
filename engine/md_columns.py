"""Columnar market data: one numpy record array shape for quotes, trades and L2 deltas.

Why: a backtest of millions of events spends most of its time building, dispatching and
validating one msgspec Struct per event. The fast replay, the LOBSTER kernel, the data catalog
and sweeps all pass the same data as batches of ``MD_DTYPE`` rows instead, so a numba kernel can
walk them without a Python object per row. ``to_messages`` / ``from_messages`` convert to and
from the message form (``engine.messages``), which stays the reference: the exact runtime and
the live engine see messages, and a columnar source yields the same data as messages too.

A source is columnar (:class:`ColumnarSource`) when it has ``preamble()`` (messages that come
before the rows, such as the opening ``BookSnapshot`` of a LOBSTER day) and ``batches()`` (row
arrays in ``ts_event`` order, already validated: see ``engine.md_rejects.validate_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import Protocol, runtime_checkable

import numpy as np

from engine.messages import BookDelta, Quote, Trade

__all__ = [
    "BATCH_ROWS",
    "MD_DTYPE",
    "ColumnarSource",
    "MdKind",
    "empty",
    "from_messages",
    "is_columnar",
    "to_messages",
]


class MdKind(IntEnum):
    """What one row is (the ``kind`` column)."""

    QUOTE = 1
    TRADE = 2
    DELTA = 3


MD_DTYPE = np.dtype(
    [
        ("ts_event", np.int64),  # venue time, ns since the epoch
        ("instrument_id", np.int32),
        ("kind", np.uint8),  # MdKind
        ("side", np.int8),  # TRADE: aggressor (1 buy, -1 sell, 0 unknown); DELTA: BookDelta.side
        ("px", np.int64),  # TRADE / DELTA: price in ticks
        ("qty", np.int64),  # TRADE: lots; DELTA: new total at px (0 removes the level)
        ("bid_px", np.int64),  # QUOTE only (0 otherwise)
        ("bid_qty", np.int64),
        ("ask_px", np.int64),
        ("ask_qty", np.int64),
        ("seq", np.int64),  # QUOTE / DELTA: venue sequence; TRADE: trade_id
    ]
)

#: rows per batch a source aims for (large enough to amortise a kernel call, small in memory)
BATCH_ROWS = 65_536

_QUOTE, _TRADE, _DELTA = int(MdKind.QUOTE), int(MdKind.TRADE), int(MdKind.DELTA)


def empty(n: int) -> np.ndarray:
    """``n`` zeroed rows (every column 0, so unused columns of a kind read 0)."""
    return np.zeros(n, dtype=MD_DTYPE)


def to_messages(rows: np.ndarray) -> Iterator[Quote | Trade | BookDelta]:
    """The rows as messages, in row order (``ts_recv = ts_event``: replayed data has no
    separate receive time). A row of an unknown kind raises ``ValueError``."""
    cols = [rows[name].tolist() for name in MD_DTYPE.names]
    for ts, iid, kind, side, px, qty, bpx, bqty, apx, aqty, seq in zip(*cols, strict=True):
        if kind == _QUOTE:
            yield Quote(iid, bpx, bqty, apx, aqty, ts, ts, seq)
        elif kind == _TRADE:
            yield Trade(iid, px, qty, side, ts, ts, seq)
        elif kind == _DELTA:
            yield BookDelta(iid, side, px, qty, ts, ts, seq)
        else:
            raise ValueError(f"market-data row of unknown kind {kind}")


def from_messages(msgs: Iterable[object]) -> np.ndarray:
    """Quotes, trades and book deltas as rows, in the given order (``ts_recv`` is dropped).
    Any other message raises ``TypeError``: it has no row form."""
    out: list[tuple[int, ...]] = []
    for m in msgs:
        t = type(m)
        if t is Quote:
            row = (m.ts_event, m.instrument_id, _QUOTE, 0, 0, 0)
            row += (m.bid_px, m.bid_qty, m.ask_px, m.ask_qty, m.seq)
        elif t is Trade:
            row = (m.ts_event, m.instrument_id, _TRADE, m.side, m.px, m.qty, 0, 0, 0, 0)
            row += (m.trade_id,)
        elif t is BookDelta:
            row = (m.ts_event, m.instrument_id, _DELTA, m.side, m.px, m.qty, 0, 0, 0, 0)
            row += (m.seq,)
        else:
            raise TypeError(f"{t.__name__} has no market-data row form")
        out.append(row)
    return np.array(out, dtype=MD_DTYPE) if out else empty(0)


@runtime_checkable
class ColumnarSource(Protocol):
    """Market data as row batches (the fast replay's input) and as messages (everything else)."""

    def preamble(self) -> list[object]:
        """Messages before the rows (e.g. ``BookSnapshot``), in time order."""
        ...

    def batches(self) -> Iterator[np.ndarray]:
        """``MD_DTYPE`` rows in ``ts_event`` order, validated, in batches of about BATCH_ROWS."""
        ...

    def __iter__(self) -> Iterator[object]:
        """The same data as messages: the preamble, then the rows."""
        ...


def is_columnar(src: object) -> bool:
    """Whether ``src`` offers the columnar form: it has ``preamble`` and ``batches``, and no
    ``columnar`` attribute that says False (a source whose data may have no row form, such
    as a replay with bars, says so there)."""
    return (
        callable(getattr(src, "preamble", None))
        and callable(getattr(src, "batches", None))
        and bool(getattr(src, "columnar", True))
    )
