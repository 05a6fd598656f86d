"""Remote control commands: their format, their Ed25519 signature, and the receiving checks.

Why signatures and not the bus's word: anything that can write to the Redis bus can XADD to an
engine's command stream, so a command counts only if it is signed by an operator the receiving
engine lists (``[security.remote_control] operators``), is for this engine, has not expired,
and has never been seen before (its nonce is kept in memory and in Redis until it expires, so a
restarted listener still refuses a replay). Ed25519 rather than a shared HMAC key: the engine
holds only public keys, so nothing on the engine's host can sign a command.

A command is one stream entry with two fields: ``c``, the canonical JSON of ``Command`` (sorted
keys, no spaces), and ``s``, the base64 signature over ``DOMAIN + c``. The receiver verifies the
exact bytes it received before it parses anything it trusts. Contract: docs/security.md,
"Remote control". The listener is ops/remote_listener.py; the sender ops/remote_cmds.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ops.roles import RoleMap, refusal
from ops.security_config import public_key_bytes
from ops.store.redis_store import key

DOMAIN = b"gekko remote control v1\n"  # signed before the body: a signature means only this
MAX_ENTRY = 4096  # bytes of a command's body; larger is refused unread
REMOTE_OPS = ("kill", "flatten", "resume")  # what may come over the bus (trader's actions)
_NONCE_RE = re.compile(r"[0-9a-f]{32}")


def stream_key(engine_id: str) -> str:
    """The stream engine ``engine_id`` reads commands from."""
    return key(engine_id, "remote_control")


def nonce_key(engine_id: str, nonce: str) -> str:
    return key(engine_id, "remote_nonce", nonce)


def result_key(engine_id: str, nonce: str) -> str:
    """Where the listener says what became of a command (first word wins; informational only:
    the audit log is the record)."""
    return key(engine_id, "remote_result", nonce)


@dataclass(frozen=True)
class Command:
    """One signed operator command, as the sender built it."""

    engine: str
    op: str
    command: str  # as typed, e.g. "gekko kill --remote"
    operator: str
    nonce: str  # 32 hex digits, random
    issued_ns: int  # wall clock of the sender
    expires_ns: int
    v: int = 1

    def body(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def new(cls, engine: str, op: str, command: str, operator: str, lifetime_s: float) -> Command:
        now = time.time_ns()
        return cls(
            engine, op, command, operator, secrets.token_hex(16), now, now + int(lifetime_s * 1e9)
        )

    @classmethod
    def parse(cls, body: bytes) -> Command | None:
        """The command in ``body``, or None when it is not exactly one."""
        try:
            d = json.loads(body)
        except ValueError:
            return None
        if not isinstance(d, dict) or set(d) != set(cls.__dataclass_fields__):
            return None
        types = {"engine": str, "op": str, "command": str, "operator": str, "nonce": str}
        if any(type(d[k]) is not t for k, t in types.items()):
            return None
        if any(type(d[k]) is not int for k in ("issued_ns", "expires_ns", "v")):
            return None
        return cls(**d)


def sign(cmd: Command, private_key: Ed25519PrivateKey) -> dict[str, bytes]:
    """The stream entry's fields for ``cmd``."""
    body = cmd.body()
    return {"c": body, "s": base64.b64encode(private_key.sign(DOMAIN + body))}


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class NonceStore:
    """Nonces seen, until their command expires: in memory, and in Redis (``SET NX`` with a
    TTL) so a listener restarted meanwhile — or a second one — refuses a replay too."""

    def __init__(self, client: Any, engine_id: str) -> None:
        self.client = client
        self.engine_id = engine_id
        self._seen: dict[str, int] = {}  # nonce -> until (wall ns)
        self._lock = threading.Lock()

    def claim(self, nonce: str, until_ns: int, now_ns: int) -> bool:
        """True the first time ``nonce`` is seen; raises when Redis cannot record it (the
        caller refuses the command: an unrecorded nonce could be replayed elsewhere)."""
        with self._lock:
            self._seen = {n: t for n, t in self._seen.items() if t > now_ns}
            if nonce in self._seen:
                return False
            ttl_ms = max(1, (until_ns - now_ns) // 1_000_000)
            if not self.client.set(nonce_key(self.engine_id, nonce), b"1", nx=True, px=ttl_ms):
                self._seen[nonce] = until_ns
                return False
            self._seen[nonce] = until_ns
            return True


@dataclass
class Verdict:
    """What the checks decided: ``cmd`` (when its body parsed), ``signed`` (the signature is an
    operator's), ``why`` ("" = accepted)."""

    cmd: Command | None
    signed: bool
    why: str


class Verifier:
    """The receiving engine's checks, in order: shape, operator known, signature, engine,
    expiry, role, nonce (last: a refused command does not use up its nonce)."""

    def __init__(self, engine_id: str, section: Any, roles: RoleMap, nonces: NonceStore) -> None:
        self.engine_id = engine_id
        self.section = section
        self.roles = roles
        self.nonces = nonces
        self.keys = {
            name: Ed25519PublicKey.from_public_bytes(public_key_bytes(pub) or b"")
            for name, pub in section.operators.items()
        }

    def check(self, fields: dict[bytes, bytes], now_ns: int) -> Verdict:
        body, sig_b64 = fields.get(b"c", b""), fields.get(b"s", b"")
        if not body or not sig_b64 or len(body) > MAX_ENTRY or len(sig_b64) > 200:
            return Verdict(None, False, "malformed command entry (fields c and s)")
        cmd = Command.parse(body)
        if cmd is None or cmd.v != 1 or not _NONCE_RE.fullmatch(cmd.nonce):
            return Verdict(None, False, "malformed command body")
        pub = self.keys.get(cmd.operator)
        if pub is None:
            return Verdict(cmd, False, f"unknown operator {cmd.operator!r}")
        try:
            pub.verify(base64.b64decode(sig_b64, validate=True), DOMAIN + body)
        except (InvalidSignature, binascii.Error, ValueError):
            return Verdict(cmd, False, f"bad signature (not operator {cmd.operator!r}'s key)")
        return Verdict(cmd, True, self._signed(cmd, now_ns))

    def _signed(self, cmd: Command, now_ns: int) -> str:
        """The checks of a command whose signature holds ("" = accepted)."""
        sec = self.section
        skew = int(sec.clock_skew_s * 1e9)
        if cmd.engine != self.engine_id:
            return f"for engine {cmd.engine!r}, not this one"
        if cmd.expires_ns - cmd.issued_ns > int(sec.max_age_s * 1e9):
            return f"lifetime over [security.remote_control] max_age_s ({sec.max_age_s:g}s)"
        if cmd.issued_ns > now_ns + skew:
            return "issued in the future (clocks differ by more than clock_skew_s?)"
        if now_ns > cmd.expires_ns + skew:
            return f"expired {(now_ns - cmd.expires_ns) / 1e9:.1f}s ago"
        if cmd.op not in REMOTE_OPS:
            return f"{cmd.op!r} may not be sent remotely (only {', '.join(REMOTE_OPS)})"
        role = self.roles.role_of_operator(cmd.operator)
        why = refusal(cmd.op, role, f"operator {cmd.operator}")
        if why:
            return why
        try:
            fresh = self.nonces.claim(cmd.nonce, cmd.expires_ns + skew, now_ns)
        except Exception as exc:  # fail closed: a nonce we cannot record could be replayed
            return f"the nonce could not be recorded in Redis ({type(exc).__name__}): refused"
        return "" if fresh else f"replayed (nonce {cmd.nonce} seen before)"
