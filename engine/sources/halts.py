"""The simulated exchange's trading status: scheduled halts and a limit-up/limit-down breaker.

Why here, on the market-data side: a real exchange announces halts and its circuit breakers on
its market-data feed (a trading-status message per instrument, or for the whole market), and
its matching engine obeys the same decision. The simulated venue works the same way: the rules
below run over the market-data stream (``with_exchange_status``), insert ``ExchangeStatus``
messages into it at the moment they take effect, and everything downstream — the simulated
exchange (which then refuses orders and stops matching), exec (which holds orders), risk (which
refuses intents) — learns the status from that one stream. In ``gekko run`` the feed wraps its
source; ``gekko backtest`` wraps the same source, so both runtimes see the same halts at the
same market times.

Time is the market's clock (``ts_event``): a scheduled halt's ``at_ns`` counts from the first
message of the stream, so a backtest and a live run of the same config halt at the same tick.
Status changes that fall between two messages are published just before the later one, stamped
with their own due time.

The breaker, per instrument: a price (quote mid, or trade price) more than ``breaker_pct`` away
from the highest or lowest price of the last ``breaker_window_ns`` halts the instrument with
status CIRCUIT_BREAKER for ``breaker_halt_ns``; the reference window restarts at the reopening.
The window's max and min are kept in monotonic deques (O(1) amortised per price).

While an instrument (or the whole venue) is halted the market does not trade: its ``Trade``
prints are withheld (counted in ``suppressed_trades``); quotes and book updates still flow, as
in a real halt's quote-only period.

Composition with the whole-venue status (instrument id -1): consumers (``MarketGuard``, exec,
the simulated exchange) treat a venue OPEN as lifting the venue-wide halt, and some lift every
instrument with it — so an instrument's own OPEN is not published while the venue is halted, and
after a venue OPEN the instruments still halted on their own are announced again.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.messages import ExchangeStatus, ExchangeStatusKind, Quote, Trade

__all__ = ["VENUE_WIDE", "ExchangeRules", "ScheduledHalt", "with_exchange_status"]

#: instrument id of a status that applies to the whole venue
VENUE_WIDE = -1

_OPEN = int(ExchangeStatusKind.OPEN)
_HALTED = int(ExchangeStatusKind.HALTED)
_BREAKER = int(ExchangeStatusKind.CIRCUIT_BREAKER)


@dataclass(frozen=True, slots=True)
class ScheduledHalt:
    """A halt of one instrument (``VENUE_WIDE``: the whole venue) from ``at_ns`` after the first
    market event, for ``duration_ns``."""

    instrument_id: int
    at_ns: int
    duration_ns: int
    reason: str = "scheduled halt"

    def __post_init__(self) -> None:
        if self.at_ns < 0 or self.duration_ns <= 0:
            raise ValueError("a scheduled halt needs at_ns >= 0 and duration_ns > 0")


class _Band:
    """Highest and lowest price of a sliding time window (monotonic deques)."""

    __slots__ = ("hi", "lo")

    def __init__(self) -> None:
        self.hi: deque[tuple[int, int]] = deque()  # (ts, px), px decreasing
        self.lo: deque[tuple[int, int]] = deque()  # (ts, px), px increasing

    def clear(self) -> None:
        self.hi.clear()
        self.lo.clear()

    def push(self, ts: int, px: int, window_ns: int) -> tuple[int, int]:
        """Drop samples older than the window, return (max, min) BEFORE adding ``px``, add it."""
        hi, lo = self.hi, self.lo
        cut = ts - window_ns
        while hi and hi[0][0] < cut:
            hi.popleft()
        while lo and lo[0][0] < cut:
            lo.popleft()
        mx = hi[0][1] if hi else 0
        mn = lo[0][1] if lo else 0
        while hi and hi[-1][1] <= px:
            hi.pop()
        hi.append((ts, px))
        while lo and lo[-1][1] >= px:
            lo.pop()
        lo.append((ts, px))
        return mx, mn


class ExchangeRules:
    """Decides the venue's trading status from the market clock and prices (module docstring).

    ``process(msg)`` takes one market-data message and returns what the venue's feed publishes:
    status changes due by the message's time, the message itself (unless it is a print during a
    halt), then a breaker status the message caused. The returned list is reused: it is valid
    until the next call (the feed's per-message path allocates no list).
    """

    def __init__(
        self,
        instrument_ids: Iterable[int],
        halts: Iterable[ScheduledHalt] = (),
        *,
        breaker_pct: float = 0.0,
        breaker_window_ns: int = 1_000_000_000,
        breaker_halt_ns: int = 5_000_000_000,
    ) -> None:
        if not breaker_pct >= 0:
            raise ValueError("breaker_pct must be >= 0 (0 = off)")
        if breaker_pct > 0 and (breaker_window_ns <= 0 or breaker_halt_ns <= 0):
            raise ValueError("the breaker needs a window and a halt time > 0")
        self.ids = frozenset(int(i) for i in instrument_ids)
        self.halts = sorted(halts, key=lambda h: (h.at_ns, h.instrument_id))
        for h in self.halts:
            if h.instrument_id != VENUE_WIDE and h.instrument_id not in self.ids:
                raise ValueError(f"scheduled halt of unknown instrument {h.instrument_id}")
        self.breaker = float(breaker_pct) / 100.0
        self.window_ns = int(breaker_window_ns)
        self.halt_ns = int(breaker_halt_ns)
        self.t0: int | None = None
        #: (due_ns, seq, instrument_id, +1 start / -1 end of a scheduled halt, reason)
        self._timers: list[tuple[int, int, int, int, str]] = []
        self._seq = 0
        self._sched: dict[int, list[str]] = {i: [] for i in (*self.ids, VENUE_WIDE)}
        self._breaker_until: dict[int, int] = dict.fromkeys(self.ids, 0)
        self._breaker_reason: dict[int, str] = dict.fromkeys(self.ids, "")
        self._published: dict[int, int] = dict.fromkeys((*self.ids, VENUE_WIDE), _OPEN)
        self._bands = {i: _Band() for i in self.ids}
        #: counts: status messages published, breaker trips, prints withheld during halts
        self.statuses = 0
        self.trips = 0
        self.suppressed_trades = 0
        self._out: list[object] = []
        #: instruments halted now (their own status or the venue's): the per-message check
        self._stopped: set[int] = set()

    # --- what the venue says --------------------------------------------------------------------
    def status(self, instrument_id: int) -> tuple[int, str]:
        """An instrument's own status (``VENUE_WIDE``: the venue's) and its reason."""
        sched = self._sched.get(instrument_id)
        if sched:
            return _HALTED, sched[-1]
        if self._breaker_until.get(instrument_id, 0):
            return _BREAKER, self._breaker_reason[instrument_id]
        return _OPEN, ""

    def halted(self, instrument_id: int) -> bool:
        """Whether trading in the instrument is stopped (by its own status or the venue's)."""
        return bool(self._sched[VENUE_WIDE]) or self.status(instrument_id)[0] != _OPEN

    def _restate(self) -> None:
        """Recompute the halted set (after a status change: rare)."""
        self._stopped = {i for i in self.ids if self.halted(i)}

    # --- the stream -------------------------------------------------------------------------------
    def process(self, msg: object) -> list[object]:
        out = self._out
        out.clear()
        ts = getattr(msg, "ts_event", None)
        if ts is None:  # not market data with a venue time (e.g. a Bar): passes unchanged
            out.append(msg)
            return out
        if self.t0 is None:
            self._start(ts)
        timers = self._timers
        if timers and timers[0][0] <= ts:
            self._run_timers(ts, out)
        iid = getattr(msg, "instrument_id", None)
        if iid not in self.ids:
            out.append(msg)
            return out
        tp = type(msg)
        stopped = iid in self._stopped
        if tp is Trade and stopped:
            self.suppressed_trades += 1  # a halted market does not trade
            return out
        out.append(msg)
        if self.breaker > 0 and not stopped:
            px2 = self._price2(msg, tp)
            if px2 > 0:
                self._check_band(iid, px2, ts, out)
        return out

    def flush(self, until_ns: int) -> list[object]:
        """Status changes due by ``until_ns`` (the market clock), without a market message."""
        out: list[object] = []
        if self.t0 is not None:
            self._run_timers(until_ns, out)
        return out

    # --- internals --------------------------------------------------------------------------------
    def _start(self, ts: int) -> None:
        self.t0 = ts
        for h in self.halts:
            self._timer(ts + h.at_ns, h.instrument_id, 1, h.reason)
            self._timer(ts + h.at_ns + h.duration_ns, h.instrument_id, -1, h.reason)

    def _timer(self, due: int, iid: int, action: int, reason: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, iid, action, reason))

    def _run_timers(self, now: int, out: list[object]) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, iid, action, reason = heapq.heappop(timers)
            if action == 1:
                self._sched[iid].append(reason)
            elif action == -1:
                self._sched[iid].remove(reason)
            else:  # the breaker's halt is over
                if self._breaker_until.get(iid) != due:
                    continue  # superseded
                self._breaker_until[iid] = 0
                self._breaker_reason[iid] = ""
            if iid != VENUE_WIDE:
                self._bands[iid].clear()  # the reference restarts at the reopening
            self._restate()
            self._publish(iid, due, out)

    def _publish(self, iid: int, ts: int, out: list[object]) -> None:
        """Announce ``iid``'s status if it changed (see the module docstring on composition)."""
        status, reason = self.status(iid)
        if status == self._published[iid]:
            return
        if iid == VENUE_WIDE:
            self._emit(iid, status, reason, ts, out)
            if status == _OPEN:  # instruments still halted on their own are announced again
                for i in sorted(self.ids):
                    st, why = self.status(i)
                    if st != _OPEN:
                        self._emit(i, st, why, ts, out)
                for band in self._bands.values():
                    band.clear()
            return
        if status == _OPEN and self._sched[VENUE_WIDE]:
            self._published[iid] = _OPEN  # the venue's OPEN will lift it
            return
        self._emit(iid, status, reason, ts, out)

    def _emit(self, iid: int, status: int, reason: str, ts: int, out: list[object]) -> None:
        self._published[iid] = status
        self.statuses += 1
        out.append(ExchangeStatus(iid, status, reason, ts, ts))

    @staticmethod
    def _price2(msg: object, tp: type) -> int:
        """Twice the price the breaker watches (integer ticks): quote mid or trade price."""
        if tp is Quote:
            q: Quote = msg  # type: ignore[assignment]
            if q.bid_px <= 0 or q.ask_px <= 0 or q.bid_qty <= 0 or q.ask_qty <= 0:
                return 0
            return q.bid_px + q.ask_px
        if tp is Trade:
            return 2 * msg.px if msg.px > 0 else 0  # type: ignore[attr-defined]
        return 0

    def _check_band(self, iid: int, px2: int, ts: int, out: list[object]) -> None:
        mx, mn = self._bands[iid].push(ts, px2, self.window_ns)
        if mx <= 0:
            return
        down = (mx - px2) / mx
        up = (px2 - mn) / mn
        if down <= self.breaker and up <= self.breaker:
            return
        move = -down if down > up else up
        self.trips += 1
        until = ts + self.halt_ns
        self._breaker_until[iid] = until
        self._breaker_reason[iid] = (
            f"limit {'up' if move > 0 else 'down'}: {move:+.2%} within "
            f"{self.window_ns / 1e9:g}s (band {self.breaker:.2%}), halted {self.halt_ns / 1e9:g}s"
        )
        self._timer(until, iid, 0, "")
        self._bands[iid].clear()
        self._restate()
        self._publish(iid, ts, out)


def with_exchange_status(source: Iterable[object], rules: ExchangeRules | None) -> Iterator[object]:
    """``source`` with the venue's status messages inserted where they take effect (and prints
    during a halt withheld); ``rules`` None: ``source`` unchanged."""
    if rules is None:
        yield from source
        return
    process = rules.process
    timers, breaker = rules._timers, rules.breaker > 0
    for msg in source:
        # the common case, inline: no status change due, nothing halted, no breaker to feed
        if not (breaker or rules._stopped) and rules.t0 is not None:
            ts = getattr(msg, "ts_event", None)
            if ts is not None and not (timers and timers[0][0] <= ts):
                yield msg
                continue
        yield from process(msg)
