"""The sending side of remote control: ``gekko kill|resume --engine ID --remote`` and
``gekko remote keygen``.

The operator's Ed25519 private key is a PEM file (``[security.remote_control] key_file``) that
must be the operator's own and mode 0600, else it is refused; only its public key goes into the
receiving engine's config. The command is signed (ops/remote_control.py), added to the engine's
command stream on the Redis bus, and the engine's answer is awaited on its result key for a few
seconds. Contract: docs/security.md, "Remote control".
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops.remote_control import Command, public_key_b64, result_key, sign, stream_key

ANSWER_TIMEOUT_S = 10.0
LIFETIME_S = 30.0  # a command's lifetime (capped by the sender's max_age_s)
STREAM_MAXLEN = 1000


class RemoteError(RuntimeError):
    """The command could not be signed or sent, or the engine refused it; the message says why."""


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The operator's key: this user's file, mode 0600 (fail closed otherwise)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError as exc:
        raise RemoteError(f"[security.remote_control] key_file {p}: {exc.strerror}") from None
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise RemoteError(
            f"[security.remote_control] key_file {p}: must be yours and mode 0600 "
            f"(it is mode {stat.S_IMODE(st.st_mode):04o}): refused"
        )
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise RemoteError(
            f"[security.remote_control] key_file {p}: not a PEM key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RemoteError(f"[security.remote_control] key_file {p}: not an Ed25519 key")
    return key


def send_remote(cfg: Any, engine_id: str, op: str, command: str, client: Any = None) -> str:
    """Sign ``op`` for ``engine_id``, publish it, and return the engine's answer as a line.
    Raises ``RemoteError`` (not signed, not sent, refused, or no answer)."""
    from ops.store.audit import os_user

    rc = cfg.security.remote_control
    if not rc.key_file:
        raise RemoteError("--remote needs [security.remote_control] key_file (your private key)")
    key = load_private_key(rc.key_file)
    operator = rc.operator or os_user()
    cmd = Command.new(engine_id, op, command, operator, min(LIFETIME_S, rc.max_age_s))
    if client is None:
        from ops.store.redis_store import RedisUnavailable, connect

        try:
            client = connect(cfg)
        except RedisUnavailable as exc:
            raise RemoteError(str(exc)) from None
    entry = client.xadd(
        stream_key(engine_id), sign(cmd, key), maxlen=STREAM_MAXLEN, approximate=True
    )
    eid = entry.decode() if isinstance(entry, bytes) else str(entry)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        raw = client.get(result_key(engine_id, cmd.nonce))
        if raw:
            result = str(json.loads(raw).get("result", ""))
            if result != "forwarded":
                raise RemoteError(f"engine {engine_id!r} {result} ({command}, entry {eid})")
            return (
                f"{command}: delivered to engine {engine_id!r} as operator {operator} (entry {eid})"
            )
        time.sleep(0.1)
    raise RemoteError(
        f"{command}: published (entry {eid}) but engine {engine_id!r} did not answer within "
        f"{ANSWER_TIMEOUT_S:g}s: is it running with [security.remote_control] enabled? "
        "It expires unused; see its audit log before repeating"
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new Ed25519 key: the private key to ``--out`` (0600, never overwritten), the public
    key printed as the line for the engine's [security.remote_control] operators."""
    from ops.store.audit import os_user

    out = Path(args.out).expanduser()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"gekko: {out}: {exc.strerror} (an existing key is never replaced)", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    name = args.name or os_user()
    print(f"private key: {out} (mode 0600; keep it on your machine)")
    print("add to the engine's config.toml, [security.remote_control] operators:")
    print(f'{name} = "{public_key_b64(key)}"')
    return 0


def add_parsers(sub: Any, with_config: Any) -> None:
    """``gekko remote keygen``; ``--remote`` / ``--engine`` on kill and resume are in ops/cli.py."""
    rem = sub.add_parser("remote", help="remote control over the Redis bus (signed commands)")
    rsub = rem.add_subparsers(dest="remote_command", required=True)
    kg = rsub.add_parser("keygen", help="make an operator's Ed25519 key pair")
    kg.add_argument("--out", required=True, help="where the private key goes (mode 0600)")
    kg.add_argument("--name", default="", help="operator name printed (default: your OS user)")
    kg.set_defaults(func=cmd_keygen)
