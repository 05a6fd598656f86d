"""Iceberg: a large limit order of which the venue only ever sees a small part.

Parameters (``algo_params``):

- ``display_qty`` (required, lots >= 1): the most the book ever shows;
- ``variance`` in ``[0, 1)`` (default 0): each refresh shows ``display_qty * (1 - variance * u)``
  lots (``u`` uniform, seeded by ``seed``, default the parent's id; at least 1 lot), so the
  refreshes do not all have the tell-tale same size. The randomisation only ever shows *less*
  than ``display_qty``.

One child rests at a time, at the parent's price, time in force and flags (so the parent must be
a LIMIT order with a resting time in force). When it has filled completely, the next one is
sent for ``min(shown size, what is left)``. If the venue cancels or expires a child on its own
(a DAY order at the close) or rejects one, the parent ends there with ``OrderCanceled``. The
refresh waits for the previous child's final fill, so two children never rest at once: the book
never shows more than ``display_qty``.

Amends: a new limit reprices the displayed child (a ReplaceOrder: it keeps showing at most what
it showed); a quantity cut shrinks it, or cancels it and shows the next for what is left; a
larger quantity shows from the next refresh on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.algos.base import Algo, AlgoParamError, Child, Parent, num
from engine.messages import AlgoKind, OrderType, TimeInForce


class IcebergAlgo(Algo):
    kind = AlgoKind.ICEBERG
    name = "iceberg"
    keys = frozenset({"display_qty", "variance", "seed"})
    max_child_rejects = 1

    def __init__(self, engine: Any, parent: Parent, now_ns: int) -> None:
        super().__init__(engine, parent, now_ns)
        o = parent.order
        if o.order_type != OrderType.LIMIT:
            raise AlgoParamError(f"{self.name}: the parent must be a LIMIT order")
        if o.tif in (TimeInForce.IOC, TimeInForce.FOK):
            raise AlgoParamError(f"{self.name}: an IOC/FOK order cannot rest, so it cannot hide")
        params = o.algo_params
        display = num(params, "display_qty", self.name, lo=1)
        if display != int(display):
            raise AlgoParamError(f"{self.name}: display_qty must be a whole number of lots")
        self.display_qty = int(display)
        self.variance = num(params, "variance", self.name, 0.0, lo=0.0, hi=1.0, hi_open=True)
        seed = int(num(params, "seed", self.name, float(parent.client_order_id & 0xFFFFFFFF), lo=0))
        self._rng = np.random.default_rng(seed)
        self.refreshes = 0

    def show_size(self) -> int:
        """The next child's size (before clipping to what is left): never above display_qty."""
        if self.variance <= 0:
            return self.display_qty
        shown = int(self.display_qty * (1.0 - self.variance * float(self._rng.random())))
        return min(self.display_qty, max(1, shown))

    def on_start(self, now_ns: int) -> None:
        self._show(now_ns)

    def on_resume(self, now_ns: int) -> None:
        self._show(now_ns)  # the displayed child closed while exec was down: show the next

    def on_child_closed(self, child: Child, now_ns: int) -> None:
        if child.outcome == "filled":
            self.refreshes += 1
            self._show(now_ns)
        elif child.outcome == "canceled" and child.cancel_sent:
            self._show(now_ns)  # we canceled it (an amend): show what is left, if anything
        elif child.outcome in ("canceled", "expired"):
            self.finish(f"{self.name}: the venue {child.outcome} the displayed child", now_ns)

    def on_amend(self, now_ns: int) -> None:
        self._show(now_ns)  # nothing shown (the cut canceled it): show the next

    def _show(self, now_ns: int) -> None:
        p = self.parent
        if p.open_children == 0 and p.remaining > 0:
            o = p.order
            self.send(self.show_size(), now_ns, order_type=OrderType.LIMIT, tif=o.tif, px=o.px)
