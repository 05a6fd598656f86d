"""Operator roles and remote control in a real run (one engine): another OS user (nobody, a
viewer) may read the status but not kill; a signed `gekko kill --remote` engages the kill switch;
a replayed and an expired command are refused; every refusal is in the audit log (PostgreSQL)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops.cli import main
from ops.config import load_config
from ops.control import request, socket_path
from ops.remote_control import Command, public_key_b64, result_key, sign, stream_key
from ops.store.redis_store import connect
from tests.test_audit_models import _audit, _config
from tests.test_engine_e2e import _wait_for, running_engine, wait_counter
from tests.test_operator_roles import NOBODY, as_nobody, shared_dir  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root"),
]


def _replace(text: str, section: str, old: str, new: str) -> str:
    at = text.index(old, text.index(f"\n{section}\n"))
    return text[:at] + new + text[at + len(old) :]


def test_roles_and_signed_remote_commands_in_a_real_run(
    tmp_path: Path,
    pg_dsn: str,
    shared_dir: Path,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    eid = "o" + uuid.uuid4().hex[:7]
    alice = Ed25519PrivateKey.generate()
    key_file = tmp_path / "alice.pem"
    key_file.write_bytes(
        alice.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cfg = _config(tmp_path, pg_dsn, inference=False, eid=eid)
    text = _replace(cfg.read_text(), "[bridge]", "enabled = false", "enabled = true")
    text = _replace(text, "[bridge]", 'publish = ["events"]', "publish = []")  # only the bus
    sock_dir = shared_dir / "run"
    text = _replace(
        text, "[security]", 'control_socket_dir = ""', f'control_socket_dir = "{sock_dir}"'
    )
    text = _replace(text, "[security.roles]", "viewer = []", 'viewer = ["nobody"]')
    text = _replace(text, "[security.roles]", "trader = []", 'trader = ["alice"]')
    rc = "[security.remote_control]"
    text = _replace(text, rc, "enabled = false", "enabled = true")
    text = _replace(
        text, rc, "operators = {}", f'operators = {{ alice = "{public_key_b64(alice)}" }}'
    )
    text = _replace(text, rc, 'operator = ""', 'operator = "alice"')
    text = _replace(text, rc, 'key_file = ""', f'key_file = "{key_file}"')
    cfg.write_text(text)
    sock = socket_path("", eid, str(sock_dir))
    with running_engine(cfg, tmp_path, eid) as proc:
        status, kill = as_nobody(
            lambda: [request(sock, {"op": "status"}), request(sock, {"op": "kill"})]
        )
        assert status["ok"] and status["engine"] == eid, status
        assert not kill["ok"] and "user nobody is viewer: kill needs trader" in kill["error"]
        assert main(["kill", "--remote", "--config", str(cfg)]) == 0  # the CLI, in-process
        assert "delivered to engine" in capsys.readouterr().out
        assert wait_counter(eid, "risk", "kills", 1, 60)
        # on the bus: that entry replayed, and a properly signed command long expired
        client = connect(load_config(cfg))
        client.xadd(stream_key(eid), client.xrange(stream_key(eid))[-1][1])
        now = time.time_ns()
        old = Command(
            eid,
            "resume",
            "gekko resume --remote",
            "alice",
            "ab" * 16,
            now - 99 * 10**9,
            now - 90 * 10**9,
        )
        client.xadd(stream_key(eid), sign(old, alice))
        assert _wait_for(lambda: client.exists(result_key(eid, old.nonce)), 30)
        client.close()  # an embedded Redis with a client still connected is left running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    rows = [(a, act, d) for a, act, d, _ in _audit(pg_dsn, "operator.")]
    got = [(a, act, d["via"], d.get("reason", "").split(" ")[0]) for a, act, d in rows]
    assert got == [
        ("nobody", "operator.refused", "socket", "user"),
        ("alice", "operator.kill", "remote", ""),
        ("alice", "operator.refused", "remote", "replayed"),
        ("alice", "operator.refused", "remote", "expired"),
    ], rows
    assert rows[0][2]["uid"] == NOBODY.pw_uid and rows[0][2]["op"] == "kill"
    assert rows[1][2]["command"] == "gekko kill --remote" and len(rows[1][2]["nonce"]) == 32
