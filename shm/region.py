"""Named POSIX shared-memory regions: create, attach, validate, unlink, and clean up after crashes.

Every region starts with the same 128-byte header (magic, kind, layout version, size, creator pid,
creation time, engine id, name) so any process can tell what a region is, whether it was made by
a compatible build, and whether its creator is still alive. Region names carry the engine id so
two engines on one host never collide, and so a restarted engine can find and remove what a
crashed run of the same engine left behind.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import posix_ipc
import psutil

MAGIC = 0x4F4B4B45474B4753  # b"SGKGEKKO" little-endian: any other value means "not ours"
HEADER_SIZE = 128
CACHE_LINE = 128  # Apple silicon prefetches pairs of 64-byte lines: pad hot words to 128

KIND_RING = 1
KIND_TABLE = 2
KIND_METRICS = 3
KIND_NAMES = {KIND_RING: "ring", KIND_TABLE: "table", KIND_METRICS: "metrics"}

# header: magic u64, kind u32, layout u32, size u64, creator_pid u64, created_ns u64,
#         (pad to 64) engine_id 32 bytes, name 32 bytes
_HDR = struct.Struct("<QIIQQQ24x32s32s")
assert _HDR.size == HEADER_SIZE

PREFIX = "gk_"
SHM_DIR = Path("/dev/shm")


class RegionError(RuntimeError):
    """A region is missing, not ours, corrupted, or of another layout version."""


class LayoutVersionError(RegionError):
    """The region was created by a build with a different memory layout."""


def region_name(engine_id: str, name: str) -> str:
    """The POSIX name of region ``name`` of engine ``engine_id`` (``/gk_<engine>_<name>``).

    macOS limits shared-memory names to 31 characters, so keep engine ids and names short.
    """
    if (
        not engine_id.replace("-", "").isalnum()
        or not name.replace("_", "").replace("-", "").isalnum()
    ):
        raise ValueError(f"engine id and region name must be alphanumeric: {engine_id!r}, {name!r}")
    full = f"/{PREFIX}{engine_id}_{name}"
    if sys.platform == "darwin" and len(full) > 31:
        raise ValueError(f"shared-memory name {full!r} is longer than macOS allows (31)")
    return full


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie — dead but not yet reaped — counts as dead)."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def pid_alive_since(pid: int, since_ns: int) -> bool:
    """True if ``pid`` is a live process that already ran at ``since_ns`` (wall clock, ns).

    Pids are reused (32768 of them by default on Linux): a process started after the stamp is a
    newer one with the same pid, not the one that stamped it. ``since_ns`` 0 skips the check.
    """
    if not pid_alive(pid):
        return False
    if since_ns <= 0:
        return True
    try:
        started = psutil.Process(pid).create_time()  # seconds, 10 ms resolution
    except (psutil.Error, ProcessLookupError):
        return False
    return started <= since_ns / 1e9 + 1.0  # a second of slack for clock steps and rounding


class Region:
    """One mapped shared-memory region. ``addr`` is the mapping's address for the numba kernels."""

    def __init__(self, name: str, shm: posix_ipc.SharedMemory, mm: mmap.mmap, created: bool):
        self.name = name
        self._shm = shm
        self.mm = mm
        self.size = len(mm)
        self.created = created
        self.array = np.frombuffer(mm, dtype=np.uint8)
        self.addr = int(self.array.ctypes.data)
        self.buf = memoryview(mm)
        (
            self.kind,
            self.layout,
            self.creator_pid,
            self.created_ns,
            self.engine_id,
            self.short_name,
        ) = (
            0,
            0,
            0,
            0,
            "",
            "",
        )

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, engine_id: str, name: str, size: int, kind: int, layout: int, *, replace: bool = True
    ) -> Region:
        """Create (or, with ``replace``, recreate) a zero-filled region and write its header."""
        full = region_name(engine_id, name)
        size = max(size, HEADER_SIZE)
        if replace:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(full)
        shm = posix_ipc.SharedMemory(full, posix_ipc.O_CREX, mode=0o600, size=size)
        mm = mmap.mmap(shm.fd, size)
        shm.close_fd()
        region = cls(full, shm, mm, created=True)
        region.kind, region.layout = kind, layout
        region.creator_pid, region.created_ns = os.getpid(), time.time_ns()
        region.engine_id, region.short_name = engine_id, name
        _HDR.pack_into(
            mm,
            0,
            0,  # magic last: a half-written header is never mistaken for a valid one
            kind,
            layout,
            size,
            region.creator_pid,
            region.created_ns,
            engine_id.encode()[:32],
            name.encode()[:32],
        )
        struct.pack_into("<Q", mm, 0, MAGIC)
        return region

    @classmethod
    def attach(
        cls, engine_id: str, name: str, kind: int, layout: int, *, readonly: bool = False
    ) -> Region:
        """Map an existing region, refusing one of another kind, layout or a corrupted header.

        ``readonly`` maps it PROT_READ (monitors: a stray write faults instead of corrupting)."""
        full = region_name(engine_id, name)
        try:
            shm = posix_ipc.SharedMemory(full)
        except posix_ipc.ExistentialError:
            raise RegionError(f"shared-memory region {full} does not exist") from None
        if shm.size < HEADER_SIZE:
            shm.close_fd()
            raise RegionError(f"region {full} is too small ({shm.size} bytes) to be a Gekko region")
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        mm = mmap.mmap(shm.fd, shm.size, prot=prot)
        shm.close_fd()
        region = cls(full, shm, mm, created=False)
        try:
            region._validate(kind, layout)
        except RegionError:
            region.close()
            raise
        return region

    def _validate(self, kind: int, layout: int) -> None:
        magic, k, lay, size, pid, cns, eng, nm = _HDR.unpack_from(self.mm, 0)
        if magic != MAGIC:
            raise RegionError(
                f"region {self.name}: bad magic {magic:#x} (corrupted or not a Gekko region)"
            )
        if k != kind:
            raise RegionError(
                f"region {self.name}: is a {KIND_NAMES.get(k, k)} region, expected {KIND_NAMES.get(kind, kind)}"
            )
        if lay != layout:
            raise LayoutVersionError(
                f"region {self.name}: layout version {lay}, this build expects {layout}; "
                "stop the engine that created it (or remove the region) and start again"
            )
        if size != self.size:
            raise RegionError(
                f"region {self.name}: header says {size} bytes, mapping has {self.size}"
            )
        self.kind, self.layout, self.creator_pid, self.created_ns = k, lay, pid, cns
        self.engine_id = eng.rstrip(b"\0").decode(errors="replace")
        self.short_name = nm.rstrip(b"\0").decode(errors="replace")

    def close(self) -> None:
        """Unmap (other processes keep their mappings). Views into the buffer must be gone."""
        with contextlib.suppress(Exception):
            self.buf.release()
        self.array = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()

    def unlink(self) -> None:
        """Remove the name; the memory is freed once every process has unmapped it."""
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(self.name)


