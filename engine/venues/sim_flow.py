"""How the market's own flow fills our resting orders on the simulated exchange, and halts.

``SimExchange`` (``engine.venues.sim``) handles our requests; this mixin is the other half of
its matching: market data (quotes, deltas, snapshots, trades) eats the queue ahead of our
resting orders and then fills them, a market moving through our price fills us at our price,
and exchange statuses halt and reopen instruments. The rules are in ``engine.venues.sim``'s
docstring; kept apart so each file reads as one job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.book import BookFlag
from engine.messages import (
    BookDelta,
    BookSnapshot,
    ExchangeStatus,
    ExchangeStatusKind,
    Liquidity,
    Quote,
    Side,
    Trade,
)
from engine.venues.sim_state import BUY, SELL, STATUS_NAMES, VENUE_KEY, SimInstrument, SimOrder

if TYPE_CHECKING:
    from engine.venues.sim_record import SimRecord

__all__ = ["MarketFlow"]


class MarketFlow:
    """Mixin of :class:`engine.venues.sim.SimExchange`: the market-data side of its matching."""

    _insts: dict[int, SimInstrument]
    _halts: dict[int, tuple[int, str]]
    _record: SimRecord | None
    fill_on_decrease: bool | None
    ignored_market_data: int

    def _fill(self, inst: SimInstrument, rec: SimOrder, px: int, q: int, liq: int, t: int) -> None:
        raise NotImplementedError  # SimExchange's

    def _side_orders(self, inst: SimInstrument, side: int) -> list[SimOrder]:
        raise NotImplementedError  # SimExchange's

    def _consume_queue(
        self, inst: SimInstrument, side: int, px: int, volume: int, fill_us: bool, t: int
    ) -> None:
        """``volume`` left the front of the level (side, px): it eats the market size ahead of
        each of our orders in turn and, if ``fill_us``, our orders themselves (maker)."""
        lst = inst.resting.get((side, px))
        if not lst or volume <= 0:
            return
        remaining = volume
        market_used = 0
        for rec in list(lst):
            in_front = max(0, rec.ahead - market_used)
            step = min(remaining, in_front)
            remaining -= step
            market_used += step
            if remaining <= 0:
                break
            if fill_us:
                q = min(remaining, rec.leaves)
                remaining -= q
                self._fill(inst, rec, px, q, Liquidity.MAKER, t)
        for rec in inst.resting.get((side, px), ()):
            rec.ahead = max(0, rec.ahead - market_used)

    def _fill_through(self, inst: SimInstrument, side: int, better_than: int, t: int) -> None:
        """Fill in full our ``side`` orders priced better than a trade at ``better_than``."""
        for rec in self._side_orders(inst, side):
            if rec.px > better_than if side == Side.BUY else rec.px < better_than:
                self._fill(inst, rec, rec.px, rec.leaves, Liquidity.MAKER, t)

    def _check_through(self, inst: SimInstrument, t: int) -> None:
        """The opposite book reached our price: fill at our price against the size there."""
        book = inst.book
        for side in (Side.BUY, Side.SELL):
            opp = -side
            for rec in self._side_orders(inst, side):
                i = 0
                crossed = False
                while rec.is_open:
                    lpx, lqty = book.level(opp, i)
                    i += 1
                    if lqty == 0 or (lpx > rec.px if side == Side.BUY else lpx < rec.px):
                        break
                    crossed = True
                    used = inst.consumed.get((opp, lpx), 0)
                    q = min(lqty - used, rec.leaves)
                    if q > 0:
                        inst.consumed[(opp, lpx)] = used + q
                        self._fill(inst, rec, rec.px, q, Liquidity.MAKER, t)
                if not crossed:
                    break  # worse-priced orders of this side cannot be crossed either

    # --- trading status --------------------------------------------------------------------------
    def _on_status(self, msg: ExchangeStatus, t: int) -> None:
        iid = msg.instrument_id
        known = iid == VENUE_KEY or iid in self._insts
        if not known or (msg.status != ExchangeStatusKind.OPEN and msg.status not in STATUS_NAMES):
            self.ignored_market_data += 1
            return
        if self._record is not None:
            self._record.append(msg)
        for inst in self._set_status(msg):  # reopened: the book may have moved through us
            inst.consumed.clear()
            inst.pending_trades.clear()
            if inst.resting:
                self._check_through(inst, t)

    def _set_status(self, msg: ExchangeStatus) -> list[SimInstrument]:
        """Record a status; returns the instruments it reopened."""
        key = msg.instrument_id
        if msg.status == ExchangeStatusKind.OPEN:
            self._halts.pop(key, None)
        else:
            self._halts[key] = (int(msg.status), msg.reason)
        ids = list(self._insts) if key == VENUE_KEY else [key] if key in self._insts else []
        reopened = []
        for iid in ids:
            inst = self._insts[iid]
            was = inst.halt_reason
            inst.halt_reason = self._halt_reason(iid)
            if was and not inst.halt_reason:
                reopened.append(inst)
        return reopened

    def _halt_reason(self, iid: int) -> str:
        """The reason an order is refused while ``iid`` is halted ("" if it is not)."""
        own = self._halts.get(iid)
        if own is not None:
            kind, why = STATUS_NAMES[own[0]], own[1]
        elif VENUE_KEY in self._halts:
            kind, why = "venue-wide halt", self._halts[VENUE_KEY][1]
        else:
            return ""
        return f"trading halted: {kind}" + (f" ({why})" if why else "")

    # --- market data -----------------------------------------------------------------------------
    def _level_changed(
        self, inst: SimInstrument, side: int, px: int, old: int, new: int, t: int
    ) -> None:
        """The market set (side, px) from ``old`` to ``new``: a new state for that level."""
        key = (side, px)
        inst.consumed.pop(key, None)
        if new < old:
            decrease = old - new
            pending = inst.pending_trades.get(key, 0)
            explained = min(decrease, pending)
            if explained:
                if pending > explained:
                    inst.pending_trades[key] = pending - explained
                else:
                    del inst.pending_trades[key]
            if key in inst.resting:
                fill_us = (
                    (not inst.seen_trade)
                    if self.fill_on_decrease is None
                    else self.fill_on_decrease
                ) and not inst.halt_reason  # a halted market does not trade
                self._consume_queue(inst, side, px, decrease - explained, fill_us, t)
        for rec in inst.resting.get(key, ()):
            rec.ahead = min(rec.ahead, new)  # nothing hidden ahead of us beyond what is shown

    def _on_delta(self, inst: SimInstrument, d: BookDelta, t: int) -> None:
        inst.last_was_trade = False
        book = inst.book
        if d.side not in (Side.BUY, Side.SELL):
            self.ignored_market_data += 1
            return
        old = book.qty_at(d.side, d.px) if d.px > 0 else 0
        if book.apply(d) & BookFlag.REJECTED:
            self.ignored_market_data += 1
            return
        new = book.qty_at(d.side, d.px)
        if inst.resting or inst.consumed or inst.pending_trades:
            self._level_changed(inst, d.side, d.px, old, new, t)
            if inst.resting and not inst.halt_reason:
                self._check_through(inst, t)

    def _on_snapshot(self, inst: SimInstrument, s: BookSnapshot, t: int) -> None:
        inst.last_was_trade = False
        book = inst.book
        watched = list(inst.resting)
        old = {k: book.qty_at(*k) for k in watched}
        if book.apply(s) & BookFlag.REJECTED:
            self.ignored_market_data += 1
            return
        inst.consumed.clear()
        for k in watched:
            self._level_changed(inst, k[0], k[1], old[k], book.qty_at(*k), t)
        inst.pending_trades.clear()
        if inst.resting and not inst.halt_reason:
            self._check_through(inst, t)

    def _on_quote(self, inst: SimInstrument, q: Quote, t: int) -> None:
        """Top of book only: levels better than the quote are gone, the quoted ones are set."""
        inst.last_was_trade = False
        book = inst.book
        if q.seq > 0 and q.seq == book.last_seq:
            return  # summarises deltas this book already applied
        if min(q.bid_px, q.bid_qty, q.ask_px, q.ask_qty) < 0:
            self.ignored_market_data += 1
            return
        # plain ints, not the IntEnum members: numba re-types an enum argument on every call
        # of the book's jitted apply_delta (~20 µs each), which dominated exec's tick cost
        for side, px, qty in ((BUY, q.bid_px, q.bid_qty), (SELL, q.ask_px, q.ask_qty)):
            empty = px == 0 or qty == 0
            while book.n_levels(side):
                lpx, lqty = book.level(side, 0)
                if not empty and (lpx <= px if side == Side.BUY else lpx >= px):
                    break
                book.apply_delta(side, lpx, 0)
                self._level_changed(inst, side, lpx, lqty, 0, t)
            if not empty:
                old = book.qty_at(side, px)
                book.apply_delta(side, px, qty)
                self._level_changed(inst, side, px, old, qty, t)
        if inst.resting and not inst.halt_reason:
            self._check_through(inst, t)

    def _on_trade(self, inst: SimInstrument, tr: Trade, t: int) -> None:
        """A print: the resting side's queue at that price is eaten, better prices filled."""
        if tr.px <= 0 or tr.qty <= 0:
            self.ignored_market_data += 1
            return
        if inst.halt_reason:
            return  # a print while halted matches nothing here (the venue does not trade)
        inst.seen_trade = True
        if not inst.last_was_trade:
            inst.pending_trades.clear()  # a new batch of prints: older ones were settled
        inst.last_was_trade = True
        if tr.side == Side.BUY:
            sides: tuple[int, ...] = (Side.SELL,)
        elif tr.side == Side.SELL:
            sides = (Side.BUY,)
        else:
            sides = (Side.BUY, Side.SELL)  # aggressor unknown
        for side in sides:
            key = (side, tr.px)
            inst.pending_trades[key] = inst.pending_trades.get(key, 0) + tr.qty
            if inst.resting:
                self._fill_through(inst, side, tr.px, t)
                self._consume_queue(inst, side, tr.px, tr.qty, True, t)
