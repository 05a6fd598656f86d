"""One chaos run: a real ``gekko run`` (embedded PostgreSQL and Redis under a tmp var_dir, the
bridge on so Redis is in use), the seeded faults of ``faults.plan`` injected while it trades,
then every invariant of ``invariants`` checked. ``run_chaos`` never raises for what the engine
did: it returns a ``ChaosResult`` whose ``violations`` say what broke and whose ``report()``
carries the seed, the fault sequence and the log lines needed to replay and read the failure.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.chaos import faults as F
from tests.chaos.probe import Probe, Recovery

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # initdb + every worker's imports on a loaded 2-core box
EXIT_MARGIN_S = 90.0  # after the planned end: clean shutdown, summary, PostgreSQL stop


@dataclass
class ChaosResult:
    seed: int
    seconds: float
    engine_id: str
    config: Path
    var: Path
    faults: list[F.Fault]
    events: list[str] = field(default_factory=list)  # what the harness did, when
    rc: int | None = None
    ran_s: float = 0.0  # from "engine running" to the supervisor's exit
    started: bool = False
    recoveries: list[Recovery] = field(default_factory=list)
    seen: dict[int, tuple[float, str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    checks: int = 0  # invariants checked

    @property
    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return (self.var.parent / "gekko.stderr").read_text(errors="replace")
        return ""

    def report(self) -> str:
        """Everything needed to replay and read a failing run."""
        lines = [
            f"chaos run FAILED: seed {self.seed} ({self.seconds:g}s, engine {self.engine_id}); "
            f"replay: CHAOS_SEED={self.seed} CHAOS_SECONDS={self.seconds:g} make chaos",
            f"exit code {self.rc}, ran {self.ran_s:.1f}s after start; var dir {self.var}",
            "faults planned:",
            *(f"  {f.describe()}" for f in self.faults),
            "harness events:",
            *(f"  {e}" for e in self.events),
            f"violations ({len(self.violations)}):",
            *(f"  - {v}" for v in self.violations),
            "engine log (errors, warnings, restarts):",
            *(f"  {ln}" for ln in notable_log_lines(self.stderr)[-60:]),
        ]
        return "\n".join(lines)


def notable_log_lines(text: str) -> list[str]:
    """Errors, exceptions and the supervisor's warnings (restarts); not the operator burst's
    echo or the recorder's reconnection attempts."""
    keys = ("ERROR", "CRITICAL", "Traceback", "Error:", "Error(", "crashed")
    return [
        ln
        for ln in text.splitlines()
        if any(k in ln for k in keys) or ("WARNING [supervisor]" in ln and "control:" not in ln)
    ]


def write_config(tmp: Path, engine_id: str, *, max_restarts: int = 5) -> Path:
    """The default config.toml with a private engine id and var dir, the bridge on (so Redis is
    in use)."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{engine_id}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp / "var"}"', 1)
    text = text.replace("max_restarts = 5 ", f"max_restarts = {max_restarts} ", 1)
    at = text.index("[bridge]")
    on = 'enabled = true\nmac_key = "chaos-made-up-bridge-key-0123456789"'  # (signs its frames)
    text = text[:at] + text[at:].replace("enabled = false", on, 1)
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def max_intent_age_ms(config: Path) -> float:
    """``[risk] max_intent_age_ms`` (the staleness limit), 1000 ms where the key is absent."""
    import tomllib

    risk = tomllib.loads(config.read_text()).get("risk", {})
    return float(risk.get("max_intent_age_ms", 1000.0))


def run_chaos(seed: int, seconds: float, tmp: Path) -> ChaosResult:
    """Start ``gekko run --duration seconds``, inject the seed's faults, check the invariants."""
    from tests.chaos.invariants import check_all

    eid = "ch" + uuid.uuid4().hex[:8]
    plan = F.plan(seed, seconds)
    kills = max(sum(f.target == w for f in plan) for w in F.WORKERS)
    config = write_config(tmp, eid, max_restarts=max(5, kills + 3))
    res = ChaosResult(seed, seconds, eid, config, tmp / "var", plan)
    with (
        open(tmp / "gekko.stdout", "wb") as out,
        open(tmp / "gekko.stderr", "wb") as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "run", "--config", str(config)]
            + ["--duration", f"{seconds:g}"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            _drive(res, proc)
        finally:
            if proc.poll() is None:  # never leave it running, whatever happened above
                res.violations.append("the engine was still running long after its planned end")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    res.rc = proc.returncode
    check_all(res)
    return res


def _drive(res: ChaosResult, proc: subprocess.Popen[bytes]) -> None:
    t0 = time.monotonic()
    marker = f"engine {res.engine_id} running"
    while marker not in res.stderr:
        if proc.poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
            res.violations.append(f"the engine did not start (exit code {proc.poll()})")
            return
        time.sleep(0.1)
    res.started = True
    ready = time.monotonic()
    probe = Probe(res.engine_id, proc.pid, res.var)
    probe.start()
    try:
        threads = _Injector(res, proc, probe, ready).run()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(1.0, ready + res.seconds + EXIT_MARGIN_S - time.monotonic()))
        res.ran_s = time.monotonic() - ready
        for t in threads:
            t.join(60)
    finally:
        probe.stop()
        res.recoveries = probe.recoveries
        res.seen = probe.seen


