"""Operator roles: which OS user may do what through the supervisor's control socket.

Why roles keyed by the kernel's word: the control socket learns the caller's uid and gid from
the kernel (``SO_PEERCRED``, ops/control.py), which a client cannot forge, so the decision rests
on who the caller *is*, not on a name it claims. ``[security.roles]`` (ops/security_config.py)
lists OS users (``@group``: every member of that OS group) per role; a caller matching several
entries gets the highest. The engine's own OS user and root are always admin: they own its
processes, files and shared memory already, so a lower role would be theatre. Anyone else not
listed is refused, and so is any request this table does not name (fail closed).

Every action has the role it needs (``ACTIONS``); the contract is docs/security.md,
"Operator roles".
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ops.security_config import ROLE_NAMES

#: what each control request needs. Model swap, key management and config reload are admin:
#: today they are done on files only the engine's OS user may write (a model version dropped
#: into the registry, ``gekko keys`` on the keystore, config.toml); a socket request for any of
#: them must be admin when it comes.
ACTIONS: dict[str, str] = {
    "status": "viewer",
    "activity": "viewer",  # gekko top's figures
    "kill": "trader",
    "flatten": "trader",
    "resume": "trader",
    "model_swap": "admin",
    "keys": "admin",
    "config_reload": "admin",
}
RANK = {r: k for k, r in enumerate(ROLE_NAMES)}


@dataclass(frozen=True)
class Caller:
    """Who asks: the kernel's uid/gid for a socket peer; a name only for a remote operator."""

    uid: int | None
    gid: int | None
    user: str


def _groups_of(user: str, uid: int | None, gid: int | None) -> set[str]:
    """The OS group names of a user (its primary group from the kernel, the rest from the
    group database)."""
    gids: set[int] = set()
    if gid is not None:
        gids.add(gid)
    if uid is not None:
        try:
            name = pwd.getpwuid(uid).pw_name
            gids.update(os.getgrouplist(name, gid if gid is not None else -1))
        except (KeyError, OSError):
            pass
    out = set()
    for g in gids:
        try:
            out.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return out


class RoleMap:
    """``[security.roles]`` resolved against a caller."""

    def __init__(self, names: dict[str, str], owner_uid: int | None = None) -> None:
        self.names = dict(names)
        self.owner_uid = os.getuid() if owner_uid is None else owner_uid

    @classmethod
    def from_config(cls, cfg: Any) -> RoleMap:
        return cls(cfg.security.roles.names())

    def role_of(self, caller: Caller) -> str:
        """The caller's role, or "" (refused)."""
        if caller.uid is not None and caller.uid in (self.owner_uid, 0):
            return "admin"
        found = [self.names[caller.user]] if caller.user in self.names else []
        if caller.uid is not None:  # groups only for an OS user the kernel named
            for g in _groups_of(caller.user, caller.uid, caller.gid):
                if f"@{g}" in self.names:
                    found.append(self.names[f"@{g}"])
        return max(found, key=RANK.__getitem__, default="")

    def role_of_operator(self, name: str) -> str:
        """A remote operator's role: only a name listed in [security.roles] (no group, and the
        engine's own user and root get nothing for their name alone)."""
        return self.names.get(name, "")

    def others(self) -> Iterable[str]:
        """The names (and @groups) granted a role: anyone besides the engine's user and root."""
        return self.names.keys()


def refusal(op: str, role: str, who: str) -> str:
    """Why ``who`` (with ``role``) may not do ``op``; "" when allowed."""
    need = ACTIONS.get(op)
    if need is None:
        return f"unknown request {op!r}"
    if not role:
        return (
            f"{who} has no role on this engine: [security.roles] in its config.toml "
            f"must list it (or one of its groups) as {need} or higher to {op}"
        )
    if RANK[role] < RANK[need]:
        return f"{who} is {role}: {op} needs {need} ([security.roles] in the engine's config.toml)"
    return ""


class RefusalThrottle:
    """At most ``burst`` refusal records per ``window_s`` per source: a local user hammering the
    socket, or anyone writing to the bus, cannot flood the audit log. What is held back is
    counted, and the next record says how many (``suppressed_before``)."""

    def __init__(self, burst: int = 20, window_s: float = 60.0) -> None:
        self.burst, self.window_s = burst, window_s
        self._state: dict[str, list[float]] = {}  # source -> [window start, recorded, held back]

    def take(self, source: str, now: float) -> int | None:
        """None: do not record this one; else how many were held back before it."""
        st = self._state.get(source)
        if st is None or now - st[0] >= self.window_s:
            held = int(st[2]) if st else 0
            self._state[source] = [now, 1, 0]
            return held
        if st[1] >= self.burst:
            st[2] += 1
            return None
        st[1] += 1
        held, st[2] = int(st[2]), 0
        return held


class ControlGate:
    """The control socket's ``authorize`` (ops/control.py): the peer's role against the
    request's; each refusal handed to ``record`` (actor, action, detail) for the audit log."""

    def __init__(self, roles: RoleMap, record: Callable[[str, str, dict[str, Any]], None]) -> None:
        self.roles = roles
        self.record = record
        self.refused = 0
        self.throttle = RefusalThrottle()

    def __call__(self, req: dict[str, Any], peer: Any) -> str:
        op = req.get("op")
        role = self.roles.role_of(Caller(peer.uid, peer.gid, peer.user))
        if not isinstance(op, str):
            why = "not a request"
        else:
            why = refusal(op, role, f"user {peer.user}")
        if why:
            self.refused += 1
            held = self.throttle.take(f"uid {peer.uid}", time.monotonic())
            if held is not None:
                detail = {"op": str(op)[:64], "role": role or "none", "reason": why}
                detail.update(uid=peer.uid, cli_pid=peer.pid, via="socket")
                if held:
                    detail["suppressed_before"] = held
                self.record(peer.user, "operator.refused", detail)
        return why
