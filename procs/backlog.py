"""The strategy process's backlog guard: skip to the newest book instead of trading old ticks.

A strategy that was stopped, starved of CPU or restarted finds seconds of market data waiting in
its ``md`` ring. Handing every tick to the strategies would have them trade a market that is
gone: each intent built on a tick seconds old, replaces chasing prices that moved long ago (the
issue this answers: 59 orders approved over 1 s after their tick, an inventory cap overshot).
So when the next tick is more than ``[processes.strategy] max_backlog_ms`` old (now − its
``ts_recv``, both the host's monotonic clock), the guard drains the ring:

- every quote and book update is *absorbed* (``StrategyHost.absorb``): the shared L2 books and
  last quotes stay exact, no strategy is called;
- then only the newest quote, book update and trade of each instrument are dispatched, in ring
  order, so each strategy decides once, on the latest state;
- anything else (bars, venue notices) is dispatched as it comes: it is not state to catch up on.

Forecasts (``newest_forecasts``) the same way: when a batch holds one built on data (its
``ts_origin``) older than the limit, only each instrument's newest forecast is handed over.

Execution events are never skipped: the loop reads them before market data, and a fill always
moves the strategy's position. The skipped ticks are counted (``md_skipped``) and an episode
is logged once when it starts and once when the strategy has caught up — at most one episode
every ``LOG_EVERY_S`` (a starved box falls behind often: the next logged line says how many
episodes went unlogged).

Only the process loop has a backlog: the inline backtest hands every tick over on its simulated
clock and never uses this (its results stay deterministic).
"""

from __future__ import annotations

import logging
from typing import Any

from engine.messages import BookDelta, BookSnapshot, Forecast, MarkPrice, Quote, Trade

log = logging.getLogger("gekko.strategy")

#: most messages one catch-up drains before it returns to the loop (heartbeats, fills)
MAX_DRAIN = 16_384
#: at most one episode logged per this many seconds
LOG_EVERY_S = 5.0
_KIND = {Quote: 0, BookDelta: 1, BookSnapshot: 1, Trade: 2, MarkPrice: 3}


class BacklogGuard:
    """Detects a backlog in the market-data ring and skips it (see the module docstring)."""

    def __init__(self, max_backlog_ms: float) -> None:
        self.max_ns = int(max_backlog_ms * 1e6)
        self.skipped = 0  # ticks never handed to a strategy, over the run
        self.episodes = 0
        self._episode_skipped = 0
        self._episode_start = 0
        self._logged = False  # this episode is logged
        self._next_log = 0
        self._unlogged = 0  # episodes since the last logged one

    @property
    def behind_now(self) -> bool:
        """Inside an episode (behind, not caught up yet)."""
        return self._episode_start != 0

    def behind(self, msg: Any, now_ns: int) -> bool:
        """Is ``msg`` (the next tick to process) more than the limit older than ``now_ns``?"""
        ts = getattr(msg, "ts_recv", 0)
        return self.max_ns > 0 and ts > 0 and now_ns - ts > self.max_ns

    def check(self, batch: list[Any], md: Any, host: Any, now_ns: int) -> tuple[list[Any], bool]:
        """What to hand to the strategies from ``batch`` (just polled from ``md``) and whether
        it was absorbed already (then ``host.dispatch`` it, else ``host.on_market_data``)."""
        if not batch:
            return batch, False
        if not self.behind(batch[0], now_ns):
            if self._episode_start:
                self._end(now_ns)
            return batch, False
        return self.catch_up(batch, md, host, now_ns), True

    def catch_up(self, batch: list[Any], md: Any, host: Any, now_ns: int) -> list[Any]:
        """Absorb ``batch`` and what follows it in ``md`` (up to ``MAX_DRAIN`` messages, or
        until a tick within the limit), return the messages still to dispatch."""
        if not self._episode_start:
            self._start(batch[0], now_ns)
        msgs = list(batch)
        while len(msgs) < MAX_DRAIN and self.behind(msgs[-1], now_ns):
            more = md.poll_batch(256)
            if not more:
                break
            msgs.extend(more)
        newest: dict[tuple[int, int], int] = {}
        for i, m in enumerate(msgs):
            host.absorb(m)
            kind = _KIND.get(type(m))
            if kind is not None:
                newest[(m.instrument_id, kind)] = i
        keep = set(newest.values())
        out = [m for i, m in enumerate(msgs) if i in keep or type(m) not in _KIND]
        n = len(msgs) - len(out)
        self.skipped += n
        self._episode_skipped += n
        return out

    def newest_forecasts(self, batch: list[Any], now_ns: int) -> list[Any]:
        """``batch`` (from the forecasts ring), or only each instrument's newest forecast when
        the oldest is over the limit (anything else in it is kept: it is not a forecast)."""
        if not batch or self.max_ns <= 0:
            return batch
        origin = getattr(batch[0], "ts_origin", 0)
        if not (isinstance(origin, int) and origin > 0 and now_ns - origin > self.max_ns):
            return batch
        newest = {f.instrument_id: i for i, f in enumerate(batch) if type(f) is Forecast}
        keep = set(newest.values())
        out = [f for i, f in enumerate(batch) if i in keep or type(f) is not Forecast]
        self.skipped += len(batch) - len(out)
        return out

    def _start(self, msg: Any, now_ns: int) -> None:
        self.episodes += 1
        self._episode_start = now_ns
        self._episode_skipped = 0
        self._logged = now_ns >= self._next_log
        if not self._logged:
            self._unlogged += 1
            return
        self._next_log = now_ns + int(LOG_EVERY_S * 1e9)
        more = f" ({self._unlogged} more episodes since the last line)" if self._unlogged else ""
        self._unlogged = 0
        log.warning(
            "strategy: %.0f ms behind the market (limit [processes.strategy] max_backlog_ms = "
            "%g ms): skipping to the newest book of each instrument (fills are all applied)%s",
            (now_ns - msg.ts_recv) / 1e6,
            self.max_ns / 1e6,
            more,
        )

    def _end(self, now_ns: int) -> None:
        if self._logged:
            log.warning(
                "strategy: caught up with the market: %d ticks skipped in %.0f ms",
                self._episode_skipped,
                (now_ns - self._episode_start) / 1e6,
            )
        self._episode_start = 0
