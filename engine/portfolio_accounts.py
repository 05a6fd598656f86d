"""The portfolio's account side: money that moves without a fill, and the margin numbers.

``AccountViews`` is the part of ``engine.portfolio.Portfolio`` that applies the account events
(``FundingPayment``, ``Financing``, ``Settlement``, ``Liquidation``, ``MarginStatus``) and answers
what risk and the summary read of an account: ``margin(venue)``, ``liquidation_price(iid)``,
``exposure(market_id)``, P&L by component and currency. Kept apart from the fill path so each
file has one job; the formulas are ``engine.accounts``' and ``engine.betting``'s.

Every amount is booked in its own currency (cash and the component's per-currency total) and
valued in the base (account) currency with the portfolio's fx rates. A strategy's share of an
event no order of its made (funding, financing, a settlement, a liquidation, commission) follows
its own position in the instrument; what no strategy holds goes to strategy 0. A settlement
leaves the position flat, a betting selection's too (``engine.account_events``). A venue's id on
an event (``payment_id``, ``settlement_id``, ``liquidation_id``; 0: none) applies it once: the
same (venue, type, id) twice is a repeat. Betting
commission is the venue's own figure (``Settlement.fee`` on the settlement that closes a market:
the rate on its net winnings), shared by the strategies that won in that market.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from engine.account_events import SeenEvents
from engine.accounts import (
    CashStyle,
    MarginSummary,
    initial_margin,
    liquidation_price,
    maintenance_margin,
    margin_call,
    notional,
)
from engine.betting import BetBook, market_exposure
from engine.enums import InstrumentKind, SettlementKind
from engine.lots import LotBook
from engine.messages import Financing, FundingPayment, Liquidation, MarginStatus, Settlement

if TYPE_CHECKING:
    from engine.portfolio import Portfolio, PositionState

ACCOUNT_EVENTS = (FundingPayment, Financing, Settlement, Liquidation, MarginStatus)
_CASH_COMPONENTS = ("funding", "financing", "commission")


class AccountViews:
    """Account events and margin views of a ``Portfolio`` (a base class of it)."""

    def _init_accounts(self: Portfolio) -> None:
        # funding / financing / commission, each per currency (received > 0, commission paid)
        self.components: dict[str, dict[str, float]] = {c: {} for c in _CASH_COMPONENTS}
        self.venue_margin: dict[str, MarginStatus] = {}  # the venues' own latest statement
        self.unknown_events = 0  # account events of instruments not in the table
        self.bad_events = 0  # non-finite amounts, non-positive prices or quantities
        self.duplicate_events = 0  # an id already applied
        self._seen = SeenEvents()  # (venue, type, venue id): applied once
        self._market_net: dict[str, dict[int, float]] = {}  # market -> strategy -> settled P&L

    # --- input ---------------------------------------------------------------------------------
    def on_account_event(self: Portfolio, ev: object) -> None:
        """Apply one account event (``ACCOUNT_EVENTS``); anything else is ignored."""
        if isinstance(ev, MarginStatus):
            self.venue_margin[ev.venue] = ev
            return
        if not isinstance(ev, FundingPayment | Financing | Settlement | Liquidation):
            return
        p = self.positions.get(ev.instrument_id)
        if p is None:
            self.unknown_events += 1
            return
        if not self._seen.first(p.venue, ev):
            self.duplicate_events += 1
            return
        if isinstance(ev, FundingPayment | Financing):
            self._on_payment(p, ev)
        elif isinstance(ev, Settlement):
            self._on_settlement(p, ev)
        else:
            self._on_liquidation(p, ev)

    def _book_cash(self: Portfolio, component: str, currency: str, amount: float) -> None:
        """Cash and the component's per-currency total (commission: paid > 0, cash falls)."""
        self.cash_by_currency[currency] = self.cash_by_currency.get(currency, 0.0) + (
            -amount if component == "commission" else amount
        )
        per = self.components[component]
        per[currency] = per.get(currency, 0.0) + amount

    def _on_payment(self: Portfolio, p: PositionState, ev: FundingPayment | Financing) -> None:
        if not math.isfinite(ev.amount):
            self.bad_events += 1
            return
        component = "funding" if isinstance(ev, FundingPayment) else "financing"
        self._book_cash(component, ev.currency, ev.amount)
        in_pos = ev.amount * self.fx(ev.currency) / self.fx(p.currency)
        if component == "funding":
            p.funding += in_pos
        else:
            p.financing += in_pos
        base = ev.amount * self.fx(ev.currency)
        for sb, share in self._holders(p):
            setattr(sb, component, getattr(sb, component) + base * share)

    def _holders(self: Portfolio, p: PositionState) -> list[tuple[Any, float]]:
        """(strategy book, share) of a linear amount on the position: each strategy's position
        over the sum of theirs; all to strategy 0 when they sum to nothing."""
        iid = p.instrument_id
        held = [(sb, b.position) for sb in self.strategies.values() if (b := sb.books.get(iid))]
        total = sum(q for _, q in held)
        if total == 0:
            return [(self._strategy_book(0, p)[0], 1.0)]
        return [(sb, q / total) for sb, q in held if q]

    # --- settlement ------------------------------------------------------------------------------
    def _on_settlement(self: Portfolio, p: PositionState, ev: Settlement) -> None:
        ins = self.instruments.by_id(p.instrument_id)
        px = ev.px
        binary = ev.kind == SettlementKind.RESOLVED and ins.kind == InstrumentKind.BINARY
        if binary and px <= 0 and ev.outcome == 1:  # a payout left out: 1 a share
            px = round(1.0 / ins.tick_size)
        if px < 0 or not math.isfinite(ev.fee):
            self.bad_events += 1
            return
        p.settlements += 1
        if ev.partial and ev.kind == SettlementKind.VOID and isinstance(p.book, BetBook):
            self._void_bet(p, ev)  # one bet voided, the selection's others stand
            return
        holders = self._holders(p) if ev.fee and p.style != CashStyle.BET else []
        if ev.kind == SettlementKind.VOID:
            self._void(p)
        elif p.style == CashStyle.BET:
            self._settle_bets(p, ins.market_id, ev.outcome == 1)
        else:
            self._close_at(p, px, ev.ts_event)
            if px > 0:
                p.mark = px
        if not ev.fee:
            return
        if p.style == CashStyle.BET:
            self._charge_commission(p, ins.market_id, ev.fee)
        else:  # a venue's settlement fee: a fee like a fill's, shared by the holders
            p.fees += ev.fee
            self.cash_by_currency[p.currency] -= ev.fee
            for sb, share in holders:
                sb.fees += ev.fee * share * self.fx(p.currency)

    def _close_at(self: Portfolio, p: PositionState, px: int, ts: int) -> None:
        """Close every leg of the position at ``px`` (an expiry or a resolution: no fee)."""
        realized, flat_units = 0.0, 0
        for book in (p.book, p.short_book):
            if isinstance(book, LotBook) and book.position:
                flat_units += book.position
                realized += sum(c.pnl for c in book.apply(-book.position, px, ts, (0, 0)))
        p.realized += realized
        p.position, p.avg_px = 0, 0.0
        if p.style == CashStyle.NOTIONAL:
            self.cash_by_currency[p.currency] += flat_units * px * p.multiplier
        else:
            self.cash_by_currency[p.currency] += realized
        fx = self.fx(p.currency)
        for sb in self.strategies.values():
            b = sb.books.get(p.instrument_id)
            if isinstance(b, LotBook) and b.position:
                sb.realized += sum(c.pnl for c in b.apply(-b.position, px, ts, (0, 0))) * fx

    def _void(self: Portfolio, p: PositionState) -> None:
        """A voided market: bets undone (nothing was paid: nothing to return); contracts unwound
        at their own cost, so realized stays as it was and what was paid comes back. Fees stay.

        The strategies' lots differ from the portfolio's, so their books are closed at the
        position's net average cost and what that leaves unmatched goes to strategy 0 (the
        strategies' nets still sum to the portfolio's)."""
        mark, fx = p.mark_px, self.fx(p.currency)
        lost = p.unrealized  # the portfolio's change: its unrealized P&L, nothing realized
        net_basis, net_pos = 0, 0
        for book in (p.book, p.short_book):
            if isinstance(book, BetBook):
                book.clear()
            elif isinstance(book, LotBook) and book.position:
                sign = 1 if book.position > 0 else -1
                net_basis += sign * book.basis
                net_pos += book.position
                _clear(book)
        if p.style == CashStyle.NOTIONAL:
            self.cash_by_currency[p.currency] += net_basis * p.multiplier
        p.position, p.avg_px = 0, 0.0
        at = net_basis / net_pos if net_pos else float(mark)
        moved = 0.0  # the strategies' change, instrument currency
        for sb in self.strategies.values():
            b = sb.books.get(p.instrument_id)
            if isinstance(b, BetBook):
                moved -= b.unrealized(mark)
                b.clear()
            elif isinstance(b, LotBook) and b.position:
                u = b.unrealized(mark)
                r = sum(c.pnl for c in b.apply(-b.position, at, 0, (0, 0)))  # type: ignore[arg-type]
                sb.realized += r * fx
                moved += r - u
        rest = -lost - moved
        if abs(rest) > 1e-12:
            self._strategy_book(0, p)[0].realized += rest * fx

    def _void_bet(self: Portfolio, p: PositionState, ev: Settlement) -> None:
        """Undo one voided bet (``ev.position`` lots at ``ev.px`` odds): nothing was paid, so
        nothing moves but the selection's win / lose book. The strategies holding that side
        give it up in strategy order, up to what each backed (laid)."""
        assert isinstance(p.book, BetBook)
        p.book.void_bet(ev.position, ev.px)
        p.position = p.book.position
        left, back = abs(ev.position), ev.position > 0
        for sid in sorted(self.strategies):
            b = self.strategies[sid].books.get(p.instrument_id)
            if not left or not isinstance(b, BetBook):
                continue
            q = min(left, b.backed if back else b.laid)
            if q:
                b.void_bet(q if back else -q, ev.px)
                left -= q

    def _settle_bets(self: Portfolio, p: PositionState, market: str, won: bool) -> None:
        """A selection resolved: its bets pay (each strategy's result is remembered for the
        market's commission)."""
        assert isinstance(p.book, BetBook)
        result = p.book.settle(won)
        p.position, p.avg_px = 0, 0.0  # settled: flat (its P&L realized)
        p.realized += result
        self.cash_by_currency[p.currency] += result
        fx = self.fx(p.currency)
        nets = self._market_net.setdefault(market, {})
        for sid, sb in self.strategies.items():
            b = sb.books.get(p.instrument_id)
            if isinstance(b, BetBook) and b.bets:
                r = b.settle(won) * fx
                sb.realized += r
                nets[sid] = nets.get(sid, 0.0) + r

    def _charge_commission(self: Portfolio, p: PositionState, market: str, fee: float) -> None:
        """The venue's commission on the market's net winnings (``Settlement.fee``, on the
        settlement that closes the market), shared by the strategies that won there."""
        self._book_cash("commission", p.currency, fee)
        p.commission += fee
        fx = self.fx(p.currency)
        gains = {sid: v for sid, v in self._market_net.pop(market, {}).items() if v > 0}
        total = sum(gains.values())
        if total <= 0:
            gains, total = {0: 1.0}, 1.0
        for sid, g in gains.items():
            self._strategy_book(sid, p)[0].commission += fee * fx * g / total

    # --- liquidation ---------------------------------------------------------------------------
    def _on_liquidation(self: Portfolio, p: PositionState, ev: Liquidation) -> None:
        if ev.qty <= 0 or ev.px <= 0 or not math.isfinite(ev.fee):
            self.bad_events += 1
            return
        signed = ev.qty if ev.side > 0 else -ev.qty
        ref = (0, ev.liquidation_id)
        p.liquidations += 1
        self._trade(p, signed, ev.px, ev.ts_event, ref, (), ev.fee, reduce_only=True)
        self._attribute_close(p, signed, ev.px, ev.ts_event, ref, ev.fee)

    def _attribute_close(
        self: Portfolio, p: PositionState, signed: int, px: int, ts: int, ref: Any, fee: float
    ) -> None:
        """A closing trade no order made, shared by the strategies holding the other way (in
        strategy-id order), the rest (and its fee share) to strategy 0."""
        fx = self.fx(p.currency)
        left, total = abs(signed), abs(signed)
        sign = 1 if signed > 0 else -1
        for sid in sorted(self.strategies):
            sb = self.strategies[sid]
            b = sb.books.get(p.instrument_id)
            if not left or b is None or b.position * sign >= 0:
                continue
            q = min(left, abs(b.position))
            sb.realized += sum(c.pnl for c in b.apply(sign * q, px, ts, ref)) * fx
            sb.fees += fee * q / total * fx
            left -= q
        if left:
            sb, b = self._strategy_book(0, p)
            sb.realized += sum(c.pnl for c in b.apply(sign * left, px, ts, ref)) * fx
            sb.fees += fee * left / total * fx

    # --- views -----------------------------------------------------------------------------------
    def _component(self: Portfolio, name: str) -> float:
        return sum(v * self.fx(c) for c, v in self.components[name].items())

    def funding(self: Portfolio) -> float:
        """Funding received (> 0) or paid, in the base currency."""
        return self._component("funding")

    def financing(self: Portfolio) -> float:
        """Financing received (> 0) or paid, in the base currency."""
        return self._component("financing")

    def commission(self: Portfolio) -> float:
        """Betting commission paid, in the base currency."""
        return self._component("commission")

    def pnl_components(self: Portfolio) -> dict[str, dict[str, Any]]:
        """Each P&L component per currency and in the base currency: ``{"realized":
        {"by_currency": {...}, "total": x}, ...}`` (fees and commission as paid, > 0)."""
        per: dict[str, dict[str, float]] = {"realized": {}, "unrealized": {}, "fees": {}}
        for p in self.positions.values():
            for name, v in (("realized", p.realized), ("unrealized", p.unrealized)):
                if v:
                    per[name][p.currency] = per[name].get(p.currency, 0.0) + v
            if p.fees:
                per["fees"][p.currency] = per["fees"].get(p.currency, 0.0) + p.fees
        per |= {c: dict(self.components[c]) for c in _CASH_COMPONENTS}
        return {
            name: {
                "by_currency": by,
                "total": sum(v * self.fx(c) for c, v in by.items()),
            }
            for name, by in per.items()
        }

    def margin(
        self: Portfolio, venue: str | None = None, currency: str | None = None
    ) -> MarginSummary:
        """Margin of the margined positions (of ``venue``, or all), money in the base currency,
        the collateral the whole portfolio's equity (one cross-margin account). With
        ``currency``: that currency's cross-margin account alone (a USDT-margined book: its
        cash and positions in USDT), money in that currency — how the simulated venue and
        USD-M exchanges count it."""
        im = mm = gross = 0.0
        for iid, p in self.positions.items():
            if p.style != CashStyle.PNL or (venue is not None and p.venue != venue):
                continue
            if currency is not None and p.currency != currency:
                continue
            qty = p.long_qty + p.short_qty  # both legs of a hedged position post margin
            if not qty:
                continue
            ins = self.instruments.by_id(iid)
            fx, mark = (1.0 if currency else self.fx(p.currency)), p.mark_px
            gross += notional(ins, qty, mark) * fx
            im += initial_margin(ins, qty, mark, self.account(p.venue).leverage) * fx
            mm += maintenance_margin(ins, qty, mark) * fx
        if currency is None:
            eq = self.equity()
        else:
            eq = self.cash_by_currency.get(currency, 0.0) + sum(
                p.equity_value for p in self.positions.values() if p.currency == currency
            )
        return MarginSummary(eq, im, mm, gross, margin_call(eq, mm))

    def liquidation_price(self: Portfolio, instrument_id: int) -> float:
        """The mark (ticks) at which the account would reach its maintenance margin through this
        position alone, the others held at their marks (cross margin); 0.0: none."""
        p = self.positions[instrument_id]
        if p.style != CashStyle.PNL or not p.position:
            return 0.0
        ins = self.instruments.by_id(instrument_id)
        fx = self.fx(p.currency)
        others_mm = self.margin().maintenance - maintenance_margin(ins, p.position, p.mark_px) * fx
        collateral = (self.equity() - others_mm) / fx - p.unrealized
        book = p.book if p.position > 0 or p.short_book is None else p.short_book
        return liquidation_price(ins, p.position, book.avg_px, collateral)

    def exposure(self: Portfolio, market_id: str) -> float:
        """A betting market's exposure: the worst case over which selection wins, >= 0, in the
        base currency. Where the table lists one selection of the market, another may win."""
        books: dict[int, tuple[float, float]] = {}
        fx = 1.0
        for iid, p in self.positions.items():
            if p.style == CashStyle.BET and self.instruments.by_id(iid).market_id == market_id:
                b = p.book
                assert isinstance(b, BetBook)
                books[iid] = (b.win, b.lose)
                fx = self.fx(p.currency)
        return market_exposure(books, others=len(books) < 2) * fx

    def exposures(self: Portfolio) -> dict[str, float]:
        """Every betting market's exposure with bets open."""
        markets = {
            self.instruments.by_id(iid).market_id
            for iid, p in self.positions.items()
            if p.style == CashStyle.BET and isinstance(p.book, BetBook) and p.book.bets
        }
        return {m: self.exposure(m) for m in sorted(markets)}

    def account_summary(self: Portfolio) -> dict[str, Any]:
        """The account's part of ``summary()``: margin (where anything is margined), betting
        exposures, liquidation prices, the event counters."""
        out: dict[str, Any] = {}
        if any(p.style == CashStyle.PNL for p in self.positions.values()):
            out["margin"] = self.margin().as_dict()
            out["liquidation_px"] = {
                iid: self.liquidation_price(iid)
                for iid, p in self.positions.items()
                if p.style == CashStyle.PNL and p.position
            }
        if any(p.style == CashStyle.BET for p in self.positions.values()):
            out["exposure"] = self.exposures()
        out["account_events"] = {
            "unknown": self.unknown_events,
            "bad": self.bad_events,
            "duplicate": self.duplicate_events,
        }
        return out


def _clear(book: LotBook) -> None:
    book.lots.clear()
    book.position = 0
    book.basis = 0
