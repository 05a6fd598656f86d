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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.messages import Control, ControlCommand, Message, Remote, tag_of
from procs.runtime import (
    ALL_WORKERS,
    POSITION_DTYPE,
    STATE_READY,
    STATE_STOPPING,
    TOB_DTYPE,
    Worker,
    metrics_name,
)
from shm.metrics import MetricsRegion
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.bridge")

REMOTE_TAG = tag_of(Remote)  # frame type of the remote ring's envelopes (engine.messages.Remote)

REMOTE_DECODER = msgspec.msgpack.Decoder(Remote)
_MSG_DECODER = msgspec.msgpack.Decoder(Message)


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
        _, bid, bid_q, ask, ask_q, last, ts = tob.read_tuple(row)
        out[f"tob:{ins.symbol}"] = {
            "bid_px": round(bid * tick, 10),
            "bid_qty": bid_q,
            "ask_px": round(ask * tick, 10),
            "ask_qty": ask_q,
            "last_px": round(last * tick, 10),
            "age_ms": round((now - ts) / 1e6, 3) if ts else -1,
        }
        _, pos, fills, mark, avg, rpnl, upnl, fee = positions.read_tuple(row)
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
    """The bridge's loop. ``factory()`` connects and returns ``(StreamBus, LatestState)``."""
    bc = cfg.bridge
    w = Worker("bridge", cfg, engine_id, incarnation)
    control = w.consume("control")
    sources = [_Source(r, w.consume(r), stream_name(engine_id, r)) for r in bc.publish]
    out = w.produce("remote")
    run_id = {s.ring: str(s.consumer.ring.region.created_ns) for s in sources}
    run_ms = {s.ring: s.consumer.ring.region.created_ns // 1_000_000 for s in sources}
    subs = [(sub.split(":", 1)[0], sub.split(":", 1)[1]) for sub in bc.subscribe]
    sub_streams = {stream_name(e, r): (e, r) for e, r in subs}
    group = bc.group or engine_id
    tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
    positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    try:  # attached once: the state is written every state_interval_s
        risk_metrics: Any = MetricsRegion.attach(engine_id, metrics_name("risk"))
    except Exception:  # absent in a partial engine: the risk hash then has the trading state only
        risk_metrics = None
    m = w.metrics
    c_fwd, c_dup, c_rcv = (
        m.counter_index("forwarded"),
        m.counter_index("xadd_duplicates"),
        m.counter_index("received"),
    )
    c_rdup, c_err, c_state = (
        m.counter_index("remote_duplicates"),
        m.counter_index("redis_errors"),
        m.counter_index("state_writes"),
    )
    h_xadd = m.hist("xadd_ns")

    bus: Any = None
    state: Any = None
    backoff = _Backoff()
    subscribed = False
    pending_reread = True  # after (re)connecting, first re-read what was delivered but not acked
    next_state = 0.0

    def connect() -> None:
        nonlocal bus, state, subscribed, pending_reread
        bus, state = factory()
        for s in sources:
            s.epoch = bus.epoch_for(s.stream, run_ms[s.ring], run_id[s.ring])
        if sub_streams:
            for st in sub_streams:
                bus.ensure_group(st, group)
            bus.load_seen(sub_streams)
        subscribed = True
        pending_reread = True
        log.info(
            "bridge connected: publishing %s, subscribed to %s (group %s)",
            [s.stream for s in sources],
            list(sub_streams),
            group,
        )

    def redis_failed(what: str, exc: BaseException) -> None:
        nonlocal bus, subscribed
        m.inc_i(c_err)
        if backoff.delay == 0.0:
            log.error("bridge: %s failed (%s); retrying with backoff", what, exc)
        backoff.failed()
        bus, subscribed = None, False

    def forward() -> bool:
        busy = False
        for s in sources:
            s.fill(bc.batch)
            if not s.pending:
                continue
            t0 = time.monotonic_ns()
            added, dups = bus.publish(s.stream, s.epoch, s.pending, run_id[s.ring])
            h_xadd.record(time.monotonic_ns() - t0)
            m.inc_i(c_fwd, added)
            if dups:
                m.inc_i(c_dup, dups)
            s.pending = []
            busy = True
        return busy

    def receive(block_ms: int | None) -> bool:
        nonlocal pending_reread
        if not sub_streams:
            return False
        entries = bus.read(
            list(sub_streams),
            group,
            engine_id,
            count=bc.batch,
            block_ms=block_ms,
            pending=pending_reread,
        )
        if pending_reread and not entries:
            pending_reread = False  # the backlog of unacknowledged entries is done
            return True
        done: list[tuple[str, str]] = []
        for stream, eid, fields in entries:
            done.append((stream, eid))
            if not bus.is_new(stream, eid):
                m.inc_i(c_rdup)
                continue
            src, ring = sub_streams[stream]
            try:
                msg = _MSG_DECODER.decode(fields.get(b"m", b""))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("bridge: %s %s: undecodable message dropped (%s)", stream, eid, exc)
                m.inc_i(c_err)
                continue
            out.publish(Remote(src, ring, eid, time.monotonic_ns(), msg))
            m.inc_i(c_rcv)
        bus.delivered(group, done)
        return bool(entries)

    waiter = w.waiter(control, *(s.consumer for s in sources))
    idle_s = min(cfg.supervisor.heartbeat_interval_s, bc.state_interval_s or 1.0)
    w.beat(STATE_READY)
    log.info(
        "bridge ready (%s): publish %s, subscribe %s",
        w.pinning,
        list(bc.publish),
        list(bc.subscribe),
    )
    stopping = False
    stop_deadline = 0.0
    try:
        while True:
            w.beat()
            for ctl in control.poll_batch(16):
                if isinstance(ctl, Control) and ctl.command == ControlCommand.STOP and not stopping:
                    stopping = True  # forward what the producers still write, until they close
                    stop_deadline = time.monotonic() + cfg.supervisor.shutdown_timeout_s * 0.8
            busy = False
            if bus is None and backoff.ready():
                try:
                    connect()
                    backoff.ok()
                except Exception as exc:
                    redis_failed("connecting", exc)
            if bus is not None:
                try:
                    busy = forward()
                    now = time.monotonic()
                    if bc.state_interval_s and now >= next_state:
                        next_state = now + bc.state_interval_s
                        state.write(_state_hashes(cfg, w, tob, positions, risk_metrics))
                        m.inc_i(c_state)
                    block = (
                        None
                        if busy or stopping
                        else max(1, int(cfg.supervisor.heartbeat_interval_s * 500))
                    )
                    busy = receive(block) or busy
                    backoff.ok()
                except Exception as exc:
                    redis_failed("a Redis call", exc)
            if stopping and (all(s.drained() for s in sources) or time.monotonic() > stop_deadline):
                break
            if not busy:
                if bus is None:
                    time.sleep(0.01)  # reconnecting: the backoff paces the attempts
                elif (
                    not sub_streams or stopping
                ):  # (a subscribed bridge idles in XREADGROUP's BLOCK)
                    waiter.wait_any(idle_s)
    finally:
        w.beat(STATE_STOPPING)
        undelivered = sum(len(s.pending) for s in sources)
        if undelivered:
            log.error(
                "bridge: %d messages not forwarded at shutdown (Redis unavailable)", undelivered
            )
        waiter.close()
        w.close()
    return 0
