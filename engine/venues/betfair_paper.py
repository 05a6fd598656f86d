"""Paper betting on Betfair's live book: the simulated exchange, settled when the venue settles.

Our bets are matched by ``SimExchange`` against the venue's real ladders, through
``OddsVenue`` (``engine.venues.sim_odds``: a back takes the odds available to back at or above
its limit). What the simulator cannot know is when and how the real market ends: the market
stream says it (``ExchangeStatus`` HALTED with a "settled: winner | loser | void" reason,
``betfair_wire``), and this wrapper then resolves the simulated position through the
simulator's public ``resolve``, the same way a scheduled resolution would (P&L from the bets,
commission on the market's net winnings, open orders expired, one ``Settlement``). Suspension needs nothing here: the simulator halts
an instrument on the same ExchangeStatus and refuses orders on it until OPEN.
"""

from __future__ import annotations

from typing import Any

from engine.messages import ExchangeStatus
from engine.venues.betfair_wire import settlement_of

__all__ = ["BetfairPaper"]

_RESOLUTION = {1: "1", 0: "0", -1: "void"}


class BetfairPaper:
    """Wraps ``OddsVenue(SimExchange)`` (see the module docstring)."""

    def __init__(self, inner: Any, sim: Any) -> None:
        self.inner, self.sim = inner, sim
        self.name = inner.name
        self.settled: dict[int, str] = {}

    def on_market_data(self, msg: object, now_ns: int) -> list[Any]:
        out = self.inner.on_market_data(msg, now_ns)
        if type(msg) is ExchangeStatus:
            got = settlement_of(msg.reason)  # type: ignore[attr-defined]
            iid = msg.instrument_id  # type: ignore[attr-defined]
            if got is not None and iid not in self.settled and self.sim.trades_instrument(iid):
                self.settled[iid] = _RESOLUTION[got[1]]
                # the simulator's public settlement: a market resolved this way settles all
                # its selections, so the commission waits for them all (on the market's net)
                out = out + self.inner.resolve(iid, self.settled[iid], now_ns)
                out = out + self.inner.poll(now_ns)
        return out

    def __getattr__(self, attr: str) -> Any:  # submit, cancel, replace, poll, queries, close
        return getattr(self.inner, attr)
