"""POV (percentage of volume): trade a fixed share of what the market trades.

Parameters (``algo_params``):

- ``rate`` in ``(0, 1)`` (required): our share of the total volume, ours included. The market's
  prints (``Trade`` messages) do not contain our own fills on the simulated exchange, so after
  ``V`` lots printed by others the target is ``floor(rate / (1 - rate) * V)``: then ours / (ours
  + theirs) = rate;
- ``min_child`` (default 1 lot): the shortfall is sent once it reaches this size (fewer, larger
  children), except for the parent's last lots;
- ``max_child`` (default: no cap): the largest child, so one big print does not make us take a
  big slice of the book at once;
- ``start_ns`` (default: now): volume before it does not count; ``duration_s`` / ``end_ns``
  (optional): the parent ends then, like a TWAP window.

Children are marketable (IOC at the parent's limit, or market IOC); what did not fill is caught
up at the next print.

Amends: the target is ``min(qty, rate share)`` of the amended quantity; a cut cancels what no
longer fits, a larger parent resumes at the rate at once if the old quantity capped it.
"""

from __future__ import annotations

import math
from typing import Any

from engine.algos.base import NS_PER_S, AlgoParamError, Child, Parent, ScheduledAlgo, num
from engine.messages import AlgoKind, Trade

_KEYS = frozenset({"rate", "min_child", "max_child", "start_ns", "end_ns", "duration_s"})


class PovAlgo(ScheduledAlgo):
    kind = AlgoKind.POV
    name = "pov"
    keys = _KEYS

    def __init__(self, engine: Any, parent: Parent, now_ns: int) -> None:
        super().__init__(engine, parent, now_ns)
        params = parent.order.algo_params
        self.rate = num(params, "rate", self.name, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        self.min_child = int(num(params, "min_child", self.name, 1.0, lo=1))
        self.max_child = int(num(params, "max_child", self.name, float(parent.qty), lo=1))
        self.start_ns = max(now_ns, int(num(params, "start_ns", self.name, float(now_ns), lo=0)))
        if "end_ns" in params and "duration_s" in params:
            raise AlgoParamError(f"{self.name}: give end_ns or duration_s, not both")
        self.end_ns: int | None = None
        if "end_ns" in params:
            self.end_ns = int(num(params, "end_ns", self.name, lo=0))
        elif "duration_s" in params:
            dur = num(params, "duration_s", self.name, lo=0.0, lo_open=True)
            self.end_ns = self.start_ns + int(dur * NS_PER_S)
        if self.end_ns is not None and self.end_ns <= self.start_ns:
            raise AlgoParamError(f"{self.name}: the window ends before it starts")
        #: lots the market printed since start (others' volume)
        self.market_volume = 0
        self.wakeup_ns = self.end_ns

    def target(self, now_ns: int) -> int:
        return int(self.rate / (1.0 - self.rate) * self.market_volume + 1e-9)

    def on_market_data(self, msg: object, now_ns: int) -> None:
        # the window is on exec's clock (now_ns), not the venue's ts_event: live, they differ
        if type(msg) is not Trade or now_ns < self.start_ns or msg.qty <= 0:  # type: ignore[attr-defined]
            return
        if self.end_ns is not None and now_ns >= self.end_ns:
            return
        self.market_volume += msg.qty  # type: ignore[attr-defined]
        self._step(now_ns)

    def on_resume(self, now_ns: int) -> None:
        # the market's volume while exec was down is unknown (and the count before it died with
        # it): start counting again as if what is filled was exactly our share, so the parent
        # resumes at its rate from now on instead of catching up on a guess
        filled = self.parent.filled
        self.market_volume = math.ceil(filled * (1.0 - self.rate) / self.rate - 1e-9)

    def on_amend(self, now_ns: int) -> None:
        self._step(now_ns)  # a larger parent may lift the cap on what the rate wants now

    def on_child_closed(self, child: Child, now_ns: int) -> None:
        # a child capped by max_child filled: send the rest of the shortfall now. One that
        # closed unfilled (the book had nothing within the limit) waits for the next print:
        # re-sending at once would loop IOC after IOC against the same book (with a venue
        # that answers synchronously, without end)
        if child.outcome == "filled":
            self._step(now_ns)

    def _step(self, now_ns: int) -> None:
        p = self.parent
        t = min(p.qty, self.target(now_ns))
        p.target_qty = t
        self.engine._touch(p)
        if p.open_children:
            return  # one child at a time: what it fills decides the next one
        want = min(t - p.filled, self.max_child)
        if want >= self.min_child or (want > 0 and t == p.qty):
            order_type, tif, px = self.aggressive_style()
            self.send(want, now_ns, order_type=order_type, tif=tif, px=px)

    def on_time(self, now_ns: int) -> None:
        if self.end_ns is not None and now_ns >= self.end_ns:
            p = self.parent
            self.wakeup_ns = None
            self.finish(
                f"{self.name}: window ended with {p.qty - p.filled} of {p.qty} lots unfilled",
                now_ns,
            )
