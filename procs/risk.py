"""The risk process: the only door to execution.

Every intent from the strategies passes ``engine.risk.RiskGate``: approved ones go to exec on the
``orders`` ring, rejected ones come back to the strategy (``OrderRejected``) and to the record
(``RiskEvent``) on the ``risk`` ring. Execution events keep its positions, cash and open orders
exact; the feed's top-of-book table gives it prices — before each batch of intents for the
instruments concerned, and every ``refresh_interval_ms`` for all of them (marks, equity, the
circuit breakers, stop loss / take profit, flash-move halts). Mids sampled every
``returns_interval_s`` become the returns window behind VaR and correlation. The kill switch
arrives as a ``Control`` (``gekko kill``); venue halts as ``ExchangeStatus`` among the execution
events.

The trading state outlives this process: every change is written, atomically (a temporary file,
fsync, rename), to the state file (``[risk] state_file``, default
``<var_dir>/risk-state-<engine id>.json``) and published on the ``risk`` ring as a
``TradingStateChanged``. A restarted risk process (the supervisor restarts crashed workers)
reads it back before it reports ready — a halted engine stays halted until ``gekko resume`` —
rebuilds positions and cash from exec's positions table, and the orders that were open from
exec, so a kill switch or a breaker after the restart cancels them too. Never from the database,
which may be down (``procs/recovery.py``): the restarted risk asks exec
(``OpenOrdersRequest`` on ``orders``; exec answers on ``events`` with one
``OpenOrderSnapshot`` per open order and an end marker, ``RiskGate.restore_open``) and approves
no new intent until the answer is in or ``[risk] open_orders_timeout_s`` has passed (logged
either way; an answer after the timeout is still applied).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    ExchangeStatus,
    InstrumentHalted,
    InstrumentResumed,
    NewOrder,
    OpenOrderSnapshot,
    OpenOrdersRequest,
    OrderRejected,
    Quote,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
    Trade,
    TradingState,
    TradingStateChanged,
)
from procs.risk_history import seed_history
from procs.runtime import POSITION_DTYPE, STATE_READY, STATE_STOPPING, TOB_DTYPE, Worker
from procs.warmup import warm_risk
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.risk")

SAVE_EVERY_NS = 5_000_000_000  # the breakers' baselines (peak equity) move with the market


# --- the state file -------------------------------------------------------------------------


def state_path(cfg: Any) -> Path:
    """Where the trading state lives between runs of the risk process."""
    if cfg.risk.state_file:
        return Path(cfg.risk.state_file)
    return Path(cfg.engine.var_dir) / f"risk-state-{cfg.engine.id}.json"


def save_state(path: Path, snap: dict[str, Any]) -> None:
    """Write atomically: a reader (or a restart after a crash mid-write) sees the old file or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none; a corrupt file is logged and treated as a
    HALTED state (unknown is not safe to trade on)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("risk: cannot read the state file %s (%s): starting HALTED", path, exc)
        return {"state": "HALTED", "reason": f"unreadable state file: {exc}", "source": "restore"}
    try:
        snap = json.loads(text)
        if not isinstance(snap, dict) or str(snap.get("state")) not in TradingState.__members__:
            raise ValueError("no valid 'state'")
        return snap
    except ValueError as exc:
        log.error("risk: corrupt state file %s (%s): starting HALTED", path, exc)
        return {"state": "HALTED", "reason": f"corrupt state file: {exc}", "source": "restore"}


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


