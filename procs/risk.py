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
    Control,
    ControlCommand,
    InstrumentHalted,
    InstrumentResumed,
    MarkPrice,
    NewOrder,
    OpenOrderSnapshot,
    OpenOrdersRequest,
    OrderRejected,
    Quote,
    RiskEvent,
    RiskEventKind,
    Trade,
    TradingState,
    TradingStateChanged,
)
from engine.stages.risk import RiskStage
from procs.build import hedging_instrument_ids, real_venue_instrument_ids
from procs.loop import Input, Loop, Outbox, Timer
from procs.risk_history import seed_history
from procs.runtime import POSITION_DTYPE, STATE_READY, TOB_DTYPE, Worker
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

    w = Worker("risk", cfg, engine_id, incarnation)
    rc = cfg.risk
    # risk's own orders (stops, flatten) are numbered in a fresh block per incarnation
    gate = RiskGate(
        cfg.risk,
        cfg.instrument_table(),
        own_id_base=(incarnation & 0xFF) << 24,
        notional_limited=real_venue_instrument_ids(cfg),
        hedging=hedging_instrument_ids(cfg),
    )
    w.consume("intents")  # not md: a tick alone needs no risk decision (prices: the tob table)
    orders = w.produce("orders")
    w.produce("risk")
    state = StateFile(cfg, engine_id, gate)
    taps = Taps(w, state)
    stage = RiskStage(
        gate,
        Outbox(w, taps={"orders": taps.on_order, "risk": taps.on_reply}),
        contain_errors=True,  # a malformed intent (or a bug) must not stop the door
    )
    prices = Prices(engine_id, cfg, gate)
    stage.seeded_ns = _seed_positions(engine_id, gate, prices)
    # Open orders: exec is asked (never the database, which may be down: procs/recovery.py);
    # its answer is read by the loop (``on_snapshot``)
    ask = AskExec(orders, rc.open_orders_timeout_s) if incarnation > 0 else None
    stage.on_snapshot = _snapshot_handler(w, stage, ask)
    _restore_state(stage, state, rc.start_halted)
    refresh = Refresher(w, cfg, stage, prices, state)
    stale_log = StaleLog(rc.max_intent_age_ms)
    c_stale = w.metrics.counter_index("rejected_stale")
    h_lat = w.metrics.hist("tick_to_approval_ns")
    taps.latency = h_lat

    replies: list[Any] = []

    def judge(batch: list[Any]) -> None:
        prices.read({it.instrument_id for it in batch})  # the latest, before judging them
        taps.replies = replies
        for it in batch:
            replies.clear()
            stage.on_intent(it, time.monotonic_ns())
            if gate.stale_rejected != stale_log.seen:  # refused for the age of its data
                w.metrics.inc_i(c_stale, gate.stale_rejected - stale_log.seen)
                stale_log.note(gate.stale_rejected, replies)
        taps.replies = None

    holding = [ask is not None]

    def admit() -> bool:
        """Just restarted: no new intent until exec said what is open (or the engine stops:
        then the strategies' cancels must get through)."""
        if holding[0]:
            holding[0] = ask is not None and not loop.stopping and ask.holding()
        return not holding[0]

    loop = Loop(
        w,
        [
            Input("events", stage.on_event, counter="events_in"),
            Input("intents", on_batch=judge, counter="intents_in", processed=True, when=admit),
        ],
        [Timer(rc.refresh_interval_ns, refresh.run, at_start=True)],
        idle_s=min(cfg.supervisor.heartbeat_interval_s, rc.refresh_interval_ms / 1000.0),
        drain="intents",  # on STOP: finish what the strategy still sends (its cancels)
        on_control=lambda ctl: _on_control(w, stage, prices, state, ctl),
    )
    refresh.stale_log = stale_log
    warm_risk(cfg)  # before READY: first calls compile and build caches
    w.beat(STATE_READY)
    log.info(
        "risk ready (%s, wait=%s, state %s)", w.pinning, w.wait.kind, TradingState(gate.state).name
    )
    return loop.run(on_exit=state.save)


def _on_control(w: Worker, stage: RiskStage, prices: Prices, state: StateFile, ctl: Any) -> None:
    """The operator's commands: kill, flatten, resume, cancel-all (STOP is the loop's)."""
    if ctl.command not in (
        ControlCommand.KILL,
        ControlCommand.FLATTEN,
        ControlCommand.RESUME,
        ControlCommand.CANCEL_ALL,
    ):
        return
    log.warning("risk: control %s (%s)", ControlCommand(ctl.command).name, ctl.arg)
    if ctl.command in (ControlCommand.KILL, ControlCommand.FLATTEN):
        w.metrics.inc("kills")
    if ctl.command in (ControlCommand.FLATTEN, ControlCommand.RESUME):
        prices.read_all()  # flatten values at, and resume re-arms from, fresh marks
        stage.gate.on_prices(time.monotonic_ns(), time.time_ns())
    stage.on_control(ctl, time.monotonic_ns(), time.time_ns())
    if ctl.command == ControlCommand.RESUME:
        state.save()  # the re-armed baselines


