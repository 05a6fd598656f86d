"""The account side of the risk gate: margin, leverage, betting liability, binary exposure.

Why its own module: a spot-only engine never pays for it. ``AccountRisk`` holds, per
instrument, what its kind needs (margin fractions, the market it belongs to, a betting
selection's P&L if it wins / loses) and running totals, updated on each fill and on each price
refresh, so a pre-trade check is a few scalar operations (``margin_check``) or a loop over one
market's few selections (``market_check``). The formulas are ``engine.accounts`` /
``engine.betting``'s (one formula each, shared with the portfolio and the venue).

- Margin (cross, one account over the gate's equity): initial = notional × initial_margin,
  maintenance = notional × maintenance_margin of every margined position at the mark. A new
  order is refused when the initial margin after it (worst case: the position plus its side's
  open orders plus the order) exceeds ``max_margin_pct`` of equity, or the gross notional of
  margined positions exceeds ``max_leverage`` × equity.
- Margin call: equity below the maintenance margin (risk's own computation on every price
  refresh, or a venue's ``MarginStatus(margin_call=True)``): a ``RiskEvent`` MARGIN_CALL and the
  trading state REDUCING (only orders that shrink positions; the orders that would add are
  canceled). It is raised once per episode; an operator's RESUME returns to ACTIVE.
- Liquidation (a venue's ``Liquidation``): booked like a fill no order made, a ``RiskEvent``
  LIQUIDATION, and REDUCING.
- Betting: a bet moves no cash until its market settles; its P&L if the selection wins / loses
  is kept (back S at O: +S(O−1) / −S; lay: −S(O−1) / +S) and a market's liability is its worst
  outcome (``engine.betting.market_exposure``); ``max_market_liability`` caps it, open orders
  counted. Its value enters equity at settlement (not marked before).
- Binary contracts: paid like spot; a market's exposure is its worst loss at resolution against
  what was paid (long: the cost; short: 1 − the price a share), open orders at their price;
  ``max_binary_exposure`` caps it.
A market lists its selections by ``market_id``; one listed alone may lose to one not listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.betting import bet_pnl, market_exposure
from engine.enums import InstrumentKind, RiskEventKind, SettlementKind, TradingState
from engine.instruments import Instrument
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    RiskEvent,
    Settlement,
)

if TYPE_CHECKING:
    from engine.risk_book import RiskBook, RiskOutput

#: a refusal: (reason, the offending value, the limit)
Refusal = tuple[str, float, float]


class AccountRisk:
    """Per-instrument account data and running totals (see the module docstring)."""

    def __init__(self, ins: Sequence[Instrument | None], mult: np.ndarray) -> None:
        n = len(ins)
        self.im = np.array([i.initial_margin if i else 0.0 for i in ins])
        self.mm = np.array([i.maintenance_margin if i else 0.0 for i in ins])
        self.margined = self.im > 0
        self.any_margined = bool(self.margined.any())
        self.betting = {k for k, i in enumerate(ins) if i and i.kind == InstrumentKind.BETTING}
        self.binary = {k for k, i in enumerate(ins) if i and i.kind == InstrumentKind.BINARY}
        self.linear = np.array([0.0 if k in self.betting else 1.0 for k in range(n)])
        markets: dict[str, list[int]] = {}
        for k, i in enumerate(ins):
            if i is not None and k in self.betting | self.binary:
                markets.setdefault(f"{i.kind}:{i.market_id}", []).append(k)
        self.market: dict[int, list[int]] = {k: m for m in markets.values() for k in m}
        # one contract's payout at resolution 1, in ticks (binary); odds tick and stake lot
        self.payout = [round(1.0 / i.tick_size) if i else 0 for i in ins]
        self.outcome = [i.outcome if i else "" for i in ins]
        self.tick = [i.tick_size if i else 0.0 for i in ins]
        self.lot = [i.lot_size if i else 0.0 for i in ins]
        self.mult = mult
        self.win = np.zeros(n)  # betting: the selection's P&L (money) if it wins ...
        self.lose = np.zeros(n)  # ... and if it loses
        # margin in use per instrument at the last mark, and the totals (money)
        self.im_used = np.zeros(n)
        self.mm_used = np.zeros(n)
        self.gross = np.zeros(n)
        self.im_total = self.mm_total = self.gross_total = 0.0
        self.called = False  # our own margin call is raised (until equity is back above)
        self.venue_called: set[str] = set()  # venues whose MarginStatus says margin call

    # --- totals ---------------------------------------------------------------------------------
    def update(self, iid: int, position: int, mark: float) -> None:
        """One margined instrument's margin at ``mark`` (after a fill)."""
        if not self.margined[iid]:
            return
        g = abs(position) * mark * float(self.mult[iid])
        im, mm = g * float(self.im[iid]), g * float(self.mm[iid])
        self.im_total += im - float(self.im_used[iid])
        self.mm_total += mm - float(self.mm_used[iid])
        self.gross_total += g - float(self.gross[iid])
        self.im_used[iid], self.mm_used[iid], self.gross[iid] = im, mm, g

    def refresh(self, position: np.ndarray, marks: np.ndarray) -> None:
        """Every margined instrument's margin at the marks (the price refresh)."""
        if not self.any_margined:
            return
        self.gross = np.where(self.margined, np.abs(position) * marks * self.mult, 0.0)
        self.im_used = self.gross * self.im
        self.mm_used = self.gross * self.mm
        self.im_total = float(self.im_used.sum())
        self.mm_total = float(self.mm_used.sum())
        self.gross_total = float(self.gross.sum())

    # --- betting fills ----------------------------------------------------------------------------
    def bet(self, iid: int, side: int, qty: int, px: int) -> None:
        """A matched bet: its P&L if the selection wins / loses."""
        stake, odds = qty * self.lot[iid], px * self.tick[iid]
        self.win[iid] += bet_pnl(side, stake, odds, True)
        self.lose[iid] += bet_pnl(side, stake, odds, False)


