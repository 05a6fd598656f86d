"""What the risk gate knows: positions, open orders, prices, equity — one plain state object.

``RiskBook`` is the state every part of the gate reads and writes: the pre-trade checks
(``engine.risk_checks``), the breakers and kill switch (``engine.risk_controls``) and the restart
path (``engine.risk_state``) are functions that receive it. One object, so the parts cannot
disagree about a position, and plain attributes on it, so a check reads ``book.position[iid]``
at the cost of today's ``self.position[iid]`` (``RiskGate`` *is* a ``RiskBook``).

It is kept from execution events and prices only. Equity is ``capital`` + cash flows of the fills
(price and fees) + positions at the mark. What is read per order — positions, open quantities,
marks, exposures, sector totals, the VaR caches of ``engine.risk_stats`` — lives in numpy arrays
indexed by instrument id and is refreshed off the order path (``refresh_exposure``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.instruments import Instrument, InstrumentTable
from engine.market_guard import MarketGuard
from engine.messages import (
    Bar,
    BookSnapshot,
    CancelOrder,
    InstrumentHalted,
    InstrumentResumed,
    MarkPrice,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    Quote,
    ReplaceOrder,
    RiskEvent,
    Side,
    Trade,
    TradingStateChanged,
)
from engine.risk_margin import AccountRisk
from engine.risk_stats import METHODS, RiskStats
from engine.trading_state import TradingStateMachine

if TYPE_CHECKING:
    from engine.risk_limits import RiskLimits

RiskOutput = (
    NewOrder
    | CancelOrder
    | ReplaceOrder
    | RiskEvent
    | OrderRejected
    | TradingStateChanged
    | InstrumentHalted
    | InstrumentResumed
)


@dataclass(slots=True)
class RiskOrder:
    """What risk remembers of an approved order until it is terminal."""

    instrument_id: int
    side: int
    px: int
    leaves: int
    strategy_id: int
    reserved: int = 0  # extra open qty counted while a size-increasing replace is in flight
    reduce_only: bool = False  # REDUCE_ONLY: on a hedging venue it closes the opposite leg


class RiskBook:
    """The gate's state (see the module docstring)."""

    def __init__(
        self,
        limits: RiskLimits,
        instruments: InstrumentTable | Iterable[Instrument],
        *,
        own_id_base: int = 0,
        notional_limited: Iterable[int] = (),
        hedging: Iterable[int] = (),
    ) -> None:
        self.limits = limits
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        n = (max(self.instruments.ids) + 1) if len(self.instruments) else 0
        self.n = n
        self.ins: list[Instrument | None] = [self.instruments.get(i) for i in range(n)]
        self.position = np.zeros(n, dtype=np.int64)  # filled, lots (hedging: long + short)
        # instruments of hedging venues (engine.venues.sim_hedging): a long and a short leg
        # apart; an order moves its own side's leg, a REDUCE_ONLY one the opposite leg's
        self.hedged = np.zeros(n, dtype=np.bool_)
        for iid in hedging:
            if 0 <= iid < n:
                self.hedged[iid] = True
        self.long_pos = np.zeros(n, dtype=np.int64)  # hedging: the long leg, lots
        self.short_pos = np.zeros(n, dtype=np.int64)  # hedging: the short leg, lots (<= 0)
        self.open_buy = np.zeros(n, dtype=np.int64)  # open buy quantity, lots
        self.open_sell = np.zeros(n, dtype=np.int64)
        self.bid = np.zeros(n, dtype=np.int64)  # last known best bid / ask / trade, ticks (0: none)
        self.ask = np.zeros(n, dtype=np.int64)
        self.last = np.zeros(n, dtype=np.int64)
        # a perpetual's mark as its venue publishes it (MarkPrice; 0: none): it values the
        # position where present, as the venue's margin and funding do
        self.venue_mark = np.zeros(n, dtype=np.int64)
        # money per (tick x lot): a futures contract's size included (engine.accounts.multiplier)
        self.mult = np.array(
            [i.tick_size * i.lot_size * i.contract_size if i else 0.0 for i in self.ins]
        )
        # margin, betting and binary markets (engine.risk_margin; nothing for a spot-only book)
        self.acct = AccountRisk(self.ins, self.mult)
        # the position limit per instrument: max_position_lots, or for ``notional_limited``
        # ones (a real venue's) max_position_notional at the order's price (no lot count)
        self.max_lots = np.full(n, limits.max_position_lots, dtype=np.int64)
        self.max_notional = np.zeros(n)
        for iid in notional_limited:
            if 0 <= iid < n:
                self.max_lots[iid] = np.iinfo(np.int64).max
                self.max_notional[iid] = limits.max_position_notional
        self.avg_px = np.zeros(n)  # average entry price of the position, ticks
        self.marks = np.zeros(n)  # ticks, at the last refresh
        self.exposure = np.zeros(n)  # signed money: position × mark × multiplier
        self.signs = np.zeros(n)  # sign of each filled position (correlation check)
        sectors = sorted({i.sector for i in self.ins if i is not None})
        self.sector_names = sectors
        self.sector_of = np.array(
            [sectors.index(i.sector) if i else 0 for i in self.ins], dtype=np.int64
        )
        self.sector_gross = np.zeros(max(len(sectors), 1))
        self.open_orders: dict[int, RiskOrder] = {}
        self.trading = TradingStateMachine()
        self.stopping = False
        self.approved = 0
        self.rejected = 0
        self.skipped_stats = 0  # exposure-increasing orders judged without VaR/correlation
        self.stale_rejected = 0  # new orders and replaces refused for the age of their data
        self.own_counter = own_id_base  # client_order_ids of risk's own orders: strategy_id 0
        self.protect: dict[int, int] = {}  # instrument -> open stop-loss/take-profit order id
        # events ``restore`` already applied to open orders (``redelivery_key``) that the events
        # ring may deliver again to a restarted risk process, up to exec's time ``restored_ns``
        self.restored: set[tuple] = set()
        self.restored_ns = 0
        # equity: capital + cash flows of fills + positions at the mark
        self.cash = 0.0
        self.equity = float(limits.capital)
        self.day_start_equity = float(limits.capital)
        self.peak_equity = float(limits.capital)
        # order-rate window: the times of the last max_orders_per_s approvals (a ring)
        self.rate = np.zeros(max(limits.max_orders_per_s, 1), dtype=np.int64)
        self.rate_i = 0
        self.stats = RiskStats(
            n,
            limits.var_confidence,
            limits.var_horizon,
            limits.min_history,
            limits.volatility,
            limits.volatility_lambda,
            limits.har_refit,
        )
        self.var_kind = METHODS[limits.var_method]
        self.guard = MarketGuard(
            n,
            limits.flash_band_pct / 100.0,
            limits.flash_window_ns,
            limits.flash_cooldown_ns,
            limits.flash_samples,
            self.ins,
            limits.flash_band_ticks,
            limits.flash_band_ladder_ticks,
        )
        # a spot price's band, percent: price_band_pct, or sigma-scaled (``set_bands``)
        self.band_pct = np.full(n, float(limits.price_band_pct))
        self.band_scaled = np.zeros(n, dtype=np.bool_)  # True where band_pct is sigma-scaled

    def set_bands(self) -> None:
        """With ``price_band_sigmas`` > 0, each spot instrument's band becomes that many sigmas
        of one return interval (``stats.var``: the window's or the EWMA variance, per
        ``volatility``), kept within ``price_band_min_pct`` .. ``price_band_pct``. Where sigma is
        unknown (fewer than ``min_history`` returns, or none that vary) the fixed band stays:
        fail closed to the configured fat-finger limit. Off the order path (a new window)."""
        lim = self.limits
        fixed = float(lim.price_band_pct)
        self.band_pct[:] = fixed
        self.band_scaled[:] = False
        st = self.stats
        if not (lim.price_band_sigmas > 0 and fixed > 0 and st.ready and st.var.shape[0]):
            return
        ok = (st.var > 0) & np.isfinite(st.var) & ~self.guard.bounded
        band = lim.price_band_sigmas * np.sqrt(np.where(ok, st.var, 0.0)) * 100.0
        self.band_pct[ok] = np.clip(band[ok], lim.price_band_min_pct, fixed)
        self.band_scaled[ok] = True

    @property
    def state(self) -> int:
        return self.trading.state

    @state.setter
    def state(self, value: int) -> None:  # for tests and tools: no record, no persistence
        self.trading.state = int(value)

    def known(self, iid: int) -> Instrument | None:
        return self.ins[iid] if 0 <= iid < self.n else None

    def add_open(self, iid: int, side: int, qty: int) -> None:
        if side == Side.BUY:
            self.open_buy[iid] += qty
        else:
            self.open_sell[iid] += qty

    # --- execution events ----------------------------------------------------------------------
    def on_exec_event(self, ev: object, count_fill: bool = True) -> None:
        """Track positions, cash and open orders from execution events (fills of unknown
        orders still move the position: the venue's fill is the truth). ``count_fill=False``:
        a fill the seeded positions already hold (after a restart) — open orders only."""
        if self.restored and self._seen_in_restore(ev):
            if (
                count_fill
                and isinstance(ev, OrderPartiallyFilled)
                and 0 <= ev.instrument_id < self.n
            ):
                o = self.open_orders.get(ev.client_order_id)
                ro = o is not None and o.reduce_only
                self.on_fill(
                    ev.instrument_id,
                    int(ev.side),
                    int(ev.fill_qty),
                    int(ev.fill_px),
                    float(ev.fee),
                    ro,
                )
            return  # restore() applied it to the open orders already
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            iid = ev.instrument_id
            o = self.open_orders.get(ev.client_order_id)
            if count_fill and 0 <= iid < self.n:
                ro = o is not None and o.reduce_only
                fill = int(ev.fill_qty), int(ev.fill_px), float(ev.fee)
                self.on_fill(iid, int(ev.side), *fill, ro)
            if o is not None:
                filled = min(ev.fill_qty, o.leaves)
                self.add_open(o.instrument_id, o.side, -filled)
                o.leaves -= filled
                if isinstance(ev, OrderFilled) or ev.leaves_qty <= 0 or o.leaves <= 0:
                    self.close(ev.client_order_id)
        elif isinstance(ev, OrderReplaceRejected):
            o = self.open_orders.get(ev.client_order_id)
            if o is not None and o.reserved:
                undo = min(o.reserved, o.leaves)  # the replace will not happen: release it
                self.add_open(o.instrument_id, o.side, -undo)
                o.leaves -= undo
                o.reserved = 0
        elif isinstance(ev, OrderCanceled | OrderExpired | OrderRejected):
            self.close(ev.client_order_id)
        elif isinstance(ev, OrderReplaced):
            o = self.open_orders.get(ev.client_order_id)
            if o is not None:
                self.add_open(o.instrument_id, o.side, ev.qty - o.leaves)
                o.leaves = ev.qty
                o.px = ev.px
                o.reserved = 0
        elif isinstance(ev, OrderAccepted):
            pass  # already counted as open since approval

    def _seen_in_restore(self, ev: object) -> bool:
        """Is ``ev`` one that ``restore`` applied already (delivered again by the ring)? Exec
        publishes in ``ts_recv`` order, so once an event newer than every restored one arrives
        the re-deliveries are over and the set is dropped (the check costs nothing after)."""
        ts = getattr(ev, "ts_recv", None)
        if isinstance(ts, int) and ts > self.restored_ns:
            self.restored.clear()
            return False
        key = redelivery_key(ev)
        if key is None or key not in self.restored:
            return False
        self.restored.discard(key)
        return True

    def on_fill(
        self, iid: int, side: int, qty: int, px: int, fee: float, reduce_only: bool = False
    ) -> None:
        """Position, average entry, cash, equity and exposures after one fill: O(n + T). A
        matched bet moves no cash (``engine.risk_margin``: its P&L comes at settlement). On a
        hedging venue the fill moves one leg: a reduce-only one the opposite side's."""
        if self.hedged[iid]:
            if (side > 0) != reduce_only:
                self.long_pos[iid] += side * qty
            else:
                self.short_pos[iid] += side * qty
        mult = float(self.mult[iid])
        pos = int(self.position[iid])
        new = pos + side * qty
        avg = float(self.avg_px[iid])
        if new == 0:
            avg = 0.0
        elif pos == 0 or (pos > 0) != (new > 0):
            avg = float(px)  # opened, or flipped through zero: the rest is at this price
        elif abs(new) > abs(pos):
            avg = (avg * abs(pos) + px * qty) / abs(new)
        self.avg_px[iid] = avg
        self.position[iid] = new
        self.signs[iid] = 1.0 if new > 0 else (-1.0 if new < 0 else 0.0)
        if self.acct.betting and iid in self.acct.betting:
            self._on_bet(iid, side, qty, px, fee)
            return
        self.cash -= side * qty * px * mult + fee
        mark = float(self.marks[iid]) or float(px)
        self.marks[iid] = mark
        self.equity += side * qty * (mark - px) * mult - fee
        d = side * qty * mark * mult
        s = int(self.sector_of[iid])
        old = float(self.exposure[iid])
        self.exposure[iid] = old + d
        self.sector_gross[s] += abs(old + d) - abs(old)
        self.stats.add_exposure(iid, d)
        if self.acct.any_margined:
            # hedging: both legs post margin (their gross), not their net
            held = self.long_pos[iid] - self.short_pos[iid] if self.hedged[iid] else new
            self.acct.update(iid, int(held), mark)

    def _on_bet(self, iid: int, side: int, qty: int, px: int, fee: float) -> None:
        """A betting selection's fill (its stake position, back +, lay −, and average odds
        already booked): the bet's win / lose P&L; only the fee moves cash now."""
        self.acct.bet(iid, side, qty, px)
        self.cash -= fee
        self.equity -= fee
        if not self.marks[iid]:
            self.marks[iid] = float(px)

    def close(self, coid: int) -> None:
        """Forget order ``coid`` (terminal): its open quantity no longer counts."""
        o = self.open_orders.pop(coid, None)
        if o is not None and o.leaves > 0:
            self.add_open(o.instrument_id, o.side, -o.leaves)
        if o is not None and o.strategy_id == 0 and self.protect.get(o.instrument_id) == coid:
            del self.protect[o.instrument_id]

    # --- prices --------------------------------------------------------------------------------
    def on_market_data(self, msg: object) -> None:
        """Track reference prices for valuing market orders and exposure."""
        if isinstance(msg, Quote):
            iid = msg.instrument_id
            if 0 <= iid < self.n:
                if msg.bid_qty > 0 and msg.bid_px > 0:
                    self.bid[iid] = msg.bid_px
                if msg.ask_qty > 0 and msg.ask_px > 0:
                    self.ask[iid] = msg.ask_px
        elif isinstance(msg, Trade):
            if 0 <= msg.instrument_id < self.n and msg.px > 0:
                self.last[msg.instrument_id] = msg.px
        elif isinstance(msg, Bar):
            if 0 <= msg.instrument_id < self.n and msg.close > 0:
                self.last[msg.instrument_id] = msg.close
        elif isinstance(msg, BookSnapshot):
            iid = msg.instrument_id
            if 0 <= iid < self.n:
                if msg.bid_px:
                    self.bid[iid] = msg.bid_px[0]
                if msg.ask_px:
                    self.ask[iid] = msg.ask_px[0]
        elif isinstance(msg, MarkPrice) and 0 <= msg.instrument_id < self.n and msg.mark_px > 0:
            self.venue_mark[msg.instrument_id] = msg.mark_px

    def mark(self, instrument_id: int) -> float:
        """The venue's mark (``MarkPrice``) where one came, else the mid of the last known
        bid/ask (ticks), else the last trade; 0.0 if nothing known."""
        if self.venue_mark[instrument_id] > 0:
            return float(self.venue_mark[instrument_id])
        b, a = int(self.bid[instrument_id]), int(self.ask[instrument_id])
        if b > 0 and a > 0:
            return (b + a) / 2.0
        return float(self.last[instrument_id])

    def mids(self) -> np.ndarray:
        """Every instrument's mark (ticks; 0 where nothing is known), vectorised."""
        both = (self.bid > 0) & (self.ask > 0)
        m = np.where(both, (self.bid + self.ask) / 2.0, self.last.astype(np.float64))
        return np.where(self.venue_mark > 0, self.venue_mark.astype(np.float64), m)

    def refresh_exposure(self) -> None:
        """Marks, exposures, equity, sector totals and the VaR caches from the latest prices."""
        m = self.mids()
        self.marks = np.where(m > 0, m, self.marks)
        self.exposure = self.position * self.marks * self.mult
        if self.acct.betting:  # a bet is not a holding worth stake x odds
            self.exposure *= self.acct.linear
        held = self.position
        if self.hedged.any():  # hedging venues: the legs' gross posts margin
            held = np.where(self.hedged, self.long_pos - self.short_pos, self.position)
        self.acct.refresh(held, self.marks)
        self.equity = float(self.limits.capital + self.cash + self.exposure.sum())
        self.sector_gross = np.bincount(
            self.sector_of, weights=np.abs(self.exposure), minlength=self.sector_gross.shape[0]
        ).astype(np.float64)
        self.stats.set_exposure(self.exposure)


def redelivery_key(ev: object) -> tuple | None:
    """What identifies an execution event whose second application would change open orders
    (a fill, a replace, a refused request); None for those that are idempotent (acks, cancels,
    expiries, rejects of new orders close an order once)."""
    if isinstance(ev, OrderPartiallyFilled):
        return ("fill", ev.client_order_id, ev.fill_id)
    if isinstance(ev, OrderReplaced):
        return ("replaced", ev.client_order_id, ev.px, ev.qty, ev.ts_event, ev.ts_recv)
    if isinstance(ev, OrderReplaceRejected):
        return ("replace_refused", ev.client_order_id, ev.reason, ev.ts_event, ev.ts_recv)
    if isinstance(ev, OrderCancelRejected):
        return ("cancel_refused", ev.client_order_id, ev.reason, ev.ts_event, ev.ts_recv)
    return None
