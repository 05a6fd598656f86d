"""Proof that a pid is the process we think it is.

A pid alone proves nothing: after a crash the pid file stays behind and the kernel hands the
number to the next process that starts. So every record that names a process of ours (the
supervisor's pid file, the owner of an embedded PostgreSQL or Redis) stores the pid *and* the
process's start time (``psutil.Process.create_time``: fixed for the life of a process, different
for whoever reuses the pid). A record is believed only while both still match; anything else
(no process, another start time, an unreadable or old-format file) is "not ours" and is never
signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

#: start times are floats derived from the boot time and clock ticks: equal for one process
_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the live process ``pid``, or None if there is none."""
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.Error, ValueError):
            return None

    @classmethod
    def current(cls) -> ProcessIdentity:
        me = cls.of(os.getpid())
        assert me is not None
        return me

    def alive(self) -> bool:
        """The process still runs (not a zombie) and is the one that was recorded."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > _TOLERANCE_S:
                return False
            return p.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, ValueError):
            return False

    def send_signal(self, sig: int) -> None:
        """Signal this process if it is still the recorded one, else ``ProcessLookupError``.

        On Linux through a pidfd opened *before* the check, so the pid cannot be reused between
        the check and the signal; elsewhere the window is the few microseconds in between."""
        if hasattr(os, "pidfd_open"):
            fd = os.pidfd_open(self.pid)
            try:
                if not self.alive():
                    raise ProcessLookupError(f"pid {self.pid} is no longer the recorded process")
                signal.pidfd_send_signal(fd, sig)
            finally:
                os.close(fd)
            return
        if not self.alive():
            raise ProcessLookupError(f"pid {self.pid} is no longer the recorded process")
        os.kill(self.pid, sig)


def write_record(path: Path, ident: ProcessIdentity, **extra: Any) -> None:
    """Write ``{pid, create_time, **extra}`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**asdict(ident), **extra}))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_record(path: Path) -> tuple[ProcessIdentity | None, dict[str, Any]]:
    """The identity in ``path`` and the whole record; (None, {}) when missing, (None, {"raw":
    text}) when it is not a record of this format (e.g. a bare pid from an older version)."""
    try:
        text = path.read_text()
    except OSError:
        return None, {}
    try:
        rec = json.loads(text)
        return ProcessIdentity(int(rec["pid"]), float(rec["create_time"])), rec
    except (ValueError, KeyError, TypeError):
        return None, {"raw": text.strip()[:40]}


def remove_record_if_mine(path: Path, ident: ProcessIdentity) -> None:
    """Remove ``path`` if it still names ``ident`` (someone else's record is left alone)."""
    got, _ = read_record(path)
    if got is not None and got.pid == ident.pid:
        with contextlib.suppress(OSError):
            path.unlink()
