"""Shared-memory transport, knowing nothing of trading (DESIGN §3).

- ``shm.ring``: single-producer / multi-consumer rings of variable-length frames (the roles in
  ``shm.producer`` and ``shm.consumer``; the caller passes the consumer its decoder).
- ``shm.wait``: wait strategies (spin, yield, backoff, block).
- ``shm.seqlock``: one-writer, lock-free-reader tables of numpy records.
- ``shm.metrics``: counters and log-linear latency histograms.
- ``shm.region``: region lifecycle (create, attach, validate, unlink, stale clean-up).
"""

from shm.region import LayoutVersionError, RegionError, cleanup_stale
from shm.ring import (
    FrameTooLargeError,
    ProducerDeadError,
    Ring,
    RingCorruptedError,
    RingError,
    RingFullError,
)
from shm.wait import WaitStrategy

__all__ = [
    "FrameTooLargeError",
    "LayoutVersionError",
    "ProducerDeadError",
    "RegionError",
    "Ring",
    "RingCorruptedError",
    "RingError",
    "RingFullError",
    "WaitStrategy",
    "cleanup_stale",
]