# --- the process ---------------------------------------------------------------------------


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    from engine.risk import RiskGate
    from engine.risk_stats import ReturnSampler

    w = Worker("risk", cfg, engine_id, incarnation)
    rc = cfg.risk
    # risk's own orders (stops, flatten) are numbered in a fresh block per incarnation
    gate = RiskGate(cfg.risk, cfg.instrument_table(), own_id_base=(incarnation & 0xFF) << 24)
    intents = w.consume("intents")
    events = w.consume("events")
    tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
    positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
    ids = np.array([i.instrument_id for i in cfg.instruments], dtype=np.int64)
    control = w.consume("control")
    orders = w.produce("orders")
    replies = w.produce("risk")
    waiter = w.waiter(intents, events, control)  # not md: a tick alone needs no risk decision
    c_in = w.metrics.counter_index("intents_in")
    c_ok = w.metrics.counter_index("approved")
    c_rej = w.metrics.counter_index("rejected")
    c_ev = w.metrics.counter_index("events_in")
    c_stale = w.metrics.counter_index("rejected_stale")
    stale_log = StaleLog(rc.max_intent_age_ms)
    h_lat = w.metrics.hist("tick_to_approval_ns")
    path = state_path(cfg)
    day = _today()
    dirty = False

    def save() -> None:
        nonlocal dirty
        snap = gate.persistent_state()
        snap["day"] = day
        snap["engine_id"] = engine_id
        try:
            save_state(path, snap)
            dirty = False
        except OSError as exc:  # a full disk must not stop the gate: log, retry on the next change
            log.error("risk: cannot write the state file %s: %s", path, exc)

    def route(out: Any) -> None:
        nonlocal dirty
        for o in out:
            if isinstance(o, NewOrder | CancelOrder | ReplaceOrder):
                orders.publish(o)
                w.metrics.inc_i(c_ok)
                if isinstance(o, NewOrder) and o.ts_origin:
                    h_lat.record(time.monotonic_ns() - o.ts_origin)
            else:
                replies.publish(o)
                if isinstance(o, OrderRejected):
                    w.metrics.inc_i(c_rej)
                elif isinstance(o, TradingStateChanged):
                    dirty = True
                    w.metrics.inc("state_changes")
                    log.warning(
                        "risk: trading state %s -> %s (%s: %s)",
                        TradingState(o.prev_state).name,
                        TradingState(o.state).name,
                        o.source,
                        o.reason,
                    )
                elif isinstance(o, InstrumentHalted | InstrumentResumed):
                    w.metrics.inc(
                        "instrument_halts"
                        if isinstance(o, InstrumentHalted)
                        else "instrument_resumes"
                    )
                    log.warning(
                        "risk: instrument %d %s: %s", o.instrument_id, type(o).__name__, o.reason
                    )
                elif (
                    isinstance(o, RiskEvent)
                    and o.kind == RiskEventKind.LIMIT_BREACH
                    and o.instrument_id >= 0
                ):
                    w.metrics.inc("protective_orders")
        if dirty:
            save()

    def on_snapshot(ev: OpenOrderSnapshot) -> None:
        if ask is None or not ask.take(ev):
            return  # not ours (an earlier incarnation's request): ignored
        added = gate.restore_open(ask.rows)
        log.warning(
            "risk: %d open orders restored from exec's answer (%d sent%s): %s",
            len(added),
            ev.count,
            ", after the timeout" if ask.timed_out else "",
            sorted(added)[:20],
        )
        if len(ask.rows) != ev.count:
            log.error("risk: exec announced %d open orders, %d arrived", ev.count, len(ask.rows))
        w.metrics.set("orders_restored", len(added))
        if added and gate.state == TradingState.HALTED:  # nothing may rest while halted
            keep = set(added)
            route([c for c in gate.cancel_all(time.monotonic_ns()) if c.client_order_id in keep])

    def read_prices(iids: Any) -> None:
        for iid in iids:
            k = rows.get(int(iid))
            if k is None:
                continue
            _, bid, bid_qty, ask, ask_qty, last, ts = tob.read_tuple(k)
            gate.on_market_data(Quote(int(iid), bid, bid_qty, ask, ask_qty, 0, ts))
            if last > 0:
                gate.on_market_data(Trade(int(iid), last, 1, 0, 0, ts))

    # --- restore what outlives this process ------------------------------------------------
    # Positions: exec's table holds every fill exec has applied; the events ring still holds the
    # fills this process had not read when it died (and those of its downtime), which the table
    # already counts: fills received by exec before the table was read are not counted again
    # (exec writes the table in the loop iteration that publishes the fill: a window of one
    # iteration remains).
    seeded_ns = 0
    with contextlib.suppress(Exception):  # exec may not have written anything yet
        t_read = time.monotonic_ns()
        seed = [
            (
                int(r["instrument_id"]),
                int(r["position"]),
                float(r["avg_px"]),
                float(r["realized"]),
                float(r["fees"]),
            )
            for r in positions.read_all()
            if int(r["position"]) != 0 or float(r["realized"]) != 0.0 or float(r["fees"]) != 0.0
        ]
        if seed:
            read_prices(ids)
            gate.seed_positions(seed)
            seeded_ns = t_read
            log.info("risk: positions restored from exec's table: %s", {s[0]: s[1] for s in seed})
    # Open orders: exec is asked (never the database, which may be down: procs/recovery.py);
    # its answer is read in the loop below (``on_snapshot``)
    ask = AskExec(orders, rc.open_orders_timeout_s) if incarnation > 0 else None
    holding = ask is not None  # new intents wait (the loop below)
    snap = load_state(path)
    if snap is not None:
        try:
            gate.restore_state(snap)
        except ValueError as exc:
            log.error("risk: %s: starting HALTED", exc)
            gate.restore_state({"state": "HALTED", "reason": str(exc), "source": "restore"})
        if gate.state != TradingState.ACTIVE:
            now = time.monotonic_ns()
            route(
                [
                    TradingStateChanged(
                        int(gate.state),
                        int(TradingState.ACTIVE),
                        f"restored: {gate.trading.reason}",
                        "restore",
                        now,
                        time.time_ns(),
                    )
                ]
            )
            log.warning(
                "risk: trading state %s restored from %s", TradingState(gate.state).name, path
            )
        if snap.get("day") != day:
            gate.new_day()
    if gate.open_orders and gate.state == TradingState.HALTED:
        # halted means nothing rests: what is still open after the crash (a cancel lost or not
        # yet confirmed) is canceled again; exec refuses a cancel of an order already gone
        route(gate.cancel_all(time.monotonic_ns()))
    if rc.start_halted and gate.state != TradingState.HALTED:
        route(
            gate.on_control(
                Control(int(ControlCommand.KILL), time.monotonic_ns(), "start_halted"),
                time.time_ns(),
            )
        )
    save()

    sampler = ReturnSampler(len(gate.position), rc.returns_window)
    # VaR and correlation from the first order: the window seeded from recorded prices (one
    # log line says what was seeded, or why nothing; a dead database only costs the seeding)
    seeded = seed_history(cfg, gate, sampler, beat=w.beat).seeded
    refresh_ns = int(rc.refresh_interval_ms * 1e6)
    returns_ns = int(rc.returns_interval_s * 1e9)
    next_refresh = next_sample = time.monotonic_ns()
    if seeded:  # the seeded window's last sample stands for now: the next one is due later
        next_sample += returns_ns
    next_save = next_refresh + SAVE_EVERY_NS
    idle_s = min(cfg.supervisor.heartbeat_interval_s, rc.refresh_interval_ms / 1000.0)

    warm_risk(cfg)  # before READY: first calls compile and build caches
    w.beat(STATE_READY)
    log.info(
        "risk ready (%s, wait=%s, state %s)", w.pinning, w.wait.kind, TradingState(gate.state).name
    )
    stopping = False
    try:
        while True:
            for ctl in control.poll_batch(16):
                if not isinstance(ctl, Control):
                    continue
                if ctl.command == ControlCommand.STOP:
                    stopping = True  # finish what the strategy still sends (its cancels)
                elif ctl.command in (
                    ControlCommand.KILL,
                    ControlCommand.FLATTEN,
                    ControlCommand.RESUME,
                    ControlCommand.CANCEL_ALL,
                ):
                    log.warning("risk: control %s (%s)", ControlCommand(ctl.command).name, ctl.arg)
                    if ctl.command in (ControlCommand.KILL, ControlCommand.FLATTEN):
                        w.metrics.inc("kills")
                    if ctl.command in (ControlCommand.FLATTEN, ControlCommand.RESUME):
                        read_prices(ids)  # flatten values at, and resume re-arms from, fresh marks
                        gate.on_prices(time.monotonic_ns(), time.time_ns())
                    route(gate.on_control(ctl, time.time_ns()))
                    if ctl.command == ControlCommand.RESUME:
                        save()  # the re-armed baselines
            busy = False
            for ev in events.poll_batch(256):
                busy = True
                w.metrics.inc_i(c_ev)
                if isinstance(ev, ExchangeStatus):
                    route(gate.on_status(ev, time.monotonic_ns()))
                elif type(ev) is OpenOrderSnapshot:
                    on_snapshot(ev)
                else:
                    counted = seeded_ns and getattr(ev, "ts_recv", seeded_ns + 1) <= seeded_ns
                    gate.on_exec_event(ev, count_fill=not counted)
            # just restarted: no new intent until exec said what is open (or the
            # engine stops: then the strategies' cancels must get through)
            if holding:
                holding = ask is not None and not stopping and ask.holding()
            batch = intents.poll_batch(256) if not holding else []
            if batch:  # the latest prices of the instruments concerned, before judging them
                read_prices({it.instrument_id for it in batch})
            for it in batch:
                busy = True
                w.metrics.inc_i(c_in)
                w.processed += 1
                try:
                    out = gate.on_intent(it, time.monotonic_ns())
                except Exception as exc:  # a malformed intent (or a bug) must not stop the door
                    log.exception("risk: intent %r refused: %s", it, exc)
                    out = _refused(it, f"risk error: {type(exc).__name__}", gate.state)
                if gate.stale_rejected != stale_log.seen:  # refused for the age of its data
                    w.metrics.inc_i(c_stale, gate.stale_rejected - stale_log.seen)
                    stale_log.note(gate.stale_rejected, out)
                route(out)
            now = time.monotonic_ns()
            if now >= next_refresh:  # off the order path: every instrument's price, the controls
                next_refresh = now + refresh_ns
                read_prices(ids)
                route(gate.on_prices(now, time.time_ns()))
                stale_log.flush()
                if now >= next_sample:
                    next_sample = now + returns_ns
                    if sampler.sample(gate.mids()):
                        gate.set_returns(sampler.matrix())
                if now >= next_save:
                    next_save = now + SAVE_EVERY_NS
                    today = _today()
                    if today != day:
                        day = today
                        gate.new_day()
                        log.info(
                            "risk: new trading day %s: daily P&L from equity %.2f", day, gate.equity
                        )
                    save()
            w.beat()
            # (the liveness check reads /proc: only once stopping, never on the hot path)
            if (
                stopping
                and not busy
                and not intents.has_data()
                and (intents.ring.closed or not _alive(intents))
            ):
                break
            if not busy:
                waiter.wait_any(idle_s)
    finally:
        with contextlib.suppress(Exception):
            save()
        w.beat(STATE_STOPPING)
        waiter.close()
        w.close()
    return 0


