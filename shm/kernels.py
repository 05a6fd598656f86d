"""The ring's numba kernels: every operation whose memory ordering matters lives here.

Python code around the ring writes frame bytes and reads them; these kernels do the publishing
(store-release of the producer's position after the frame bytes), the observing (load-acquire of
that position before reading frame bytes), the consumers' cursor hand-back (store-release after
the reader is done with the bytes) and the sleeper hand-shakes of the ``block`` strategy. Each is
one numba call, so Python pays the dispatch once per batch, not once per word.
"""

from __future__ import annotations

import numba
import numpy as np

from shm.atomics import (
    cas_u64,
    fence_acquire,
    fence_seq_cst,
    load_acquire,
    load_relaxed,
    store_relaxed,
    store_release,
    u8_ptr,
)
from shm.layout import (
    CLAIM,
    CONF_CAPACITY,
    CONF_DATA_OFFSET,
    CONF_MAX_CONSUMERS,
    FRAME_ALIGN,
    FRAME_HEADER,
    FRAME_MARK,
    PSLEEP,
    PUB_CK,
    PUB_GEN,
    PUB_POS,
    SL_CURSOR,
    SL_SEQ,
    SL_SLEEPING,
    SL_STATE,
    SLEEPERS,
    SLOT_GATING,
    SLOT_SIZE,
    SLOTS,
    TYPE_PAD,
)

_u64 = numba.uint64

# scan error codes
ERR_NONE = 0
ERR_MARK = 1
ERR_LENGTH = 2
ERR_SEQ = 3
ERR_PAD = 4


@numba.njit(cache=True, nogil=True)
def commit(base: int, pos: int, seq: int) -> int:
    """Publish ``pos``, checkpoint (pos, seq), and return a bitmask of consumer slots that
    declared they sleep.

    The store-release of pos is the publication: it orders the frame bytes before it. The
    checkpoint goes into the slot the generation does not name, then the generation moves on
    (``shm.layout``: a reader walks the frames from it to find the sequence at ``pos``). The
    seq_cst fence in ``take_sleepers`` orders the publication before the sleepers' flags
    (Dekker).
    """
    b = _u64(base)
    store_release(b + PUB_POS, _u64(pos))
    checkpoint(base, pos, seq)
    return take_sleepers(base)


@numba.njit(cache=True, nogil=True)
def checkpoint(base: int, pos: int, seq: int) -> None:
    """Record that the frame numbered ``seq`` starts at ``pos`` (already published)."""
    b = _u64(base)
    g = load_relaxed(b + PUB_GEN) + _u64(1)
    ck = b + _u64(PUB_CK) + (g & _u64(1)) * _u64(16)
    store_relaxed(ck, _u64(pos))
    store_relaxed(ck + _u64(8), _u64(seq))
    store_release(b + PUB_GEN, g)


@numba.njit(cache=True, nogil=True)
def take_sleepers(base: int) -> int:
    """After a publication: a full fence, then the bitmask of consumer slots whose sleeping flag
    this call cleared (it wakes them; a flag cleared by another call is not ours to post)."""
    b = _u64(base)
    fence_seq_cst()
    mask = 0
    nslots = numba.int64(load_relaxed(b + _u64(CONF_MAX_CONSUMERS)))
    for i in range(nslots):
        a = b + _u64(SLOTS + i * SLOT_SIZE + SL_SLEEPING)
        if load_relaxed(a) != 0 and cas_u64(a, _u64(1), _u64(0)):
            mask |= 1 << i
    return mask


@numba.njit(cache=True, nogil=True)
def published(base: int) -> int:
    """The producer's published position (acquire): frames before it are complete."""
    return load_acquire(_u64(base) + _u64(PUB_POS))


