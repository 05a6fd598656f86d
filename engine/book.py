"""An L2 (price-level) order book on preallocated numpy arrays, updated by numba kernels.

Why it looks like this:

- The feed process applies every book delta of every instrument; that is the hottest path in the
  engine after the rings themselves. Each side is one preallocated ``int64`` array of sort keys
  and one of quantities, kept sorted best-first, so an update is a binary search plus a short
  in-place shift inside a compiled kernel: no Python objects, no numpy temporaries, nothing
  allocated in steady state (DESIGN §2 "feed").
- Both sides are stored ascending by a *key*: ``-px`` for bids, ``+px`` for asks. Best-first
  then means index 0 on both sides and one kernel serves both, with no branch on side in the
  search loop.
- Prices and quantities are int ticks and lots (DESIGN §4): equality of levels is exact.
- Market data is dirty: sequence gaps, crossed or locked books and malformed updates happen in
  production. They are reported, never fatal: ``apply_delta`` returns a :class:`BookFlag`
  bitmask and bumps counters, and bad input is rejected before it touches any state. Deciding
  what to do (resync, drop the venue, alert) belongs to the feed, which sees the flags.
- Capacity is fixed (``max_levels`` per side) so memory is bounded whatever the venue sends.
  When a side is full, the worst level is discarded (flag ``DROPPED``): the top of the book is
  what trading needs, and the feed learns that deep levels are no longer complete.

Counters are cumulative since construction (a snapshot does not reset them): they are health
metrics, read by monitors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import IntFlag

import numpy as np
from numba import njit

from engine.messages import BookDelta, BookSnapshot

__all__ = ["BookFlag", "L2Book"]


class BookFlag(IntFlag):
    """Bits of the mask returned by :meth:`L2Book.apply_delta` / ``apply_snapshot`` / ``apply``."""

    NONE = 0
    #: ``seq`` is not ``last_seq + 1`` (both > 0): an update was missed or repeated
    GAP = 1
    #: ``seq <= last_seq``: a stale or duplicate update (also flagged ``GAP``); still applied
    OUT_OF_ORDER = 2
    #: after this update the best bid is above the best ask
    CROSSED = 4
    #: after this update the best bid equals the best ask
    LOCKED = 8
    #: the input was malformed (side, px <= 0, qty < 0, non-integral, wrong instrument):
    #: nothing was changed, not even ``last_seq``
    REJECTED = 16
    LEVEL_ADDED = 32
    LEVEL_REMOVED = 64
    #: the best level of the updated side changed (price or quantity)
    TOP_CHANGED = 128
    #: capacity reached: a level was discarded (the new one, or the side's worst)
    DROPPED = 256
    #: ``qty == 0`` for a level the book does not hold: nothing to remove
    MISSING_LEVEL = 512


# Plain ints for the kernels (numba freezes module-level globals as constants).
_GAP = 1
_OUT_OF_ORDER = 2
_CROSSED = 4
_LOCKED = 8
_REJECTED = 16
_LEVEL_ADDED = 32
_LEVEL_REMOVED = 64
_TOP_CHANGED = 128
_DROPPED = 256
_MISSING_LEVEL = 512

# Everything lives in ONE int64 buffer: a header of scalars, then bid keys, ask keys, bid
# quantities, ask quantities (``cap`` each). One array argument instead of three cuts the numba
# dispatch cost of every call by about a third, and counters are updated in place by the kernel
# instead of being returned as tuples.
_S_NBID = 0  # levels held on the bid side
_S_NASK = 1  # levels held on the ask side
_S_LAST_SEQ = 2
_S_GAPS = 3
_S_CROSSED = 4
_S_LOCKED = 5
_S_REJECTED = 6
_S_DROPPED = 7
_S_UPDATES = 8
_S_CAP = 9  # levels per side
_HDR = 16


@njit(cache=True, nogil=True)
def _check_cross(buf):  # pragma: no cover - compiled
    """Flags and counts a crossed/locked book. Bid key is ``-px``, ask key ``+px``."""
    if buf[_S_NBID] > 0 and buf[_S_NASK] > 0:
        bb = -buf[_HDR]
        ba = buf[_HDR + buf[_S_CAP]]
        if bb > ba:
            buf[_S_CROSSED] += 1
            return _CROSSED
        if bb == ba:
            buf[_S_LOCKED] += 1
            return _LOCKED
    return 0


@njit(cache=True, nogil=True)
def _find(buf, kb, n, key):  # pragma: no cover - compiled
    """Lower bound of ``key`` in the ascending ``buf[kb:kb+n]``, relative to ``kb``."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if buf[kb + mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


