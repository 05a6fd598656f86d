"""Authenticated bridge frames: what a publisher signs, what a receiver checks, and what it keeps.

Why: anyone who can write to the Redis bus could otherwise publish into another engine's streams,
and a subscriber would hand their "fills" to its strategies. Each entry a bridge publishes
carries its sequence number ``q`` (``<run epoch ms>-<ring sequence>``, equal to the entry's id
when the publisher wrote it) and ``mac``: HMAC-SHA256 with the publishing engine's key over a
length-prefixed encoding of (version, engine, ring, q, run, type, payload). A receiver holds the
keys of the engines it accepts (``[bridge.peers]``, its allow-list) and, per stream, the
highest sequence it accepted (also kept in ``<var_dir>/bridge-seen-<engine>.json``, which a
Redis writer cannot roll back). It drops, counts and audits an entry that

- names another engine than the stream's owner, or one not in the allow-list (``unknown_engine``);
- lacks a MAC or whose MAC fails under every key of that engine (``bad_mac``);
- repeats or goes back in sequence, or repeats a ring sequence of the same run under a later
  epoch (``replayed``). An entry re-read from the consumer group's pending list after a restart
  is at-least-once re-delivery, not an attack: the caller counts it as a duplicate instead.

Binding ``q`` rather than the Redis id means a copy of an authentic entry re-added under a fresh
id is recognised as the replay it is. HMAC is symmetric: an engine holding a peer's key could
forge that peer's frames (docs/security.md, "Bridge authentication").
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import AuditEvent

log = logging.getLogger("gekko.bridge")
MAC_VERSION = b"gekko-bridge-mac-v1"
MIN_KEY_CHARS = 32  # an HMAC-SHA256 key of 32+ characters (e.g. `openssl rand -base64 32`)
REASONS = ("bad_mac", "replayed", "unknown_engine")

Seq = tuple[int, int]  # (epoch ms, ring sequence)


def parse_seq(raw: bytes | str) -> Seq | None:
    """``b"<epoch>-<seq>"`` as a pair of non-negative ints; None when malformed."""
    s = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    ms, sep, seq = s.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit() and len(s) <= 41):
        return None
    return int(ms), int(seq)


def frame_mac(
    key: bytes, engine: str, ring: str, q: bytes, run: bytes, ftype: bytes, payload: bytes
) -> bytes:
    """HMAC-SHA256 over the length-prefixed parts (no part can be shifted into its neighbour)."""
    parts = (MAC_VERSION, engine.encode(), ring.encode(), q, run, ftype, payload)
    data = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return hmac.digest(key, data, "sha256")


class FrameSigner:
    """The publisher's side: one engine's key; signs its frames and recognises its own entries."""

    def __init__(self, engine_id: str, key: str) -> None:
        self.engine_id = engine_id
        self._key = key.encode()

    def fields(
        self, ring: str, epoch: int, seq: int, run: bytes, ftype: int, payload: bytes
    ) -> dict[bytes, bytes]:
        """The authentication fields (``q``, ``mac``) of one frame."""
        q = f"{epoch}-{seq}".encode()
        mac = frame_mac(self._key, self.engine_id, ring, q, run, str(ftype).encode(), payload)
        return {b"q": q, b"mac": mac}

    def authentic(self, ring: str, fields: dict[bytes, bytes]) -> bool:
        """Is this entry one this engine published (its MAC checks with our key)?"""
        return _mac_ok([self._key], self.engine_id, ring, fields)


def _mac_ok(keys: list[bytes], engine: str, ring: str, fields: dict[bytes, bytes]) -> bool:
    mac = fields.get(b"mac")
    q, run, ftype = fields.get(b"q"), fields.get(b"run"), fields.get(b"t")
    if mac is None or q is None or run is None or ftype is None:
        return False
    payload = fields.get(b"m", b"")
    return any(
        hmac.compare_digest(mac, frame_mac(k, engine, ring, q, run, ftype, payload)) for k in keys
    )


@dataclass
class _Mark:
    """The last accepted frame of one stream: its sequence and its run."""

    seq: Seq
    run: bytes


class FrameGuard:
    """The receiver's checks and its per-stream high-water marks (memory + a local file)."""

    def __init__(self, peers: dict[str, list[str]], path: Path) -> None:
        self._keys = {e: [k.encode() for k in ks if k] for e, ks in peers.items()}
        self.path = path
        self.marks: dict[str, _Mark] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        """The marks kept by the previous bridge of this engine; a file that cannot be read is
        refused (fail closed): without it a rolled-back stream could be replayed unnoticed."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            data = json.loads(raw)
            for stream, (ms, seq, run) in data.items():
                self.marks[str(stream)] = _Mark((int(ms), int(seq)), str(run).encode())
        except (ValueError, TypeError, AttributeError) as exc:
            raise RuntimeError(
                f"bridge: {self.path} (the sequence numbers accepted from other engines) is "
                f"unreadable ({exc}); move it away to start over (a replay of what it covered "
                "would then go unnoticed once)"
            ) from None

    def check(
        self, stream: str, owner: str, ring: str, fields: dict[bytes, bytes]
    ) -> tuple[str, Seq | None]:
        """``("ok", seq)`` or ``(reason, seq-or-None)`` with reason one of ``REASONS``."""
        if fields.get(b"src", b"") != owner.encode() or owner not in self._keys:
            return "unknown_engine", None
        if not _mac_ok(self._keys[owner], owner, ring, fields):
            return "bad_mac", None
        seq = parse_seq(fields[b"q"])
        if seq is None:
            return "bad_mac", None  # authentic but malformed: only a broken publisher does this
        mark = self.marks.get(stream)
        if mark is not None and (
            seq <= mark.seq or (fields[b"run"] == mark.run and seq[1] <= mark.seq[1])
        ):
            return "replayed", seq
        return "ok", seq

    def accept(self, stream: str, seq: Seq, run: bytes) -> None:
        self.marks[stream] = _Mark(seq, run)
        self._dirty = True

    def start_id(self, stream: str) -> str:
        """Where a consumer group created now should start: after what was accepted."""
        m = self.marks.get(stream)
        return f"{m.seq[0]}-{m.seq[1]}" if m else "0"

    def save(self) -> None:
        """Write the marks (atomically) if they moved: before the entries are acknowledged."""
        if not self._dirty:
            return
        data = {
            s: [m.seq[0], m.seq[1], m.run.decode("ascii", "replace")] for s, m in self.marks.items()
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)
        self._dirty = False


def marks_path(var_dir: str | Path, engine_id: str) -> Path:
    return Path(var_dir) / f"bridge-seen-{engine_id}.json"


@dataclass
class RejectAudit:
    """Audit records of rejected frames, at most ``limit`` per (reason, stream) per ``window_s``:
    a flood of forged entries must not become a flood of audit rows. The next record after a
    quiet spell (or ``flush`` at exit) says how many were left out."""

    engine_id: str
    limit: int = 5
    window_s: float = 60.0
    _win: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # [start, n, left out]

    def note(self, reason: str, stream: str, entry_id: str, claimed: bytes) -> AuditEvent | None:
        now = time.monotonic()
        w = self._win.setdefault((reason, stream), [now, 0, 0])
        if now - w[0] >= self.window_s:
            w[0], w[1] = now, 0
        if w[1] >= self.limit:
            w[2] += 1
            return None
        w[1] += 1
        left_out, w[2] = int(w[2]), 0
        return self._event(
            reason, stream, entry_id=entry_id, claimed_source=_text(claimed), left_out=left_out
        )

    def flush(self) -> list[AuditEvent]:
        out = [
            self._event(reason, stream, left_out=int(w[2]))
            for (reason, stream), w in self._win.items()
            if w[2]
        ]
        for w in self._win.values():
            w[2] = 0
        return out

    def _event(self, reason: str, stream: str, **detail: Any) -> AuditEvent:
        detail = {"stream": stream, "engine_id": self.engine_id, **detail}
        return AuditEvent(
            time.time_ns(), "bridge", f"bridge.{reason}", msgspec.json.encode(detail).decode()
        )


def unauthenticated_notice(engine_id: str, config_path: str) -> AuditEvent:
    """``[bridge] authenticate = false``: the warning logged, and the audit record, of one start."""
    where = config_path or "the configuration"
    log.warning(
        "bridge: authentication is OFF ([bridge] authenticate = false in %s): frames from other "
        "engines are accepted unchecked from anyone who can write to Redis",
        where,
    )
    detail = {"engine_id": engine_id, "config": where}
    return AuditEvent(
        time.time_ns(), "bridge", "bridge.unauthenticated", msgspec.json.encode(detail).decode()
    )


def _text(raw: bytes) -> str:
    """An attacker-chosen field as printable text, bounded."""
    return raw[:64].decode("utf-8", "replace")
