"""Operator roles on the control socket: the caller as the kernel names it, mapped to viewer /
trader / admin by [security.roles]; refusals answered and handed to the audit path. A real other
OS user: a forked child that setuid's to ``nobody`` (the tests run as root)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.config import ConfigError, parse_config
from ops.control import ControlServer, request, socket_path
from ops.roles import ACTIONS, Caller, ControlGate, RefusalThrottle, RoleMap, refusal
from tests import _leaks
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def as_nobody(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child running as the OS user nobody (its JSON result)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            out = {"result": fn()}
        except BaseException as exc:
            out, code = {"child_error": repr(exc)}, 1
        os.write(w, json.dumps(out).encode())
        os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    got = json.loads(data)
    assert "child_error" not in got, got
    return got["result"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that nobody may pass through (pytest's own tmp is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="gkro", dir="/tmp"))
    _leaks.register_dir(base)
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_roles_come_from_users_and_groups_and_refuse_everyone_else() -> None:
    roles = RoleMap({"alice": "viewer", f"@{NOBODY_GROUP}": "trader", "bob": "admin"})
    nobody = Caller(NOBODY.pw_uid, NOBODY.pw_gid, "nobody")
    assert roles.role_of(nobody) == "trader"  # through its group
    assert roles.role_of(Caller(os.getuid(), os.getgid(), "whoever")) == "admin"  # the engine's
    assert roles.role_of(Caller(0, 0, "root")) == "admin"
    assert RoleMap({}, owner_uid=4242).role_of(Caller(4242, 4242, "svc")) == "admin"
    assert roles.role_of(Caller(54321, 54321, "uid 54321")) == ""  # not listed: refused
    # the highest of a user's entries counts
    assert RoleMap({"nobody": "viewer", f"@{NOBODY_GROUP}": "trader"}).role_of(nobody) == "trader"
    # a remote operator: its listed name only (no group, no free admin for "root")
    assert roles.role_of_operator("bob") == "admin" and roles.role_of_operator("root") == ""
    assert not RoleMap({}).role_of(nobody)  # no [security.roles]: only the engine's user and root
    # each action's role, in order
    assert refusal("status", "viewer", "u") == "" and refusal("activity", "viewer", "u") == ""
    for op in ("kill", "flatten", "resume"):
        assert "needs trader" in refusal(op, "viewer", "user x") and not refusal(op, "trader", "x")
    for op in ("model_swap", "keys", "config_reload"):
        assert ACTIONS[op] == "admin" and "needs admin" in refusal(op, "trader", "user x")
    assert "no role on this engine" in refusal("status", "", "user x")
    assert refusal("drop_tables", "admin", "x") == "unknown request 'drop_tables'"


def test_roles_config_is_validated_naming_the_key() -> None:
    base = (ROOT / "config.toml").read_text()

    def load(old: str, new: str) -> str:
        assert old in base
        try:
            parse_config(base.replace(old, new, 1), "c.toml")
        except ConfigError as exc:
            return str(exc)
        return ""

    assert "security.roles.viewer[0]" in load("viewer = []", 'viewer = ["a b"]')
    assert "listed as viewer already" in load(
        "viewer = []\ntrader = []", 'viewer = ["bob"]\ntrader = ["bob"]'
    )
    assert "security.control_socket_dir" in load(
        'control_socket_dir = ""', 'control_socket_dir = "run/gekko"'
    )
    assert load("viewer = []", 'viewer = ["bob", "@staff"]') == ""


def _serve(path: Path, roles: RoleMap, records: list) -> ControlServer:
    def handle(req: dict[str, Any], peer: Any) -> dict[str, Any]:
        return {"ok": True, "op": req["op"], "user": peer.user, "uid": peer.uid}

    gate = ControlGate(roles, lambda actor, action, d: records.append((actor, action, d)))
    server = ControlServer(path, handle, authorize=gate, shared=True)
    server.start()
    return server


def test_another_user_is_served_by_its_role_and_every_refusal_is_recorded(
    shared_dir: Path,
) -> None:
    path = socket_path("unused", "r1", str(shared_dir / "run"))
    records: list = []
    server = _serve(path, RoleMap({"nobody": "viewer"}), records)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
        status, kill = as_nobody(
            lambda: [request(path, {"op": "status"}), request(path, {"op": "kill"})]
        )
        # the kernel named the caller: nobody, as a viewer
        assert status == {"ok": True, "op": "status", "user": "nobody", "uid": NOBODY.pw_uid}
        assert kill == {
            "ok": False,
            "error": "user nobody is viewer: kill needs trader "
            "([security.roles] in the engine's config.toml)",
        }
        # the engine's own user (root here) may do anything
        assert request(path, {"op": "kill"})["ok"] is True
    finally:
        server.close()
    assert [(a, act, d["op"], d["role"], d["uid"], d["via"]) for a, act, d in records] == [
        ("nobody", "operator.refused", "kill", "viewer", NOBODY.pw_uid, "socket")
    ]
    assert "needs trader" in records[0][2]["reason"] and records[0][2]["cli_pid"] > 0


def test_a_user_with_no_role_is_refused_everything(shared_dir: Path) -> None:
    path = shared_dir / "run" / "gekko-r2.sock"
    records: list = []
    server = _serve(path, RoleMap({"alice": "admin"}), records)
    try:
        got = as_nobody(lambda: [request(path, {"op": op}) for op in ("status", "resume")])
    finally:
        server.close()
    assert [g["ok"] for g in got] == [False, False]
    assert all("user nobody has no role on this engine" in g["error"] for g in got)
    assert [(a, d["op"], d["role"]) for a, _, d in records] == [
        ("nobody", "status", "none"),
        ("nobody", "resume", "none"),
    ]


def test_a_shared_socket_directory_others_can_write_to_is_refused(shared_dir: Path) -> None:
    d = shared_dir / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    server = ControlServer(d / "gekko-r3.sock", lambda r, p: {"ok": True}, shared=True)
    with pytest.raises(OSError, match="writable by other users"):
        server.start()
    os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(d, 0o755)
    with pytest.raises(OSError, match="not a directory of this user or root"):
        server.start()
    assert not (d / "gekko-r3.sock").exists()


def test_refusals_are_recorded_up_to_a_burst_then_counted() -> None:
    t = RefusalThrottle(burst=3, window_s=10.0)
    assert [t.take("uid 5", 100.0 + k / 10) for k in range(6)] == [0, 0, 0, None, None, None]
    assert t.take("uid 6", 100.5) == 0  # each source has its own budget
    assert t.take("uid 5", 111.0) == 3  # the next window's first record says what was held back
    assert t.take("uid 5", 111.1) == 0


def test_gekko_status_says_another_users_state_file_is_unreadable(shared_dir: Path) -> None:
    """Not HALTED (what an unreadable state file means to risk): unknown to this user."""
    from ops.cli import _denied

    state = shared_dir / "risk-state-x.json"
    state.write_text('{"state": "ACTIVE"}')
    state.chmod(0o600)
    assert as_nobody(lambda: [_denied(state), _denied(shared_dir / "none.json")]) == [True, False]
    assert _denied(state) is False