class Taps:
    """The risk process's bookkeeping on what the stage publishes: metrics, logs, and the
    state file written on every change of the trading state."""

    def __init__(self, w: Worker, state: StateFile) -> None:
        m = self.metrics = w.metrics
        self.state = state
        self.c_ok, self.c_rej = m.counter_index("approved"), m.counter_index("rejected")
        self.latency: Any = None
        self.replies: list[Any] | None = None  # when set, collects what goes out on ``risk``

    def on_order(self, o: Any) -> None:
        self.metrics.inc_i(self.c_ok)
        if type(o) is NewOrder and o.ts_origin and self.latency is not None:
            self.latency.record(time.monotonic_ns() - o.ts_origin)

    def on_reply(self, o: Any) -> None:
        if self.replies is not None:
            self.replies.append(o)
        if isinstance(o, OrderRejected):
            self.metrics.inc_i(self.c_rej)
        elif isinstance(o, TradingStateChanged):
            self.metrics.inc("state_changes")
            log.warning(
                "risk: trading state %s -> %s (%s: %s)",
                TradingState(o.prev_state).name,
                TradingState(o.state).name,
                o.source,
                o.reason,
            )
            self.state.save()
        elif isinstance(o, InstrumentHalted | InstrumentResumed):
            halted = isinstance(o, InstrumentHalted)
            self.metrics.inc("instrument_halts" if halted else "instrument_resumes")
            log.warning("risk: instrument %d %s: %s", o.instrument_id, type(o).__name__, o.reason)
        elif (
            isinstance(o, RiskEvent)
            and o.kind == RiskEventKind.LIMIT_BREACH
            and o.instrument_id >= 0
        ):
            self.metrics.inc("protective_orders")


class StateFile:
    """The trading state between runs of the process (``state_path``), with the trading day."""

    def __init__(self, cfg: Any, engine_id: str, gate: Any) -> None:
        self.path = state_path(cfg)
        self.engine_id = engine_id
        self.gate = gate
        self.day = _today()

    def save(self) -> None:
        snap = self.gate.persistent_state()
        snap["day"] = self.day
        snap["engine_id"] = self.engine_id
        try:
            save_state(self.path, snap)
        except OSError as exc:  # a full disk must not stop the gate: log, retry on the next save
            log.error("risk: cannot write the state file %s: %s", self.path, exc)

    def roll_day(self) -> None:
        today = _today()
        if today != self.day:
            self.day = today
            self.gate.new_day()
            log.info(
                "risk: new trading day %s: daily P&L from equity %.2f", today, self.gate.equity
            )


class Prices:
    """The feed's top-of-book table, read into the gate (risk reads no market-data ring)."""

    def __init__(self, engine_id: str, cfg: Any, gate: Any) -> None:
        self.tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
        self.rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
        self.ids = np.array([i.instrument_id for i in cfg.instruments], dtype=np.int64)
        self.gate = gate

    def read(self, iids: Any) -> None:
        for iid in iids:
            k = self.rows.get(int(iid))
            if k is None:
                continue
            _, bid, bid_qty, ask, ask_qty, last, ts, mark = self.tob.read_tuple(k)
            self.gate.on_market_data(Quote(int(iid), bid, bid_qty, ask, ask_qty, 0, ts))
            if last > 0:
                self.gate.on_market_data(Trade(int(iid), last, 1, 0, 0, ts))
            if mark > 0:  # a perpetual's venue mark: it values the position (risk_book)
                self.gate.on_market_data(MarkPrice(int(iid), mark, 0, 0.0, 0, ts, ts))

    def read_all(self) -> None:
        self.read(self.ids)


class Refresher:
    """Off the order path, every ``refresh_interval_ms``: every instrument's price and the
    controls on them; every ``returns_interval_s`` a sample of the returns window (VaR,
    correlation); every ``SAVE_EVERY_NS`` the state file (and the trading day)."""

    def __init__(self, w: Worker, cfg: Any, stage: RiskStage, prices: Prices, state: StateFile):
        from engine.risk_stats import ReturnSampler

        rc = cfg.risk
        self.stage, self.prices, self.state = stage, prices, state
        gate = stage.gate
        self.sampler = ReturnSampler(len(gate.position), rc.returns_window)
        # VaR and correlation from the first order: the window seeded from recorded prices (one
        # log line says what was seeded, or why nothing; a dead database only costs the seeding)
        seeded = seed_history(cfg, gate, self.sampler, beat=w.beat).seeded
        self.returns_ns = rc.returns_interval_ns
        now = time.monotonic_ns()
        # the seeded window's last sample stands for now: the next one is due later
        self.next_sample = now + self.returns_ns if seeded else now
        self.next_save = now + SAVE_EVERY_NS
        self.stale_log: StaleLog | None = None
        self.har_log = HarLog(w, cfg) if rc.volatility == "har" else None

    def run(self, now: int) -> None:
        self.prices.read_all()
        self.stage.refresh(now, time.time_ns())
        if self.stale_log is not None:
            self.stale_log.flush()
        gate = self.stage.gate
        if now >= self.next_sample:
            self.next_sample = now + self.returns_ns
            if self.sampler.sample(gate.mids()):
                gate.set_returns(*self.sampler.window_rv())
                if self.har_log is not None:
                    self.har_log.note(gate.stats)
        elif self.har_log is not None:  # between samples: the prices of the realised variance
            self.sampler.observe(gate.mids())
        if now >= self.next_save:
            self.next_save = now + SAVE_EVERY_NS
            self.state.roll_day()
            self.state.save()


