"""Paper trading on Polymarket: the simulated exchange on the CLOB's book, settled when the CLOB
resolves a market.

Why a wrapper: the simulated exchange settles a binary contract at its configured
``resolves_ns`` with its configured ``resolution`` (a backtest knows both in advance); on the
venue's live data nobody does, so the market channel's ``market_resolved`` — an
``ExchangeStatus`` HALTED whose reason ``polymarket_data`` writes as ``market resolved
(<outcome>): pays <payout>`` — settles the paper position at that payout, as the venue settles
a live one (``polymarket_exec``). Everything else is the simulated exchange's.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.enums import SettlementKind
from engine.messages import ExchangeStatus

__all__ = ["ResolvingPaper", "payout_of", "resolved_reason"]

_RESOLVED = re.compile(r"market resolved \((?P<outcome>[^)]*)\): pays (?P<pay>[0-9.]+)")


def resolved_reason(outcome: str, pay: Decimal) -> str:
    """The ``ExchangeStatus`` reason of a token whose market resolved (paying ``pay``)."""
    return f"market resolved ({outcome or 'no winner'}): pays {pay.normalize():f}"


def payout_of(reason: str) -> Decimal | None:
    """The payout a ``resolved_reason`` names; None for any other reason."""
    m = _RESOLVED.fullmatch(reason)
    if m is None:
        return None
    try:
        return Decimal(m["pay"])
    except InvalidOperation:
        return None


class ResolvingPaper:
    """Wraps a ``SimExchange`` (see the module docstring); ``settled`` the tokens it settled."""

    def __init__(self, sim: Any) -> None:
        self.inner = sim
        self.name = sim.name
        self.settled: set[int] = set()

    def on_market_data(self, msg: object, now_ns: int) -> list[Any]:
        out: list[Any] = self.inner.on_market_data(msg, now_ns)
        if type(msg) is ExchangeStatus:
            pay = payout_of(msg.reason)  # type: ignore[attr-defined]
            iid = msg.instrument_id  # type: ignore[attr-defined]
            if pay is not None and iid not in self.settled:
                self.settled.add(iid)
                self._settle(iid, pay, msg.ts_event)  # type: ignore[attr-defined]
        return out

    def _settle(self, iid: int, pay: Decimal, ts: int) -> None:
        """Close the paper position at the payout, expire its orders (they come from
        ``poll``). Uses the simulated exchange's account settlement (engine/venues/
        sim_accounts.py), the same path a configured resolution takes."""
        accounts = getattr(self.inner, "_accounts", None)
        book = accounts.books.get(iid) if accounts is not None else None
        if book is None:
            return
        px = book.ins.px_to_ticks(pay)
        kind = int(SettlementKind.RESOLVED)
        accounts._settle(self.inner, book, kind, px, int(pay > 0), ts, "market resolved")

    def __getattr__(self, attr: str) -> Any:  # submit, cancel, poll, queries, reports, close
        return getattr(self.inner, attr)
