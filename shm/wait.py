"""Wait strategies: what a producer or consumer does while it has nothing to do.

The choice trades latency for CPU: ``spin`` burns a (pinned) core and reacts in nanoseconds;
``yield`` gives the core to others between checks; ``backoff`` spins, then yields, then sleeps
with growing pauses, so an idle process costs little; ``block`` sleeps on a POSIX semaphore that
the other side posts *only* when it sees a declared sleeper, so the hot path pays one relaxed load
for it and nothing else; ``poll`` sleeps a fixed interval between checks and never declares
itself asleep, so a producer never posts for it and it wakes at most once per interval however
busy the ring (for background readers: the recorder, the bridge). Every wait has a
deadline: shutdown never hangs on an empty ring.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Literal

import msgspec
import posix_ipc

WaitKind = Literal["spin", "yield", "backoff", "block", "poll"]
WAIT_KINDS: tuple[str, ...] = ("spin", "yield", "backoff", "block", "poll")

_sched_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class WaitStrategy(msgspec.Struct, frozen=True):
    """How to idle. ``idle(n)`` is called with the number of idle rounds so far in this wait.

    - ``spin_rounds``: rounds of pure busy-polling before anything else (all kinds but spin
      stop spinning after this many).
    - ``yield_rounds``: rounds of ``sched_yield`` after spinning (backoff).
    - ``min_sleep_s`` / ``max_sleep_s``: the backoff's sleeps double from min to max.
    - ``block_slice_s``: the longest single semaphore wait of ``block`` before it re-checks
      deadlines and the other side's liveness.
    - ``poll_interval_s``: the one sleep of every ``poll`` round (no spinning, no yielding: a
      background reader should cost nothing between its visits).
    """

    kind: str = "backoff"
    spin_rounds: int = 200
    yield_rounds: int = 50
    min_sleep_s: float = 20e-6
    max_sleep_s: float = 1e-3
    block_slice_s: float = 0.05
    poll_interval_s: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in WAIT_KINDS:
            raise ValueError(
                f"wait strategy must be one of {', '.join(WAIT_KINDS)}, not {self.kind!r}"
            )
        if self.spin_rounds < 0 or self.yield_rounds < 0:
            raise ValueError("spin_rounds and yield_rounds must be >= 0")
        if not (0 < self.min_sleep_s <= self.max_sleep_s):
            raise ValueError("need 0 < min_sleep_s <= max_sleep_s")
        if self.block_slice_s <= 0:
            raise ValueError("block_slice_s must be > 0")
        if not self.poll_interval_s > 0:
            raise ValueError("poll_interval_s must be > 0")

    @property
    def blocks(self) -> bool:
        """True when one idle round may be long (a semaphore wait, a poll sleep).

        Wait loops then check their deadline and the other side's liveness every round rather
        than every 64th: 64 rounds of a 10 ms poll would overshoot a heartbeat many times over.
        """
        return self.kind == "block" or self.kind == "poll"

    @property
    def uses_semaphore(self) -> bool:
        """True when, past the spin phase, the waiter sleeps on a semaphore a producer posts.

        Only ``block``: a ``poll`` reader never raises its sleeping flag, so no producer ever
        pays a ``sem_post`` for it.
        """
        return self.kind == "block"

    def should_block(self, n: int) -> bool:
        return self.kind == "block" and n >= self.spin_rounds

    def idle(self, n: int) -> None:
        """One idle round (``block`` waits are done by the ring, which owns the semaphore)."""
        kind = self.kind
        if kind == "spin":
            return
        if kind == "yield":
            _sched_yield()
            return
        if kind == "poll":
            time.sleep(self.poll_interval_s)
            return
        if n < self.spin_rounds:
            return
        if kind == "block":  # the ring did not block (no semaphore): degrade to a short sleep
            time.sleep(self.min_sleep_s)
            return
        k = n - self.spin_rounds
        if k < self.yield_rounds:
            _sched_yield()
            return
        k -= self.yield_rounds
        time.sleep(min(self.min_sleep_s * (1 << min(k, 20)), self.max_sleep_s))


def make_wait(kind: str | WaitStrategy, poll_interval_s: float | None = None) -> WaitStrategy:
    """A strategy from its name (config.toml) or an existing one.

    ``block`` spins only briefly before sleeping: its point is to leave the cores to others,
    and on a small machine a long spin phase in every idle process is what makes them late.
    ``poll_interval_s`` (config ``poll_interval_ms``) only matters to ``poll``.
    """
    if isinstance(kind, WaitStrategy):
        return kind
    extra = {} if poll_interval_s is None else {"poll_interval_s": poll_interval_s}
    if kind == "block":
        return WaitStrategy(kind=kind, spin_rounds=20, **extra)
    return WaitStrategy(kind=kind, **extra)


def sem_wait(sem: posix_ipc.Semaphore, timeout: float) -> None:
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
