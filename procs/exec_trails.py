"""Where exec's trailing stops had trailed to: one small frame per move of a trailing order's
level (order id, mark, level), so a restarted exec goes on trailing from there.

Why a file of its own and not the exec journal: the journal's entries tile the ``events``
ring (each names the ring's sequence number, recovery checks there is no gap), and a trail's
move publishes nothing upstream. Why at all: the mark is the best price seen since the order
was armed; market data cannot tell it again after a restart, and a stop that restarted from the
market would loosen — against the one rule of a trailing stop (``engine.emulation``). The last
frame of an order wins (``load_trails``); ``ExecEngine.restore_trails`` keeps the tighter of it
and what the market gives now. Appends are plain writes, as the journal's (they survive the
process, which is what an exec restart recovers from).
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


def exec_trails_path(cfg: Any, rid: int) -> Path | None:
    """Run ``rid``'s trail file, beside exec's journal (None outside a supervised run)."""
    if not rid:
        return None
    return Path(cfg.engine.var_dir) / "exec" / f"{cfg.engine.id}-{rid}.trails"


class TrailLog:
    """The append side (exec's emulator calls ``append`` through ``StopEmulator.on_trail``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = open_for_append(self.path, _FRAME.size)
        self.failed = 0

    def append(self, coid: int, mark: int, stop_px: int) -> None:
        try:
            append_frame(self._fd, _FRAME.pack(coid, mark, stop_px))
        except OSError as exc:  # a lost move costs a looser stop after a restart, not a halt
            self.failed += 1
            if self.failed == 1:
                log.error("exec trail log %s: write failed (%s)", self.path, exc)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_trail_log(cfg: Any, rid: int, incarnation: int) -> TrailLog | None:
    """The trail log of run ``rid`` (None outside a run, or when it cannot be opened: trailing
    goes on, a restart then trails from the market). The first incarnation of a run removes
    earlier runs' files."""
    path = exec_trails_path(cfg, rid)
    if path is None:
        return None
    if incarnation == 0:
        for old in path.parent.glob(f"{cfg.engine.id}-*.trails"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    try:
        return TrailLog(path)
    except OSError as exc:
        log.error("exec: no trail log at %s (%s)", path, exc)
        return None


def load_trails(path: str | Path | None) -> dict[int, tuple[int, int]]:
    """Order id -> (mark, level), the last frame of each."""
    out: dict[int, tuple[int, int]] = {}
    if path is None:
        return out
    for f in read_frames(path, _FRAME.size):
        if len(f) == _FRAME.size:
            coid, mark, stop = _FRAME.unpack(f)
            out[coid] = (mark, stop)
    return out
