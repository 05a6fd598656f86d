"""Accounts and margin: what a venue account may hold, how much margin its positions need, when it
is called and where a position liquidates, and how funding and FX financing are computed.

Pure functions and small frozen structs, no state: the portfolio (``engine.portfolio``) keeps the
positions and money, risk reads its ``margin(...)`` numbers, the simulated venue
(``engine.venues.sim_accounts``) pays funding and financing with the same formulas, and config
loading refuses an instrument its account cannot hold (``account_refusal``). One formula each,
written once, so the venue, the portfolio and risk can never disagree about a number.

The user's view of kinds, accounts, position modes and P&L components is
docs/instruments-and-accounts.md; the conventions (signs, units) are in each docstring here.
Money is in the instrument's currency (its quote / settlement currency) unless a name says
otherwise; prices are ticks, positions signed lots.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from engine.enums import InstrumentKind
from engine.instruments import Instrument

# --- account kinds and position modes (config: [[venues]] / [sim] account, position_mode) -------


class AccountKind:
    """What a venue account is (``account = "..."`` in config.toml)."""

    CASH = "cash"  # pays in full for what it buys: spot, binary contracts, unmargined FX
    MARGIN = "margin"  # posts margin: perpetuals, futures, margined FX (and anything cash holds)
    BETTING = "betting"  # a betting exchange wallet: betting selections only
    ALL = (CASH, MARGIN, BETTING)


class PositionMode:
    """How fills make positions (``position_mode = "..."``)."""

    NETTING = "netting"  # one signed position per instrument: a sell reduces a long
    HEDGING = "hedging"  # a long and a short position per instrument, side by side
    ALL = (NETTING, HEDGING)


# the instrument kinds each account kind may hold
ACCOUNT_HOLDS: dict[str, tuple[str, ...]] = {
    AccountKind.CASH: (InstrumentKind.SPOT, InstrumentKind.BINARY, InstrumentKind.FX),
    AccountKind.MARGIN: (
        InstrumentKind.SPOT,
        InstrumentKind.BINARY,
        InstrumentKind.FX,
        InstrumentKind.PERPETUAL,
        InstrumentKind.FUTURE,
    ),
    AccountKind.BETTING: (InstrumentKind.BETTING,),
}


@dataclass(frozen=True, slots=True)
class Account:
    """One venue's account as the portfolio sees it.

    ``leverage`` is the most the account may use (0: no cap but the instruments' own
    ``initial_margin``); ``commission`` the betting exchange's rate on net market winnings
    (0.05 = 5 %; the venue charges it at settlement, ``engine.betting.commission``, and reports
    the amount on the market's last ``Settlement.fee``, which is what the portfolio books)."""

    kind: str = AccountKind.CASH
    position_mode: str = PositionMode.NETTING
    leverage: float = 0.0
    commission: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in AccountKind.ALL:
            raise ValueError(f"account must be one of {', '.join(AccountKind.ALL)}")
        if self.position_mode not in PositionMode.ALL:
            raise ValueError(f"position_mode must be one of {', '.join(PositionMode.ALL)}")
        if not (math.isfinite(self.leverage) and self.leverage >= 0):
            raise ValueError("leverage must be >= 0")
        if not (math.isfinite(self.commission) and 0 <= self.commission < 1):
            raise ValueError("commission must be within [0, 1)")

    @property
    def hedging(self) -> bool:
        return self.position_mode == PositionMode.HEDGING


def account_refusal(account: str, ins: Instrument) -> str | None:
    """Why an account of kind ``account`` cannot hold ``ins`` (None: it can). A margined
    instrument (``initial_margin`` > 0) needs a margin account, whatever its kind."""
    holds = ACCOUNT_HOLDS.get(account)
    if holds is None:
        return f"unknown account kind {account!r} (one of {', '.join(AccountKind.ALL)})"
    if ins.kind not in holds:
        return f"a {account} account cannot hold {ins.kind} instrument {ins.symbol}"
    if ins.is_margined and account != AccountKind.MARGIN:
        return f"{ins.symbol} is margined (initial_margin > 0): it needs a margin account"
    return None


# --- how a fill moves cash ------------------------------------------------------------------


class CashStyle:
    """How trading an instrument moves the account's cash (``cash_style``)."""

    NOTIONAL = "notional"  # buying pays the price in full, selling receives it (spot, binary)
    PNL = "pnl"  # only realized P&L, fees, funding move cash; the notional is margined
    BET = "bet"  # nothing moves at a fill; the bet's result (and commission) at settlement


def cash_style(ins: Instrument) -> str:
    """Perpetuals, futures and every margined instrument settle P&L only; betting selections
    settle at resolution; the rest pay the notional."""
    if ins.kind == InstrumentKind.BETTING:
        return CashStyle.BET
    if ins.kind in (InstrumentKind.PERPETUAL, InstrumentKind.FUTURE) or ins.is_margined:
        return CashStyle.PNL
    return CashStyle.NOTIONAL


def multiplier(ins: Instrument) -> float:
    """Money per (tick × lot): tick_size × lot_size × contract_size."""
    return ins.tick_size * ins.lot_size * ins.contract_size


# --- margin -----------------------------------------------------------------------------------


def notional(ins: Instrument, position: int, mark_px: float) -> float:
    """Absolute notional of ``position`` lots at ``mark_px`` ticks, in the instrument's
    currency (contract size included)."""
    return abs(position) * mark_px * multiplier(ins)


def initial_fraction(ins: Instrument, leverage: float = 0.0) -> float:
    """The fraction of notional to post to open: the instrument's ``initial_margin``, raised to
    1 / ``leverage`` where the account caps leverage lower (leverage 0: no cap)."""
    im = ins.initial_margin
    return max(im, 1.0 / leverage) if leverage > 0 else im


def initial_margin(ins: Instrument, position: int, mark_px: float, leverage: float = 0.0) -> float:
    """Initial margin of a position: notional × ``initial_fraction``."""
    return notional(ins, position, mark_px) * initial_fraction(ins, leverage)


def maintenance_margin(ins: Instrument, position: int, mark_px: float) -> float:
    """Maintenance margin of a position: notional × ``maintenance_margin``."""
    return notional(ins, position, mark_px) * ins.maintenance_margin


def liquidation_price(ins: Instrument, position: int, avg_px: float, collateral: float) -> float:
    """The mark (ticks, float) at which this position's equity equals its maintenance margin;
    0.0 when there is none (flat, or a long that survives any price above zero).

    ``collateral`` is what backs the position besides its own unrealized P&L: for an isolated
    position its margin; for cross margin the account's equity less this position's unrealized
    P&L and less the other positions' maintenance margin. With u = position × multiplier and
    mm = ``maintenance_margin``, equity(m) = collateral + u (m − avg_px) and
    maintenance(m) = |u| m mm, so m = (u avg_px − collateral) / (u − |u| mm).
    """
    if position == 0:
        return 0.0
    u = position * multiplier(ins)
    denom = u - abs(u) * ins.maintenance_margin
    if denom == 0:  # a short with mm = 1 cannot happen (mm < 1); a long with mm = 1 neither
        return 0.0
    m = (u * avg_px - collateral) / denom
    return m if m > 0 else 0.0


def margin_call(equity: float, maintenance: float) -> bool:
    """A margin call: equity below the maintenance margin (and some margin is needed)."""
    return maintenance > 0 and equity < maintenance


def should_liquidate(equity: float, maintenance: float, buffer: float = 1.0) -> bool:
    """The simulated venue liquidates when equity < maintenance × ``buffer`` (1.0: at the
    margin call itself; docs/instruments-and-accounts.md)."""
    return maintenance > 0 and equity < maintenance * buffer


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """An account's margin numbers, money in the account (portfolio base) currency.

    ``usage`` = initial / equity (inf when equity <= 0 with margin in use), ``leverage`` =
    gross notional / equity (likewise), ``free`` = equity − initial."""

    equity: float
    initial: float
    maintenance: float
    notional: float
    margin_call: bool

    @property
    def free(self) -> float:
        return self.equity - self.initial

    @property
    def usage(self) -> float:
        return _ratio(self.initial, self.equity)

    @property
    def leverage(self) -> float:
        return _ratio(self.notional, self.equity)

    def as_dict(self) -> dict[str, float | bool | None]:
        """Plain types for JSON (an infinite ratio: None)."""
        return {
            "equity": self.equity,
            "initial_margin": self.initial,
            "maintenance_margin": self.maintenance,
            "notional": self.notional,
            "free_margin": self.free,
            "margin_usage": _finite(self.usage),
            "leverage": _finite(self.leverage),
            "margin_call": self.margin_call,
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _ratio(num: float, equity: float) -> float:
    if num == 0:
        return 0.0
    return num / equity if equity > 0 else math.inf


# --- funding (perpetuals) ---------------------------------------------------------------------


def funding_amount(ins: Instrument, position: int, mark_px: float, rate: float) -> float:
    """A perpetual's funding for one interval, as the account sees it (> 0 received):
    −position × contract_size × lot_size × mark × rate — longs pay when the rate is positive."""
    return -position * multiplier(ins) * mark_px * rate


def next_funding_ns(ins: Instrument, after_ns: int) -> int:
    """The first funding time strictly after ``after_ns``: multiples of the instrument's
    ``funding_interval_s`` since the epoch (00:00, 08:00, 16:00 UTC for 8 h)."""
    step = ins.funding_interval_s * 1_000_000_000
    if step <= 0:
        raise ValueError(f"{ins.symbol} has no funding interval")
    return (after_ns // step + 1) * step


# --- financing (FX rollover) -----------------------------------------------------------------

ROLLOVER_TZ = ZoneInfo("America/New_York")
ROLLOVER_HOUR = 17  # 17:00 New York: the FX day's end
_WEDNESDAY = 2


def financing_amount(
    ins: Instrument, position: int, mid_px: float, days: int, rate: float | None = None
) -> float:
    """Financing of an FX position carried over a rollover, as the account sees it (> 0
    received), in the quote currency: |units| × mid × annual_rate / 365 × days (``mid_px`` in
    ticks), units = position × lot_size × contract_size, the rate ``financing_long_rate`` for a long and
    ``financing_short_rate`` for a short (its sign says paid or received) unless given."""
    if position == 0:
        return 0.0
    if rate is None:
        rate = ins.financing_long_rate if position > 0 else ins.financing_short_rate
    units = abs(position) * ins.lot_size * ins.contract_size
    return units * mid_px * ins.tick_size * rate / 365.0 * days


def rollover_days(ts_ns: int) -> int:
    """Days a rollover at ``ts_ns`` pays for: 3 on Wednesday's (New York date; the weekend's
    value dates roll then, OANDA's convention), else 1."""
    local = _dt.datetime.fromtimestamp(ts_ns / 1e9, ROLLOVER_TZ)
    return 3 if local.weekday() == _WEDNESDAY else 1


def next_rollover_ns(after_ns: int) -> int:
    """The first rollover strictly after ``after_ns``: 17:00 America/New_York on a weekday
    (Monday to Friday; the market is shut over the weekend, Wednesday's counts 3 days)."""
    t = _dt.datetime.fromtimestamp(after_ns / 1e9, ROLLOVER_TZ)
    day = t.date()
    for _ in range(8):
        cand = _dt.datetime.combine(day, _dt.time(ROLLOVER_HOUR), ROLLOVER_TZ)
        ns = int(cand.timestamp()) * 1_000_000_000
        if ns > after_ns and cand.weekday() < 5:
            return ns
        day += _dt.timedelta(days=1)
    raise AssertionError("unreachable: a weekday falls within 8 days")