@numba.njit(cache=True, nogil=True)
def snapshot(base: int) -> tuple[int, int]:
    """A consistent (pos, seq) pair: the published position and the sequence number of the frame
    that will start there, or (-1, -1) if the frames from the checkpoint do not lead to it (a
    corrupted ring).

    The frames between the checkpoint and the position cannot be overwritten while the
    generation stays the same (the producer checkpoints at every claim renewal, long before it
    laps them), so a walk that starts and ends under one generation read frames that were there.
    """
    b = _u64(base)
    cap = numba.int64(load_relaxed(b + _u64(CONF_CAPACITY)))
    mem = numba.carray(u8_ptr(b + load_relaxed(b + _u64(CONF_DATA_OFFSET))), cap)
    mask = cap - 1
    for _ in range(100_000):
        g = load_acquire(b + PUB_GEN)
        ck = b + _u64(PUB_CK) + (g & _u64(1)) * _u64(16)
        at = numba.int64(load_relaxed(ck))
        seq = numba.int64(load_relaxed(ck + _u64(8)))
        pos = numba.int64(load_acquire(b + PUB_POS))
        ok = at <= pos <= at + cap
        while ok and at < pos:
            off = at & mask
            room = cap - off
            if room < FRAME_HEADER:
                at += room
                continue
            w0 = _u64(0)
            for k in range(8):
                w0 |= _u64(mem[off + k]) << _u64(8 * k)
            if (w0 >> _u64(48)) != _u64(FRAME_MARK):
                ok = False
            elif ((w0 >> _u64(32)) & _u64(0xFFFF)) == _u64(TYPE_PAD):
                at += room
            else:
                total = (FRAME_HEADER + numba.int64(w0 & _u64(0xFFFFFFFF)) + FRAME_ALIGN - 1) & ~(
                    FRAME_ALIGN - 1
                )
                fseq = _u64(0)
                for k in range(8):
                    fseq |= _u64(mem[off + 8 + k]) << _u64(8 * k)
                if total > room or numba.int64(fseq) != seq:
                    ok = False
                else:
                    seq += 1
                    at += total
        fence_acquire()
        if ok and at == pos and load_relaxed(b + PUB_GEN) == g:
            return pos, seq
    return -1, -1


@numba.njit(cache=True, nogil=True)
def announce_claim(base: int, claim: int, nslots: int, floor: int) -> int:
    """Announce a new claim, then read the gating cursors: the producer's side of a Dekker
    hand-shake with a reader that re-attaches to a slot it had been dropped from (``revive``).

    The full fence orders the claim store before the cursor/state loads, so either the reviving
    reader sees this claim (and knows whether its frames are still intact) or this call sees the
    reader gating again (and the producer's limit respects it). Returns ``min_gating``.
    """
    b = _u64(base)
    store_relaxed(b + _u64(CLAIM), _u64(claim))
    fence_seq_cst()
    return min_gating(base, nslots, floor)


@numba.njit(cache=True, nogil=True)
def revive(state_addr: int, expected: int, new: int, base: int) -> int:
    """A reader's side of that hand-shake: swap its slot state, then read the claim.

    Returns the claim after the swap (a seq_cst compare-and-swap orders the state store before
    the claim load), or -1 if the slot's state was no longer ``expected``.
    """
    if not cas_u64(_u64(state_addr), _u64(expected), _u64(new)):
        return -1
    fence_seq_cst()
    return numba.int64(load_relaxed(_u64(base) + _u64(CLAIM)))


@numba.njit(cache=True, nogil=True)
def read_claim(base: int) -> int:
    """After reading frame bytes: the producer's claim (acquire fence first, seqlock-style)."""
    fence_acquire()
    return numba.int64(load_relaxed(_u64(base) + _u64(CLAIM)))


@numba.njit(cache=True, nogil=True)
def exchange(base: int, slot: int, pos: int, next_seq: int) -> int:
    """A consumer's turn-around in one call: hand back its cursor (store-release; a non-gating
    cursor is only informative) with the sequence expected there (a restart that finds its
    frames overwritten counts its loss from it), then acquire the producer's position.

    Returns that position, or ``-(position + 1)`` when the producer sleeps waiting for room and
    this caller won the right to wake it.
    """
    b = _u64(base)
    store_relaxed(b + _u64(SLOTS + slot * SLOT_SIZE + SL_SEQ), _u64(next_seq + 1))
    store_release(b + _u64(SLOTS + slot * SLOT_SIZE + SL_CURSOR), _u64(pos))
    fence_seq_cst()
    a = b + _u64(PSLEEP)
    wake = load_relaxed(a) != 0 and cas_u64(a, _u64(1), _u64(0))
    avail = numba.int64(load_acquire(b + _u64(PUB_POS)))
    return -avail - 1 if wake else avail


