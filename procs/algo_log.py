"""Exec's write-ahead log of execution-algorithm parents and their children.

Why it exists: child orders never travel on a ring (exec makes them and sends them to the
venue itself), so neither the record nor the venue can say which parent a child belongs to.
``AlgoEngine.on_record`` hands every accepted parent (with ``algo`` / ``algo_params``, exec's
clock at acceptance and, for a VWAP on recorded volume, the profile it was scheduled on), every
amend of a parent (its new quantity and limit and the schedule's rebase) and every child (with
its parent's id) to ``AlgoLog.append`` *before* the child leaves exec or the amend takes effect:
a child at the venue is always in the log, and so is the parent as last amended. After a restart,
``load`` gives ``engine.algos.rebuild_parents`` what it needs to rebuild the parents.

Format: ``var/algo/<engine>-<run>.algo``, frames ``[u32 length][u32 crc32][MessagePack]`` of
``Entry``. Appends are plain ``write`` calls (no fsync): they survive the crash of the process,
which is what an exec restart recovers from (the simulated venue's record makes the same
choice). A torn last frame (killed mid-write) ends the reading and is cut off at the next open.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from engine.algos.recovery import AmendSnapshot, LoggedParent
from engine.messages import NewOrder
from procs.framed_file import append_frame, open_for_append, read_frames

log = logging.getLogger("gekko.exec")

_MAX_FRAME = 1 << 20


class Entry(msgspec.Struct, array_like=True):
    """A parent as accepted (``order.client_order_id == parent``), an amend of it (``amend``
    set; ``order`` is then the parent as amended), or a child of ``parent``.

    ``amend`` and ``profile`` are trailing fields with defaults: logs written before they
    existed still load."""

    parent: int
    ts: int  # exec's clock when the parent was accepted / amended / the child sent
    order: NewOrder
    amend: AmendSnapshot | None = None
    #: a VWAP on recorded volume: the profile it was accepted with (weights, period, origin)
    profile: tuple[list[float], int, int] | None = None


def algo_log_path(cfg: Any, run_id: int) -> Path | None:
    """Where run ``run_id``'s algo log lives (None outside a supervised run)."""
    if not run_id:
        return None
    return Path(cfg.engine.var_dir) / "algo" / f"{cfg.engine.id}-{run_id}.algo"


class AlgoLog:
    """The append side (exec, one writer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = open_for_append(self.path, _MAX_FRAME)  # a torn tail is cut off
        self._enc = msgspec.msgpack.Encoder()
        self.appended = 0

    def append(
        self,
        parent: int,
        order: NewOrder,
        ts: int,
        *,
        amend: AmendSnapshot | None = None,
        profile: tuple[list[float], int, int] | None = None,
    ) -> None:
        """``AlgoEngine.on_record``: one entry, written before the caller goes on."""
        f = self._enc.encode(Entry(parent, ts, order, amend, profile))
        append_frame(self._fd, f)
        self.appended += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def load(path: str | Path | None) -> tuple[list[LoggedParent], dict[int, list[NewOrder]]]:
    """(parents as ``LoggedParent``: order as accepted, accepted at, its amends in order, a
    recorded VWAP profile; parent id -> children in sending order)."""
    starts: list[LoggedParent] = []
    children: dict[int, list[NewOrder]] = {}
    if path is None:
        return starts, children
    dec = msgspec.msgpack.Decoder(Entry)
    seen: set[int] = set()
    index: dict[int, int] = {}  # parent id -> its place in starts
    for f in read_frames(path, _MAX_FRAME):
        try:
            e = dec.decode(f)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("algo log %s: an entry that does not decode was skipped", path)
            continue
        coid = e.order.client_order_id
        if e.amend is not None:
            i = index.get(coid)
            if i is None or coid != e.parent:
                log.warning("algo log %s: an amend of unknown parent %d was skipped", path, coid)
                continue
            lp = starts[i]
            starts[i] = lp._replace(amends=(*lp.amends, e.amend))
            continue
        if coid in seen:
            continue
        seen.add(coid)
        if coid == e.parent:
            index[coid] = len(starts)
            starts.append(LoggedParent(e.order, e.ts, (), e.profile))
        else:
            children.setdefault(e.parent, []).append(e.order)
    return starts, children


def prune(directory: str | Path, engine_id: str, keep: Path) -> int:
    """Remove this engine's algo logs of earlier runs (a new run starts with no parent)."""
    n = 0
    for p in Path(directory).glob(f"{engine_id}-*.algo"):
        if p != keep:
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n
