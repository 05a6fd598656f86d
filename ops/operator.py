"""Operator commands (``gekko kill / kill --flatten / resume / status``) reaching an engine.

The way in is the supervisor's control socket (``ops/control.py``): it answers only while the
engine runs, and the kernel names the OS user asking (the audit row's actor).

Only if the socket does not answer while the pid file proves a live supervisor of this engine
(pid *and* start time, ``ops/identity.py``) does the command fall back to a signal (SIGUSR1
kill, SIGUSR2 resume). A signal does not say who sent it, so the command first leaves a small
request file naming the OS user under ``<var>/operator/``; the supervisor takes the oldest
request of that kind when the signal arrives. A signal sent by hand (``kill -USR1``) still works;
its row says the sender is unknown. A pid that is not proven to be the supervisor is never
signalled: the command says no engine is running and exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.control import ControlNoAnswer, ControlUnreachable, request, socket_path
from ops.identity import ProcessIdentity, read_record

#: control kinds, as the supervisor names them (ControlCommand names, lower case)
KINDS = ("kill", "flatten", "resume")
MAX_AGE_S = 300.0  # a request never claimed by a signal is stale after this


def request_dir(var_dir: str | Path, engine_id: str) -> Path:
    return Path(var_dir) / "operator" / engine_id


def write_request(var_dir: str | Path, engine_id: str, kind: str, command: str, actor: str) -> Path:
    """Leave the request for the supervisor (atomically: it never reads half a file)."""
    d = request_dir(var_dir, engine_id)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{time.time_ns()}-{os.getpid()}-{kind}.json"
    tmp = p.with_suffix(".tmp")
    body = {"kind": kind, "command": command, "actor": actor, "pid": os.getpid()}
    tmp.write_text(json.dumps(body))
    tmp.replace(p)
    return p


def take_request(var_dir: str | Path, engine_id: str, kind: str) -> dict[str, Any] | None:
    """The oldest pending request of ``kind`` (removed), or None. Stale or unreadable
    request files are removed on the way."""
    d = request_dir(var_dir, engine_id)
    if not d.is_dir():
        return None
    now = time.time()
    for p in sorted(d.glob("*.json")):
        try:
            if now - p.stat().st_mtime > MAX_AGE_S:
                p.unlink()
                continue
            if not p.name.endswith(f"-{kind}.json"):
                continue
            req = json.loads(p.read_text())
            p.unlink()
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                p.unlink()
            continue
        if isinstance(req, dict):
            return req
    return None


class EngineNotRunning(RuntimeError):
    """No supervisor of this engine answers, and none is proven alive."""


class CommandRefused(RuntimeError):
    """The engine answered, and said no (stopping, or not forwarded in time)."""


def pid_file(var_dir: str | Path, engine_id: str) -> Path:
    return Path(var_dir) / f"gekko-{engine_id}.pid"


@dataclass(frozen=True)
class Probe:
    """What is known about the engine: the supervisor's answer, or a verified pid, or why not."""

    answer: dict[str, Any] | None  # the supervisor's status reply over the socket
    verified: ProcessIdentity | None  # a live supervisor proven by the pid file
    why: str  # why the socket did not answer
    stale: str = ""  # why the pid file, if any, is not believed

    @property
    def running(self) -> bool:
        return self.answer is not None or self.verified is not None


def _check_pid_file(var_dir: str | Path, engine_id: str) -> tuple[ProcessIdentity | None, str]:
    path = pid_file(var_dir, engine_id)
    ident, rec = read_record(path)
    if ident is None:
        if rec:
            return None, f"{path} is not a pid record of this version ({rec['raw']!r}): ignored"
        return None, ""
    if rec.get("engine_id") != engine_id:
        return None, f"{path} names engine {rec.get('engine_id')!r}: ignored"
    if not ident.alive() or not _runs_gekko(ident.pid):
        return None, (
            f"{path} names pid {ident.pid}, which is not this engine's supervisor "
            "(left by a crash; nothing was signalled)"
        )
    return ident, ""


def _runs_gekko(pid: int) -> bool:
    """The process's command line is a ``gekko run`` (a console script or ``-m ops.cli``)."""
    import psutil

    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "run" in cmd and any(Path(a).name == "gekko" or a == "ops.cli" for a in cmd)


def probe(var_dir: str | Path, engine_id: str, *, socket_dir: str = "") -> Probe:
    """``socket_dir``: [security] control_socket_dir (ops/control.py ``socket_path``)."""
    try:
        path = socket_path(var_dir, engine_id, socket_dir)
        ans = request(path, {"op": "status"}, timeout_s=10.0)
        if ans.get("ok") and ans.get("engine") == engine_id:
            return Probe(ans, None, "")
        why = f"the control socket answered {ans!r}"
    except ControlUnreachable as exc:
        why = str(exc)
    ident, note = _check_pid_file(var_dir, engine_id)
    return Probe(None, ident, why, note)


_SIGNALS = {"kill": signal.SIGUSR1, "flatten": signal.SIGUSR1, "resume": signal.SIGUSR2}


def operate(
    var_dir: str | Path,
    engine_id: str,
    kind: str,
    command: str,
    actor: str,
    *,
    socket_dir: str = "",
) -> str:
    """Deliver ``kind`` (kill / flatten / resume) to the running engine; the line to print.

    Raises ``EngineNotRunning`` (nothing answers, no proven supervisor: nothing signalled) or
    ``CommandRefused`` (the engine answered no: a role too low is one, ops/roles.py)."""
    path = socket_path(var_dir, engine_id, socket_dir)
    try:
        ans = request(path, {"op": kind, "command": command})
    except ControlNoAnswer as exc:  # sent: a second delivery (a flatten twice) is worse
        raise CommandRefused(
            f"{command}: {exc}; it may have been delivered: see `gekko status` before repeating"
        ) from None
    except ControlUnreachable as exc:
        return _signal_verified(var_dir, engine_id, kind, command, actor, str(exc))
    if not ans.get("ok"):
        raise CommandRefused(f"engine {engine_id!r} refused {command!r}: {ans.get('error')}")
    return (
        f"{command}: delivered to engine {engine_id!r} "
        f"(supervisor pid {ans.get('pid')}, run {ans.get('run_id')})"
    )


def _signal_verified(
    var_dir: str | Path, engine_id: str, kind: str, command: str, actor: str, why: str
) -> str:
    """The fallback: a signal, only to a supervisor the pid file proves alive."""
    ident, note = _check_pid_file(var_dir, engine_id)
    if ident is None:
        raise EngineNotRunning(
            f"no engine {engine_id!r} is running ({'; '.join(x for x in (why, note) if x)})"
        )
    flag = Path(var_dir) / f"gekko-{engine_id}.flatten"
    if kind == "flatten":  # the supervisor reads this flag when SIGUSR1 arrives
        flag.write_text("flatten\n")
    req = write_request(var_dir, engine_id, kind, command, actor)
    try:
        ident.send_signal(_SIGNALS[kind])
    except OSError as exc:
        req.unlink(missing_ok=True)
        if kind == "flatten":
            flag.unlink(missing_ok=True)
        raise EngineNotRunning(f"no engine {engine_id!r} is running ({exc})") from None
    return (
        f"{command}: signalled engine {engine_id!r} (verified supervisor pid {ident.pid}; "
        f"its control socket did not answer: {why})"
    )
