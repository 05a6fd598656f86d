"""Betting exchange arithmetic: the Betfair price ladder, back/lay P&L, market exposure, green-up.

A betting selection's price is decimal odds (ticks of 0.01), its quantity the stake (lots of the
account currency); BUY backs the selection, SELL lays it. A bet's P&L is not linear in the odds,
so a selection's position is kept as its P&L in each of the two outcomes — ``win`` (the selection
wins) and ``lose`` — which add up across bets (``BetBook``). A market's exposure is the worst
case over which of its selections wins; a position is greened up (cashed out) by the one
opposite bet that makes both outcomes equal. Commission is charged on a market's net winnings at
settlement, not per bet. Every venue, the simulated one included, the portfolio and risk use
these functions so the numbers agree. docs/instruments-and-accounts.md has the user's view.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence

# Betfair's ladder: (from, to, step) in hundredths of decimal odds; a price is valid when it lies
# in a band and is a whole number of steps above the band's start
LADDER_BANDS: tuple[tuple[int, int, int], ...] = (
    (101, 200, 1),
    (200, 300, 2),
    (300, 400, 5),
    (400, 600, 10),
    (600, 1000, 20),
    (1000, 2000, 50),
    (2000, 3000, 100),
    (3000, 5000, 200),
    (5000, 10000, 500),
    (10000, 100000, 1000),
)
MIN_ODDS = 1.01
MAX_ODDS = 1000.0


def _hundredths(px_ticks: int, tick: float) -> int | None:
    """Odds in hundredths, None when the price is not a whole number of hundredths."""
    x = px_ticks * tick * 100.0
    n = round(x)
    return n if abs(x - n) < 1e-6 else None


def betfair_ladder_ok(px_ticks: int, tick: float) -> bool:
    """Whether ``px_ticks`` × ``tick`` is a price on Betfair's ladder (1.01 .. 1000)."""
    c = _hundredths(px_ticks, tick)
    if c is None:
        return False
    for lo, hi, step in LADDER_BANDS:
        if lo <= c <= hi:
            return (c - lo) % step == 0
    return False


def ladder_prices() -> list[float]:
    """Every price on the ladder, ascending (350 of them)."""
    out: list[int] = []
    for lo, hi, step in LADDER_BANDS:
        out.extend(c for c in range(lo, hi + 1, step) if not out or c > out[-1])
    return [c / 100 for c in out]


_LADDER_C = [round(p * 100) for p in ladder_prices()]


def ladder_ticks(odds: float, tick: float, *, up: bool = False) -> int:
    """The ladder price nearest ``odds`` in ticks of ``tick`` — at or below it (``up``: at or
    above), clamped to the ladder's ends."""
    c = odds * 100.0
    if up:
        pick = next((p for p in _LADDER_C if p >= c - 1e-6), _LADDER_C[-1])
    else:
        pick = next((p for p in reversed(_LADDER_C) if p <= c + 1e-6), _LADDER_C[0])
    return round(pick / 100.0 / tick)


def ladder_position(px_ticks: float, tick: float) -> float:
    """Where a price lies on the ladder, in ladder ticks from 1.01 (0.0): a price between two
    ladder prices (a mid) by linear interpolation, clamped to the ladder's ends. A move of
    ``n`` ladder ticks is ``n`` here whatever the odds (guards measure bounded prices so)."""
    c = px_ticks * tick * 100.0
    lad = _LADDER_C
    if c <= lad[0]:
        return 0.0
    if c >= lad[-1]:
        return float(len(lad) - 1)
    j = bisect_right(lad, c)  # lad[j - 1] <= c < lad[j]
    lo, hi = lad[j - 1], lad[j]
    return (j - 1) + (c - lo) / (hi - lo)


def ladder_positions_ticks(tick: float) -> list[float]:
    """Every ladder price in ticks of ``tick``, ascending (for kernels that interpolate)."""
    return [c / 100.0 / tick for c in _LADDER_C]


def ladder_step(px_ticks: int, tick: float, steps: int) -> int:
    """The price ``steps`` ladder places away from a ladder price (clamped at the ends)."""
    c = _hundredths(px_ticks, tick)
    if c is None or c not in _LADDER_C:
        raise ValueError(f"{px_ticks} ticks of {tick} is not a ladder price")
    i = min(max(_LADDER_C.index(c) + steps, 0), len(_LADDER_C) - 1)
    return round(_LADDER_C[i] / 100.0 / tick)


# --- one bet ----------------------------------------------------------------------------------


def bet_pnl(side: int, stake: float, odds: float, selection_won: bool) -> float:
    """A bet's P&L. Back (side > 0) S at O: won +S(O − 1), lost −S. Lay (side < 0): the
    selection lost +S, it won −S(O − 1) (the liability)."""
    if side > 0:
        return stake * (odds - 1.0) if selection_won else -stake
    return -stake * (odds - 1.0) if selection_won else stake


def liability(side: int, stake: float, odds: float) -> float:
    """What a bet can lose: the stake of a back, stake × (odds − 1) of a lay."""
    return stake if side > 0 else stake * (odds - 1.0)


def green_up_stake(back_stake: float, back_odds: float, lay_odds: float) -> float:
    """The lay stake that equalizes a back of ``back_stake`` at ``back_odds`` at ``lay_odds``:
    S × O_back / O_lay (the same formula with the roles swapped greens up a lay)."""
    return back_stake * back_odds / lay_odds


