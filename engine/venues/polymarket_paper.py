"""Paper trading on Polymarket: the simulated exchange on the CLOB's book, settled when the CLOB
resolves a market.

Why a wrapper: the simulated exchange settles a binary contract at its configured
``resolves_ns`` with its configured ``resolution`` (a backtest knows both in advance); on the
venue's live data nobody does, so the market channel's ``market_resolved`` — an
``ExchangeStatus`` HALTED whose reason ``polymarket_data`` writes as ``market resolved
(<outcome>): pays <payout>`` — settles the paper position at that payout through the simulated
exchange's public ``resolve`` (the path a configured resolution takes), as the venue settles a
live one (``polymarket_exec``). Everything else is the simulated exchange's.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.messages import ExchangeStatus

__all__ = ["ResolvingPaper", "payout_of", "resolution_of", "resolved_reason"]

_PAYS = (Decimal(0), Decimal("0.5"), Decimal(1))  # what a CLOB share pays (None is not in)
_RESOLVED = re.compile(r"market resolved \((?P<outcome>[^)]*)\): pays (?P<pay>[0-9.]+)")


def resolved_reason(outcome: str, pay: Decimal) -> str:
    """The ``ExchangeStatus`` reason of a token whose market resolved (paying ``pay``)."""
    return f"market resolved ({outcome or 'no winner'}): pays {pay.normalize():f}"


def resolution_of(pay: Decimal) -> str:
    """The simulated exchange's ``resolution`` for a payout a share: "1", "0" or "0.5" (a
    50/50: the only payouts the CLOB has)."""
    return f"{pay.normalize():f}"


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
            if pay in _PAYS and iid not in self.settled and self._lists(iid):
                self.settled.add(iid)
                out = out + self.inner.resolve(iid, resolution_of(pay), now_ns)
        return out

    def _lists(self, iid: int) -> bool:
        """Whether the simulated exchange holds the token (its public ``resolve`` raises
        otherwise)."""
        trades = getattr(self.inner, "trades_instrument", None)
        return trades is None or bool(trades(iid))

    def __getattr__(self, attr: str) -> Any:  # submit, cancel, poll, queries, reports, close
        return getattr(self.inner, attr)
