"""The inline runtime: every engine component in one process, on a simulated clock (DESIGN §5).

``InlineRuntime`` runs the same stages the worker processes run (``engine.stages``: strategy,
risk, exec + portfolio), wired by the same topology (``engine.topology``): whatever a stage
publishes on a ring reaches the handlers of that ring's readers::

    source ──► exec's venue (md, at ts_event: the venue is where the market is)
       └──md (ts_recv = ts_event + feed latency)──► strategy; the tob table ──► risk
    strategy ──intents──► risk ──orders──► exec ──events──► strategy, risk
                                risk ──risk (refusals, state)──► strategy

Messages between stages travel through a time-ordered queue: each hop (strategy→risk,
risk→exec, exec→readers) arrives ``hop_latency_ns`` after it was sent, ties kept in send
order. With a zero hop latency everything a tick causes happens at the tick's time but still in
topology order — the strategy decides before risk sees the orders, risk approves before exec
sends — so a backtest never lets a component act on something it could not yet have received.
The venue (e.g. ``engine.venues.sim.SimExchange``) models its own order latency. Its events are
collected whenever simulated time advances, at the venue's own ``next_event_ns()`` if it has one
(exact delivery times), and every ``poll_interval_ns`` while orders are open if that is set;
without either, an event due between two ticks is handled at the next tick, which delays the
strategy's reaction to fills (and shows in the tick-to-order latency of orders sent in reaction).

What it measures:
- simulated tick-to-order latency of every new order: the time it is handed to the venue minus
  its ``ts_origin`` (the ``ts_recv`` of the tick that caused it) — ``2 × hop_latency_ns`` for a
  market-data-driven order;
- wall-clock cost per tick: real time from taking one market-data message to taking the next,
  i.e. the whole cascade it caused (reported apart: it is the one non-deterministic output).

Every other output depends only on the inputs, so the same data and seeds give the same orders.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from engine.analytics import YEAR_NS, summarize
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    Bar,
    CancelOrder,
    Control,
    ExchangeStatus,
    Forecast,
    NewOrder,
    OrderPartiallyFilled,
    ReplaceOrder,
    RiskEvent,
)
from engine.portfolio import Portfolio
from engine.risk import RiskGate, RiskLimits
from engine.stages import Handler
from engine.stages.exec import ExecStage
from engine.stages.risk import RiskStage
from engine.stages.strategy import REFUSALS, StrategyStage
from engine.strategies.base import Strategy
from engine.strategy_host import StrategyHost, StrategySpec
from engine.topology import TABLES, TOPOLOGY
from engine.venues.base import Venue

#: items processed at one simulated instant before the runtime calls it a livelock (a strategy
#: answering every reject with a new order at zero latency would otherwise spin forever)
MAX_ITEMS_PER_INSTANT = 200_000


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "count": int(a.size),
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def _counts(events: list[Any]) -> dict[str, int]:
    """Events by type name."""
    out: dict[str, int] = {}
    for ev in events:
        name = type(ev).__name__
        out[name] = out.get(name, 0) + 1
    return out


def _msg_time(msg: object) -> int:
    """When a source message happens at the venue."""
    if isinstance(msg, Control):
        return msg.ts
    if isinstance(msg, Bar):
        return msg.end_ns
    if isinstance(msg, Forecast):
        return msg.ts_recv
    return msg.ts_event  # type: ignore[attr-defined]


class InlineRuntime:
    """Runs strategies against a venue and a market-data source on a simulated clock.

    ``source`` yields market data (Quote / Trade / BookDelta / BookSnapshot / Bar / Forecast) in
    time order and may interleave ``Control`` messages (kill switch, resume) at their ``ts``;
    ``controls`` adds more. ``max_ticks`` bounds an endless source (e.g. a SyntheticMarket).
    """

    def __init__(
        self,
        instruments: InstrumentTable | Iterable[Instrument],
        strategies: Iterable[StrategySpec | Mapping[str, Any] | str | type[Strategy]],
        limits: RiskLimits,
        venue: Venue,
        source: Iterable[object],
        *,
        max_ticks: int | None = None,
        feed_latency_ns: int = 0,
        hop_latency_ns: int = 0,
        timer_interval_ns: int = 0,
        poll_interval_ns: int = 0,
        drain_ns: int = 1_000_000_000,
        drain_step_ns: int = 100_000,
        controls: Iterable[Control] = (),
        initial_cash: float | Mapping[str, float] = 0.0,
        on_error: str = "raise",
        lot_method: str = "fifo",
        benchmark: int | str | None = None,
        fx_rates: Mapping[str, float] | None = None,
        base_currency: str = "USD",
        wash_sale_days: float = 30.0,
        equity_interval_ns: int = 1_000_000_000,
        risk_free: float = 0.0,
        var_level: float = 0.95,
        exec_policy: ExecPolicy | None = None,
        engine: str = "fast",
        overlay: Any = None,
        accounts: Mapping[str, Any] | None = None,
        risk_returns: bool = False,
    ) -> None:
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        if min(feed_latency_ns, hop_latency_ns, timer_interval_ns, poll_interval_ns, drain_ns) < 0:
            raise ValueError("latencies, timer/poll intervals and drain time must be >= 0")
        if drain_step_ns <= 0:
            raise ValueError("drain_step_ns must be > 0")
        self.host = StrategyHost(strategies, self.instruments, on_error=on_error)
        self.host.set_risk_limits(limits)  # sizing capped by the risk limits, with risk's sigma
        hedged = [  # instruments of hedging venues: risk keeps their legs apart
            i.instrument_id
            for i in self.instruments
            if accounts and (a := accounts.get(i.venue)) is not None and a.hedging
        ]
        self.risk = RiskGate(limits, self.instruments, hedging=hedged)
        self.exec = ExecEngine(
            venue, self.instruments, exec_policy, max_order_age_ns=limits.max_intent_age_ns
        )
        self.exec.table.hedged = set(hedged)  # exec's table and the contexts keep both legs
        self.host.set_hedged(hedged)
        if isinstance(benchmark, str):
            benchmark = self.instruments.by_symbol(benchmark).instrument_id
        self.portfolio = Portfolio(
            self.instruments,
            initial_cash=initial_cash,
            lot_method=lot_method,
            fx_rates=fx_rates,
            base_currency=base_currency,
            benchmark=benchmark,
            wash_sale_days=wash_sale_days,
            accounts=accounts,  # each venue's account (engine.accounts.Account) by venue name
        )  # the portfolio lives with exec (engine.stages.exec), as in the exec process
        if equity_interval_ns <= 0:
            raise ValueError("equity_interval_ns must be > 0")
        # the equity curve is sampled every equity_interval_ns of simulated time (analytics)
        self.equity_interval_ns = int(equity_interval_ns)
        self._next_sample: int | None = None
        self.risk_free = float(risk_free)
        self.var_level = float(var_level)
        self.venue = venue
        self.source: Iterator[object] = iter(source)
        if max_ticks is not None:
            self.source = itertools.islice(self.source, max_ticks)
        self.feed_latency_ns = int(feed_latency_ns)
        self.hop_latency_ns = int(hop_latency_ns)
        self.timer_interval_ns = int(timer_interval_ns)
        self.drain_ns = int(drain_ns)
        self.drain_step_ns = int(drain_step_ns)
        self.poll_interval_ns = int(poll_interval_ns)
        self._controls = sorted(controls, key=lambda c: c.ts)
        self._ci = 0  # next control to apply
        self._build_stages(limits)
        if risk_returns:  # VaR, correlation, a sigma-scaled band: as the risk process samples
            self.risk_stage.sample_returns(
                limits.returns_interval_ns, limits.returns_window, self._top_mids
            )
        self._queue: list[tuple[int, int, str, object]] = []
        self._seq = itertools.count()
        self.now_ns = 0
        self._polled_at = -1
        self._init_records()
        self._choose_engine(engine, source, max_ticks, overlay)

    def _choose_engine(
        self, engine: str, source: object, max_ticks: int | None, overlay: Any
    ) -> None:
        """``engine = "fast"`` replays a columnar source on ``engine.replay_fast`` (same orders
        and fills, far less work per row) when it can; ``"exact"``, or a case it does not take
        (``replay_note`` says which), runs every message through the machinery. ``overlay``:
        forecasts the fast path merges into the rows (``procs.infer.ForecastOverlay``)."""
        if engine not in ("fast", "exact"):
            raise ValueError(f"engine must be 'fast' or 'exact', got {engine!r}")
        self.replay_engine = "exact"
        self.replay_note = ""
        self._fast: Any = None
        if engine == "exact":
            self.replay_note = "engine = exact"
            return
        from engine.replay_fast import FastReplay, fast_unsupported

        why = fast_unsupported(self, source)
        if why:
            self.replay_note = why
            return
        self._fast = FastReplay(self, source, max_ticks, overlay)
        self.replay_engine = "fast"

    def _build_stages(self, limits: RiskLimits) -> None:
        """The stages around the components, the routes between them, their timers."""
        self.strategy_stage = StrategyStage(self.host, self, self.timer_interval_ns)
        self.risk_stage = RiskStage(self.risk, self, refresh_ns=limits.refresh_interval_ns)
        self.exec_stage = ExecStage(self.exec, self.portfolio, self)
        self._routes = self._wire((self.strategy_stage, self.risk_stage, self.exec_stage))
        # the stages' timers: [next due (None until the first tick), interval, fn]
        self._timers: list[list[Any]] = [
            [None, e.interval_ns, e.fn] for e in self.strategy_stage.timers
        ]
        # a venue may say when it next has something due (exact event delivery); otherwise it is
        # polled when time advances, and every poll_interval_ns while orders are open
        # (exec's next_event_ns covers the venue's, retries, emulated expiries, algo slices)
        self._venue_next = self.exec.next_event_ns

    def _top_mids(self) -> np.ndarray:
        """Each instrument's mid as the feed's top-of-book table shows it, for risk's returns
        window: the book's (the gate reads no price from book deltas here, so on a delta-only
        feed such as a LOBSTER day its own mid stays at the last quote or snapshot), else the
        gate's."""
        m = self.risk.mids()
        for iid, book in self.host.books.items():
            if 0 <= iid < m.shape[0]:
                x = book.mid()
                if x == x:  # both sides in the book
                    m[iid] = x
        return m

    def _init_records(self) -> None:
        """What the run counts and keeps for ``summary()``."""
        self.ticks = 0
        self.intents = 0
        self.orders_sent: list[NewOrder | CancelOrder | ReplaceOrder] = []
        self.new_orders = 0
        self.latencies_ns: list[int] = []
        self.risk_events: list[RiskEvent] = []
        self.risk_rejects = 0
        self.venue_rejects = 0
        self.fills = 0
        self.fill_log: list[OrderPartiallyFilled] = []  # every fill, for the report's charts
        #: what the market did to our positions and cash (funding, financing, settlements,
        #: liquidations, margin): engine.venues.sim_accounts
        self.account_log: list[Any] = []
        self.events = 0
        self.wall_ns_per_tick: list[int] = []
        self.first_ns: int | None = None
        self.done = False

    # --- the wiring ----------------------------------------------------------------------------
    def _wire(self, stages: tuple[Any, ...]) -> dict[str, list[Handler]]:
        """Each ring's readers' handlers, in topology order. Two differences from the rings of
        the worker processes, both about where the simulated venue is: exec's venue sees the
        market at the source's time (``_source_item``), not after the feed latency; and the
        readers of the feed's top-of-book table (risk) get each market-data message with the
        strategy, where the processes read the table when they need a price."""
        by_name = {s.name: s for s in stages}
        routes: dict[str, list[Handler]] = {}
        for spec in TOPOLOGY:
            routes[spec.name] = [
                by_name[r].handlers[spec.name]
                for r, _ in spec.consumers
                if r in by_name
                and spec.name in by_name[r].handlers
                and not (spec.name == "md" and r == "exec")
            ]
        for table, writer, table_readers in TABLES:
            if writer == "feed":
                routes["md"] += [
                    by_name[r].handlers[table]
                    for r in table_readers
                    if r in by_name and table in by_name[r].handlers
                ]
        return routes

    # --- the queue: the outbox of every stage ----------------------------------------------------
    def _push(self, t: int, ring: str, msg: object) -> None:
        heapq.heappush(self._queue, (t, next(self._seq), ring, msg))

    def publish(self, ring: str, msg: Any) -> None:
        """A stage's output: it reaches the ring's readers one hop later."""
        heapq.heappush(self._queue, (self.now_ns + self.hop_latency_ns, next(self._seq), ring, msg))
        if ring == "intents":
            self.intents += 1
        elif ring == "risk":
            if isinstance(msg, RiskEvent):
                self.risk_events.append(msg)
            elif isinstance(msg, REFUSALS):
                self.risk_rejects += 1

    def publish_batch(self, ring: str, msgs: Any) -> None:
        for m in msgs:
            self.publish(ring, m)

    def _advance(self, t: int) -> None:
        """Move the clock to ``t`` and collect what the venue has made due by then."""
        if t < self.now_ns:
            t = self.now_ns  # a late source message is processed now, never in the past
        self.now_ns = t
        if t > self._polled_at:
            self._polled_at = t
            self.exec_stage.poll(t)

    def _handle(self, t: int, ring: str, msg: Any) -> None:
        """A message reaches the readers of its ring (what the runtime records, around it)."""
        if ring == "orders":
            self.orders_sent.append(msg)
            if isinstance(msg, NewOrder):
                self.new_orders += 1
                self.latencies_ns.append(t - msg.ts_origin)
        elif ring == "events" and type(msg) is not ExchangeStatus:
            self.events += 1
            if isinstance(msg, OrderPartiallyFilled):
                self.fills += 1
                self.fill_log.append(msg)
            elif isinstance(msg, REFUSALS):
                self.venue_rejects += 1
            elif isinstance(msg, ACCOUNT_EVENT_TYPES):
                self.account_log.append(msg)
        for h in self._routes[ring]:
            h(msg, t)
        if ring == "md" and (self._next_sample is None or t >= self._next_sample):
            self.portfolio.sample(t)  # the equity curve (analytics)
            self._next_sample = t + self.equity_interval_ns

    def _source_item(self, msg: object) -> None:
        """A source message reaches the venue now, and our components after the feed latency."""
        if isinstance(msg, Control):
            self._advance(msg.ts)
            self._push(self.now_ns, "control", msg)
            return
        self.ticks += 1
        self._advance(_msg_time(msg))
        if self.first_ns is None:
            self.first_ns = self.now_ns
            self.strategy_stage.start(self.now_ns)  # on_start's intents go out, as in a process
        if not isinstance(msg, Forecast):  # a forecast is ours, not the market's
            self.exec_stage.on_md(msg, self.now_ns)
        t_recv = self.now_ns + self.feed_latency_ns
        if hasattr(msg, "ts_recv") and not isinstance(msg, Forecast):
            msg.ts_recv = t_recv  # type: ignore[attr-defined]
        self._push(t_recv, "md", msg)

    # --- scheduling ----------------------------------------------------------------------------
    def _timer_due(self) -> int | None:
        due = [tm[0] for tm in self._timers if tm[0] is not None]
        return min(due) if due else None

    def _fire_timers(self, t: int) -> None:
        for tm in self._timers:
            if tm[0] is not None and tm[0] <= t:
                tm[0] = t + tm[1]
                tm[2](t)

    def _next_poll(self, interval: int) -> int | None:
        """When the venue should next be polled: its own hint, or ``interval`` after the last
        poll while orders are open (there is nothing to hear about otherwise)."""
        best: int | None = None
        if self._venue_next is not None:
            t = self._venue_next()
            if t is not None and t > self._polled_at:
                best = int(t)
        if interval and self.exec.table.open_count:
            t = max(self._polled_at, self.now_ns) + interval
            best = t if best is None else min(best, t)
        return best

    def _step(self, t_limit: int | None, *, timers: bool, poll_interval: int) -> None:
        """Process everything scheduled at or before ``t_limit`` (None: until nothing is left),
        in time order; at equal times: controls, queued messages, timers, venue polls."""
        q = self._queue
        controls = self._controls
        same, last_t = 0, -1
        while True:
            t_q = q[0][0] if q else None
            t_c = controls[self._ci].ts if self._ci < len(controls) else None
            t_tm = self._timer_due() if timers else None
            t_p = self._next_poll(poll_interval)
            cands = [t for t in (t_c, t_q, t_tm, t_p) if t is not None]
            if not cands:
                return
            t_next = min(cands)
            if t_limit is not None and t_next > t_limit:
                return
            if t_next == last_t:
                same += 1
                if same > MAX_ITEMS_PER_INSTANT:
                    raise RuntimeError(
                        f"livelock: over {MAX_ITEMS_PER_INSTANT} messages at t={t_next}"
                    )
            else:
                same, last_t = 0, t_next
            if t_next == t_c:
                self._ci += 1
                self._source_item(controls[self._ci - 1])
            elif t_next == t_q:
                t, _, ring, msg = heapq.heappop(q)
                self._advance(t)
                self._handle(t, ring, msg)
            elif t_next == t_tm:
                self._advance(t_next)
                self._fire_timers(t_next)
            else:
                self._advance(t_next)

    # --- running -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the source to its end, stop the strategies, drain the venue; return ``summary()``."""
        if self.done:
            return self.summary()
        if self._fast is not None:
            self._fast.run()
            self._step(None, timers=False, poll_interval=0)  # as below
        else:
            self._run_exact()
        self._finish()
        return self.summary()

    def _run_exact(self) -> None:
        """Every source message through the machinery, one by one."""
        wall_prev: int | None = None
        for msg in self.source:
            # everything that happens up to this message: queued items, controls, timers, polls
            self._step(_msg_time(msg), timers=True, poll_interval=self.poll_interval_ns)
            now_wall = time.perf_counter_ns()
            if wall_prev is not None:
                self.wall_ns_per_tick.append(now_wall - wall_prev)
            wall_prev = now_wall
            self._source_item(msg)
            for tm in self._timers:
                if tm[0] is None:
                    tm[0] = self.now_ns + tm[1]
        # what the last tick caused, and controls scheduled after the data ends
        self._step(None, timers=False, poll_interval=0)
        if wall_prev is not None:
            self.wall_ns_per_tick.append(time.perf_counter_ns() - wall_prev)

    def _finish(self) -> None:
        """Stop the strategies (cancels), then let the venue answer for up to ``drain_ns``."""
        t = self.now_ns
        self.strategy_stage.stop(t)
        self._step(
            t + self.drain_ns,
            timers=False,
            poll_interval=self.poll_interval_ns or self.drain_step_ns,
        )
        self.portfolio.sample(self.now_ns)
        self.done = True

    # --- results -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, positions, P&L, latency and the orders sent (plain types + message structs)."""
        p = self.portfolio
        venue_positions: dict[int, int] | None
        try:
            venue_positions = dict(self.venue.positions())
        except Exception:  # a venue that cannot report positions
            venue_positions = None
        return {
            "ticks": self.ticks,
            "intents": self.intents,
            "orders": self.new_orders,
            "new_orders": self.new_orders,  # alias: the name the CLI report uses
            "cancels": sum(isinstance(o, CancelOrder) for o in self.orders_sent),
            "replaces": sum(isinstance(o, ReplaceOrder) for o in self.orders_sent),
            "rejects": self.risk_rejects + self.venue_rejects,
            "risk_rejects": self.risk_rejects,
            "venue_rejects": self.venue_rejects,
            "fills": self.fills,
            "positions": {iid: p.position(iid) for iid in self.instruments.ids},
            "risk_positions": {iid: int(self.risk.position[iid]) for iid in self.instruments.ids},
            "venue_positions": venue_positions,
            "open_orders": len(self.exec.table.open_orders()),
            "pnl": {
                "realized": p.realized(),
                "unrealized": p.unrealized(),
                "fees": p.fees(),
                "funding": p.funding(),  # account events (engine.venues.sim_accounts)
                "financing": p.financing(),
                "commission": p.commission(),
                "net": p.net_pnl(),
                "equity": p.equity(),
            },
            "portfolio": p.summary(),
            "pnl_by_strategy": p.strategy_pnl(),
            "analytics": self.analytics(),
            "tick_to_order_ns": _stats(self.latencies_ns),
            "wall_ns_per_tick": _stats(self.wall_ns_per_tick),
            "risk_events": len(self.risk_events),
            "account_events": _counts(self.account_log),
            "trading_state": int(self.risk.state),
            "anomalies": dict(self.exec.anomalies),
            "late_request_rejects": self.exec.table.late_request_rejects,
            "strategy_errors": list(self.host.errors),
            "sim_start_ns": self.first_ns,
            "sim_end_ns": self.now_ns,
            "orders_sent": list(self.orders_sent),
            "replay_engine": self.replay_engine,
            "replay_note": self.replay_note,
        }

    def analytics(self) -> dict[str, Any]:
        """Sharpe, Sortino, drawdown, Calmar, VaR/ES, beta and excess return vs the benchmark,
        from the equity curve sampled every ``equity_interval_ns`` (``engine.analytics``)."""
        ts, eq, bench = self.portfolio.equity_curve()
        return summarize(
            ts,
            eq,
            bench if self.portfolio.benchmark is not None else None,
            risk_free=self.risk_free,
            var_level=self.var_level,
            periods_per_year=YEAR_NS / self.equity_interval_ns,
        )


def run_backtest(
    instruments: InstrumentTable | Iterable[Instrument],
    strategies: Iterable[StrategySpec | Mapping[str, Any] | str | type[Strategy]],
    limits: RiskLimits,
    venue: Venue,
    source: Iterable[object],
    **kwargs: Any,
) -> dict[str, Any]:
    """One-call form of ``InlineRuntime(...).run()``."""
    return InlineRuntime(instruments, strategies, limits, venue, source, **kwargs).run()
