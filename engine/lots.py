"""Tax lots: which purchase a sale closes, and what that sale realized.

A position is not one number with an average price: for tax purposes (and for a P&L a trader can
audit) it is a list of *lots*, one per opening fill, each with its own price and time. A fill
that reduces the position closes lots, and *which* lots decides the realized P&L of that fill:

- ``fifo`` (the default, and what most tax authorities assume): the oldest lot first;
- ``lifo``: the newest first;
- ``hifo``: the costliest first for a long position (the cheapest-to-cover first for a short) —
  the order that realizes the smallest gain, i.e. the tax-efficient one;
- specific identification: the caller names the lots (``select``); they are closed first, in the
  order given, and the method above closes any remainder.

Whatever the method, realized + unrealized is the same (it only moves P&L between the two), so
the cash view of a portfolio can check the lot view.

Lots are identified by ``ref``: the ``(client_order_id, fill_id)`` of the fill that opened them.
Every component that sees the fills (the portfolio, a strategy tracking its own lots) derives the
same refs, so a strategy can name lots to the portfolio without sharing any state with it.

Prices are ticks (ints), quantities lots (ints, always > 0 in an open lot: a lot never goes
negative; the direction is a separate field), money in currency via the instrument's multiplier.

``WashSaleMonitor`` flags sales at a loss with a purchase of the same instrument within the
wash-sale window (30 days by default) before or after — the rule a tax-loss harvester must respect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LOT_METHODS = ("fifo", "lifo", "hifo")
NS_PER_DAY = 86_400 * 1_000_000_000
WASH_SALE_DAYS = 30

LotRef = tuple[int, int]  # (client_order_id, fill_id) of the opening fill


@dataclass(slots=True)
class Lot:
    """One open lot. ``qty`` > 0 always; ``direction`` is +1 (long) or -1 (short)."""

    ref: LotRef
    instrument_id: int
    direction: int
    qty: int
    px: int  # opening price, ticks
    ts: int  # opening time, ns
    orig_qty: int = 0

    def unrealized(self, mark_px: int, multiplier: float) -> float:
        return (mark_px - self.px) * self.direction * self.qty * multiplier


@dataclass(slots=True)
class ClosedLot:
    """A (part of a) lot closed by a fill, with the P&L that closing realized. (Not frozen: a
    frozen dataclass costs several times more to build, and one is built per closing fill.)"""

    ref: LotRef
    instrument_id: int
    direction: int
    qty: int
    open_px: int
    close_px: int
    open_ts: int
    close_ts: int
    pnl: float


class LotBook:
    """The open lots of one instrument (all in one direction) and the closing rules."""

    __slots__ = ("instrument_id", "multiplier", "method", "lots", "position", "basis")

    def __init__(self, instrument_id: int, multiplier: float, method: str = "fifo") -> None:
        if method not in LOT_METHODS:
            raise ValueError(f"lot method must be one of {', '.join(LOT_METHODS)}, not {method!r}")
        self.instrument_id = instrument_id
        self.multiplier = float(multiplier)
        self.method = method
        self.lots: deque[Lot] = deque()  # in opening order
        self.position = 0  # signed lots
        self.basis = 0  # sum of qty × px over open lots (ticks × lots, exact)

    # --- views -----------------------------------------------------------------------------------
    @property
    def avg_px(self) -> float:
        """Average opening price of the open lots (0.0 when flat)."""
        return self.basis / abs(self.position) if self.position else 0.0

    def unrealized(self, mark_px: int) -> float:
        return (mark_px * abs(self.position) - self.basis) * _sign(self.position) * self.multiplier

    def find(self, ref: LotRef) -> Lot | None:
        for lot in self.lots:
            if lot.ref == ref:
                return lot
        return None

    # --- changes ---------------------------------------------------------------------------------
    def apply(
        self,
        signed_qty: int,
        px: int,
        ts: int,
        ref: LotRef = (0, 0),
        select: Sequence[LotRef] = (),
    ) -> list[ClosedLot]:
        """Apply a fill of ``signed_qty`` lots at ``px``; returns the lots (parts) it closed.

        A fill in the direction of the position (or from flat) opens a lot; one against it closes
        lots (``select`` first, then by ``method``); what is left after the position reaches zero
        opens a lot in the new direction.
        """
        if signed_qty == 0:
            return []
        pos = self.position
        if pos == 0 or (pos > 0) == (signed_qty > 0):
            self._open(signed_qty, px, ts, ref)
            return []
        qty = abs(signed_qty)
        closed: list[ClosedLot] = []
        for ref_sel in select:
            if qty == 0:
                break
            lot = self.find(ref_sel)
            if lot is not None:
                qty -= self._close(lot, qty, px, ts, closed)
        if self.method == "fifo":  # the default, inlined: one closing fill per exec fill
            lots, mult = self.lots, self.multiplier
            while qty and lots:
                lot = lots[0]
                q = lot.qty if lot.qty <= qty else qty
                d = lot.direction
                closed.append(
                    ClosedLot(lot.ref, lot.instrument_id, d, q, lot.px, px, lot.ts, ts,
                              (px - lot.px) * d * q * mult)
                )  # fmt: skip
                lot.qty -= q
                self.position -= d * q
                self.basis -= q * lot.px
                if not lot.qty:
                    lots.popleft()
                qty -= q
        while qty > 0 and self.lots:
            qty -= self._close(self._next_to_close(), qty, px, ts, closed)
        if qty > 0:  # crossed through zero: the rest opens the other way
            self._open(qty if signed_qty > 0 else -qty, px, ts, ref)
        return closed

    def _open(self, signed_qty: int, px: int, ts: int, ref: LotRef) -> None:
        q = abs(signed_qty)
        self.lots.append(Lot(ref, self.instrument_id, 1 if signed_qty > 0 else -1, q, px, ts, q))
        self.position += signed_qty
        self.basis += q * px

    def _next_to_close(self) -> Lot:
        if self.method == "fifo":
            return self.lots[0]
        if self.method == "lifo":
            return self.lots[-1]
        # hifo: the lot whose closing realizes the least — highest cost (long), lowest (short)
        if self.position > 0:
            return max(self.lots, key=lambda lot: lot.px)
        return min(self.lots, key=lambda lot: lot.px)

    def _close(self, lot: Lot, want: int, px: int, ts: int, out: list[ClosedLot]) -> int:
        q = min(want, lot.qty)
        pnl = (px - lot.px) * lot.direction * q * self.multiplier
        out.append(
            ClosedLot(lot.ref, lot.instrument_id, lot.direction, q, lot.px, px, lot.ts, ts, pnl)
        )
        lot.qty -= q
        self.position -= lot.direction * q
        self.basis -= q * lot.px
        if lot.qty == 0:
            if lot is self.lots[0]:
                self.lots.popleft()
            elif lot is self.lots[-1]:
                self.lots.pop()
            else:
                self.lots.remove(lot)
        return q


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


@dataclass(slots=True, frozen=True)
class WashSale:
    """A loss sale with a purchase of the same instrument inside the window around it."""

    instrument_id: int
    sale_ts: int
    loss: float  # the realized loss of the sale (negative)
    purchase_ts: int


class WashSaleMonitor:
    """Flags wash sales of long positions: a sale at a loss, and a purchase of the same
    instrument within ``window_ns`` before it (whose lot is still held after the sale) or after
    it. Each loss sale is flagged at most once. It only records; it never changes the P&L."""

    def __init__(self, window_ns: int = WASH_SALE_DAYS * NS_PER_DAY) -> None:
        self.window_ns = int(window_ns)
        self.flagged: list[WashSale] = []
        self._loss_sales: dict[int, deque[tuple[int, float]]] = {}  # iid -> (ts, loss)

    def on_buy(self, instrument_id: int, ts: int) -> None:
        """A purchase (a long lot opened): does it follow a recent loss sale?"""
        q = self._loss_sales.get(instrument_id)
        if not q:
            return
        while q and ts - q[0][0] > self.window_ns:
            q.popleft()
        for sale_ts, loss in q:
            self.flagged.append(WashSale(instrument_id, sale_ts, loss, ts))
        q.clear()  # each loss sale is flagged once

    def on_sale(
        self, instrument_id: int, ts: int, closed: Iterable[ClosedLot], held: Iterable[Lot]
    ) -> None:
        """A sale closed ``closed``; ``held`` are the lots still open after it."""
        loss = sum(c.pnl for c in closed if c.direction > 0)
        if loss >= 0:
            return
        recent = [
            lot.ts for lot in held if lot.direction > 0 and 0 <= ts - lot.ts <= self.window_ns
        ]
        if recent:
            self.flagged.append(WashSale(instrument_id, ts, loss, max(recent)))
            return
        q = self._loss_sales.setdefault(instrument_id, deque())
        while q and ts - q[0][0] > self.window_ns:  # too old to be washed by any later buy
            q.popleft()
        q.append((ts, loss))

    @property
    def disallowed_loss(self) -> float:
        return sum(w.loss for w in self.flagged)
