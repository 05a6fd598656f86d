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
  store-release once per batch too, so Python pays the numba dispatch rarely.
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
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np
import posix_ipc

from shm import kernels as K
from shm.layout import (
    CLAIM,
    CONF_CAPACITY,
    CONF_DATA_OFFSET,
    CONF_MAX_CONSUMERS,
    CONF_MAX_PAYLOAD,
    FRAME_HEADER,
    FRAME_MARK,
    MAX_TYPE,
    PSLEEP,
    PUB_CLOSED,
    PUB_HEARTBEAT_NS,
    PUB_PID,
    PUB_POS,
    PUB_SEQ,
    RING_LAYOUT_VERSION,
    SL_ATTACH_NS,
    SL_CURSOR,
    SL_MISSED,
    SL_NAME,
    SL_NAME_LEN,
    SL_PID,
    SL_RECEIVED,
    SL_SEQ,
    SL_SLEEPING,
    SL_STATE,
    SL_WAKE,
    SL_WAKE_LEN,
    SLOT_CLOSED,
    SLOT_DEAD,
    SLOT_FREE,
    SLOT_GATING,
    SLOT_NONGATING,
    SLOT_SIZE,
    SLOT_STATE_NAMES,
    SLOTS,
    TYPE_PAD,
    data_offset,
    frame_size,
)
from shm.region import KIND_RING, Region, RegionError, pid_alive, pid_alive_since
from shm.wait import WaitStrategy, make_wait

log = logging.getLogger("gekko.shm.ring")


class RingError(RuntimeError):
    """Base class of ring failures."""


class RingCorruptedError(RingError):
    """A frame failed validation: the ring's memory is not what a producer wrote."""


class FrameTooLargeError(RingError, ValueError):
    """A frame larger than the ring's maximum payload."""


class RingFullError(RingError, TimeoutError):
    """The producer waited past its timeout for gating consumers to make room."""


class ProducerDeadError(RingError):
    """The producer's process is gone and nothing more will arrive."""


class RingClosedError(RingError):
    """The producer closed the ring and every frame has been read."""


_commit = K.commit


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
    def attach(cls, engine_id: str, name: str) -> Ring:
        return cls(Region.attach(engine_id, name, KIND_RING, RING_LAYOUT_VERSION))

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
        return Consumer(self, name, gating, make_wait(wait), decoder, from_start)