# --- pre-trade checks ---------------------------------------------------------------------------
def margin_check(book: RiskBook, iid: int, pos: int, proj: int, ref: int) -> Refusal | None:
    """Initial margin and leverage after an order on a margined instrument whose worst-case
    position becomes ``proj`` lots (valued at the mark, else the order's price)."""
    a, lim = book.acct, book.limits
    mark = float(book.marks[iid])
    val = (mark if mark > 0 else float(ref)) * float(book.mult[iid])
    d = (abs(proj) - abs(pos)) * val
    if d <= 0:
        return None
    equity = book.equity
    if lim.max_margin_pct > 0:
        after = a.im_total - float(a.im_used[iid]) + abs(proj) * val * float(a.im[iid])
        if not equity > 0:
            return "no equity for margin", equity, 0.0
        if after > equity * lim.max_margin_pct / 100.0:
            return "margin usage", after / equity * 100.0, lim.max_margin_pct
    if lim.max_leverage > 0:
        after = a.gross_total - float(a.gross[iid]) + abs(proj) * val
        if not equity > 0 or after > equity * lim.max_leverage:
            lev = after / equity if equity > 0 else float("inf")
            return "leverage", lev, lim.max_leverage
    return None


def market_check(book: RiskBook, iid: int, side: int, extra: int, px: int) -> Refusal | None:
    """A betting market's liability or a binary market's exposure after an order of ``extra``
    lots at ``px`` (open orders in the market counted at their prices); refused only when the
    limit is exceeded and the order makes it worse."""
    a, lim = book.acct, book.limits
    if iid in a.betting:
        cap, why = lim.max_market_liability, "market liability"
        before, after = _bet_exposure(book, iid, 0, 0, 0), _bet_exposure(book, iid, side, extra, px)
    elif iid in a.binary:
        cap, why = lim.max_binary_exposure, "binary market exposure"
        before = _binary_exposure(book, iid, 0, 0, 0)
        after = _binary_exposure(book, iid, side, extra, px)
    else:
        return None
    if cap > 0 and after > cap and after > before + 1e-9:
        return why, after, cap
    return None


