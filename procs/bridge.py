"""The bridge worker: local rings → Redis Streams, remote streams → the local "remote" ring, and
the latest-state hashes.

Why a separate process: Redis is a network service with millisecond hiccups; the trading workers
must never wait on it. The bridge reads the rings named in ``[bridge] publish`` like any other
reader (gating: nothing is lost, a long Redis outage eventually back-pressures the producer; or
non-gating: it may be lapped and counts what it missed), and only it talks to Redis.

How remote messages enter this engine: each entry of a subscribed stream is decoded and published
into the local ``remote`` ring as a ``Remote`` envelope (``engine.messages.Remote``, tag 48) — the
original message plus the engine it came from, its ring, and its stream id (a reader can drop a
repeated id: delivery is at-least-once). Two processes read the ring: the strategy process, which
hands each message to its strategies' ``on_remote`` hook, and the supervisor, which writes
``var/last_run/remote.jsonl``; both drop re-delivered ids with ``RemoteFilter``.

The Redis side (ids, groups, acknowledgements, dedupe) is ``ops.store.bus``; this module gets a
bus from its caller (``procs`` never imports ``ops``). Every Redis failure is logged, counted
(``redis_errors``) and retried with backoff — a dead Redis never crashes the bridge.

Authentication (``procs.bridge_auth``): with a key, every published entry carries its sequence
number and an HMAC; with ``authenticate`` on (the default), the receiving half
(``procs.bridge_recv``) drops, counts and audits what fails the checks. Off, a warning is logged
and audited at every start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.messages import AuditEvent, Remote, tag_of
from procs.bridge_auth import (
    FrameGuard,
    FrameSigner,
    RejectAudit,
    marks_path,
    unauthenticated_notice,
)
from procs.bridge_recv import MSG_DECODER, Receiver
from procs.loop import Loop, Timer
from procs.runtime import (
    ALL_WORKERS,
    POSITION_DTYPE,
    STATE_READY,
    TOB_DTYPE,
    Worker,
    metrics_name,
)
from shm.metrics import MetricsRegion
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.bridge")

REMOTE_TAG = tag_of(Remote)  # frame type of the remote ring's envelopes (engine.messages.Remote)

REMOTE_DECODER = msgspec.msgpack.Decoder(Remote)
#: what the remote ring carries: envelopes, and the bridge's audit records (for the supervisor)
RING_DECODER = msgspec.msgpack.Decoder(Remote | AuditEvent)
_MSG_DECODER = MSG_DECODER  # (the fuzz targets decode bridged frames with it)


def remote_to_json(r: Remote) -> dict[str, Any]:
    """The message as a JSON object (its own fields, ``type``) plus the envelope's ``remote_*`` keys."""
    return {
        "type": type(r.msg).__name__,
        **msgspec.structs.asdict(r.msg),
        "remote_source": r.source,
        "remote_ring": r.ring,
        "remote_id": r.stream_id,
        "remote_delivered_ns": r.ts_recv,
    }


class RemoteFilter:
    """Drops a remote message whose stream id is not past the last one seen from its stream.

    The bridge records what it delivered before acknowledging it, so a crash between the two
    re-delivers at most that batch into the ring; a reader of the ring discards it with this.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], tuple[int, int]] = {}
        self.dropped = 0

    def fresh(self, r: Remote) -> bool:
        ms, _, seq = r.stream_id.partition("-")
        try:
            sid = (int(ms), int(seq or 0))
        except ValueError:
            self.dropped += 1
            return False
        k = (r.source, r.ring)
        if sid <= self.last.get(k, (-1, -1)):
            self.dropped += 1
            return False
        self.last[k] = sid
        return True


class _Backoff:
    """Retry pacing after a Redis error: 50 ms doubling to 2 s, reset on success."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.until = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.until

    def failed(self) -> None:
        self.delay = min(2.0, self.delay * 2 or 0.05)
        self.until = time.monotonic() + self.delay

    def ok(self) -> None:
        self.delay = 0.0