class AskExec:
    """A restarted risk process's question to exec: which orders are open (exec rebuilt them
    from its journal and the venue; the database may be down). Sends one ``OpenOrdersRequest``
    on ``orders`` at once, then collects the ``OpenOrderSnapshot`` rows with its request id
    until the end marker.

    ``holding()`` tells the loop to keep new intents back: until the answer is complete, or
    until ``timeout_s`` has passed since the loop first asked — i.e. from READY, so a slow
    warm-up does not eat the wait (exec dead or restarting: trading goes on knowing only what
    is approved from now on; logged). Orders approved after the timeout are later than the
    request in the ``orders`` ring, so exec's late answer cannot hold them twice: it is applied
    all the same."""

    def __init__(self, orders: Any, timeout_s: float) -> None:
        now = time.monotonic_ns()
        self.request_id = now
        self.timeout_ns = int(timeout_s * 1e9)
        self.deadline = 0  # set by the first ``holding()``
        self.rows: list[OpenOrderSnapshot] = []
        self.done = False
        self.timed_out = False
        orders.publish(OpenOrdersRequest(self.request_id, now))
        log.warning(
            "risk: restarted: asked exec for its open orders; "
            "new intents wait up to %.1fs for the answer",
            timeout_s,
        )

    def holding(self) -> bool:
        if self.done or self.timed_out:
            return False
        now = time.monotonic_ns()
        if not self.deadline:
            self.deadline = now + self.timeout_ns
        if now < self.deadline:
            return True
        self.timed_out = True
        log.error(
            "risk: no answer from exec about its open orders in time: approving again, knowing "
            "only the orders approved from now on (a late answer is still applied)"
        )
        return False

    def take(self, ev: OpenOrderSnapshot) -> bool:
        """Collect one row of the answer; True when ``ev`` is the end marker of our request."""
        if self.done or ev.request_id != self.request_id:
            return False
        if not ev.end:
            self.rows.append(ev)
            return False
        self.done = True
        return True


