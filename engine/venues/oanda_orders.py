"""OANDA v20's transaction log turned into engine events, each transaction once, in id order.

Why the log and nothing else: every change to a v20 account is a transaction with the next id
(an order created, filled, cancelled, a trade closed, financing paid), and the same log is
reachable three ways — in the answer to our request, on the transaction stream, and by
``GET /transactions/sinceid``. ``V20Orders.ingest`` takes them from any of the three, applies
each id exactly once and only in order (a hole stops it and says so: the caller fetches
``sinceid`` and hands the whole run in), so a dropped stream, a duplicate or an answer that
overtakes the stream all end in the same events. Pure: no I/O, no clock (times passed in).

What becomes what (docs/oanda.md): ``*_ORDER`` of ours -> OrderAccepted (with
``replacesOrderID``: OrderReplaced); ``ORDER_FILL`` -> OrderPartiallyFilled / OrderFilled (fill id
= transaction id, fee = commission); ``ORDER_CANCEL`` -> OrderCanceled (TIME_IN_FORCE_EXPIRED:
OrderExpired; CLIENT_REQUEST_REPLACED: nothing, the replacement follows); ``DAILY_FINANCING``
-> one ``Financing`` per instrument (in the account currency, days 3 on Wednesday's rollover).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from engine.instruments import Instrument
from engine.messages import (
    Financing,
    Liquidity,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Side,
    TimeInForce,
)
from engine.order_states import OrderStatus
from engine.venues.oanda_wire import coid_of, rfc3339_ns, venue_symbol
from engine.venues.reports import OrderStatusReport

__all__ = ["V20Orders", "Tracked"]

_NY = ZoneInfo("America/New_York")
_CREATES = {"MARKET_ORDER", "LIMIT_ORDER", "STOP_ORDER", "MARKET_IF_TOUCHED_ORDER"}
_CREATES |= {"TAKE_PROFIT_ORDER", "STOP_LOSS_ORDER"}


@dataclass
class Tracked:
    """One order of ours: as sent, and as the log has it since."""

    order: NewOrder
    inst: Instrument
    px: int
    qty: int  # total lots (follows replaces)
    filled: int = 0
    venue_id: int = 0
    status: int = int(OrderStatus.SUBMITTED)
    accepted: bool = False
    open: bool = True
    fills: list[OrderPartiallyFilled] = field(default_factory=list)

    @property
    def leaves(self) -> int:
        return max(0, self.qty - self.filled) if self.open else 0


class V20Orders:
    """Our orders, fills, positions and financing as the transaction log says."""

    def __init__(self, name: str, prefix: str, instruments: Iterable[Instrument]) -> None:
        self.name, self.prefix = name, prefix
        self.by_name = {venue_symbol(i.symbol): i for i in instruments}
        self.orders: dict[int, Tracked] = {}
        self.by_vid: dict[int, int] = {}
        self.fills: list[OrderPartiallyFilled] = []
        self.positions: dict[int, int] = {}
        self.financing: list[Financing] = []
        self.currency = "USD"
        self.balance = 0.0
        self.last_id = 0  # the last transaction applied
        self.foreign = 0  # transactions of orders not ours (placed by hand: reconciliation's)
        #: reading the log back at start: orders of ours (our prefix) found in it are adopted
        self.adopting = False

    def add(self, order: NewOrder, inst: Instrument) -> Tracked:
        t = self.orders[order.client_order_id] = Tracked(order, inst, order.px, order.qty)
        return t

    def get(self, coid: int) -> Tracked | None:
        return self.orders.get(coid)

    def open(self) -> list[Tracked]:
        return [t for t in self.orders.values() if t.open and t.status != OrderStatus.SUBMITTED]

    # --- the log -----------------------------------------------------------------------------------
    def ingest(self, txs: Iterable[Mapping[str, Any]], now_ns: int) -> tuple[list[Any], bool]:
        """Apply the transactions next in line (by id); (events, whether a hole was met: the
        caller fetches ``sinceid`` from ``last_id`` and ingests that)."""
        out: list[Any] = []
        for tx in sorted(txs, key=lambda t: int(t["id"])):
            tid = int(tx["id"])
            if tid <= self.last_id:
                continue
            if self.last_id and tid != self.last_id + 1:
                return out, True
            self.last_id = tid
            out += self._apply(tx, now_ns)
        return out, False

    def _apply(self, tx: Mapping[str, Any], now_ns: int) -> list[Any]:
        kind = str(tx.get("type"))
        if "accountBalance" in tx:
            self.balance = float(tx["accountBalance"])
        if kind in _CREATES:
            return self._created(tx, now_ns)
        if kind == "ORDER_FILL":
            return self._filled(tx, now_ns)
        if kind == "ORDER_CANCEL":
            return self._cancelled(tx, now_ns)
        if kind == "DAILY_FINANCING":
            return self._financing(tx, now_ns)
        return []

    def _ours(self, tx: Mapping[str, Any], key: str = "clientOrderID") -> Tracked | None:
        t = None
        vid = int(tx.get("orderID") or 0)
        if vid in self.by_vid:
            t = self.orders.get(self.by_vid[vid])
        if t is None:
            ext = tx.get("clientExtensions") or {}
            coid = coid_of(self.prefix, tx.get(key) or ext.get("id"))
            t = self.orders.get(coid) if coid is not None else None
        if t is None:
            self.foreign += 1
        return t

    def _created(self, tx: Mapping[str, Any], now_ns: int) -> list[Any]:
        t = self._ours(tx)
        if t is None and self.adopting:
            t = self._adopt(tx)
        if t is None or not t.open:
            return []
        t.venue_id = int(tx["id"])
        self.by_vid[t.venue_id] = t.order.client_order_id
        ts = rfc3339_ns(str(tx["time"]))
        if tx.get("replacesOrderID") and t.accepted:
            units = abs(Decimal(str(tx.get("units") or "0")))
            t.qty = t.filled + t.inst.qty_to_lots(units)
            if tx.get("price") is not None:
                t.px = t.inst.px_to_ticks(str(tx["price"]))
            t.status = int(OrderStatus.PARTIALLY_FILLED if t.filled else OrderStatus.ACCEPTED)
            o = t.order
            return [
                OrderReplaced(
                    o.client_order_id, o.instrument_id, t.px, t.leaves, o.ts_origin, ts, now_ns
                )
            ]
        if t.accepted:
            return []
        t.accepted, t.status = True, int(OrderStatus.ACCEPTED)
        return [OrderAccepted.for_order(t.order, t.venue_id, ts, now_ns)]

    def _filled(self, tx: Mapping[str, Any], now_ns: int) -> list[Any]:
        units = Decimal(str(tx.get("units") or "0"))
        ins = self.by_name.get(str(tx.get("instrument")))
        t = self._ours(tx)
        if ins is not None:  # the position moves whoever's order it was
            self.positions[ins.instrument_id] = self.positions.get(ins.instrument_id, 0) + (
                ins.qty_to_lots(units)
            )
        if t is None or not t.open:
            return []
        out: list[Any] = []
        ts = rfc3339_ns(str(tx["time"]))
        if not t.accepted:  # the create was not ours to see (a bracket child): accept first
            t.accepted = True
            out.append(OrderAccepted.for_order(t.order, int(tx.get("orderID") or 0), ts, now_ns))
        qty = t.inst.qty_to_lots(abs(units))
        px = t.inst.px_to_ticks(str(tx.get("fullVWAP") or tx.get("price")))
        t.filled += qty
        done = t.filled >= t.qty
        if done:
            t.open, t.status = False, int(OrderStatus.FILLED)
        else:
            t.status = int(OrderStatus.PARTIALLY_FILLED)
        cls = OrderFilled if done else OrderPartiallyFilled
        side = int(Side.BUY if units > 0 else Side.SELL)
        fee = -float(Decimal(str(tx.get("commission") or "0")))  # v20: negative = charged
        ev = cls(
            t.order.client_order_id,
            int(tx.get("orderID") or 0),
            t.order.instrument_id,
            side,
            px,
            qty,
            t.filled,
            max(0, t.qty - t.filled),
            abs(fee) if fee else 0.0,
            int(Liquidity.TAKER),
            int(tx["id"]),
            t.order.ts_origin,
            ts,
            now_ns,
        )
        t.fills.append(ev)
        self.fills.append(ev)
        return [*out, ev]

    def _cancelled(self, tx: Mapping[str, Any], now_ns: int) -> list[Any]:
        reason = str(tx.get("reason") or "")
        t = self._ours(tx)
        if t is None or not t.open or reason == "CLIENT_REQUEST_REPLACED":
            return []
        if int(tx.get("orderID") or 0) != t.venue_id and t.venue_id:
            return []  # an older generation's cancel
        t.open = False
        ts = rfc3339_ns(str(tx["time"]))
        o, leaves = t.order, max(0, t.qty - t.filled)
        if reason == "TIME_IN_FORCE_EXPIRED":
            t.status = int(OrderStatus.EXPIRED)
            return [
                OrderExpired(o.client_order_id, o.instrument_id, leaves, o.ts_origin, ts, now_ns)
            ]
        t.status = int(OrderStatus.CANCELED)
        why = f"{self.name}: {reason.lower() or 'canceled'}"
        return [
            OrderCanceled(o.client_order_id, o.instrument_id, leaves, why, o.ts_origin, ts, now_ns)
        ]

    def _financing(self, tx: Mapping[str, Any], now_ns: int) -> list[Any]:
        ts = rfc3339_ns(str(tx["time"]))
        day = dt.datetime.fromtimestamp(ts / 1e9, _NY)
        # the rollover at 17:00 New York pays for the next value date(s): Wednesday's three
        days = 3 if day.weekday() == 2 else 1
        out: list[Any] = []
        for pf in tx.get("positionFinancings") or []:
            ins = self.by_name.get(str(pf.get("instrument")))
            if ins is None:
                continue
            ev = Financing(
                ins.instrument_id,
                self.positions.get(ins.instrument_id, 0),
                float(Decimal(str(pf.get("financing") or "0"))),
                self.currency,
                days,
                ts,
                now_ns,
                int(tx["id"]),
            )
            self.financing.append(ev)
            out.append(ev)
        return out

    def _adopt(self, tx: Mapping[str, Any]) -> Tracked | None:
        """An order of ours from before a restart, as its create transaction has it (the
        journal has the rest: exec's reconciliation matches them by client order id)."""
        coid = coid_of(self.prefix, (tx.get("clientExtensions") or {}).get("id"))
        ins = self.by_name.get(str(tx.get("instrument") or ""))
        if coid is None or ins is None or coid in self.orders:
            return None
        self.foreign -= 1  # counted by ``_ours``: it is ours after all
        units = Decimal(str(tx.get("units") or "0"))
        kind = str(tx.get("type"))
        px = ins.px_to_ticks(str(tx["price"])) if tx.get("price") is not None else 0
        ot = {"LIMIT_ORDER": OrderType.LIMIT, "STOP_ORDER": OrderType.STOP}.get(kind)
        ot = ot or (OrderType.MARKET_IF_TOUCHED if px else OrderType.MARKET)
        stop = px if ot == OrderType.STOP else 0
        o = NewOrder(
            coid,
            0,
            ins.instrument_id,
            int(Side.BUY if units > 0 else Side.SELL),
            int(ot),
            int(TimeInForce.GTC),
            0 if stop else px,
            ins.qty_to_lots(abs(units)),
            0,
            0,
            stop_px=stop,
        )
        return self.add(o, ins)

    def reject(self, coid: int, reason: str, now_ns: int) -> list[Any]:
        """Our order refused by the venue's answer (no log entry of ours follows)."""
        t = self.orders.get(coid)
        if t is None or not t.open:
            return []
        t.open, t.status = False, int(OrderStatus.REJECTED)
        return [OrderRejected.for_order(t.order, reason, now_ns, now_ns)]

    def report(self, coid: int) -> OrderStatusReport | None:
        t = self.orders.get(coid)
        if t is None or t.status in (OrderStatus.SUBMITTED, OrderStatus.REJECTED):
            return None
        o = t.order
        return OrderStatusReport(
            venue=self.name,
            client_order_id=coid,
            instrument_id=o.instrument_id,
            side=o.side,
            order_type=o.order_type,
            status=t.status,
            px=t.px,
            open_qty=t.leaves,
            filled_qty=t.filled,
            venue_order_id=t.venue_id,
        )