class _Source:
    """One forwarded ring: its reader, its stream, the batch not yet in Redis."""

    def __init__(self, ring: str, consumer: Any, stream: str) -> None:
        self.ring = ring
        self.consumer = consumer
        self.stream = stream
        self.epoch = -1  # learnt from Redis on the first successful contact
        self.pending: list[tuple[int, int, bytes]] = []  # (seq, type, payload)

    def fill(self, max_n: int) -> None:
        """Read the next batch from the ring unless one still waits to be sent.

        Reading the next batch hands the previous cursor back to the ring; holding a batch until
        Redis has it means a crash resends it (with the same ids) instead of losing it.
        """
        if self.pending:
            return
        c = self.consumer
        if c.gating:
            n, idx = c.poll_raw_batch(max_n)
            if n:
                data = c.data
                self.pending = [
                    (int(s), int(t), bytes(data[o : o + ln])) for o, ln, t, s in idx[:n].tolist()
                ]
            return
        while len(self.pending) < max_n:
            f = c.poll_raw()
            if f is None:
                break
            ftype, payload = f
            seq = c._next_seq - 1  # the sequence number of the frame just read
            self.pending.append((seq, ftype, bytes(payload)))

    def drained(self) -> bool:
        return not self.pending and self.consumer.ring.closed and not self.consumer.has_data()


def _state_hashes(
    cfg: Any, w: Worker, tob: SeqlockTable, positions: SeqlockTable, risk_metrics: Any
) -> dict[str, dict[str, Any]]:
    """The latest-state hashes from the shm tables: tob/pos per symbol, pnl, risk, health."""
    out: dict[str, dict[str, Any]] = {}
    now = time.monotonic_ns()
    realized = unrealized = fees = 0.0
    for row, ins in enumerate(cfg.instruments):
        tick = ins.tick_size
        _, bid, bid_q, ask, ask_q, last, ts, _mark = tob.read_tuple(row)
        out[f"tob:{ins.symbol}"] = {
            "bid_px": round(bid * tick, 10),
            "bid_qty": bid_q,
            "ask_px": round(ask * tick, 10),
            "ask_qty": ask_q,
            "last_px": round(last * tick, 10),
            "age_ms": round((now - ts) / 1e6, 3) if ts else -1,
        }
        _, pos, fills, mark, avg, rpnl, upnl, fee, *_legs = positions.read_tuple(row)
        out[f"pos:{ins.symbol}"] = {
            "position": pos,
            "fills": fills,
            "avg_px": round(avg * tick, 10),
            "mark_px": round(mark * tick, 10),
            "realized": rpnl,
            "unrealized": upnl,
            "fees": fee,
        }
        realized += rpnl
        unrealized += upnl
        fees += fee
    out["pnl"] = {
        "realized": realized,
        "unrealized": unrealized,
        "fees": fees,
        "total": realized + unrealized,
    }
    health: dict[str, Any] = {}
    for row, name in enumerate(ALL_WORKERS):
        pid, hb, state, inc, processed, _ = w.health.read_tuple(row)
        if pid:
            health[name] = {
                "pid": pid,
                "state": state,
                "incarnation": inc,
                "processed": processed,
                "heartbeat_age_ms": round((now - hb) / 1e6, 3),
            }
    out["health"] = health
    out["risk"] = dict(risk_metrics.counters()) if risk_metrics is not None else {}
    try:  # the trading state (ACTIVE / REDUCING / HALTED) as the risk process persists it
        from procs.risk import load_state, state_path

        snap = load_state(state_path(cfg)) or {"state": "ACTIVE", "reason": "", "source": ""}
        out["risk"].update(
            trading_state=snap.get("state", ""),
            reason=snap.get("reason", ""),
            source=snap.get("source", ""),
        )
    except Exception as exc:  # never let a dashboard field stop the bridge
        log.debug("bridge: no trading state (%s)", exc)
    return out


