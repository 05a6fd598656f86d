"""The exec process: approved orders to the venue, execution events back to everyone.

It runs ``engine.exec_engine.ExecEngine`` over the configured venue (the simulated exchange by
default, fed from the ``md`` ring so it matches our orders against the market's book), measures
tick-to-order latency at the moment each new order is handed to the venue, keeps the positions
table from its fills, and on shutdown cancels every order still open before it closes the
``events`` ring. The order management policies (retries, price-gap band, halt policy, which
order types the venue takes natively and which exec emulates) come from ``[exec]``; a restarted
exec numbers its own orders (algo children, retries) in a fresh id block. Recovery after a
restart: exec journals what it takes and publishes (``procs.exec_journal``, written before each
publish) and a restarted exec rebuilds its order table from that journal and the venue, its algo
parents from the write-ahead algo log (``procs.algo_log``) too — never waiting for the database
(``procs.recovery``). If the positions it rebuilt disagree with the venue's, or the journal
lacks events the ring shows published, it does not trade: it exits ``EXIT_STOP_RUN`` saying why
and the supervisor stops the engine (exit code 1) instead of restarting it into the same doubt.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from engine.exec_engine import ExecEngine
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    ControlCommand,
    NewOrder,
    OrderFilled,
    OrderPartiallyFilled,
)
from engine.portfolio import Portfolio
from engine.stages.exec import ExecStage
from engine.stages.strategy import REFUSALS
from procs.algo_log import AlgoLog, algo_log_path
from procs.algo_log import prune as prune_algo_logs
from procs.build import build_venue, hedging_instrument_ids, venue_accounts, venue_record_path
from procs.exec_topups import open_topup_log
from procs.exec_trails import open_trail_log
from procs.loop import Input, Loop, Outbox, Timer
from procs.recovery import UnsafeToTrade, open_exec_journal, recover_exec
from procs.runtime import (
    EXIT_STOP_RUN,
    POSITION_DTYPE,
    STATE_READY,
    STATE_STOPPING,
    Worker,
    stop_reason_path,
)
from procs.storage import run_id
from procs.venue_status import (
    VenueStates,
    attach_stats_table,
    attach_table,
    baseline_path,
    live_venues,
    load_baseline,
    save_baseline,
    venue_names,
)
from procs.warmup import warm_exec
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.exec")

#: the events that move positions (a tuple built once: ``A | B`` in isinstance builds a new
#: union object per call, and emit runs per event)
_FILLS = (OrderPartiallyFilled, OrderFilled)


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    w = Worker("exec", cfg, engine_id, incarnation)
    instruments = cfg.instrument_table()
    # the simulated venue keeps its own record: a restarted exec finds its orders and fills there
    venue = build_venue(cfg, instruments, record_path=venue_record_path(cfg, run_id()))
    # a restarted exec numbers its own orders (algo children, retries) in a fresh id block
    engine = ExecEngine(
        venue,
        instruments,
        cfg.exec,
        id_block=incarnation % 256,  # a restarted exec takes a fresh block of its own ids
        max_order_age_ns=cfg.risk.max_intent_age_ns,  # risk's staleness limit, at exec too
    )
    engine.wall_offset_ns = time.time_ns() - time.monotonic_ns()  # session times are wall-clock
    algo_log = _open_algo_log(cfg, engine, incarnation)
    trail_log = open_trail_log(cfg, run_id(), incarnation)  # trailing stops' marks (restart)
    if trail_log is not None:
        engine.emulator.on_trail = trail_log.append
    topup_log = open_topup_log(cfg, run_id(), incarnation)  # list legs' second orders (restart)
    if topup_log is not None:
        engine._lw.tops.on_send = topup_log.append
    portfolio = build_portfolio(cfg, instruments)
    orders = w.consume("orders")
    events = w.produce("events")
    # exec's own journal: what a restart rebuilds from (procs/exec_journal.py)
    journal = open_exec_journal(cfg, incarnation)
    table = PositionsTable(w, cfg, portfolio)
    stage = ExecStage(
        engine,
        portfolio,
        Outbox(w, counters={"events": "events_out"}, taps={"events": table.on_event}),
    )
    if journal is not None:  # before publishing (procs/recovery.py)
        stage.journal = lambda taken, evs: journal.append(taken, evs, events.seq)
    warm_exec(cfg)  # before READY: first calls compile and build caches
    _log_emulation(cfg)
    # recovery before READY (procs/recovery.py): the order table from exec's journal,
    # reconciled with the venue; what the rest of the engine missed is published; re-delivered
    # orders the venue already has are dropped from ``backlog`` (the orders waiting in our input)
    _keep_baselines(cfg, engine_id, venue, incarnation)
    try:
        rec = recover_exec(w, cfg, venue, orders, events)
    except UnsafeToTrade as exc:
        w.beat(STATE_STOPPING)
        for closing in (algo_log, journal, trail_log, topup_log, w):
            if closing is not None:
                closing.close()
        return _stop_run(cfg, engine_id, f"{exc}; {len(venue.open_orders())} orders left open")
    _apply_recovery(stage, table, rec)
    engine.table.hedged = set(hedging_instrument_ids(cfg))  # both legs (engine.hedge_legs)
    on_order = _order_handler(w, stage)
    states = _venue_states(engine_id, cfg, venue, rec)

    def each_pass(now: int) -> None:
        stage.poll(now)
        table.refresh(now)
        if states.live:
            states.refresh()

    def on_exit() -> None:
        for closing in (algo_log, journal, trail_log, topup_log):
            if closing is not None:
                closing.close()

    loop = Loop(
        w,
        [Input("md", stage.on_md, batch=512, counter="md_in"), Input("orders", on_order)],
        [Timer(0, each_pass)],
        idle_s=min(cfg.supervisor.heartbeat_interval_s, 0.01),
        drain="orders",  # on STOP: the strategies' last cancels still reach the venue
        on_stop=lambda: _shut_down(stage, table),
        on_control=lambda ctl: _on_control(stage, states, ctl),
    )
    w.beat(STATE_READY)
    log.info(
        "exec ready: venue %s (%s, wait=%s)",
        getattr(venue, "name", type(venue).__name__),
        w.pinning,
        w.wait.kind,
    )
    for o in rec.backlog:  # orders taken before the restart, not yet at the venue
        on_order(o, time.monotonic_ns())
    return loop.run(on_exit=on_exit)


def _order_handler(w: Worker, stage: ExecStage) -> Any:
    """Orders to the stage, measured: tick-to-order latency as each new order is handed on."""
    m = w.metrics
    c_in, c_new = m.counter_index("orders_in"), m.counter_index("new_orders")
    h_t2o = m.hist("tick_to_order_ns")

    def on_order(o: Any, now: int) -> None:
        m.inc_i(c_in)
        w.processed += 1
        if type(o) is NewOrder:
            m.inc_i(c_new)
            if o.ts_origin:
                h_t2o.record(now - o.ts_origin)
        stage.on_order(o, now)

    return on_order


class PositionsTable:
    """Exec's positions table (risk and a restarted strategy read it), kept from the portfolio:
    the instruments whose fills went out, and every 200 ms all of them (marks for the P&L)."""

    MARK_EVERY_NS = 200_000_000

    def __init__(self, w: Worker, cfg: Any, portfolio: Portfolio) -> None:
        self.w = w
        self.table = SeqlockTable.attach(w.engine_id, "positions", POSITION_DTYPE)
        self.rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
        self.portfolio = portfolio
        self.dirty: set[int] = set()
        self.last_mark = 0
        self.stale_rejects = lambda: 0  # the engine's count, once there is one
        self.c_fill = w.metrics.counter_index("fills")
        self.c_rej = w.metrics.counter_index("venue_rejects")

    def on_event(self, ev: Any) -> None:
        """The tap on every published event."""
        if isinstance(ev, _FILLS):
            self.w.metrics.inc_i(self.c_fill)
            self.dirty.add(ev.instrument_id)
        elif isinstance(ev, ACCOUNT_EVENT_TYPES) and hasattr(ev, "instrument_id"):
            self.dirty.add(ev.instrument_id)  # settled, liquidated, paid: the row moves
        elif isinstance(ev, REFUSALS):
            self.w.metrics.inc_i(self.c_rej)

    def refresh(self, now: int) -> None:
        if now - self.last_mark > self.MARK_EVERY_NS:
            self.dirty.update(self.portfolio.positions)  # refresh marks for the P&L display
            self.last_mark = now
            self.w.metrics.set("stale_orders", self.stale_rejects())  # engine/exec_engine.py
        if self.dirty:
            self.write()

    def write(self) -> None:
        for iid in list(self.dirty):
            p = self.portfolio.positions.get(iid)
            if p is None or iid not in self.rows:
                continue
            self.table.write(
                self.rows[iid],
                (iid, p.position, p.fills, p.mark_px, p.avg_px, p.realized, p.unrealized, p.fees)
                + _legs(p),
            )
        self.dirty.clear()


def _legs(p: Any) -> tuple[int, int, float, float]:
    """A position's legs for the table: a hedging venue's long and short books (both held
    at once), else the net position on its side at its average price."""
    if p.short_book is not None and p.book is not None:
        return (p.long_qty, -p.short_qty, p.book.avg_px, p.short_book.avg_px)
    pos, avg = p.position, p.avg_px
    return (max(pos, 0), min(pos, 0), avg if pos > 0 else 0.0, avg if pos < 0 else 0.0)


def _apply_recovery(stage: ExecStage, table: PositionsTable, rec: Any) -> None:
    """What recovery rebuilt: the order table, the fills, what the engine missed (published),
    the cancels it decided, the algo parents that were working (resumed)."""
    engine = stage.engine
    table.stale_rejects = lambda: engine.stale_rejects
    if rec.result is None:
        return
    engine.table = rec.result.table
    for f in rec.stored_fills:  # fills and account events, in the journal's order
        if isinstance(f, ACCOUNT_EVENT_TYPES):
            stage.portfolio.on_event(f)
            engine.accounts.remember(f)  # a repeat from the venue is still dropped
        else:
            stage.portfolio.on_fill(f)
        if hasattr(f, "instrument_id"):
            table.dirty.add(f.instrument_id)
    stage.emit(rec.result.publish)
    for c in rec.result.to_cancel:
        stage.emit(engine.cancel_at_venue(c, time.monotonic_ns()))
    # algo parents that were working: rebuilt, missed parent fills published, resumed
    stage.emit(engine.restore_algos(rec.algo, time.monotonic_ns()))
    # list legs' second orders: parts of their legs again (engine.exec_topups)
    engine.restore_topups(rec.topups, time.monotonic_ns())
    # order lists: legs held or armed again, what the rules want now done (engine.exec_lists)
    stage.emit(engine.restore_lists(time.monotonic_ns(), rec.local, rec.requests))
    engine.restore_trails(rec.trails)  # trailing stops go on from their journaled marks
    if engine.lists.legs:
        legs = engine.lists.legs
        log.warning(
            "recovery: %d order-list legs restored (%d held until their parent fills, %d armed "
            "in exec's emulation, %d open at the venue)",
            len(legs),
            sum(leg.waiting for leg in legs.values()),
            sum(c in engine.emulator for c in legs),
            sum(1 for c in legs if c not in rec.local and engine.table.get(c) is not None
                and engine.table.get(c).is_open),
        )  # fmt: skip


def _venue_states(engine_id: str, cfg: Any, venue: Any, rec: Any) -> VenueStates:
    """The live venues' states (``procs.venue_status``); after a restart, a live venue learns
    what recovery rebuilt first (``ReconciledVenue.seed``: one venue; behind a router, which
    venue held which order is not in the journal)."""
    live = live_venues(venue)
    if live and rec.result is not None and live[0] is venue:
        venue.seed(rec.result.table.open_orders(), rec.result.fills)
        _seed_algo_children(venue, rec.algo)
    table = attach_table(engine_id) if live else None
    stats = attach_stats_table(engine_id) if live else None  # the exporter's venue figures
    return VenueStates(table, venue_names(cfg), venue, stats)


def _seed_algo_children(venue: Any, algo: Any) -> None:
    """An algo's children, not its parents, are the venue's orders, and plain-order recovery
    leaves them out (``rec.result``): the children still open and every fill the venue holds
    for them are ours too, else the first reconciliation calls them unknown and halts the
    venue on a balance they explain."""
    if algo is None or not algo.order_ids:
        return
    for child, _venue_id, _fills in algo.open_children:
        venue.record.sent(child, 0)
    venue.seed((), [f for f in venue.fills_since(0) if f.client_order_id in algo.order_ids])


def _keep_baselines(cfg: Any, engine_id: str, venue: Any, incarnation: int) -> None:
    """A live venue's balance baseline (``engine.venue_recon``) outlives an exec restart in
    ``<var_dir>/venue/``: a restarted exec compares the balances with the run's baseline and
    the journal's fills, so coins moved while it was down still halt that venue. Only with one
    venue (its record is rebuilt from the journal; behind a router it is not, and a restored
    baseline without the fills would halt it for our own trades)."""
    live = live_venues(venue)
    for v in live:
        path = baseline_path(cfg, engine_id, run_id(), v.name)
        if path is None:
            continue
        kept = load_baseline(path) if incarnation and live[0] is venue and path.exists() else None
        if kept is not None:
            v.restore_baseline(kept)
        v.on_baseline = lambda b, p=path: save_baseline(p, b)


def _on_control(stage: ExecStage, states: VenueStates, ctl: Any) -> None:
    """The kill switch at live venues: risk cancels the orders it approved and flattens the
    positions it knows (``engine.risk_controls``, through exec to the venue); with a live venue
    exec also cancels every order its table holds open (adopted ones, algo children) and the
    orders open at the venue that nobody here knows. A resume lifts a live venue's reconciliation
    halt (with a fresh reconciliation first)."""
    now = time.monotonic_ns()
    if not states.live:
        return  # the simulated venue: risk's cancels are the whole kill switch
    if ctl.command in (ControlCommand.KILL, ControlCommand.FLATTEN):
        log.warning(
            "exec: %s: canceling every open order at the venue", ControlCommand(ctl.command).name
        )
        stage.cancel_all(now)
        stage.emit(states.kill(now))
    elif ctl.command == ControlCommand.RESUME:
        states.resume(now)


def _shut_down(stage: ExecStage, table: PositionsTable) -> None:
    """Cancel what is still open and let the venue's latency elapse so the cancels come back."""
    engine = stage.engine
    stage.cancel_all(time.monotonic_ns())
    deadline = time.monotonic() + 1.0
    while engine.open_orders() and time.monotonic() < deadline:
        stage.poll(time.monotonic_ns())
        time.sleep(0.001)
    stage.poll(time.monotonic_ns())
    table.dirty.update(stage.portfolio.positions)
    table.write()
    if engine.open_orders():
        log.error(
            "exec: %d orders still open at the venue after shutdown", len(engine.open_orders())
        )
    table.w.metrics.set("anomalies", engine.table.anomaly_count)
    table.w.metrics.set("stale_orders", engine.stale_rejects)
    if engine.table.anomaly_count:
        log.warning("exec: venue events refused by the order table: %s", engine.anomalies)


