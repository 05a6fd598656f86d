"""The risk gate: the only door from strategies to execution (DESIGN §2).

``RiskGate`` is the risk process's state machine. Every intent either becomes an order (the same
fields, ``ts_approved = now_ns``, ``ts_origin`` kept so tick-to-order latency spans the gate) or
is rejected. A rejection returns **two** messages, because two parties need to know:

- a ``RiskEvent`` (kind ``ORDER_REJECTED``, the reason, the offending value and the limit) for the
  recorder, dashboards and the audit trail;
- an ``OrderRejected`` execution event for the strategy that asked, so its view of its open orders
  stays right (the order will never exist) — the runtime routes it like any execution event.

Exceptions, both chosen so that a strategy's order book view never diverges from the venue's:

- a *duplicate* ``client_order_id`` (a resend of an order that is already open) gets the RiskEvent
  only: an ``OrderRejected`` would tell the strategy its live original is dead;
- a rejected *replace* (of an order that is open) gets the RiskEvent and a ``CancelOrder`` for the
  original, not an ``OrderRejected``: the order is still resting, the strategy no longer wants it
  at the old terms, and a stale quote left in the book is the larger risk. The strategy sees an
  ordinary ``OrderCanceled``.

Checks on a new order, in order (every limit configurable; 0 turns the optional ones off):

1. trading state: HALTED (or the engine stopping) rejects; cancels always pass;
   staleness: an intent built on data older than ``max_intent_age_ns`` (``now_ns −
   ts_origin``, both on the runtime's clock: monotonic in the processes, simulated in a
   backtest) is refused with reason ``stale_intent`` (one with a ``ts_origin`` more than the
   limit in the future: ``ts_origin_in_future``, a clock mix-up). A stale *replace* is refused
   like any refused replace — the original is canceled — whether it would add exposure or
   only move the price: a price computed from old data is as wrong as a new order from it,
   and canceling is always safe. Cancels are never refused for age;
2. well-formed: known instrument, qty > 0, price > 0 for priced orders, side (a replace:
   ``new_qty`` is the new open quantity, > 0; ``new_px`` > 0, except that a market order or
   parent replaced at px 0 stays market and is checked as a new market order of that size);
3. instrument halted (venue halt, exchange circuit breaker, flash move: ``engine.market_guard``);
4. duplicate id, max open orders, max orders per second (new orders and replaces, sliding 1 s);
5. max order notional (market orders valued at the opposite best, else the last trade);
6. price band (fat finger): a limit price more than ``price_band_pct`` from the mid;
7. max position in lots, worst case: the filled position plus every open order on the same side
   plus this one;
8. reduce-only, when the trading state is REDUCING or the order carries the REDUCE_ONLY flag:
   the worst case must not be larger, nor on the other side of zero, than the position now;
9. for an order that *increases* the instrument's exposure (|worst case| > |position|), valued at
   the mark (mid, else last, else the order's reference price):
   single position ≤ ``max_position_pct`` of equity; sector gross exposure ≤ ``max_sector_pct``;
   correlation with every held position (signed by direction: long/short of two correlated
   instruments is a hedge) ≤ ``max_correlation``; portfolio VaR after the order ≤
   ``max_var_pct`` of equity (an order that lowers VaR always passes). VaR and correlation need
   ``min_history`` return intervals; before that they are skipped (counted in ``skipped_stats``).

Equity is ``capital`` + cash flows of the fills (price and fees) + positions at the mark, so the
gate needs nothing but execution events and prices. The state that is read per order — positions,
open quantities, marks, exposures, sector totals, the VaR caches of ``engine.risk_stats`` — lives
in numpy arrays indexed by instrument id and is refreshed off the order path (``on_prices``).

Real-time controls:

- ``on_prices`` (the risk process calls it every few ms with the top-of-book table): marks,
  equity, exposures; the daily-loss circuit breaker and drawdown protection (each with a
  REDUCING and a HALTED threshold; they only escalate, ``engine.trading_state``; REDUCING
  cancels the orders that would add to a position, HALTED cancels every open order);
  per-position stop loss / take profit (a market IOC order closing the position, strategy id 0,
  after canceling the instrument's open orders; none while HALTED); flash-move halts
  (``engine.market_guard``).
- ``on_control``: KILL halts and cancels every open order; FLATTEN does the same and also sends
  market orders closing every position (sized to the position, so reduce-only by construction;
  best effort: fills racing the cancels may leave a residue — send FLATTEN again); CANCEL_ALL
  cancels without halting; RESUME is the only way back to ACTIVE — a halt never lifts by itself —
  and re-arms the breakers from the current equity; STOP (engine shutdown) blocks new orders and
  cancels, without touching the trading state (a clean stop is not a halt to remember).
- ``on_status``: venue halts and circuit breakers per instrument.

Every change of the trading state is a ``TradingStateChanged`` (plus a ``RiskEvent`` for the
record); ``persistent_state`` / ``restore_state`` carry the state across a restart of the risk
process (the process stores it; the engine does no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.instruments import Instrument, InstrumentTable
from engine.market_guard import MarketGuard
from engine.messages import (
    Bar,
    BookSnapshot,
    CancelOrder,
    Control,
    ControlCommand,
    ExchangeStatus,
    InstrumentHalted,
    InstrumentResumed,
    IntentCancel,
    IntentNew,
    IntentReplace,
    NewOrder,
    OpenOrderSnapshot,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Quote,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
    Side,
    TimeInForce,
    Trade,
    TradingState,
    TradingStateChanged,
)
from engine.oms import is_request_reject
from engine.risk_limits import RiskLimits
from engine.risk_stats import METHODS, RiskStats
from engine.trading_state import TradingStateMachine

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

#: order types whose ``px`` is a limit price (must be > 0)
_PRICED = (int(OrderType.LIMIT), int(OrderType.STOP_LIMIT))
#: order types that need a trigger price (``stop_px`` > 0)
_STOPPED = (int(OrderType.STOP), int(OrderType.STOP_LIMIT))
_REDUCE_ONLY = int(OrderFlag.REDUCE_ONLY)
#: tolerance (in percent) of the breakers and stops: a figure that lands on its threshold trips
#: it even when binary floating point puts it a hair below
_EPS = 1e-9


@dataclass(slots=True)
class _Open:
    """What risk remembers of an approved order until it is terminal."""

    instrument_id: int
    side: int
    px: int
    leaves: int
    strategy_id: int
    reserved: int = 0  # extra open qty counted while a size-increasing replace is in flight


class RiskGate:
    """Pre-trade risk checks and real-time controls (see the module docstring)."""

    def __init__(
        self,
        limits: RiskLimits,
        instruments: InstrumentTable | Iterable[Instrument],
        *,
        own_id_base: int = 0,
    ) -> None:
        self.limits = limits
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        n = (max(self.instruments.ids) + 1) if len(self.instruments) else 0
        self._n = n
        self._ins: list[Instrument | None] = [self.instruments.get(i) for i in range(n)]
        self.position = np.zeros(n, dtype=np.int64)  # filled, lots
        self.open_buy = np.zeros(n, dtype=np.int64)  # open buy quantity, lots
        self.open_sell = np.zeros(n, dtype=np.int64)
        self.bid = np.zeros(n, dtype=np.int64)  # last known best bid / ask / trade, ticks (0: none)
        self.ask = np.zeros(n, dtype=np.int64)
        self.last = np.zeros(n, dtype=np.int64)
        self.mult = np.array([i.tick_size * i.lot_size if i else 0.0 for i in self._ins])
        self.avg_px = np.zeros(n)  # average entry price of the position, ticks
        self.marks = np.zeros(n)  # ticks, at the last refresh
        self.exposure = np.zeros(n)  # signed money: position × mark × multiplier
        self.signs = np.zeros(n)  # sign of each filled position (correlation check)
        sectors = sorted({i.sector for i in self._ins if i is not None})
        self.sector_names = sectors
        self.sector_of = np.array(
            [sectors.index(i.sector) if i else 0 for i in self._ins], dtype=np.int64
        )
        self.sector_gross = np.zeros(max(len(sectors), 1))
        self.open_orders: dict[int, _Open] = {}
        self.trading = TradingStateMachine()
        self.stopping = False
        self.approved = 0
        self.rejected = 0
        self.skipped_stats = 0  # exposure-increasing orders judged without VaR/correlation
        self.stale_rejected = 0  # new orders and replaces refused for the age of their data
        self._own_counter = own_id_base  # client_order_ids of risk's own orders: strategy_id 0
        self._protect: dict[int, int] = {}  # instrument -> open stop-loss/take-profit order id
        # events ``restore`` already applied to open orders (``_redelivery_key``) that the events
        # ring may deliver again to a restarted risk process, up to exec's time ``_restored_ns``
        self._restored: set[tuple] = set()
        self._restored_ns = 0
        # equity: capital + cash flows of fills + positions at the mark
        self.cash = 0.0
        self.equity = float(limits.capital)
        self.day_start_equity = float(limits.capital)
        self.peak_equity = float(limits.capital)
        self._rate = np.zeros(max(limits.max_orders_per_s, 1), dtype=np.int64)
        self._rate_i = 0
        self.stats = RiskStats(n, limits.var_confidence, limits.var_horizon, limits.min_history)
        self._var_method = METHODS[limits.var_method]
        self.guard = MarketGuard(
            n,
            limits.flash_band_pct / 100.0,
            limits.flash_window_ns,
            limits.flash_cooldown_ns,
            limits.flash_samples,
        )

    @property
    def state(self) -> int:
        return self.trading.state

    @state.setter
    def state(self, value: int) -> None:  # for tests and tools: no record, no persistence
        self.trading.state = int(value)

    # --- helpers -----------------------------------------------------------------------------
    def _known(self, iid: int) -> Instrument | None:
        return self._ins[iid] if 0 <= iid < self._n else None

    def _reject(
        self,
        intent: IntentNew | IntentReplace | IntentCancel,
        reason: str,
        value: float,
        limit: float,
        now_ns: int,
        notify_strategy: bool = True,
    ) -> list[RiskOutput]:
        self.rejected += 1
        out: list[RiskOutput] = [
            RiskEvent(
                kind=int(RiskEventKind.ORDER_REJECTED),
                instrument_id=intent.instrument_id,
                client_order_id=intent.client_order_id,
                reason=reason,
                value=float(value),
                limit=float(limit),
                ts=now_ns,
                state=int(self.state),
            )
        ]
        if notify_strategy:
            out.append(
                OrderRejected(
                    client_order_id=intent.client_order_id,
                    instrument_id=intent.instrument_id,
                    reason=f"risk: {reason}",
                    ts_origin=intent.ts_origin,
                    ts_event=now_ns,
                    ts_recv=now_ns,
                )
            )
        return out

    def _stale(self, ts_origin: int, now_ns: int) -> tuple[str, float, float] | None:
        """(reason, age ms, limit ms) when an intent's data is older than
        ``max_intent_age_ns`` (or as far in the future: another clock), else None. Two integer
        comparisons on the pass path; the tuple is built only for a refusal."""
        max_age = self.limits.max_intent_age_ns
        age = now_ns - ts_origin
        if max_age <= 0 or -max_age <= age <= max_age:
            return None
        self.stale_rejected += 1
        reason = "stale_intent" if age > 0 else "ts_origin_in_future"
        return reason, age / 1e6, max_age / 1e6

    def _ref_px(self, iid: int, side: int, order_type: int, px: int) -> int:
        """Price used to value an order: its limit, or for a market order the price it would
        most likely trade at (opposite best, else last trade); 0 if unknown."""
        if order_type in _PRICED:
            return px
        ref = int(self.ask[iid] if side == Side.BUY else self.bid[iid])
        return ref if ref > 0 else int(self.last[iid])

    def _worst(self, iid: int, side: int, extra: int) -> int:
        """Worst-case |position| on ``side`` if ``extra`` more lots were open on that side."""
        if side == Side.BUY:
            return int(self.position[iid] + self.open_buy[iid]) + extra
        return -(int(self.position[iid] - self.open_sell[iid]) - extra)

    def _add_open(self, iid: int, side: int, qty: int) -> None:
        if side == Side.BUY:
            self.open_buy[iid] += qty
        else:
            self.open_sell[iid] += qty

    def _rate_ok(self, now_ns: int) -> bool:
        """Fewer than ``max_orders_per_s`` orders approved in the last second (O(1): the ring
        holds the times of the last N approvals; the oldest must be over a second old)."""
        return (
            self.limits.max_orders_per_s <= 0
            or now_ns - int(self._rate[self._rate_i]) >= 1_000_000_000
            or (self._rate[self._rate_i] == 0)
        )

    def _rate_note(self, now_ns: int) -> None:
        if self.limits.max_orders_per_s > 0:
            self._rate[self._rate_i] = now_ns
            self._rate_i = (self._rate_i + 1) % self._rate.shape[0]

    def _order_checks(
        self, iid: int, side: int, extra: int, ref: int, px: int, priced: bool, reduce_only: bool
    ) -> tuple[str, float, float] | None:
        """The checks a new order and a replace share: price band, position, reduce-only and
        exposure. ``extra`` is the additional open quantity on ``side``. Returns (reason, value,
        limit) for a rejection, None to approve."""
        lim = self.limits
        if priced and lim.price_band_pct > 0:
            b, a = int(self.bid[iid]), int(self.ask[iid])
            if b > 0 and a > 0:
                mid = (b + a) / 2.0
                dev = abs(px - mid) / mid * 100.0
                if dev > lim.price_band_pct:
                    return "price band", dev, lim.price_band_pct
        pos = int(self.position[iid])
        if side == Side.BUY:
            proj = pos + int(self.open_buy[iid]) + extra
        else:
            proj = pos - int(self.open_sell[iid]) - extra
        worst = proj if side == Side.BUY else -proj
        if extra > 0 and worst > lim.max_position_lots:
            return "max position", worst, lim.max_position_lots
        increases = abs(proj) > abs(pos)
        reducing = reduce_only or self.trading.state == TradingState.REDUCING
        if reducing and extra > 0 and (increases or proj * pos < 0):
            why = "reduce-only order" if reduce_only else "reduce-only (trading state REDUCING)"
            return why, proj, pos
        if not increases or extra <= 0:
            return None
        return self._exposure_checks(iid, proj, ref)

    def _exposure_checks(self, iid: int, proj: int, ref: int) -> tuple[str, float, float] | None:
        lim = self.limits
        mark = float(self.marks[iid])
        val = (mark if mark > 0 else float(ref)) * float(self.mult[iid])
        new_w = proj * val
        equity = self.equity
        pct_limits = lim.max_position_pct > 0 or lim.max_sector_pct > 0 or lim.max_var_pct > 0
        if pct_limits and not equity > 0:
            return "no equity", equity, 0.0
        if lim.max_position_pct > 0:
            cap = equity * lim.max_position_pct / 100.0
            if abs(new_w) > cap:
                return "position % of equity", abs(new_w) / equity * 100.0, lim.max_position_pct
        if lim.max_sector_pct > 0:
            s = int(self.sector_of[iid])
            gross = float(self.sector_gross[s]) - abs(float(self.exposure[iid])) + abs(new_w)
            if gross > equity * lim.max_sector_pct / 100.0:
                name = self.sector_names[s] if self.sector_names else "?"
                return f"sector exposure ({name})", gross / equity * 100.0, lim.max_sector_pct
        need_stats = lim.max_correlation < 1.0 or lim.max_var_pct > 0
        if not need_stats:
            return None
        st = self.stats
        if not st.ready:
            self.skipped_stats += 1
            return None
        if lim.max_correlation < 1.0:
            c, j = st.max_corr(iid, 1.0 if proj > 0 else -1.0, self.signs)
            if c > lim.max_correlation:
                other = self._ins[j]
                return f"correlation with {other.symbol if other else j}", c, lim.max_correlation
        if lim.max_var_pct > 0:
            d = new_w - float(self.exposure[iid])
            after = self._var(iid, d)
            cap = equity * lim.max_var_pct / 100.0
            if after > cap and after > self._var(iid, 0.0):
                return "VaR", after, cap
        return None

    def _var(self, iid: int, d: float) -> float:
        return self.stats.var_after(iid, d, self._var_method)

    # --- intents -----------------------------------------------------------------------------
    def on_intent(
        self, intent: IntentNew | IntentCancel | IntentReplace, now_ns: int
    ) -> list[RiskOutput]:
        """Approve an intent (→ order) or reject it (→ RiskEvent + OrderRejected)."""
        if isinstance(intent, IntentNew):
            return self._on_new(intent, now_ns)
        if isinstance(intent, IntentCancel):
            # always allowed, whatever the state or the age of its data: reducing exposure is
            # never blocked (a cancel is always safe)
            return [
                CancelOrder(
                    client_order_id=intent.client_order_id,
                    strategy_id=intent.strategy_id,
                    instrument_id=intent.instrument_id,
                    ts_origin=intent.ts_origin,
                    ts_approved=now_ns,
                )
            ]
        if isinstance(intent, IntentReplace):
            return self._on_replace(intent, now_ns)
        raise TypeError(f"not an intent: {type(intent).__name__}")

    def _on_new(self, it: IntentNew, now_ns: int) -> list[RiskOutput]:
        lim = self.limits
        if self.trading.state == TradingState.HALTED:
            return self._reject(it, "trading halted", self.state, TradingState.ACTIVE, now_ns)
        if self.stopping:
            return self._reject(it, "engine stopping", 0, 0, now_ns)
        max_age = lim.max_intent_age_ns  # inline on the pass path: no call, no allocation
        if max_age > 0 and not -max_age <= now_ns - it.ts_origin <= max_age:
            stale = self._stale(it.ts_origin, now_ns)
            assert stale is not None
            return self._reject(it, stale[0], stale[1], stale[2], now_ns)
        iid = it.instrument_id
        ins = self._known(iid)
        if ins is None:
            return self._reject(it, f"unknown instrument {iid}", iid, 0, now_ns)
        if it.qty <= 0:
            return self._reject(it, "qty must be > 0", it.qty, 0, now_ns)
        if it.order_type in _PRICED and it.px <= 0:
            return self._reject(it, "price must be > 0", it.px, 0, now_ns)
        if it.order_type in _STOPPED and it.stop_px <= 0:
            return self._reject(it, "stop price must be > 0", it.stop_px, 0, now_ns)
        if it.side not in (Side.BUY, Side.SELL):
            return self._reject(it, "side must be BUY or SELL", it.side, 0, now_ns)
        if self.guard.halted[iid]:
            return self._reject(it, f"instrument halted: {self.guard.reason[iid]}", iid, 0, now_ns)
        if it.client_order_id in self.open_orders:
            return self._reject(
                it,
                "duplicate client_order_id",
                it.client_order_id,
                0,
                now_ns,
                notify_strategy=False,
            )
        if len(self.open_orders) >= lim.max_open_orders:
            return self._reject(
                it, "max open orders", len(self.open_orders) + 1, lim.max_open_orders, now_ns
            )
        if not self._rate_ok(now_ns):
            return self._reject(
                it, "max orders per second", lim.max_orders_per_s + 1, lim.max_orders_per_s, now_ns
            )
        ref = self._ref_px(iid, it.side, it.order_type, it.px)
        if ref <= 0:
            return self._reject(
                it, "no price to value market order", 0, lim.max_order_notional, now_ns
            )
        notional = ins.notional(ref, it.qty)
        if notional > lim.max_order_notional:
            return self._reject(it, "max order notional", notional, lim.max_order_notional, now_ns)
        bad = self._order_checks(
            iid,
            it.side,
            it.qty,
            ref,
            it.px,
            it.order_type in _PRICED,
            bool(it.flags & _REDUCE_ONLY),
        )
        if bad is not None:
            return self._reject(it, bad[0], bad[1], bad[2], now_ns)

        self.approved += 1
        self._rate_note(now_ns)
        self.open_orders[it.client_order_id] = _Open(iid, it.side, it.px, it.qty, it.strategy_id)
        self._add_open(iid, it.side, it.qty)
        return [
            NewOrder(
                client_order_id=it.client_order_id,
                strategy_id=it.strategy_id,
                instrument_id=iid,
                side=it.side,
                order_type=it.order_type,
                tif=it.tif,
                px=it.px,
                qty=it.qty,
                ts_origin=it.ts_origin,
                ts_approved=now_ns,
                stop_px=it.stop_px,
                flags=it.flags,
                expire_ns=it.expire_ns,
                algo=it.algo,  # an algo parent stays one: exec works it, never sends it whole
                algo_params=it.algo_params,
                lots=it.lots,  # the lots its strategy named (engine.stages.exec designates them)
            )
        ]

    def _on_replace(self, it: IntentReplace, now_ns: int) -> list[RiskOutput]:
        lim = self.limits
        o = self.open_orders.get(it.client_order_id)
        if o is None:
            # nothing open to replace (already filled/canceled, or never approved): tell the
            # recorder only; the strategy learns the order's fate from its own events
            return self._reject(
                it, "replace of unknown order", it.client_order_id, 0, now_ns, notify_strategy=False
            )
        ins = self._known(o.instrument_id)
        assert ins is not None
        reason = ""
        value = limit = 0.0
        # a market order (an algo parent, mostly: a plain one rarely stays open) approved at px 0
        # and replaced at px 0 stays market: sized and valued as a new market order would be
        market = o.px == 0 and it.new_px == 0
        if self.trading.state == TradingState.HALTED:
            reason, value, limit = "trading halted", self.state, TradingState.ACTIVE
        elif self.stopping:
            reason = "engine stopping"
        elif (stale := self._stale(it.ts_origin, now_ns)) is not None:
            reason, value, limit = stale  # the original is canceled: it rests on old data too
        elif self.guard.halted[o.instrument_id]:
            reason = f"instrument halted: {self.guard.reason[o.instrument_id]}"
        elif it.new_qty <= 0:
            reason, value = "qty must be > 0", it.new_qty
        elif it.new_px <= 0 and not market:
            reason, value = "price must be > 0", it.new_px
        elif not self._rate_ok(now_ns):
            reason, value, limit = (
                "max orders per second",
                lim.max_orders_per_s + 1,
                lim.max_orders_per_s,
            )
        else:
            kind = int(OrderType.MARKET) if market else int(OrderType.LIMIT)
            ref = self._ref_px(o.instrument_id, o.side, kind, it.new_px)
            notional = ins.notional(ref, it.new_qty)
            if ref <= 0:
                reason, limit = "no price to value market order", lim.max_order_notional
            elif notional > lim.max_order_notional:
                reason, value, limit = "max order notional", notional, lim.max_order_notional
            else:
                bad = self._order_checks(
                    o.instrument_id,
                    o.side,
                    it.new_qty - o.leaves,  # new_qty is the new OPEN quantity (as the venue's)
                    ref,
                    it.new_px,
                    not market,
                    False,
                )
                if bad is not None:
                    reason, value, limit = bad
        if reason:
            out = self._reject(it, reason, value, limit, now_ns, notify_strategy=False)
            out.append(
                CancelOrder(
                    client_order_id=it.client_order_id,
                    strategy_id=it.strategy_id,
                    instrument_id=o.instrument_id,
                    ts_origin=it.ts_origin,
                    ts_approved=now_ns,
                )
            )
            return out
        # until the venue confirms, count the larger of old and new open quantity
        if it.new_qty > o.leaves:
            extra = it.new_qty - o.leaves
            self._add_open(o.instrument_id, o.side, extra)
            o.leaves += extra
            o.reserved += extra
        self.approved += 1
        self._rate_note(now_ns)
        return [
            ReplaceOrder(
                client_order_id=it.client_order_id,
                strategy_id=it.strategy_id,
                instrument_id=o.instrument_id,
                new_px=it.new_px,
                new_qty=it.new_qty,
                ts_origin=it.ts_origin,
                ts_approved=now_ns,
            )
        ]

    # --- state from the outside --------------------------------------------------------------
    def on_exec_event(self, ev: object, count_fill: bool = True) -> None:
        """Track positions, cash and open orders from execution events (fills of unknown
        orders still move the position: the venue's fill is the truth). ``count_fill=False``:
        a fill the seeded positions already hold (after a restart) — open orders only."""
        if self._restored and self._seen_in_restore(ev):
            if (
                count_fill
                and isinstance(ev, OrderPartiallyFilled)
                and 0 <= ev.instrument_id < self._n
            ):
                self._on_fill(
                    ev.instrument_id, int(ev.side), int(ev.fill_qty), int(ev.fill_px), float(ev.fee)
                )
            return  # restore() applied it to the open orders already
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            iid = ev.instrument_id
            if count_fill and 0 <= iid < self._n:
                self._on_fill(iid, int(ev.side), int(ev.fill_qty), int(ev.fill_px), float(ev.fee))
            o = self.open_orders.get(ev.client_order_id)
            if o is not None:
                filled = min(ev.fill_qty, o.leaves)
                self._add_open(o.instrument_id, o.side, -filled)
                o.leaves -= filled
                if isinstance(ev, OrderFilled) or ev.leaves_qty <= 0 or o.leaves <= 0:
                    self._close(ev.client_order_id)
        elif isinstance(ev, OrderRejected) and is_request_reject(ev):
            o = self.open_orders.get(ev.client_order_id)
            if o is not None and o.reserved and ev.reason.startswith("replace"):
                undo = min(o.reserved, o.leaves)  # the replace will not happen: release it
                self._add_open(o.instrument_id, o.side, -undo)
                o.leaves -= undo
                o.reserved = 0
        elif isinstance(ev, OrderCanceled | OrderExpired | OrderRejected):
            self._close(ev.client_order_id)
        elif isinstance(ev, OrderReplaced):
            o = self.open_orders.get(ev.client_order_id)
            if o is not None:
                self._add_open(o.instrument_id, o.side, ev.qty - o.leaves)
                o.leaves = ev.qty
                o.px = ev.px
                o.reserved = 0
        elif isinstance(ev, OrderAccepted):
            pass  # already counted as open since approval

    def _on_fill(self, iid: int, side: int, qty: int, px: int, fee: float) -> None:
        """Position, average entry, cash, equity and exposures after one fill: O(n + T)."""
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

    def _close(self, coid: int) -> None:
        o = self.open_orders.pop(coid, None)
        if o is not None and o.leaves > 0:
            self._add_open(o.instrument_id, o.side, -o.leaves)
        if o is not None and o.strategy_id == 0 and self._protect.get(o.instrument_id) == coid:
            del self._protect[o.instrument_id]

    def seed_positions(self, rows: Iterable[tuple[int, int, float, float, float]]) -> None:
        """After a restart of the risk process: positions from exec's positions table, as
        (instrument_id, position, avg_px ticks, realized, fees). Cash is rebuilt so that equity
        = capital + realized − fees + unrealized, what the portfolio reports."""
        for iid, pos, avg, realized, fees in rows:
            if not 0 <= iid < self._n or self._ins[iid] is None:
                continue
            self.position[iid] = int(pos)
            self.avg_px[iid] = float(avg)
            self.signs[iid] = float(np.sign(pos))
            self.cash += (
                float(realized) - float(fees) - int(pos) * float(avg) * float(self.mult[iid])
            )
        self._refresh_exposure()

    def on_market_data(self, msg: object) -> None:
        """Track reference prices for valuing market orders and exposure."""
        if isinstance(msg, Quote):
            iid = msg.instrument_id
            if 0 <= iid < self._n:
                if msg.bid_qty > 0 and msg.bid_px > 0:
                    self.bid[iid] = msg.bid_px
                if msg.ask_qty > 0 and msg.ask_px > 0:
                    self.ask[iid] = msg.ask_px
        elif isinstance(msg, Trade):
            if 0 <= msg.instrument_id < self._n and msg.px > 0:
                self.last[msg.instrument_id] = msg.px
        elif isinstance(msg, Bar):
            if 0 <= msg.instrument_id < self._n and msg.close > 0:
                self.last[msg.instrument_id] = msg.close
        elif isinstance(msg, BookSnapshot):
            iid = msg.instrument_id
            if 0 <= iid < self._n:
                if msg.bid_px:
                    self.bid[iid] = msg.bid_px[0]
                if msg.ask_px:
                    self.ask[iid] = msg.ask_px[0]

    def mark(self, instrument_id: int) -> float:
        """Mid of the last known bid/ask (ticks), else the last trade; 0.0 if nothing known."""
        b, a = int(self.bid[instrument_id]), int(self.ask[instrument_id])
        if b > 0 and a > 0:
            return (b + a) / 2.0
        return float(self.last[instrument_id])

    def mids(self) -> np.ndarray:
        """Every instrument's mark (ticks; 0 where nothing is known), vectorised."""
        both = (self.bid > 0) & (self.ask > 0)
        return np.where(both, (self.bid + self.ask) / 2.0, self.last.astype(np.float64))

    def _refresh_exposure(self) -> None:
        m = self.mids()
        self.marks = np.where(m > 0, m, self.marks)
        self.exposure = self.position * self.marks * self.mult
        self.equity = float(self.limits.capital + self.cash + self.exposure.sum())
        self.sector_gross = np.bincount(
            self.sector_of, weights=np.abs(self.exposure), minlength=self.sector_gross.shape[0]
        ).astype(np.float64)
        self.stats.set_exposure(self.exposure)

    # --- real-time controls -------------------------------------------------------------------
    def set_returns(self, returns: np.ndarray) -> None:
        """A new window of returns (T × n by instrument id) for VaR and correlation."""
        self.stats.set_returns(returns)

    def on_prices(self, now_ns: int, wall_ns: int = 0) -> list[RiskOutput]:
        """Off the order path, every few ms: marks, equity and exposures from the latest prices
        (``on_market_data`` or the top-of-book table), then the breakers, stop loss / take
        profit and flash-move halts. Returns what must be sent or recorded."""
        self._refresh_exposure()
        out: list[RiskOutput] = []
        out += self.guard.on_prices(self.marks, now_ns)
        out += self._breakers(now_ns, wall_ns)
        # (halted means nothing leaves but cancels and an operator's flatten: no stops either)
        if (self.limits.stop_loss_pct > 0 or self.limits.take_profit_pct > 0) and not (
            self.trading.state == TradingState.HALTED or self.stopping
        ):
            out += self._protective(now_ns)
        return out

    def on_status(self, msg: ExchangeStatus, now_ns: int) -> list[RiskOutput]:
        """A venue's status for an instrument (or the whole venue)."""
        return list(self.guard.on_status(msg, now_ns))

    def new_day(self) -> None:
        """Start a new trading day: the daily P&L is measured from the equity now."""
        self.day_start_equity = self.equity

    def _breakers(self, now_ns: int, wall_ns: int) -> list[RiskOutput]:
        lim = self.limits
        eq = self.equity
        if eq > self.peak_equity:
            self.peak_equity = eq
        out: list[RiskOutput] = []
        base = self.day_start_equity
        if base > 0 and (lim.daily_loss_halt_pct > 0 or lim.daily_loss_reduce_pct > 0):
            loss = (base - eq) / base * 100.0
            for pct, st in (
                (lim.daily_loss_halt_pct, TradingState.HALTED),
                (lim.daily_loss_reduce_pct, TradingState.REDUCING),
            ):
                if pct > 0 and loss >= pct - _EPS:
                    out += self._escalate(
                        st,
                        f"daily loss {loss:.3f}% >= {pct:g}%",
                        "daily_loss",
                        now_ns,
                        wall_ns,
                        loss,
                        pct,
                    )
                    break
        peak = self.peak_equity
        if peak > 0 and (lim.drawdown_halt_pct > 0 or lim.drawdown_reduce_pct > 0):
            dd = (peak - eq) / peak * 100.0
            for pct, st in (
                (lim.drawdown_halt_pct, TradingState.HALTED),
                (lim.drawdown_reduce_pct, TradingState.REDUCING),
            ):
                if pct > 0 and dd >= pct - _EPS:
                    out += self._escalate(
                        st, f"drawdown {dd:.3f}% >= {pct:g}%", "drawdown", now_ns, wall_ns, dd, pct
                    )
                    break
        return out

    def _escalate(
        self,
        state: int,
        reason: str,
        source: str,
        now_ns: int,
        wall_ns: int,
        value: float,
        limit: float,
    ) -> list[RiskOutput]:
        ch = self.trading.escalate(state, reason, source, now_ns, wall_ns, value, limit)
        if ch is None:
            return []
        out: list[RiskOutput] = [
            RiskEvent(
                int(RiskEventKind.LIMIT_BREACH), -1, 0, reason, value, limit, now_ns, int(state)
            ),
            ch,
        ]
        if state == TradingState.HALTED:
            out += self.cancel_all(now_ns)
        else:  # REDUCING: pull the orders that would add to a position
            out += self._cancel_increasing(now_ns)
        return out

    def _cancel_increasing(self, now_ns: int) -> list[RiskOutput]:
        out: list[RiskOutput] = []
        for coid, o in self.open_orders.items():
            pos = int(self.position[o.instrument_id])
            if o.strategy_id != 0 and (pos == 0 or (pos > 0) == (o.side > 0)):
                out.append(CancelOrder(coid, o.strategy_id, o.instrument_id, now_ns, now_ns))
        return out

    def _protective(self, now_ns: int) -> list[RiskOutput]:
        """Stop loss / take profit versus the average entry price: a market IOC closing the
        position (after canceling the instrument's other open orders)."""
        lim = self.limits
        pos = self.position
        avg = self.avg_px
        mk = self.marks
        live = (pos != 0) & (avg > 0) & (mk > 0) & ~self.guard.halted
        if not live.any():
            return []
        move = np.zeros_like(mk)
        np.divide(mk - avg, avg, out=move, where=live)
        pnl_pct = move * np.sign(pos) * 100.0  # favourable move, percent of entry
        hit = np.zeros_like(live)
        if lim.stop_loss_pct > 0:
            hit |= live & (pnl_pct <= -lim.stop_loss_pct + _EPS)
        if lim.take_profit_pct > 0:
            hit |= live & (pnl_pct >= lim.take_profit_pct - _EPS)
        out: list[RiskOutput] = []
        for i in np.flatnonzero(hit).tolist():
            if i in self._protect:
                continue  # one protective order at a time per instrument
            stop = bool(pnl_pct[i] < 0)
            kind = "stop loss" if stop else "take profit"
            lim_pct = -lim.stop_loss_pct if stop else lim.take_profit_pct
            out.append(
                RiskEvent(
                    int(RiskEventKind.LIMIT_BREACH),
                    i,
                    0,
                    kind,
                    float(pnl_pct[i]),
                    lim_pct,
                    now_ns,
                    int(self.state),
                )
            )
            for coid, o in self.open_orders.items():
                if o.instrument_id == i:
                    out.append(CancelOrder(coid, o.strategy_id, i, now_ns, now_ns))
            out.append(self._own_close(i, now_ns))
            self._protect[i] = out[-1].client_order_id  # type: ignore[union-attr]
        return out

    def _own_close(self, iid: int, now_ns: int) -> NewOrder:
        """A market IOC order of risk's own (strategy 0) closing instrument ``iid``'s position."""
        pos = int(self.position[iid])
        self._own_counter += 1
        coid = self._own_counter  # strategy_id 0 << 32 | counter
        side = int(Side.SELL if pos > 0 else Side.BUY)
        self.open_orders[coid] = _Open(iid, side, 0, abs(pos), 0)
        self._add_open(iid, side, abs(pos))
        return NewOrder(
            client_order_id=coid,
            strategy_id=0,
            instrument_id=iid,
            side=side,
            order_type=int(OrderType.MARKET),
            tif=int(TimeInForce.IOC),
            px=0,
            qty=abs(pos),
            ts_origin=now_ns,
            ts_approved=now_ns,
        )

    # --- controls ----------------------------------------------------------------------------
    def on_control(self, ctl: Control, wall_ns: int = 0) -> list[RiskOutput]:
        """Kill switch and friends; ``ctl.ts`` is the time of the command."""
        now = ctl.ts
        cmd = ctl.command
        out: list[RiskOutput] = []
        if cmd in (ControlCommand.KILL, ControlCommand.FLATTEN):
            reason = ctl.arg or ControlCommand(cmd).name.lower()
            ch = self.trading.escalate(TradingState.HALTED, reason, "operator", now, wall_ns)
            out.append(
                RiskEvent(
                    kind=int(RiskEventKind.KILL_SWITCH),
                    instrument_id=-1,
                    client_order_id=0,
                    reason=reason,
                    value=float(len(self.open_orders)),
                    limit=0.0,
                    ts=now,
                    state=int(self.state),
                )
            )
            if ch is not None:
                out.append(ch)
            out += self.cancel_all(now)
            if cmd == ControlCommand.FLATTEN:
                out += self._flatten(now)
        elif cmd == ControlCommand.STOP:
            self.stopping = True
            out.append(
                RiskEvent(
                    int(RiskEventKind.STATE_CHANGE),
                    -1,
                    0,
                    ctl.arg or "stop",
                    float(len(self.open_orders)),
                    0.0,
                    now,
                    int(self.state),
                )
            )
            out += self.cancel_all(now)
        elif cmd == ControlCommand.CANCEL_ALL:
            out += self.cancel_all(now)
        elif cmd == ControlCommand.RESUME:
            ch = self.trading.resume(ctl.arg or "resume", "operator", now, wall_ns)
            # re-arm the breakers from here: the operator has seen the loss and chosen to go on
            self.day_start_equity = self.peak_equity = self.equity
            out.append(
                RiskEvent(
                    kind=int(RiskEventKind.RESUMED),
                    instrument_id=-1,
                    client_order_id=0,
                    reason=ctl.arg or "resume",
                    value=0.0,
                    limit=0.0,
                    ts=now,
                    state=int(self.state),
                )
            )
            if ch is not None:
                out.append(ch)
        return out

    def cancel_all(self, now_ns: int) -> list[RiskOutput]:
        """A CancelOrder for every order risk considers open."""
        return [
            CancelOrder(
                client_order_id=coid,
                strategy_id=o.strategy_id,
                instrument_id=o.instrument_id,
                ts_origin=now_ns,
                ts_approved=now_ns,
            )
            for coid, o in self.open_orders.items()
        ]

    def _flatten(self, now_ns: int) -> list[RiskOutput]:
        """Market orders closing every filled position (risk's own order ids, strategy 0)."""
        out: list[RiskOutput] = []
        for iid in range(self._n):
            if int(self.position[iid]) == 0 or self._ins[iid] is None:
                continue
            out.append(self._own_close(iid, now_ns))
        return out

    # --- persistence (the process stores it) ---------------------------------------------------
    def persistent_state(self) -> dict[str, Any]:
        """What must outlive the risk process: the trading state and the breakers' baselines."""
        snap = self.trading.snapshot()
        snap["day_start_equity"] = self.day_start_equity
        snap["peak_equity"] = self.peak_equity
        snap["instrument_halts"] = {str(k): v for k, v in self.guard.snapshot().items()}
        return snap

    def restore(self, orders: Iterable[Any], events: Iterable[Any]) -> int:
        """After a restart of the risk process: the orders that were open, rebuilt from this run's
        record — every approved ``NewOrder`` and, in publication order, the execution events and
        the cancel / replace requests that followed — so that the kill switch and the breakers
        cancel them and max open orders and the worst-case position count them. Returns how many
        orders are open.

        Open orders only: fills take quantity off their order but never move positions or cash
        (those come from exec's positions table, ``seed_positions``; counting them here too
        would count them twice). The trading state and the breakers' baselines (daily P&L
        anchor, peak equity) come from ``restore_state``; the order-rate window starts empty.

        Why the record and not exec's memory: the record (the recorder's journal plus
        PostgreSQL, once the recorder has caught up with the ``orders`` and ``events`` rings)
        holds every order risk approved, including those still waiting in exec's input ring that
        exec's order table does not know yet, and it is there whether or not exec itself is
        alive or restarting; it needs no new channel between the two processes. Events applied
        here that the events ring delivers again (those the crashed process had not read yet)
        are recognised — fills by (order id, fill id), replaces and refused requests by their
        content and times — and not applied twice."""
        n0 = len(self.open_orders)
        for o in orders:
            if not isinstance(o, NewOrder) or o.client_order_id in self.open_orders:
                continue
            if self._known(o.instrument_id) is None or o.qty <= 0:
                continue
            if o.side not in (Side.BUY, Side.SELL):
                continue
            self.open_orders[o.client_order_id] = _Open(
                o.instrument_id, o.side, o.px, o.qty, o.strategy_id
            )
            self._add_open(o.instrument_id, o.side, o.qty)
        seen: set[tuple] = set()
        for ev in events:
            if isinstance(ev, ReplaceOrder):  # in flight until OrderReplaced / its reject
                r = self.open_orders.get(ev.client_order_id)
                if r is not None and ev.new_qty > r.leaves:
                    extra = ev.new_qty - r.leaves
                    self._add_open(r.instrument_id, r.side, extra)
                    r.leaves += extra
                    r.reserved += extra
                continue
            key = _redelivery_key(ev)
            if key is not None:
                seen.add(key)
                self._restored_ns = max(self._restored_ns, int(getattr(ev, "ts_recv", 0) or 0))
            self.on_exec_event(ev, count_fill=False)
        self._restored |= {k for k in seen if k[1] in self.open_orders}
        for coid, o in self.open_orders.items():  # risk's own stop / take-profit orders
            if o.strategy_id == 0:
                self._protect.setdefault(o.instrument_id, coid)
        return len(self.open_orders) - n0

    def restore_open(self, snapshots: Iterable[Any]) -> list[int]:
        """After a restart of the risk process without a record (storage off): the orders exec
        holds open, from its answer to ``OpenOrdersRequest`` (``OpenOrderSnapshot``s, end marker
        and anything else skipped). Returns the ids restored, so the caller can cancel exactly
        those when the engine is halted.

        Why exec's word is complete and needs no de-duplication: the request travelled on the
        ``orders`` ring behind every order risk approved before it died, and exec answers in the
        ``events`` ring behind every event it published before; events delivered before the
        answer are already in it (they found no open order here: positions only), events after
        it are newer. An order this gate already holds (its own, sent since the restart) is
        kept as it is. Like ``restore``: open orders only, positions come from
        ``seed_positions``."""
        added: list[int] = []
        for s in snapshots:
            if not isinstance(s, OpenOrderSnapshot) or s.end or s.order_id in self.open_orders:
                continue
            if self._known(s.instrument_id) is None or s.leaves_qty <= 0 or s.px < 0:
                continue
            if s.side not in (Side.BUY, Side.SELL):
                continue
            self.open_orders[s.order_id] = _Open(
                s.instrument_id, s.side, s.px, s.leaves_qty, s.strategy_id
            )
            self._add_open(s.instrument_id, s.side, s.leaves_qty)
            if s.strategy_id == 0:  # risk's own stop / take-profit order
                self._protect.setdefault(s.instrument_id, s.order_id)
            added.append(s.order_id)
        return added

    def _seen_in_restore(self, ev: object) -> bool:
        """Is ``ev`` one that ``restore`` applied already (delivered again by the ring)? Exec
        publishes in ``ts_recv`` order, so once an event newer than every restored one arrives
        the re-deliveries are over and the set is dropped (the check costs nothing after)."""
        ts = getattr(ev, "ts_recv", None)
        if isinstance(ts, int) and ts > self._restored_ns:
            self._restored.clear()
            return False
        key = _redelivery_key(ev)
        if key is None or key not in self._restored:
            return False
        self._restored.discard(key)
        return True

    def restore_state(self, snap: dict[str, Any]) -> None:
        """Put back ``persistent_state()`` (ValueError if it is not one). Instrument halts are
        not restored: the venue re-announces its status, and flash moves are re-measured."""
        self.trading.restore(snap)
        for key in ("day_start_equity", "peak_equity"):
            v = snap.get(key)
            if isinstance(v, int | float) and math.isfinite(v) and v > 0:
                setattr(self, key, float(v))


def _redelivery_key(ev: object) -> tuple | None:
    """What identifies an execution event whose second application would change open orders
    (a fill, a replace, a refused request); None for those that are idempotent (acks, cancels,
    expiries, rejects of new orders close an order once)."""
    if isinstance(ev, OrderPartiallyFilled):
        return ("fill", ev.client_order_id, ev.fill_id)
    if isinstance(ev, OrderReplaced):
        return ("replaced", ev.client_order_id, ev.px, ev.qty, ev.ts_event, ev.ts_recv)
    if isinstance(ev, OrderRejected) and is_request_reject(ev):
        return ("refused", ev.client_order_id, ev.reason, ev.ts_event, ev.ts_recv)
    return None