def run(
    cfg: Any,
    engine_id: str,
    incarnation: int,
    factory: Callable[[], tuple[Any, Any]],
    *,
    stream_name: Callable[[str, str], str],
) -> int:
    """The bridge's process. ``factory()`` connects and returns ``(StreamBus, LatestState)``."""
    bc = cfg.bridge
    w = Worker("bridge", cfg, engine_id, incarnation)
    w.consume("control")
    sources = [_Source(r, w.consume(r), stream_name(engine_id, r)) for r in bc.publish]
    b = _Bridge(w, factory, sources, w.produce("remote"), stream_name)
    # its rings are read raw in ``step`` (held until Redis has them), not as the loop's inputs
    loop = Loop(
        w,
        [],
        [Timer(0, b.step)],
        idle_s=min(cfg.supervisor.heartbeat_interval_s, bc.state_interval_s or 1.0),
        drained=b.done,
        wake=list(bc.publish),
    )
    b.loop = loop
    if not bc.authenticate:  # warned and audited at every start
        b.out.publish(unauthenticated_notice(engine_id, cfg.source_path))
    w.beat(STATE_READY)
    log.info(
        "bridge ready (%s): publish %s, subscribe %s",
        w.pinning,
        list(bc.publish),
        list(bc.subscribe),
    )
    return loop.run(on_exit=b.report)


def tls_refused_notice(engine_id: str, reason: str) -> AuditEvent:
    """The audit record of a Redis server whose TLS handshake was refused (once an outage)."""
    detail = {"engine_id": engine_id, "service": "redis", "reason": reason[:500]}
    return AuditEvent(time.time_ns(), "bridge", "tls.refused", msgspec.json.encode(detail).decode())