@numba.njit(cache=True, nogil=True)
def min_gating(base: int, nslots: int, floor: int) -> int:
    """The smallest cursor among gating consumers, or ``floor`` if none is smaller."""
    b = _u64(base)
    m = _u64(floor)
    for i in range(nslots):
        s = b + _u64(SLOTS + i * SLOT_SIZE)
        if load_acquire(s + _u64(SL_STATE)) == SLOT_GATING:
            c = load_acquire(s + _u64(SL_CURSOR))
            if c < m:
                m = c
    return numba.int64(m)


@numba.njit(cache=True, nogil=True)
def declare_sleep(addr: int) -> None:
    """Set a sleeping flag and make it visible before the caller re-checks the condition."""
    store_relaxed(_u64(addr), _u64(1))
    fence_seq_cst()


@numba.njit(cache=True, nogil=True)
def declare_slot_sleep(base: int, slot: int) -> None:
    """A consumer's "I am going to sleep": its slot's flag, then its bit in ``SLEEPERS`` (the
    producer's one-word summary), then a full fence before the caller re-checks the ring."""
    b = _u64(base)
    store_relaxed(b + _u64(SLOTS + slot * SLOT_SIZE + SL_SLEEPING), _u64(1))
    a = b + _u64(SLEEPERS)
    bit = _u64(1) << _u64(slot)
    while True:
        old = load_relaxed(a)
        if cas_u64(a, old, old | bit):
            break
    fence_seq_cst()


@numba.njit(cache=True, nogil=True)
def clear_slot_sleep(base: int, slot: int) -> None:
    """Undo ``declare_slot_sleep`` (awake again, or the slot changes hands)."""
    b = _u64(base)
    store_release(b + _u64(SLOTS + slot * SLOT_SIZE + SL_SLEEPING), _u64(0))
    a = b + _u64(SLEEPERS)
    keep = ~(_u64(1) << _u64(slot))
    while True:
        old = load_relaxed(a)
        if cas_u64(a, old, old & keep):
            break


@numba.njit(cache=True, nogil=True)
def clear_word(addr: int) -> None:
    store_release(_u64(addr), _u64(0))


@numba.njit(cache=True, nogil=True)
def store_word(addr: int, val: int) -> None:
    store_release(_u64(addr), _u64(val))


@numba.njit(cache=True, nogil=True)
def load_word(addr: int) -> int:
    return numba.int64(load_acquire(_u64(addr)))


@numba.njit(cache=True, nogil=True)
def store_fenced(addr: int, val: int) -> None:
    """Store, then a full fence: the store is visible before any load that follows."""
    store_release(_u64(addr), _u64(val))
    fence_seq_cst()


@numba.njit(cache=True, nogil=True)
def claim_slot(addr: int, expected: int, new: int) -> bool:
    return cas_u64(_u64(addr), _u64(expected), _u64(new))


@numba.njit(cache=True, nogil=True)
def scan(
    data: int,
    capacity: int,
    pos: int,
    end: int,
    next_seq: int,
    max_payload: int,
    out: np.ndarray,
) -> tuple[int, int, int, int]:
    """Index the frames in [pos, end) into ``out`` rows (data offset, length, type, seq).

    Returns (count, new pos, new next_seq, error code). Stops early at ``len(out)`` frames or at
    the first frame that fails validation (bad mark, impossible length, unexpected sequence), so
    a corrupted ring gives an error code, never an endless loop or a read out of bounds.
    """
    mem = numba.carray(u8_ptr(_u64(data)), capacity)
    mask = capacity - 1
    n = 0
    max_n = out.shape[0]
    while pos < end and n < max_n:
        off = pos & mask
        room = capacity - off
        if room < FRAME_HEADER:
            pos += room
            continue
        w0 = _u64(0)
        for k in range(8):
            w0 |= _u64(mem[off + k]) << _u64(8 * k)
        seq = _u64(0)
        for k in range(8):
            seq |= _u64(mem[off + 8 + k]) << _u64(8 * k)
        length = numba.int64(w0 & _u64(0xFFFFFFFF))
        ftype = numba.int64((w0 >> _u64(32)) & _u64(0xFFFF))
        mark = numba.int64(w0 >> _u64(48))
        if mark != FRAME_MARK:
            return n, pos, next_seq, ERR_MARK
        total = (FRAME_HEADER + length + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1)
        if ftype == TYPE_PAD:
            if total != room:
                return n, pos, next_seq, ERR_PAD
            pos += room
            continue
        if length > max_payload or total > room:
            return n, pos, next_seq, ERR_LENGTH
        if numba.int64(seq) != next_seq:
            return n, pos, next_seq, ERR_SEQ
        out[n, 0] = off + FRAME_HEADER
        out[n, 1] = length
        out[n, 2] = ftype
        out[n, 3] = next_seq
        n += 1
        next_seq += 1
        pos += total
    return n, pos, next_seq, ERR_NONE