# long because: one numba kernel per book update (validate, sequence, then write in place);
# split, its early return on a rejected update would need a flag threaded through the parts
@njit(cache=True, nogil=True)
def _apply_delta_nb(buf, side, px, qty, seq):  # pragma: no cover - compiled
    """Set the level ``px`` of ``side`` to ``qty`` (0 removes). Returns the flag mask.

    Validation comes first and returns before any write, so a rejected update leaves the
    book, the sequence and every counter except ``rejected`` exactly as they were. The
    ``int64(x) != x`` tests reject non-integral floats (numba compiles a float specialisation
    if a caller passes one) instead of silently truncating a price.
    """
    iside = np.int64(side)
    ipx = np.int64(px)
    iqty = np.int64(qty)
    iseq = np.int64(seq)
    if (
        iside != side
        or ipx != px
        or iqty != qty
        or iseq != seq
        or (iside != 1 and iside != -1)
        or ipx <= 0
        or iqty < 0
        or iseq < 0
    ):
        buf[_S_REJECTED] += 1
        return _REJECTED
    flags = 0
    if iseq > 0:
        last = buf[_S_LAST_SEQ]
        if last > 0 and iseq != last + 1:
            flags |= _GAP
            buf[_S_GAPS] += 1
            if iseq <= last:
                flags |= _OUT_OF_ORDER
        if iseq > last:
            buf[_S_LAST_SEQ] = iseq
    cap = buf[_S_CAP]
    if iside == 1:
        s = 0
        key = -ipx
    else:
        s = 1
        key = ipx
    kb = _HDR + s * cap  # keys of this side
    qb = _HDR + (2 + s) * cap  # quantities of this side
    n = buf[s]
    i = _find(buf, kb, n, key)
    found = i < n and buf[kb + i] == key
    if iqty == 0:
        if found:
            for j in range(i, n - 1):
                buf[kb + j] = buf[kb + j + 1]
                buf[qb + j] = buf[qb + j + 1]
            buf[s] = n - 1
            flags |= _LEVEL_REMOVED
            if i == 0:
                flags |= _TOP_CHANGED
        else:
            flags |= _MISSING_LEVEL
    elif found:
        if buf[qb + i] != iqty:
            buf[qb + i] = iqty
            if i == 0:
                flags |= _TOP_CHANGED
    else:
        insert = True
        if n == cap:
            buf[_S_DROPPED] += 1
            flags |= _DROPPED
            if i == n:
                insert = False  # worse than every level held: discard the newcomer
            else:
                n -= 1  # discard the worst level to make room
        if insert:
            for j in range(n, i, -1):
                buf[kb + j] = buf[kb + j - 1]
                buf[qb + j] = buf[qb + j - 1]
            buf[kb + i] = key
            buf[qb + i] = iqty
            buf[s] = n + 1
            flags |= _LEVEL_ADDED
            if i == 0:
                flags |= _TOP_CHANGED
    buf[_S_UPDATES] += 1
    return flags | _check_cross(buf)


@njit(cache=True, nogil=True)
def _qty_at_nb(buf, s, key):  # pragma: no cover - compiled
    kb = _HDR + s * buf[_S_CAP]
    n = buf[s]
    i = _find(buf, kb, n, key)
    if i < n and buf[kb + i] == key:
        return buf[kb + 2 * buf[_S_CAP] + i]
    return 0


def _new_buffer(cap: int) -> np.ndarray:
    buf = np.zeros(_HDR + 4 * cap, np.int64)
    buf[_S_CAP] = cap
    return buf


