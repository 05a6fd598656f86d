"""The USD-M futures account of the local Binance futures server: wallet, positions, margin.

Why apart from the matcher: ``tests.venues.matching`` keeps spot balances (a buy spends quote,
receives base). A linear perpetual has no base asset to hold: every fill moves one signed
position per symbol (one-way mode, ``positionSide`` BOTH) and books its realized P&L and fee
in the margin asset (USDT). The server gives its accounts unlimited spot balances and keeps
the money here, the way Binance documents it:

- realized P&L of a reducing fill = closed qty * (fill px - entry px) * sign; the entry price of
  an increasing fill is the quantity-weighted average;
- funding at each funding time: ``amount = -positionAmt * markPrice * fundingRate`` (longs pay
  when the rate is > 0), booked as income FUNDING_FEE;
- cross margin: equity = wallet + unrealized at the mark; maintenance = sum of
  ``|positionAmt| * mark * maintMarginRatio``; a MARGIN_CALL is pushed when equity falls below
  ``maintenance * margin_call_ratio``, and the position is liquidated at the mark when equity
  falls below maintenance (a clearance fee ``liquidation_fee`` of the notional is charged).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal

D0 = Decimal(0)


@dataclass
class Position:
    amt: Decimal = D0  # signed: > 0 long
    entry: Decimal = D0
    leverage: int = 20

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.amt * (mark - self.entry)


@dataclass
class Income:
    symbol: str
    kind: str  # REALIZED_PNL | COMMISSION | FUNDING_FEE | INSURANCE_CLEAR
    amount: Decimal
    asset: str
    time_ms: int
    tran_id: int


@dataclass
class FuturesAccount:
    name: str
    wallet: Decimal = D0
    asset: str = "USDT"
    positions: dict[str, Position] = field(default_factory=dict)
    income: list[Income] = field(default_factory=list)
    margin_called: bool = False

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position())


class Ledger:
    """Every account's futures money; ``maint_ratio`` / ``liquidation_fee`` per the venue."""

    def __init__(
        self,
        maint_ratio: Decimal = Decimal("0.004"),
        liquidation_fee: Decimal = Decimal("0.0125"),
        margin_call_ratio: Decimal = Decimal("1.25"),
        max_leverage: int = 125,
    ) -> None:
        self.accounts: dict[str, FuturesAccount] = {}
        self.maint_ratio = maint_ratio
        self.liquidation_fee = liquidation_fee
        self.margin_call_ratio = margin_call_ratio
        self.max_leverage = max_leverage
        self._tran = itertools.count(9_000_000)

    def account(self, name: str) -> FuturesAccount:
        return self.accounts.setdefault(name, FuturesAccount(name))

    def _book(self, acct: FuturesAccount, symbol: str, kind: str, amount: Decimal, ms: int) -> None:
        if amount:
            acct.wallet += amount
            acct.income.append(Income(symbol, kind, amount, acct.asset, ms, next(self._tran)))

    def fill(
        self,
        acct: FuturesAccount,
        symbol: str,
        side: str,
        qty: Decimal,
        px: Decimal,
        fee: Decimal,
        ms: int,
    ) -> Decimal:
        """Apply one fill; returns its realized P&L (fee apart)."""
        pos = acct.position(symbol)
        signed = qty if side == "buy" else -qty
        realized = D0
        if pos.amt and (pos.amt > 0) != (signed > 0):  # reducing (and maybe flipping)
            closed = min(abs(pos.amt), qty)
            realized = closed * (px - pos.entry) * (1 if pos.amt > 0 else -1)
            rest = signed + pos.amt
            if rest and (rest > 0) == (signed > 0):  # flipped: the rest opens at px
                pos.amt, pos.entry = rest, px
            else:
                pos.amt = rest
                if not pos.amt:
                    pos.entry = D0
        else:
            total = abs(pos.amt) + qty
            pos.entry = (abs(pos.amt) * pos.entry + qty * px) / total
            pos.amt += signed
        self._book(acct, symbol, "REALIZED_PNL", realized, ms)
        self._book(acct, symbol, "COMMISSION", -fee, ms)
        return realized

    def fund(
        self, acct: FuturesAccount, symbol: str, mark: Decimal, rate: Decimal, ms: int
    ) -> Decimal:
        """One funding payment on ``symbol``'s position; returns the amount (> 0 received)."""
        pos = acct.positions.get(symbol)
        if pos is None or not pos.amt:
            return D0
        amount = (-pos.amt * mark * rate).quantize(Decimal("0.00000001"))
        self._book(acct, symbol, "FUNDING_FEE", amount, ms)
        return amount

    def equity(self, acct: FuturesAccount, marks: dict[str, Decimal]) -> Decimal:
        return acct.wallet + sum(
            (p.unrealized(marks[s]) for s, p in acct.positions.items() if p.amt and s in marks), D0
        )

    def maintenance(self, acct: FuturesAccount, marks: dict[str, Decimal]) -> Decimal:
        return sum(
            (
                abs(p.amt) * marks[s] * self.maint_ratio
                for s, p in acct.positions.items()
                if p.amt and s in marks
            ),
            D0,
        )

    def initial(self, acct: FuturesAccount, marks: dict[str, Decimal]) -> Decimal:
        return sum(
            (
                abs(p.amt) * marks[s] / p.leverage
                for s, p in acct.positions.items()
                if p.amt and s in marks
            ),
            D0,
        )

    def liquidate(
        self, acct: FuturesAccount, symbol: str, mark: Decimal, ms: int
    ) -> tuple[str, Decimal, Decimal]:
        """Close ``symbol``'s position at ``mark``: (closing side, qty, clearance fee)."""
        pos = acct.position(symbol)
        side = "sell" if pos.amt > 0 else "buy"
        qty = abs(pos.amt)
        fee = (qty * mark * self.liquidation_fee).quantize(Decimal("0.00000001"))
        self.fill(acct, symbol, side, qty, mark, D0, ms)
        self._book(acct, symbol, "INSURANCE_CLEAR", -fee, ms)
        return side, qty, fee
