"""The strategy process: market data, execution events, risk replies (and, with the bridge,
other engines' messages) in, intents out.

It hosts the configured strategies (``engine.strategy_host``); everything here is plumbing:
drain each input ring in batches, hand messages to the host, publish the intents it returns.
A strategy more than ``[processes.strategy] max_backlog_ms`` behind the market skips to the
newest book instead of trading the backlog (``procs.backlog``); its execution events are
always applied. On STOP the host cancels the strategies' open orders, the intents ring is
closed, and the process leaves its reader slots so no producer waits on it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.messages import AuditEvent, Remote
from engine.stages.strategy import StrategyStage
from procs.backlog import BacklogGuard
from procs.bridge import RemoteFilter
from procs.build import build_strategy_host
from procs.loop import Input, Loop, Outbox, Timer
from procs.runtime import POSITION_DTYPE, STATE_READY, Worker, worker_enabled
from procs.warmup import warm_strategy

log = logging.getLogger("gekko.strategy")

#: each incarnation of the process numbers its orders in its own block, so a restarted strategy
#: never reuses a client order id (exec would refuse the duplicate)
ORDER_ID_BLOCK = 1 << 24
#: the strategies' ``on_timer``
TIMER_NS = 100_000_000


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    w = Worker("strategy", cfg, engine_id, incarnation)
    host = build_strategy_host(cfg)
    for slot in host.slots:
        slot.ctx.reserve_order_ids(incarnation * ORDER_ID_BLOCK)
    if incarnation > 0:
        _seed_positions(w, cfg, host)
        host.cancel_orphans(incarnation * ORDER_ID_BLOCK)  # the dead incarnations' orders
    w.produce("intents")
    stage = StrategyStage(host, Outbox(w, counters={"intents": "intents_out"}), TIMER_NS)
    inputs = _inputs(w, cfg, stage)
    stage.start(time.monotonic_ns())
    remote = next((i for i in inputs if i.ring == "remote"), None)

    def stop() -> None:
        # what other engines sent before the stop still reaches the strategies (bounded: a
        # busy remote stream must not hold the shutdown)
        if remote is not None:
            for _ in range(64):
                batch = w.consumers["remote"].poll_batch(256)
                if not batch:
                    break
                remote.on_batch(batch)  # type: ignore[misc]
        stage.stop(time.monotonic_ns())

    def report() -> None:
        if host.errors:
            w.metrics.set("strategy_errors", len(host.errors))
            for name, fn, err in host.errors:
                log.error("strategy %s failed in %s: %s", name, fn, err)

    loop = Loop(w, inputs, [Timer(e.interval_ns, e.fn) for e in stage.timers], on_stop=stop)
    warm_strategy(cfg)  # before READY: first calls compile and build caches
    w.beat(STATE_READY)
    log.info("strategy ready: %d strategies (%s, wait=%s)", len(host.slots), w.pinning, w.wait.kind)
    return loop.run(on_exit=report)


def _inputs(w: Worker, cfg: Any, stage: StrategyStage) -> list[Input]:
    """The rings in priority order: execution events and risk replies first (a strategy should
    know its fills before it reacts to the next tick), then forecasts, other engines' messages,
    and market data last."""
    inputs = [Input("events", stage.on_event, counter="events_in"), Input("risk", stage.on_risk)]
    m = w.metrics
    guard = BacklogGuard(cfg.processes.strategy.max_backlog_ms)
    c_skip = m.counter_index("md_skipped")
    if worker_enabled(cfg, "infer"):  # model forecasts (procs/infer.py)

        def forecasts(batch: list[Any]) -> None:
            n = len(batch)
            batch = guard.newest_forecasts(batch, time.monotonic_ns())
            if len(batch) != n:  # behind: only each instrument's newest forecast
                m.inc_i(c_skip, n - len(batch))
            for f in batch:
                stage.on_forecast(f, time.monotonic_ns())

        inputs.append(Input("forecasts", on_batch=forecasts))
    if worker_enabled(cfg, "bridge"):
        # other engines' messages (procs/bridge.py): each envelope once, to every strategy's
        # on_remote (a re-delivered stream id is dropped here)
        fresh = RemoteFilter().fresh
        c_rem, c_rdup = m.counter_index("remote_in"), m.counter_index("remote_duplicates")

        def remote(batch: list[Any]) -> None:
            for r in batch:
                if type(r) is AuditEvent:  # the bridge's, for the supervisor's audit trail
                    continue
                if not isinstance(r, Remote) or not fresh(r):
                    m.inc_i(c_rdup)  # re-delivered (at-least-once) or not an envelope
                    continue
                m.inc_i(c_rem)
                stage.on_remote(r, time.monotonic_ns())

        inputs.append(Input("remote", on_batch=remote))
    inputs.append(Input("md", on_batch=_md_handler(w, stage, guard)))
    return inputs


def _md_handler(w: Worker, stage: StrategyStage, guard: BacklogGuard) -> Any:
    """Market data: behind the market by more than ``max_backlog_ms``, the backlog is absorbed
    (books exact) and only the newest ticks reach the strategies (``procs.backlog``)."""
    m = w.metrics
    md = w.consumers["md"] if "md" in w.consumers else w.consume("md")
    c_md, c_skip = m.counter_index("md_in"), m.counter_index("md_skipped")
    c_episodes = m.counter_index("backlog_episodes")
    h_lat = m.hist("tick_to_intent_ns")
    host = stage.host

    def on_batch(batch: list[Any]) -> None:
        skipped, episodes = guard.skipped, guard.episodes
        batch, absorbed = guard.check(batch, md, host, time.monotonic_ns())
        n = len(batch)
        if absorbed:  # behind the market: the backlog is absorbed, the newest ticks remain
            k = guard.skipped - skipped
            m.inc_i(c_skip, k)
            m.inc_i(c_episodes, guard.episodes - episodes)
            n += k
        m.inc_i(c_md, n)
        w.processed += n
        deliver = stage.dispatch if absorbed else stage.on_md
        for msg in batch:
            if deliver(msg, time.monotonic_ns()):
                ts = getattr(msg, "ts_recv", 0)
                if ts:
                    h_lat.record(time.monotonic_ns() - ts)

    return on_batch


def _seed_positions(w: Worker, cfg: Any, host: Any) -> None:
    """A restarted strategy process starts from the positions in exec's table, not flat: a
    market maker restarted flat would quote up to its inventory limit again on top of what
    it holds (``StrategyHost.seed_positions``). Nothing is seeded if the table cannot be
    read (logged: the strategies start flat, risk's limits still hold)."""
    from shm.seqlock import SeqlockTable

    try:
        table = SeqlockTable.attach(w.engine_id, "positions", POSITION_DTYPE)
        try:
            t_read = time.monotonic_ns()
            read = table.read_all()  # one read: the net and a hedging venue's legs agree
            rows = {int(r["instrument_id"]): int(r["position"]) for r in read}
            legs = {
                int(r["instrument_id"]): (int(r["long_pos"]), int(r["short_pos"])) for r in read
            }
        finally:
            table.close()
    except Exception as exc:  # exec has not written it yet, or it is gone
        log.error("strategy: restarted, positions table unreadable (%s): starting flat", exc)
        return
    shared = host.seed_positions(rows, t_read, legs)
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
    held = {symbols.get(i, i): p for i, p in rows.items() if p and i not in shared}
    log.warning("strategy: restarted: positions from exec's table: %s", held or "all flat")
    if shared:
        log.error(
            "strategy: restarted: %s traded by several strategies: their positions are not "
            "seeded (each starts flat there; risk's limits still count the whole position)",
            [symbols.get(i, i) for i in shared],
        )
