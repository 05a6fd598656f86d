"""The feed process: market data in, validated and stamped, out on the ``md`` ring.

It paces the source in wall time (``market.rate_hz``) so a live run behaves like a market, stamps
``ts_recv`` with the monotonic clock at publication (the start of every tick-to-order
measurement), keeps an L2 book per instrument to flag crossed books and sequence gaps, and
rejects what would poison downstream state (``engine.md_rejects.MdValidator``: unknown
instruments, non-positive prices, negative sizes, crossed or stale quotes). Those and the rows a
replay rejects are counted per reason (``md_rej_<reason>``, total ``md_rejected``); under
``[market] on_bad_row = "fail"`` the first one stops the run (exit ``EXIT_STOP_RUN``).

The stream comes from the venue's market-data client (``engine.venues.data.MarketDataClient``,
built by ``procs.build.build_data_client``; the simulated venue serves the configured source).
It also carries the simulated exchange's trading status: the source is wrapped by the venue's
rules (``[sim] halts``, ``circuit_breaker_*``; ``engine.sources.halts``), which insert
``ExchangeStatus`` messages (HALTED / CIRCUIT_BREAKER / OPEN) where they take effect. They go out
on ``md`` like any market data: exec's simulated exchange obeys them and exec forwards them on
``events``, where risk reads them (risk has no ``md`` reader). Each is logged and counted
(``exchange_status``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from engine.book import L2Book
from engine.md_rejects import BadRowError, MdValidator, RejectCounter
from engine.messages import (
    BookDelta,
    BookSnapshot,
    Control,
    ControlCommand,
    ExchangeStatus,
    ExchangeStatusKind,
    Quote,
    Trade,
)
from procs.build import build_data_client, build_exchange_rules
from procs.runtime import (
    EXIT_STOP_RUN,
    MD_REJECT_COUNTERS,
    STATE_READY,
    STATE_STOPPING,
    TOB_DTYPE,
    Worker,
    stop_reason_path,
)
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.feed")


class FeedRejects:
    """The feed's rejected market data: counted by reason from the start of the stream (the
    replay's rows and the feed's own checks, ``engine.md_rejects``), pushed to the shm counters
    ``md_rej_<reason>`` and their sum ``md_rejected``.

    A restarted feed replays the source from its start to find its place, so it counts the
    rows before that place again: pushing ``max(what an earlier incarnation left, our count)``
    keeps the counters exact instead of doubling them.
    """

    def __init__(self, w: Worker, policy: str) -> None:
        self.counter = RejectCounter(policy)
        self.metrics = w.metrics
        left = w.metrics.counters()
        self._base = {r: left.get(c, 0) for r, c in MD_REJECT_COUNTERS.items()}
        self._pushed = -1

    def push(self) -> None:
        if self.counter.total == self._pushed:
            return
        self._pushed = self.counter.total
        total = 0
        for r, c in MD_REJECT_COUNTERS.items():
            n = max(self._base[r], self.counter.counts.get(r, 0))
            total += n
            if n:
                self.metrics.set(c, n)
        self.metrics.set("md_rejected", total)


def _stop_run(cfg: Any, engine_id: str, why: str) -> int:
    """This run cannot go on (a bad row under on_bad_row = "fail", an unreadable replay):
    say why where the supervisor reads it, and exit so that it stops the engine."""
    log.error("feed: %s", why)
    path = stop_reason_path(cfg, engine_id, "feed")
    with contextlib.suppress(OSError):
        path.write_text(why)
    return EXIT_STOP_RUN


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    w = Worker("feed", cfg, engine_id, incarnation)
    md = w.produce("md")
    control = w.consume("control")
    books = {i.instrument_id: L2Book(i.instrument_id) for i in cfg.instruments}
    rules = build_exchange_rules(cfg)  # the venue's halts and breaker (None: none configured)
    rejects = FeedRejects(w, cfg.market.on_bad_row)
    validator = MdValidator(books)
    try:
        client = build_data_client(cfg, rejects.counter, rules)  # the venue's market data
        client.connect()
        client.subscribe(i.instrument_id for i in cfg.instruments)
        source = client.updates()
    except ValueError as exc:  # a replay file that cannot be read: restarting will not help
        w.close(crashed=False)  # the run stops: the stream ends here
        return _stop_run(cfg, engine_id, f"cannot replay: {exc}")
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
    tob = SeqlockTable.attach(engine_id, "tob", TOB_DTYPE)
    rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
    last_px = dict.fromkeys(rows, 0)
    c_out = w.metrics.counter_index("md_out")
    c_cross = w.metrics.counter_index("book_crossed")
    c_gap = w.metrics.counter_index("book_gaps")
    c_status = w.metrics.counter_index("exchange_status")
    h_pub = w.metrics.hist("publish_ns")
    rate = float(cfg.market.rate_hz)
    max_events = int(cfg.market.max_events)
    # a restarted feed resumes the stream where the previous one stopped publishing: it skips
    # as many messages as were published (rejected ones were not), counting rejections again
    skip = md.seq
    sent = published = 0
    rejects.counter.quiet = skip > 0  # an earlier incarnation logged these rows already
    try:
        while published < skip and (msg := next(source, None)) is not None:
            sent += 1
            reason = validator.check(msg)
            if reason is None:
                published += 1
            else:
                rejects.counter.reject(reason, "feed", sent)
    except BadRowError as exc:
        w.close(crashed=False)
        return _stop_run(cfg, engine_id, str(exc))
    rejects.counter.quiet = False
    w.beat(STATE_READY)
    # the first tick waits for its readers: a tick queued while a worker is still starting would
    # measure that start-up, not the pipeline
    if not w.wait_for_peers(STATE_READY, cfg.supervisor.startup_timeout_s):
        log.warning(
            "feed: not every worker is ready after %.0fs; publishing anyway",
            cfg.supervisor.startup_timeout_s,
        )
    t0 = time.monotonic()
    base_sent = sent
    log.info("feed ready (%s, wait=%s, resuming at event %d)", w.pinning, w.wait.kind, skip)
    exhausted = False
    md_closed = False
    try:
        while True:
            rejects.push()
            ctl = control.poll()
            if isinstance(ctl, Control) and ctl.command == ControlCommand.STOP:
                break
            if exhausted or (max_events and sent >= max_events):
                if not md_closed:
                    md.close()  # readers drain what is there, then see the end of the stream
                    md_closed = True
                    log.info(
                        "feed: finished after %d events, %s rejected",
                        sent,
                        rejects.counter.summary(),
                    )
                w.beat()
                time.sleep(0.01)  # done: idle until told to stop
                continue
            due = base_sent + int((time.monotonic() - t0) * rate) - sent
            if due <= 0:
                w.beat()
                pause = (1 - ((time.monotonic() - t0) * rate % 1)) / rate
                if w.wait.kind in ("spin", "yield"):
                    continue
                time.sleep(min(pause, 0.005))
                continue
            for _ in range(min(due, 512)):
                msg = next(source, None)
                if msg is None:
                    exhausted = True
                    break
                reason = validator.check(msg)
                if reason is None and isinstance(msg, BookDelta | BookSnapshot):
                    book = books[msg.instrument_id]
                    gaps, crossed = book.gap_count, book.crossed_count
                    book.apply(msg)
                    if book.gap_count != gaps:
                        w.metrics.inc_i(c_gap)
                    if book.crossed_count != crossed:
                        w.metrics.inc_i(c_cross)
                sent += 1
                if reason is not None:
                    rejects.counter.reject(reason, "feed", sent)
                    continue
                t = time.monotonic_ns()
                if hasattr(msg, "ts_recv"):  # bars carry only their own interval
                    msg.ts_recv = t
                # the table first: risk must never judge an order caused by this tick on older prices
                if isinstance(msg, Quote):
                    tob.write(
                        rows[msg.instrument_id],
                        (
                            msg.instrument_id,
                            msg.bid_px,
                            msg.bid_qty,
                            msg.ask_px,
                            msg.ask_qty,
                            last_px[msg.instrument_id],
                            t,
                        ),
                    )
                elif isinstance(msg, Trade):
                    last_px[msg.instrument_id] = msg.px
                elif isinstance(msg, ExchangeStatus):
                    w.metrics.inc_i(c_status)
                    if rules is not None:  # rare: a status change, not every tick
                        w.metrics.set("breaker_trips", rules.trips)
                        w.metrics.set("halt_withheld_trades", rules.suppressed_trades)
                    log.warning(
                        "feed: exchange status %s %s%s",
                        symbols.get(msg.instrument_id, "venue"),
                        ExchangeStatusKind(msg.status).name,
                        f" ({msg.reason})" if msg.reason else "",
                    )
                md.publish(msg)
                h_pub.record(time.monotonic_ns() - t)
                w.metrics.inc_i(c_out)
                w.processed += 1
                if max_events and sent >= max_events:
                    break
            w.beat()
    except BadRowError as exc:  # [market] on_bad_row = "fail"
        return _stop_run(cfg, engine_id, str(exc))
    finally:
        rejects.push()
        client.close()
        w.beat(STATE_STOPPING)
        w.close()
    return 0