class _Injector:
    """Runs a schedule in time order: a hold (SIGCONT, a server's restart) becomes a later step,
    a slow action (pg_ctl start, an operator burst) a thread, so no step delays the next."""

    def __init__(
        self, res: ChaosResult, proc: subprocess.Popen[bytes], probe: Probe, ready: float
    ) -> None:
        self.res, self.proc, self.probe, self.ready = res, proc, probe, ready
        self.steps: list[tuple[float, int, str, Callable[[], None]]] = []
        self.threads: list[threading.Thread] = []
        self._seq = itertools.count()  # ties keep their order (and never compare functions)

    def run(self) -> list[threading.Thread]:
        for f in self.res.faults:
            self.at(f.at_s, f.describe(), lambda f=f: self.apply(f))
        while self.steps and self.alive():
            t, _, desc, fn = heapq.heappop(self.steps)
            time.sleep(max(0.0, self.ready + t - time.monotonic()))
            if not self.alive():
                self.note(f"engine gone (exit code {self.proc.returncode}): not done: {desc}")
                break
            fn()
        return self.threads

    def alive(self) -> bool:
        return self.proc.poll() is None

    def at(self, t: float, desc: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self.steps, (t, next(self._seq), desc, fn))

    def note(self, msg: str) -> None:
        self.res.events.append(f"t+{time.monotonic() - self.ready:6.2f}s {msg}")

    def background(self, name: str, fn: Callable[[], str]) -> None:
        def body() -> None:
            why = fn()
            self.note(f"{name}: {'done' if not why else 'FAILED: ' + why}")

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def apply(self, f: F.Fault) -> None:
        var = self.res.var
        if f.kind in ("kill", "stop"):
            self._signal_worker(f)
        elif f.kind == "postgres":
            self.note(f"SIGKILL postgres (postmaster pid {F.kill_postgres(var / 'pg')})")
            start = lambda: F.start_postgres(var / "pg", self.alive)  # noqa: E731
            self.at(f.at_s + f.hold_s, "pg start", lambda: self.background("pg_ctl start", start))
        elif f.kind == "redis":
            self.note(f"SIGKILL redis-server (pid {F.kill_redis(var / 'redis')})")
            start = lambda: F.start_redis(var / "redis", self.alive)  # noqa: E731
            self.at(f.at_s + f.hold_s, "redis start", lambda: self.background("redis start", start))
        elif f.kind == "control":
            self.note(f"operator burst of {f.burst} signals")
            eid, pid = self.res.engine_id, self.proc.pid
            burst = lambda: F.control_burst(self.res.config, var, eid, pid, f.burst)  # noqa: E731
            self.background("operator burst", burst)

    def _signal_worker(self, f: F.Fault) -> None:
        pid = self.probe.pid_of(f.target, wait_s=8.0)
        if not pid:
            self.note(f"{f.target}: no live process within 8 s, skipped: {f.describe()}")
            return
        self.probe.expect_restart(f.target, pid, f.describe())
        sig = signal.SIGKILL if f.kind == "kill" else signal.SIGSTOP
        F.signal_pid(pid, sig)
        self.note(f"{sig.name} {f.target} (pid {pid})")
        if f.kind == "stop":

            def cont() -> None:
                sent = F.signal_pid(pid, signal.SIGCONT)
                self.note(f"SIGCONT {f.target} (pid {pid}): {'sent' if sent else 'already gone'}")

            self.at(f.at_s + f.hold_s, "SIGCONT", cont)


def cleanup_orphans(res: ChaosResult) -> list[str]:
    """Kill what the engine left running (the orphan check has already reported it)."""
    killed = []
    for pid, (created, what) in res.seen.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                killed.append(f"{what} {pid}")
    return killed
