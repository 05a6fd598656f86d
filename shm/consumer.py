"""One reader of a ring, with its own cursor (``shm.ring`` has the frame format and protocol).

Why it is shaped this way: a reader pays one acquire of the producer's position per batch of
frames and hands its cursor back once per batch, so ``poll`` on a gating reader is a few memory
reads plus the decode. Where ``shm.fastpath`` allows it (x86-64 Linux) that turn-around is plain
word stores and loads instead of a numba call, which matters most to a reader that keeps up
one message at a time: it turns around on nearly every message. Every other read goes through one core (``_poll_into``) that also handles
what only a non-gating reader meets: being lapped while reading a frame, which it detects by
checking the producer's claim after the read, and then resynchronises and counts as missed.
The consumer decodes with the decoder its caller passes: the transport knows no message types.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import posix_ipc

from shm import fastpath
from shm import kernels as K
from shm.layout import (
    CLAIM,
    FRAME_HEADER,
    FRAME_MARK,
    PSLEEP,
    PUB_POS,
    SL_ATTACH_NS,
    SL_CURSOR,
    SL_MISSED,
    SL_PID,
    SL_RECEIVED,
    SL_SEQ,
    SL_SLEEPING,
    SL_STATE,
    SLOT_CLOSED,
    SLOT_DEAD,
    SLOT_FREE,
    SLOT_GATING,
    SLOT_NONGATING,
    SLOT_SIZE,
    SLOTS,
    TYPE_PAD,
)
from shm.region import pid_alive
from shm.ring_errors import (
    ProducerDeadError,
    RingCorruptedError,
    RingError,
)
from shm.wait import WaitStrategy, sem_wait

if TYPE_CHECKING:  # the ring builds its roles: it imports us, not the other way round
    from shm.ring import Ring

log = logging.getLogger("gekko.shm.ring")

# header word indices (plain path) and the bounds of a data frame's first word: the mark, and a
# type other than padding ((mark << 48) <= w0 < (mark << 48) | (TYPE_PAD << 32))
_POS_W, _CLAIM_W, _PSLEEP_W = PUB_POS // 8, CLAIM // 8, PSLEEP // 8
_HEAD_MIN = FRAME_MARK << 48
_HEAD_PAD = (FRAME_MARK << 48) | (TYPE_PAD << 32)
_HDR_TOP = FRAME_HEADER + 7  # (FRAME_HEADER + n + 7) & ~7 == (n + _HDR_TOP) & ~7
# a gating poll_batch with no more than this available reads frame by frame (no numba call)
_FEW_BYTES = 256


class Consumer:
    """One reader with its own cursor (a slot in the ring header).

    ``poll()`` returns the next decoded message or None; ``poll_raw()`` returns (type, view)
    without decoding; ``read(timeout)`` waits by the consumer's wait strategy; ``poll_batch`` and
    ``poll_raw_batch`` hand over everything available at once. ``decoder`` is the caller's (a
    msgspec decoder for the tagged Structs its producer publishes); a consumer made without one
    reads raw frames only.
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
        self._h = ring.region.buf[: ring.data_offset].cast("Q")
        self._plain = fastpath.use_plain()
        self._dec = decoder
        self._decode = decoder.decode if decoder is not None else self._no_decoder
        self._sem: posix_ipc.Semaphore | None = None
        self._index = np.zeros((256, 4), dtype=np.int64)
        self.received = 0
        self.missed = 0
        self.laps = 0
        self.slot, resumed, claim = self._attach_slot(name, gating, from_start)
        self._sleep_addr = ring._slot_addr(self.slot, SL_SLEEPING)
        self._cursor_w = (SLOTS + self.slot * SLOT_SIZE + SL_CURSOR) // 8
        self._seq_w = (SLOTS + self.slot * SLOT_SIZE + SL_SEQ) // 8
        self._handed = -1  # the cursor last handed back on the plain path (-1: none yet)
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
                K.clear_slot_sleep(self._base, i)
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
        """Hand our cursor back, then acquire the producer's position: plain stores and loads
        where ``shm.fastpath`` allows (unless the producer sleeps), else one numba call."""
        if self._plain:
            h = self._h
            pos = self.pos
            if pos != self._handed:  # a reader spinning on an empty ring stores nothing
                h[self._seq_w] = self._next_seq + 1
                h[self._cursor_w] = pos
                self._handed = pos
            if not h[_PSLEEP_W]:
                avail = self._avail = h[_POS_W]
                return avail
        self._handed = self.pos
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

    def declare_sleep(self) -> None:
        """Raise our sleeping flag (and our bit in the producer's summary), fenced: the caller
        re-checks the ring after this, then sleeps on our wake semaphore."""
        K.declare_slot_sleep(self._base, self.slot)

    def clear_sleep(self) -> None:
        K.clear_slot_sleep(self._base, self.slot)

    def _sleep(self, timeout: float) -> None:
        if self._sem is None:
            self._sem = posix_ipc.Semaphore(self._wake_sem_name)
        self.declare_sleep()
        fastpath.heavy_barrier()  # the producer skips its fence before the sleepers' check
        if self.pos < K.published(self._base) or self.ring.closed:
            self.clear_sleep()
            return
        sem_wait(self._sem, timeout)
        self.clear_sleep()

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
        """Whether the producer may have overwritten the frame at ``frame_pos`` by now (on the
        plain path a load: x86-64 does not reorder it before the frame's loads)."""
        if self._plain:
            return self._h[_CLAIM_W] > frame_pos + self._cap
        return K.read_claim(self._base) > frame_pos + self._cap

    def _poll_into(
        self, take: Callable[[memoryview], Any], out: list[Any], max_n: int, typed: bool = False
    ) -> None:
        """The poll core: append ``take(payload view)`` of up to ``max_n`` next frames to ``out``
        (``(type, take(...))`` when ``typed``); fewer when the ring runs dry.

        ``take`` decodes or copies the payload; a non-gating reader then checks that the producer
        did not lap the frame while it was being read (if it did, what was taken is discarded,
        counted as missed, and the reader resynchronises). Only a gating reader's reads bypass
        it: ``poll`` and ``poll_raw`` (its frames cannot be lapped).
        """
        data = self._data
        got = 0
        while got < max_n:
            frame_pos = self.pos
            f = self._next_frame()
            if f is None:
                break
            ftype, off, n = f
            try:
                value = take(data[off : off + n])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if not self.gating and self._lapped(frame_pos):
                    self._discard_and_resync()
                    continue
                raise self._undecodable(exc) from exc
            if not self.gating and self._lapped(frame_pos):
                self._discard_and_resync()
                continue
            out.append((ftype, value) if typed else value)
            got += 1
        self.received += got

    def _undecodable(self, exc: Exception) -> RingCorruptedError:
        return RingCorruptedError(f"ring {self.ring.name}: undecodable frame: {exc}")

    def _no_decoder(self, payload: memoryview) -> Any:
        raise RingError(
            f"ring {self.ring.name}: consumer {self.name!r} has no decoder (pass decoder= to "
            "Ring.consumer, or read raw frames with poll_raw / poll_raw_batch)"
        )

    def poll(self) -> Any:
        """The next decoded message, or None if nothing is available."""
        pos = self.pos
        if pos >= self._avail and pos >= self._refresh():
            return None  # caught up: one turn-around, nothing new
        if self.gating:
            # fast path: a plain data frame (published: it lies before the acquired position)
            if self._next_seq >= 0:
                off = pos & self._mask
                w0 = self._q[off >> 3]
                n = w0 & 0xFFFFFFFF
                total = (n + _HDR_TOP) & -8
                # mark, type and bounds are checked on every frame (corruption is an error, never
                # a wild read; fewer than 16 bytes before the end never pass the bound); the
                # sequence is checked by the slow path and the batch scan
                if _HEAD_MIN <= w0 < _HEAD_PAD and off + total <= self._cap:
                    self.pos = pos + total
                    self._next_seq += 1
                    start = off + FRAME_HEADER
                    try:
                        msg = self._decode(self._data[start : start + n])
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        raise self._undecodable(exc) from exc
                    self.received += 1
                    return msg
            # past the cached end, a pad or a first frame: one frame the careful way (a gating
            # reader's frames cannot be lapped, so no list and no lap check: a caught-up reader
            # lands here on most polls)
            f = self._next_frame()
            if f is None:
                return None
            _, off, n = f
            try:
                msg = self._decode(self._data[off : off + n])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise self._undecodable(exc) from exc
            self.received += 1
            return msg
        out: list[Any] = []
        self._poll_into(self._decode, out, 1)
        return out[0] if out else None

    def poll_raw(self) -> tuple[int, memoryview | bytes] | None:
        """(type, payload) of the next frame without decoding it.

        For a gating consumer the payload is a view into the ring, valid until the next call;
        a non-gating consumer gets a validated copy (the producer may overwrite the ring).
        """
        if not self.gating:
            out: list[tuple[int, bytes]] = []
            self._poll_into(bytes, out, 1, True)
            return out[0] if out else None
        f = self._next_frame()  # a gating reader's frames stay put: no lap to check
        if f is None:
            return None
        ftype, off, n = f
        self.received += 1
        return ftype, self._data[off : off + n]

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

        A gating reader indexes the batch's frames in one numba call, then only decodes in Python;
        when what is available is a frame or two (a live worker's usual pass: one tick, one
        intent, one order), ``poll``'s path frame by frame is cheaper than the call.
        """
        if self.gating:
            pos = self.pos
            if pos >= self._avail and pos >= self._refresh():
                return []
            if self._avail - pos <= _FEW_BYTES and self._next_seq >= 0:
                out = []
                poll = self.poll
                while len(out) < max_n and (m := poll()) is not None:
                    out.append(m)
                return out
            n, idx = self.poll_raw_batch(max_n)
            if n == 0:
                return []
            data = self._data
            decode = self._decode
            try:
                return [decode(data[o : o + ln]) for o, ln in idx[:n, :2].tolist()]
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise self._undecodable(exc) from exc
        out: list[Any] = []
        self._poll_into(self._decode, out, max_n)
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
        self._h.release()
        self._data.release()

    def leave(self) -> None:
        """Detach for good: the slot no longer gates the producer."""
        K.store_word(self.ring._slot_addr(self.slot, SL_STATE), SLOT_CLOSED)
        self.close()