def _open_in(book: RiskBook, market: list[int]) -> list[tuple[int, int, int, int]]:
    return [
        (o.instrument_id, o.side, o.leaves, o.px)
        for o in book.open_orders.values()
        if o.instrument_id in market and o.leaves > 0 and o.px > 0
    ]


def _bet_exposure(book: RiskBook, iid: int, side: int, extra: int, px: int) -> float:
    a = book.acct
    market = a.market[iid]
    books = {j: (float(a.win[j]), float(a.lose[j])) for j in market}
    bets = _open_in(book, market) + ([(iid, side, extra, px)] if extra > 0 else [])
    for j, s, q, p in bets:
        stake, odds = q * a.lot[j], p * a.tick[j]
        w, lo = books[j]
        books[j] = (w + bet_pnl(s, stake, odds, True), lo + bet_pnl(s, stake, odds, False))
    return market_exposure(books, others=len(market) == 1)


def _binary_exposure(book: RiskBook, iid: int, side: int, extra: int, px: int) -> float:
    """The worst loss at resolution against the price paid, over the market's outcomes."""
    a = book.acct
    market = a.market[iid]
    pos = {j: float(book.position[j]) for j in market}
    cost = {j: float(book.position[j]) * float(book.avg_px[j]) for j in market}
    bets = _open_in(book, market) + ([(iid, side, extra, px)] if extra > 0 else [])
    for j, s, q, p in bets:
        pos[j] += s * q
        cost[j] += s * q * p
    outcomes = {a.outcome[j] for j in market}
    scenarios: list[str | None] = [*outcomes, None] if len(market) == 1 else list(outcomes)
    worst = 0.0
    for k in scenarios:
        loss = sum(
            (cost[j] - pos[j] * (a.payout[j] if a.outcome[j] == k else 0)) * float(book.mult[j])
            for j in market
        )
        worst = max(worst, loss)
    return worst


# --- account events and the margin call -----------------------------------------------------
def on_account_event(book: RiskBook, ev: object, now_ns: int) -> list[RiskOutput]:
    """Funding and financing move cash; a liquidation is a fill no order made (LIQUIDATION,
    REDUCING); a settlement closes its position; a venue's margin call is a MARGIN_CALL."""
    t = type(ev)
    if t is FundingPayment or t is Financing:
        book.cash += float(ev.amount)  # type: ignore[attr-defined]
        book.equity += float(ev.amount)  # type: ignore[attr-defined]
        return []
    if t is Liquidation:
        return _liquidated(book, ev, now_ns)  # type: ignore[arg-type]
    if t is Settlement:
        settle(book, ev)  # type: ignore[arg-type]
        return []
    if t is MarginStatus:
        return _venue_margin(book, ev, now_ns)  # type: ignore[arg-type]
    return []


def _liquidated(book: RiskBook, ev: Liquidation, now_ns: int) -> list[RiskOutput]:
    iid = ev.instrument_id
    if 0 <= iid < book.n and book.ins[iid] is not None:
        # reduce-only: on a hedging venue a liquidation closes the leg opposite its side
        book.on_fill(iid, int(ev.side), int(ev.qty), int(ev.px), float(ev.fee), True)
    why = f"liquidation: {ev.qty} lots at {ev.px} ticks"
    ev_out = RiskEvent(
        int(RiskEventKind.LIQUIDATION), iid, 0, why, float(ev.qty), float(ev.px), now_ns, 0
    )
    return _reduce(book, ev_out, why, "liquidation", now_ns)