@numba.njit(cache=True, nogil=True)
def write_batch(
    data: int,
    capacity: int,
    pos: int,
    limit: int,
    seq: int,
    types: np.ndarray,
    payload: np.ndarray,
    offsets: np.ndarray,
    start: int,
) -> tuple[int, int, int]:
    """Write frames ``start..`` (payload[offsets[i]:offsets[i+1]], type types[i]) until ``limit``.

    Returns (next index, new pos, new seq). Padding frames are written at wrap. Nothing is
    published: the caller commits once for the whole batch.
    """
    mem = numba.carray(u8_ptr(_u64(data)), capacity)
    mask = capacity - 1
    i = start
    n = types.shape[0]
    while i < n:
        length = offsets[i + 1] - offsets[i]
        total = (FRAME_HEADER + length + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1)
        off = pos & mask
        room = capacity - off
        need = total if total <= room else room + total
        if pos + need > limit:
            break
        if total > room:
            if room >= FRAME_HEADER:
                _write_header(mem, off, room - FRAME_HEADER, TYPE_PAD, 0)
            pos += room
            off = 0
        _write_header(mem, off, length, numba.int64(types[i]), seq)
        src = offsets[i]
        dst = off + FRAME_HEADER
        mem[dst : dst + length] = payload[src : src + length]  # a memcpy, not a byte loop
        pos += total
        seq += 1
        i += 1
    return i, pos, seq


@numba.njit(cache=True, nogil=True, inline="always")
def _write_header(mem: np.ndarray, off: int, length: int, ftype: int, seq: int) -> None:
    w0 = _u64(length) | (_u64(ftype) << _u64(32)) | (_u64(FRAME_MARK) << _u64(48))
    for k in range(8):
        mem[off + k] = numba.uint8((w0 >> _u64(8 * k)) & _u64(0xFF))
    s = _u64(seq)
    for k in range(8):
        mem[off + 8 + k] = numba.uint8((s >> _u64(8 * k)) & _u64(0xFF))


@numba.njit(cache=True, nogil=True)
def checksum_frames(data: int, capacity: int, index: np.ndarray, n: int, h0: int) -> int:
    """FNV-1a over the payloads of ``n`` indexed frames, continuing from ``h0`` (pass
    ``FNV_OFFSET`` first): the result over a stream does not depend on how it was batched."""
    mem = numba.carray(u8_ptr(_u64(data)), capacity)
    h = _u64(h0)
    for r in range(n):
        off = index[r, 0]
        for k in range(index[r, 1]):
            h = (h ^ _u64(mem[off + k])) * _u64(0x100000001B3)
    return numba.int64(h & _u64(0x7FFFFFFFFFFFFFFF))


FNV_OFFSET = 0xCBF29CE484222325 & 0x7FFFFFFFFFFFFFFF


@numba.njit(cache=True, nogil=True)
def checksum_bytes(buf: np.ndarray, h0: int) -> int:
    """The same FNV-1a over a contiguous byte array (what a producer sent)."""
    h = _u64(h0)
    for k in range(buf.shape[0]):
        h = (h ^ _u64(buf[k])) * _u64(0x100000001B3)
    return numba.int64(h & _u64(0x7FFFFFFFFFFFFFFF))
