"""The bridge's receiving half: subscribed Redis streams → the local "remote" ring.

One job, apart from the bridge's loop so that it can be driven against a real Redis without a
running engine: read the consumer group (first what is pending after a (re)connect, then new
entries), check each entry (``procs.bridge_auth.FrameGuard`` when authentication is on), put the
good ones into the ring as ``Remote`` envelopes, record the accepted sequence numbers, and only
then acknowledge the whole batch (rejected entries included: they must not come back).

A rejected entry is counted (``remote_bad_mac``, ``remote_replayed``, ``remote_unknown_engine``)
and audited: an ``AuditEvent`` goes into the remote ring, where the supervisor takes it into the
audit trail (rate-limited by ``RejectAudit``; so is the warning logged with it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from engine.messages import Message, Remote
from procs.bridge_auth import REASONS, FrameGuard, RejectAudit

log = logging.getLogger("gekko.bridge")

MSG_DECODER = msgspec.msgpack.Decoder(Message)  # a bridged frame's message


def decode_remote(raw: bytes) -> Any:
    """A bridged frame's message, or a ValueError / RecursionError saying why it is none.

    msgspec refuses bad bytes with ``DecodeError``, but bad UTF-8 in a string with
    ``UnicodeDecodeError`` and a deeply nested frame with ``RecursionError``: all three must drop
    the entry, never end the bridge (which would re-read it, unacknowledged, at every restart).
    An envelope inside the envelope and an int beyond int64 (the rings' and numpy's type; msgspec
    takes up to 2**64 - 1) are refused too: no engine publishes either."""
    msg = MSG_DECODER.decode(raw)
    if type(msg) is Remote:
        raise ValueError("a Remote envelope inside a bridged frame")
    if not _int64_only(msgspec.structs.astuple(msg)):
        raise ValueError(f"{type(msg).__name__}: an integer beyond int64")
    return msg


def _int64_only(v: Any) -> bool:
    if isinstance(v, int):
        return -(1 << 63) <= v < 1 << 63
    if isinstance(v, list | tuple):
        return all(_int64_only(x) for x in v)
    if isinstance(v, dict):
        return all(_int64_only(x) for x in v.values())
    if isinstance(v, msgspec.Struct):
        return _int64_only(msgspec.structs.astuple(v))
    return True


class Receiver:
    """Delivers ``sub_streams`` (stream → (engine, ring)) through consumer group ``group``."""

    def __init__(
        self,
        engine_id: str,
        group: str,
        sub_streams: dict[str, tuple[str, str]],
        batch: int,
        out: Any,
        metrics: Any,
        guard: FrameGuard | None = None,
        audit: RejectAudit | None = None,
    ) -> None:
        self.engine_id, self.group, self.sub_streams = engine_id, group, sub_streams
        self.batch, self.out, self.m = batch, out, metrics
        self.guard, self.audit = guard, audit
        self.bus: Any = None
        self.pending_reread = True  # after (re)connecting, first re-read what was not acked
        self.c_rcv, self.c_rdup = (
            metrics.counter_index("received"),
            metrics.counter_index("remote_duplicates"),
        )
        self.c_err = metrics.counter_index("redis_errors")
        self.c_rej = {r: metrics.counter_index(f"remote_{r}") for r in REASONS}
        self.rejected = dict.fromkeys(REASONS, 0)

    def connect(self, bus: Any) -> None:
        """A (new) connection: groups exist (a new one starts after what was accepted), the
        delivered ids are loaded, and the pending entries come first."""
        self.bus = bus
        for st in self.sub_streams:
            start = self.guard.start_id(st) if self.guard is not None else "0"
            bus.ensure_group(st, self.group, start=start)
        bus.load_seen(self.sub_streams)
        self.pending_reread = True

    def receive(self, block_ms: int | None) -> bool:
        """One XREADGROUP's worth; True when it read anything (or finished the pending list)."""
        if not self.sub_streams:
            return False
        bus, m, redelivered = self.bus, self.m, self.pending_reread
        entries = bus.read(
            list(self.sub_streams),
            self.group,
            self.engine_id,
            count=self.batch,
            block_ms=block_ms,
            pending=redelivered,
        )
        if redelivered and not entries:
            self.pending_reread = False  # the backlog of unacknowledged entries is done
            return True
        done: list[tuple[str, str]] = []
        for stream, eid, fields in entries:
            done.append((stream, eid))
            src, ring = self.sub_streams[stream]
            sid, seq = eid, None
            if self.guard is not None:
                verdict, seq = self.guard.check(stream, src, ring, fields)
                if verdict == "replayed" and redelivered:
                    verdict = "duplicate"  # re-read after a restart: at-least-once, not an attack
                if verdict in REASONS:
                    self._reject(verdict, stream, eid, fields)
                    continue
                if verdict == "duplicate":
                    m.inc_i(self.c_rdup)
                    continue
                sid = fields[b"q"].decode()  # the authenticated sequence (the id, as published)
            if not bus.is_new(stream, eid):
                m.inc_i(self.c_rdup)
                continue
            try:
                msg = decode_remote(fields.get(b"m", b""))
            except (ValueError, RecursionError) as exc:
                log.error("bridge: %s %s: undecodable message dropped (%s)", stream, eid, exc)
                m.inc_i(self.c_err)
                continue
            self.out.publish(Remote(src, ring, sid, time.monotonic_ns(), msg))
            if self.guard is not None and seq is not None:
                self.guard.accept(stream, seq, fields[b"run"])
            m.inc_i(self.c_rcv)
        if self.guard is not None:
            self.guard.save()  # before the acknowledgement: a crash re-reads, never loses
        bus.delivered(self.group, done)
        return bool(entries)

    def _reject(self, reason: str, stream: str, eid: str, fields: dict[bytes, bytes]) -> None:
        self.m.inc_i(self.c_rej[reason])
        self.rejected[reason] += 1
        ev = self.audit.note(reason, stream, eid, fields.get(b"src", b"")) if self.audit else None
        if ev is not None:
            log.warning("bridge: %s %s dropped: %s", stream, eid, reason.replace("_", " "))
            self.out.publish(ev)

    def report(self) -> None:
        """At exit: the audit records the rate limit held back, and one line of totals."""
        if any(self.rejected.values()):
            log.warning(
                "bridge: frames dropped: %s",
                ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in self.rejected.items()),
            )
        if self.audit is not None:
            for ev in self.audit.flush():
                self.out.publish(ev)
