"""Positions, tax lots, cash per currency, P&L per instrument and per strategy, the equity curve.

``Portfolio`` is fed fills (and, optionally, orders and market data) and keeps, per instrument
(an instrument is one symbol *on one venue*, so this is also the per-venue position):

- the net position in lots — the sum of signed fills and liquidations, 0 after a settlement
  (``engine.account_events``: every holder of positions moves them so);
- its tax lots (``engine.lots``): FIFO by default, ``lifo`` / ``hifo`` by config, and specific
  lots for one order when a caller names them (``designate_lots``); realized P&L is what the
  closed lots realized, unrealized is the open lots against the mark, ``avg_px`` their average;
- fees, fill counts, volume bought and sold.

Two independent books are kept on purpose:

- the *cost* view: realized (from lots) + unrealized − fees;
- the *cash* view: every fill moves the cash of the instrument's currency by its notional and
  fee; equity = cash + positions at mark.

They must agree — realized + unrealized − fees = equity − initial cash — and the tests check that
they do for any sequence of fills and prices, which catches lot and sign mistakes neither view
shows alone. Totals across currencies convert with ``fx_rates`` (currency → base currency,
default 1.0: a single-currency book needs none).

P&L attribution: every fill is also booked to the strategy that sent the order. Fills carry only
``client_order_id``; the strategy is the one ``on_order`` saw for that id (a NewOrder or an
IntentNew), else the id's top 32 bits (the host's ``strategy_id << 32 | counter`` scheme), so
attribution works even where orders are not seen. The per-strategy books are lot books of their
own, so the strategies' net P&L sums to the portfolio's.

Equity curve: ``sample(ts_ns)`` appends (time, equity, benchmark price); ``engine.analytics``
turns that into Sharpe, drawdown, beta and the rest.

Instrument kinds and accounts (``engine.accounts``, ``engine.betting``;
docs/instruments-and-accounts.md): how a fill moves cash depends on the instrument's cash style —
spot and binary contracts pay the notional; perpetuals, futures and margined FX move cash by
realized P&L and fees only (their equity value is their unrealized P&L); a betting selection's
bets move nothing until the market settles (its value is the green-up value at the mark). The
account events move money without a fill: ``FundingPayment`` and ``Financing`` (cash and their
own P&L component), ``Settlement`` (expiry at a price, resolution 1 / 0, void: the position is flat after it, a
betting selection's too), ``Liquidation`` (a fill no order of ours made), each applied once per
(venue, type, venue id); betting commission is what the venue charges on a market's net
winnings, on the settlement that closes the market. Both views still agree: realized + unrealized − fees + funding + financing −
commission = equity − initial cash, for every kind. A venue whose account hedges keeps a long
and a short book per instrument (``REDUCE_ONLY`` orders close the opposite side's).
``margin(...)``, ``liquidation_price(...)`` and ``exposure(...)`` are the numbers risk reads.

Prices are ticks and sizes lots, converted with each instrument's tick and lot size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.accounts import Account, CashStyle, cash_style, multiplier
from engine.betting import BetBook
from engine.enums import InstrumentKind, OrderFlag
from engine.instruments import Instrument, InstrumentTable
from engine.lots import (
    LOT_METHODS,
    NS_PER_DAY,
    WASH_SALE_DAYS,
    ClosedLot,
    Lot,
    LotBook,
    LotRef,
    WashSaleMonitor,
)
from engine.messages import (
    Bar,
    BookSnapshot,
    IntentNew,
    MarkPrice,
    NewOrder,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    Quote,
    Trade,
)
from engine.portfolio_accounts import ACCOUNT_EVENTS, AccountViews

# the P&L components, each kept per currency (``Portfolio.pnl_components``)
COMPONENTS = ("realized", "unrealized", "fees", "funding", "financing", "commission")
_REDUCE_ONLY = int(OrderFlag.REDUCE_ONLY)


@dataclass(slots=True)
class PositionState:
    """One instrument's position; prices in ticks, money in the instrument's currency.

    ``book`` holds the lots (a ``BetBook`` for a betting selection); in hedging mode it is the
    long leg and ``short_book`` the short leg, ``position`` their sum."""

    instrument_id: int
    multiplier: float  # currency per (tick × lot), contract size included
    position: int = 0
    avg_px: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    mark: int = 0  # 0: never marked (the last fill price is used)
    last_fill_px: int = 0
    fills: int = 0
    bought: int = 0
    sold: int = 0
    venue: str = "sim"
    currency: str = "USD"
    book: LotBook | BetBook | None = None
    kind: str = InstrumentKind.SPOT
    style: str = CashStyle.NOTIONAL  # engine.accounts.cash_style
    short_book: LotBook | None = None  # hedging mode: the short leg
    funding: float = 0.0  # received (> 0) or paid, in ``currency``
    financing: float = 0.0
    commission: float = 0.0
    liquidations: int = 0
    settlements: int = 0
    venue_mark: bool = False  # marked by the venue's MarkPrice: the book no longer marks it

    @property
    def mark_px(self) -> int:
        return self.mark if self.mark > 0 else self.last_fill_px

    @property
    def unrealized(self) -> float:
        b = self.book
        if b is None:
            return 0.0
        if self.style == CashStyle.BET:
            return b.unrealized(self.mark_px)
        u = b.unrealized(self.mark_px) if b.position else 0.0
        s = self.short_book
        if s is not None and s.position:
            u += s.unrealized(self.mark_px)
        return u

    @property
    def market_value(self) -> float:
        """Signed value at the mark: the notional (a bet: its green-up value)."""
        if self.style == CashStyle.BET:
            return self.unrealized
        return self.mark_px * self.position * self.multiplier

    @property
    def equity_value(self) -> float:
        """What the position adds to equity: its market value where buying paid the notional,
        its unrealized P&L where only P&L moves cash (margined, bets)."""
        if self.style == CashStyle.NOTIONAL:
            return self.mark_px * self.position * self.multiplier
        return self.unrealized

    @property
    def long_qty(self) -> int:
        """Lots held long (hedging: the long leg; netting: the position if long)."""
        if self.short_book is not None:
            return self.book.position if self.book is not None else 0
        return max(self.position, 0)

    @property
    def short_qty(self) -> int:
        """Lots held short, >= 0."""
        if self.short_book is not None:
            return -self.short_book.position
        return max(-self.position, 0)

    @property
    def lots(self) -> list[Lot]:
        """The open lots, oldest first (hedging: the long leg's, then the short leg's)."""
        out = [] if self.book is None else list(self.book.lots)
        if self.short_book is not None:
            out.extend(self.short_book.lots)
        return out


@dataclass(slots=True)
class StrategyBook:
    """One strategy's share of the portfolio: its own lots, realized P&L, fees and volume, and
    its share of funding, financing and commission (base currency)."""

    strategy_id: int
    books: dict[int, LotBook | BetBook] = field(default_factory=dict)
    realized: float = 0.0
    fees: float = 0.0
    fills: int = 0
    notional: float = 0.0  # traded, in base currency
    funding: float = 0.0
    financing: float = 0.0
    commission: float = 0.0


class Portfolio(AccountViews):
    """Positions, lots and P&L from fill and account events (see the module docstring).

    ``accounts``: each venue's ``engine.accounts.Account`` (kind, position mode, leverage,
    betting commission); a venue not named has a cash, netting account."""

    def __init__(
        self,
        instruments: InstrumentTable | Iterable[Instrument],
        initial_cash: float | Mapping[str, float] = 0.0,
        *,
        lot_method: str = "fifo",
        base_currency: str = "USD",
        fx_rates: Mapping[str, float] | None = None,
        benchmark: int | None = None,
        wash_sale_days: float = WASH_SALE_DAYS,
        accounts: Mapping[str, Account] | None = None,
    ) -> None:
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        if lot_method not in LOT_METHODS:
            raise ValueError(f"lot_method must be one of {', '.join(LOT_METHODS)}")
        self.lot_method = lot_method
        self.base_currency = base_currency
        self.fx_rates: dict[str, float] = {base_currency: 1.0, **dict(fx_rates or {})}
        for ccy, rate in self.fx_rates.items():
            if not (rate > 0 and np.isfinite(rate)):
                raise ValueError(f"fx rate of {ccy} must be a positive number, not {rate!r}")
        if isinstance(initial_cash, Mapping):
            cash = {str(k): float(v) for k, v in initial_cash.items()}
        else:
            cash = {base_currency: float(initial_cash)}
        self.initial_cash_by_currency = dict(cash)
        self.cash_by_currency: dict[str, float] = dict(cash)
        self.initial_cash = self._to_base_total(cash)
        self.accounts: dict[str, Account] = dict(accounts or {})
        self.positions: dict[int, PositionState] = {}
        for ins in self.instruments:
            self.positions[ins.instrument_id] = self._new_position(ins)
            self.cash_by_currency.setdefault(ins.currency, 0.0)
        if benchmark is not None and benchmark not in self.positions:
            raise ValueError(f"benchmark instrument {benchmark} is not in the instrument table")
        self.benchmark = benchmark
        self.fill_count = 0
        self.unknown_fills = 0  # fills of instruments not in the table
        self.bad_fills = 0  # fills with a non-positive quantity or price, or a non-finite fee
        self.strategies: dict[int, StrategyBook] = {}
        self._strategy_of: dict[int, int] = {}  # client_order_id -> strategy_id, exceptions only
        self._reduce_only: set[int] = set()  # hedging venues' REDUCE_ONLY orders
        self._designated: dict[int, list[LotRef]] = {}
        self.closed_lots_count = 0
        self.last_closed: list[ClosedLot] = []  # the lots the latest fill closed
        self.wash_sales = WashSaleMonitor(int(wash_sale_days * NS_PER_DAY))
        self._curve_ts: list[int] = []
        self._curve_equity: list[float] = []
        self._curve_bench: list[float] = []
        self._curve_marks: list[tuple[int, ...]] = []  # every instrument's mark (ticks), per point
        self._init_accounts()

    def _new_position(self, ins: Instrument) -> PositionState:
        iid, style = ins.instrument_id, cash_style(ins)
        mult = multiplier(ins)
        short: LotBook | None = None
        book: LotBook | BetBook
        if style == CashStyle.BET:
            book = BetBook(iid, ins.lot_size, ins.tick_size)
        else:
            book = LotBook(iid, mult, self.lot_method)
            if self.account(ins.venue).hedging:
                short = LotBook(iid, mult, self.lot_method)
        return PositionState(
            iid,
            mult,
            venue=ins.venue,
            currency=ins.currency,
            book=book,
            kind=ins.kind,
            style=style,
            short_book=short,
        )

    def account(self, venue: str) -> Account:
        """The venue's account (cash, netting where not configured)."""
        acct = self.accounts.get(venue)
        return acct if acct is not None else _CASH_NETTING

    # --- money ---------------------------------------------------------------------------------
    def fx(self, currency: str) -> float:
        """Base-currency value of one unit of ``currency`` (1.0 when not configured)."""
        return self.fx_rates.get(currency, 1.0)

    def _to_base_total(self, amounts: Mapping[str, float]) -> float:
        return sum(v * self.fx(c) for c, v in amounts.items())

    @property
    def cash(self) -> float:
        """All cash, in the base currency."""
        return self._to_base_total(self.cash_by_currency)

    # --- input ---------------------------------------------------------------------------------
    def on_order(self, msg: object) -> None:
        """Remember which strategy sent an order (only where its id does not already say so),
        and a hedging venue's reduce-only orders (they close the opposite side's position)."""
        if not isinstance(msg, NewOrder | IntentNew):
            return
        if msg.client_order_id >> 32 != msg.strategy_id:
            self._strategy_of[msg.client_order_id] = msg.strategy_id
        if msg.flags & _REDUCE_ONLY:
            p = self.positions.get(msg.instrument_id)
            if p is not None and p.short_book is not None:
                self._reduce_only.add(msg.client_order_id)

    def designate_lots(self, client_order_id: int, refs: Sequence[LotRef]) -> None:
        """Specific identification: fills of this order close these lots first, in this order."""
        self._designated[client_order_id] = [(int(a), int(b)) for a, b in refs]

    def strategy_of(self, client_order_id: int) -> int:
        return self._strategy_of.get(client_order_id, client_order_id >> 32)

    def on_fill(self, ev: OrderPartiallyFilled) -> None:
        """Apply one fill (OrderPartiallyFilled or OrderFilled); other events are ignored."""
        if not isinstance(ev, OrderPartiallyFilled):
            return
        p = self.positions.get(ev.instrument_id)
        if p is None:
            self.unknown_fills += 1
            return
        qty = ev.fill_qty
        if qty <= 0 or ev.fill_px <= 0 or not math.isfinite(ev.fee):  # malformed: refuse, count
            self.bad_fills += 1
            return
        signed = qty if ev.side > 0 else -qty
        px = ev.fill_px
        ts = ev.ts_event
        coid = ev.client_order_id
        self.fill_count += 1
        p.fills += 1
        p.last_fill_px = px
        ref = (coid, ev.fill_id)
        select: Sequence[LotRef] = ()
        done = isinstance(ev, OrderFilled) or ev.leaves_qty <= 0
        if self._designated:
            select = self._designated.get(coid, ())
            if done:
                self._designated.pop(coid, None)
        reduce_only = coid in self._reduce_only if self._reduce_only else False
        self._trade(p, signed, px, ts, ref, select, ev.fee, reduce_only)
        self._attribute(coid, p, signed, px, ts, ref, select, ev.fee)
        if done:
            if self._strategy_of:
                self._strategy_of.pop(coid, None)
            if reduce_only:
                self._reduce_only.discard(coid)

    def _trade(
        self,
        p: PositionState,
        signed: int,
        px: int,
        ts: int,
        ref: LotRef,
        select: Sequence[LotRef],
        fee: float,
        reduce_only: bool = False,
    ) -> None:
        """A trade of ``signed`` lots at ``px`` into the position's books and cash (a fill, or
        a liquidation)."""
        if signed > 0:
            p.bought += signed
        else:
            p.sold -= signed
        p.fees += fee
        if p.short_book is not None:
            closed = self._apply_hedged(p, signed, px, ts, ref, select, reduce_only)
        else:
            book = p.book
            assert book is not None
            was_long = book.position > 0
            closed = book.apply(signed, px, ts, ref, select)
            if closed and was_long:
                self.wash_sales.on_sale(p.instrument_id, ts, closed, book.lots)
            if signed > 0 and book.position > 0:
                self.wash_sales.on_buy(p.instrument_id, ts)
            p.position = book.position
            p.avg_px = book.avg_px
        self.last_closed = closed
        realized = 0.0
        if closed:
            self.closed_lots_count += len(closed)
            for c in closed:
                realized += c.pnl
            p.realized += realized
        style = p.style
        if style == CashStyle.NOTIONAL:
            self.cash_by_currency[p.currency] -= signed * px * p.multiplier + fee
        elif style == CashStyle.PNL:
            self.cash_by_currency[p.currency] += realized - fee
        else:  # a bet: only the fee now, the result at settlement
            self.cash_by_currency[p.currency] -= fee

    def _apply_hedged(
        self,
        p: PositionState,
        signed: int,
        px: int,
        ts: int,
        ref: LotRef,
        select: Sequence[LotRef],
        reduce_only: bool,
    ) -> list[ClosedLot]:
        """Hedging mode: a reduce-only trade closes the opposite side's leg (what exceeds it
        opens the trade's own side, as a netting venue would); any other trade opens or grows
        its own side's leg."""
        long_b, short_b = p.book, p.short_book
        assert isinstance(long_b, LotBook) and short_b is not None
        closed: list[ClosedLot] = []
        rest = signed
        if reduce_only:
            target = long_b if signed < 0 else short_b
            q = min(abs(signed), abs(target.position))
            if q:
                part = -q if signed < 0 else q
                closed = target.apply(part, px, ts, ref, select)
                rest = signed - part
        if rest:
            (long_b if rest > 0 else short_b).apply(rest, px, ts, ref)
        p.position = long_b.position + short_b.position
        lead = long_b if long_b.position >= -short_b.position else short_b
        p.avg_px = lead.avg_px
        return closed

    def _strategy_book(self, sid: int, p: PositionState) -> tuple[StrategyBook, Any]:
        sb = self.strategies.get(sid)
        if sb is None:
            sb = self.strategies[sid] = StrategyBook(sid)
        book = sb.books.get(p.instrument_id)
        if book is None:
            if p.style == CashStyle.BET:
                assert isinstance(p.book, BetBook)
                book = BetBook(p.instrument_id, p.book.multiplier, p.book.tick)
            else:
                book = LotBook(p.instrument_id, p.multiplier, self.lot_method)
            sb.books[p.instrument_id] = book
        return sb, book

    def _attribute(
        self,
        coid: int,
        p: PositionState,
        signed: int,
        px: int,
        ts: int,
        ref: LotRef,
        select: Sequence[LotRef],
        fee: float,
    ) -> None:
        sid = self._strategy_of.get(coid, coid >> 32)
        sb = self.strategies.get(sid)
        book = None if sb is None else sb.books.get(p.instrument_id)
        if book is None:
            sb, book = self._strategy_book(sid, p)
        fx = self.fx_rates.get(p.currency, 1.0)
        for c in book.apply(signed, px, ts, ref, select):
            sb.realized += c.pnl * fx
        sb.fees += fee * fx
        sb.fills += 1
        sb.notional += abs(signed) * px * p.multiplier * fx

    def on_event(self, ev: object) -> None:
        """Fills update the portfolio, account events move money and positions, orders feed
        attribution, terminal events end lot designations; every other event is ignored."""
        if isinstance(ev, OrderPartiallyFilled):
            self.on_fill(ev)
        elif isinstance(ev, NewOrder | IntentNew):
            self.on_order(ev)
        elif isinstance(ev, OrderCanceled | OrderExpired | OrderRejected):
            # the order is over: forget what was remembered for it (bounded memory)
            coid = ev.client_order_id
            self._designated.pop(coid, None)
            self._strategy_of.pop(coid, None)
            self._reduce_only.discard(coid)
        elif isinstance(ev, ACCOUNT_EVENTS):
            self.on_account_event(ev)

    def mark(self, instrument_id: int, px_ticks: int) -> None:
        """Set the mark price (ticks) used for unrealized P&L and equity."""
        p = self.positions.get(instrument_id)
        if p is not None and px_ticks > 0:
            p.mark = int(px_ticks)

    def on_market_data(self, msg: object) -> None:
        """Mark from market data: mid of a quote/snapshot top (rounded down), a trade price, or
        a bar close; a perpetual whose venue publishes its mark (``MarkPrice``) is marked by
        that alone, from the first one on (the venue's margin and funding use it)."""
        if isinstance(msg, MarkPrice):
            p = self.positions.get(msg.instrument_id)
            if p is not None and msg.mark_px > 0:
                p.mark, p.venue_mark = int(msg.mark_px), True
            return
        p = self.positions.get(getattr(msg, "instrument_id", -1))
        if p is not None and p.venue_mark:
            return
        if isinstance(msg, Quote):
            if msg.bid_qty > 0 and msg.ask_qty > 0:
                self.mark(msg.instrument_id, (msg.bid_px + msg.ask_px) // 2)
        elif isinstance(msg, Trade):
            self.mark(msg.instrument_id, msg.px)
        elif isinstance(msg, Bar):
            self.mark(msg.instrument_id, msg.close)
        elif isinstance(msg, BookSnapshot) and msg.bid_px and msg.ask_px:
            self.mark(msg.instrument_id, (msg.bid_px[0] + msg.ask_px[0]) // 2)

    # --- equity curve --------------------------------------------------------------------------
    def sample(self, ts_ns: int) -> None:
        """Append a point to the equity curve (and the benchmark's price at that time)."""
        if self._curve_ts and ts_ns <= self._curve_ts[-1]:
            if ts_ns < self._curve_ts[-1]:
                return  # time never runs backwards on the curve
            self._curve_ts.pop()
            self._curve_equity.pop()
            self._curve_bench.pop()
            self._curve_marks.pop()
        self._curve_ts.append(int(ts_ns))
        self._curve_equity.append(self.equity())
        self._curve_marks.append(tuple(p.mark_px for p in self.positions.values()))
        bench = 0.0
        if self.benchmark is not None:
            b = self.positions[self.benchmark]
            bench = b.mark_px * self.instruments.by_id(self.benchmark).tick_size
        self._curve_bench.append(bench)

    def sample_same(self, ts_ns: int) -> None:
        """Append the last point of the equity curve again at ``ts_ns`` (after it), for a caller
        that knows no mark, position, cash or rate moved since: what ``sample`` would append,
        without computing it (the fast replay, ``engine.replay_fast``)."""
        if not self._curve_ts or ts_ns <= self._curve_ts[-1]:
            self.sample(ts_ns)
            return
        self._curve_ts.append(int(ts_ns))
        self._curve_equity.append(self._curve_equity[-1])
        self._curve_marks.append(self._curve_marks[-1])
        self._curve_bench.append(self._curve_bench[-1])

    def equity_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times ns, equity in base currency, benchmark price — 0 where none/unmarked)."""
        return (
            np.asarray(self._curve_ts, dtype=np.int64),
            np.asarray(self._curve_equity, dtype=np.float64),
            np.asarray(self._curve_bench, dtype=np.float64),
        )

    def mark_curve(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(the equity curve's times ns, each instrument's mark in ticks at those times — 0 until
        it was first marked): the price line of the HTML report (ops/report_data.py)."""
        marks = np.asarray(self._curve_marks, dtype=np.int64).reshape(-1, len(self.positions))
        return (
            np.asarray(self._curve_ts, dtype=np.int64),
            {iid: marks[:, k].copy() for k, iid in enumerate(self.positions)},
        )

    # --- views -----------------------------------------------------------------------------------
    def position(self, instrument_id: int) -> int:
        p = self.positions.get(instrument_id)
        return 0 if p is None else p.position

    def lots(self, instrument_id: int) -> list[Lot]:
        """Open tax lots of an instrument, oldest first."""
        p = self.positions.get(instrument_id)
        return [] if p is None else p.lots

    def positions_by_venue(self) -> dict[str, dict[str, int]]:
        """Non-zero positions, grouped by venue then symbol."""
        out: dict[str, dict[str, int]] = {}
        for iid, p in self.positions.items():
            if p.position:
                out.setdefault(p.venue, {})[self.instruments.by_id(iid).symbol] = p.position
        return out

    def market_value(self, instrument_id: int) -> float:
        """Signed value of a position at its mark, in the base currency."""
        p = self.positions.get(instrument_id)
        return 0.0 if p is None else p.market_value * self.fx(p.currency)

    def weight(self, instrument_id: int) -> float:
        """Position value as a fraction of equity (0.0 when equity is not positive)."""
        eq = self.equity()
        return self.market_value(instrument_id) / eq if eq > 0 else 0.0

    def realized(self) -> float:
        return sum(p.realized * self.fx(p.currency) for p in self.positions.values())

    def unrealized(self) -> float:
        return sum(p.unrealized * self.fx(p.currency) for p in self.positions.values())

    def fees(self) -> float:
        return sum(p.fees * self.fx(p.currency) for p in self.positions.values())

    def equity(self) -> float:
        """Cash plus every position's equity value at its mark (the notional where it was paid
        for, the unrealized P&L where it is margined or a bet), in the base currency."""
        return self.cash + sum(
            p.equity_value * self.fx(p.currency) for p in self.positions.values()
        )

    def net_pnl(self) -> float:
        """Realized + unrealized − fees + funding + financing − commission (equals equity −
        initial cash)."""
        return (
            self.realized()
            + self.unrealized()
            - self.fees()
            + self.funding()
            + self.financing()
            - self.commission()
        )

    def strategy_pnl(self) -> dict[int, dict[str, float]]:
        """P&L attribution: per strategy id, realized / unrealized / fees / funding / financing /
        commission / net / fills / traded notional (base currency); the nets sum to
        ``net_pnl()`` (account events without an order are shared by the strategies' positions,
        strategy 0 holding what no strategy does)."""
        out: dict[int, dict[str, float]] = {}
        for sid, sb in sorted(self.strategies.items()):
            unreal = 0.0
            for iid, book in sb.books.items():
                p = self.positions[iid]
                if book.position or (p.style == CashStyle.BET and book.bets):
                    unreal += book.unrealized(p.mark_px) * self.fx(p.currency)
            other = sb.funding + sb.financing - sb.commission
            out[sid] = {
                "realized": sb.realized,
                "unrealized": unreal,
                "fees": sb.fees,
                "funding": sb.funding,
                "financing": sb.financing,
                "commission": sb.commission,
                "net": sb.realized + unreal - sb.fees + other,
                "fills": sb.fills,
                "notional": sb.notional,
            }
        return out

    def summary(self) -> dict[str, Any]:
        """Totals and one entry per instrument, plain types only (ready for JSON)."""
        per = {
            iid: {
                "position": p.position,
                "venue": p.venue,
                "currency": p.currency,
                "avg_px": p.avg_px,
                "mark": p.mark_px,
                "realized": p.realized,
                "unrealized": p.unrealized,
                "fees": p.fees,
                "fills": p.fills,
                "bought": p.bought,
                "sold": p.sold,
                "open_lots": len(p.lots),
                "kind": p.kind,
                "funding": p.funding,
                "financing": p.financing,
                "commission": p.commission,
                "liquidations": p.liquidations,
                "settlements": p.settlements,
            }
            | ({"long": p.long_qty, "short": p.short_qty} if p.short_book is not None else {})
            for iid, p in self.positions.items()
        }
        return {
            "positions": {iid: p.position for iid, p in self.positions.items()},
            "realized": self.realized(),
            "unrealized": self.unrealized(),
            "fees": self.fees(),
            "funding": self.funding(),
            "financing": self.financing(),
            "commission": self.commission(),
            "net_pnl": self.net_pnl(),
            "pnl_components": self.pnl_components(),
            "cash": self.cash,
            "cash_by_currency": dict(self.cash_by_currency),
            "equity": self.equity(),
            "fills": self.fill_count,
            "lot_method": self.lot_method,
            "instruments": per,
            "by_strategy": self.strategy_pnl(),
            "wash_sales": len(self.wash_sales.flagged),
            "wash_sale_disallowed_loss": self.wash_sales.disallowed_loss,
        } | self.account_summary()


_CASH_NETTING = Account()
