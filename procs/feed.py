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
A live venue (``engine.venues.data.is_live``: a real exchange through ccxt) is not paced and not
skipped into on a restart: the feed drains what arrived (``poll_updates``), idles briefly when
nothing did, and a restarted feed starts from the venue's fresh snapshot. Its sequence gaps,
book resyncs, reconnects and state go to the shm counters ``md_gaps``, ``md_resyncs``,
``md_reconnects`` and ``md_state`` (0 connected, 1 resyncing, 2 down). Several venues come as
one live client (``engine.venues.merged_data``): ``md_state`` is the worst one's, ``md_states``
each one's, and ``md_paced`` how much of the simulated market beside them was published (where
a restarted feed resumes it).
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
from collections.abc import Iterator
from typing import Any

from engine.book import L2Book
from engine.md_rejects import BadRowError, MdValidator, RejectCounter
from engine.messages import (
    BookDelta,
    BookSnapshot,
    ExchangeStatus,
    ExchangeStatusKind,
    MarkPrice,
    Quote,
    Trade,
)
from engine.venues.data import is_live
from procs.build import build_data_client, build_exchange_rules
from procs.loop import ExitLoop, Loop, Timer
from procs.runtime import (
    EXIT_STOP_RUN,
    MD_REJECT_COUNTERS,
    STATE_READY,
    TOB_DTYPE,
    Worker,
    stop_reason_path,
)
from procs.venue_status import pack_md_states, venue_names
from shm.seqlock import SeqlockTable

log = logging.getLogger("gekko.feed")

#: ``md_state``: a live venue's market-data state as a counter value
_STATE_CODES = {"connected": 0, "resyncing": 1, "down": 2}


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
    w.consume("control")
    books = {i.instrument_id: L2Book(i.instrument_id) for i in cfg.instruments}
    rules = build_exchange_rules(cfg)  # the venue's halts and breaker (None: none configured)
    rejects = FeedRejects(w, cfg.market.on_bad_row)
    try:
        client = build_data_client(cfg, rejects.counter, rules)  # the venue's market data
        client.connect()
        client.subscribe(i.instrument_id for i in cfg.instruments)
        live = is_live(client)
        source = iter(()) if live else client.updates()
    except ValueError as exc:  # a replay file that cannot be read: restarting will not help
        code = _stop_run(cfg, engine_id, f"cannot replay: {exc}")  # the reason before the end
        w.close(crashed=False)  # the run stops: the stream ends here
        return code
    feed = _Feed(w, md, source, books, rules, rejects, client if live else None)
    try:
        skip = feed.resume()
    except BadRowError as exc:
        code = _stop_run(cfg, engine_id, str(exc))
        w.close(crashed=False)
        return code
    w.beat(STATE_READY)
    # the first tick waits for its readers: a tick queued while a worker is still starting would
    # measure that start-up, not the pipeline
    if not w.wait_for_peers(STATE_READY, cfg.supervisor.startup_timeout_s):
        log.warning(
            "feed: not every worker is ready after %.0fs; publishing anyway",
            cfg.supervisor.startup_timeout_s,
        )
    feed.start()
    log.info("feed ready (%s, wait=%s, resuming at event %d)", w.pinning, w.wait.kind, skip)

    def on_exit() -> None:
        rejects.push()
        client.close()

    # no input ring: the feed produces from its source, paced in ``step``, which waits itself
    return Loop(w, [], [Timer(0, feed.step)]).run(on_exit=on_exit)


