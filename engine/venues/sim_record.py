"""The simulated exchange's durable record: what it did, on disk, so it survives exec's crash.

A real venue survives our crash: its resting orders, fills and positions are still there when
exec comes back and asks (``open_orders``, ``fills_since``, ``positions``). The simulated one
lives inside the exec process, so it keeps an append-only file of what it did — every order it
accepted (the NewOrder, then its events), every event it emitted and every trading status —
written at the end of each call (before its events are handed out), and a new SimExchange on the
same file replays it (``restore``). Requests still travelling to the venue when exec died are
lost, like packets on a dropped connection. Queue positions restart at the front. A torn last
frame (killed mid-write) is cut off. Frames: u32 little-endian length + msgpack struct.
"""

from __future__ import annotations

import heapq
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    ExchangeStatus,
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Settlement,
    TimeInForce,
)
from engine.venues.sim_state import DAY_NS, SimOrder

if TYPE_CHECKING:
    from engine.venues.sim import SimExchange

__all__ = ["RecordFrame", "SimRecord", "prune_records", "read_frames", "restore"]

_REC_HDR = struct.Struct("<I")
#: what a record frame holds
RecordFrame = (
    NewOrder
    | OrderAccepted
    | OrderRejected
    | OrderPartiallyFilled
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | OrderReplaced
    | OrderCancelRejected
    | OrderReplaceRejected
    | ExchangeStatus
    | FundingPayment
    | Financing
    | Settlement
    | Liquidation
    | MarginStatus
)


def prune_records(
    directory: str | os.PathLike[str], keep: str | os.PathLike[str] | None = None
) -> int:
    """Remove the simulated venue's record files in ``directory`` but ``keep``: each run starts a
    fresh simulated exchange session (a restarted exec within the run reloads its own file)."""
    d = Path(directory)
    n = 0
    for p in d.glob("*.venue"):
        if keep is None or p.resolve() != Path(keep).resolve():
            p.unlink(missing_ok=True)
            n += 1
    return n


def read_frames(data: bytes) -> tuple[list[Any], int]:
    """The whole frames of a record, in order, and how many bytes they take (a torn or
    undecodable tail is left out)."""
    dec = msgspec.msgpack.Decoder(RecordFrame)
    out: list[Any] = []
    pos = 0
    while pos + _REC_HDR.size <= len(data):
        (n,) = _REC_HDR.unpack_from(data, pos)
        end = pos + _REC_HDR.size + n
        if end > len(data):
            break
        try:
            out.append(dec.decode(data[pos + _REC_HDR.size : end]))
        except (msgspec.DecodeError, msgspec.ValidationError):
            break
        pos = end
    return out, pos


class SimRecord:
    """The append-only record file: ``frames`` holds what it had when opened (for ``restore``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        good = 0
        self.frames: list[Any] = []
        if path.exists():
            self.frames, good = read_frames(path.read_bytes())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(fd, good)  # a torn last frame (killed mid-write) is cut off
        os.lseek(fd, good, os.SEEK_SET)
        self._fd: int | None = fd
        #: encoded frames not yet written (``flush`` writes them)
        self.buf: list[bytes] = []
        self._enc = msgspec.msgpack.Encoder()

    def append(self, ev: object) -> None:
        """Buffer one frame (written by the next ``flush``)."""
        self.buf.append(self._enc.encode(ev))

    def flush(self) -> None:
        """Write the buffered frames (before the events they record are handed out)."""
        data = b"".join(_REC_HDR.pack(len(f)) + f for f in self.buf)
        self.buf.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]  # type: ignore[arg-type]

    def close(self) -> None:
        """Flush and close the file (a later SimRecord on the same path reloads it)."""
        if self._fd is not None:
            if self.buf:
                self.flush()
            os.close(self._fd)
            self._fd = None


def restore(sim: SimExchange, frames: list[Any]) -> None:
    """Rebuild ``sim``'s orders, fills, positions, statuses and counters from record frames."""
    pending: dict[int, NewOrder] = {}
    for ev in frames:
        _restore_one(sim, ev, pending)
    for rec in sim._orders.values():
        if rec.is_open:
            inst = sim._insts.get(rec.order.instrument_id)
            if inst is not None:
                sim._rest(inst, rec)
                if rec.expire_ns:
                    heapq.heappush(
                        sim._expiries, (rec.expire_ns, rec.prio, rec.order.client_order_id)
                    )
                sim.reloaded_orders += 1


def _restore_one(sim: SimExchange, ev: Any, pending: dict[int, NewOrder]) -> None:
    t = type(ev)
    if t is ExchangeStatus:
        sim._set_status(ev)
        return
    if t in ACCOUNT_EVENT_TYPES:  # what the market did (ts_event: market time, not the clock)
        if sim._accounts is not None:
            sim._accounts.restore(sim, ev)
        return
    coid = ev.client_order_id
    sim._clock = max(sim._clock, getattr(ev, "ts_event", 0))
    if t is NewOrder:
        pending[coid] = ev
        sim._seen_ids.add(coid)
        return
    rec = sim._orders.get(coid)
    if t is OrderAccepted:
        o = pending.pop(coid, None)
        if o is None:
            return
        px = 0 if o.order_type == OrderType.MARKET else o.px
        rec = SimOrder(o, ev.venue_order_id, o.side, px, o.qty, leaves=o.qty, is_open=True)
        if o.tif == TimeInForce.GTD:
            rec.expire_ns = o.expire_ns
        elif o.tif == TimeInForce.DAY:
            day_start = ev.ts_event - ev.ts_event % DAY_NS
            exp = day_start + sim.session_close_ns
            rec.expire_ns = exp if exp > ev.ts_event else exp + DAY_NS
        sim._orders[coid] = rec
        sim._next_vid = max(sim._next_vid, ev.venue_order_id)
    elif t is OrderRejected:  # (a refused cancel/replace is another type: the id is not used)
        sim._seen_ids.add(coid)
    elif t is OrderPartiallyFilled or t is OrderFilled:
        sim.fills.append(ev)
        sim._next_fill = max(sim._next_fill, ev.fill_id)
        iid = ev.instrument_id
        reduce_only = rec is not None and bool(rec.order.flags & OrderFlag.REDUCE_ONLY)
        sim.book_fill(iid, ev.side, ev.fill_px, ev.fill_qty, ev.fee, reduce_only)
        if rec is not None:
            rec.cum += ev.fill_qty
            rec.leaves = ev.leaves_qty
            if rec.leaves <= 0:
                rec.is_open = False
    elif rec is not None and (t is OrderCanceled or t is OrderExpired):
        rec.is_open = False
    elif rec is not None and t is OrderReplaced:
        rec.px, rec.leaves, rec.qty = ev.px, ev.qty, rec.cum + ev.qty
