"""A rebalancer: holds target weights of its capital, trades back to them when they drift.

Every ``interval_s`` (of the strategy's clock: market-data time in a backtest) it values its
book at the mids — its own cash (``capital`` plus the cash flows of its own fills) and its own
positions — and, for each instrument whose weight is more than ``drift_band`` away from its
target, sends the order that brings it back to the target. Orders are marketable IOC limits
priced ``slippage_ticks`` through the opposite best, sent as intents like any strategy's, so they
pass the risk gate (an order risk refuses is simply retried at the next interval). Nothing new is
sent while an earlier order of its own is still open.

Cash management: a ``cash_buffer`` fraction of equity is kept in cash. The targets are scaled down
if they add up to more than ``1 − cash_buffer``; sells are sent before buys, and buys only spend
the cash above the buffer (plus what the sells bring), scaled down together when it is short.
``max_order_notional`` splits a large trade over several intervals.

Tax-loss harvesting (``harvest = true``, see ``engine.strategies.tax_harvest``): before
rebalancing, long lots with an unrealized loss of at least ``harvest_threshold`` of their cost are
sold — exactly those lots, named to the portfolio through ``designated_lots`` (specific lot
identification) — and the same value of the configured substitute is bought. For the wash-sale
window after any realized loss the instrument is not bought back; its target weight goes to its
substitute meanwhile (or, without one, stays in cash). With ``avoid_wash_sales`` (on whenever
``harvest`` is) every trim also names its lots, cheapest first (the largest gain, the smallest
loss), and a trim that would still realize a loss while a lot bought inside the window stays
held — a wash sale by the purchase *before* it — is not sent.

Params: ``RebalancerParams`` below (types, defaults, ranges).
"""

from __future__ import annotations

import math
from typing import Any

from engine.lots import NS_PER_DAY, WASH_SALE_DAYS, LotBook, LotRef
from engine.messages import OrderPartiallyFilled, OrderType, Quote, TimeInForce
from engine.strategies.base import Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check
from engine.strategies.tax_harvest import HarvestPlanner


class RebalancerParams(StrategyParams):
    """``[strategies.params]`` of ``Rebalancer`` (symbols: the strategy's own instruments)."""

    targets: dict[str, float]  # required: {symbol = weight of capital}, weights add up to <= 1
    capital: float = 1_000_000.0  # the cash this strategy manages
    interval_s: float = 60.0  # how often it checks the weights (strategy clock)
    drift_band: float = 0.02  # trade an instrument only when its weight is this far off
    cash_buffer: float = 0.02  # fraction of equity always kept in cash
    slippage_ticks: int = 2  # how far through the opposite best its IOC orders are priced
    max_order_notional: float = 0.0  # larger trades are split over intervals (0 = no cap)
    harvest: bool = False  # tax-loss harvesting (module docstring)
    harvest_threshold: float = 0.05  # loss (fraction of cost) that makes a lot a candidate
    harvest_min_loss: float = 0.0  # ... and at least this loss in currency
    substitutes: dict[str, str] = {}  # {symbol = substitute symbol}
    wash_sale_days: float = WASH_SALE_DAYS  # the window after a loss sale
    avoid_wash_sales: bool | None = None  # buys wait out the window (None: = harvest)

    def __post_init__(self) -> None:
        check(bool(self.targets), "targets", "must be a table {symbol = weight}, not empty")
        for sym, w in self.targets.items():
            check(
                math.isfinite(w) and 0 <= w <= 1,
                f"targets.{sym}",
                f"must be within [0, 1], not {w}",
            )
        check(sum(self.targets.values()) <= 1 + 1e-9, "targets", "weights add up to more than 1")
        for name, ok in (
            ("capital", self.capital > 0),
            ("interval_s", self.interval_s >= 0),
            ("drift_band", 0 <= self.drift_band < 1),
            ("cash_buffer", 0 <= self.cash_buffer < 1),
            ("slippage_ticks", self.slippage_ticks >= 0),
            ("max_order_notional", self.max_order_notional >= 0),
            ("harvest_threshold", 0 < self.harvest_threshold < 1),
            ("harvest_min_loss", self.harvest_min_loss >= 0),
            ("wash_sale_days", self.wash_sale_days >= 0),
        ):
            v = getattr(self, name)
            check(ok and math.isfinite(v), name, f"out of range: {v}")


