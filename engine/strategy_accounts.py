"""The strategies' side of the venue's account events (``StrategyHost.on_exec_event``).

A settlement or a liquidation moves a position no order of a strategy made; if the strategies'
contexts did not follow, a strategy would go on "holding" a future after its expiry, a binary
after its resolution or a perpetual after its liquidation, while the portfolio, risk and exec
hold nothing (and trade, or limit itself, on that). So every context trading the instrument is
moved the way the portfolio moves its strategy books (``engine.portfolio_accounts``):

- ``Settlement``: the instrument's position is 0 in every context that trades it;
- ``Liquidation``: the trade is shared by the strategies holding the other way, in strategy-id
  order, each closing at most what it holds (what is left over was no strategy's);
- ``FundingPayment``, ``Financing``, ``MarginStatus``: no position moves;
- after a restart of the strategy process, an event the ring delivers again that exec's
  positions table (the seeded positions) holds already moves nothing.

Then a strategy that subscribes to "account" (``Strategy.on_account_event``; the default no-op is
never called) hears the event — the instrument's traders, or every such strategy for a venue's
``MarginStatus``. Exec passes each event once (``engine.account_events.AccountGate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import hedge_legs
from engine.messages import Liquidation, MarginStatus, Settlement

if TYPE_CHECKING:
    from engine.strategies.base import Intent
    from engine.strategy_host import StrategyHost


def on_account_event(host: StrategyHost, ev: Any, now_ns: int) -> list[Intent]:
    """Move the contexts (module docstring), then call the subscribers' ``on_account_event``."""
    t = type(ev)
    if t is MarginStatus:
        slots = list(host.slots)
    else:
        slots = list(host._by_instrument.get(ev.instrument_id, ()))
        if not slots:
            host.unrouted += 1
            return []
    if _redelivered(host, ev):
        pass  # the seeded position (exec's table, after a restart) holds it already
    elif t is Settlement and ev.partial:  # one voided bet: its stake comes off its holders
        _share_trade(slots, ev.instrument_id, -int(ev.position))
    elif t is Settlement:
        for s in slots:
            s.ctx.positions[ev.instrument_id] = 0
            s.ctx.leg_lots.pop(ev.instrument_id, None)
    elif t is Liquidation:
        _share_trade(slots, ev.instrument_id, int(ev.side) * int(ev.qty))
    out: list[Intent] = []
    if host.stopped:
        return out
    origin = getattr(ev, "ts_recv", now_ns)
    for s in slots:
        if s.enabled and "account" in s.subs:
            out += host._call(s, now_ns, origin, "on_account_event", ev)
    return out


def _redelivered(host: StrategyHost, ev: Any) -> bool:
    """After a restart of the strategy process: an event up to the time its instrument's
    position was seeded (``StrategyHost.seed_positions``) is in that position already; the
    first newer one ends the re-deliveries (as ``StrategyHost._unseed`` for fills)."""
    iid = getattr(ev, "instrument_id", None)
    t = host._seeded.get(iid) if iid is not None else None
    if t is None:
        return False
    if ev.ts_recv <= t:
        return True
    del host._seeded[iid]
    return False


def _share_trade(slots: list[Any], iid: int, signed: int) -> None:
    """A trade no order made (a liquidation's ``side`` × ``qty``, a voided bet taken off)
    closes the strategies' opposite positions, in strategy order."""
    sign = 1 if signed > 0 else -1
    left = abs(signed)
    for s in sorted(slots, key=lambda s: s.strategy_id):
        pos = s.ctx.positions.get(iid, 0)
        if not left or pos * sign >= 0:
            continue
        q = min(left, abs(pos))
        s.ctx.positions[iid] = pos + sign * q
        hedge_legs.move(s.ctx.leg_lots, iid, sign * q, True)  # closes the opposite leg
        left -= q
