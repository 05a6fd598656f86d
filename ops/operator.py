"""Who sent an operator command to a running engine.

``gekko kill`` / ``kill --flatten`` / ``resume`` reach the supervisor as a signal, and a signal
does not say who sent it (Python's handlers get no ``siginfo``). So the command first leaves a
small request file naming the OS user, its pid and the command, under ``<var>/operator/``;
the supervisor takes the oldest request of that kind when the signal arrives and writes the
audit row with that actor. A signal sent by hand (``kill -USR1``) still works; its row says
the sender is unknown. A request whose signal could not be sent is removed by the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

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
