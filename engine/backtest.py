"""The inline runtime: every engine component in one process, on a simulated clock (DESIGN §5).

``InlineRuntime`` wires the same state machines the multi-process runtime runs — StrategyHost,
RiskGate, ExecEngine (+ venue), Portfolio — with the same topology::

    source ──md──► venue (at ts_event)
       └──md (ts_recv = ts_event + feed latency)──► strategy, risk, portfolio
    strategy ──intents──► risk ──orders──► exec ──► venue
    exec ──events──► strategy, risk, portfolio          risk ──OrderRejected──► strategy

Messages between components travel through a time-ordered queue: each hop (strategy→risk,
risk→exec, exec→consumers) arrives ``hop_latency_ns`` after it was sent, ties kept in send
order. With a zero hop latency everything a tick causes happens at the tick's time but still in
topology order — the strategy decides before risk sees the orders, risk approves before exec
sends — so a backtest never lets a component act on something it could not yet have received.
The venue (e.g. ``engine.venues.sim.SimExchange``) models its own order latency; it is polled
whenever simulated time advances.

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

from engine.exec_engine import ExecEngine
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    Bar,
    CancelOrder,
    Control,
    Forecast,
    NewOrder,
    OrderPartiallyFilled,
    OrderRejected,
    ReplaceOrder,
    RiskEvent,
)
from engine.portfolio import Portfolio
from engine.risk import RiskGate, RiskLimits
from engine.strategies.base import Strategy
from engine.strategy_host import StrategyHost, StrategySpec
from engine.venues.base import Venue

# queue item kinds, in the order a tick flows through the topology
_MD, _INTENT, _ORDER, _EVENT, _REJECT, _CONTROL = range(6)

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
        drain_ns: int = 1_000_000_000,
        drain_step_ns: int = 1_000_000,
        controls: Iterable[Control] = (),
        initial_cash: float = 0.0,
        on_error: str = "raise",
    ) -> None:
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        if min(feed_latency_ns, hop_latency_ns, timer_interval_ns, drain_ns) < 0:
            raise ValueError("latencies, timer interval and drain time must be >= 0")
        if drain_step_ns <= 0:
            raise ValueError("drain_step_ns must be > 0")
        self.host = StrategyHost(strategies, self.instruments, on_error=on_error)
        self.risk = RiskGate(limits, self.instruments)
        self.exec = ExecEngine(venue, self.instruments)
        self.portfolio = Portfolio(self.instruments, initial_cash=initial_cash)
        self.venue = venue
        self.source: Iterator[object] = iter(source)
        if max_ticks is not None:
            self.source = itertools.islice(self.source, max_ticks)
        self.feed_latency_ns = int(feed_latency_ns)
        self.hop_latency_ns = int(hop_latency_ns)
        self.timer_interval_ns = int(timer_interval_ns)
        self.drain_ns = int(drain_ns)
        self.drain_step_ns = int(drain_step_ns)
        self._controls = sorted(controls, key=lambda c: c.ts)

        self._queue: list[tuple[int, int, int, object]] = []
        self._seq = itertools.count()
        self.now_ns = 0
        self._polled_at = -1
        # counters and records
        self.ticks = 0
        self.intents = 0
        self.orders_sent: list[NewOrder | CancelOrder | ReplaceOrder] = []
        self.new_orders = 0
        self.latencies_ns: list[int] = []
        self.risk_events: list[RiskEvent] = []
        self.risk_rejects = 0
        self.venue_rejects = 0
        self.fills = 0
        self.events = 0
        self.wall_ns_per_tick: list[int] = []
        self.first_ns: int | None = None
        self.done = False

    # --- the queue -----------------------------------------------------------------------------
    def _push(self, t: int, kind: int, msg: object) -> None:
        heapq.heappush(self._queue, (t, next(self._seq), kind, msg))

    def _push_all(self, t: int, kind: int, msgs: list[Any]) -> None:
        for m in msgs:
            self._push(t, kind, m)

    def _advance(self, t: int) -> None:
        """Move the clock to ``t`` and collect what the venue has made due by then."""
        if t < self.now_ns:
            t = self.now_ns  # a late source message is processed now, never in the past
        self.now_ns = t
        if t > self._polled_at:
            self._polled_at = t
            self._push_all(t + self.hop_latency_ns, _EVENT, self.exec.poll(t))

    def _risk_out(self, t: int, out: list[Any]) -> None:
        hop = t + self.hop_latency_ns
        for m in out:
            if isinstance(m, RiskEvent):
                self.risk_events.append(m)
            elif isinstance(m, OrderRejected):
                self.risk_rejects += 1
                self._push(hop, _REJECT, m)
            else:
                self._push(hop, _ORDER, m)

    def _handle(self, t: int, kind: int, msg: Any) -> None:
        hop = t + self.hop_latency_ns
        if kind == _MD:
            intents = self.host.on_market_data(msg, t)
            self.risk.on_market_data(msg)
            self.portfolio.on_market_data(msg)
            self.intents += len(intents)
            self._push_all(hop, _INTENT, intents)
        elif kind == _INTENT:
            self._risk_out(t, self.risk.on_intent(msg, t))
        elif kind == _ORDER:
            self.orders_sent.append(msg)
            if isinstance(msg, NewOrder):
                self.new_orders += 1
                self.latencies_ns.append(t - msg.ts_origin)
            self._push_all(hop, _EVENT, self.exec.on_order(msg, t))
        elif kind == _EVENT:
            self.events += 1
            if isinstance(msg, OrderPartiallyFilled):
                self.fills += 1
                self.portfolio.on_fill(msg)
            elif isinstance(msg, OrderRejected):
                self.venue_rejects += 1
            self.risk.on_exec_event(msg)
            intents = self.host.on_exec_event(msg, t)
            self.intents += len(intents)
            self._push_all(hop, _INTENT, intents)
        elif kind == _REJECT:
            intents = self.host.on_exec_event(msg, t)
            self.intents += len(intents)
            self._push_all(hop, _INTENT, intents)
        elif kind == _CONTROL:
            self._risk_out(t, self.risk.on_control(msg))

    def _drain_until(self, t_limit: int | None) -> None:
        """Process queued items due before ``t_limit`` (all of them when None), in time order."""
        q = self._queue
        same, last_t = 0, None
        while q and (t_limit is None or q[0][0] < t_limit):
            t, _, kind, msg = heapq.heappop(q)
            if t == last_t:
                same += 1
                if same > MAX_ITEMS_PER_INSTANT:
                    raise RuntimeError(f"livelock: over {MAX_ITEMS_PER_INSTANT} messages at t={t}")
            else:
                same, last_t = 0, t
            self._advance(t)
            self._handle(t, kind, msg)

    def _source_item(self, msg: object) -> None:
        """A source message reaches the venue now, and our components after the feed latency."""
        if isinstance(msg, Control):
            self._advance(msg.ts)
            self._push(self.now_ns, _CONTROL, msg)
            return
        self.ticks += 1
        self._advance(_msg_time(msg))
        if self.first_ns is None:
            self.first_ns = self.now_ns
        if not isinstance(msg, Forecast | Bar):
            self._push_all(
                self.now_ns + self.hop_latency_ns,
                _EVENT,
                self.exec.on_market_data(msg, self.now_ns),
            )
        t_recv = self.now_ns + self.feed_latency_ns
        if hasattr(msg, "ts_recv") and not isinstance(msg, Forecast):
            msg.ts_recv = t_recv  # type: ignore[attr-defined]
        self._push(t_recv, _MD, msg)

    # --- running -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the source to its end, stop the strategies, drain the venue; return ``summary()``."""
        if self.done:
            return self.summary()
        controls = self._controls
        ci = 0
        next_timer: int | None = None
        wall_prev: int | None = None
        for msg in self.source:
            t = _msg_time(msg)
            # everything that happens before this message: queued items, controls, timers
            while True:
                cands = []
                if self._queue:
                    cands.append(self._queue[0][0])
                if ci < len(controls):
                    cands.append(controls[ci].ts)
                if next_timer is not None:
                    cands.append(next_timer)
                t_next = min(cands) if cands else None
                if t_next is None or t_next > t:
                    break
                if ci < len(controls) and controls[ci].ts == t_next:
                    self._source_item(controls[ci])
                    ci += 1
                elif (
                    next_timer is not None
                    and next_timer == t_next
                    and (not self._queue or self._queue[0][0] >= t_next)
                ):
                    self._advance(next_timer)
                    intents = self.host.on_timer(next_timer)
                    self.intents += len(intents)
                    self._push_all(next_timer + self.hop_latency_ns, _INTENT, intents)
                    next_timer += self.timer_interval_ns
                else:
                    self._drain_until(t_next + 1)
            now_wall = time.perf_counter_ns()
            if wall_prev is not None:
                self.wall_ns_per_tick.append(now_wall - wall_prev)
            wall_prev = now_wall
            self._source_item(msg)
            if next_timer is None and self.timer_interval_ns > 0:
                next_timer = self.now_ns + self.timer_interval_ns
        self._drain_until(None)
        if wall_prev is not None:
            self.wall_ns_per_tick.append(time.perf_counter_ns() - wall_prev)
        for c in controls[ci:]:
            self._source_item(c)
            self._drain_until(None)
        self._finish()
        return self.summary()

    def _finish(self) -> None:
        """Stop the strategies (cancels), then let the venue answer for up to ``drain_ns``."""
        t = self.now_ns
        intents = self.host.stop(t)
        self.intents += len(intents)
        self._push_all(t + self.hop_latency_ns, _INTENT, intents)
        self._drain_until(None)
        end = t + self.drain_ns
        while self.now_ns < end and (self.exec.table.open_orders() or self._queue):
            self._advance(min(self.now_ns + self.drain_step_ns, end))
            self._drain_until(None)
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
                "net": p.net_pnl(),
                "equity": p.equity(),
            },
            "portfolio": p.summary(),
            "tick_to_order_ns": _stats(self.latencies_ns),
            "wall_ns_per_tick": _stats(self.wall_ns_per_tick),
            "risk_events": len(self.risk_events),
            "trading_state": int(self.risk.state),
            "anomalies": dict(self.exec.anomalies),
            "strategy_errors": list(self.host.errors),
            "sim_start_ns": self.first_ns,
            "sim_end_ns": self.now_ns,
            "orders_sent": list(self.orders_sent),
        }


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