def _warm_up() -> None:
    """Compile (or load from the on-disk cache) the int64 specialisations at import time.

    Why: the first tick of the day must not pay a JIT compile.
    """
    buf = _new_buffer(2)
    _apply_delta_nb(buf, 1, 1, 1, 0)
    _apply_delta_nb(buf, np.int64(-1), np.int64(2), np.int64(1), np.int64(0))
    _qty_at_nb(buf, 0, -1)
    _qty_at_nb(buf, np.int64(0), np.int64(-1))
    _check_cross(buf)


_warm_up()


def _side_index(side: int) -> int:
    if side == 1:
        return 0
    if side == -1:
        return 1
    raise ValueError(f"side must be 1 (BUY/bids) or -1 (SELL/asks), got {side!r}")


class L2Book:
    """Aggregated price levels of one instrument, best first on each side.

    ``side`` is ``Side.BUY`` (1) for bids and ``Side.SELL`` (-1) for asks, matching
    ``BookDelta.side`` (the side of the resting orders at that level).
    """

    __slots__ = (
        "instrument_id",
        "max_levels",
        "_buf",
        "_mv",
        "_keys",
        "_qtys",
        "_ka",
        "_qb",
        "_qa",
    )

    def __init__(self, instrument_id: int, max_levels: int = 256) -> None:
        if max_levels < 1:
            raise ValueError("max_levels must be >= 1")
        cap = int(max_levels)
        self.instrument_id = int(instrument_id)
        self.max_levels = cap
        self._buf = _new_buffer(cap)
        # Views, not copies: row 0 bids (key = -px), row 1 asks (key = +px), ascending = best
        # first. The memoryview makes scalar reads of the best levels return Python ints
        # directly, which is cheaper than numpy scalar indexing.
        self._keys = self._buf[_HDR : _HDR + 2 * cap].reshape(2, cap)
        self._qtys = self._buf[_HDR + 2 * cap :].reshape(2, cap)
        self._mv = memoryview(self._buf)
        self._ka = _HDR + cap  # offset of the best ask key (best bid key is at _HDR)
        self._qb = _HDR + 2 * cap  # best bid qty
        self._qa = _HDR + 3 * cap  # best ask qty

    # --- updates ---------------------------------------------------------------------------
    def apply_delta(self, side: int, px: int, qty: int, seq: int = 0) -> int:
        """Set the total quantity at ``px`` on ``side`` to ``qty`` (0 removes the level).

        Returns a :class:`BookFlag` mask (as a plain int). Never raises: malformed input is
        reported with ``BookFlag.REJECTED`` and leaves the book untouched.
        """
        try:
            return _apply_delta_nb(self._buf, side, px, qty, seq)
        except Exception:  # wrong types or ints beyond int64: reject, do not crash the feed
            self._buf[_S_REJECTED] += 1
            return _REJECTED

    def apply_snapshot(
        self,
        bid_px: Sequence[int] | np.ndarray,
        bid_qty: Sequence[int] | np.ndarray,
        ask_px: Sequence[int] | np.ndarray,
        ask_qty: Sequence[int] | np.ndarray,
        seq: int = 0,
    ) -> int:
        """Replace the whole book. Levels are given best first; zero-quantity levels are skipped.

        A snapshot is a resync point, so ``last_seq`` becomes ``seq`` without a gap check
        (0 = unknown: the next delta is not gap-checked). A malformed snapshot (lengths differ,
        px <= 0 or qty < 0 on a non-empty level, duplicate prices, non-integral values) is
        rejected whole: applying part of it would leave a book that never existed.
        Not a hot path: it may allocate.
        """
        buf = self._buf
        try:
            sides = (
                self._prepare_side(bid_px, bid_qty, 1),
                self._prepare_side(ask_px, ask_qty, -1),
            )
            iseq = int(seq)
            if iseq != seq or iseq < 0 or iseq >= 2**63:
                raise ValueError("seq out of range")
        except (TypeError, ValueError, OverflowError):
            buf[_S_REJECTED] += 1
            return _REJECTED
        flags = _TOP_CHANGED
        for s, (keys, qtys) in enumerate(sides):
            n = keys.shape[0]
            if n > self.max_levels:
                n = self.max_levels
                flags |= _DROPPED
                buf[_S_DROPPED] += 1
            self._keys[s, :n] = keys[:n]
            self._qtys[s, :n] = qtys[:n]
            self._keys[s, n:] = 0
            self._qtys[s, n:] = 0
            buf[s] = n
        buf[_S_LAST_SEQ] = iseq
        buf[_S_UPDATES] += 1
        return flags | int(_check_cross(buf))

    @staticmethod
    def _prepare_side(
        px: Sequence[int] | np.ndarray, qty: Sequence[int] | np.ndarray, side: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validated, sorted (keys, qtys) of one side of a snapshot; raises ValueError if bad."""
        p = np.asarray(px)
        q = np.asarray(qty)
        if p.ndim != 1 or q.ndim != 1 or p.shape != q.shape:
            raise ValueError("snapshot price/quantity arrays must be 1-D and of equal length")
        if p.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        for a in (p, q):
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise ValueError("non-integral value in snapshot")
            elif a.dtype.kind not in "iu":
                raise ValueError("snapshot values must be integers")
        p = p.astype(np.int64)
        q = q.astype(np.int64)
        keep = q != 0
        p = p[keep]
        q = q[keep]
        if np.any(q < 0) or np.any(p <= 0):
            raise ValueError("snapshot level with px <= 0 or qty < 0")
        keys = -p if side == 1 else p
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if keys.size > 1 and np.any(keys[1:] == keys[:-1]):
            raise ValueError("duplicate price in snapshot")
        return keys, q[order]

    def apply(self, msg: BookDelta | BookSnapshot) -> int:
        """Apply a BookDelta or BookSnapshot. Other messages, or another instrument's, are rejected."""
        if type(msg) is BookDelta:
            if msg.instrument_id == self.instrument_id:
                return self.apply_delta(msg.side, msg.px, msg.qty, msg.seq)
        elif type(msg) is BookSnapshot and msg.instrument_id == self.instrument_id:
            return self.apply_snapshot(msg.bid_px, msg.bid_qty, msg.ask_px, msg.ask_qty, msg.seq)
        self._buf[_S_REJECTED] += 1
        return _REJECTED

    def clear(self) -> None:
        """Empty both sides and forget the sequence (counters are kept: they are history)."""
        self._buf[_S_NBID] = 0
        self._buf[_S_NASK] = 0
        self._buf[_S_LAST_SEQ] = 0

    # --- reads -----------------------------------------------------------------------------
    def best_bid(self) -> tuple[int, int]:
        """(px, qty) of the best bid, (0, 0) when there are no bids."""
        mv = self._mv
        if mv[_S_NBID]:
            return -mv[_HDR], mv[self._qb]
        return 0, 0

    def best_ask(self) -> tuple[int, int]:
        """(px, qty) of the best ask, (0, 0) when there are no asks."""
        mv = self._mv
        if mv[_S_NASK]:
            return mv[self._ka], mv[self._qa]
        return 0, 0

    def depth(self, side: int, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(px, qty) arrays of the best ``n`` levels of ``side`` (all when None), best first.

        Copies: the caller may keep them while the book moves on.
        """
        s = _side_index(side)
        held = self._mv[s]
        m = held if n is None else max(0, min(int(n), held))
        px = self._keys[s, :m].copy()
        if s == 0:
            np.negative(px, out=px)
        return px, self._qtys[s, :m].copy()

    def bids(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(px, qty) of the best ``n`` bid levels, highest price first."""
        return self.depth(1, n)

    def asks(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(px, qty) of the best ``n`` ask levels, lowest price first."""
        return self.depth(-1, n)

    def level(self, side: int, i: int) -> tuple[int, int]:
        """(px, qty) of the ``i``-th best level of ``side`` (0 = best); (0, 0) beyond the book.

        Lets a matching engine walk the book level by level without copying arrays.
        """
        s = _side_index(side)
        mv = self._mv
        if 0 <= i < mv[s]:
            k = mv[_HDR + s * self.max_levels + i]
            return (-k if s == 0 else k), mv[_HDR + (2 + s) * self.max_levels + i]
        return 0, 0

    @property
    def is_empty(self) -> bool:
        """No level on either side."""
        mv = self._mv
        return not (mv[_S_NBID] or mv[_S_NASK])

    def n_levels(self, side: int) -> int:
        """Number of levels held on ``side``."""
        return self._mv[_side_index(side)]

    def qty_at(self, side: int, px: int) -> int:
        """Total quantity at ``px`` on ``side`` (0 if no such level)."""
        s = _side_index(side)
        return int(_qty_at_nb(self._buf, s, -px if s == 0 else px))

    def volume(self, side: int, n: int | None = None) -> int:
        """Total quantity over the best ``n`` levels of ``side`` (all when None)."""
        s = _side_index(side)
        held = self._mv[s]
        m = held if n is None else max(0, min(int(n), held))
        return int(self._qtys[s, :m].sum())

    def mid(self) -> float:
        """Arithmetic mid in ticks; nan when either side is empty."""
        mv = self._mv
        if mv[_S_NBID] and mv[_S_NASK]:
            return (mv[self._ka] - mv[_HDR]) / 2.0
        return math.nan

    def microprice(self) -> float:
        """Size-weighted mid, ``(bid*ask_qty + ask*bid_qty) / (bid_qty + ask_qty)``, in ticks.

        Leans toward the side more likely to be hit next (the thinner one); nan when a side
        is empty.
        """
        mv = self._mv
        if mv[_S_NBID] and mv[_S_NASK]:
            bq = mv[self._qb]
            aq = mv[self._qa]
            return (-mv[_HDR] * aq + mv[self._ka] * bq) / (bq + aq)
        return math.nan

    def spread(self) -> int:
        """Best ask minus best bid in ticks (negative when crossed); 0 when a side is empty.

        Check ``mid()`` (nan) or the best levels to tell an empty side from a locked book.
        """
        mv = self._mv
        if mv[_S_NBID] and mv[_S_NASK]:
            return mv[self._ka] + mv[_HDR]
        return 0

    @property
    def is_crossed(self) -> bool:
        """Best bid above best ask."""
        mv = self._mv
        return bool(mv[_S_NBID] and mv[_S_NASK] and -mv[_HDR] > mv[self._ka])

    @property
    def is_locked(self) -> bool:
        """Best bid equal to best ask."""
        mv = self._mv
        return bool(mv[_S_NBID] and mv[_S_NASK] and -mv[_HDR] == mv[self._ka])

    # --- counters --------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """Highest sequence number applied (0 = none / unknown since the last snapshot)."""
        return self._mv[_S_LAST_SEQ]

    @property
    def gap_count(self) -> int:
        """Updates whose ``seq`` was not ``last_seq + 1``."""
        return self._mv[_S_GAPS]

    @property
    def crossed_count(self) -> int:
        """Updates after which the book was crossed."""
        return self._mv[_S_CROSSED]

    @property
    def locked_count(self) -> int:
        """Updates after which the book was locked."""
        return self._mv[_S_LOCKED]

    @property
    def rejected_count(self) -> int:
        """Malformed updates refused."""
        return self._mv[_S_REJECTED]

    @property
    def dropped_count(self) -> int:
        """Levels discarded because a side was at capacity."""
        return self._mv[_S_DROPPED]

    @property
    def update_count(self) -> int:
        """Updates applied (deltas and snapshots, rejected ones excluded)."""
        return self._mv[_S_UPDATES]

    def __repr__(self) -> str:
        return (
            f"L2Book(instrument_id={self.instrument_id}, bid={self.best_bid()}, "
            f"ask={self.best_ask()}, levels=({self.n_levels(1)}, {self.n_levels(-1)}), "
            f"last_seq={self.last_seq})"
        )
