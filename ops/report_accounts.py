"""The account events of a run, tallied for its summary: the P&L components a fill never shows.

Funding (perpetuals), financing (FX rollovers), betting commission and liquidation fees move
money with no order of ours; settlements and liquidations close positions. The summary shows
them apart, each in its own currency and in the account's (``[portfolio]`` base currency, at
its ``fx_rates``), beside realized / unrealized / fees from exec's positions table — so a
trader reads where the money went, and the net P&L adds up. Two sources give the same figures:
the supervisor's record of the rings (``AccountTally``) and PostgreSQL's ``account_events``
(``tally_from_pg``, migration 0010).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.enums import RiskEventKind
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    RiskEvent,
    Settlement,
)

#: money components, each {currency: amount}: funding and financing as the account sees them
#: (> 0 received); commission (a betting market's, on its settlement) and liquidation fees are
#: charges (> 0 paid). Liquidation fees are part of ``fees`` already (a liquidation is booked like
#: a fill), as is any other settlement's fee: shown, never added again
COMPONENTS = ("funding", "financing", "commission", "liquidation_fees")


class AccountTally:
    """Account events and margin risk events, added up (see the module docstring).
    ``currency_of``: instrument id -> its currency (a settlement or liquidation names none);
    ``betting``: the ids of betting selections (their settlement's fee is the commission)."""

    def __init__(
        self,
        currency_of: Mapping[int, str],
        fx_rates: Mapping[str, float],
        betting: Iterable[int] = (),
    ) -> None:
        self.currency_of = dict(currency_of)
        self.betting = set(betting)
        self.fx_rates = dict(fx_rates)
        self.money: dict[str, dict[str, float]] = {k: {} for k in COMPONENTS}
        self.settlements = 0
        self.liquidations = 0
        self.margin_calls = 0  # RiskEvent MARGIN_CALL (risk) or MarginStatus margin_call (venue)
        self.margin: dict[str, dict[str, Any]] = {}  # venue -> its last MarginStatus

    def _add(self, what: str, ccy: str, amount: float) -> None:
        if amount:
            book = self.money[what]
            book[ccy] = book.get(ccy, 0.0) + float(amount)

    def on_event(self, msg: Any) -> None:
        """Count one account event."""
        t = type(msg)
        if t is FundingPayment:
            self._add("funding", msg.currency, msg.amount)
        elif t is Financing:
            self._add("financing", msg.currency, msg.amount)
        elif t is Settlement:
            self.settlements += 1
            if msg.instrument_id in self.betting:
                self._add("commission", self.currency_of.get(msg.instrument_id, ""), msg.fee)
        elif t is Liquidation:
            self.liquidations += 1
            self._add("liquidation_fees", self.currency_of.get(msg.instrument_id, ""), msg.fee)
        elif t is MarginStatus:
            self.margin[msg.venue] = {
                "currency": msg.currency,
                "equity": msg.equity,
                "initial_margin": msg.initial_margin,
                "maintenance_margin": msg.maintenance_margin,
                "margin_call": msg.margin_call,
            }

    def on_risk(self, msg: Any) -> None:
        if isinstance(msg, RiskEvent) and msg.kind == RiskEventKind.MARGIN_CALL:
            self.margin_calls += 1

    def in_base(self, what: str) -> float:
        """One component in the account (base) currency."""
        return sum(v * self.fx_rates.get(c, 1.0) for c, v in self.money[what].items())

    def summary(self) -> dict[str, Any]:
        """The summary's figures: each component in base currency (top level: ``funding``,
        ``financing``, ``commission``) and ``account`` with the per-currency amounts."""
        out: dict[str, Any] = {
            "funding": self.in_base("funding"),
            "financing": self.in_base("financing"),
            "commission": self.in_base("commission"),
        }
        out["account"] = {
            "by_currency": {k: dict(v) for k, v in self.money.items() if v},
            "settlements": self.settlements,
            "liquidations": self.liquidations,
            "margin_calls": self.margin_calls,
            "margin": dict(self.margin),
        }
        return out


def tally_from_pg(conn: Any, run_id: int) -> dict[str, Any]:
    """The ``account`` part of ``AccountTally.summary`` from a recorded run's ``account_events``
    (money per currency; a settlement's and a liquidation's amount is their fee, negated)."""
    by: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    names = {
        "FundingPayment": "funding",
        "Financing": "financing",
        "Settlement": "commission",
        "Liquidation": "liquidation_fees",
    }
    # a settlement or liquidation names no currency: its instrument's (the latest mapping of
    # its id, as the run that wrote it left it); only a betting market's settlement fee is
    # commission (another's is a fee, in ``fees`` already)
    for kind, ccy, total, n in conn.execute(
        "SELECT a.kind, coalesce(nullif(a.currency, ''), i.currency, ''),"
        " sum(a.amount) FILTER (WHERE a.kind <> 'Settlement' OR i.kind = 'betting'), count(*)"
        " FROM account_events a LEFT JOIN instruments i ON i.instrument_id = a.instrument_id"
        " WHERE a.run_id = %s GROUP BY 1, 2",
        (run_id,),
    ):
        counts[kind] = counts.get(kind, 0) + int(n)
        what = names.get(kind)
        if what is None or not total:
            continue
        sign = -1.0 if what in ("commission", "liquidation_fees") else 1.0
        by.setdefault(what, {})[ccy] = sign * float(total)
    return {
        "by_currency": by,
        "settlements": counts.get("Settlement", 0),
        "liquidations": counts.get("Liquidation", 0),
        "margin_status": counts.get("MarginStatus", 0),
    }


def format_account(s: Mapping[str, Any]) -> list[str]:
    """The summary's account lines (none for a run without account events)."""
    acct = s.get("account") or {}
    by = acct.get("by_currency") or {}
    lines = []
    if by:
        parts = []
        for what in COMPONENTS:
            for ccy, v in sorted((by.get(what) or {}).items()):
                parts.append(f"{what.replace('_', ' ')} {v:+.2f} {ccy}".rstrip())
        lines.append("  account: " + "  ".join(parts))
    n = {k: int(acct.get(k) or 0) for k in ("settlements", "liquidations", "margin_calls")}
    if any(n.values()):
        lines.append(
            f"  settlements {n['settlements']}  liquidations {n['liquidations']}  "
            f"margin calls {n['margin_calls']}"
        )
    for venue, m in sorted((acct.get("margin") or {}).items()):
        lines.append(
            f"  margin {venue}: equity {m['equity']:.2f} {m['currency']}  initial "
            f"{m['initial_margin']:.2f}  maintenance {m['maintenance_margin']:.2f}"
            + ("  MARGIN CALL" if m.get("margin_call") else "")
        )
    return lines
