"""What the risk process persists and rebuilds across a restart of itself.

The gate does no I/O: ``persistent_state`` gives the process a dict to store (the trading state
and the breakers' baselines) and ``restore_state`` puts it back; ``seed_positions`` takes the
positions from exec's positions table; ``restore`` (from the record) or ``restore_open`` (from
exec's answer, storage off) rebuilds the open orders, so that the kill switch and the breakers
cancel them and max open orders and the worst-case position count them. Functions of the gate's
``RiskBook`` (``engine.risk_book``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from engine.enums import OrderFlag
from engine.messages import NewOrder, OpenOrderSnapshot, ReplaceOrder, Side
from engine.risk_book import RiskBook, RiskOrder, redelivery_key

_REDUCE_ONLY = int(OrderFlag.REDUCE_ONLY)


def persistent_state(book: RiskBook) -> dict[str, Any]:
    """What must outlive the risk process: the trading state and the breakers' baselines."""
    snap = book.trading.snapshot()
    snap["day_start_equity"] = book.day_start_equity
    snap["peak_equity"] = book.peak_equity
    snap["instrument_halts"] = {str(k): v for k, v in book.guard.snapshot().items()}
    return snap


def restore_state(book: RiskBook, snap: dict[str, Any]) -> None:
    """Put back ``persistent_state()`` (ValueError if it is not one). Instrument halts are
    not restored: the venue re-announces its status, and flash moves are re-measured."""
    book.trading.restore(snap)
    for key in ("day_start_equity", "peak_equity"):
        v = snap.get(key)
        if isinstance(v, int | float) and math.isfinite(v) and v > 0:
            setattr(book, key, float(v))


def seed_positions(
    book: RiskBook,
    rows: Iterable[tuple[int, int, float, float, float]],
    legs: Mapping[int, tuple[int, int, float, float]] | None = None,
) -> None:
    """After a restart of the risk process: positions from exec's positions table, as
    (instrument_id, position, avg_px ticks, realized, fees), and an instrument's legs on a
    hedging venue (``legs``: long lots, short lots <= 0, their average prices; the table's
    ``long_pos`` ... ``short_avg``). Cash is rebuilt so that equity = capital + realized −
    fees + unrealized, what the portfolio reports (a hedged instrument: each leg at its own
    average, both held at once)."""
    legs = legs or {}
    for iid, pos, avg, realized, fees in rows:
        if not 0 <= iid < book.n or book.ins[iid] is None:
            continue
        book.position[iid] = int(pos)
        if book.hedged[iid]:  # both legs, as exec's table holds them (else the net, its side)
            lg = legs.get(iid)
            if lg is None or int(lg[0]) + int(lg[1]) != int(pos):  # none, or torn: the net
                lg = (max(int(pos), 0), min(int(pos), 0), float(avg), float(avg))
            book.long_pos[iid], book.short_pos[iid] = int(lg[0]), int(lg[1])
            if iid not in book.acct.betting:
                held = int(lg[0]) * float(lg[2]) + int(lg[1]) * float(lg[3])
                book.avg_px[iid] = float(avg)
                book.signs[iid] = float(np.sign(pos))
                book.cash += float(realized) - float(fees) - held * float(book.mult[iid])
                continue
        book.avg_px[iid] = float(avg)
        book.signs[iid] = float(np.sign(pos))
        if iid in book.acct.betting:  # bets move no cash: their P&L as one bet at the average
            if pos:  # odds (exact while every bet of the selection is on one side)
                book.acct.bet(iid, 1 if pos > 0 else -1, abs(int(pos)), float(avg))
            book.cash += float(realized) - float(fees)
            continue
        book.cash += float(realized) - float(fees) - int(pos) * float(avg) * float(book.mult[iid])
    book.refresh_exposure()


def restore(book: RiskBook, orders: Iterable[Any], events: Iterable[Any]) -> int:
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
    n0 = len(book.open_orders)
    for o in orders:
        if not isinstance(o, NewOrder) or o.client_order_id in book.open_orders:
            continue
        if book.known(o.instrument_id) is None or o.qty <= 0:
            continue
        if o.side not in (Side.BUY, Side.SELL):
            continue
        book.open_orders[o.client_order_id] = RiskOrder(
            o.instrument_id, o.side, o.px, o.qty, o.strategy_id,
            reduce_only=bool(o.flags & _REDUCE_ONLY),  # (hedging: the leg it closes)
        )  # fmt: skip
        book.add_open(o.instrument_id, o.side, o.qty)
    seen: set[tuple] = set()
    for ev in events:
        if isinstance(ev, ReplaceOrder):  # in flight until OrderReplaced / its reject
            r = book.open_orders.get(ev.client_order_id)
            if r is not None and ev.new_qty > r.leaves:
                extra = ev.new_qty - r.leaves
                book.add_open(r.instrument_id, r.side, extra)
                r.leaves += extra
                r.reserved += extra
            continue
        key = redelivery_key(ev)
        if key is not None:
            seen.add(key)
            book.restored_ns = max(book.restored_ns, int(getattr(ev, "ts_recv", 0) or 0))
        book.on_exec_event(ev, count_fill=False)
    book.restored |= {k for k in seen if k[1] in book.open_orders}
    for coid, o in book.open_orders.items():  # risk's own stop / take-profit orders
        if o.strategy_id == 0:
            book.protect.setdefault(o.instrument_id, coid)
    return len(book.open_orders) - n0


def restore_open(book: RiskBook, snapshots: Iterable[Any]) -> list[int]:
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
        if not isinstance(s, OpenOrderSnapshot) or s.end or s.order_id in book.open_orders:
            continue
        if book.known(s.instrument_id) is None or s.leaves_qty <= 0 or s.px < 0:
            continue
        if s.side not in (Side.BUY, Side.SELL):
            continue
        book.open_orders[s.order_id] = RiskOrder(
            s.instrument_id, s.side, s.px, s.leaves_qty, s.strategy_id
        )
        book.add_open(s.instrument_id, s.side, s.leaves_qty)
        if s.strategy_id == 0:  # risk's own stop / take-profit order
            book.protect.setdefault(s.instrument_id, s.order_id)
        added.append(s.order_id)
    return added
