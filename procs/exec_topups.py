"""Which venue orders are exec's second orders of list legs ("top-ups", ``engine.exec_topups``):
one small frame per top-up (its id, its leg, its lots), written before it is sent, so a
restarted exec rebuilds the leg as one (fills, cancel, the list's rules over both orders).

Why a file of its own and not the exec journal: the journal's entries tile the ``events`` ring
(each names the ring's sequence number, recovery checks there is no gap), and the top-up's id is
never published (upstream sees the leg's ``OrderReplaced``). Why at all: without it, a top-up
open at the venue is an order reconciliation does not know. Written first, then sent: a frame
whose order never reached the venue is harmless (``TopUps.restore`` takes only what the venue
has open); appends are plain writes, as the journal's and ``procs.exec_trails``'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from pathlib import Path
from typing import Any

from procs.framed_file import append_frame, open_for_append, read_frames

log = logging.getLogger("gekko.recovery")

_FRAME = struct.Struct("<qqq")


def exec_topups_path(cfg: Any, rid: int) -> Path | None:
    """Run ``rid``'s top-up file, beside exec's journal (None outside a supervised run)."""
    if not rid:
        return None
    return Path(cfg.engine.var_dir) / "exec" / f"{cfg.engine.id}-{rid}.topups"


class TopUpLog:
    """The append side (``TopUps.on_send`` calls ``append``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = open_for_append(self.path, _FRAME.size)
        self.failed = 0

    def append(self, xid: int, leg: int, qty: int) -> None:
        try:
            append_frame(self._fd, _FRAME.pack(xid, leg, qty))
        except OSError as exc:  # a lost frame: after a restart that top-up is an unknown order
            self.failed += 1
            if self.failed == 1:
                log.error("exec top-up log %s: write failed (%s)", self.path, exc)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_topup_log(cfg: Any, rid: int, incarnation: int) -> TopUpLog | None:
    """The top-up log of run ``rid`` (None outside a run, or when it cannot be opened). The
    first incarnation of a run removes earlier runs' files."""
    path = exec_topups_path(cfg, rid)
    if path is None:
        return None
    if incarnation == 0:
        for old in path.parent.glob(f"{cfg.engine.id}-*.topups"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    try:
        return TopUpLog(path)
    except OSError as exc:
        log.error("exec: no top-up log at %s (%s)", path, exc)
        return None


def load_topups(path: str | Path | None) -> dict[int, tuple[int, int]]:
    """Top-up id -> (leg, lots), every frame read."""
    out: dict[int, tuple[int, int]] = {}
    if path is None:
        return out
    for f in read_frames(path, _FRAME.size):
        if len(f) == _FRAME.size:
            xid, leg, qty = _FRAME.unpack(f)
            out[xid] = (leg, qty)
    return out
