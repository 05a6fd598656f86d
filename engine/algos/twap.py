"""TWAP: the parent's quantity in equal slices over a time window.

Parameters (``algo_params``):

- ``duration_s`` or ``end_ns`` (required), ``start_ns`` (default: now);
- ``slices`` (default 10): slice ``k`` (0-based) is due at ``start + k * (end - start) / slices``
  and brings the target to ``floor(qty * (k + 1) / slices)``;
- ``randomize`` in ``[0, 1)`` (default 0): each slice time moves by up to ``± randomize / 2`` of
  an interval (uniform, seeded by ``seed``, default the parent's id), so the parent does not
  print on a visible clock; the order of slices and the targets do not change;
- ``min_child`` (default 1 lot): a smaller shortfall waits for the next slice (except the last);
- ``passive`` (0 or 1, default 0): children rest at the near touch (capped by the parent's limit)
  instead of taking; each slice cancels the children still resting and re-posts their unfilled
  quantity with its own at the touch of then; at the end, what is left is taken (IOC within the
  limit) before the parent ends.

Each slice sends a child for ``target - filled - open`` — marketable (IOC at the parent's limit,
or market IOC) by default, resting at the touch when ``passive`` — so what an earlier slice could
not fill is caught up by the next one. At ``end`` the parent ends; what is still unfilled is
canceled (``OrderCanceled``, the reason says how much).

Amends (``AlgoEngine.amend``): the slices already sent stand; what the schedule wanted by then
(``base``, at most the new quantity) is kept, and the rest of the new quantity is spread over the
slices still to come in the same proportions as before (TWAP: equally), so a larger parent does
not jump ahead of the clock and a smaller one does not stall. An amend after the last slice sends
the difference at once (there is no slice left to carry it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.algos.base import AlgoParamError, Child, Parent, ScheduledAlgo, num, window
from engine.messages import AlgoKind

_KEYS = frozenset(
    {"start_ns", "end_ns", "duration_s", "slices", "randomize", "seed", "min_child", "passive"}
)


def slice_count(params: dict[str, float], name: str, default: int) -> int:
    n = num(params, "slices", name, float(default), lo=1, hi=100_000)
    if n != int(n):
        raise AlgoParamError(f"{name}: slices must be a whole number, got {n}")
    return int(n)


class TwapAlgo(ScheduledAlgo):
    kind = AlgoKind.TWAP
    name = "twap"
    keys = _KEYS
    default_slices = 10

    def __init__(self, engine: Any, parent: Parent, now_ns: int) -> None:
        super().__init__(engine, parent, now_ns)
        params = parent.order.algo_params
        self.start_ns, self.end_ns = window(params, now_ns, self.name)
        self.slices = slice_count(params, self.name, self.default_slices)
        randomize = num(params, "randomize", self.name, 0.0, lo=0.0, hi=1.0, hi_open=True)
        self.min_child = int(num(params, "min_child", self.name, 1.0, lo=1))
        passive = num(params, "passive", self.name, 0.0, lo=0.0, hi=1.0)
        if passive not in (0.0, 1.0):
            raise AlgoParamError(f"{self.name}: passive must be 0 or 1, got {passive}")
        self.passive = passive == 1.0
        self.sweeping = False  # passive: the window is over, open children are being canceled
        self.swept = False  # ... and the last aggressive child has been sent
        seed = int(num(params, "seed", self.name, float(parent.client_order_id & 0xFFFFFFFF), lo=0))
        span = self.end_ns - self.start_ns
        interval = span / self.slices
        jitter = np.zeros(self.slices)
        if randomize > 0:
            jitter = (np.random.default_rng(seed).random(self.slices) - 0.5) * randomize * interval
        #: when each slice is due (ns); strictly inside the window, in order
        self.times: list[int] = [
            min(
                self.end_ns - 1, max(self.start_ns, self.start_ns + round(k * interval + jitter[k]))
            )
            for k in range(self.slices)
        ]
        self.next_slice = 0
        self.wakeup_ns = self.times[0]
        #: the last amend's rebase: slices from ``rebase_slice`` on spread ``qty - rebase_base``
        self.rebase_slice = -1
        self.rebase_base = 0

    def share(self, k: int) -> float:
        """The schedule's cumulative share of the parent once slice ``k`` has been sent."""
        return (k + 1) / self.slices

    def slice_target(self, k: int) -> int:
        """Cumulative quantity wanted once slice ``k`` has been sent."""
        q = self.parent.qty
        k0 = self.rebase_slice
        if k0 < 0:
            return self.base_target(k)
        if k < k0:
            return min(q, self.rebase_base)
        s0 = self.share(k0 - 1) if k0 > 0 else 0.0
        span = 1.0 - s0
        if k >= self.slices - 1 or span <= 0:
            return q
        part = (self.share(k) - s0) / span
        return min(q, self.rebase_base + int((q - self.rebase_base) * part + 1e-9))

    def base_target(self, k: int) -> int:
        """``slice_target`` of a parent never amended."""
        return self.parent.qty * (k + 1) // self.slices

    # amends ------------------------------------------------------------------------------------
    def rebase_for(self, new_qty: int, now_ns: int) -> tuple[int, int]:
        k0 = self.next_slice
        if k0 >= self.slices:
            return k0, new_qty  # no slice left: everything is due now
        return k0, max(0, min(new_qty, self.target(now_ns)))

    def set_rebase(self, from_slice: int, base: int) -> None:
        self.rebase_slice, self.rebase_base = int(from_slice), int(base)

    def on_amend(self, now_ns: int) -> None:
        p = self.parent
        p.target_qty = min(p.qty, self.target(now_ns))
        self.engine._touch(p)
        if self.next_slice >= self.slices and now_ns < self.end_ns and not self.sweeping:
            self.catch_up(now_ns)  # after the last slice: the difference goes now

    def target(self, now_ns: int) -> int:
        k = self.next_slice - 1
        return self.slice_target(k) if k >= 0 else 0

    def on_time(self, now_ns: int) -> None:
        fired = False
        while self.next_slice < self.slices and self.times[self.next_slice] <= now_ns:
            self.next_slice += 1  # a late timer runs the latest due slice once, with catch-up
            fired = True
        if fired and now_ns < self.end_ns:
            if self.passive:
                self.cancel_children(now_ns)  # re-posted at the touch once they have closed
            self.catch_up(now_ns)
        if now_ns >= self.end_ns:
            self.wakeup_ns = None
            if self.passive:
                # what rests unfilled is taken at the end, within the parent's limit
                self.sweeping = True
                self.cancel_children(now_ns)
                if self.parent.open_children == 0:
                    self._sweep(now_ns)
            else:
                self._end_window(now_ns)
            return
        self.wakeup_ns = (
            self.times[self.next_slice] if self.next_slice < self.slices else self.end_ns
        )

    def on_child_closed(self, child: Child, now_ns: int) -> None:
        if not self.passive:
            return
        if not self.sweeping:
            self.catch_up(now_ns)  # re-post what a canceled child held, at today's touch
        elif self.parent.open_children == 0:
            if self.swept:
                self._end_window(now_ns)
            else:
                self._sweep(now_ns)

    def _sweep(self, now_ns: int) -> None:
        self.swept = True
        if self.catch_up(now_ns, self.parent.qty, aggressive=True) is None:
            self._end_window(now_ns)

    def _end_window(self, now_ns: int) -> None:
        p = self.parent
        self.finish(
            f"{self.name}: window ended with {p.qty - p.filled} of {p.qty} lots unfilled", now_ns
        )
