"""The simulated exchange's accounts: what the market itself does to positions, by instrument kind.

A spot position only changes when we trade. Every other kind has money moving, or a position
closing, on the venue's own schedule, and a backtest that ignores it is wrong by exactly that
money: a perpetual pays funding every interval, a dated future settles at its expiry, a binary
contract or a betting selection resolves (or is voided), an FX position is financed at every
rollover, and a margin account is liquidated when its equity no longer covers the maintenance
margin. ``SimAccounts`` keeps the venue's side of that (its own cash ledger per currency, the
average cost and the bets of each instrument) and emits the account events of
``engine.messages`` (``FundingPayment``, ``Financing``, ``Settlement``, ``Liquidation``,
``MarginStatus``) at venue time, through the venue's outbox like its fills. Formulas and
conventions: docs/backtesting.md ("Instrument kinds in the simulator"); the money they move is
booked by ``engine.portfolio``.

Scheduled events happen when the venue's clock passes their time (market data or a poll), in
time order with the requests that reach the venue: a backtest whose data ends before an expiry
leaves the position open, as the market would.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from engine import accounts as acc
from engine.betting import betfair_ladder_ok, commission
from engine.enums import InstrumentKind, SettlementKind
from engine.instruments import Instrument
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderCanceled,
    OrderExpired,
    OrderFlag,
    OrderType,
    Settlement,
)

if TYPE_CHECKING:
    from engine.venues.sim import SimExchange

__all__ = ["SimAccounts"]


# scheduled event kinds, in the order they happen at one instant
_FUNDING, _FINANCING, _EXPIRY, _RESOLVE = 0, 1, 2, 3


@dataclass(slots=True, eq=False)
class _Book:
    """The venue's books of one instrument (lots and ticks as on the wire)."""

    ins: Instrument
    mult: float  # money per tick per lot: tick_size * lot_size * contract_size
    pos: int = 0
    avg_px: float = 0.0  # average cost of the open position, in ticks
    last_px: int = 0  # last traded price (the mark when the book has no two sides)
    stake: float = 0.0  # betting: sum of side * stake (lots): back > 0, lay < 0
    win: float = 0.0  # betting: sum of side * stake * (odds - 1) (lots x odds)
    settled: str = ""  # why it no longer trades ("" while it does)

    @property
    def margined(self) -> bool:
        return self.ins.maintenance_margin > 0 or self.ins.initial_margin > 0