def _venue_margin(book: RiskBook, ev: MarginStatus, now_ns: int) -> list[RiskOutput]:
    a = book.acct
    if not ev.margin_call:
        a.venue_called.discard(ev.venue)
        return []
    if ev.venue in a.venue_called:
        return []
    a.venue_called.add(ev.venue)
    why = (
        f"margin call at {ev.venue}: equity {ev.equity:.2f} < maintenance "
        f"{ev.maintenance_margin:.2f} {ev.currency}"
    )
    out = RiskEvent(
        int(RiskEventKind.MARGIN_CALL),
        -1,
        0,
        why,
        float(ev.equity),
        float(ev.maintenance_margin),
        now_ns,
        0,
    )
    return _reduce(book, out, why, "margin_call", now_ns)


def margin_controls(book: RiskBook, now_ns: int, wall_ns: int = 0) -> list[RiskOutput]:
    """On every price refresh: our own margin call, when equity < maintenance margin."""
    a = book.acct
    if not a.any_margined:
        return []
    if not (a.mm_total > 0 and book.equity < a.mm_total):
        a.called = False
        return []
    if a.called:
        return []
    a.called = True
    why = f"margin call: equity {book.equity:.2f} < maintenance margin {a.mm_total:.2f}"
    ev = RiskEvent(int(RiskEventKind.MARGIN_CALL), -1, 0, why, book.equity, a.mm_total, now_ns, 0)
    return _reduce(book, ev, why, "margin_call", now_ns, wall_ns)


def _reduce(
    book: RiskBook, ev: RiskEvent, why: str, source: str, now_ns: int, wall_ns: int = 0
) -> list[RiskOutput]:
    """The event, and the trading state up to REDUCING (pulling the orders that would add)."""
    from engine.risk_controls import cancel_increasing

    ch = book.trading.escalate(
        int(TradingState.REDUCING), why, source, now_ns, wall_ns, ev.value, ev.limit
    )
    ev.state = int(book.state)
    out: list[RiskOutput] = [ev]
    if ch is not None:
        out.append(ch)
        out += cancel_increasing(book, now_ns)
    return out


def settle(book: RiskBook, ev: Settlement) -> None:
    """A position closed by its market: a future's expiry or a binary resolution at ``px`` (a
    closing trade there), a voided binary unwound at its average cost, a betting selection's
    bets paid (won / lost) or undone (void)."""
    iid = ev.instrument_id
    if not (0 <= iid < book.n and book.ins[iid] is not None):
        return
    a = book.acct
    pos = int(book.position[iid])
    fee = float(ev.fee)
    if iid in a.betting and ev.partial and ev.kind == SettlementKind.VOID:
        # one bet voided, the selection's others stand: the opposite bet at its odds undoes it
        side = 1 if ev.position > 0 else -1
        a.bet(iid, -side, abs(int(ev.position)), int(ev.px))
        book.position[iid] -= int(ev.position)
        return
    if iid in a.betting:
        if ev.kind != SettlementKind.VOID:
            pnl = float(a.win[iid] if ev.outcome == 1 else a.lose[iid])
            book.cash += pnl
            book.equity += pnl
        book.cash -= fee
        book.equity -= fee
        a.win[iid] = a.lose[iid] = 0.0
        book.position[iid] = 0
        book.avg_px[iid] = 0.0
        book.signs[iid] = 0.0
        return
    if pos == 0:
        return
    px = float(ev.px)
    if ev.kind == SettlementKind.VOID:
        px = float(book.avg_px[iid])  # unwound at its cost: realized 0
    elif iid in a.binary and ev.outcome == 1 and px <= 0:
        px = float(a.payout[iid])  # a payout left out: 1 a share
    side = -1 if pos > 0 else 1
    book.on_fill(iid, side, abs(pos), px, fee)  # type: ignore[arg-type]
    book.long_pos[iid] = book.short_pos[iid] = 0  # hedging: both legs closed at px
