"""Tax-loss harvesting: which lots to sell at a loss, what to buy instead, and when buying back
would make the loss a wash sale.

``HarvestPlanner`` is pure bookkeeping, used by the ``Rebalancer`` strategy (``harvest = true``)
and testable on its own:

- a lot is a *candidate* when it is long and its unrealized loss is at least ``threshold`` of its
  cost (``(mark − cost) / cost ≤ −threshold``) and at least ``min_loss`` in currency;
- an instrument is harvested only if it has a *substitute* (a similar but not substantially
  identical instrument, from config) that may be bought now, and only if none of the lots that
  would remain was bought inside the wash-sale window — such a purchase would be the replacement
  that disallows the loss;
- every realized loss on an instrument (harvested or not) opens a window of ``window_ns``
  (30 days by default) during which that instrument must not be bought: ``can_buy`` says so and
  the rebalancer moves the instrument's target weight to its substitute meanwhile.

Why the planner tracks its own purchases rather than asking the portfolio: a strategy runs in
the strategy process, which sees only its own fills; the wash-sale rule is about this account's
purchases, which for a strategy that is the only one trading its instruments are exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.lots import NS_PER_DAY, WASH_SALE_DAYS, ClosedLot, Lot, LotBook


@dataclass(frozen=True, slots=True)
class Harvest:
    """Sell ``lots`` of ``instrument_id`` (``qty`` lots in all); buy ``substitute`` instead."""

    instrument_id: int
    lots: tuple[Lot, ...]
    qty: int
    loss: float  # unrealized loss at the mark (negative, currency)
    substitute: int


class HarvestPlanner:
    """Harvest candidates and wash-sale windows (see the module docstring)."""

    def __init__(
        self,
        substitutes: Mapping[int, int],
        threshold: float = 0.05,
        *,
        min_loss: float = 0.0,
        window_ns: int = WASH_SALE_DAYS * NS_PER_DAY,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"harvest threshold must be within (0, 1), not {threshold}")
        for a, b in substitutes.items():
            if a == b:
                raise ValueError(f"instrument {a} cannot be its own substitute")
        self.substitutes = dict(substitutes)
        self.threshold = float(threshold)
        self.min_loss = float(min_loss)
        self.window_ns = int(window_ns)
        self.blocked_until: dict[int, int] = {}  # iid -> first time it may be bought again
        self.harvests = 0

    def can_buy(self, instrument_id: int, now_ns: int) -> bool:
        """False until a loss sale of this instrument is more than the window old (the window
        is inclusive: a purchase exactly 30 days after the sale is still inside it)."""
        return now_ns > self.blocked_until.get(instrument_id, -1)

    def on_fill(self, instrument_id: int, now_ns: int, closed: Iterable[ClosedLot]) -> None:
        """A fill of ours: a realized loss on a long lot opens the instrument's window."""
        if sum(c.pnl for c in closed if c.direction > 0) < 0:
            until = now_ns + self.window_ns
            self.blocked_until[instrument_id] = max(self.blocked_until.get(instrument_id, 0), until)

    def candidates(self, book: LotBook, mark_px: int) -> list[Lot]:
        """The long lots of ``book`` whose loss at ``mark_px`` passes both thresholds."""
        out = []
        for lot in book.lots:
            if lot.direction <= 0 or lot.px <= 0:
                continue
            loss = lot.unrealized(mark_px, book.multiplier)
            if (mark_px - lot.px) / lot.px <= -self.threshold and -loss >= self.min_loss:
                out.append(lot)
        return out

    def plan(self, book: LotBook, mark_px: int, now_ns: int) -> Harvest | None:
        """What to harvest on this instrument now, or None (no loss, no usable substitute, or
        a recent purchase among the lots that would remain)."""
        sub = self.substitutes.get(book.instrument_id)
        if sub is None or not self.can_buy(sub, now_ns) or mark_px <= 0:
            return None
        lots = self.candidates(book, mark_px)
        if not lots:
            return None
        chosen = {id(lot) for lot in lots}
        for lot in book.lots:
            if id(lot) not in chosen and now_ns - lot.ts <= self.window_ns:
                return None  # the lot kept would be the wash sale's replacement
        loss = sum(lot.unrealized(mark_px, book.multiplier) for lot in lots)
        return Harvest(book.instrument_id, tuple(lots), sum(lot.qty for lot in lots), loss, sub)
