"""A single-producer, multi-consumer ring of variable-length frames in POSIX shared memory.

Why this shape (DESIGN §3): every message between the engine's pinned processes crosses a ring,
so the common path must be a handful of memory operations, not a system call or a lock.

- Positions are monotonically increasing byte counts; ``pos & (capacity - 1)`` is the offset.
  Frames are ``[u32 length][u16 type][u16 mark][u64 seq][payload]``, 8-byte aligned; a frame
  never straddles the end of the data area (a padding frame, or an implicit skip when fewer than
  16 bytes remain, fills the tail).
- The producer writes the frame, then publishes its position with a store-release
  (``shm.kernels.commit``); a consumer load-acquires the position, then reads frames before it.
  It does the acquire once per *batch* of available frames, and hands its cursor back with a
  store-release once per batch too, so Python pays the numba dispatch rarely. On x86-64 Linux
  the one-message paths do both as plain word stores and loads (``shm.fastpath``: why TSO
  plus a sleeper-side ``membarrier`` is enough), so they pay no dispatch at all.
- Gating consumers: the producer never writes past ``min(gating cursors) + capacity``. It caches
  that limit and re-reads the cursors only when it would run out of room.
- Non-gating consumers may be lapped. The producer announces, before overwriting, how far it may
  write (the *claim*); a non-gating reader validates each frame against the claim after reading
  it, resynchronises to the producer's consistent (position, sequence) snapshot when lapped, and
  counts exactly ``sequence gap`` frames as missed.
- A consumer that dies stops gating the producer after a grace period; a producer that dies is
  noticed by consumers waiting on it. Corrupted frames raise ``RingCorruptedError``.
- Restarts, of either side, in any order: a re-attached reader resumes at its handed-back cursor
  and reads the sequence number there from the frame header (never assumes it); one the producer
  had dropped checks the producer's claim to know whether it was overrun (a Dekker hand-shake
  with the producer's claim renewal) and counts what it lost. A restarted producer resumes at
  the published (pos, seq), repairing a publication its predecessor died inside.

This module is the import point: ``Ring`` (the header, the consumer slots, the lifecycle) lives
here, its two roles in ``shm.producer`` and ``shm.consumer``, their failures in
``shm.ring_errors``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
import posix_ipc

from shm import kernels as K
from shm.consumer import Consumer
from shm.layout import (
    CONF_CAPACITY,
    CONF_DATA_OFFSET,
    CONF_MAX_CONSUMERS,
    CONF_MAX_PAYLOAD,
    PUB_CLOSED,
    PUB_PID,
    RING_LAYOUT_VERSION,
    SL_ATTACH_NS,
    SL_CURSOR,
    SL_MISSED,
    SL_NAME,
    SL_NAME_LEN,
    SL_PID,
    SL_RECEIVED,
    SL_STATE,
    SL_WAKE,
    SL_WAKE_LEN,
    SLOT_FREE,
    SLOT_GATING,
    SLOT_NONGATING,
    SLOT_SIZE,
    SLOT_STATE_NAMES,
    SLOTS,
    data_offset,
)
from shm.producer import Producer
from shm.region import KIND_RING, Region, RegionError, pid_alive_since
from shm.ring_errors import (
    FrameTooLargeError,
    ProducerDeadError,
    RingCorruptedError,
    RingError,
    RingFullError,
)
from shm.wait import WaitStrategy, make_wait

__all__ = [
    "Consumer",
    "FrameTooLargeError",
    "Producer",
    "ProducerDeadError",
    "Ring",
    "RingCorruptedError",
    "RingError",
    "RingFullError",
]


def _check_capacity(capacity: int) -> None:
    if capacity < 4096 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two >= 4096, not {capacity}")


class Ring:
    """A ring region: create it once (the supervisor), attach from any process, then take the
    producer role or a consumer slot."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.base = region.addr
        q = region.array[: region.size - (region.size % 8)].view(np.uint64)
        self._words = q
        self.capacity = int(q[CONF_CAPACITY // 8])
        self.max_consumers = int(q[CONF_MAX_CONSUMERS // 8])
        self.max_payload = int(q[CONF_MAX_PAYLOAD // 8])
        self.data_offset = int(q[CONF_DATA_OFFSET // 8])
        if (
            self.capacity < 4096
            or self.capacity & (self.capacity - 1)
            or self.data_offset + self.capacity != region.size
            or not (0 < self.max_consumers <= 64)
        ):
            raise RegionError(f"ring {region.name}: corrupted header (capacity {self.capacity})")
        self.data_addr = self.base + self.data_offset
        self.name = region.short_name
        self.engine_id = region.engine_id

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        engine_id: str,
        name: str,
        capacity: int = 1 << 20,
        *,
        max_consumers: int = 8,
        max_payload: int | None = None,
        consumers: Iterable[tuple[str, bool]] = (),
    ) -> Ring:
        """Create the region and its semaphores; pre-register named consumer slots.

        ``consumers`` lists (name, gating) pairs reserved now, with cursor 0, so that a gating
        consumer started later still sees every frame from the first one, and a restarted
        consumer resumes from its cursor.
        """
        _check_capacity(capacity)
        if not 0 < max_consumers <= 64:
            raise ValueError("max_consumers must be within 1..64")
        max_payload = max_payload or min(capacity // 4, 1 << 24)
        if max_payload > capacity // 2:
            raise ValueError("max_payload must be at most capacity / 2")
        off = data_offset(max_consumers)
        region = Region.create(engine_id, name, off + capacity, KIND_RING, RING_LAYOUT_VERSION)
        w = region.array[:off].view(np.uint64)
        w[CONF_CAPACITY // 8] = capacity
        w[CONF_MAX_CONSUMERS // 8] = max_consumers
        w[CONF_MAX_PAYLOAD // 8] = max_payload
        w[CONF_DATA_OFFSET // 8] = off
        ring = cls(region)
        for sem in ring._semaphore_names():
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(sem)
            posix_ipc.Semaphore(sem, posix_ipc.O_CREX, mode=0o600, initial_value=0).close()
        for i, (cname, gating) in enumerate(consumers):
            if i >= max_consumers:
                raise ValueError("more pre-registered consumers than max_consumers")
            ring._init_slot(i, cname, SLOT_GATING if gating else SLOT_NONGATING, pid=0)
        return ring

    @classmethod
    def attach(cls, engine_id: str, name: str, *, readonly: bool = False) -> Ring:
        """Map a ring; ``readonly`` for monitors (header and slots only: no role can be taken)."""
        return cls(
            Region.attach(engine_id, name, KIND_RING, RING_LAYOUT_VERSION, readonly=readonly)
        )

    def _semaphore_names(self) -> list[str]:
        return [f"{self.region.name}_{i}" for i in range(self.max_consumers)] + [
            f"{self.region.name}_p"
        ]

    def close(self) -> None:
        self._words = None  # type: ignore[assignment]
        self.region.close()

    def unlink(self) -> None:
        """Remove the region and its semaphores (the creator does this at shutdown)."""
        self.region.unlink()
        for sem in self._semaphore_names():
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(sem)

    # --- slots -----------------------------------------------------------------------------------
    def _slot_addr(self, i: int, field: int) -> int:
        return self.base + SLOTS + i * SLOT_SIZE + field

    def _slot_word(self, i: int, field: int) -> int:
        return int(self._words[(SLOTS + i * SLOT_SIZE + field) // 8])

    def _slot_name(self, i: int) -> str:
        o = SLOTS + i * SLOT_SIZE + SL_NAME
        return bytes(self.region.buf[o : o + SL_NAME_LEN]).rstrip(b"\0").decode(errors="replace")

    def _init_slot(self, i: int, name: str, state: int, pid: int) -> None:
        o = SLOTS + i * SLOT_SIZE
        raw = name.encode()[:SL_NAME_LEN].ljust(SL_NAME_LEN, b"\0")
        self.region.buf[o + SL_NAME : o + SL_NAME + SL_NAME_LEN] = raw
        self._set_wake_name(i, f"{self.region.name}_{i}")
        K.store_word(self.base + o + SL_ATTACH_NS, time.time_ns())
        K.store_word(self.base + o + SL_PID, pid)
        K.store_word(self.base + o + SL_STATE, state)

    def _slot_owner_alive(self, i: int) -> tuple[int, bool]:
        """(pid, alive): the slot's pid, and whether it is still the process that attached (its
        stamp is written before its pid, so a new pid is read with its own stamp)."""
        pid = K.load_word(self._slot_addr(i, SL_PID))
        return pid, pid_alive_since(pid, K.load_word(self._slot_addr(i, SL_ATTACH_NS)))

    def _set_wake_name(self, i: int, sem_name: str) -> None:
        raw = sem_name.encode()
        if len(raw) > SL_WAKE_LEN:
            raise ValueError(f"semaphore name {sem_name!r} is longer than {SL_WAKE_LEN} bytes")
        o = SLOTS + i * SLOT_SIZE + SL_WAKE
        self.region.buf[o : o + SL_WAKE_LEN] = raw.ljust(SL_WAKE_LEN, b"\0")

    def _wake_name(self, i: int) -> str:
        o = SLOTS + i * SLOT_SIZE + SL_WAKE
        name = bytes(self.region.buf[o : o + SL_WAKE_LEN]).rstrip(b"\0").decode(errors="replace")
        return name or f"{self.region.name}_{i}"

    def slots(self) -> list[dict[str, Any]]:
        """Every used consumer slot: name, state, pid, cursor, received, missed, lag."""
        pub = K.published(self.base)
        out = []
        for i in range(self.max_consumers):
            st = self._slot_word(i, SL_STATE)
            if st == SLOT_FREE:
                continue
            cur = self._slot_word(i, SL_CURSOR)
            out.append(
                {
                    "slot": i,
                    "name": self._slot_name(i),
                    "state": SLOT_STATE_NAMES.get(st, str(st)),
                    "pid": self._slot_word(i, SL_PID),
                    "cursor": cur,
                    "lag_bytes": max(0, pub - cur),
                    "received": self._slot_word(i, SL_RECEIVED),
                    "missed": self._slot_word(i, SL_MISSED),
                }
            )
        return out

    @property
    def published_pos(self) -> int:
        return K.published(self.base)

    @property
    def published_seq(self) -> int:
        """Frames published so far (the next frame's sequence number), exact: the walk from the
        producer's checkpoint to its position (``shm.kernels.snapshot``)."""
        seq = K.snapshot(self.base)[1]
        if seq < 0:
            raise RingCorruptedError(f"ring {self.name}: its frames do not lead to its position")
        return seq

    @property
    def producer_pid(self) -> int:
        return int(self._words[PUB_PID // 8])

    @property
    def closed(self) -> bool:
        return bool(self._words[PUB_CLOSED // 8])

    # --- roles -----------------------------------------------------------------------------------
    def producer(self, wait: str | WaitStrategy = "backoff", **kw: Any) -> Producer:
        return Producer(self, make_wait(wait), **kw)

    def consumer(
        self,
        name: str,
        *,
        gating: bool = True,
        wait: str | WaitStrategy = "backoff",
        decoder: msgspec.msgpack.Decoder | None = None,
        from_start: bool = False,
    ) -> Consumer:
        """A reader in slot ``name``. ``decoder`` decodes what ``poll`` / ``poll_batch`` /
        ``read`` return (the caller's: the transport knows no message types); without one the
        consumer reads raw frames only (``poll_raw``, ``poll_raw_batch``)."""
        return Consumer(self, name, gating, make_wait(wait), decoder, from_start)
