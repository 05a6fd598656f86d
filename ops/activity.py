"""The run's recent activity as plain JSON: what ``gekko top`` shows beside the shm figures.

Why from the supervisor and not from the rings: the supervisor already reads the orders, events
and risk rings as a gating reader and keeps the run's record (ops/report.py), so it can say what
happened before the console attached. A reader of its own on those rings would see only what
comes after, and take one of a ring's fixed consumer slots (kept by a console killed with
SIGKILL until the engine restarts). The supervisor's main loop builds this dict once a status
tick and the control socket's ``activity`` request returns that one reference (the socket runs
on another thread: it never walks the record while the loop changes it).

Prices and quantities are in the instrument's units (not ticks and lots); times are the
messages' own monotonic stamps (ns), for ordering only.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.messages import CancelOrder, NewOrder, ReplaceOrder

log = logging.getLogger("gekko.activity")

RECENT = 12  # rows of each kind: what fits a console panel


def _short(path: str) -> str:
    """``engine.strategies.momentum:MomentumTaker`` -> ``MomentumTaker``."""
    return path.replace(":", ".").rsplit(".", 1)[-1]


def _side(side: int) -> str:
    return "buy" if side > 0 else "sell"


def _order_row(msg: Any, symbols: dict[int, Any]) -> dict[str, Any]:
    ins = symbols.get(msg.instrument_id)
    sym = ins.symbol if ins is not None else str(msg.instrument_id)
    row: dict[str, Any] = {
        "kind": type(msg).__name__,
        "client_order_id": msg.client_order_id,
        "strategy_id": msg.strategy_id,
        "instrument": sym,
        "ts": msg.ts_approved,
    }
    if isinstance(msg, NewOrder):
        row.update(side=_side(msg.side), qty=_qty(ins, msg.qty), px=_px(ins, msg.px))
    elif isinstance(msg, ReplaceOrder):
        row.update(qty=_qty(ins, msg.new_qty), px=_px(ins, msg.new_px))
    return row


def _px(ins: Any, ticks: int) -> float:
    return ins.ticks_to_px(ticks) if ins is not None else float(ticks)


def _qty(ins: Any, lots: int) -> float:
    return ins.lots_to_qty(lots) if ins is not None else float(lots)


def _fill_row(msg: Any, symbols: dict[int, Any]) -> dict[str, Any]:
    ins = symbols.get(msg.instrument_id)
    return {
        "kind": type(msg).__name__,
        "client_order_id": msg.client_order_id,
        "strategy_id": msg.client_order_id >> 32,
        "instrument": ins.symbol if ins is not None else str(msg.instrument_id),
        "side": _side(msg.side),
        "qty": _qty(ins, msg.fill_qty),
        "px": _px(ins, msg.fill_px),
        "fee": msg.fee,
        "ts": msg.ts_recv,
    }


def _positions(portfolio: Any, sid: int, symbols: dict[int, Any]) -> dict[str, float]:
    """The strategy's own open positions (its lot books), by symbol, in instrument units."""
    sb = portfolio.strategies.get(sid)
    if sb is None:
        return {}
    out = {}
    for iid, book in sb.books.items():
        if book.position:
            ins = symbols.get(iid)
            out[ins.symbol if ins is not None else str(iid)] = _qty(ins, book.position)
    return out


def _reject_row(source: str, msg: Any, symbols: dict[int, Any]) -> dict[str, Any]:
    ins = symbols.get(msg.instrument_id)
    detail = getattr(msg, "detail", "") or ""
    return {
        "source": source,
        "kind": type(msg).__name__,
        "client_order_id": msg.client_order_id,
        "instrument": ins.symbol if ins is not None else str(msg.instrument_id),
        "reason": f"{msg.reason}{': ' + detail if detail else ''}",
        "ts": getattr(msg, "ts_recv", 0) or getattr(msg, "ts", 0),
    }


def activity(record: Any, cfg: Any, n: int = RECENT) -> dict[str, Any]:
    """The last ``n`` orders, fills and rejects (newest last), the counts, and P&L per strategy.

    It runs in the supervisor's main loop: a figure it cannot build costs the console that
    figure (the answer says why, the log says it once), never the engine its supervisor."""
    global _failed
    try:
        return _activity(record, cfg, n)
    except Exception as exc:
        if not _failed:
            _failed = True
            log.warning("gekko top's activity could not be built: %s", exc, exc_info=True)
        return {"error": f"the supervisor could not build its activity: {exc}"}


_failed = False  # logged once per process


def _activity(record: Any, cfg: Any, n: int) -> dict[str, Any]:
    symbols = {i.instrument_id: i for i in cfg.instruments}
    names = {s["strategy_id"]: s.get("name") or _short(s["path"]) for s in cfg.strategy_specs()}
    orders = [
        _order_row(m, symbols)
        for m in record.orders[-n:]
        if isinstance(m, NewOrder | CancelOrder | ReplaceOrder)
    ]
    rejects = [_reject_row(src, m, symbols) for src, m in list(record.recent_rejects)[-n:]]
    by_id = record.portfolio.strategy_pnl()  # only strategies with fills: the rest are zeros
    none = dict.fromkeys(("realized", "unrealized", "fees", "net", "fills", "notional"), 0.0)
    pnl = [
        {
            "strategy_id": sid,
            "strategy": str(names.get(sid, sid)),
            **by_id.get(sid, none),
            "positions": _positions(record.portfolio, sid, symbols),
        }
        for sid in sorted(set(names) | set(by_id))
    ]
    return {
        "orders": orders,
        "fills": [_fill_row(m, symbols) for m in record.fills[-n:]],
        "rejects": rejects,
        "pnl_by_strategy": pnl,
        "counts": {
            "orders_new": record.new_orders,
            "fills": len(record.fills),
            "risk_rejects": record.risk_rejects,
            "venue_rejects": record.venue_rejects,
            "risk_events": len(record.risk_events),
        },
    }
