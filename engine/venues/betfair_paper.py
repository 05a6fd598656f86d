"""Paper betting on Betfair's live book: the simulated exchange, settled when the venue settles.

Our bets are matched by ``SimExchange`` against the venue's real ladders, through
``OddsVenue`` (``engine.venues.sim_odds``: a back takes the odds available to back at or above
its limit). What the simulator cannot know is when and how the real market ends: the market
stream says it (``ExchangeStatus`` HALTED with a "settled: winner | loser | void" reason,
``betfair_wire``), and this wrapper then resolves the simulated position the same way a
scheduled resolution would (P&L from the bets, commission on the market's net winnings,
open orders expired, one ``Settlement``). Suspension needs nothing here: the simulator halts
an instrument on the same ExchangeStatus and refuses orders on it until OPEN.
"""

from __future__ import annotations

from typing import Any

import msgspec

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
        acc = getattr(sim, "_accounts", None)
        if acc is not None and not callable(getattr(sim, "resolve", None)):
            # until the simulator has a public hook: every selection here settles (when the
            # venue says), so a market's commission waits for all of them (on its net)
            for iid, b in acc.books.items():
                mine = acc._markets.setdefault(b.ins.market_id, [])  # noqa: SLF001
                if b.ins.kind == "betting" and iid not in mine:
                    mine.append(iid)

    def on_market_data(self, msg: object, now_ns: int) -> list[Any]:
        out = self.inner.on_market_data(msg, now_ns)
        if type(msg) is ExchangeStatus:
            got = settlement_of(msg.reason)  # type: ignore[attr-defined]
            iid = msg.instrument_id  # type: ignore[attr-defined]
            if got is not None and iid not in self.settled:
                self.settled[iid] = _RESOLUTION[got[1]]
                out = out + self._resolve(iid, self.settled[iid], now_ns)
                out = out + self.inner.poll(now_ns)
        return out

    def _resolve(self, iid: int, resolution: str, now_ns: int) -> list[Any]:
        resolve = getattr(self.sim, "resolve", None)
        if resolve is not None:
            return list(resolve(iid, resolution, now_ns) or [])
        acc = getattr(self.sim, "_accounts", None)  # until the simulator has a public hook
        b = acc.books.get(iid) if acc is not None else None
        if b is None or b.settled:
            return []
        b.ins = msgspec.structs.replace(b.ins, resolution=resolution)
        acc._resolve(self.sim, b, now_ns)  # noqa: SLF001
        return []

    def __getattr__(self, attr: str) -> Any:  # submit, cancel, replace, poll, queries, close
        return getattr(self.inner, attr)
