"""The harness's own view of a running engine: which processes it has, and how long a restarted
worker takes to trade again.

A background thread samples every ``PERIOD_S``: the supervisor's worker children (psutil), the
embedded PostgreSQL and Redis pids, and the engine's shared-memory health table and metrics
counters (read-only attachments; nothing is written). Every pid it ever sees is kept with its
start time, so the orphan check after the run can tell a survivor from a reused pid.

Recovery of a worker W after a fault: ``t_restart`` = the first sample showing a new W process,
``t_ready`` = its health row READY, ``t_working`` = the first sample after READY in which each
of W's proof counters (``PROOF``) moved: W did its job again, and the order flow (exec's new
orders) goes on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.chaos.faults import postmaster_pid, redis_pid, worker_pids

PERIOD_S = 0.1
#: counters that prove a restarted worker works: (metrics region owner, counter)
PROOF: dict[str, tuple[tuple[str, str], ...]] = {
    "feed": (("feed", "md_out"), ("exec", "new_orders")),
    "strategy": (("strategy", "intents_out"), ("exec", "new_orders")),
    "risk": (("risk", "approved"), ("exec", "new_orders")),
    "exec": (("exec", "new_orders"),),
    "infer": (("infer", "forecasts_out"),),
    "recorder": (("recorder", "rows_written"),),
    "bridge": (("bridge", "forwarded"),),
}


@dataclass
class Recovery:
    """One restart of ``worker`` caused by the fault at ``t_fault`` (harness monotonic s)."""

    worker: str
    fault: str
    t_fault: float
    old_pid: int
    t_restart: float = 0.0
    t_ready: float = 0.0
    t_working: float = 0.0
    new_pid: int = 0
    superseded: bool = False  # the worker was hit again before it was working
    base: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def restart_to_working_s(self) -> float:
        return self.t_working - self.t_restart if self.t_working and self.t_restart else -1.0

    @property
    def fault_to_working_s(self) -> float:
        return self.t_working - self.t_fault if self.t_working else -1.0


class Probe:
    """Samples the engine in a thread from ``start()`` until ``stop()``."""

    def __init__(self, engine_id: str, supervisor_pid: int, var: Path) -> None:
        self.engine_id = engine_id
        self.supervisor_pid = supervisor_pid
        self.var = var
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (create_time, what)
        self.recoveries: list[Recovery] = []
        self.workers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-probe", daemon=True)
        self._health: Any = None
        self._metrics: dict[str, Any] = {}

    # --- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._attach()
        self._remember(self.supervisor_pid, "supervisor")
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            if self._health is not None:
                self._health.close()
        for m in self._metrics.values():
            with contextlib.suppress(Exception):
                m.close()
        self._health, self._metrics = None, {}

    def _attach(self) -> None:
        from procs.runtime import HEALTH_DTYPE, metrics_name
        from shm.metrics import MetricsRegion
        from shm.seqlock import SeqlockTable

        self._health = SeqlockTable.attach(self.engine_id, "health", HEALTH_DTYPE)
        for w in PROOF:
            with contextlib.suppress(Exception):  # a worker this config does not run
                self._metrics[w] = MetricsRegion.attach(self.engine_id, metrics_name(w))

    # --- what the fault injector calls -----------------------------------------------------------
    def expect_restart(self, worker: str, old_pid: int, fault: str) -> None:
        with self._lock:
            for r in self.recoveries:
                if r.worker == worker and not r.t_working:
                    r.superseded = True
            self.recoveries.append(Recovery(worker, fault, time.monotonic(), old_pid))

    def pid_of(self, worker: str, wait_s: float = 0.0) -> int:
        """The live pid of ``worker``, waiting up to ``wait_s`` for one (0: none)."""
        deadline = time.monotonic() + wait_s
        while True:
            pid = worker_pids(self.supervisor_pid).get(worker, 0)
            if pid or time.monotonic() >= deadline:
                return pid
            time.sleep(0.05)

    # --- sampling --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._halt.wait(PERIOD_S):
            try:
                self._sample()
            except Exception:  # the engine's regions may vanish at its end
                if not psutil.pid_exists(self.supervisor_pid):
                    return

    def _remember(self, pid: int, what: str) -> None:
        if pid and pid not in self.seen:
            with contextlib.suppress(psutil.Error):
                self.seen[pid] = (psutil.Process(pid).create_time(), what)

    def _sample(self) -> None:
        now = time.monotonic()
        self.workers = worker_pids(self.supervisor_pid)
        for name, pid in self.workers.items():
            self._remember(pid, f"worker {name}")
        with contextlib.suppress(psutil.Error):  # anything else it started (e.g. a guardian)
            for child in psutil.Process(self.supervisor_pid).children(recursive=True):
                if child.pid not in self.seen:
                    with contextlib.suppress(psutil.Error):
                        self._remember(child.pid, " ".join(child.cmdline()[1:4])[:60])
        pm = postmaster_pid(self.var / "pg")
        if pm:
            self._remember(pm, "postgres")
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(pm).children():
                    self._remember(child.pid, "postgres backend")
        self._remember(redis_pid(self.var / "redis"), "redis-server")
        with self._lock:
            pending = [r for r in self.recoveries if not r.t_working and not r.superseded]
        if pending:
            counters = {w: m.counters() for w, m in self._metrics.items()}
            for r in pending:
                self._advance(r, now, counters)

    def _advance(self, r: Recovery, now: float, counters: dict[str, dict[str, int]]) -> None:
        from procs.runtime import ALL_WORKERS, STATE_READY

        pid = self.workers.get(r.worker, 0)
        if not r.t_restart:
            if pid and pid != r.old_pid:
                r.t_restart, r.new_pid = now, pid
            return
        if not r.t_ready:
            row = self._health.read(ALL_WORKERS.index(r.worker))
            if int(row["pid"]) == r.new_pid and int(row["state"]) == STATE_READY:
                r.t_ready = now
                r.base = {k: counters.get(k[0], {}).get(k[1], 0) for k in PROOF[r.worker]}
            return
        if all(counters.get(w, {}).get(c, 0) != v for (w, c), v in r.base.items()):
            r.t_working = now
