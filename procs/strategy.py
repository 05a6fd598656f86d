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

from engine.messages import Control, ControlCommand, Forecast, OrderRejected, Remote
from procs.backlog import BacklogGuard
from procs.bridge import RemoteFilter
from procs.build import build_strategy_host
from procs.runtime import POSITION_DTYPE, STATE_READY, STATE_STOPPING, Worker, worker_enabled
from procs.warmup import warm_strategy

log = logging.getLogger("gekko.strategy")

#: each incarnation of the process numbers its orders in its own block, so a restarted strategy
#: never reuses a client order id (exec would refuse the duplicate)
ORDER_ID_BLOCK = 1 << 24


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    w = Worker("strategy", cfg, engine_id, incarnation)
    host = build_strategy_host(cfg)
    for slot in host.slots:
        slot.ctx.reserve_order_ids(incarnation * ORDER_ID_BLOCK)
    if incarnation > 0:
        _seed_positions(w, cfg, host)
        host.cancel_orphans(incarnation * ORDER_ID_BLOCK)  # the dead incarnations' orders
    md = w.consume("md")
    events = w.consume("events")
    risk = w.consume("risk")
    control = w.consume("control")
    intents = w.produce("intents")
    # model forecasts (procs/infer.py), when the engine runs the infer worker
    forecasts = w.consume("forecasts") if worker_enabled(cfg, "infer") else None
    # other engines' messages (procs/bridge.py), when the bridge runs: each envelope once, to
    # every strategy's on_remote (a re-delivered stream id is dropped here)
    remote = w.consume("remote") if worker_enabled(cfg, "bridge") else None
    remote_filter = RemoteFilter()
    extra = [c for c in (forecasts, remote) if c is not None]
    waiter = w.waiter(md, events, risk, control, *extra)
    c_md = w.metrics.counter_index("md_in")
    c_int = w.metrics.counter_index("intents_out")
    c_ev = w.metrics.counter_index("events_in")
    c_rem = w.metrics.counter_index("remote_in")
    c_rdup = w.metrics.counter_index("remote_duplicates")
    c_skip = w.metrics.counter_index("md_skipped")
    c_episodes = w.metrics.counter_index("backlog_episodes")
    h_lat = w.metrics.hist("tick_to_intent_ns")
    guard = BacklogGuard(cfg.processes.strategy.max_backlog_ms)
    timer_ns = 100_000_000
    next_timer = time.monotonic_ns() + timer_ns

    def remote_batch() -> bool:
        """Hand up to 256 remote envelopes to the host; False when the ring had none."""
        batch = remote.poll_batch(256) if remote is not None else []
        for r in batch:
            if not isinstance(r, Remote) or not remote_filter.fresh(r):
                w.metrics.inc_i(c_rdup)  # re-delivered (at-least-once) or not an envelope
                continue
            w.metrics.inc_i(c_rem)
            out = host.on_remote(r, time.monotonic_ns())
            if out:
                intents.publish_batch(out)
                w.metrics.inc_i(c_int, len(out))
        return bool(batch)

    out = host.start(time.monotonic_ns())
    if out:
        intents.publish_batch(out)
    warm_strategy(cfg)  # before READY: first calls compile and build caches
    w.beat(STATE_READY)
    log.info("strategy ready: %d strategies (%s, wait=%s)", len(host.slots), w.pinning, w.wait.kind)
    try:
        while True:
            stop = False
            for ctl in control.poll_batch(16):
                if isinstance(ctl, Control) and ctl.command == ControlCommand.STOP:
                    stop = True
            if stop:
                # what other engines sent before the stop still reaches the strategies (bounded:
                # a busy remote stream must not hold the shutdown)
                for _ in range(64):
                    if not remote_batch():
                        break
                out = host.stop(time.monotonic_ns())
                if out:
                    intents.publish_batch(out)
                    w.metrics.inc_i(c_int, len(out))
                break
            busy = False
            # execution events and risk replies first: a strategy should know its fills
            # before it reacts to the next tick
            for ev in events.poll_batch(256):
                busy = True
                w.metrics.inc_i(c_ev)
                out = host.on_exec_event(ev, time.monotonic_ns())
                if out:
                    intents.publish_batch(out)
                    w.metrics.inc_i(c_int, len(out))
            for ev in risk.poll_batch(256):
                busy = True
                if isinstance(ev, OrderRejected):
                    out = host.on_exec_event(ev, time.monotonic_ns())
                    if out:
                        intents.publish_batch(out)
                        w.metrics.inc_i(c_int, len(out))
            if forecasts is not None:
                fbatch = forecasts.poll_batch(256)
                n = len(fbatch)
                fbatch = guard.newest_forecasts(fbatch, time.monotonic_ns())
                if len(fbatch) != n:  # behind: only each instrument's newest forecast
                    w.metrics.inc_i(c_skip, n - len(fbatch))
                for f in fbatch:
                    busy = True
                    if isinstance(f, Forecast):
                        out = host.on_forecast(f, time.monotonic_ns())
                        if out:
                            intents.publish_batch(out)
                            w.metrics.inc_i(c_int, len(out))
                    else:  # model swaps, rejections, drift: the infer process logged them
                        log.debug("strategy: %s", f)
            if remote is not None:
                busy = remote_batch() or busy
            skipped, episodes = guard.skipped, guard.episodes
            batch, absorbed = guard.check(md.poll_batch(256), md, host, time.monotonic_ns())
            busy = busy or bool(batch)
            if absorbed:  # behind the market: the backlog is absorbed, the newest ticks remain
                n = guard.skipped - skipped
                w.metrics.inc_i(c_skip, n)
                w.metrics.inc_i(c_md, n)
                w.processed += n
                w.metrics.inc_i(c_episodes, guard.episodes - episodes)
            deliver = host.dispatch if absorbed else host.on_market_data
            for msg in batch:
                w.metrics.inc_i(c_md)
                w.processed += 1
                out = deliver(msg, time.monotonic_ns())
                if out:
                    intents.publish_batch(out)
                    now = time.monotonic_ns()
                    w.metrics.inc_i(c_int, len(out))
                    ts = getattr(msg, "ts_recv", 0)
                    if ts:
                        h_lat.record(now - ts)
            now = time.monotonic_ns()
            if now >= next_timer:
                next_timer = now + timer_ns
                out = host.on_timer(now)
                if out:
                    intents.publish_batch(out)
                    w.metrics.inc_i(c_int, len(out))
            w.beat()
            if not busy:
                waiter.wait_any(cfg.supervisor.heartbeat_interval_s)
    finally:
        w.beat(STATE_STOPPING)
        if host.errors:
            w.metrics.set("strategy_errors", len(host.errors))
            for name, fn, err in host.errors:
                log.error("strategy %s failed in %s: %s", name, fn, err)
        waiter.close()
        w.close()
    return 0


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
            rows = {int(r["instrument_id"]): int(r["position"]) for r in table.read_all()}
        finally:
            table.close()
    except Exception as exc:  # exec has not written it yet, or it is gone
        log.error("strategy: restarted, positions table unreadable (%s): starting flat", exc)
        return
    shared = host.seed_positions(rows, t_read)
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
    held = {symbols.get(i, i): p for i, p in rows.items() if p and i not in shared}
    log.warning("strategy: restarted: positions from exec's table: %s", held or "all flat")
    if shared:
        log.error(
            "strategy: restarted: %s traded by several strategies: their positions are not "
            "seeded (each starts flat there; risk's limits still count the whole position)",
            [symbols.get(i, i) for i in shared],
        )