class Producer:
    """The ring's one writer. ``publish`` encodes a msgspec Struct straight into the ring."""

    def __init__(
        self,
        ring: Ring,
        wait: WaitStrategy,
        *,
        timeout_s: float = 5.0,
        dead_reader_grace_s: float = 2.0,
        type_tags: dict[type, int] | None = None,
    ) -> None:
        self.ring = ring
        self.wait = wait
        self.timeout_s = timeout_s
        self.dead_reader_grace_s = dead_reader_grace_s
        self._base = ring.base
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._max_payload = ring.max_payload
        self._nslots = ring.max_consumers
        self._data = ring.region.buf[ring.data_offset : ring.data_offset + ring.capacity]
        self._q = self._data.cast("Q")
        pos, seq = K.snapshot(self._base)
        if pos < 0:
            pos, seq = self._recover_publication()
        self.pos = pos
        self.seq = seq
        self._limit = 0
        self._claim = int(ring._words[CLAIM // 8])
        self._claim_chunk = self._cap // 8
        self._buf = bytearray(256)
        self._enc = msgspec.msgpack.Encoder()
        self._tags: dict[type, int] = dict(type_tags or {})
        self._pack_hdr = struct.Struct("<IHHQ").pack_into
        self._sems: dict[str, posix_ipc.Semaphore] = {}
        self._space_sem: posix_ipc.Semaphore | None = None
        self._dead_since: dict[int, float] = {}
        self._seq0 = self.seq
        self._hot = 0  # min(limit, claim): below it a frame needs no slow-path check
        self.full_waits = 0
        self.dead_readers_dropped = 0
        K.store_word(self._base + PUB_PID, os.getpid())
        K.store_word(self._base + PUB_CLOSED, 0)
        self._refresh_limit()
        # first calls of a numba kernel load (or compile) it: pay that now, not on the first frame
        K.commit(self._base, self.pos, self.seq)  # republishes the same (pos, seq): harmless

    def _recover_publication(self) -> tuple[int, int]:
        """The previous producer died inside ``commit``: find the (pos, seq) it was publishing.

        ``commit`` stores the sequence, then the position. Killed between the two, the ring says
        (old position, new sequence): the frames from the old position on, complete and in
        order, lead to the new one. Killed before or after, the pair is consistent as it stands.
        """
        w = self.ring._words
        pos, seq = int(w[PUB_POS // 8]), int(w[PUB_SEQ // 8])
        end = self._end_of_sequence(pos, seq)
        K.unstick_version(self._base)
        log.warning(
            "ring %s: its previous producer (pid %d) died while publishing; resuming after frame "
            "%d at position %d",
            self.ring.name,
            self.ring.producer_pid,
            seq - 1,
            end,
        )
        return end, seq

    def _end_of_sequence(self, pos: int, seq: int) -> int:
        """Where the frame numbered ``seq - 1`` ends, following complete frames from ``pos``
        (``pos`` itself when the frame there already carries ``seq``, or when none leads there
        within less than a lap: what lies there is from an earlier lap, or unpublished)."""
        q, cap, mask = self._q, self._cap, self._mask
        at, expect = pos, -1
        while at < pos + cap:
            off = at & mask
            room = cap - off
            if room < FRAME_HEADER:
                at += room
                continue
            w0 = int(q[off >> 3])
            length, ftype = w0 & 0xFFFFFFFF, (w0 >> 32) & 0xFFFF
            total = frame_size(length)
            if (w0 >> 48) != FRAME_MARK or total > room:
                break
            if ftype == TYPE_PAD:
                at += room
                continue
            fseq = int(q[(off >> 3) + 1])
            if fseq >= seq or (expect >= 0 and fseq != expect):
                break
            at, expect = at + total, fseq + 1
            if expect == seq and at < pos + cap:
                return at
        return pos

    # --- space -----------------------------------------------------------------------------------
    def _refresh_limit(self) -> int:
        self._limit = K.min_gating(self._base, self._nslots, self.pos) + self._cap
        self._hot = min(self._limit, self._claim)
        return self._limit

    def _announce_claim(self, claim: int) -> None:
        """Announce ``claim``, then re-read the gating cursors (one numba call).

        Re-reading here, at every claim renewal (each ``capacity / 8`` bytes), and not only when
        the cached limit runs out, is what protects a reader that re-attaches to a slot it had
        been dropped from: it gates again from the next renewal on, and it checks the claim to
        know whether the frames at its cursor are still intact (``Consumer._attach_slot``).
        """
        self._claim = claim
        floor = K.announce_claim(self._base, claim, self._nslots, self.pos)
        self._limit = floor + self._cap
        self._hot = min(self._limit, claim)

    def _ensure_space(self, end: int, timeout_s: float | None = None) -> None:
        """Wait until writing up to ``end`` overwrites nothing a gating consumer still needs."""
        if end <= self._refresh_limit():
            return
        self.full_waits += 1
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        n = 0
        next_check = time.monotonic() + 0.05
        while True:
            if self.wait.should_block(n):
                self._sleep_for_space(
                    end, min(self.wait.block_slice_s, max(deadline - time.monotonic(), 0))
                )
            else:
                self.wait.idle(n)
            n += 1
            if end <= self._refresh_limit():
                return
            if n & 63 == 0 or self.wait.blocks:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 0.05
                    self._drop_dead_readers(now)
                    if end <= self._refresh_limit():
                        return
                if now >= deadline:
                    raise RingFullError(
                        f"ring {self.ring.name}: no room for {end - self.pos} bytes after {timeout:.3f}s "
                        f"(slowest consumers: {self._slowest()})"
                    )

    def _sleep_for_space(self, end: int, timeout: float) -> None:
        if self._space_sem is None:
            self._space_sem = posix_ipc.Semaphore(f"{self.ring.region.name}_p")
        K.declare_sleep(self._base + PSLEEP)
        if end <= self._refresh_limit():
            K.clear_word(self._base + PSLEEP)
            return
        _sem_wait(self._space_sem, timeout)
        K.clear_word(self._base + PSLEEP)

    def _slowest(self) -> str:
        gating = [s for s in self.ring.slots() if s["state"] == "gating"]
        gating.sort(key=lambda s: s["cursor"])
        return ", ".join(
            f"{s['name']}(pid {s['pid']}, lag {self.pos - s['cursor']} B)" for s in gating[:3]
        )

    def _drop_dead_readers(self, now: float) -> None:
        """Stop gating on consumers whose process is gone for longer than the grace period."""
        ring = self.ring
        for i in range(ring.max_consumers):
            if ring._slot_word(i, SL_STATE) != SLOT_GATING:
                self._dead_since.pop(i, None)
                continue
            pid, alive = ring._slot_owner_alive(i)
            if alive:
                self._dead_since.pop(i, None)
                continue
            since = self._dead_since.setdefault(i, now)
            if now - since >= self.dead_reader_grace_s:
                if K.claim_slot(ring._slot_addr(i, SL_STATE), SLOT_GATING, SLOT_DEAD):
                    if ring._slot_word(i, SL_PID) != pid:
                        # a restarted reader took the slot after we looked at its pid: it
                        # gates again (it may not see the drop, so we undo it, not it)
                        K.claim_slot(ring._slot_addr(i, SL_STATE), SLOT_DEAD, SLOT_GATING)
                        self._dead_since.pop(i, None)
                        continue
                    self.dead_readers_dropped += 1
                    what = "never attached" if pid == 0 else f"pid {pid} is gone"
                    log.warning(
                        "ring %s: consumer %r (%s) stopped gating after %.1fs grace",
                        ring.name,
                        ring._slot_name(i),
                        what,
                        self.dead_reader_grace_s,
                    )
                self._dead_since.pop(i, None)

    # --- writing ---------------------------------------------------------------------------------
    def _end_for(self, length: int) -> int:
        """The position after a frame of ``length`` payload bytes written now (wrap included)."""
        total = frame_size(length)
        room = self._cap - (self.pos & self._mask)
        return self.pos + (total if total <= room else room + total)

    def _reserve(self, length: int) -> int:
        """Make room for one frame of ``length`` payload bytes; return its data offset."""
        if length > self._max_payload:
            raise FrameTooLargeError(
                f"ring {self.ring.name}: frame of {length} bytes exceeds max payload {self._max_payload}"
            )
        total = frame_size(length)
        pos = self.pos
        off = pos & self._mask
        room = self._cap - off
        need = total if total <= room else room + total
        end = pos + need
        if end > self._limit:
            self._ensure_space(end)
        if end > self._claim:
            self._announce_claim(end + self._claim_chunk)
            if end > self._limit:  # a reader gates again (re-attached): it holds us back too
                self._ensure_space(end)
        if total > room:
            if room >= FRAME_HEADER:
                self._pack_hdr(self._data, off, room - FRAME_HEADER, TYPE_PAD, FRAME_MARK, 0)
            pos += room
            off = 0
        self.pos = pos + total
        return off

    @property
    def published(self) -> int:
        """Frames this producer has published."""
        return self.seq - self._seq0

    def _commit(self) -> None:
        mask = K.commit(self._base, self.pos, self.seq)
        if mask:
            self._wake(mask)

    def _wake(self, mask: int) -> None:
        """Post the semaphore of each sleeping consumer (its own, or its process's waiter's)."""
        for i in range(self._nslots):
            if mask & (1 << i):
                name = self.ring._wake_name(i)
                sem = self._sems.get(name)
                if sem is None:
                    try:
                        sem = self._sems[name] = posix_ipc.Semaphore(name)
                    except posix_ipc.ExistentialError:
                        continue  # the sleeper's process went away with its semaphore
                sem.release()

    def _tag(self, msg: msgspec.Struct) -> int:
        cls = type(msg)
        tag = self._tags.get(cls)
        if tag is None:
            tag = cls.__struct_config__.tag
            if not isinstance(tag, int) or not 0 < tag <= MAX_TYPE:
                raise TypeError(f"{cls.__name__} needs an integer struct tag in 1..{MAX_TYPE}")
            self._tags[cls] = tag
        return tag

    def publish(self, msg: msgspec.Struct) -> None:
        """Encode ``msg`` into the ring and publish it (one frame, visible on return).

        The common case is inlined (no helper calls): encode into a reused bytearray, one header
        pack, one copy into shared memory, one numba commit.
        """
        buf = self._buf
        self._enc.encode_into(msg, buf)
        n = len(buf)
        pos = self.pos
        off = pos & self._mask
        total = (FRAME_HEADER + n + 7) & ~7
        if n > self._max_payload or off + total > self._cap or pos + total > self._hot:
            off = self._reserve(n)  # slow path: oversize, wrap, full ring or claim renewal
        else:
            self.pos = pos + total
        tag = self._tags.get(type(msg)) or self._tag(msg)
        seq = self.seq
        self._pack_hdr(self._data, off, n, tag, FRAME_MARK, seq)
        self._data[off + FRAME_HEADER : off + FRAME_HEADER + n] = buf
        self.seq = seq + 1
        mask = _commit(self._base, self.pos, seq + 1)
        if mask:
            self._wake(mask)

    def publish_raw(self, ftype: int, payload: bytes | bytearray | memoryview) -> None:
        """Publish an already-encoded payload with frame type ``ftype``."""
        if not 0 < ftype <= MAX_TYPE:
            raise ValueError(f"frame type must be within 1..{MAX_TYPE}")
        n = len(payload)
        off = self._reserve(n)
        self._pack_hdr(self._data, off, n, ftype, FRAME_MARK, self.seq)
        self._data[off + FRAME_HEADER : off + FRAME_HEADER + n] = payload
        self.seq += 1
        self._commit()

    def publish_batch(self, msgs: Sequence[msgspec.Struct]) -> None:
        """Publish many messages with one commit (one release store for the whole batch).

        If the ring fills mid-batch, what was written so far is committed first so consumers can
        drain it, then the rest follows.
        """
        buf = self._buf
        enc = self._enc.encode_into
        data = self._data
        pack = self._pack_hdr
        tags = self._tags
        cap = self._cap
        mask = self._mask
        for msg in msgs:
            enc(msg, buf)
            n = len(buf)
            pos = self.pos
            off = pos & mask
            total = (FRAME_HEADER + n + 7) & ~7
            end = pos + total
            if n > self._max_payload or off + total > cap or end > self._hot:
                end = self._end_for(n)  # slow path: wrap, full ring, claim renewal, oversize
                if end > self._limit and end > self._refresh_limit():
                    self._commit()  # the ring is full: let consumers see what is there, then wait
                off = self._reserve(n)
            else:
                self.pos = end
            pack(data, off, n, tags.get(type(msg)) or self._tag(msg), FRAME_MARK, self.seq)
            data[off + FRAME_HEADER : off + FRAME_HEADER + n] = buf
            self.seq += 1
        self._commit()

    def publish_raw_batch(
        self, types: np.ndarray, payload: np.ndarray, offsets: np.ndarray
    ) -> None:
        """Publish ``len(types)`` raw frames: frame i is ``payload[offsets[i]:offsets[i+1]]``.

        The copy runs in numba, so this is the path for bulk transfers (≥ 10 M frames/s).
        """
        n = len(types)
        if len(offsets) != n + 1:
            raise ValueError("offsets must have len(types) + 1 entries")
        if n == 0:
            return
        lengths = np.diff(offsets)
        if lengths.min() < 0 or int(lengths.max()) > self._max_payload:
            raise FrameTooLargeError(
                f"ring {self.ring.name}: a frame exceeds max payload {self._max_payload}"
            )
        if types.min() <= 0 or types.max() > MAX_TYPE:
            raise ValueError(f"frame types must be within 1..{MAX_TYPE}")
        i = 0
        while i < n:
            # write at most a quarter ring per step so non-gating readers keep slack behind the claim
            # (but always room for the next frame, wrap included, or a big frame would never go)
            target = max(self.pos + self._cap // 4, self._end_for(int(lengths[i])))
            limit = min(self._refresh_limit(), target)
            if limit > self._claim:
                self._announce_claim(limit)
                limit = min(limit, self._limit)
            i2, pos, seq = K.write_batch(
                self.ring.data_addr,
                self._cap,
                self.pos,
                limit,
                self.seq,
                types,
                payload,
                offsets,
                i,
            )
            if i2 == i:  # no room for the next frame: wait for consumers
                self._ensure_space(self._end_for(int(lengths[i])))
                continue
            self.pos, self.seq = pos, seq
            i = i2
            self._commit()

    def heartbeat(self) -> None:
        """Record that the producer is alive (consumers may watch it)."""
        K.store_word(self._base + PUB_HEARTBEAT_NS, time.monotonic_ns())

    def close(self) -> None:
        """Mark the stream finished: consumers drain what is left, then see the ring closed."""
        K.store_word(self._base + PUB_CLOSED, 1)
        self._wake((1 << self._nslots) - 1)
        self.detach()

    def detach(self) -> None:
        """Let go of the ring without ending the stream (a crash: the restart continues it)."""
        for sem in self._sems.values():
            sem.close()
        self._sems.clear()
        self._q.release()
        self._data.release()


class Consumer:
    """One reader with its own cursor (a slot in the ring header).

    ``poll()`` returns the next decoded message or None; ``poll_raw()`` returns (type, view)
    without decoding; ``read(timeout)`` waits by the consumer's wait strategy; ``poll_batch`` and
    ``poll_raw_batch`` hand over everything available at once.
    """

    def __init__(
        self,
        ring: Ring,
        name: str,
        gating: bool,
        wait: WaitStrategy,
        decoder: msgspec.msgpack.Decoder | None,
        from_start: bool,
    ) -> None:
        self.ring = ring
        self.name = name
        self.gating = gating
        self.wait = wait
        self._base = ring.base
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._max_payload = ring.max_payload
        self._data = ring.region.buf[ring.data_offset : ring.data_offset + ring.capacity]
        self._q = self._data.cast("Q")
        self._dec = decoder or _default_decoder()
        self._decode = self._dec.decode
        self._sem: posix_ipc.Semaphore | None = None
        self._index = np.zeros((256, 4), dtype=np.int64)
        self.received = 0
        self.missed = 0
        self.laps = 0
        self.slot, resumed, claim = self._attach_slot(name, gating, from_start)
        self._sleep_addr = ring._slot_addr(self.slot, SL_SLEEPING)
        self.pos = ring._slot_word(self.slot, SL_CURSOR)
        self.received = ring._slot_word(self.slot, SL_RECEIVED)
        self.missed = ring._slot_word(self.slot, SL_MISSED)
        self._next_seq = -1  # learnt from the first frame (or the snapshot) after attaching
        self._avail = self.pos
        self.resumed = resumed
        self._wake_sem_name = f"{ring.region.name}_{self.slot}"
        ring._set_wake_name(self.slot, self._wake_sem_name)
        if claim > self.pos + self._cap:
            # re-attached to a slot the producer had dropped as dead, and it may have written
            # over our cursor's frames since: what was there is lost, say so and count it
            log.error(
                "ring %s: consumer %r did not gate while away (dropped as dead, or left) and "
                "may have been overrun; resynchronising (the frames it missed are counted)",
                ring.name,
                name,
            )
            self._next_seq = ring._slot_word(self.slot, SL_SEQ) - 1  # as handed back, if known
            self._resync()
        else:
            self._sync_seq()
        # load the kernels now rather than on the first frame (an empty scan, a cursor hand-back)
        K.scan(ring.data_addr, self._cap, self.pos, self.pos, 0, self._max_payload, self._index)
        self._refresh()

    # --- attach ----------------------------------------------------------------------------------
    def _attach_slot(self, name: str, gating: bool, from_start: bool) -> tuple[int, bool, int]:
        """(slot, resumed, claim): ``claim`` is the producer's claim seen when a slot it had
        stopped honouring (dead) gates again, else 0 (our cursor's frames are intact)."""
        ring = self.ring
        want = SLOT_GATING if gating else SLOT_NONGATING
        pid = os.getpid()
        # 1) a slot reserved or left under this name: resume from its cursor
        for i in range(ring.max_consumers):
            st = ring._slot_word(i, SL_STATE)
            if st != SLOT_FREE and ring._slot_name(i) == name:
                old_pid, alive = ring._slot_owner_alive(i)
                if st in (SLOT_GATING, SLOT_NONGATING) and old_pid not in (0, pid) and alive:
                    raise RingError(
                        f"ring {ring.name}: consumer {name!r} is already attached by pid {old_pid}"
                    )
                # our stamp, our pid (fenced), then the state: a producer dropping the dead pid
                # at this moment either sees our pid and undoes the drop, or we see the drop here
                K.store_word(ring._slot_addr(i, SL_ATTACH_NS), time.time_ns())
                K.store_fenced(ring._slot_addr(i, SL_PID), pid)
                K.store_word(ring._slot_addr(i, SL_SLEEPING), 0)
                resumed = old_pid != 0 or ring._slot_word(i, SL_CURSOR) > 0
                return i, resumed, self._take_state(i, want)
        # 2) a free (or closed) slot: start at the producer's current position
        for i in range(ring.max_consumers):
            st = ring._slot_word(i, SL_STATE)
            if st in (SLOT_FREE, SLOT_CLOSED, SLOT_DEAD) and K.claim_slot(
                ring._slot_addr(i, SL_STATE), st, SLOT_CLOSED + 100
            ):
                start = 0 if from_start else K.published(self._base)
                K.store_word(ring._slot_addr(i, SL_CURSOR), start)
                K.store_word(ring._slot_addr(i, SL_RECEIVED), 0)
                K.store_word(ring._slot_addr(i, SL_MISSED), 0)
                K.store_word(ring._slot_addr(i, SL_SEQ), 0)
                ring._init_slot(i, name, want, pid)
                if not from_start:
                    # the producer may have moved on while we registered: start from where it is now
                    K.store_word(ring._slot_addr(i, SL_CURSOR), K.published(self._base))
                return i, False, 0
        raise RingError(f"ring {ring.name}: all {ring.max_consumers} consumer slots are taken")

    def _take_state(self, i: int, want: int) -> int:
        """Set our slot's state to ``want``: the producer's claim if the slot gates again after
        the producer stopped honouring it (dropped as dead, or left), else 0."""
        ring = self.ring
        addr = ring._slot_addr(i, SL_STATE)
        while True:
            st = ring._slot_word(i, SL_STATE)
            if st == want:
                return 0
            claim = K.revive(addr, st, want, self._base)
            if claim < 0:
                continue  # the producer changed it meanwhile: look again
            if want != SLOT_GATING:
                return 0
            if st == SLOT_DEAD:
                log.warning(
                    "ring %s: consumer %r re-attaches after being dropped as dead",
                    ring.name,
                    ring._slot_name(i),
                )
            return claim  # it did not gate (dead, or left): the producer may have lapped it

    def _sync_seq(self) -> None:
        """Learn the sequence number of the frame at our cursor.

        A re-attached reader resumes mid-stream, after frames any producer incarnation may have
        written: a gating reader reads the number from the first frame header at its cursor
        (its frames are protected), never guesses it. A non-gating one learns it from the first
        frame it reads, validated against laps (``_next_frame``).
        """
        pos, seq = K.snapshot(self._base)
        if pos < 0:  # the producer died mid-commit: its restart repairs the publication
            pos, seq = K.published(self._base), -1
        if pos - self.pos > self._cap:
            if self.gating:
                log.error(
                    "ring %s: gating consumer %r was overrun while away; resynchronising",
                    self.ring.name,
                    self.name,
                )
            self._next_seq = self.ring._slot_word(self.slot, SL_SEQ) - 1  # as handed back
            self._resync()
        elif pos == self.pos:
            self._next_seq = seq
        elif self.gating:
            self._next_seq = self._seq_at(self.pos, pos, seq)
        else:
            self._next_seq = -1  # taken from the next frame header

    def _seq_at(self, pos: int, end: int, end_seq: int) -> int:
        """The sequence of the first data frame in [pos, end), pads skipped; ``end_seq`` if none.

        Only for a gating reader (nothing it has not read is overwritten) and off the hot path.
        """
        q = self._q
        while pos < end:
            off = pos & self._mask
            room = self._cap - off
            if room < FRAME_HEADER:
                pos += room
                continue
            w0 = q[off >> 3]
            if (w0 >> 48) != FRAME_MARK:
                raise RingCorruptedError(
                    f"ring {self.ring.name}: bad frame at position {pos} (header {w0:#018x})"
                )
            if (w0 >> 32) & 0xFFFF == TYPE_PAD:
                pos += room
                continue
            return int(q[(off >> 3) + 1])
        return end_seq

    def _resync(self) -> None:
        """Jump to the producer's consistent (pos, seq) and count the frames skipped."""
        pos, seq = K.snapshot(self._base)
        if pos < 0:
            # the producer died inside a commit: its published position stands; a non-gating
            # reader counts the gap at the next frame, a gating one learns the sequence there
            pos, seq = K.published(self._base), -1 if self.gating else self._next_seq
        if self._next_seq >= 0 and seq >= 0:
            self.missed += seq - self._next_seq
        # else: position unknown before the first frame: nothing to count against
        self.laps += 1
        self.pos = pos
        self._avail = pos
        self._next_seq = seq
        K.store_word(self.ring._slot_addr(self.slot, SL_MISSED), self.missed)

    def _discard_and_resync(self) -> None:
        """The frame just read was overwritten while we read it: it counts as missed too."""
        self._next_seq -= 1
        self._resync()

    # --- waiting ---------------------------------------------------------------------------------
    def _refresh(self) -> int:
        """Hand our cursor back, then acquire the producer's position (one numba call)."""
        avail = K.exchange(self._base, self.slot, self.pos, self._next_seq)
        if avail < 0:  # the producer sleeps waiting for room: wake it
            avail = -avail - 1
            self._wake_producer()
        self._avail = avail
        return avail

    def publish_stats(self) -> None:
        """Copy received/missed counts into the slot, where monitors read them."""
        K.store_word(self.ring._slot_addr(self.slot, SL_RECEIVED), self.received)
        K.store_word(self.ring._slot_addr(self.slot, SL_MISSED), self.missed)

    def _wake_producer(self) -> None:
        sem = posix_ipc.Semaphore(f"{self.ring.region.name}_p")
        sem.release()
        sem.close()

    def wait_for_data(self, timeout_s: float) -> bool:
        """Wait (by the strategy) until a frame is available; False on timeout or closed ring.

        Raises ``ProducerDeadError`` if the producer's process is gone and nothing is left.
        """
        if self.pos < self._avail or self.pos < self._refresh():
            return True
        deadline = time.monotonic() + timeout_s
        n = 0
        wait = self.wait
        next_check = time.monotonic() + 0.05
        while True:
            if wait.should_block(n):
                self._sleep(min(wait.block_slice_s, max(deadline - time.monotonic(), 0.0)))
            else:
                wait.idle(n)
            n += 1
            if self.pos < self._refresh():
                return True
            if n & 63 == 0 or wait.blocks:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 0.05
                    self.publish_stats()
                    if self.ring.closed:
                        return self.pos < self._refresh()
                    pid = self.ring.producer_pid
                    if pid and not pid_alive(pid) and self.pos >= self._refresh():
                        raise ProducerDeadError(
                            f"ring {self.ring.name}: producer pid {pid} is gone"
                        )
                if now >= deadline:
                    return False

    def has_data(self) -> bool:
        """True if a frame is available (refreshing the producer's position if needed)."""
        return self.pos < self._avail or self.pos < self._refresh()

    def set_wake(self, sem_name: str) -> None:
        """Have the producer post ``sem_name`` (e.g. a process-wide ``Waiter``'s) when we sleep."""
        self.ring._set_wake_name(self.slot, sem_name)
        if self._sem is not None:
            self._sem.close()
        self._sem = None
        self._wake_sem_name = sem_name

    @property
    def sleep_flag_addr(self) -> int:
        return self._sleep_addr

    def _sleep(self, timeout: float) -> None:
        if self._sem is None:
            self._sem = posix_ipc.Semaphore(self._wake_sem_name)
        K.declare_sleep(self._sleep_addr)
        if self.pos < K.published(self._base) or self.ring.closed:
            K.clear_word(self._sleep_addr)
            return
        _sem_wait(self._sem, timeout)
        K.clear_word(self._sleep_addr)

    # --- reading ---------------------------------------------------------------------------------
    def _next_frame(self) -> tuple[int, int, int] | None:
        """(type, data offset, length) of the next frame, advancing the cursor; None if empty."""
        while True:
            pos = self.pos
            if pos >= self._avail and pos >= self._refresh():
                return None
            if not self.gating and self._avail - pos > self._cap:
                self._resync()
                continue
            off = pos & self._mask
            room = self._cap - off
            if room < FRAME_HEADER:
                self.pos = pos + room
                continue
            w0 = self._q[off >> 3]
            seq = self._q[(off >> 3) + 1]
            length = w0 & 0xFFFFFFFF
            ftype = (w0 >> 32) & 0xFFFF
            total = (FRAME_HEADER + length + 7) & ~7
            if (
                (w0 >> 48) != FRAME_MARK
                or (ftype == TYPE_PAD and total != room)
                or (ftype != TYPE_PAD and (length > self._max_payload or total > room))
            ):
                if not self.gating and self._lapped(pos):
                    self._resync()
                    continue
                raise RingCorruptedError(
                    f"ring {self.ring.name}: bad frame at position {pos} (header {w0:#018x}, "
                    f"length {length}, type {ftype})"
                )
            if ftype == TYPE_PAD:
                self.pos = pos + room
                continue
            if seq != self._next_seq:
                if self._next_seq < 0:
                    self._next_seq = seq
                elif not self.gating and (self._lapped(pos) or seq > self._next_seq):
                    if self._lapped(pos):
                        self._resync()
                        continue
                    self.missed += seq - self._next_seq
                    self._next_seq = seq
                else:
                    raise RingCorruptedError(
                        f"ring {self.ring.name}: frame at position {pos} has sequence {seq}, "
                        f"expected {self._next_seq}"
                    )
            self.pos = pos + total
            self._next_seq = seq + 1
            return ftype, off + FRAME_HEADER, length

    def _lapped(self, frame_pos: int) -> bool:
        """Whether the producer may have overwritten the frame at ``frame_pos`` by now."""
        return K.read_claim(self._base) > frame_pos + self._cap

    def poll(self) -> Any:
        """The next decoded message, or None if nothing is available."""
        if self.gating:
            # fast path: a plain data frame already known to be published
            pos = self.pos
            if pos < self._avail and self._next_seq >= 0:
                off = pos & self._mask
                if self._cap - off >= FRAME_HEADER:
                    q = self._q
                    w0 = q[off >> 3]
                    n = w0 & 0xFFFFFFFF
                    total = (FRAME_HEADER + n + 7) & ~7
                    # mark and bounds are checked on every frame (corruption is an error, never a
                    # wild read); the sequence is checked by the slow path and the batch scan
                    if (
                        (w0 >> 48) == FRAME_MARK
                        and (w0 >> 32) & 0xFFFF != TYPE_PAD
                        and off + total <= self._cap
                    ):
                        self.pos = pos + total
                        self._next_seq += 1
                        start = off + FRAME_HEADER
                        try:
                            msg = self._decode(self._data[start : start + n])
                        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                            raise RingCorruptedError(
                                f"ring {self.ring.name}: undecodable frame: {exc}"
                            ) from exc
                        self.received += 1
                        return msg
        while True:
            frame_pos = self.pos
            f = self._next_frame()
            if f is None:
                return None
            _, off, n = f
            try:
                msg = self._decode(self._data[off : off + n])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if not self.gating and self._lapped(frame_pos):
                    self._discard_and_resync()
                    continue
                raise RingCorruptedError(
                    f"ring {self.ring.name}: undecodable frame: {exc}"
                ) from exc
            if not self.gating and self._lapped(frame_pos):
                self._discard_and_resync()
                continue
            self.received += 1
            return msg

    def poll_raw(self) -> tuple[int, memoryview | bytes] | None:
        """(type, payload) of the next frame without decoding it.

        For a gating consumer the payload is a view into the ring, valid until the next call;
        a non-gating consumer gets a validated copy (the producer may overwrite the ring).
        """
        while True:
            frame_pos = self.pos
            f = self._next_frame()
            if f is None:
                return None
            ftype, off, n = f
            if self.gating:
                self.received += 1
                return ftype, self._data[off : off + n]
            payload = bytes(self._data[off : off + n])
            if self._lapped(frame_pos):
                self._discard_and_resync()
                continue
            self.received += 1
            return ftype, payload

    def read(self, timeout_s: float = 1.0) -> Any:
        """The next message, waiting up to ``timeout_s``; None on timeout or a closed, drained ring."""
        msg = self.poll()
        if msg is not None:
            return msg
        if not self.wait_for_data(timeout_s):
            return None
        return self.poll()

    def poll_batch(self, max_n: int = 1024) -> list[Any]:
        """Everything available (up to ``max_n``), decoded, with one acquire for the batch.

        A gating reader indexes the batch's frames in one numba call, then only decodes in Python.
        """
        if self.gating:
            n, idx = self.poll_raw_batch(max_n)
            if n == 0:
                return []
            data = self._data
            decode = self._decode
            try:
                return [decode(data[o : o + ln]) for o, ln in idx[:n, :2].tolist()]
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RingCorruptedError(
                    f"ring {self.ring.name}: undecodable frame: {exc}"
                ) from exc
        out: list[Any] = []
        decode = self._decode
        data = self._data
        while len(out) < max_n:
            frame_pos = self.pos
            f = self._next_frame()
            if f is None:
                break
            _, off, n = f
            try:
                msg = decode(data[off : off + n])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if not self.gating and self._lapped(frame_pos):
                    self._discard_and_resync()
                    continue
                raise RingCorruptedError(
                    f"ring {self.ring.name}: undecodable frame: {exc}"
                ) from exc
            if not self.gating and self._lapped(frame_pos):
                self._discard_and_resync()
                continue
            out.append(msg)
        self.received += len(out)
        return out

    def poll_raw_batch(self, max_n: int = 65536) -> tuple[int, np.ndarray]:
        """Index up to ``max_n`` available frames in numba, without decoding.

        Returns (n, index) where ``index[:n]`` rows are (offset into ``self.data``, length, type,
        seq). The views stay valid until the next poll on a gating consumer. Non-gating consumers
        should use ``poll_batch`` / ``poll_raw`` (which validate against laps).
        """
        if not self.gating:
            raise RingError("poll_raw_batch is for gating consumers; use poll_raw or poll_batch")
        if self._index.shape[0] < max_n:
            self._index = np.zeros((max_n, 4), dtype=np.int64)
        if self.pos >= self._avail and self.pos >= self._refresh():
            return 0, self._index  # nothing new: no scan
        if self._next_seq < 0:
            self._next_seq = self._seq_at(self.pos, self._avail, -1)
        n, pos, next_seq, err = K.scan(
            self.ring.data_addr,
            self._cap,
            self.pos,
            self._avail,
            self._next_seq,
            self._max_payload,
            self._index[:max_n],
        )
        if err:
            raise RingCorruptedError(
                f"ring {self.ring.name}: bad frame at position {pos} (error {err}: "
                f"{['', 'bad mark', 'bad length', 'bad sequence', 'bad padding'][err]})"
            )
        self.pos, self._next_seq = pos, next_seq
        self.received += n
        return n, self._index

    @property
    def data(self) -> memoryview:
        """The ring's data area (offsets from ``poll_raw_batch`` index into it)."""
        return self._data

    @property
    def lag_bytes(self) -> int:
        return max(0, K.published(self._base) - self.pos)

    def commit(self) -> None:
        """Hand the cursor back now (``poll`` does it whenever it runs dry)."""
        self._refresh()

    def close(self) -> None:
        """Detach: hand back the cursor; the slot keeps its name so a restart resumes from it."""
        with contextlib.suppress(Exception):
            self._refresh()
        self.publish_stats()
        K.store_word(self.ring._slot_addr(self.slot, SL_PID), 0)
        if self._sem is not None:
            self._sem.close()
        self._q.release()
        self._data.release()

    def leave(self) -> None:
        """Detach for good: the slot no longer gates the producer."""
        K.store_word(self.ring._slot_addr(self.slot, SL_STATE), SLOT_CLOSED)
        self.close()


def _sem_wait(sem: posix_ipc.Semaphore, timeout: float) -> None:
    """Wait on ``sem`` for at most ``timeout`` seconds, on platforms with and without timed waits."""
    if timeout <= 0:
        return
    if posix_ipc.SEMAPHORE_TIMEOUT_SUPPORTED:
        with contextlib.suppress(posix_ipc.BusyError):
            sem.acquire(timeout)
        return
    deadline = time.monotonic() + timeout  # macOS: no sem_timedwait; poll with short sleeps
    while time.monotonic() < deadline:
        try:
            sem.acquire(0)
            return
        except posix_ipc.BusyError:
            time.sleep(50e-6)


_DEFAULT_DECODER: msgspec.msgpack.Decoder | None = None


def _default_decoder() -> msgspec.msgpack.Decoder:
    """A decoder for the engine's message union (the transport itself knows nothing of trading:
    any tagged-Struct union works; pass your own ``decoder`` to ``Ring.consumer``)."""
    global _DEFAULT_DECODER
    if _DEFAULT_DECODER is None:
        from engine.messages import Message  # the shared vocabulary (DESIGN §1 allows this)

        _DEFAULT_DECODER = msgspec.msgpack.Decoder(Message)
    return _DEFAULT_DECODER
