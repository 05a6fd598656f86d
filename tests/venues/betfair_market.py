"""The Betfair exchange's markets for the local server: selections, back/lay matching, settlement.

A market has selections (runners); each selection keeps two queues of resting offers in
decimal odds: resting BACK bets (what a layer can take: "available to lay") and resting LAY bets
(what a backer can take: "available to back"). A back at odds P takes resting lays at odds >= P,
the highest first (the backer gets the best odds on offer); a lay at P takes resting backs at
odds <= P, the lowest first. What is left rests at P (persistence LAPSE: lapsed when the market
closes; PERSIST: kept through in-play, lapsed at close too). House liquidity (``offer``) is a
resting bet that belongs to no account. Prices must lie on Betfair's ladder.

Settlement: ``settle`` closes the market with one winning selection (bets on it: backs won, lays
lost) and every matched bet is cleared SETTLED with its profit; ``void`` clears every bet VOIDED
(profit 0, stakes back). ``settle`` may void some bets and settle the rest (``void_bets``: as
Betfair voids bets matched after a disallowed goal or a late runner removal); commission is on
the settled bets' net. Unmatched remainders lapse at close. Nothing here knows the wire.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from decimal import Decimal

D0 = Decimal(0)
#: Betfair's price ladder: (from, to, step) in decimal odds
LADDER = (
    (Decimal("1.01"), Decimal("2"), Decimal("0.01")),
    (Decimal("2"), Decimal("3"), Decimal("0.02")),
    (Decimal("3"), Decimal("4"), Decimal("0.05")),
    (Decimal("4"), Decimal("6"), Decimal("0.1")),
    (Decimal("6"), Decimal("10"), Decimal("0.2")),
    (Decimal("10"), Decimal("20"), Decimal("0.5")),
    (Decimal("20"), Decimal("30"), Decimal("1")),
    (Decimal("30"), Decimal("50"), Decimal("2")),
    (Decimal("50"), Decimal("100"), Decimal("5")),
    (Decimal("100"), Decimal("1000"), Decimal("10")),
)
MIN_STAKE = Decimal("1.00")


def on_ladder(price: Decimal) -> bool:
    for lo, hi, step in LADDER:
        if lo <= price <= hi:
            return (price - lo) % step == 0
    return False


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Bet:
    bet_id: str
    market_id: str
    selection_id: int
    side: str  # "BACK" | "LAY"
    price: Decimal
    size: Decimal
    account: str | None  # None: house liquidity
    ref: str = ""  # customerOrderRef
    persistence: str = "LAPSE"
    placed_ms: int = field(default_factory=now_ms)
    matched: Decimal = D0
    matched_value: Decimal = D0  # sum of size x odds of the matched parts (for the average)
    cancelled: Decimal = D0
    lapsed: Decimal = D0
    voided: Decimal = D0
    seq: int = 0
    matched_ms: int = 0
    outcome: str = ""  # "WON" / "LOST" once settled
    profit: Decimal = D0
    cleared: str = ""  # "SETTLED" / "VOIDED" / "LAPSED" / "CANCELLED"

    @property
    def remaining(self) -> Decimal:
        return self.size - self.matched - self.cancelled - self.lapsed - self.voided

    @property
    def status(self) -> str:
        return "EXECUTABLE" if self.remaining > 0 else "EXECUTION_COMPLETE"

    @property
    def avg_price(self) -> Decimal:
        size = self.matched or self.voided  # a voided bet keeps the odds it had matched at
        return (self.matched_value / size).quantize(Decimal("0.01")) if size else D0


@dataclass
class Selection:
    selection_id: int
    name: str
    status: str = "ACTIVE"  # ACTIVE | WINNER | LOSER | REMOVED
    backs: list[Bet] = field(default_factory=list)  # resting backs: available to lay
    lays: list[Bet] = field(default_factory=list)  # resting lays: available to back
    traded: dict[Decimal, Decimal] = field(default_factory=dict)  # cumulative, per price
    last_traded: Decimal = D0

    def ladder(self, side: str) -> dict[Decimal, Decimal]:
        """``atb`` (available to back: the resting lays) or ``atl`` (the resting backs)."""
        out: dict[Decimal, Decimal] = {}
        for b in self.lays if side == "atb" else self.backs:
            if b.remaining > 0:
                out[b.price] = out.get(b.price, D0) + b.remaining
        return out


@dataclass
class Market:
    market_id: str
    name: str
    event: str
    selections: dict[int, Selection]
    status: str = "OPEN"  # OPEN | SUSPENDED | CLOSED
    in_play: bool = False
    version: int = 1
    settled_ms: int = 0


@dataclass
class Fill:
    bet: Bet
    size: Decimal
    price: Decimal


class Exchange:
    """Markets, bets, balances; every method runs on the server's loop thread."""

    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}
        self.bets: dict[str, Bet] = {}
        self.balance: dict[str, Decimal] = {}
        self.commission_rate = Decimal("0.05")  # on a market's net winnings per account
        self.commission: dict[tuple[str, str], Decimal] = {}
        self._ids = itertools.count(228_000_000_001)
        self._seq = itertools.count(1)

    def add_market(self, market_id: str, name: str, event: str, runners: dict[int, str]) -> Market:
        sel = {sid: Selection(sid, nm) for sid, nm in runners.items()}
        m = self.markets[market_id] = Market(market_id, name, event, sel)
        return m

    # --- orders ---------------------------------------------------------------------------------
    def place(
        self,
        market_id: str,
        selection_id: int,
        side: str,
        price: Decimal,
        size: Decimal,
        account: str | None,
        ref: str = "",
        persistence: str = "LAPSE",
        match: bool = True,
    ) -> tuple[Bet, list[Fill]]:
        """A new bet matched at once as far as it goes (``match``); the rest rests."""
        bet = Bet(
            str(next(self._ids)),
            market_id,
            selection_id,
            side,
            price,
            size,
            account,
            ref,
            persistence,
            seq=next(self._seq),
        )
        self.bets[bet.bet_id] = bet
        if not match:
            return bet, []
        return bet, self._match(bet)

    def _match(self, bet: Bet) -> list[Fill]:
        sel = self.markets[bet.market_id].selections[bet.selection_id]
        if bet.side == "BACK":
            book = sorted(
                (b for b in sel.lays if b.price >= bet.price), key=lambda b: (-b.price, b.seq)
            )
        else:
            book = sorted(
                (b for b in sel.backs if b.price <= bet.price), key=lambda b: (b.price, b.seq)
            )
        fills: list[Fill] = []
        for maker in book:
            if bet.remaining <= 0:
                break
            qty = min(bet.remaining, maker.remaining)
            for b in (bet, maker):
                b.matched += qty
                b.matched_value += qty * maker.price
                b.matched_ms = now_ms()
                fills.append(Fill(b, qty, maker.price))
            sel.traded[maker.price] = sel.traded.get(maker.price, D0) + qty
            sel.last_traded = maker.price
        (sel.backs if bet.side == "BACK" else sel.lays).append(bet)
        self._prune(sel)
        return fills

    @staticmethod
    def _prune(sel: Selection) -> None:
        sel.backs = [b for b in sel.backs if b.remaining > 0]
        sel.lays = [b for b in sel.lays if b.remaining > 0]

    def cancel(self, bet_id: str, reduction: Decimal | None = None) -> Decimal:
        """Cancel ``reduction`` of a bet's unmatched part (None: all of it); what was cancelled."""
        bet = self.bets[bet_id]
        qty = bet.remaining if reduction is None else min(reduction, bet.remaining)
        bet.cancelled += qty
        self._prune(self.markets[bet.market_id].selections[bet.selection_id])
        return qty

    def take(
        self, market_id: str, selection_id: int, side: str, price: Decimal, size: Decimal
    ) -> list[Fill]:
        """A house taker: what it matches of the resting bets (it never rests itself)."""
        bet, fills = self.place(market_id, selection_id, side, price, size, None)
        self.cancel(bet.bet_id)
        return fills

    # --- market life ----------------------------------------------------------------------------
    def settle(
        self, market_id: str, winner: int | None, void_bets: frozenset[str] = frozenset()
    ) -> list[Bet]:
        """Close the market. ``winner`` None: void. ``void_bets``: bets voided while the rest
        settle. Every touched bet, cleared."""
        m = self.markets[market_id]
        m.status, m.settled_ms, m.version = "CLOSED", now_ms(), m.version + 1
        touched = []
        for sel in m.selections.values():
            if winner is not None:
                sel.status = "WINNER" if sel.selection_id == winner else "LOSER"
            for b in [*sel.backs, *sel.lays]:
                b.lapsed += b.remaining
            self._prune(sel)
        for b in self.bets.values():
            if b.market_id != market_id or b.account is None or b.cleared:
                continue
            touched.append(b)
            if b.matched == 0:
                b.cleared = "LAPSED" if b.lapsed else "CANCELLED"
                continue
            if winner is None or b.bet_id in void_bets:
                b.voided, b.matched, b.cleared = b.matched, D0, "VOIDED"
                continue
            won_sel = b.selection_id == winner
            back_won = b.side == "BACK" and won_sel
            lay_won = b.side == "LAY" and not won_sel
            gain = b.matched_value - b.matched  # the matched parts' sum of size x (odds - 1)
            if b.side == "BACK":
                b.profit = gain if back_won else -b.matched
            else:
                b.profit = b.matched if lay_won else -gain
            b.outcome = "WON" if back_won or lay_won else "LOST"
            b.cleared = "SETTLED"
            self.balance[b.account] = self.balance.get(b.account, D0) + b.profit
        for acct in {b.account for b in touched if b.cleared == "SETTLED" and b.account}:
            net = sum((b.profit for b in touched if b.account == acct), D0)
            fee = (net * self.commission_rate).quantize(Decimal("0.01")) if net > 0 else D0
            self.commission[(acct, market_id)] = fee
            self.balance[acct] -= fee
        return touched

    def exposure(self, account: str) -> Decimal:
        """The worst case loss over each open market's outcomes (matched and unmatched bets)."""
        worst = D0
        for m in self.markets.values():
            if m.status == "CLOSED":
                continue
            mine = [
                b for b in self.bets.values() if b.market_id == m.market_id and b.account == account
            ]
            outcomes = []
            for win in m.selections:
                pnl = D0
                for b in mine:
                    stake = b.matched + b.remaining
                    liab = stake * (b.price - 1)
                    if b.side == "BACK":
                        pnl += liab if b.selection_id == win else -stake
                    else:
                        pnl += -liab if b.selection_id == win else stake
                outcomes.append(pnl)
            worst += min(D0, min(outcomes, default=D0))
        return -worst