class StaleLog:
    """One warning a second at most about intents refused as stale (a backlog can refuse
    thousands): how many since the last line and the oldest data among them."""

    def __init__(self, limit_ms: float, every_s: float = 1.0) -> None:
        self.limit_ms = limit_ms
        self.every_ns = int(every_s * 1e9)
        self.seen = 0  # the gate's stale_rejected at the last note
        self.pending = 0
        self.oldest_ms = 0.0
        self.next_ns = 0

    def note(self, total: int, out: list[Any]) -> None:
        self.pending += total - self.seen
        self.seen = total
        for o in out:
            if isinstance(o, RiskEvent):
                self.oldest_ms = max(self.oldest_ms, abs(o.value))
        self.flush()

    def flush(self) -> None:
        """Log what is pending when a line is due (the loop calls it off the order path too,
        so the tail of a burst is reported)."""
        now = time.monotonic_ns()
        if not self.pending or now < self.next_ns:
            return
        self.next_ns = now + self.every_ns
        log.warning(
            "risk: refused %d intent(s) built on stale data (oldest %.0f ms, limit "
            "[risk] max_intent_age_ms = %g ms): the strategy is behind the market",
            self.pending,
            self.oldest_ms,
            self.limit_ms,
        )
        self.pending = 0
        self.oldest_ms = 0.0


def _refused(it: Any, reason: str, state: int) -> list[Any]:
    """The rejection of an intent the gate could not judge (never an order)."""
    now = time.monotonic_ns()
    coid = int(getattr(it, "client_order_id", 0) or 0)
    iid = int(getattr(it, "instrument_id", -1) or 0)
    out: list[Any] = [
        RiskEvent(int(RiskEventKind.ORDER_REJECTED), iid, coid, reason, 0.0, 0.0, now, int(state))
    ]
    if type(it).__name__ == "IntentNew":
        out.append(
            OrderRejected(coid, iid, f"risk: {reason}", int(getattr(it, "ts_origin", 0)), now, now)
        )
    return out


def _alive(c: Any) -> bool:
    from shm.region import pid_alive

    pid = c.ring.producer_pid
    return pid == 0 or pid_alive(pid)
