"""A live client's REST view in reconciliation's terms (``engine.venue_recon.VenueSnapshot``).

``CcxtExecutionClient.reconcile_snapshot()`` (``engine.venues.ccxt_exec``) keeps the venue's own
words: ccxt order and trade dicts, and balances per currency, taken after every (re)connect.
Reconciliation compares engine structs, so this module turns one into the other, once per
snapshot (``taken_ns`` is its generation):

- an open order of ours (the client's in-flight table finds it by venue id or our client id)
  becomes its ``NewOrder`` at the current price and open lots;
- an open order not ours gets a client order id of its own, ``EXTERNAL_BASE`` + a hash of the
  venue's order id (stable across snapshots and restarts; a strategy id no strategy has);
  ``track_external`` enters it into the client's table when it is adopted or canceled, so that
  its fills and its cancel go through the client like ours;
- fills are the client's (``fills_since(0)``: applied once by trade id, net of a base-asset fee);
- balances become ``BalanceReport``s.

A client whose snapshot already has those fields (``generation``) is used as it is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from engine.messages import NewOrder, OrderPartiallyFilled, OrderType, Side, TimeInForce
from engine.venues.reports import BalanceReport

__all__ = ["EXTERNAL_BASE", "LiveView", "external_id", "track_external", "view_of"]

#: client order ids of orders found at a venue that we did not send: strategy id 2**30
EXTERNAL_BASE = 1 << 62


@dataclass
class LiveView:
    """``engine.venue_recon.VenueSnapshot`` built from a client's raw one."""

    generation: int
    ts_ns: int
    open_orders: list[NewOrder]
    fills: list[OrderPartiallyFilled]
    balances: list[BalanceReport]
    raw_external: dict[int, dict[str, Any]] = field(default_factory=dict)


def external_id(venue_order_id: object) -> int:
    """The client order id an order not ours is known by here (stable per venue order id)."""
    import zlib

    s = str(venue_order_id or "")
    return EXTERNAL_BASE | (int(s) & 0xFFFFFFFFFF if s.isdigit() else zlib.crc32(s.encode()))


def _lock(client: Any) -> Any:
    lock = getattr(client, "_lock", None)  # the client's own lock over its table
    return lock if lock is not None else contextlib.nullcontext()


def view_of(client: Any, raw: Any) -> Any:
    """The snapshot in reconciliation's terms (``raw`` itself when it already is)."""
    if raw is None or hasattr(raw, "generation"):
        return raw
    table = client.table
    opens: list[NewOrder] = []
    external: dict[int, dict[str, Any]] = {}
    with _lock(client):
        for o in raw.open_orders:
            t = table.find(o.get("clientOrderId"), o.get("id"))
            if t is not None:
                opens.append(msgspec.structs.replace(t.order, px=t.px, qty=t.leaves_lots()))
                continue
            ext = _external_order(table, o, raw.taken_ns)
            if ext is not None:
                opens.append(ext)
                external[ext.client_order_id] = dict(o)
    balances = [
        BalanceReport(
            venue=str(client.name),
            currency=str(cur),
            total=float(b.get("total") or 0.0),
            free=float(b.get("free") or 0.0),
        )
        for cur, b in sorted(raw.balances.items())
    ]
    return LiveView(raw.taken_ns, raw.taken_ns, opens, client.fills_since(0), balances, external)


def _external_order(table: Any, o: dict[str, Any], now_ns: int) -> NewOrder | None:
    inst = table.by_symbol.get(str(o.get("symbol")))
    if inst is None:
        return None  # an instrument we do not trade: not ours to judge
    price = o.get("price")
    px = inst.px_to_ticks(Decimal(str(price))) if price else 0
    left = o.get("remaining")
    if left is None:
        left = Decimal(str(o.get("amount") or 0)) - Decimal(str(o.get("filled") or 0))
    return NewOrder(
        client_order_id=external_id(o.get("id")),
        strategy_id=EXTERNAL_BASE >> 32,
        instrument_id=inst.instrument_id,
        side=int(Side.BUY if o.get("side") == "buy" else Side.SELL),
        order_type=int(OrderType.LIMIT if px else OrderType.MARKET),
        tif=int(TimeInForce.GTC),
        px=px,
        qty=inst.qty_to_lots(Decimal(str(left))),
        ts_origin=now_ns,
        ts_approved=now_ns,
    )


def track_external(client: Any, view: Any, coid: int, now_ns: int) -> bool:
    """Enter an order not ours into the client's table under ``coid`` (so its cancel and fills
    go through the client); False if the client cannot (then it stays the venue's alone)."""
    raw = getattr(view, "raw_external", {}).get(coid)
    table = getattr(client, "table", None)
    if raw is None or table is None or not hasattr(table, "adopt"):
        return False
    from engine.venues.ccxt_orders import venue_client_id

    as_ours = {**raw, "clientOrderId": venue_client_id(table.prefix, coid)}
    with _lock(client):
        if table.get(coid) is not None:
            return True
        t = table.adopt(as_ours, now_ns)
        if t is None:
            return False
        t.order = msgspec.structs.replace(t.order, strategy_id=EXTERNAL_BASE >> 32)
        table.external_orders.pop(str(raw.get("id") or ""), None)
    return True
