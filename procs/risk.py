"""The risk process: the only door to execution.

Every intent from the strategies passes ``engine.risk.RiskGate``: approved ones go to exec on the
``orders`` ring, rejected ones come back to the strategy (``OrderRejected``) and to the record
(``RiskEvent``) on the ``risk`` ring. Execution events keep its positions and open orders exact;
market data keeps its marks. The kill switch arrives as a ``Control`` (``gekko kill``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    NewOrder,
    Quote,
    ReplaceOrder,
    Trade,
)
from procs.build import build_limits
from procs.runtime import STATE_READY, STATE_STOPPING, TOB_DTYPE, Worker
from procs.warmup import warm_risk
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.risk")


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    from engine.risk import RiskGate

    w = Worker("risk", cfg, engine_id, incarnation)
    gate = RiskGate(build_limits(cfg), cfg.instrument_table())
    intents = w.consume("intents")
    events = w.consume("events")
    tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
    rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
    control = w.consume("control")
    orders = w.produce("orders")
    replies = w.produce("risk")
    waiter = w.waiter(intents, events, control)  # not md: a tick alone needs no risk decision
    c_in = w.metrics.counter_index("intents_in")
    c_ok = w.metrics.counter_index("approved")
    c_rej = w.metrics.counter_index("rejected")
    c_ev = w.metrics.counter_index("events_in")
    h_lat = w.metrics.hist("tick_to_approval_ns")

    def route(out: list[Any]) -> None:
        for o in out:
            if isinstance(o, NewOrder | CancelOrder | ReplaceOrder):
                orders.publish(o)
                w.metrics.inc_i(c_ok)
                if isinstance(o, NewOrder) and o.ts_origin:
                    h_lat.record(time.monotonic_ns() - o.ts_origin)
            else:
                replies.publish(o)
                if type(o).__name__ == "OrderRejected":
                    w.metrics.inc_i(c_rej)

    if cfg.risk.start_halted:
        route(gate.on_control(Control(int(ControlCommand.KILL), time.monotonic_ns(), "start_halted")))
    warm_risk(cfg)  # before READY: first calls compile and build caches
    w.beat(STATE_READY)
    log.info("risk ready (%s, wait=%s)", w.pinning, w.wait.kind)
    stopping = False
    try:
        while True:
            for ctl in control.poll_batch(16):
                if not isinstance(ctl, Control):
                    continue
                if ctl.command == ControlCommand.STOP:
                    stopping = True  # finish what the strategy still sends (its cancels)
                elif ctl.command in (ControlCommand.KILL, ControlCommand.FLATTEN, ControlCommand.RESUME,
                                     ControlCommand.CANCEL_ALL):
                    log.warning("risk: control %s (%s)", ControlCommand(ctl.command).name, ctl.arg)
                    if ctl.command in (ControlCommand.KILL, ControlCommand.FLATTEN):
                        w.metrics.inc("kills")
                    route(gate.on_control(ctl))
            busy = False
            for ev in events.poll_batch(256):
                busy = True
                w.metrics.inc_i(c_ev)
                gate.on_exec_event(ev)
            batch = intents.poll_batch(256)
            if batch:  # the latest prices of the instruments concerned, before judging them
                for iid in {it.instrument_id for it in batch}:
                    if iid in rows:
                        _, bid, bid_qty, ask, ask_qty, last, ts = tob.read_tuple(rows[iid])
                        gate.on_market_data(Quote(iid, bid, bid_qty, ask, ask_qty, 0, ts))
                        if last > 0:
                            gate.on_market_data(Trade(iid, last, 1, 0, 0, ts))
            for it in batch:
                busy = True
                w.metrics.inc_i(c_in)
                w.processed += 1
                route(gate.on_intent(it, time.monotonic_ns()))
            w.beat()
            # (the liveness check reads /proc: only once stopping, never on the hot path)
            if stopping and not busy and not intents.has_data() and (intents.ring.closed or not _alive(intents)):
                break
            if not busy:
                waiter.wait_any(cfg.supervisor.heartbeat_interval_s)
    finally:
        w.beat(STATE_STOPPING)
        waiter.close()
        w.close()
    return 0


def _alive(c: Any) -> bool:
    from shm.region import pid_alive

    pid = c.ring.producer_pid
    return pid == 0 or pid_alive(pid)
