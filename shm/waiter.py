"""Waiting on several rings at once: one semaphore per process, posted by any producer.

A worker process reads several rings (market data, execution events, control). With the
``block`` strategy it must sleep until *any* of them has data: each of its consumer slots names the
process's semaphore as its wake-up, the waiter raises every slot's sleeping flag, re-checks every
ring (the flags are visible before the re-check: seq_cst fence), then sleeps. A producer that
publishes into any of those rings sees the flag and posts the one semaphore.

With the ``poll`` strategy there is no semaphore and no flag: the waiter sleeps its interval
between checks, so the producers never post for it (the point for background readers: a busy
market-data ring does not cost the feed a ``sem_post`` nor the machine a wake-up per tick).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import posix_ipc

from shm import fastpath
from shm.consumer import Consumer
from shm.wait import WaitStrategy, sem_wait


class Waiter:
    """Idles by ``wait`` until one of ``consumers`` has a frame, or a timeout."""

    def __init__(self, consumers: Sequence[Consumer], wait: WaitStrategy, sem_name: str) -> None:
        self.consumers = list(consumers)
        self.wait = wait
        self.sem_name = sem_name
        self._sem: posix_ipc.Semaphore | None = None
        if wait.uses_semaphore:
            self._sem = posix_ipc.Semaphore(
                sem_name, posix_ipc.O_CREAT, mode=0o600, initial_value=0
            )
            for c in self.consumers:
                c.set_wake(sem_name)
                c.declare_sleep()  # load the kernels now, not on the first sleep
                c.clear_sleep()
        self.sleeps = 0

    def ready(self) -> bool:
        return any(c.has_data() for c in self.consumers)

    def wait_any(self, timeout_s: float) -> bool:
        """True as soon as a consumer has data; False after ``timeout_s``."""
        if self.ready():
            return True
        deadline = time.monotonic() + timeout_s
        w = self.wait
        n = 0
        while True:
            if self._sem is not None and w.should_block(n):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for c in self.consumers:
                    c.declare_sleep()
                fastpath.heavy_barrier()  # producers skip their fence before checking (fastpath)
                if self.ready():
                    self._clear()
                    return True
                self.sleeps += 1
                sem_wait(self._sem, min(w.block_slice_s, remaining))
                self._clear()
            elif w.kind == "poll":
                # one interval, never past the deadline (the caller's heartbeat depends on it)
                time.sleep(max(0.0, min(w.poll_interval_s, deadline - time.monotonic())))
            else:
                w.idle(n)
            n += 1
            if self.ready():
                return True
            if (n & 63 == 0 or w.blocks) and time.monotonic() >= deadline:
                return False

    def _clear(self) -> None:
        for c in self.consumers:
            c.clear_sleep()

    def close(self, unlink: bool = True) -> None:
        if self._sem is not None:
            self._sem.close()
            if unlink:
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_semaphore(self.sem_name)
            self._sem = None