def green_up(win: float, lose: float, odds: float) -> tuple[int, float]:
    """The opposite bet (side +1 back / −1 lay, stake) at ``odds`` that makes a selection's P&L
    the same whether it wins or loses, from its P&L in each (``win``, ``lose``): a lay of
    (win − lose) / odds when winning pays more, else a back of (lose − win) / odds."""
    diff = win - lose
    if diff >= 0:
        return -1, diff / odds
    return 1, -diff / odds


def locked_pnl(win: float, lose: float, odds: float) -> float:
    """The P&L a green-up at ``odds`` locks in: lose + (win − lose) / odds, i.e. the
    position's value at the implied probability 1/odds (its mark-to-market)."""
    return lose + (win - lose) / odds


def commission(net_winnings: float, rate: float) -> float:
    """Commission on a market's net winnings (nothing on a net loss)."""
    return net_winnings * rate if net_winnings > 0 else 0.0


# --- a selection's bets ----------------------------------------------------------------------


class BetBook:
    """One selection's matched bets: P&L if it wins (``win``) and if it loses (``lose``), the
    stakes backed and laid, and the signed stake (``position`` lots: backed − laid).

    Shaped like ``engine.lots.LotBook`` where the portfolio needs it (``position``, ``apply``,
    ``unrealized``, ``avg_px``, ``lots``) so a selection sits in the same tables as any other
    instrument; ``apply`` closes nothing (a bet is only realized at settlement)."""

    __slots__ = ("instrument_id", "multiplier", "tick", "win", "lose", "backed", "laid", "bets")

    def __init__(self, instrument_id: int, lot_size: float, tick: float) -> None:
        self.instrument_id = instrument_id
        self.multiplier = float(lot_size)  # currency per stake lot
        self.tick = float(tick)
        self.win = 0.0
        self.lose = 0.0
        self.backed = 0  # lots
        self.laid = 0
        self.bets = 0

    @property
    def position(self) -> int:
        return self.backed - self.laid

    @property
    def avg_px(self) -> float:
        return 0.0

    @property
    def lots(self) -> Sequence[object]:
        return ()

    @property
    def open(self) -> bool:
        return self.bets > 0

    def apply(
        self, signed_qty: int, px: int, ts: int = 0, ref: object = None, select: object = ()
    ) -> list:
        """A matched bet: ``signed_qty`` stake lots (> 0 back, < 0 lay) at ``px`` odds ticks."""
        if signed_qty == 0:
            return []
        side = 1 if signed_qty > 0 else -1
        stake = abs(signed_qty) * self.multiplier
        odds = px * self.tick
        self.win += bet_pnl(side, stake, odds, True)
        self.lose += bet_pnl(side, stake, odds, False)
        if side > 0:
            self.backed += abs(signed_qty)
        else:
            self.laid += abs(signed_qty)
        self.bets += 1
        return []

    def unrealized(self, mark_px: int) -> float:
        """Value at the mark's implied probability (``locked_pnl``); the lose case unmarked."""
        if not self.bets:
            return 0.0
        if mark_px <= 0:
            return self.lose
        return locked_pnl(self.win, self.lose, mark_px * self.tick)

    def settle(self, selection_won: bool) -> float:
        """The book's result when the selection wins / loses; empties the book."""
        out = self.win if selection_won else self.lose
        self.clear()
        return out

    def void_bet(self, signed_qty: int, px: int) -> None:
        """Undo one matched bet (``signed_qty`` lots, > 0 a back, at ``px`` odds ticks): the
        venue voided it while the selection's other bets stand."""
        if signed_qty == 0:
            return
        side = 1 if signed_qty > 0 else -1
        stake, odds = abs(signed_qty) * self.multiplier, px * self.tick
        self.win -= bet_pnl(side, stake, odds, True)
        self.lose -= bet_pnl(side, stake, odds, False)
        if side > 0:
            self.backed -= abs(signed_qty)
        else:
            self.laid -= abs(signed_qty)
        self.bets = max(self.bets - 1, 0)

    def clear(self) -> None:
        """Forget every bet (a settled or voided market)."""
        self.win = self.lose = 0.0
        self.backed = self.laid = self.bets = 0

    def green_up(self, odds: float) -> tuple[int, float]:
        """The bet (side, stake in currency) that greens this book up at ``odds``."""
        return green_up(self.win, self.lose, odds)


# --- a market ---------------------------------------------------------------------------------


def outcome_pnls(
    books: Mapping[Hashable, tuple[float, float]], others: bool = True
) -> dict[Hashable | None, float]:
    """P&L of a market in each outcome, from each selection's (win, lose) P&L: selection k
    winning pays win_k plus every other selection's lose. ``others``: some selection not in
    ``books`` may win (key None: every selection here loses)."""
    total_lose = sum(lose for _, lose in books.values())
    out: dict[Hashable | None, float] = {
        k: win + (total_lose - lose) for k, (win, lose) in books.items()
    }
    if others or not books:
        out[None] = total_lose
    return out


def market_exposure(books: Mapping[Hashable, tuple[float, float]], others: bool = True) -> float:
    """A market's exposure: its worst-case loss over its outcomes (>= 0) — the liability the
    account must cover."""
    worst = min(outcome_pnls(books, others).values(), default=0.0)
    return -worst if worst < 0 else 0.0


def exposure_of(bets: Iterable[tuple[Hashable, int, float, float]], others: bool = True) -> float:
    """Market exposure from loose bets (selection, side, stake, odds) — a check on what a new
    bet would do before it is placed (risk)."""
    books: dict[Hashable, tuple[float, float]] = {}
    for sel, side, stake, odds in bets:
        w, lo = books.get(sel, (0.0, 0.0))
        books[sel] = (w + bet_pnl(side, stake, odds, True), lo + bet_pnl(side, stake, odds, False))
    return market_exposure(books, others)
