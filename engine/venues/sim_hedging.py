"""The simulated exchange's hedging mode: a long and a short position per instrument, apart.

A venue whose account hedges (``position_mode = "hedging"``) does not net a buy against a short:
a buy opens or grows the long leg, a sell the short leg, and only a ``REDUCE_ONLY`` order closes
the opposite leg (a sell REDUCE_ONLY closes the long, a buy REDUCE_ONLY the short), never more
than that leg holds. Each leg keeps its own average cost (a voided market unwinds it) and posts
its own margin (``engine.venues.sim_accounts``). The portfolio's hedging books
(``engine.portfolio``) read the same fills the same way, by the order's ``REDUCE_ONLY`` flag.
The net position (long + short) is what ``SimExchange.positions`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Leg", "Legs", "reduce_only_refusal", "reducible"]


@dataclass(slots=True)
class Leg:
    """One side's position in lots (long > 0, short < 0) and its average cost in ticks."""

    qty: int = 0
    avg_px: float = 0.0

    def add(self, d: int, px: int) -> None:
        """A trade of ``d`` lots (signed) on this leg: grows it at ``px`` or shrinks it."""
        new = self.qty + d
        if new == 0:
            self.avg_px = 0.0
        elif abs(new) > abs(self.qty):
            self.avg_px = (self.avg_px * abs(self.qty) + px * abs(d)) / abs(new)
        self.qty = new


class Legs:
    """The long and short legs of every instrument traded on a hedging venue."""

    def __init__(self) -> None:
        self.by_iid: dict[int, tuple[Leg, Leg]] = {}

    def of(self, iid: int) -> tuple[Leg, Leg]:
        """(long, short) of ``iid`` (created flat)."""
        legs = self.by_iid.get(iid)
        if legs is None:
            legs = self.by_iid[iid] = (Leg(), Leg())
        return legs

    def closable(self, iid: int, side: int) -> int:
        """How much a REDUCE_ONLY order of ``side`` may close: the opposite leg's size."""
        long, short = self.of(iid)
        return long.qty if side < 0 else -short.qty

    def trade(self, iid: int, side: int, qty: int, px: int, reduce_only: bool) -> None:
        """A fill of ``qty`` lots on ``side``: a reduce-only one closes the opposite leg (never
        past flat: the venue caps it), any other opens or grows its own side's."""
        long, short = self.of(iid)
        if reduce_only:
            (long if side < 0 else short).add(side * qty, px)
        else:
            (long if side > 0 else short).add(side * qty, px)

    def clear(self, iid: int) -> None:
        """Both legs flat (a settlement closed the position)."""
        self.by_iid.pop(iid, None)

    def sides(self) -> dict[int, tuple[int, int]]:
        """(long lots, short lots <= 0) per instrument traded."""
        return {iid: (lg.qty, sh.qty) for iid, (lg, sh) in self.by_iid.items()}


def reducible(legs: Legs | None, positions: dict[int, int], iid: int, side: int) -> int:
    """How much a REDUCE_ONLY order of ``side`` may still fill: the opposite leg (hedging) or
    the net position against it (netting), never below 0."""
    if legs is not None:
        return max(0, legs.closable(iid, side))
    return max(0, -side * positions.get(iid, 0))


def reduce_only_refusal(legs: Legs | None, positions: dict[int, int], o: Any) -> str:
    """Why the venue refuses a REDUCE_ONLY ``NewOrder`` ("" if it does not)."""
    if legs is not None:
        held = legs.closable(o.instrument_id, o.side)
        if o.qty > held:
            leg = "long" if o.side < 0 else "short"
            return f"REDUCE_ONLY order of {o.qty} would close more than the {leg} leg {held}"
        return ""
    pos = positions.get(o.instrument_id, 0)
    if o.side * pos >= 0 or o.qty > abs(pos):
        return f"REDUCE_ONLY order of {o.qty} would increase the position {pos}"
    return ""