def _seed_positions(engine_id: str, gate: Any, prices: Prices) -> int:
    """Positions: exec's table holds every fill exec has applied; the events ring still holds
    the fills this process had not read when it died (and those of its downtime), which the
    table already counts: fills received by exec before the table was read are not counted
    again (exec writes the table in the loop pass that publishes the fill: a window of one pass
    remains). Returns when the table was read (0: nothing seeded)."""
    with contextlib.suppress(Exception):  # exec may not have written anything yet
        positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
        t_read = time.monotonic_ns()
        rows = positions.read_all()  # one read: the legs and the net of the same moment
        seed = [
            (
                int(r["instrument_id"]),
                int(r["position"]),
                float(r["avg_px"]),
                float(r["realized"]),
                float(r["fees"]),
            )
            for r in rows
            if int(r["position"]) != 0 or float(r["realized"]) != 0.0 or float(r["fees"]) != 0.0
        ]
        legs = {  # a hedging venue's two legs (the others' are their net, on its side)
            int(r["instrument_id"]): (
                int(r["long_pos"]),
                int(r["short_pos"]),
                float(r["long_avg"]),
                float(r["short_avg"]),
            )
            for r in rows
        }
        if seed:
            prices.read_all()
            gate.seed_positions(seed, legs)
            log.info(
                "risk: positions restored from exec's table: %s (hedged legs: %s)",
                {s[0]: s[1] for s in seed},
                {i: lg[:2] for i, lg in legs.items() if lg[0] and lg[1]},
            )
            return t_read
    return 0


def _restore_state(stage: RiskStage, state: StateFile, start_halted: bool) -> None:
    """The trading state of the previous run (a halted engine stays halted until resumed);
    halted means nothing rests; ``[risk] start_halted``; then written back."""
    gate = stage.gate
    snap = load_state(state.path)
    if snap is not None:
        try:
            gate.restore_state(snap)
        except ValueError as exc:
            log.error("risk: %s: starting HALTED", exc)
            gate.restore_state({"state": "HALTED", "reason": str(exc), "source": "restore"})
        if gate.state != TradingState.ACTIVE:
            now = time.monotonic_ns()
            stage.route(
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
                "risk: trading state %s restored from %s", TradingState(gate.state).name, state.path
            )
        if snap.get("day") != state.day:
            gate.new_day()
    if gate.open_orders and gate.state == TradingState.HALTED:
        # halted means nothing rests: what is still open after the crash (a cancel lost or not
        # yet confirmed) is canceled again; exec refuses a cancel of an order already gone
        stage.route(gate.cancel_all(time.monotonic_ns()))
    if start_halted and gate.state != TradingState.HALTED:
        stage.route(
            gate.on_control(
                Control(int(ControlCommand.KILL), time.monotonic_ns(), "start_halted"),
                time.time_ns(),
            )
        )
    state.save()


def _snapshot_handler(w: Worker, stage: RiskStage, ask: AskExec | None) -> Any:
    """Exec's answer to a restarted risk: the open orders, restored into the gate."""
    gate = stage.gate

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
            canceled = gate.cancel_all(time.monotonic_ns())
            stage.route([c for c in canceled if c.client_order_id in keep])

    return on_snapshot


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


class HarLog:
    """``[risk] volatility = "har"``: which realised variance each instrument's HAR fit gets
    (from the prices of the refreshes between samples, or the squared interval return where
    the gate saw none), and where there was no forecast (the window's sigma): the counters
    ``rv_fine_instruments`` and ``har_fallbacks``, and one log line at each refit."""

    def __init__(self, w: Worker, cfg: Any) -> None:
        self.metrics = w.metrics
        self.symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
        self.refits = 0

    def note(self, stats: Any) -> None:
        har = stats.har
        fine = stats.rv_fine_used
        ids = list(self.symbols)  # configured instruments (ids not in use are never priced)
        self.metrics.set("rv_fine_instruments", int(fine[ids].sum()))
        self.metrics.set("har_fallbacks", int(har.fallbacks[ids].sum()))
        if har.refits == self.refits:
            return
        self.refits = har.refits

        def names(mask: Any) -> str:
            got = [s for i, s in self.symbols.items() if mask[i]]
            return ", ".join(got[:20]) + (f" (+{len(got) - 20})" if len(got) > 20 else "") or "-"

        log.info(
            "risk: HAR volatility refit %d (window %d): RV from the refreshes' prices: %s; "
            "squared interval return only: %s; no forecast, window sigma: %s",
            har.refits,
            stats.t,
            names(fine),
            names(~fine),
            names(~np.isfinite(har.var)),
        )


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
