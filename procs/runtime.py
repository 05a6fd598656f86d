"""What every worker process shares: the ring topology, heartbeats, metrics, pinning, shutdown.

The topology (DESIGN §2) is declared once, here, as data: which process produces each ring and
which processes read it, gating or not. The supervisor creates the regions from it (so gating
readers are registered before any producer writes: nothing is missed by a reader that starts
late, and a restarted reader resumes from its cursor); the workers attach by the same names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shm.metrics import MetricsRegion
from shm.ring import Consumer, Producer, Ring
from shm.seqlock import SeqlockTable
from shm.wait import make_wait
from shm.waiter import Waiter

log = logging.getLogger("gekko.procs")

WORKERS = ("feed", "strategy", "risk", "exec")
SUPERVISOR = "supervisor"


class SupervisorGone(SystemExit):
    """Raised in a worker whose supervisor died: it exits (cleanly) instead of running orphaned."""

    def __init__(self, ppid: int) -> None:
        super().__init__(3)
        self.ppid = ppid


@dataclass(frozen=True)
class RingSpec:
    name: str
    capacity_key: str  # attribute of cfg.rings
    producer: str
    consumers: tuple[tuple[str, bool], ...]  # (reader, gating)


TOPOLOGY: tuple[RingSpec, ...] = (
    # trading readers gate market data: a strategy must see every tick for its orders to be
    # reproducible; the supervisor's monitor may fall behind and only counts what it missed
    # risk needs only the latest prices: it reads them from the feed's top-of-book table
    # (the supervisor counts ticks from the feed's metrics: it never decodes market data)
    RingSpec("md", "md_capacity", "feed", (("strategy", True), ("exec", True))),
    RingSpec("intents", "intents_capacity", "strategy", (("risk", True),)),
    RingSpec("orders", "orders_capacity", "risk", (("exec", True), ("supervisor", True))),
    RingSpec("events", "events_capacity", "exec", (("strategy", True), ("risk", True), ("supervisor", True))),
    RingSpec("risk", "risk_capacity", "risk", (("strategy", True), ("supervisor", True))),
    RingSpec("control", "control_capacity", "supervisor", tuple((w, True) for w in WORKERS)),
)
RING_BY_NAME = {r.name: r for r in TOPOLOGY}

# health table: one row per worker, written by that worker, read by the supervisor
STATE_STARTING, STATE_READY, STATE_STOPPING, STATE_STOPPED = 1, 2, 3, 4
HEALTH_DTYPE = np.dtype(
    [
        ("pid", "<i8"),
        ("heartbeat_ns", "<i8"),
        ("state", "<i8"),
        ("incarnation", "<i8"),
        ("processed", "<i8"),
        ("started_ns", "<i8"),
    ]
)

# top-of-book table: one row per instrument, written by the feed, read by risk (and monitors)
TOB_DTYPE = np.dtype(
    [
        ("instrument_id", "<i8"),
        ("bid_px", "<i8"),
        ("bid_qty", "<i8"),
        ("ask_px", "<i8"),
        ("ask_qty", "<i8"),
        ("last_px", "<i8"),
        ("ts_recv", "<i8"),
    ]
)

# positions table: one row per instrument, written by exec from its fills
POSITION_DTYPE = np.dtype(
    [
        ("instrument_id", "<i8"),
        ("position", "<i8"),
        ("fills", "<i8"),
        ("mark_px", "<i8"),
        ("avg_px", "<f8"),
        ("realized", "<f8"),
        ("unrealized", "<f8"),
        ("fees", "<f8"),
    ]
)

COUNTERS: dict[str, list[str]] = {
    "feed": ["md_out", "md_rejected", "book_crossed", "book_gaps"],
    "strategy": ["md_in", "intents_out", "events_in", "strategy_errors"],
    "risk": ["intents_in", "approved", "rejected", "events_in", "kills"],
    "exec": ["orders_in", "new_orders", "events_out", "fills", "venue_rejects", "anomalies", "md_in"],
}
HISTOGRAMS: dict[str, list[str]] = {
    "feed": ["publish_ns"],
    "strategy": ["tick_to_intent_ns"],
    "risk": ["tick_to_approval_ns"],
    "exec": ["tick_to_order_ns"],
}


def metrics_name(worker: str) -> str:
    return f"m{worker}"


def waiter_sem_name(engine_id: str, worker: str) -> str:
    return f"/gk_{engine_id}_w{worker}"


def pin_to_cpus(name: str, cpus: list[int]) -> str:
    """Pin this process to ``cpus``; where the OS cannot, say so and carry on."""
    if not cpus:
        return "not pinned"
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:
        log.warning("%s: this OS cannot pin processes to CPUs (no sched_setaffinity); running unpinned", name)
        return "unpinnable"
    try:
        setter(0, set(cpus))
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot pin to CPUs %s (%s); running unpinned", name, cpus, exc)
        return "pin failed"
    return f"pinned to {sorted(cpus)}"


class Worker:
    """A worker's handle on the shared world: rings, its health row, its metrics."""

    def __init__(self, name: str, cfg: Any, engine_id: str, incarnation: int = 0) -> None:
        self.name = name
        self.cfg = cfg
        self.engine_id = engine_id
        self.incarnation = incarnation
        proc_cfg = cfg.processes.get(name)
        self.pinning = pin_to_cpus(name, list(proc_cfg.cpus))
        self.wait = make_wait(proc_cfg.wait)
        self.row = WORKERS.index(name)
        self.health = SeqlockTable.attach(engine_id, "health", HEALTH_DTYPE)
        self.metrics = MetricsRegion.attach(engine_id, metrics_name(name))
        self.consumers: dict[str, Consumer] = {}
        self.producers: dict[str, Producer] = {}
        self._rings: dict[str, Ring] = {}
        self.processed = 0
        self._hb_interval_ns = int(cfg.supervisor.heartbeat_interval_s * 1e9)
        self._next_beat = 0
        self.started_ns = time.monotonic_ns()
        # the supervisor: if it dies, so do we (no orphans). It tells us its pid, because it may
        # already be gone by the time this (slow to import) process gets here
        self._ppid = int(os.environ.get("GEKKO_SUPERVISOR_PID", "0")) or os.getppid()
        self._orphaned = False
        self.state = STATE_STARTING
        self.beat(force=True)  # raises SupervisorGone at once if the supervisor already died

    def _ring(self, name: str) -> Ring:
        r = self._rings.get(name)
        if r is None:
            r = self._rings[name] = Ring.attach(self.engine_id, name)
        return r

    def consume(self, ring: str) -> Consumer:
        spec = RING_BY_NAME[ring]
        gating = dict(spec.consumers)[self.name]
        c = self._ring(ring).consumer(self.name, gating=gating, wait=self.wait)
        self.consumers[ring] = c
        return c

    def produce(self, ring: str) -> Producer:
        if RING_BY_NAME[ring].producer != self.name:
            raise ValueError(f"{self.name} is not the producer of ring {ring}")
        p = self._ring(ring).producer(
            wait=self.wait,
            timeout_s=self.cfg.rings.publish_timeout_s,
            dead_reader_grace_s=self.cfg.rings.dead_reader_grace_s,
        )
        self.producers[ring] = p
        return p

    def waiter(self, *consumers: Consumer) -> Waiter:
        return Waiter(consumers, self.wait, waiter_sem_name(self.engine_id, self.name))

    def beat(self, state: int | None = None, force: bool = False) -> None:
        """Stamp the heartbeat (at most once per interval unless forced or the state changes)."""
        now = time.monotonic_ns()
        if state is not None and state != self.state:
            self.state = state
            force = True
        if not force and now < self._next_beat:
            return
        self._next_beat = now + self._hb_interval_ns
        if self._orphaned:
            return  # already leaving: let the clean-up run
        if os.getppid() != self._ppid:
            self._orphaned = True
            log.error("%s: the supervisor (pid %d) is gone: exiting", self.name, self._ppid)
            raise SupervisorGone(self._ppid)
        self.health.write(
            self.row, (os.getpid(), now, self.state, self.incarnation, self.processed, self.started_ns)
        )

    def wait_for_peers(self, state: int, timeout_s: float) -> bool:
        """Wait until every other worker's health row shows ``state`` (beating meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(int(self.health.read_tuple(i)[2]) >= state for i in range(len(WORKERS)) if i != self.row):
                return True
            self.beat()
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Clean exit: close our producers (readers see the end), stop gating as a reader."""
        for p in self.producers.values():
            with contextlib.suppress(Exception):
                p.close()
        for c in self.consumers.values():
            with contextlib.suppress(Exception):
                c.leave()
        self.beat(STATE_STOPPED)


def monotonic_ns() -> int:
    return time.monotonic_ns()