def read_header(full_name: str) -> dict[str, object] | None:
    """The header of region ``full_name`` as a dict, or None if it is absent or not ours."""
    try:
        shm = posix_ipc.SharedMemory(full_name)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError, ValueError):
        return None
    try:
        if shm.size < HEADER_SIZE:
            return None
        with mmap.mmap(shm.fd, HEADER_SIZE, prot=mmap.PROT_READ) as mm:
            magic, k, lay, size, pid, cns, eng, nm = _HDR.unpack_from(mm, 0)
    finally:
        shm.close_fd()
    if magic != MAGIC:
        return None
    return {
        "kind": k,
        "layout": lay,
        "size": size,
        "creator_pid": pid,
        "created_ns": cns,
        "engine_id": eng.rstrip(b"\0").decode(errors="replace"),
        "name": nm.rstrip(b"\0").decode(errors="replace"),
    }


def list_regions(engine_id: str | None = None) -> list[str]:
    """Names (``/gk_...``) of Gekko regions on this host; Linux only (macOS cannot list them)."""
    if not SHM_DIR.is_dir():
        return []
    prefix = PREFIX + (f"{engine_id}_" if engine_id else "")
    return sorted("/" + p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def list_semaphores(engine_id: str | None = None) -> list[str]:
    """Names of Gekko semaphores on this host (Linux keeps them as /dev/shm/sem.NAME)."""
    if not SHM_DIR.is_dir():
        return []
    prefix = "sem." + PREFIX + (f"{engine_id}_" if engine_id else "")
    return sorted("/" + p.name[4:] for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def cleanup_stale(engine_id: str, names: Iterable[str] = ()) -> list[str]:
    """Remove regions (and their semaphores) of ``engine_id`` whose creator process is gone.

    On Linux every region of the engine is found by listing /dev/shm; elsewhere pass the short
    ``names`` the engine uses. A region whose creator is alive is left alone: it belongs to a
    running engine. Returns the names removed.
    """
    candidates = set(list_regions(engine_id))
    candidates.update(region_name(engine_id, n) for n in names)
    removed: list[str] = []
    for full in sorted(candidates):
        hdr = read_header(full)
        if hdr is not None and pid_alive(int(hdr["creator_pid"])):  # type: ignore[arg-type]
            continue
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(full)
            removed.append(full)
        for sem in list_semaphores(engine_id):
            if sem.startswith(full + "_"):
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_semaphore(sem)
    return removed
