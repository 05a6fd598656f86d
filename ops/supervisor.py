"""``gekko run``: create the shared world, start the workers, watch them, stop cleanly.

Order of life:
1. Remove what a crashed run of the same engine id left in /dev/shm (creator gone); refuse to
   start if a live engine already owns that id.
2. Create every ring (with its gating readers registered), the health and positions tables and
   one metrics region per worker, then start each worker as its own interpreter.
3. While running: drain the orders/events/risk rings into the run's record, restart a worker that
   died or stopped beating (with backoff, up to ``max_restarts``), print one status line a second.
4. On SIGINT/SIGTERM, ``--duration`` or the end of the feed: publish STOP — the feed stops, the
   strategy cancels its orders, risk and exec drain what is in flight, exec cancels anything
   still open — wait for the workers to exit (killing stragglers after ``shutdown_timeout_s``),
   remove every region and semaphore, print the summary and write it to ``var/last_run/``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.codec import MESSAGE_DECODER
from engine.messages import (
    AuditEvent,
    Control,
    ControlCommand,
)
from ops.activity import activity
from ops.config import Config
from ops.control import ControlInbox, ControlItem, ControlServer, Peer, socket_path
from ops.control_outbox import ControlOutbox
from ops.exporter import Exporter, record_figures
from ops.identity import remove_record_if_mine
from ops.report import UNTRUSTED_EXIT, RunRecord, format_status, format_summary, inconsistency
from ops.roles import ControlGate, RoleMap
from ops.run_audit import record_run_stop
from ops.run_outputs import write_run_files
from ops.services import Background, EmbeddedServices
from ops.venue_keys import worker_env
from ops.venue_run import OVERLAY_ENV, write_overlay
from ops.worker import STORE_USERS
from procs.runtime import (
    ALL_WORKERS,
    COUNTERS,
    EXIT_STOP_RUN,
    HEALTH_DTYPE,
    HISTOGRAMS,
    POSITION_DTYPE,
    STATE_READY,
    STATE_STOPPED,
    TOB_DTYPE,
    TOPOLOGY,
    enabled_workers,
    metrics_name,
    stop_reason_path,
    topology,
)
from procs.venue_status import STATS_TABLE as VENUE_STATS_TABLE
from procs.venue_status import TABLE as VENUES_TABLE
from procs.venue_status import create_stats_table as create_venue_stats_table
from procs.venue_status import create_table as create_venue_table
from procs.venue_status import md_state_word
from procs.venue_status import read_states as read_venue_states
from procs.venue_status import status_words as venue_status_words
from shm.metrics import MetricsRegion
from shm.region import cleanup_stale, list_regions, list_semaphores, pid_alive, read_header
from shm.ring import Ring
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.supervisor")


class EngineAlreadyRunning(RuntimeError):
    pass


#: how long an operator command over the control socket waits to reach the control ring
FORWARD_TIMEOUT_S = 10.0
_OPS = {
    "kill": ControlCommand.KILL,
    "flatten": ControlCommand.FLATTEN,
    "resume": ControlCommand.RESUME,
}


class WorkerHandle:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.restarts = 0
        self.next_start = 0.0
        self.started_at = 0.0
        self.gave_up = False


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        config_path: str | Path,
        *,
        duration_s: float | None = None,
        until_feed_done: bool = False,
        status: bool = True,
        out=None,  # type: ignore[no-untyped-def]
    ) -> None:
        self.cfg = cfg
        self.config_path = str(Path(config_path).resolve())
        self.engine_id = cfg.engine.id
        self.duration_s = duration_s
        self.until_feed_done = until_feed_done
        self.show_status = status
        self.out = out if out is not None else sys.stdout  # as set up now (ops/logs.py: json)
        self.var = Path(cfg.engine.var_dir)
        self.run_dir = self.var / "last_run"
        self.workers = {n: WorkerHandle(n) for n in enabled_workers(cfg)}
        self.topology = topology(cfg)
        # run_id keys every stored trading row of this run (and the venue's own record)
        self.run_id = time.time_ns()
        # var/, the embedded PostgreSQL and Redis, and the guardian that stops them if we die
        self.services = EmbeddedServices(cfg, self.run_id)
        self.remote: list[Any] = []  # messages from other engines (the bridge's "remote" ring)
        self.c_remote: Any = None
        self.rings: dict[str, Ring] = {}
        self.record = RunRecord(cfg)
        self._stop_reason = ""
        self.inbox = ControlInbox()  # operator commands: control socket and signals
        #: who may do what on the control socket (ops/roles.py); its refusals, and the remote
        #: listener's (ops/remote_listener.py), wait here for the main thread to audit them
        self.roles = RoleMap.from_config(cfg)
        self._audits: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque()
        self.remote_listener: Any = None
        self._phase = "starting"
        self.exit_code = 0
        self.overlay: Path | None = None  # ops/venue_run.py: written at the start of run()
        self._venue_states: list[dict[str, Any]] = []  # live venues' states (procs/venue_status)
        self._venue_changes: dict[str, int] = {}
        self._md_state = ""  # the feed's live market data (procs/venue_status.md_state_word)
        #: the Prometheus exporter (ops/exporter.py), and what the main loop hands it each
        #: status tick (one reference: its scrape thread never walks the record)
        self.exporter: Exporter | None = None
        self._metric_figures: dict[str, Any] = {}
        self.c_forecasts: Any = None
        #: recent orders, fills, rejects and P&L per strategy for `gekko top` (ops/activity.py):
        #: built by the main loop each status tick, handed out by the control socket's thread
        self._activity: dict[str, Any] = {}

    @property
    def pg_dsn(self) -> str:
        """The DSN the workers get (empty: no PostgreSQL)."""
        return self.services.pg_dsn

    # --- signals -------------------------------------------------------------------------------
    def _on_stop_signal(self, signum: int, frame: object) -> None:
        if not self._stop_reason:
            self._stop_reason = signal.Signals(signum).name

    def _on_kill_signal(self, signum: int, frame: object) -> None:
        # `gekko kill --flatten` leaves a flag file beside the pid file before it signals
        flag = self.var / f"gekko-{self.engine_id}.flatten"
        if flag.exists():
            with contextlib.suppress(OSError):
                flag.unlink()
            self.inbox.put(ControlItem(int(ControlCommand.FLATTEN), "gekko kill --flatten", None))
            return
        self.inbox.put(ControlItem(int(ControlCommand.KILL), "gekko kill", None))

    def _on_resume_signal(self, signum: int, frame: object) -> None:
        self.inbox.put(ControlItem(int(ControlCommand.RESUME), "gekko resume", None))

    # --- the control socket (ops/control.py; runs on its own thread) ----------------------------
    def _on_request(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        me = {"engine": self.engine_id, "run_id": self.run_id, "pid": os.getpid()}
        op = req.get("op")
        if op == "status":
            return {
                "ok": True,
                **me,
                "phase": self._phase,
                "stopping": self._stop_reason,
                "venues": self._venue_states,  # the main loop's last read (one reference)
                "market_data": self._md_state,
            }
        if op == "activity":  # read-only: what the main loop last built (one reference)
            return {"ok": True, **me, "phase": self._phase, **self._activity}
        if op not in _OPS:
            return {"ok": False, **me, "error": f"unknown request {op!r}"}
        arg = str(req.get("command") or f"gekko {op}")[:200]
        result = self._submit(ControlItem(int(_OPS[op]), arg, peer.user, peer.pid, "socket"))
        if result != "forwarded":
            return {"ok": False, **me, "error": result}
        return {"ok": True, **me}

    def _submit(self, item: ControlItem) -> str:
        """An authorised operator command into the inbox (socket and remote threads):
        "forwarded" once it is on the control ring, else why not."""
        if self._stop_reason:
            return f"the engine is stopping ({self._stop_reason})"
        return self.inbox.submit(item, FORWARD_TIMEOUT_S)

    def _record_later(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """An audit record from another thread: the main thread writes it (one producer)."""
        self._audits.append((actor, action, detail))

    def _forward_controls(self) -> None:
        """Publish pending operator commands on the control ring (the main thread's job: the
        ring has one producer) and audit each with its actor."""
        self.outbox.flush()
        self._audit_pending()
        while (item := self.inbox.take()) is not None:
            if not item.claim():
                continue  # withdrawn: its requester was told it did not happen
            if self._stop_reason:
                item.finish(f"the engine is stopping ({self._stop_reason})")
                continue
            log.warning("control: %s (%s)", ControlCommand(item.command).name, item.arg)
            self._send_control(item.command, item.arg)
            self._audit_operator(item)
            item.finish("forwarded")

    def _refuse_pending(self, why: str) -> None:
        while (item := self.inbox.take()) is not None:
            item.finish(why)
        if getattr(self, "outbox", None) is not None:
            self._audit_pending()

    def _audit_pending(self) -> None:
        while self._audits:
            actor, action, detail = self._audits.popleft()
            self._audit(actor, action, run_id=self.run_id, **detail)

    # --- regions -------------------------------------------------------------------------------
    def _create_regions(self) -> None:
        eid = self.engine_id
        for name in list_regions(eid):
            hdr = read_header(name)
            if hdr is not None and pid_alive(int(hdr["creator_pid"])):  # type: ignore[arg-type]
                raise EngineAlreadyRunning(
                    f"engine id {eid!r} is in use by a running engine (pid {hdr['creator_pid']}); "
                    "stop it or set another [engine] id"
                )
        names = (
            [r.name for r in TOPOLOGY]
            + ["remote", "health", "positions", "tob", VENUES_TABLE, VENUE_STATS_TABLE]
            + [metrics_name(w) for w in ALL_WORKERS]
        )
        removed = cleanup_stale(eid, names)
        for sem in list_semaphores(eid):  # waiter semaphores of a crashed run
            with contextlib.suppress(Exception):
                import posix_ipc

                posix_ipc.unlink_semaphore(sem)
        if removed:
            log.warning(
                "removed %d shared-memory regions left by a crashed run: %s",
                len(removed),
                ", ".join(removed),
            )
        for spec in self.topology:
            self.rings[spec.name] = Ring.create(
                eid,
                spec.name,
                getattr(self.cfg.rings, spec.capacity_key),
                max_consumers=max(8, len(spec.consumers) + 2),
                consumers=spec.consumers,
            )
        self.health = SeqlockTable.create(eid, "health", HEALTH_DTYPE, len(ALL_WORKERS))
        self.positions = SeqlockTable.create(
            eid, "positions", POSITION_DTYPE, len(self.cfg.instruments)
        )
        self.tob = SeqlockTable.create(eid, "tob", TOB_DTYPE, len(self.cfg.instruments))
        self.venue_table = create_venue_table(eid, self.cfg)  # procs/venue_status.py
        self.venue_stats_table = create_venue_stats_table(eid, self.cfg)  # the exporter's
        for k, ins in enumerate(self.cfg.instruments):
            self.positions.write(k, {"instrument_id": ins.instrument_id})
            self.tob.write(k, {"instrument_id": ins.instrument_id})
        self.metrics = {
            w: MetricsRegion.create(eid, metrics_name(w), COUNTERS[w], HISTOGRAMS[w])
            for w in self.workers
        }

    def _remove_regions(self) -> None:
        import posix_ipc

        for ring in self.rings.values():
            with contextlib.suppress(Exception):
                ring.unlink()
        for t in (
            getattr(self, "health", None),
            getattr(self, "positions", None),
            getattr(self, "tob", None),
            getattr(self, "venue_table", None),
            getattr(self, "venue_stats_table", None),
        ):
            if t is not None:
                t.unlink()
        for m in getattr(self, "metrics", {}).values():
            m.unlink()
        for name in list_regions(self.engine_id):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)
        for sem in list_semaphores(self.engine_id):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(sem)

    # --- workers -------------------------------------------------------------------------------
    def _start(self, h: WorkerHandle) -> None:
        cmd = [
            sys.executable,
            "-m",
            "ops.worker",
            h.name,
            "--config",
            self.config_path,
            "--engine-id",
            self.engine_id,
            "--incarnation",
            str(h.incarnation),
        ]
        env = dict(os.environ, GEKKO_SUPERVISOR_PID=str(os.getpid()), GEKKO_RUN_ID=str(self.run_id))
        # the venue keys' variables: exec's alone, and the feed's of venues whose prices need them
        env = worker_env(env, h.name, self._feed_key_venues())
        if self.pg_dsn:
            env["GEKKO_PG_DSN"] = self.pg_dsn
        if self.overlay is not None:  # the run's real venues as the pre-flight resolved them
            env[OVERLAY_ENV] = str(self.overlay)
        h.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
        h.started_at = time.monotonic()
        log.info("started %s (pid %d, incarnation %d)", h.name, h.proc.pid, h.incarnation)

    def _feed_key_venues(self) -> tuple[str, ...]:
        """The venues whose market data needs their keys (a kind with ``private_data``)."""
        from engine.venues.registry import lookup

        return tuple(v.name for v in self.cfg.real_venues() if lookup(v.kind).private_data)

    def _health(self, name: str) -> Any:
        return self.health.read(ALL_WORKERS.index(name))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.supervisor.startup_timeout_s
        pending = set(self.workers)
        while pending and time.monotonic() < deadline and not self._stop_reason:
            self._forward_controls()  # the kill switch works while the engine starts
            for n in list(pending):
                h = self.workers[n]
                row = self._health(n)
                if (
                    int(row["state"]) == STATE_READY
                    and h.proc is not None
                    and int(row["pid"]) == h.proc.pid
                ):
                    pending.discard(n)
                elif h.proc is not None and h.proc.poll() == EXIT_STOP_RUN:
                    h.proc = None
                    self._worker_stopped_run(h)  # says why itself: no traceback
                    return
                elif h.proc is not None and h.proc.poll() is not None:
                    raise RuntimeError(
                        f"worker {n} exited with code {h.proc.returncode} during start-up"
                    )
            time.sleep(0.02)
        if pending and not self._stop_reason:
            raise RuntimeError(
                f"workers not ready after {self.cfg.supervisor.startup_timeout_s}s: {sorted(pending)}"
            )

    def _finish_restarts(self) -> None:
        """Let a worker being restarted come up before the STOP goes out.

        Readers told to stop take a dead producer's stream as ended: a STOP sent while a worker
        is between incarnations lets them leave before its successor publishes its recovery and
        the orders it still had to handle, and the record would miss those events. Bounded by
        ``startup_timeout_s`` (and ``_watch`` kills a restart that hangs starting).
        """
        deadline = time.monotonic() + self.cfg.supervisor.startup_timeout_s
        while True:
            self._watch()  # a death not seen yet is scheduled, a restart that is due starts
            starting = sorted(h.name for h in self.workers.values() if self._restarting(h))
            if not starting:
                return
            if time.monotonic() >= deadline:
                log.error("stopping while %s still restarting", ", ".join(starting))
                return
            self._drain()
            self._forward_controls()
            time.sleep(0.02)

    def _restarting(self, h: WorkerHandle) -> bool:
        """Between incarnations: dying (its main thread gone, the process not yet reaped: a
        killed process is waitable only once all its threads have exited), waiting out its
        backoff, or started and not ready yet."""
        if h.proc is None:
            return bool(h.next_start)
        if h.proc.poll() is None and not pid_alive(h.proc.pid):
            return True  # dying: the next _watch sees it exit and schedules its restart
        if h.incarnation == 0:
            return False
        row = self._health(h.name)
        return not (int(row["pid"]) == h.proc.pid and int(row["state"]) == STATE_READY)

    def _watch(self) -> None:
        """Restart workers that died or hung, with exponential backoff."""
        sup = self.cfg.supervisor
        now = time.monotonic()
        for h in self.workers.values():
            if h.proc is None:
                if h.next_start and now >= h.next_start:
                    h.next_start = 0.0
                    self._start(h)
                continue
            code = h.proc.poll()
            hung = False
            if code is None:
                row = self._health(h.name)
                if int(row["pid"]) == h.proc.pid and int(row["state"]) == STATE_READY:
                    age = (time.monotonic_ns() - int(row["heartbeat_ns"])) / 1e9
                    if age > sup.heartbeat_timeout_s:
                        hung = True
                        log.error(
                            "%s (pid %d) missed heartbeats for %.1fs: killing it",
                            h.name,
                            h.proc.pid,
                            age,
                        )
                        h.proc.kill()
                        h.proc.wait(5)
                        code = h.proc.returncode
                elif now - h.started_at > sup.startup_timeout_s:
                    hung = True
                    log.error("%s (pid %d) did not become ready: killing it", h.name, h.proc.pid)
                    h.proc.kill()
                    h.proc.wait(5)
                    code = h.proc.returncode
            if code is None:
                continue
            reason = "hung" if hung else f"exited with code {code}"
            h.proc = None
            if code == EXIT_STOP_RUN:  # the worker says the run cannot go on: no restart
                self._worker_stopped_run(h)
                continue
            if h.restarts >= sup.max_restarts:
                h.gave_up = True
                log.error(
                    "%s %s; restarted %d times already: shutting the engine down",
                    h.name,
                    reason,
                    h.restarts,
                )
                self._stop_reason = self._stop_reason or f"{h.name} failed repeatedly"
                self.exit_code = 1
                self._audit(
                    "supervisor", "worker.gave_up", worker=h.name, reason=reason, run_id=self.run_id
                )
                continue
            delay = min(sup.restart_backoff_s * (2**h.restarts), sup.restart_backoff_max_s)
            h.restarts += 1
            h.incarnation += 1
            h.next_start = now + delay
            self.record.restarts.append(
                {"worker": h.name, "reason": reason, "at_s": round(self.record.elapsed(), 3)}
            )
            log.warning(
                "%s %s: restarting in %.2fs (restart %d)", h.name, reason, delay, h.restarts
            )
            self._audit(
                "supervisor",
                "worker.restart",
                worker=h.name,
                reason=reason,
                restart=h.restarts,
                delay_s=round(delay, 3),
                run_id=self.run_id,
            )

    def _worker_stopped_run(self, h: Any) -> None:
        """A worker exited with ``EXIT_STOP_RUN`` (e.g. a bad replay row under on_bad_row =
        "fail"): stop the engine with the reason it left, and exit non-zero."""
        path = stop_reason_path(self.cfg, self.engine_id, h.name)
        try:
            why = path.read_text().strip()
            path.unlink()
        except OSError:
            why = "see its log"
        h.gave_up = True
        log.error("%s stopped the run: %s", h.name, why)
        # the true cause, even where the stop it caused was seen first (e.g. "feed finished")
        self._stop_reason = f"{h.name} stopped the run: {why}"
        self.exit_code = 1
        self._audit(
            "supervisor", "worker.stopped_run", worker=h.name, reason=why, run_id=self.run_id
        )

    # --- the record ----------------------------------------------------------------------------
    def _drain(self) -> None:
        for msg in self.c_orders.poll_batch(4096):
            self.record.on_order(msg)
        for msg in self.c_events.poll_batch(4096):
            self.record.on_event(msg)
        for msg in self.c_risk.poll_batch(4096):
            self.record.on_risk(msg)
        if self.c_forecasts is not None:  # non-gating: the model served, the forecasts' age
            for msg in self.c_forecasts.poll_batch(4096):
                self.record.on_forecast(msg)
        if self.c_remote is not None:
            fresh = self.remote_filter.fresh  # a re-delivered message (at-least-once) is dropped
            for r in self.c_remote.poll_batch(4096):
                if type(r) is AuditEvent:  # the bridge refused a frame (procs/bridge_recv.py)
                    self._audit_bridge(r)
                elif fresh(r):
                    self.remote.append(r)

    def _quiescent(self) -> bool:
        """The feed finished and every gating reader has caught up with every ring."""
        if not self.rings["md"].closed:
            return False
        for ring in self.rings.values():
            if ring.name == "control":
                continue
            pub = ring.published_pos
            for s in ring.slots():
                if s["state"] == "gating" and s["cursor"] < pub:
                    return False
        return True

    def _send_control(self, command: int, arg: str = "") -> None:
        self.outbox.send(Control(command, time.monotonic_ns(), arg))

    # --- the audit trail (ops/store/audit.py) --------------------------------------------------
    def _audit(self, actor: str, action: str, **detail: Any) -> None:
        """One audit record, through the recorder (``control`` -> journal -> PostgreSQL): the
        supervisor never waits on the database while the engine runs. No recorder: no record."""
        if "recorder" not in self.workers:
            return
        from ops.store.audit import audit_event

        try:
            detail.setdefault("engine_id", self.engine_id)
            self.outbox.send(audit_event(actor, action, **detail))  # waits there if full
        except Exception as exc:  # a record, never a reason to stop
            log.error("audit: %s not recorded (%s)", action, exc)

    def _audit_bridge(self, ev: AuditEvent) -> None:
        """A bridge record (a refused remote frame, authentication off) into the trail."""
        try:
            detail = json.loads(ev.detail)
        except ValueError:
            detail = None
        self._audit(
            ev.actor, ev.action, **(detail if isinstance(detail, dict) else {"raw": ev.detail})
        )

    def _audit_operator(self, item: ControlItem) -> None:
        """The operator command just forwarded, with its OS user: the control socket's peer,
        or, for a signal, the one the gekko CLI named in its request file (ops/operator.py)."""
        from ops.operator import take_request

        kind = ControlCommand(item.command).name.lower()
        req: dict[str, Any] = {}
        if item.actor is None:
            req = take_request(self.var, self.engine_id, kind) or {}
        self._audit(
            str(item.actor or req.get("actor") or "unknown (signal not sent by the gekko CLI)"),
            f"operator.{kind}",
            command=req.get("command", item.arg),
            cli_pid=item.cli_pid if item.actor else req.get("pid"),
            via=item.via,
            run_id=self.run_id,
            **item.detail,
        )

    def _audit_start(self) -> None:
        from ops.store.audit import config_sha256, os_user

        self._audit(
            os_user(),
            "run.start",
            run_id=self.run_id,
            config_path=self.config_path,
            config_sha256=config_sha256(self.config_path),
            user=os_user(),
            host=socket.gethostname(),
            pid=os.getpid(),
            workers=list(self.workers),
        )

    def _audit_stop(self) -> None:
        """``run.stop``, once every worker is gone (ops/run_audit.py)."""
        summary = getattr(self, "_summary", None) or {}
        outbox = getattr(self, "outbox", None)
        record_run_stop(
            self.cfg, self.pg_dsn, self.run_id, self._stop_reason, self.exit_code, summary, outbox
        )

    # --- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        self.services.secure_var()
        self.overlay = write_overlay(self.cfg, self.var / "run" / f"venues-{self.engine_id}.json")
        pidfile = self.var / f"gekko-{self.engine_id}.pid"
        old = {
            s: signal.getsignal(s)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
        }
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGUSR1, self._on_kill_signal)
        signal.signal(signal.SIGUSR2, self._on_resume_signal)
        claimed = self._claim(pidfile)
        if claimed is None:
            for s, h in old.items():
                signal.signal(s, h)
            return 1
        control, me = claimed
        try:
            self.services.start_guardian()
            # never blocks the loop that replaces the worker holding the ring back: a message
            # that finds the ring full waits, in order, in the outbox (ops/control_outbox.py)
            self.control = self.rings["control"].producer(wait="backoff", timeout_s=0.02)
            self.outbox = ControlOutbox(self.control)
            self.c_orders = self.rings["orders"].consumer("supervisor", decoder=MESSAGE_DECODER)
            self.c_events = self.rings["events"].consumer("supervisor", decoder=MESSAGE_DECODER)
            self.c_risk = self.rings["risk"].consumer("supervisor", decoder=MESSAGE_DECODER)
            if "forecasts" in self.rings:
                self.c_forecasts = self.rings["forecasts"].consumer(
                    "supervisor", gating=False, decoder=MESSAGE_DECODER
                )
            self._start_exporter()
            self.c_remote = None
            if (
                "remote" in self.rings
            ):  # the bridge's envelopes: not engine.messages, its own decoder
                from procs.bridge import RING_DECODER, RemoteFilter

                self.c_remote = self.rings["remote"].consumer("supervisor", decoder=RING_DECODER)
                self.remote_filter = RemoteFilter()
            self.services.start_redis()
            self.services.warn_plaintext()
            if self.cfg.security.remote_control.enabled:  # signed commands over the Redis bus
                from ops.remote_listener import start_listener

                self.remote_listener = start_listener(
                    self.cfg, self.roles, self._submit, self._record_later
                )
            self._audit_start()
            # PostgreSQL (initdb on a fresh var dir, start, migrate) takes seconds: it comes up
            # while the workers that do not need it start; those that use the record (the
            # recorder; exec and risk recover and seed from it) start once it is up, with its DSN
            pg = Background(self.services.start_postgres)
            for h in self.workers.values():
                if h.name not in STORE_USERS:
                    self._start(h)
            pg.join(self._forward_controls)
            for service, why in self.services.tls_refused:  # ops/tls.py: the server not verified
                self._audit(
                    "supervisor", "tls.refused", run_id=self.run_id, service=service, reason=why
                )
            for h in self.workers.values():
                if h.name in STORE_USERS:
                    self._start(h)
            self._wait_ready()
            self.record.start()
            log.info(
                "engine %s running: %d instruments, %d strategies",
                self.engine_id,
                len(self.cfg.instruments),
                len(self.cfg.strategies),
            )
            self._activity = activity(self.record, self.cfg)
            self._phase = "running"
            self._loop()
            self._finish_restarts()
            self.record.stopping()
            self._phase = "stopping"
            self._refuse_pending(f"the engine is stopping ({self._stop_reason})")
            self._shutdown()
        except Exception as exc:
            log.exception("supervisor failed: %s", exc)
            self.exit_code = 1
            self._kill_all()
        finally:
            self._phase = "stopping"
            control.close()
            if self.remote_listener is not None:
                self.remote_listener.stop()
            self._refuse_pending("the engine stopped")
            self._write_outputs()
            self._audit_stop()
            if self.exporter is not None:  # before the regions it maps are removed
                self.exporter.stop()
            self._remove_regions()
            self.services.stop()
            remove_record_if_mine(pidfile, me)
            for s, h in old.items():
                signal.signal(s, h)
        return self.exit_code

    def _start_exporter(self) -> None:
        """The Prometheus exporter, when ``[metrics] listen`` names an address."""
        if not self.cfg.metrics.listen:
            return
        self._metric_figures = record_figures(self.record, self.cfg)
        ex = Exporter(self.cfg, self.run_id, lambda: self._metric_figures)
        if ex.start():
            self.exporter = ex

    def _claim(self, pidfile: Path) -> tuple[ControlServer, Any] | None:
        """Become this engine's supervisor: its regions, its control socket, its pid record
        (pid and start time, ops/identity.py: a pid alone outlives a crash and is soon someone
        else's). None, said why, when another engine runs with this id or no socket binds."""
        from ops.identity import ProcessIdentity, write_record

        try:
            self._create_regions()
        except EngineAlreadyRunning as exc:
            print(f"gekko: {exc}", file=sys.stderr)
            return None
        sock_dir = self.cfg.security.control_socket_dir
        control = ControlServer(
            socket_path(self.var, self.engine_id, sock_dir),
            self._on_request,
            authorize=ControlGate(self.roles, self._record_later),
            shared=bool(sock_dir),
        )
        if self.roles.names and not sock_dir:
            log.warning(
                "[security.roles] names other users, but the control socket is in %s (private "
                "to this user): they cannot reach it; set [security] control_socket_dir",
                self.var,
            )
        try:
            control.start()
        except OSError as exc:
            print(f"gekko: control socket {control.path}: {exc}", file=sys.stderr)
            self._remove_regions()
            return None
        me = ProcessIdentity.current()
        write_record(
            pidfile, me, engine_id=self.engine_id, run_id=self.run_id, socket=str(control.path)
        )
        return control, me

    def _loop(self) -> None:
        sup = self.cfg.supervisor
        t0 = time.monotonic()
        next_status = t0 + sup.status_interval_s
        quiet_since = 0.0
        while not self._stop_reason:
            self._drain()
            self._forward_controls()
            self._watch()
            self._watch_venues()
            self.record.maybe_sample(self.positions)  # equity curve for the run's analytics
            now = time.monotonic()
            # a reason set above (a worker that stopped the run, seen by _watch in this same
            # pass) is the true cause: neither the duration nor the stream's end replaces it
            if self.duration_s is not None and now - t0 >= self.duration_s:
                self._stop_reason = self._stop_reason or f"--duration {self.duration_s:g}s reached"
            if self.until_feed_done:
                if self._quiescent():
                    quiet_since = quiet_since or now
                    if now - quiet_since > 0.3:
                        self._stop_reason = self._stop_reason or "feed finished"
                else:
                    quiet_since = 0.0
            if now >= next_status:
                next_status += sup.status_interval_s
                if self.exporter is not None:
                    self._metric_figures = record_figures(self.record, self.cfg)
                self._activity = activity(self.record, self.cfg)
                if self.show_status:
                    line = format_status(self.record, self.metrics, self.positions, self.cfg)
                    venues = venue_status_words(self._venue_states, self._md_state)
                    print(f"{line}  {venues}" if venues else line, file=self.out, flush=True)
            time.sleep(0.02)
        log.info("stopping: %s", self._stop_reason)

    def _watch_venues(self) -> None:
        """The live venues' states from exec's table: kept for the status line and ``gekko
        status``; each change audited (``venue.state``) and logged."""
        table = getattr(self, "venue_table", None)
        if table is None:
            return
        states = read_venue_states(table)
        for v in states:
            if self._venue_changes.get(v["venue"]) == v["changes"]:
                continue
            self._venue_changes[v["venue"]] = v["changes"]
            log.warning("venue %s: %s %s", v["venue"], v["state"], v["reason"])
            self._audit(
                "exec",
                "venue.state",
                venue=v["venue"],
                state=v["state"],
                reason=v["reason"],
                changes=v["changes"],
                run_id=self.run_id,
            )
        self._venue_states = states
        md = (
            md_state_word(self.cfg, self.metrics["feed"].counters())
            if "feed" in self.metrics
            else ""
        )
        if md != self._md_state:
            self._md_state = md
            log.warning("venue market data: %s", md)
            self._audit("feed", "venue.market_data", state=md, run_id=self.run_id)

    def _shutdown(self) -> None:
        self._send_control(int(ControlCommand.STOP), self._stop_reason)
        deadline = time.monotonic() + self.cfg.supervisor.shutdown_timeout_s
        while time.monotonic() < deadline:
            self.outbox.flush()
            self._drain()
            alive = [
                h for h in self.workers.values() if h.proc is not None and h.proc.poll() is None
            ]
            if not alive:
                break
            time.sleep(0.02)
        self._drain()
        self._kill_all()
        self._drain()
        for h in self.workers.values():
            if h.proc is not None and h.proc.returncode == EXIT_STOP_RUN:
                self._worker_stopped_run(h)  # it stopped the run while the engine was stopping
            elif h.proc is not None and h.proc.returncode not in (0, None):
                log.warning("%s exited with code %s", h.name, h.proc.returncode)
        states = {n: int(self._health(n)["state"]) for n in self.workers}
        unclean = [n for n, st in states.items() if st != STATE_STOPPED]
        if unclean:
            log.warning("workers that did not stop cleanly: %s", ", ".join(unclean))

    def _kill_all(self) -> None:
        for h in self.workers.values():
            if h.proc is not None and h.proc.poll() is None:
                log.error("%s (pid %d) did not stop in time: killing it", h.name, h.proc.pid)
                h.proc.kill()
                with contextlib.suppress(Exception):
                    h.proc.wait(5)

    def _write_outputs(self) -> None:
        try:
            summary = self.record.summary(
                getattr(self, "metrics", {}), getattr(self, "positions", None)
            )
            summary["stop_reason"] = self._stop_reason
            summary["run_id"] = self.run_id  # `gekko report RUN_ID` rebuilds its report
            failure = inconsistency(summary)  # exec's positions vs the fills the engine saw
            if failure:
                summary["failure"] = failure
                log.error("run failed: %s", failure)
                self.exit_code = self.exit_code or UNTRUSTED_EXIT
            summary["exit_code"] = self.exit_code
            self._summary = summary  # its key figures go into the run.stop audit row
            from procs.risk import load_state, state_path

            summary["trading_state"] = load_state(state_path(self.cfg))  # as risk recorded it
            infer_metrics = getattr(self, "metrics", {}).get("infer")
            if infer_metrics is not None:  # the infer worker's counts: bars, runs, forecasts, ...
                summary["inference"] = infer_metrics.counters()
            write_run_files(self.run_dir, summary, self.record, self.remote)
            print(format_summary(summary, self.cfg), file=self.out, flush=True)
        except Exception:
            log.exception("could not write the run summary")
            return
        from ops.html_report import after_run  # report.html; its run_reports row in PostgreSQL

        metrics = getattr(self, "metrics", {})
        pg = self.services.pg_dsn
        after_run(self.cfg, self.record, summary, metrics, self.run_id, self.run_dir, pg, self.out)
