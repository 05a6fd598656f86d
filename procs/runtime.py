"""What every worker process shares: the ring topology, heartbeats, metrics, pinning, shutdown.

The topology (DESIGN §2) is declared once, as data, in ``engine.topology`` (re-exported here):
which process produces each ring and which processes read it, gating or not. The supervisor
creates the regions from it (so gating readers are registered before any producer writes:
nothing is missed by a reader that starts late, and a restarted reader resumes from its cursor);
the workers attach by the same names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.codec import MESSAGE_DECODER
from engine.md_rejects import REASONS as MD_REJECT_REASONS
from engine.topology import RING_BY_NAME, TOPOLOGY, WORKERS, RingSpec  # noqa: F401 (re-exported)
from shm.metrics import MetricsRegion
from shm.ring import Consumer, Producer, Ring
from shm.seqlock import SeqlockTable
from shm.wait import make_wait
from shm.waiter import Waiter

log = logging.getLogger("gekko.procs")

# workers started only when their config enables them (``worker_enabled``). Each has a health row
# after the core ones; the core workers never wait for them, and a disabled one has no ring
# readers at all (``topology``), so it can never gate a producer.
OPTIONAL_WORKERS = ("bridge", "infer", "recorder")
ALL_WORKERS = WORKERS + OPTIONAL_WORKERS


#: a worker's exit code for "this run cannot go on" (e.g. a bad replay row under
#: ``[market] on_bad_row = "fail"``): the supervisor does not restart it, stops the engine and
#: exits non-zero, with the reason the worker wrote to ``stop_reason_path`` as its stop reason
EXIT_STOP_RUN = 4


def stop_reason_path(cfg: Any, engine_id: str, worker: str) -> Path:
    """Where a worker exiting with ``EXIT_STOP_RUN`` leaves its reason for the supervisor."""
    return Path(cfg.engine.var_dir) / f"gekko-{engine_id}.{worker}.stop"


class SupervisorGone(SystemExit):
    """Raised in a worker whose supervisor died: it exits (cleanly) instead of running orphaned."""

    def __init__(self, ppid: int) -> None:
        super().__init__(3)
        self.ppid = ppid


def worker_enabled(cfg: Any, name: str) -> bool:
    """Is worker ``name`` part of this engine? Core workers always; optional ones by config."""
    if name in WORKERS:
        return True
    if name == "bridge":
        return bool(cfg.bridge.enabled)
    if name == "infer":
        return bool(cfg.inference.enabled)
    if name == "recorder":
        return cfg.storage.postgres.mode != "off"
    return False


def enabled_workers(cfg: Any) -> tuple[str, ...]:
    return tuple(w for w in ALL_WORKERS if worker_enabled(cfg, w))


def topology(cfg: Any) -> tuple[RingSpec, ...]:
    """The rings of this engine: ``TOPOLOGY`` plus the readers and rings of enabled optional workers.

    The bridge reads the rings listed in ``[bridge] publish`` (gating or not, as configured) and
    produces the "remote" ring: messages from other engines, read (gating) by the strategy process
    (its strategies' ``on_remote`` hook) and the supervisor (``remote.jsonl``).
    """
    specs = list(TOPOLOGY)
    if worker_enabled(cfg, "bridge"):
        bridged = set(cfg.bridge.publish)
        specs = [
            RingSpec(
                s.name,
                s.capacity_key,
                s.producer,
                (*s.consumers, ("bridge", bool(cfg.bridge.gating))),
            )
            if s.name in bridged
            else s
            for s in specs
        ]
        specs = [
            RingSpec(s.name, s.capacity_key, s.producer, (*s.consumers, ("bridge", True)))
            if s.name == "control"
            else s
            for s in specs
        ]
        specs.append(
            RingSpec(
                "remote", "events_capacity", "bridge", (("strategy", True), ("supervisor", True))
            )
        )
    if worker_enabled(cfg, "infer"):
        # infer reads market data NON-gating: a slow model must never hold the feed back (a lap
        # is counted); the strategy gates the forecasts so it sees every one of them
        specs = [
            RingSpec(
                s.name, s.capacity_key, s.producer, (*s.consumers, ("infer", s.name == "control"))
            )
            if s.name in ("md", "control")
            else s
            for s in specs
        ]
        # the supervisor reads them non-gating (the model served and the last forecast's time,
        # for the exporter): never a reason for infer to wait
        specs.append(
            RingSpec(
                "forecasts",
                "forecasts_capacity",
                "infer",
                (("strategy", True), ("supervisor", False)),
            )
        )
    if worker_enabled(cfg, "recorder"):
        # the recorder (PostgreSQL) must see every order, event and risk event: it gates them;
        # market data it reads non-gating (a slow database never holds the feed back: laps counted)
        # forecasts (when infer runs): only infer's ModelRegistered records are kept, gating so
        # that none is skipped (the audit trail and the models table, ops/store/audit.py)
        gating = {
            "md": False,
            "orders": True,
            "events": True,
            "risk": True,
            "control": True,
            "forecasts": True,
        }
        specs = [
            RingSpec(
                s.name, s.capacity_key, s.producer, (*s.consumers, ("recorder", gating[s.name]))
            )
            if s.name in gating
            else s
            for s in specs
        ]
    return tuple(specs)


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
        ("mark_px", "<i8"),  # a perpetual's venue mark (MarkPrice; 0: none)
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
        # a hedging venue's legs (engine.hedge_legs): long lots, short lots (<= 0) and their
        # average prices in ticks; elsewhere the net position on its side (its avg_px)
        ("long_pos", "<i8"),
        ("short_pos", "<i8"),
        ("long_avg", "<f8"),
        ("short_avg", "<f8"),
    ]
)

#: the feed's counter of each market-data reject reason (engine.md_rejects.REASONS); their sum
#: is ``md_rejected``
MD_REJECT_COUNTERS = {r: f"md_rej_{r}" for r in MD_REJECT_REASONS}

COUNTERS: dict[str, list[str]] = {
    "feed": [
        "md_out",
        "md_rejected",
        *MD_REJECT_COUNTERS.values(),
        "book_crossed",
        "book_gaps",
        "exchange_status",  # the venue's status messages published (halts, breaker, reopenings)
        "breaker_trips",
        "halt_withheld_trades",
        "md_gaps",  # a live venue's sequence gaps (each cost a book resync)
        "md_resyncs",  # books rebuilt from a fresh snapshot (gaps and reconnects)
        "md_reconnects",  # sessions reopened (a drop, a silent stream, an error)
        "md_state",  # the live venue's market data: 0 connected, 1 resyncing, 2 down
        "md_states",  # several live venues: each one's state (procs.venue_status.md_states)
        "md_paced",  # the simulated market's messages taken beside live venues (restart point)
    ],
    "strategy": [
        "md_in",
        "intents_out",
        "events_in",
        "strategy_errors",
        "remote_in",
        "remote_duplicates",
        "md_skipped",  # ticks and forecasts skipped to catch up ([processes.strategy] max_backlog_ms)
        "backlog_episodes",  # times the strategy found itself behind and skipped
    ],
    "risk": [
        "intents_in",
        "approved",
        "rejected",
        "events_in",
        "kills",
        "state_changes",
        "instrument_halts",
        "instrument_resumes",
        "protective_orders",
        "orders_restored",  # open orders a restarted risk took from the record or exec
        "rejected_stale",  # intents refused for the age of their data ([risk] max_intent_age_ms)
        "har_fallbacks",  # [risk] volatility = "har": instrument-intervals on the window's sigma
        "rv_fine_instruments",  # ... instruments whose realised variance came from finer prices
    ],
    "exec": [
        "orders_in",
        "new_orders",
        "events_out",
        "fills",
        "venue_rejects",
        "anomalies",
        "md_in",
        "stale_orders",  # new orders refused on arrival: data older than max_intent_age_ms
    ],
    "infer": [
        "md_in",
        "md_missed",
        "bars",
        "runs",
        "forecasts_out",
        "model_swaps",
        "model_rejects",
        "drift_events",
        "infer_errors",
    ],
    "recorder": [
        "md_in",
        "md_missed",
        "records_in",
        "rows_written",
        "journaled",
        "journal_backlog",
        "db_errors",
        "replayed",
        "ignored",
        "db_rejected",
        "md_dropped",
    ],
    "bridge": [
        "forwarded",
        "xadd_duplicates",
        "received",
        "remote_duplicates",
        "redis_errors",
        "state_writes",
        "remote_bad_mac",  # remote frames dropped: MAC missing or wrong (procs/bridge_auth.py)
        "remote_replayed",  # ... a sequence repeated or gone back
        "remote_unknown_engine",  # ... from an engine not in [bridge.peers]
    ],
}
HISTOGRAMS: dict[str, list[str]] = {
    "feed": ["publish_ns"],
    "strategy": ["tick_to_intent_ns"],
    "risk": ["tick_to_approval_ns"],
    "exec": ["tick_to_order_ns"],
    "bridge": ["xadd_ns"],
    "recorder": ["flush_ns", "md_lag_ns"],
    "infer": ["run_ns", "tick_to_forecast_ns"],
}


def metrics_name(worker: str) -> str:
    return f"m{worker}"


def waiter_sem_name(engine_id: str, worker: str, incarnation: int = 0) -> str:
    """The worker's wake-up semaphore: one per incarnation, because producers keep the ones they
    post open, and a predecessor's (unlinked when it exited) would swallow the restart's."""
    return f"/gk_{engine_id}_w{worker}" + (str(incarnation) if incarnation else "")


def pin_to_cpus(name: str, cpus: list[int]) -> str:
    """Pin this process to ``cpus``; where the OS cannot, say so and carry on."""
    if not cpus:
        return "not pinned"
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:
        log.warning(
            "%s: this OS cannot pin processes to CPUs (no sched_setaffinity); running unpinned",
            name,
        )
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
        self.wait = make_wait(proc_cfg.wait, poll_interval_s=proc_cfg.poll_interval_ms / 1e3)
        self.row = ALL_WORKERS.index(name)
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

    def _spec(self, ring: str) -> RingSpec:
        for spec in topology(self.cfg):
            if spec.name == ring:
                return spec
        raise KeyError(f"no ring {ring!r} in this engine's topology")

    def consume(self, ring: str) -> Consumer:
        spec = self._spec(ring)
        gating = dict(spec.consumers)[self.name]
        c = self._ring(ring).consumer(
            self.name, gating=gating, wait=self.wait, decoder=MESSAGE_DECODER
        )
        self.consumers[ring] = c
        return c

    def produce(self, ring: str) -> Producer:
        if self._spec(ring).producer != self.name:
            raise ValueError(f"{self.name} is not the producer of ring {ring}")
        p = self._ring(ring).producer(
            wait=self.wait,
            timeout_s=self.cfg.rings.publish_timeout_s,
            dead_reader_grace_s=self.cfg.rings.dead_reader_grace_s,
        )
        self.producers[ring] = p
        return p

    def waiter(self, *consumers: Consumer) -> Waiter:
        return Waiter(
            consumers, self.wait, waiter_sem_name(self.engine_id, self.name, self.incarnation)
        )

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
            self.row,
            (os.getpid(), now, self.state, self.incarnation, self.processed, self.started_ns),
        )

    def wait_for_peers(self, state: int, timeout_s: float) -> bool:
        """Wait until every other worker's health row shows ``state`` (beating meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(
                int(self.health.read_tuple(i)[2]) >= state
                for i in range(len(WORKERS))
                if i != self.row
            ):
                return True
            self.beat()
            time.sleep(0.005)
        return False

    def close(self, crashed: bool | None = None) -> None:
        """Detach from every ring: how depends on whether this process will be restarted.

        A clean exit closes our producers (readers see the end of the stream) and stops gating
        as a reader. A crash (``crashed``, by default: an exception other than ``SystemExit``
        on its way out of the ``finally`` that calls this) does neither: the restart continues
        the same streams, so our readers see no end, and our reader slots keep their cursors and
        gate until the producer's dead-reader grace, exactly as after a SIGKILL.
        """
        if crashed is None:
            exc = sys.exc_info()[1]
            crashed = exc is not None and not isinstance(exc, SystemExit | KeyboardInterrupt)
        for p in self.producers.values():
            with contextlib.suppress(Exception):
                p.detach() if crashed else p.close()
        for c in self.consumers.values():
            with contextlib.suppress(Exception):
                c.close() if crashed else c.leave()
        self.beat(STATE_STOPPED)


def monotonic_ns() -> int:
    return time.monotonic_ns()
