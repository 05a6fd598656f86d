"""The micro model's forecasts in a backtest, where the infer process would publish them.

The infer process hands ``MicroForecaster`` a batch off the ``md`` ring; a coalesced model
(trained on LOBSTER, where the messages of one time are one event) steps the messages of one
time once, and its forecast goes out after the last of them. In a backtest the stream is one
sequence, so the messages of one time are that batch: their forecasts come right after the
last of them, before the first message of the next time, which is the earliest a live engine
reading a burst in one go could have them. An uncoalesced model (a Binance capture: every
message an event) is stepped on each message and its forecast follows it.

Forecasts are stamped as the live ones are (``ts_origin`` = ``ts_recv`` of the event's last
message; a replay sets ``ts_recv`` to ``ts_event``), so a strategy's forecast age and the
simulated exchange's latency see the backtest's clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from engine.messages import BookDelta, BookSnapshot, Quote, Trade
from models.lob_serving import MicroForecaster

#: what makes a micro event (anything else in the stream — a bar model's forecast, a control —
#: passes through without touching the grouping by time)
MARKET_TYPES = (Quote, Trade, BookDelta, BookSnapshot)


class MicroBacktest:
    """A ``MicroForecaster`` over a backtest's message stream: ``interleave(source)``."""

    def __init__(self, forecaster: MicroForecaster) -> None:
        self.fc = forecaster
        self.busy_ns = 0  # wall time in the model (a backtest's inference share)
        self.forecasts = 0

    @property
    def version(self) -> str:
        return self.fc.version

    def _step(self, msgs: list[Any], now: int) -> list[Any]:
        t0 = time.perf_counter_ns()
        out = self.fc.on_messages(msgs, now)
        self.busy_ns += time.perf_counter_ns() - t0
        self.forecasts += len(out)
        return out

    def interleave(self, source: Iterable[Any]) -> Iterator[Any]:
        """Every message of ``source``, with the micro forecasts placed as the module says."""
        market = MARKET_TYPES
        if not self.fc.coalesce:
            for msg in source:
                yield msg
                if isinstance(msg, market):
                    yield from self._step([msg], msg.ts_event)
            return
        group: list[Any] = []
        t = -1
        for msg in source:
            if isinstance(msg, market):
                if group and msg.ts_event != t:
                    yield from self._step(group, t)
                    group = []
                t = msg.ts_event
                group.append(msg)
            yield msg
        if group:
            yield from self._step(group, t)
