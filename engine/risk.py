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

Checks, in order: trading state (HALTED rejects new orders and replaces, never cancels), known
instrument, qty > 0, price > 0 for priced orders, duplicate id, max open orders, max order notional
(market orders are valued at the last known opposite-side price, and rejected while there is none),
max position (worst case: the filled position plus every open order on the same side plus this one,
per instrument, in lots).

State is tracked from execution events (``on_exec_event``), not from what was approved: an order
counts as open from approval until a terminal event. Positions and open quantities live in numpy
arrays indexed by instrument id (no per-message allocation on the hot path).

Controls (``on_control``): KILL halts and cancels every open order; FLATTEN does the same and also
sends market orders closing every position (sized to the position, so reduce-only by construction;
the REDUCE_ONLY flag is not set because the simulated exchange refuses it; best effort: fills
racing the cancels may leave a residue — send FLATTEN again); STOP halts and cancels; CANCEL_ALL
cancels without halting; RESUME is the only way back to ACTIVE — a halt never lifts by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import numpy as np

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    Bar,
    BookSnapshot,
    CancelOrder,
    Control,
    ControlCommand,
    IntentCancel,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
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
)
from engine.oms import is_request_reject

RiskOutput = NewOrder | CancelOrder | ReplaceOrder | RiskEvent | OrderRejected

#: order types whose ``px`` is a limit price (must be > 0)
_PRICED = (int(OrderType.LIMIT), int(OrderType.STOP_LIMIT))
#: order types that need a trigger price (``stop_px`` > 0)
_STOPPED = (int(OrderType.STOP), int(OrderType.STOP_LIMIT))


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Pre-trade limits. Notional is in the instrument's currency; position in lots."""

    max_order_notional: float
    max_position_lots: int
    max_open_orders: int


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
    """Pre-trade risk checks and the kill switch (see the module docstring)."""

    def __init__(
        self, limits: RiskLimits, instruments: InstrumentTable | Iterable[Instrument]
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
        self.open_orders: dict[int, _Open] = {}
        self.state = TradingState.ACTIVE
        self.approved = 0
        self.rejected = 0
        self._own_counter = 0  # client_order_ids of risk's own orders: strategy_id 0

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

    # --- intents -----------------------------------------------------------------------------
    def on_intent(
        self, intent: IntentNew | IntentCancel | IntentReplace, now_ns: int
    ) -> list[RiskOutput]:
        """Approve an intent (→ order) or reject it (→ RiskEvent + OrderRejected)."""
        if isinstance(intent, IntentNew):
            return self._on_new(intent, now_ns)
        if isinstance(intent, IntentCancel):
            # always allowed, whatever the state: reducing exposure is never blocked
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
        if self.state == TradingState.HALTED:
            return self._reject(it, "trading halted", self.state, TradingState.ACTIVE, now_ns)
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
        ref = self._ref_px(iid, it.side, it.order_type, it.px)
        if ref <= 0:
            return self._reject(
                it, "no price to value market order", 0, lim.max_order_notional, now_ns
            )
        notional = ins.notional(ref, it.qty)
        if notional > lim.max_order_notional:
            return self._reject(it, "max order notional", notional, lim.max_order_notional, now_ns)
        worst = self._worst(iid, it.side, it.qty)
        if worst > lim.max_position_lots:
            return self._reject(it, "max position", worst, lim.max_position_lots, now_ns)

        self.approved += 1
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
        if self.state == TradingState.HALTED:
            reason, value, limit = "trading halted", self.state, TradingState.ACTIVE
        elif it.new_qty <= 0:
            reason, value = "qty must be > 0", it.new_qty
        elif it.new_px <= 0:
            reason, value = "price must be > 0", it.new_px
        else:
            notional = ins.notional(it.new_px, it.new_qty)
            worst = self._worst(o.instrument_id, o.side, it.new_qty - o.leaves)
            if notional > lim.max_order_notional:
                reason, value, limit = "max order notional", notional, lim.max_order_notional
            elif it.new_qty > o.leaves and worst > lim.max_position_lots:
                reason, value, limit = "max position", worst, lim.max_position_lots
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
    def on_exec_event(self, ev: object) -> None:
        """Track positions and open orders from execution events (fills of unknown orders still
        move the position: the venue's fill is the truth)."""
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            iid = ev.instrument_id
            if 0 <= iid < self._n:
                self.position[iid] += ev.side * ev.fill_qty
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

    def _close(self, coid: int) -> None:
        o = self.open_orders.pop(coid, None)
        if o is not None and o.leaves > 0:
            self._add_open(o.instrument_id, o.side, -o.leaves)

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

    # --- controls ----------------------------------------------------------------------------
    def on_control(self, ctl: Control) -> list[RiskOutput]:
        """Kill switch and friends; ``ctl.ts`` is the time of the command."""
        now = ctl.ts
        cmd = ctl.command
        out: list[RiskOutput] = []
        if cmd in (ControlCommand.KILL, ControlCommand.FLATTEN, ControlCommand.STOP):
            self.state = TradingState.HALTED
            kind = (
                RiskEventKind.STATE_CHANGE
                if cmd == ControlCommand.STOP
                else RiskEventKind.KILL_SWITCH
            )
            out.append(
                RiskEvent(
                    kind=int(kind),
                    instrument_id=-1,
                    client_order_id=0,
                    reason=ctl.arg or ControlCommand(cmd).name.lower(),
                    value=float(len(self.open_orders)),
                    limit=0.0,
                    ts=now,
                    state=int(self.state),
                )
            )
            out += self.cancel_all(now)
            if cmd == ControlCommand.FLATTEN:
                out += self._flatten(now)
        elif cmd == ControlCommand.CANCEL_ALL:
            out += self.cancel_all(now)
        elif cmd == ControlCommand.RESUME:
            self.state = TradingState.ACTIVE
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
            pos = int(self.position[iid])
            if pos == 0 or self._ins[iid] is None:
                continue
            self._own_counter += 1
            coid = self._own_counter  # strategy_id 0 << 32 | counter
            side = int(Side.SELL if pos > 0 else Side.BUY)
            self.open_orders[coid] = _Open(iid, side, 0, abs(pos), 0)
            self._add_open(iid, side, abs(pos))
            out.append(
                NewOrder(
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
            )
        return out