class _Feed:
    """The feed's work: pace the source in wall time, validate, keep the books, stamp, publish."""

    def __init__(
        self,
        w: Worker,
        md: Any,
        source: Iterator[Any],
        books: dict[int, L2Book],
        rules: Any,
        rejects: FeedRejects,
        live: Any = None,
    ) -> None:
        cfg = w.cfg
        self.live = live  # a live venue's client (drained, not paced), or None
        self.w, self.cfg, self.md, self.source = w, cfg, md, source
        self.books, self.rules, self.rejects = books, rules, rejects
        self.validator = MdValidator(books)
        self.symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
        self.tob = SeqlockTable.attach(w.engine_id, "tob", TOB_DTYPE)
        self.rows = {i.instrument_id: k for k, i in enumerate(cfg.instruments)}
        self.last_px = dict.fromkeys(self.rows, 0)
        self.mark_px = dict.fromkeys(self.rows, 0)  # a perpetual's venue mark (MarkPrice)
        m = w.metrics
        self.c_out, self.c_cross = m.counter_index("md_out"), m.counter_index("book_crossed")
        self.c_gap, self.c_status = m.counter_index("book_gaps"), m.counter_index("exchange_status")
        self.h_pub = m.hist("publish_ns")
        self.rate = float(cfg.market.rate_hz)
        self.max_events = int(cfg.market.max_events)
        self.sent = 0
        self.base_sent = 0
        self.t0 = 0.0
        self.exhausted = False
        self.md_closed = False
        self.venue_pushed_at = 0.0
        # a restarted feed's client counts from 0: what earlier incarnations counted is kept
        left = w.metrics.counters()
        self.venue_base = {c: left.get(c, 0) for c in ("md_gaps", "md_resyncs", "md_reconnects")}
        self.venue_rows = venue_names(cfg)

    def resume(self) -> int:
        """A restarted feed resumes the stream where the previous one stopped publishing: it skips
        as many messages as were published (rejected ones were not), counting rejections again.
        Returns how many it skipped; BadRowError under on_bad_row = "fail"."""
        skip = 0 if self.live is not None else self.md.seq
        if callable(getattr(self.live, "skip_paced", None)):  # the simulator beside live venues
            skip = self.live.skip_paced(self.w.metrics.counters().get("md_paced", 0))
            self.w.metrics.set("md_out", self.md.seq)
            return skip
        published = 0
        counter = self.rejects.counter
        counter.quiet = skip > 0  # an earlier incarnation logged these rows already
        while published < skip and (msg := next(self.source, None)) is not None:
            self.sent += 1
            reason = self.validator.check(msg)
            if reason is None:
                published += 1
            else:
                counter.reject(reason, "feed", self.sent)
        counter.quiet = False
        # what the ring holds is what was published: a feed killed between its publish and its
        # count left the count one short
        self.w.metrics.set("md_out", self.md.seq)
        return skip

    def start(self) -> None:
        """The pacing clock starts now."""
        self.t0 = time.monotonic()
        self.base_sent = self.sent

    def step(self, now_ns: int) -> bool:
        """Publish what is due by now (or wait for the next one); always True: it waits itself."""
        self.rejects.push()
        sent, max_events = self.sent, self.max_events
        if self.exhausted or (max_events and sent >= max_events):
            if not self.md_closed:
                self.md.close()  # readers drain what is there, then see the end of the stream
                self.md_closed = True
                log.info(
                    "feed: finished after %d events, %s rejected",
                    sent,
                    self.rejects.counter.summary(),
                )
            time.sleep(0.01)  # done: idle until told to stop
            return True
        if self.live is not None:
            return self.step_live()
        rate = self.rate
        due = self.base_sent + int((time.monotonic() - self.t0) * rate) - sent
        if due <= 0:
            pause = (1 - ((time.monotonic() - self.t0) * rate % 1)) / rate
            if self.w.wait.kind not in ("spin", "yield"):
                time.sleep(min(pause, 0.005))
            return True
        try:
            self.publish_due(min(due, 512))
        except BadRowError as exc:  # [market] on_bad_row = "fail"
            raise ExitLoop(_stop_run(self.cfg, self.w.engine_id, str(exc))) from None
        return True

    def publish_due(self, n: int) -> None:
        for _ in range(n):
            msg = next(self.source, None)
            if msg is None:
                self.exhausted = True
                return
            self.take(msg)
            if self.max_events and self.sent >= self.max_events:
                return

    def take(self, msg: Any) -> None:
        """Validate one message, keep the book, publish it (or count why not)."""
        reason = self.validator.check(msg)
        if reason is None and isinstance(msg, BookDelta | BookSnapshot):
            self._apply_book(msg)
        self.sent += 1
        if reason is not None:
            self.rejects.counter.reject(reason, "feed", self.sent)
            return
        self.publish(msg)

    def step_live(self) -> bool:
        """Drain what the live venue delivered (no pacing); idle briefly when nothing came."""
        client = self.live
        n = 512
        if self.max_events:
            n = min(n, self.max_events - self.sent)
        batch = client.poll_updates(n)
        now = time.monotonic()
        if now >= self.venue_pushed_at + 0.25:
            self.venue_pushed_at = now
            self.push_venue()
        if not batch:
            if self.w.wait.kind not in ("spin", "yield"):
                time.sleep(0.0005)
            return True
        try:
            for msg in batch:
                self.take(msg)
        except BadRowError as exc:  # [market] on_bad_row = "fail"
            raise ExitLoop(_stop_run(self.cfg, self.w.engine_id, str(exc))) from None
        paced = getattr(client, "paced_taken", None)
        if paced is not None:  # where a restarted feed resumes the simulated market
            self.w.metrics.set("md_paced", paced)
        return True

    def push_venue(self) -> None:
        """The live venue's gaps, resyncs, reconnects and state into the shm counters."""
        client, m = self.live, self.w.metrics
        counts, base = client.counters(), self.venue_base
        for name in ("gaps", "resyncs", "reconnects"):
            m.set(f"md_{name}", base[f"md_{name}"] + counts.get(name, 0))
        m.set("md_state", _STATE_CODES.get(client.state(), 2))
        states = getattr(client, "states", None)
        if callable(states):  # several live venues: each one's (procs.venue_status.md_states)
            m.set("md_states", pack_md_states(self.venue_rows, states()))

    def _apply_book(self, msg: BookDelta | BookSnapshot) -> None:
        book = self.books[msg.instrument_id]
        gaps, crossed = book.gap_count, book.crossed_count
        book.apply(msg)
        if book.gap_count != gaps:
            self.w.metrics.inc_i(self.c_gap)
        if book.crossed_count != crossed:
            self.w.metrics.inc_i(self.c_cross)

    def publish(self, msg: Any) -> None:
        """Stamp ``ts_recv``, update the top-of-book table first (risk must never judge an order
        caused by this tick on older prices), then publish."""
        w = self.w
        t = time.monotonic_ns()
        if hasattr(msg, "ts_recv"):  # bars carry only their own interval
            msg.ts_recv = t
        if isinstance(msg, Quote):
            self.tob.write(
                self.rows[msg.instrument_id],
                (
                    msg.instrument_id,
                    msg.bid_px,
                    msg.bid_qty,
                    msg.ask_px,
                    msg.ask_qty,
                    self.last_px[msg.instrument_id],
                    t,
                    self.mark_px[msg.instrument_id],
                ),
            )
        elif isinstance(msg, Trade):
            self.last_px[msg.instrument_id] = msg.px
        elif isinstance(msg, MarkPrice):  # the feed is the table's one writer: row kept whole
            self.mark_px[msg.instrument_id] = msg.mark_px
            row = self.rows[msg.instrument_id]
            self.tob.write(row, (*self.tob.read_tuple(row)[:-1], msg.mark_px))
        elif isinstance(msg, ExchangeStatus):
            w.metrics.inc_i(self.c_status)
            if self.rules is not None:  # rare: a status change, not every tick
                w.metrics.set("breaker_trips", self.rules.trips)
                w.metrics.set("halt_withheld_trades", self.rules.suppressed_trades)
            log.warning(
                "feed: exchange status %s %s%s",
                self.symbols.get(msg.instrument_id, "venue"),
                ExchangeStatusKind(msg.status).name,
                f" ({msg.reason})" if msg.reason else "",
            )
        self.md.publish(msg)
        self.h_pub.record(time.monotonic_ns() - t)
        w.metrics.inc_i(self.c_out)
        w.processed += 1
