"""Byte layout of a ring region, shared by the Python side and the numba kernels.

Each word that one process writes and another polls sits on its own 128-byte line (Apple silicon
prefetches 64-byte lines in pairs), so the producer's sequence, the claim word, and every
consumer's cursor never share a cache line: no false sharing between cores.
"""

from __future__ import annotations

RING_LAYOUT_VERSION = 6

LINE = 128

# ring configuration (written once by the creator)
CONF = 128
CONF_CAPACITY = CONF + 0
CONF_MAX_CONSUMERS = CONF + 8
CONF_MAX_PAYLOAD = CONF + 16
CONF_DATA_OFFSET = CONF + 24

# producer publication: the position alone, one store per publication (release: the frames
# before it are complete). Every frame header carries its sequence number, so the sequence at
# the position is found by walking the frames from a checkpoint (pos, seq) the producer writes on
# its slow path (at least once per claim renewal, i.e. per capacity / 8 bytes): into the slot the
# generation word does not name, then the generation bumped (one store). A producer killed at any
# point leaves a published position and a whole checkpoint behind it (shm.kernels.snapshot).
PUB = 256
PUB_GEN = PUB + 0
PUB_POS = PUB + 8
PUB_PID = PUB + 24
PUB_CLOSED = PUB + 32
PUB_HEARTBEAT_NS = PUB + 40
PUB_CK = PUB + 48  # checkpoint slot k (k = generation & 1): (pos, seq) at PUB_CK + 16 k

# how far the producer may have overwritten: non-gating readers validate their frames against it
CLAIM = 384
# the producer declares here that it sleeps on the "space" semaphore (block strategy)
PSLEEP = 512
# bit i set while consumer slot i declares it sleeps (its SL_SLEEPING flag): the producer's one
# load per publication that tells it whether any flag needs looking at (rarely written, so it
# shares PSLEEP's line)
SLEEPERS = PSLEEP + 8

SLOTS = 640
SLOT_SIZE = LINE
SL_STATE = 0
SL_PID = 8
SL_CURSOR = 16
SL_SLEEPING = 24
SL_ATTACH_NS = 32  # wall clock (ns) of the attach: tells the owner from a later user of its pid
SL_MISSED = 40
SL_RECEIVED = 48
SL_SEQ = 56  # 1 + the sequence of the frame at the cursor, handed back with it (0: unknown)
SL_NAME = 64
SL_NAME_LEN = 32
SL_WAKE = 96  # name of the semaphore to post when this consumer sleeps (block strategy)
SL_WAKE_LEN = 32

# consumer slot states
SLOT_FREE = 0
SLOT_GATING = 1
SLOT_NONGATING = 2
SLOT_DEAD = 3  # declared dead by the producer: no longer gates
SLOT_CLOSED = 4  # detached cleanly
SLOT_STATE_NAMES = {0: "free", 1: "gating", 2: "non-gating", 3: "dead", 4: "closed"}

# frames: [u32 length][u16 type][u16 mark][u64 seq][payload][pad to 8]
FRAME_HEADER = 16
FRAME_ALIGN = 8
FRAME_MARK = 0xA55A  # a frame header without it is corruption, not data
TYPE_PAD = 0xFFFF
MAX_TYPE = 0xFFFE


def data_offset(max_consumers: int) -> int:
    """Start of the data area: after the slots, page aligned."""
    end = SLOTS + max_consumers * SLOT_SIZE
    return (end + 4095) & ~4095


def frame_size(payload_len: int) -> int:
    return (FRAME_HEADER + payload_len + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1)