class _Bridge:
    """The bridge's work on each pass (``step``): (re)connect, forward the rings' batches, write
    the latest state, deliver remote entries. Every Redis failure backs off and reconnects."""

    def __init__(
        self,
        w: Worker,
        factory: Callable[[], tuple[Any, Any]],
        sources: list[_Source],
        out: Any,
        stream_name: Callable[[str, str], str],
    ) -> None:
        cfg, engine_id = w.cfg, w.engine_id
        self.w, self.cfg, self.bc, self.factory = w, cfg, cfg.bridge, factory
        self.sources, self.out, self.engine_id = sources, out, engine_id
        self.loop: Any = None  # the Loop running this (its ``stopping``)
        self.run_id = {s.ring: str(s.consumer.ring.region.created_ns) for s in sources}
        self.run_ms = {s.ring: s.consumer.ring.region.created_ns // 1_000_000 for s in sources}
        subs = [(sub.split(":", 1)[0], sub.split(":", 1)[1]) for sub in self.bc.subscribe]
        self.sub_streams = {stream_name(e, r): (e, r) for e, r in subs}
        self.group = self.bc.group or engine_id
        bc = self.bc  # its keys were checked at load (ops/config.py: fail closed)
        self.signer = FrameSigner(engine_id, bc.mac_key) if bc.mac_key else None
        guard = audit = None
        if bc.authenticate and self.sub_streams:
            peers = {e: [p.mac_key, p.previous_mac_key] for e, p in bc.peers.items()}
            guard = FrameGuard(peers, marks_path(cfg.engine.var_dir, engine_id))
            audit = RejectAudit(engine_id)
        self.receiver = Receiver(
            engine_id, self.group, self.sub_streams, bc.batch, out, w.metrics, guard, audit
        )
        self.tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
        self.positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
        try:  # attached once: the state is written every state_interval_s
            self.risk_metrics: Any = MetricsRegion.attach(engine_id, metrics_name("risk"))
        except Exception:  # absent in a partial engine: the risk hash has the trading state only
            self.risk_metrics = None
        m = self.m = w.metrics
        self.c_fwd, self.c_dup = m.counter_index("forwarded"), m.counter_index("xadd_duplicates")
        self.c_err, self.c_state = m.counter_index("redis_errors"), m.counter_index("state_writes")
        self.h_xadd = m.hist("xadd_ns")
        self.bus: Any = None
        self.state: Any = None
        self.backoff = _Backoff()
        self.next_state = 0.0
        self.stop_deadline = 0.0
        self.finished = False

    def step(self, now_ns: int) -> bool:
        """One pass of work. True also when it waited itself (in XREADGROUP's BLOCK, or paced
        by the reconnect backoff): the loop then does not wait again."""
        bc, stopping = self.bc, self.loop.stopping
        if stopping and not self.stop_deadline:  # forward what the producers still write
            self.stop_deadline = time.monotonic() + self.cfg.supervisor.shutdown_timeout_s * 0.8
        busy = False
        if self.bus is None and self.backoff.ready():
            try:
                self.connect()
                self.backoff.ok()
            except Exception as exc:
                self.redis_failed("connecting", exc)
        if self.bus is not None:
            try:
                busy = self.forward()
                now = time.monotonic()
                if bc.state_interval_s and now >= self.next_state:
                    self.next_state = now + bc.state_interval_s
                    hashes = _state_hashes(
                        self.cfg, self.w, self.tob, self.positions, self.risk_metrics
                    )
                    self.state.write(hashes)
                    self.m.inc_i(self.c_state)
                hb_ms = max(1, int(self.cfg.supervisor.heartbeat_interval_s * 500))
                busy = self.receiver.receive(None if busy or stopping else hb_ms) or busy
                self.backoff.ok()
            except Exception as exc:
                self.redis_failed("a Redis call", exc)
        if stopping and (
            all(s.drained() for s in self.sources) or time.monotonic() > self.stop_deadline
        ):
            self.finished = True
            return False
        if busy:
            return True
        if self.bus is None:
            time.sleep(0.01)  # reconnecting: the backoff paces the attempts
            return True
        return bool(self.sub_streams) and not stopping  # (it idled in XREADGROUP's BLOCK)

    def done(self) -> bool:
        """STOP seen and every source forwarded to its end (or out of time)."""
        return self.finished

    def connect(self) -> None:
        self.bus, self.state = self.factory()
        for s in self.sources:
            # a forged last entry must not lend us its epoch: only our own (MAC-checked) counts
            ours = (lambda f, r=s.ring: self.signer.authentic(r, f)) if self.signer else None
            s.epoch = self.bus.epoch_for(
                s.stream, self.run_ms[s.ring], self.run_id[s.ring], authentic=ours
            )
        if self.sub_streams:
            self.receiver.connect(self.bus)
        log.info(
            "bridge connected: publishing %s, subscribed to %s (group %s)",
            [s.stream for s in self.sources],
            list(self.sub_streams),
            self.group,
        )

    def redis_failed(self, what: str, exc: BaseException) -> None:
        self.m.inc_i(self.c_err)
        if self.backoff.delay == 0.0:
            log.error("bridge: %s failed (%s); retrying with backoff", what, exc)
            if "TLS" in str(exc):  # the server not verified (ops/tls.py): refused, audited
                self.out.publish(tls_refused_notice(self.engine_id, str(exc)))
        self.backoff.failed()
        self.bus = None

    def forward(self) -> bool:
        busy = False
        for s in self.sources:
            s.fill(self.bc.batch)
            if not s.pending:
                continue
            t0 = time.monotonic_ns()
            auth = None
            if self.signer is not None:
                run, sign = self.run_id[s.ring].encode(), self.signer.fields
                auth = [sign(s.ring, s.epoch, q, run, t, p) for q, t, p in s.pending]
            added, dups = self.bus.publish(
                s.stream, s.epoch, s.pending, self.run_id[s.ring], auth=auth
            )
            self.h_xadd.record(time.monotonic_ns() - t0)
            self.m.inc_i(self.c_fwd, added)
            if dups:
                self.m.inc_i(self.c_dup, dups)
            s.pending = []
            busy = True
        return busy

    def report(self) -> None:
        try:
            self.receiver.report()
        except Exception as exc:  # the ring may be closed already: the totals were logged
            log.debug("bridge: exit audit records not published (%s)", exc)
        undelivered = sum(len(s.pending) for s in self.sources)
        if undelivered:
            log.error(
                "bridge: %d messages not forwarded at shutdown (Redis unavailable)", undelivered
            )
