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
    Control,
    ControlCommand,
    NewOrder,
    OpenOrdersRequest,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
)
from engine.portfolio import Portfolio
from procs.algo_log import AlgoLog, algo_log_path
from procs.algo_log import prune as prune_algo_logs
from procs.build import build_venue, venue_record_path
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
    algo_log = _open_algo_log(cfg, engine, incarnation)
    portfolio = build_portfolio(cfg, instruments)
    positions = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
    orders = w.consume("orders")
    md = w.consume("md")
    control = w.consume("control")
    events = w.produce("events")
    # exec's own journal: what a restart rebuilds from (procs/exec_journal.py)
    journal = open_exec_journal(cfg, incarnation)
    waiter = w.waiter(orders, md, control)
    c_in = w.metrics.counter_index("orders_in")
    c_new = w.metrics.counter_index("new_orders")
    c_out = w.metrics.counter_index("events_out")
    c_fill = w.metrics.counter_index("fills")
    c_rej = w.metrics.counter_index("venue_rejects")
    c_md = w.metrics.counter_index("md_in")
    h_t2o = w.metrics.hist("tick_to_order_ns")
    dirty: set[int] = set()

    def emit(evs: list[Any], taken: Any = None) -> None:
        if journal is not None and (evs or taken is not None):
            journal.append(taken, evs, events.seq)  # before publishing (procs/recovery.py)
        if not evs:
            return
        events.publish_batch(evs)
        w.metrics.inc_i(c_out, len(evs))
        for ev in evs:
            if isinstance(ev, _FILLS):
                portfolio.on_fill(ev)
                w.metrics.inc_i(c_fill)
                dirty.add(ev.instrument_id)
            elif isinstance(ev, OrderRejected):
                w.metrics.inc_i(c_rej)

    def write_positions() -> None:
        for iid in list(dirty):
            p = portfolio.positions.get(iid)
            if p is None or iid not in rows:
                continue
            positions.write(
                rows[iid],
                (iid, p.position, p.fills, p.mark_px, p.avg_px, p.realized, p.unrealized, p.fees),
            )
        dirty.clear()

    warm_exec(cfg)  # before READY: first calls compile and build caches
    emulated = [
        t for t in ("STOP", "STOP_LIMIT", "TRAILING_STOP") if t not in cfg.exec.native_order_types
    ]
    if emulated and cfg.exec.emulate:
        log.info("exec: emulating %s from market data (the venue lacks them)", ", ".join(emulated))
    elif emulated:
        log.info(
            "exec: rejecting %s orders (the venue lacks them, emulate = false)", ", ".join(emulated)
        )
    # recovery before READY (procs/recovery.py): the order table from exec's journal,
    # reconciled with the venue; what the rest of the engine missed is published; re-delivered
    # orders the venue already has are dropped from ``backlog`` (the orders waiting in our input)
    try:
        rec = recover_exec(w, cfg, venue, orders, events)
    except UnsafeToTrade as exc:
        w.beat(STATE_STOPPING)
        for closing in (algo_log, journal, waiter, w):
            if closing is not None:
                closing.close()
        return _stop_run(cfg, engine_id, f"{exc}; {len(venue.open_orders())} orders left open")
    if rec.result is not None:
        engine.table = rec.result.table
        for f in rec.stored_fills:
            portfolio.on_fill(f)
            dirty.add(f.instrument_id)
        emit(rec.result.publish)
        for c in rec.result.to_cancel:
            emit(engine.on_order(c, time.monotonic_ns()))
        # algo parents that were working: rebuilt, missed parent fills published, resumed
        emit(engine.restore_algos(rec.algo, time.monotonic_ns()))
    backlog = rec.backlog
    w.beat(STATE_READY)
    log.info(
        "exec ready: venue %s (%s, wait=%s)",
        getattr(venue, "name", type(venue).__name__),
        w.pinning,
        w.wait.kind,
    )
    stopping = False
    last_mark = 0
    try:
        while True:
            for ctl in control.poll_batch(16):
                if isinstance(ctl, Control) and ctl.command == ControlCommand.STOP:
                    stopping = True
            busy = False
            mds = md.poll_batch(512)
            if mds:
                busy = True
                for msg in mds:
                    portfolio.on_market_data(msg)
                    emit(engine.on_market_data(msg, time.monotonic_ns()))
                w.metrics.inc_i(c_md, len(mds))  # once per batch, after it took effect
            batch = orders.poll_batch(256)
            if backlog:
                batch, backlog = backlog + batch, []
            for o in batch:
                busy = True
                w.metrics.inc_i(c_in)
                w.processed += 1
                now = time.monotonic_ns()
                if isinstance(o, NewOrder):
                    w.metrics.inc_i(c_new)
                    if o.ts_origin:
                        h_t2o.record(now - o.ts_origin)
                elif type(o) is OpenOrdersRequest:  # a restarted risk without a record
                    emit(engine.open_order_snapshot(o, now))
                    continue
                emit(engine.on_order(o, now), o)
            emit(engine.poll(time.monotonic_ns()))
            now = time.monotonic_ns()
            if dirty or now - last_mark > 200_000_000:
                if now - last_mark > 200_000_000:
                    dirty.update(portfolio.positions)  # refresh marks for the P&L display
                    last_mark = now
                    w.metrics.set("stale_orders", engine.stale_rejects)  # engine/exec_engine.py
                write_positions()
            w.beat()
            if (
                stopping
                and not busy
                and not orders.has_data()
                and (orders.ring.closed or _gone(orders))
            ):
                break
            if not busy:
                waiter.wait_any(min(cfg.supervisor.heartbeat_interval_s, 0.01))
        # cancel what is still open and let the venue's latency elapse so the cancels come back
        emit(engine.cancel_all(time.monotonic_ns()))
        deadline = time.monotonic() + 1.0
        while engine.open_orders() and time.monotonic() < deadline:
            emit(engine.poll(time.monotonic_ns()))
            time.sleep(0.001)
        emit(engine.poll(time.monotonic_ns()))
        dirty.update(portfolio.positions)
        write_positions()
        if engine.open_orders():
            log.error(
                "exec: %d orders still open at the venue after shutdown", len(engine.open_orders())
            )
        w.metrics.set("anomalies", engine.table.anomaly_count)
        w.metrics.set("stale_orders", engine.stale_rejects)
        if engine.table.anomaly_count:
            log.warning("exec: venue events refused by the order table: %s", engine.anomalies)
    finally:
        w.beat(STATE_STOPPING)
        if algo_log is not None:
            algo_log.close()
        if journal is not None:
            journal.close()
        waiter.close()
        w.close()
    return 0


def build_portfolio(cfg: Any, instruments: Any) -> Portfolio:
    """Exec's portfolio, with the account of ``[portfolio]`` (starting cash, lot method, base
    currency, FX rates): without the cash its equity and weights would be meaningless."""
    return Portfolio(instruments, **cfg.portfolio.portfolio_kwargs())


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


def _gone(c: Any) -> bool:
    from shm.region import pid_alive

    pid = c.ring.producer_pid
    return pid != 0 and not pid_alive(pid)
