"""The long and short legs of a position on a hedging venue, for the holders that kept only net.

A venue whose account hedges (``position_mode = "hedging"``, ``engine.venues.sim_hedging``)
holds a long and a short position per instrument side by side: a buy grows the long leg, a sell
the short leg, and only a ``REDUCE_ONLY`` order closes the opposite leg (what exceeds that leg
opens the trade's own side, as the portfolio books it). Exec's order table and the strategies'
contexts keep these legs next to their net positions (which stay what reconciliation and every
netting instrument use), so that a strategy, exec's positions table and a restarted risk
process see both legs and not their sum. The legs are kept for every instrument by this rule;
``legs_of`` reads them only for the instruments of hedging venues (others: the net on its side).
"""

from __future__ import annotations

from engine.account_events import moves_position
from engine.messages import Liquidation, Settlement

__all__ = ["apply_account", "legs_of", "move"]


def move(legs: dict[int, tuple[int, int]], iid: int, signed: int, reduce_only: bool) -> None:
    """A trade of ``signed`` lots: a reduce-only one closes the opposite leg first (what is
    left opens its own side), any other grows its own side's leg."""
    long, short = legs.get(iid, (0, 0))
    if reduce_only:
        if signed < 0:
            q = min(-signed, long)
            long -= q
            signed += q
        else:
            q = min(signed, -short)
            short += q
            signed -= q
    if signed > 0:
        long += signed
    elif signed < 0:
        short += signed
    legs[iid] = (long, short)


def apply_account(legs: dict[int, tuple[int, int]], ev: object) -> None:
    """A settlement leaves both legs flat (a partial one takes its stake off as a closing
    trade); a liquidation closes the leg opposite its side (``side * qty``, reduce-only)."""
    if not moves_position(ev):
        return
    iid = ev.instrument_id  # type: ignore[attr-defined]
    if type(ev) is Settlement:
        if ev.partial:  # type: ignore[attr-defined]
            move(legs, iid, -int(ev.position), True)  # type: ignore[attr-defined]
        else:
            legs.pop(iid, None)
    elif type(ev) is Liquidation:
        move(legs, iid, int(ev.side) * int(ev.qty), True)  # type: ignore[attr-defined]


def legs_of(
    legs: dict[int, tuple[int, int]], hedged: set[int] | frozenset[int], iid: int, net: int
) -> tuple[int, int]:
    """(long lots, short lots <= 0) of ``iid``: its legs on a hedging venue, else the net
    position on its side."""
    if iid in hedged:
        return legs.get(iid, (0, 0))
    return (max(net, 0), min(net, 0))
