"""The session-end check that the suite leaves nothing behind: no process, no shm region.

Processes are recognised three ways, because none alone sees them all: descent from the pytest
process (forked children); a token in the environment, inherited through every exec (`gekko`
subprocesses and their workers, even once reparented to init); and, for servers that daemonise
and overwrite their environment with their process title (redis-server, postgres), a working
directory or command line inside a directory this session made (pytest's base temp, or one a
fixture registered with ``register_dir``).
Shared-memory regions and semaphores count when they appeared during the session and their
creator is gone or was ours; a region of a live process outside the session (another engine on
a shared development machine) is not ours to judge.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field

import psutil

TOKEN_VAR = "GEKKO_TEST_SESSION"
#: a file every process of the session appends its server directories to (pytest-xdist: the
#: workers' servers are the controller's to judge once every worker has finished)
DIRS_VAR = "GEKKO_TEST_DIRS_FILE"
SHM_DIR = "/dev/shm"
PREFIX = "gk_"


def install_token() -> str:
    """Mark every process the tests start from now on (idempotent across conftest imports)."""
    return os.environ.setdefault(TOKEN_VAR, uuid.uuid4().hex)


def _shm_names() -> set[str]:
    try:
        return {
            n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX) or n.startswith("sem." + PREFIX)
        }
    except OSError:
        return set()


_DIRS: set[str] = set()


def register_dir(path: os.PathLike[str] | str) -> None:
    """A directory a fixture made for a server: a process living in it is the session's."""
    real = os.path.realpath(path)
    _DIRS.add(real)
    shared = os.environ.get(DIRS_VAR)
    if shared:
        with contextlib.suppress(OSError), open(shared, "a", encoding="utf-8") as f:
            f.write(real + "\n")


def registered_dirs() -> set[str]:
    """Every directory registered by any process of the session (this one's and the file's)."""
    found = set(_DIRS)
    shared = os.environ.get(DIRS_VAR)
    if shared:
        with contextlib.suppress(OSError), open(shared, encoding="utf-8") as f:
            found |= {line.strip() for line in f if line.strip()}
    return found


def _in_dirs(proc: psutil.Process, dirs: set[str]) -> bool:
    try:
        where = [proc.cwd().removesuffix(" (deleted)"), *proc.cmdline()]
    except (psutil.Error, OSError):
        return False
    return any(w == d or w.startswith(d + "/") or f"{d}/" in w for w in where for d in dirs)


def _is_ours(proc: psutil.Process, token: str, me: int, dirs: set[str] = frozenset()) -> bool:
    if proc.pid == me:
        return False
    try:
        if proc.environ().get(TOKEN_VAR) == token:
            return True
    except (psutil.Error, OSError):
        pass
    return bool(dirs) and _in_dirs(proc, dirs)


@dataclass
class Snapshot:
    """What existed when the session started, and the directories the session made since."""

    token: str
    pids: set[int] = field(default_factory=set)
    shm: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)

    @classmethod
    def take(cls, token: str) -> Snapshot:
        return cls(token, set(psutil.pids()), _shm_names())


def session_processes(snap: Snapshot) -> list[psutil.Process]:
    """Live processes started by the tests (zombies excluded: they run nothing)."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(me).children(recursive=True):
            found[child.pid] = child
    dirs = snap.dirs | registered_dirs()
    for proc in psutil.process_iter():
        if proc.pid not in snap.pids and _is_ours(proc, snap.token, me, dirs):
            found[proc.pid] = proc
    alive = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _engine_of(name: str) -> str:
    return name.removeprefix("sem.").removeprefix(PREFIX).split("_", 1)[0]


def _foreign_engines(snap: Snapshot, names: set[str]) -> set[str]:
    """Engine ids whose regions belong to a live process outside this session."""
    from shm.region import read_header

    me = os.getpid()
    foreign = set()
    for name in names:
        if name.startswith("sem."):
            continue
        hdr = read_header("/" + name)
        if hdr is None:
            continue
        with contextlib.suppress(psutil.Error):
            creator = psutil.Process(int(hdr["creator_pid"]))  # type: ignore[arg-type]
            ours = creator.pid == me or _is_ours(
                creator, snap.token, me, snap.dirs | registered_dirs()
            )
            if not ours and creator.status() != psutil.STATUS_ZOMBIE:
                foreign.add(_engine_of(name))
    return foreign


def session_regions(snap: Snapshot) -> list[str]:
    now = _shm_names()
    foreign = _foreign_engines(snap, now)  # all regions: a foreign engine may predate the session
    new = now - snap.shm
    return sorted(n for n in new if _engine_of(n) not in foreign)


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]} (cwd {proc.cwd()})"
    except psutil.Error:
        return f"pid {proc.pid}"


def find_leaks(snap: Snapshot, grace_s: float = 10.0) -> tuple[list[str], list[str]]:
    """Leaked processes and regions, after a bounded grace for servers that are still stopping."""
    deadline = time.monotonic() + grace_s
    while True:
        procs, regions = session_processes(snap), session_regions(snap)
        if (not procs and not regions) or time.monotonic() > deadline:
            return [describe(p) for p in procs], regions
        time.sleep(0.2)


def kill_leaked(snap: Snapshot) -> None:
    """Kill what leaked, so one failing run does not leave servers listening for the next.

    Regions are only reported: one whose creator is gone may still be another session's, and
    the next start of its engine removes it as stale.
    """
    for proc in session_processes(snap):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