class Rebalancer(Strategy):
    """Target-weight rebalancing with drift bands, a cash buffer and optional harvesting."""

    Params = RebalancerParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: RebalancerParams = self.p
        by_symbol = {ins.symbol: iid for iid, ins in ctx.instruments.items()}

        def iid_of(sym: str, what: str) -> int:
            if sym not in by_symbol:
                raise ValueError(f"Rebalancer: {what}: {sym!r} is not one of its instruments")
            return by_symbol[sym]

        self.targets: dict[int, float] = {iid_of(s, "targets"): w for s, w in p.targets.items()}
        self.capital = p.capital
        self.interval_ns = int(p.interval_s * 1e9)
        self.drift_band = p.drift_band
        self.cash_buffer = p.cash_buffer
        self.slippage_ticks = p.slippage_ticks
        self.max_order_notional = p.max_order_notional
        self.harvest = p.harvest
        # wash-sale windows bind a taxable account; by default only one that harvests losses
        self.avoid_wash_sales = p.harvest if p.avoid_wash_sales is None else p.avoid_wash_sales
        subs = {
            iid_of(a, "substitutes"): iid_of(b, "substitutes") for a, b in p.substitutes.items()
        }
        self.planner = HarvestPlanner(
            subs,
            p.harvest_threshold,
            min_loss=p.harvest_min_loss,
            window_ns=int(p.wash_sale_days * NS_PER_DAY),
        )
        self.cash = self.capital
        self.books: dict[int, LotBook] = {
            iid: LotBook(iid, ins.tick_size * ins.lot_size) for iid, ins in ctx.instruments.items()
        }
        #: client_order_id -> the lots its fills close (read by the runtime for the portfolio)
        self.designated_lots: dict[int, list[LotRef]] = {}
        self.next_due: int | None = None
        self.rebalances = 0

    # --- callbacks -------------------------------------------------------------------------------
    def on_quote(self, q: Quote) -> None:
        self.maybe_rebalance()

    def on_book(self, instrument_id: int) -> None:
        self.maybe_rebalance()

    def on_timer(self, now_ns: int) -> None:
        self.maybe_rebalance()

    def on_fill(self, ev: OrderPartiallyFilled) -> None:
        book = self.books.get(ev.instrument_id)
        if book is None:
            return
        signed = ev.fill_qty if ev.side > 0 else -ev.fill_qty
        coid = ev.client_order_id
        select = self.designated_lots.get(coid, ())
        closed = book.apply(signed, ev.fill_px, self.ctx.now_ns, (coid, ev.fill_id), select)
        self.cash -= signed * ev.fill_px * book.multiplier + ev.fee
        self.planner.on_fill(ev.instrument_id, self.ctx.now_ns, closed)
        if ev.leaves_qty <= 0:
            self.designated_lots.pop(coid, None)

    def on_order_event(self, ev: Any) -> None:
        if ev.client_order_id not in self.ctx.open_orders:
            self.designated_lots.pop(ev.client_order_id, None)

    # --- the book --------------------------------------------------------------------------------
    def equity(self, mids: dict[int, float]) -> float:
        return self.cash + sum(
            b.position * mids[iid] * b.multiplier for iid, b in self.books.items() if b.position
        )

    def _mids(self) -> dict[int, float] | None:
        mids = {}
        for iid in self.books:
            m = self.ctx.mid(iid)
            if m is None:
                if iid in self.targets or self.books[iid].position:
                    return None  # cannot value the book yet
                continue
            mids[iid] = m
        return mids

    def effective_targets(self, now_ns: int, weights: dict[int, float]) -> dict[int, float]:
        """Targets after wash-sale redirection and the cash-buffer scaling.

        An instrument inside its wash-sale window keeps what it holds (up to its target) and
        the rest of its weight goes to its substitute; without a buyable substitute it stays
        with the instrument, whose buys are then refused (the weight waits in cash)."""
        out = dict.fromkeys(self.books, 0.0)
        for iid, w in self.targets.items():
            sub = self.planner.substitutes.get(iid)
            if self._can_buy(iid, now_ns) or sub is None:
                out[iid] += w
            elif self._can_buy(sub, now_ns):
                keep = min(w, max(weights.get(iid, 0.0), 0.0))
                out[iid] += keep
                out[sub] += w - keep
            else:
                out[iid] += w
        total = sum(out.values())
        room = 1.0 - self.cash_buffer
        if total > room > 0:
            out = {iid: w * room / total for iid, w in out.items()}
        return out

    def _can_buy(self, iid: int, now_ns: int) -> bool:
        return not self.avoid_wash_sales or self.planner.can_buy(iid, now_ns)

    # --- deciding --------------------------------------------------------------------------------
    def maybe_rebalance(self) -> None:
        ctx = self.ctx
        now = ctx.now_ns
        if self.next_due is not None and now < self.next_due:
            return
        if ctx.open_orders:
            return  # wait for our last orders to finish
        mids = self._mids()
        if mids is None:
            return
        self.next_due = now + self.interval_ns
        equity = self.equity(mids)
        if equity <= 0:
            return
        if self.harvest and self._harvest(mids, now):
            return
        self.rebalance(mids, equity, now)

    def _harvest(self, mids: dict[int, float], now: int) -> bool:
        sent = False
        for iid, book in self.books.items():
            if not book.position or iid not in mids:
                continue
            h = self.planner.plan(book, int(mids[iid]), now)
            if h is None or h.substitute not in mids:
                continue
            coid = self._send(iid, -h.qty)
            if coid is None:
                continue
            self.designated_lots[coid] = [lot.ref for lot in h.lots]
            value = h.qty * mids[iid] * book.multiplier
            sub_mult = self.books[h.substitute].multiplier
            buy = int(value / (mids[h.substitute] * sub_mult))
            if buy > 0:
                self._send(h.substitute, buy)
            self.planner.harvests += 1
            sent = True
        return sent

    def rebalance(self, mids: dict[int, float], equity: float, now: int) -> None:
        """Send the orders that bring every drifted weight back to its target."""
        weights = {
            iid: b.position * mids[iid] * b.multiplier / equity
            for iid, b in self.books.items()
            if iid in mids
        }
        targets = self.effective_targets(now, weights)
        trades: dict[int, int] = {}
        for iid, tw in targets.items():
            if iid not in mids:
                continue
            book = self.books[iid]
            lot_value = mids[iid] * book.multiplier
            w = weights[iid]
            if abs(w - tw) <= self.drift_band and not (tw == 0 and book.position and w != 0):
                continue
            delta = int(tw * equity / lot_value) - book.position
            if delta > 0 and not self._can_buy(iid, now):
                continue
            if delta:
                trades[iid] = delta
        if not trades:
            return
        # sells first; buys only spend the cash above the buffer (plus the sells' proceeds)
        proceeds = sum(-d * mids[i] * self.books[i].multiplier for i, d in trades.items() if d < 0)
        spend = sum(d * mids[i] * self.books[i].multiplier for i, d in trades.items() if d > 0)
        budget = self.cash + proceeds - self.cash_buffer * equity
        scale = 1.0 if spend <= 0 or spend <= budget else max(0.0, budget / spend)
        self.rebalances += 1
        for iid, d in sorted(trades.items(), key=lambda kv: kv[1]):
            qty = d if d < 0 else int(d * scale)
            if qty < 0 and self.avoid_wash_sales:
                refs = self.lots_to_sell(iid, -qty, mids[iid], now)
                coid = None if refs is None else self._send(iid, qty)
                if coid is not None and refs:
                    self.designated_lots[coid] = refs
            elif qty:
                self._send(iid, qty)

    def lots_to_sell(self, iid: int, qty: int, px: float, now: int) -> list[LotRef] | None:
        """The lots a trim should close — cheapest first, so it realizes the largest gain (or
        the smallest loss) — or None when the sale would still realize a loss while a lot
        bought inside the wash-sale window stays held (a wash sale: the trim waits)."""
        book = self.books[iid]
        chosen: list[LotRef] = []
        left, pnl = qty, 0.0
        kept_recent = False
        for lot in sorted(book.lots, key=lambda lot: lot.px):
            if left > 0:
                q = min(left, lot.qty)
                pnl += (px - lot.px) * lot.direction * q * book.multiplier
                chosen.append(lot.ref)
                left -= q
                if q == lot.qty:
                    continue
            kept_recent = kept_recent or now - lot.ts <= self.planner.window_ns
        return None if pnl < 0 and kept_recent else chosen

    def _send(self, iid: int, signed_qty: int) -> int | None:
        """A marketable IOC limit for ``signed_qty`` lots (capped by ``max_order_notional``)."""
        ctx = self.ctx
        book = self.books[iid]
        if signed_qty > 0:
            top = ctx.best_ask(iid)
            if top is None:
                return None
            px = top[0] + self.slippage_ticks
        else:
            top = ctx.best_bid(iid)
            if top is None:
                return None
            px = max(1, top[0] - self.slippage_ticks)
        qty = abs(signed_qty)
        if self.max_order_notional > 0:
            qty = min(qty, int(self.max_order_notional / (px * book.multiplier)))
        if qty <= 0:
            return None
        if signed_qty > 0:
            return ctx.buy(iid, qty, px, OrderType.LIMIT, TimeInForce.IOC)
        return ctx.sell(iid, qty, px, OrderType.LIMIT, TimeInForce.IOC)