class SimAccounts:
    """The account side of one ``SimExchange``: see the module docstring.

    ``balance``: the account's starting cash per currency (a margin account's equity starts
    there); ``commission_pct``: a betting venue's commission on a market's net winnings, in
    percent; ``liquidation_buffer``: liquidate when equity < maintenance margin x this (1.0:
    as soon as the margin call comes); ``leverage``: the account's cap (0: none), which raises
    the initial margin it reports. The formulas are ``engine.accounts``' and
    ``engine.betting``'s, the portfolio's own."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        venue: str = "sim",
        balance: Mapping[str, float] | None = None,
        commission_pct: float = 0.0,
        liquidation_buffer: float = 1.0,
        leverage: float = 0.0,
    ) -> None:
        if not 0 <= commission_pct < 100:
            raise ValueError(f"commission_pct must be in [0, 100), got {commission_pct}")
        if not 0 < liquidation_buffer <= 1:
            raise ValueError(f"liquidation_buffer must be in (0, 1], got {liquidation_buffer}")
        self.venue = venue
        self.commission = float(commission_pct) / 100.0
        self.liquidation_buffer = float(liquidation_buffer)
        self.leverage = float(leverage)
        #: betting prices reach the venue inverted (``engine.venues.sim_odds``): odds = pivot - px
        self.odds_pivots: dict[int, int] = {}
        self.books: dict[int, _Book] = {
            i.instrument_id: _Book(i, acc.multiplier(i)) for i in instruments
        }
        #: the venue's cash per currency: the balance, less what fills cost, plus what the
        #: account events paid (equity = cash + positions at the mark)
        self.cash: dict[str, float] = dict(balance or {})
        self._schedule: list[tuple[int, int, int]] = []  # (t, kind, instrument id)
        self._started = False
        self._in_call: dict[str, bool] = {}
        #: event ids (payment / settlement / liquidation): the venue's name in the top bits, so
        #: two venues' events never share one (the portfolio applies each id once)
        self._next_id = (zlib.crc32(venue.encode()) & 0x7FFF) << 40
        self._markets: dict[str, list[int]] = {}
        for iid, b in self.books.items():
            if b.ins.kind == InstrumentKind.BETTING and b.ins.resolution and b.ins.resolves_ns:
                self._markets.setdefault(b.ins.market_id, []).append(iid)  # those that settle
        self._market_pnl: dict[str, float] = {}
        #: the currencies of margined instruments, in a fixed order (the events' order)
        self._margin_ccys = sorted({b.ins.currency for b in self.books.values() if b.margined})
        self._margined = bool(self._margin_ccys)
        #: a margined position changed since the last margin check
        self.changed = False

    @staticmethod
    def of(instruments: Any) -> list[Instrument]:
        """The ``Instrument`` definitions among what ``SimExchange`` takes (a bare
        ``(tick, lot)`` pair has no kind: spot)."""
        if isinstance(instruments, Mapping):
            return [v for v in instruments.values() if isinstance(v, Instrument)]
        return [i for i in instruments if isinstance(i, Instrument)]

    @staticmethod
    def needed(instruments: Iterable[Instrument]) -> bool:
        """Whether any instrument has anything for the accounts to do (spot alone: no)."""
        return any(
            i.kind != InstrumentKind.SPOT or i.initial_margin > 0 or i.maintenance_margin > 0
            for i in instruments
        )

    # --- what the venue tells us ----------------------------------------------------------------
    def refuse(self, sim: SimExchange, o: NewOrder) -> str:
        """Why the venue refuses a new order for the market's state or the account's margin
        ("" if it does not)."""
        b = self.books.get(o.instrument_id)
        if b is None:
            return ""
        if b.settled:
            return f"instrument {b.ins.symbol} no longer trades: {b.settled}"
        limit = o.order_type == OrderType.LIMIT
        if limit:
            real = self.real_px(b, o.px)
            if not b.ins.px_in_range(real):
                return f"price {real} ticks is outside what {b.ins.kind} trades at"
            if b.ins.kind == InstrumentKind.BETTING and not betfair_ladder_ok(
                real, b.ins.tick_size
            ):
                return f"odds {real * b.ins.tick_size:g} are not on the betting ladder"
        if b.margined:
            return self._margin_refusal(sim, b, o, o.px if limit else self.mark(sim, b))
        return ""

    def _margin_refusal(self, sim: SimExchange, b: _Book, o: NewOrder, px: int) -> str:
        """An order that adds to a margined position needs the initial margin of the
        account's positions and its own within the account's equity (a reducing one never)."""
        if sim._legs is not None:  # hedging: only a reduce-only order closes (a leg)
            added = 0 if o.flags & OrderFlag.REDUCE_ONLY else o.qty
        else:
            added = o.qty if o.side * b.pos >= 0 else max(0, o.qty - abs(b.pos))
        if added == 0 or px <= 0:
            return ""
        equity, im, _ = self.margin(sim, b.ins.currency)
        need = im + acc.initial_margin(b.ins, added, px, self.leverage)
        if need > equity:
            return (
                f"insufficient margin: {need:.2f} {b.ins.currency} of initial margin needed, "
                f"equity {equity:.2f}"
            )
        return ""

    def real_px(self, b: _Book, px: int) -> int:
        """A price as the market quotes it (betting odds come in inverted)."""
        k = self.odds_pivots.get(b.ins.instrument_id)
        return k - px if k is not None and px else px

    def on_fill(
        self, iid: int, side: int, px: int, qty: int, fee: float, reduce_only: bool = False
    ) -> None:
        """A fill of ours moved cash and the position (hedging: ``sim._legs`` keeps the legs;
        here the net)."""
        b = self.books.get(iid)
        if b is None:
            return
        ccy = b.ins.currency
        if b.ins.kind == InstrumentKind.BETTING:
            odds = self.real_px(b, px) * b.ins.tick_size
            b.stake += side * qty
            b.win += side * qty * (odds - 1.0)
            self.cash[ccy] = self.cash.get(ccy, 0.0) - fee
        else:
            self.cash[ccy] = self.cash.get(ccy, 0.0) - side * px * qty * b.mult - fee
        self._move(b, side * qty, px)
        b.last_px = px
        if b.margined:
            self.changed = True

    @staticmethod
    def _move(b: _Book, d: int, px: int) -> None:
        """Position and average cost after a trade of ``d`` lots (signed) at ``px``."""
        pos = b.pos
        new = pos + d
        if pos == 0 or (pos > 0) != (new > 0) or new == 0:
            b.avg_px = float(px) if new else 0.0  # opened, flipped or closed
        elif abs(new) > abs(pos):
            b.avg_px = (b.avg_px * abs(pos) + px * abs(d)) / abs(new)
        b.pos = new

    def on_trade(self, iid: int, px: int) -> None:
        b = self.books.get(iid)
        if b is not None:
            b.last_px = px

    def mark(self, sim: SimExchange, b: _Book) -> int:
        """The mark in ticks: the book's mid rounded down (as the portfolio marks), else the
        last trade."""
        inst = sim._insts.get(b.ins.instrument_id)
        if inst is not None:
            bb, _ = inst.book.best_bid()
            ba, _ = inst.book.best_ask()
            if bb and ba:
                return (bb + ba) // 2
        return b.last_px

    @staticmethod
    def legs(sim: SimExchange, b: _Book) -> list[tuple[int, float]]:
        """(lots, average cost) of each open leg: a hedging venue's long and short apart, a
        netting venue's one position."""
        if sim._legs is not None:
            iid = b.ins.instrument_id
            return [(lg.qty, lg.avg_px) for lg in sim._legs.of(iid) if lg.qty]
        return [(b.pos, b.avg_px)] if b.pos else []

    # --- the schedule ---------------------------------------------------------------------------
    def _start(self, t: int) -> None:
        """The first market time the venue sees: schedule from there."""
        self._started = True
        for iid, b in self.books.items():
            ins = b.ins
            if ins.kind == InstrumentKind.PERPETUAL and ins.funding_interval_s > 0:
                self._push(acc.next_funding_ns(ins, t), _FUNDING, iid)
            elif ins.kind == InstrumentKind.FX:
                self._push(acc.next_rollover_ns(t), _FINANCING, iid)
            if ins.kind == InstrumentKind.FUTURE and ins.expiry_ns > 0:
                self._push(ins.expiry_ns, _EXPIRY, iid)
            if ins.resolution and ins.resolves_ns > 0:
                self._push(ins.resolves_ns, _RESOLVE, iid)

    def _push(self, t: int, kind: int, iid: int) -> None:
        heapq.heappush(self._schedule, (t, kind, iid))

    def run_due(self, sim: SimExchange, market_t: int, offset: int) -> None:
        """Every scheduled event the market's time ``market_t`` (a market-data message's
        ``ts_event``) has passed, in time order. The schedule is market time (UTC ns: a
        replay's, a live venue's or the synthetic clock); the venue's clock may differ
        (``offset`` = venue time - market time: 0 in a backtest, the monotonic clock's lead in
        a process). Requests that reached the venue before an event are matched first."""
        if not self._started:
            self._start(market_t)
        q = self._schedule
        while q and q[0][0] <= market_t:
            due, kind, iid = heapq.heappop(q)
            b = self.books[iid]
            if b.settled:
                continue
            sim._advance(due + offset)  # what arrived before it, against the book of then
            sim._clock = max(sim._clock, due + offset)
            if kind == _FUNDING:
                self._funding(sim, b, due)
                self._push(acc.next_funding_ns(b.ins, due), _FUNDING, iid)
            elif kind == _FINANCING:
                self._financing(sim, b, due, acc.rollover_days(due))
                self._push(acc.next_rollover_ns(due), _FINANCING, iid)
            elif kind == _EXPIRY:
                self._settle(sim, b, SettlementKind.EXPIRY, self.mark(sim, b), 0, due, "expired")
            else:
                self._resolve(sim, b, due)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _funding(self, sim: SimExchange, b: _Book, t: int) -> None:
        """amount = -position x contract_size x lot_size x mark x rate (longs pay a positive
        rate), in the instrument's currency."""
        mark = self.mark(sim, b)
        if b.pos == 0 or mark <= 0 or b.ins.funding_rate == 0:
            return
        rate = b.ins.funding_rate
        amount = acc.funding_amount(b.ins, b.pos, mark, rate)
        self._book_cash(b, amount)
        ccy = b.ins.currency
        recv = self._recv(sim, t)
        iid = b.ins.instrument_id
        ev = FundingPayment(iid, rate, mark, b.pos, amount, ccy, t, recv, payment_id=self._id())
        sim._emit(ev, sim._clock)

    def _financing(self, sim: SimExchange, b: _Book, t: int, days: int) -> None:
        """amount = |units| x mid x annual rate / 365 x days, the rate of the position's side as
        the account sees it (< 0: paid), in the quote currency."""
        mark = self.mark(sim, b)
        if mark <= 0 or not self.legs(sim, b):
            return
        # each leg at its own side's rate (a hedged long and short both pay or receive)
        amount = sum(acc.financing_amount(b.ins, q, mark, days) for q, _ in self.legs(sim, b))
        if amount == 0:
            return
        self._book_cash(b, amount)
        iid, recv = b.ins.instrument_id, self._recv(sim, t)
        ev = Financing(iid, b.pos, amount, b.ins.currency, days, t, recv, payment_id=self._id())
        sim._emit(ev, sim._clock)

    def _book_cash(self, b: _Book, amount: float) -> None:
        ccy = b.ins.currency
        self.cash[ccy] = self.cash.get(ccy, 0.0) + amount

    @staticmethod
    def _recv(sim: SimExchange, t: int) -> int:
        """An account event's ``ts_recv``: the venue's clock (not the market's) + latency."""
        return sim._clock + sim.response_latency_ns

    # --- settlement -----------------------------------------------------------------------------
    def resolve(self, sim: SimExchange, iid: int, resolution: str, t: int) -> bool:
        """Resolve a binary contract or betting selection now, as the venue says (its
        ``resolution``: "1", "0", "void"; "0.5" for a binary's 50/50); False when it already
        settled. A betting market resolved this way settles every selection the venue lists
        (the venue settles whole markets), so its commission waits for all of them."""
        b = self.books.get(iid)
        if b is None or b.ins.kind not in (InstrumentKind.BINARY, InstrumentKind.BETTING):
            raise ValueError(f"instrument {iid}: only binary and betting instruments resolve")
        if b.settled:
            return False
        b.ins = msgspec.structs.replace(b.ins, resolution=resolution)  # checked by Instrument
        if b.ins.kind == InstrumentKind.BETTING:
            mine = self._markets.setdefault(b.ins.market_id, [])
            m = b.ins.market_id
            for j, o in self.books.items():
                if o.ins.kind == InstrumentKind.BETTING and o.ins.market_id == m and j not in mine:
                    mine.append(j)
        self._resolve(sim, b, t)
        return True

    def _resolve(self, sim: SimExchange, b: _Book, t: int) -> None:
        """A binary contract or betting selection resolves per its ``resolution`` (a binary
        pays it per share: 1, 0 or 0.5; ``outcome`` 1 when it pays)."""
        res = b.ins.resolution
        if res == "void":
            px = round(b.avg_px) if b.ins.kind != InstrumentKind.BETTING else 0
            self._settle(sim, b, SettlementKind.VOID, px, -1, t, "market voided")
            return
        if b.ins.kind == InstrumentKind.BETTING:
            won = 1 if res == "1" else 0
            self._settle(sim, b, SettlementKind.RESOLVED, 0, won, t, "market settled")
        else:
            pay = round(float(res) / b.ins.tick_size)
            self._settle(sim, b, SettlementKind.RESOLVED, pay, int(pay > 0), t, "market resolved")

    def _settle(
        self, sim: SimExchange, b: _Book, kind: int, px: int, outcome: int, t: int, why: str
    ) -> None:
        """Close the position at ``px`` (betting: by its bets), expire its open orders, stop
        trading it."""
        b.settled = why
        iid = b.ins.instrument_id
        self._close_orders(sim, iid, sim._clock, why, expire=True)
        pos = b.pos
        fee = 0.0
        if b.ins.kind == InstrumentKind.BETTING:
            pnl = 0.0 if outcome < 0 else (b.win if outcome == 1 else -b.stake)
            pnl *= b.ins.lot_size
            self._book_cash(b, pnl)
            fee = self._commission(b, pnl if outcome >= 0 else 0.0)
            b.stake = b.win = 0.0
        elif kind == SettlementKind.VOID:  # unwound at its average cost (each leg at its own)
            self._book_cash(b, sum(q * avg for q, avg in self.legs(sim, b)) * b.mult)
        else:
            self._book_cash(b, pos * px * b.mult)
        b.pos, b.avg_px = 0, 0.0
        sim._positions[iid] = 0
        if sim._legs is not None:
            sim._legs.clear(iid)
        recv = self._recv(sim, t)
        ev = Settlement(
            iid, int(kind), int(px), int(outcome), pos, t, recv, settlement_id=self._id(), fee=fee
        )
        sim._emit(ev, sim._clock)

    def _commission(self, b: _Book, pnl: float) -> float:
        """Commission on the market's net winnings, charged when its last selection settles."""
        m = b.ins.market_id
        self._market_pnl[m] = self._market_pnl.get(m, 0.0) + pnl
        if any(not self.books[i].settled for i in self._markets.get(m, ())):
            return 0.0
        fee = commission(self._market_pnl.pop(m), self.commission)
        self._book_cash(b, -fee)
        return fee

    @staticmethod
    def _close_orders(sim: SimExchange, iid: int, t: int, why: str, expire: bool) -> None:
        """End our open orders on the instrument (expired at settlement, canceled at a
        liquidation)."""
        inst = sim._insts.get(iid)
        if inst is None:
            return
        lat = sim.response_latency_ns
        for rec in [r for r in sim._orders.values() if r.is_open and r.order.instrument_id == iid]:
            leaves = rec.leaves
            sim._close(inst, rec)
            o = rec.order
            if expire:
                ev: Any = OrderExpired(o.client_order_id, iid, leaves, o.ts_origin, t, t + lat)
            else:
                ev = OrderCanceled(o.client_order_id, iid, leaves, why, o.ts_origin, t, t + lat)
            sim._emit(ev, sim._clock)

    # --- margin -----------------------------------------------------------------------------------
    def margin(self, sim: SimExchange, ccy: str) -> tuple[float, float, float]:
        """(equity, initial, maintenance) of the account in ``ccy``: cash plus every position
        of that currency at its mark; the margins of its margined positions (cross margin)."""
        equity = self.cash.get(ccy, 0.0)
        im = mm = 0.0
        for b in self.books.values():
            if b.ins.currency != ccy or b.ins.kind == InstrumentKind.BETTING:
                continue
            legs = self.legs(sim, b)
            if not legs:
                continue
            mark = self.mark(sim, b)
            equity += b.pos * mark * b.mult
            if b.margined:  # per leg: a hedged long and short each post their margin
                for q, _ in legs:
                    im += acc.initial_margin(b.ins, q, mark, self.leverage)
                    mm += acc.maintenance_margin(b.ins, q, mark)
        return equity, im, mm

    def check_margin(self, sim: SimExchange, t: int) -> None:
        """Margin call and liquidation per currency after the market or our fills moved (a
        margined position changed: publish the account's state)."""
        if not self._margined:
            return
        changed, self.changed = self.changed, False
        for ccy in self._margin_ccys:
            has_pos = any(
                b.margined and self.legs(sim, b)
                for b in self.books.values()
                if b.ins.currency == ccy
            )
            was = self._in_call.get(ccy, False)
            if not has_pos and not was and not changed:
                continue
            equity, im, mm = self.margin(sim, ccy)
            call = has_pos and acc.margin_call(equity, mm)
            if call != was or (changed and not call):
                self._in_call[ccy] = call
                sim._emit(MarginStatus(self.venue, ccy, equity, im, mm, t, call), t)
            if call and acc.should_liquidate(equity, mm, self.liquidation_buffer):
                self._liquidate(sim, ccy, t)

    def _liquidate(self, sim: SimExchange, ccy: str, t: int) -> None:
        """Close every margined position of the account at its mark (taker fee), cancel their
        open orders, publish the account after."""
        for b in self.books.values():
            legs = self.legs(sim, b)
            if b.ins.currency != ccy or not b.margined or not legs:
                continue
            iid = b.ins.instrument_id
            self._close_orders(sim, iid, t, "liquidation", expire=False)
            px = self.mark(sim, b)
            for pos, _ in legs:  # hedging: one liquidation per leg (it closes that leg)
                side = -1 if pos > 0 else 1
                qty = abs(pos)
                fee = px * qty * b.mult * sim.taker_fee_bps / 1e4
                self.cash[ccy] = self.cash.get(ccy, 0.0) - side * px * qty * b.mult - fee
                self._move(b, side * qty, px)
                if sim._legs is not None:
                    sim._legs.trade(iid, side, qty, px, reduce_only=True)
                recv = self._recv(sim, t)
                ev = Liquidation(iid, side, px, qty, fee, t, recv, liquidation_id=self._id())
                sim._emit(ev, sim._clock)
            sim._positions[iid] = 0
        self._in_call[ccy] = False
        equity, im, mm = self.margin(sim, ccy)
        sim._emit(MarginStatus(self.venue, ccy, equity, im, mm, t, False), t)

    # --- the venue's record -----------------------------------------------------------------------
    def restore(self, sim: SimExchange, ev: Any) -> None:
        """An account event read back from the venue's record (``engine.venues.sim_record``)."""
        tp = type(ev)
        b = self.books.get(getattr(ev, "instrument_id", -1))
        if tp is Settlement:
            sim._positions[ev.instrument_id] = 0
        elif tp is Liquidation:
            iid = ev.instrument_id
            sim._positions[iid] = sim._positions.get(iid, 0) + ev.side * ev.qty
            if sim._legs is not None:  # a liquidation closes the leg opposite its side
                sim._legs.trade(iid, ev.side, ev.qty, ev.px, reduce_only=True)
        if tp is FundingPayment or tp is Financing:
            if b is not None:
                self._book_cash(b, ev.amount)
        elif tp is Settlement and b is not None:
            b.settled = "settled"
            if b.ins.kind == InstrumentKind.BETTING:
                pnl = 0.0 if ev.outcome < 0 else (b.win if ev.outcome == 1 else -b.stake)
                self._book_cash(b, pnl * b.ins.lot_size - ev.fee)
                b.stake = b.win = 0.0
            elif ev.kind == SettlementKind.VOID:
                self._book_cash(b, sum(q * avg for q, avg in self.legs(sim, b)) * b.mult)
            else:
                self._book_cash(b, b.pos * ev.px * b.mult)
            b.pos, b.avg_px = 0, 0.0
            if sim._legs is not None:
                sim._legs.clear(ev.instrument_id)
        elif tp is Liquidation and b is not None:
            q = ev.side * ev.qty
            self.cash[b.ins.currency] = (
                self.cash.get(b.ins.currency, 0.0) - q * ev.px * b.mult - ev.fee
            )
            self._move(b, q, ev.px)
        ids = [getattr(ev, k, 0) for k in ("payment_id", "settlement_id", "liquidation_id")]
        self._next_id = max(self._next_id, *ids)