def _log_emulation(cfg: Any) -> None:
    kinds = (
        "STOP",
        "STOP_LIMIT",
        "TRAILING_STOP",
        "TRAILING_STOP_LIMIT",
        "MARKET_IF_TOUCHED",
        "LIMIT_IF_TOUCHED",
        "MARKET_TO_LIMIT",
    )
    emulated = [t for t in kinds if t not in cfg.exec.native_order_types]
    if emulated and cfg.exec.emulate:
        log.info("exec: emulating %s from market data (the venue lacks them)", ", ".join(emulated))
    elif emulated:
        log.info(
            "exec: rejecting %s orders (the venue lacks them, emulate = false)", ", ".join(emulated)
        )


def build_portfolio(cfg: Any, instruments: Any) -> Portfolio:
    """Exec's portfolio, with the account of ``[portfolio]`` (starting cash, lot method, base
    currency, FX rates): without the cash its equity and weights would be meaningless; and each
    venue's account (kind, position mode, leverage, a betting exchange's commission)."""
    return Portfolio(instruments, accounts=venue_accounts(cfg), **cfg.portfolio.portfolio_kwargs())


def _open_algo_log(cfg: Any, engine: ExecEngine, incarnation: int) -> AlgoLog | None:
    """The write-ahead log of algo parents and children (``procs.algo_log``), hooked into the
    algo engine: a restarted exec rebuilds the parents from it (``procs.recovery``)."""
    path = algo_log_path(cfg, run_id())
    if path is None or engine.algo is None:
        return None
    if incarnation == 0:
        prune_algo_logs(path.parent, cfg.engine.id, keep=path)
    try:
        alog = AlgoLog(path)
    except OSError as exc:
        log.error(
            "exec: no algo log at %s (%s): algo parents will not survive a restart", path, exc
        )
        return None
    engine.algo.on_record = alog.append
    return alog


def _stop_run(cfg: Any, engine_id: str, why: str) -> int:
    """Exec must not trade (``procs.recovery.UnsafeToTrade``): say why where the supervisor
    reads it, and exit so that it stops the engine rather than restart exec."""
    log.critical("exec: not trading: %s", why)
    path = stop_reason_path(cfg, engine_id, "exec")
    with contextlib.suppress(OSError):
        path.write_text(f"not trading: {why}")
    return EXIT_STOP_RUN
