"""The supervisor's messages to the control ring: in order, never dropped, never blocking it.

The control ring gates on every worker, so one stopped worker (SIGSTOP, a debugger, a hung
native call) or a dead one within its grace period holds the ring back, and a burst of operator
commands then fills it. The supervisor must not wait there: its loop is what notices the hung
worker and replaces it, which is what frees the ring. So a message that finds no room waits
here, behind any earlier one, and goes out as soon as the ring has room again; what is still
waiting when the engine stops is handed back (audit records then go straight to the record).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from shm.ring import RingFullError

log = logging.getLogger("gekko.supervisor")


class ControlOutbox:
    """A FIFO in front of the control ring's producer (whose ``timeout_s`` should be short)."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._queue: deque[tuple[Any, Callable[[], None] | None]] = deque()
        self._full_since = 0.0
        self.waited = 0  # messages that found the ring full and waited here

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, msg: Any, on_sent: Callable[[], None] | None = None) -> bool:
        """Publish ``msg`` after everything queued before it; True once it is on the ring."""
        if self._queue:
            self._queue.append((msg, on_sent))
            self.waited += 1
            self.flush()
            return False
        try:
            self._producer.publish(msg)
        except RingFullError as exc:
            self._queue.append((msg, on_sent))
            self.waited += 1
            self._note_full(exc)
            return False
        if on_sent is not None:
            on_sent()
        return True

    def flush(self) -> int:
        """Publish what waits, in order, while there is room; the number still waiting."""
        while self._queue:
            msg, on_sent = self._queue[0]
            try:
                self._producer.publish(msg)
            except RingFullError as exc:
                self._note_full(exc)
                return len(self._queue)
            self._queue.popleft()
            if on_sent is not None:
                on_sent()
        if self._full_since:
            log.warning(
                "control ring has room again after %.1fs: every waiting message sent",
                time.monotonic() - self._full_since,
            )
            self._full_since = 0.0
        return 0

    def drain(self, timeout_s: float) -> int:
        """Flush until empty or ``timeout_s`` has passed; the number still waiting."""
        deadline = time.monotonic() + timeout_s
        while self.flush() and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self._queue)

    def take_all(self) -> list[Any]:
        """What never reached the ring, in order (the queue is emptied)."""
        left = [msg for msg, _ in self._queue]
        self._queue.clear()
        return left

    def _note_full(self, exc: RingFullError) -> None:
        if not self._full_since:
            self._full_since = time.monotonic()
            log.warning("control ring full (%s): messages wait in order", exc)
