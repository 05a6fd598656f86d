"""The ring's one writer (``shm.ring`` has the frame format and the protocol).

Why the hot path looks the way it does: ``publish`` runs for every message the engine sends, so
its common case is inlined (encode into a reused buffer, two header words, one copy into shared
memory, the publication) and everything rare (oversize, wrap, full ring, claim renewal) is one
slow-path call, ``_reserve``, behind one comparison (``_hot``). Where ``shm.fastpath`` allows it
(x86-64 Linux) the publication is four plain word stores and one load of the sleepers' summary
instead of a numba call (~250 ns of dispatch: a quarter of the message); batches keep the numba
commit (one per batch). The writer only ever waits for gating consumers; a non-gating one is
protected by the claim it can check, never by the producer slowing down.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import posix_ipc

from shm import fastpath
from shm import kernels as K
from shm.layout import (
    CLAIM,
    FRAME_HEADER,
    FRAME_MARK,
    MAX_TYPE,
    PSLEEP,
    PUB_CK,
    PUB_CLOSED,
    PUB_GEN,
    PUB_PID,
    PUB_POS,
    SL_PID,
    SL_STATE,
    SLEEPERS,
    SLOT_DEAD,
    SLOT_GATING,
    TYPE_PAD,
    frame_size,
)
from shm.ring_errors import (
    FrameTooLargeError,
    RingCorruptedError,
    RingFullError,
)
from shm.wait import WaitStrategy, sem_wait

if TYPE_CHECKING:  # the ring builds its roles: it imports us, not the other way round
    from shm.ring import Ring

log = logging.getLogger("gekko.shm.ring")

_commit = K.commit
# word indices of the publication in the header (plain path)
_GEN_W, _POS_W, _CK_W, _SLEEPERS_W = PUB_GEN // 8, PUB_POS // 8, PUB_CK // 8, SLEEPERS // 8
_HDR_TOP = FRAME_HEADER + 7  # (FRAME_HEADER + n + 7) & ~7 == (n + _HDR_TOP) & ~7


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
        self._h = ring.region.buf[: ring.data_offset].cast("Q")
        self._plain = fastpath.use_plain()
        pos, seq = K.snapshot(self._base)
        if pos < 0:
            raise RingCorruptedError(
                f"ring {ring.name}: the frames from its checkpoint do not lead to its published "
                "position; refusing to write over it"
            )
        self.pos = pos
        self.seq = seq
        self._limit = 0
        self._claim = int(ring._words[CLAIM // 8])
        self._claim_chunk = self._cap // 8
        self._buf = bytearray(256)
        self._enc = msgspec.msgpack.Encoder()
        self._encode_into = self._enc.encode_into
        self._tags: dict[type, int] = dict(type_tags or {})
        # type -> its frame header's first word less the length: (mark << 48) | (tag << 32)
        self._heads: dict[type, int] = {}
        self._pack_hdr = struct.Struct("<IHHQ").pack_into
        self._sems: dict[str, posix_ipc.Semaphore] = {}
        self._space_sem: posix_ipc.Semaphore | None = None
        self._dead_since: dict[int, float] = {}
        self._seq0 = self.seq
        self._hot = 0  # min(limit, claim, end of the lap): a frame ending by it takes no slow path
        self.full_waits = 0
        self.dead_readers_dropped = 0
        K.store_word(self._base + PUB_PID, os.getpid())
        K.store_word(self._base + PUB_CLOSED, 0)
        self._refresh_limit()
        # first calls of a numba kernel load (or compile) it: pay that now, not on the first frame
        K.commit(self._base, self.pos, self.seq)  # republishes the same (pos, seq): harmless

    # --- space -----------------------------------------------------------------------------------
    def _refresh_limit(self) -> int:
        self._limit = K.min_gating(self._base, self._nslots, self.pos) + self._cap
        self._set_hot()
        return self._limit

    def _set_hot(self) -> None:
        """``_hot``: how far a frame may end without a slow-path check (no wrap inside, within
        the gating limit and the announced claim)."""
        self._hot = min(self._limit, self._claim, (self.pos | self._mask) + 1)

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
        self._set_hot()

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
        fastpath.heavy_barrier()  # readers handing back cursors may skip their fence (fastpath)
        if end <= self._refresh_limit():
            K.clear_word(self._base + PSLEEP)
            return
        sem_wait(self._space_sem, timeout)
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
                    K.clear_slot_sleep(ring.base, i)  # if it died asleep: no longer a sleeper
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
        self._set_hot()
        return off

    @property
    def published(self) -> int:
        """Frames this producer has published."""
        return self.seq - self._seq0

    def _commit(self) -> None:
        mask = K.commit(self._base, self.pos, self.seq)
        if mask:
            self._wake(mask)

    def _commit_one(self) -> None:
        """Publish pos after one frame, with a checkpoint: plain stores where ``shm.fastpath``
        allows (off the hot path: ``publish_raw`` and ``publish``'s slow path)."""
        if not self._plain:
            self._commit()
            return
        h = self._h
        h[_POS_W] = self.pos
        self._checkpoint()
        if h[_SLEEPERS_W]:
            self._wake_sleepers()

    def _checkpoint(self) -> None:
        """``shm.kernels.checkpoint`` as plain stores (x86-64: ordered as written)."""
        h = self._h
        g = h[_GEN_W] + 1
        k = _CK_W + 2 * (g & 1)
        h[k] = self.pos
        h[k + 1] = self.seq
        h[_GEN_W] = g

    def _wake_sleepers(self) -> None:
        """A consumer declared it sleeps: fence, take the flags, post their semaphores."""
        mask = K.take_sleepers(self._base)
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

    def _head(self, msg: msgspec.Struct) -> int:
        head = self._heads[type(msg)] = (FRAME_MARK << 48) | (
            self._tags.get(type(msg)) or self._tag(msg)
        ) << 32
        return head

    def publish(self, msg: msgspec.Struct) -> None:
        """Encode ``msg`` into the ring and publish it (one frame, visible on return).

        The common case is inlined (no helper calls): encode into a reused bytearray, the two
        header words, one copy into shared memory, the publication (plain stores where
        ``shm.fastpath`` allows, else one numba commit).
        """
        buf = self._buf
        self._encode_into(msg, buf)
        n = len(buf)
        pos = self.pos
        end = pos + ((n + _HDR_TOP) & -8)
        if end > self._hot or n > self._max_payload:
            # slow path: oversize, wrap, full ring or claim renewal; its commit checkpoints
            self._publish_slow(msg, buf, n)
            return
        off = pos & self._mask
        self.pos = end
        seq = self.seq
        q = self._q
        i = off >> 3
        try:
            head = self._heads[type(msg)]  # a plain dict subscription: the cheapest look-up
        except KeyError:
            head = self._head(msg)
        q[i] = n | head
        q[i + 1] = seq
        off += FRAME_HEADER
        self._data[off : off + n] = buf
        seq += 1
        self.seq = seq
        if self._plain:  # the commit as a plain store (shm.fastpath says why that is enough)
            h = self._h
            h[_POS_W] = end
            if h[_SLEEPERS_W]:
                self._wake_sleepers()
        else:
            mask = _commit(self._base, end, seq)
            if mask:
                self._wake(mask)

    def _publish_slow(self, msg: msgspec.Struct, buf: bytearray, n: int) -> None:
        """``publish`` when the frame needs room made, a wrap or a claim renewal."""
        off = self._reserve(n)
        try:
            head = self._heads[type(msg)]
        except KeyError:
            head = self._head(msg)
        q = self._q
        i = off >> 3
        q[i] = n | head
        q[i + 1] = self.seq
        off += FRAME_HEADER
        self._data[off : off + n] = buf
        self.seq += 1
        self._commit_one()

    def publish_raw(self, ftype: int, payload: bytes | bytearray | memoryview) -> None:
        """Publish an already-encoded payload with frame type ``ftype``."""
        if not 0 < ftype <= MAX_TYPE:
            raise ValueError(f"frame type must be within 1..{MAX_TYPE}")
        n = len(payload)
        off = self._reserve(n)
        self._pack_hdr(self._data, off, n, ftype, FRAME_MARK, self.seq)
        self._data[off + FRAME_HEADER : off + FRAME_HEADER + n] = payload
        self.seq += 1
        self._commit_one()

    def publish_batch(self, msgs: Sequence[msgspec.Struct]) -> None:
        """Publish many messages with one commit (one release store for the whole batch).

        If the ring fills mid-batch, what was written so far is committed first so consumers can
        drain it, then the rest follows. A batch of one is a ``publish`` (the workers' usual
        batch: one intent, one order, one event; the plain path spares it a numba dispatch).
        """
        if len(msgs) == 1:
            self.publish(msgs[0])
            return
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
        self._h.release()
        self._data.release()
