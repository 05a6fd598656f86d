"""The account of each venue (``account``, ``position_mode``, ``leverage``) and the checks that
refuse, at load, what the engine cannot model.

Why at load: a perpetual booked on a cash account, a bet on a margin account or hedged
positions on a venue that nets would each run, and give numbers that mean nothing — margin
never posted, a liability never counted, two positions the venue itself would have netted. The
issue's rule is to refuse rather than approximate: exit 2, naming the key (docs/configuration.md,
"Accounts"). The models themselves: docs/instruments-and-accounts.md.

Every venue has the three keys: the simulated ones (``[sim]``, ``[[venues]] kind = "sim"``) can
be any account; a real venue only what the exchange offers (``VENUE_ACCOUNTS``), and leaving
``account`` out gives its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from engine.accounts import AccountKind, PositionMode
from engine.enums import InstrumentKind
from engine.settings import SettingError, need

ACCOUNT_KINDS = AccountKind.ALL  # "cash", "margin", "betting"
POSITION_MODES = PositionMode.ALL  # "netting", "hedging"

#: what a venue's account is: the accounts it offers (the first: its default), and whether it
#: keeps a long and a short of one instrument apart (hedging: the simulated exchange does; a real
#: venue says True here once its adapter implements it)
VENUE_ACCOUNTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "binanceus": (("cash",), False),
    "coinbase": (("cash",), False),
    "kraken": (("cash",), False),
    "ccxt": (("cash",), False),
    "oanda": (("margin",), False),  # v20 accounts net by default (FIFO); hedging ones: not here
    "polymarket": (("cash",), False),  # outcome tokens are paid in full
    "betfair": (("betting",), False),
    "binanceusdm": (("margin",), False),  # its hedge mode: not our client's (perp_kinds)
    "krakenfutures": (("margin",), False),  # one net position per contract
    # the simulated exchange: any account, netting or hedging (engine/venues/sim.py)
    "sim": (ACCOUNT_KINDS, True),
}

#: the kinds a margin account may hold with margin (``initial_margin`` > 0)
_MARGINABLE = (
    InstrumentKind.PERPETUAL,
    InstrumentKind.FUTURE,
    InstrumentKind.FX,
    InstrumentKind.SPOT,
)


class _AbsError(SettingError):
    """A cross-section check: its key is the full path in config.toml."""

    relative = False


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise _AbsError(key, problem)


class AccountKeys(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``account`` / ``position_mode`` / ``leverage`` of one venue (a base of the sim and real
    venue structs). ``account = ""``: the venue's own (a simulated venue's: cash)."""

    account: str = ""  # "cash" | "margin" | "betting"
    position_mode: str = "netting"  # "netting" | "hedging" (a position per instrument and side)
    leverage: float = 0.0  # a margin account's maximum (initial margin >= notional / leverage);
    # 0 = each instrument's own (1 / initial_margin); a cash or betting account: 0 or 1

    def check_account(self, venue_kind: str) -> None:
        """The keys on their own (relative keys); ``account = ""`` becomes the venue's own."""
        offered, hedges = VENUE_ACCOUNTS.get(venue_kind, (ACCOUNT_KINDS, False))
        if not self.account:
            self.account = offered[0]
        need(
            self.account in ACCOUNT_KINDS,
            "account",
            f"must be one of {', '.join(ACCOUNT_KINDS)}, not {self.account!r}",
        )
        need(
            self.account in offered,
            "account",
            f"a {venue_kind} venue's account is {' or '.join(offered)}, not {self.account!r}",
        )
        need(
            self.position_mode in POSITION_MODES,
            "position_mode",
            f"must be one of {', '.join(POSITION_MODES)}, not {self.position_mode!r}",
        )
        need(
            self.position_mode == "netting" or hedges,
            "position_mode",
            f"a {venue_kind} venue nets positions: hedging cannot be modelled there, its "
            "adapter does not implement hedging (only the simulated exchange does)",
        )
        need(
            self.position_mode == "netting" or self.account == "margin",
            "position_mode",
            f"hedging needs a margin account (a {self.account} account nets)",
        )
        v = self.leverage
        need(math.isfinite(v) and v >= 0, "leverage", "must be >= 0 (0 = the instruments' own)")
        need(
            self.account == "margin" or v in (0.0, 1.0),
            "leverage",
            f"a {self.account} account has no leverage (0 or 1), not {v:g}",
        )
        need(v == 0 or v >= 1, "leverage", "must be >= 1 (0 = the instruments' own)")

    def account_settings(self) -> dict[str, Any]:
        """What ``VenueConfig.settings`` carries of the account."""
        return {
            "account": self.account or "cash",
            "position_mode": self.position_mode,
            "leverage": self.leverage,
        }


def venues_of_instruments(cfg: Any) -> Iterable[tuple[int, Any, str, Any]]:
    """(instrument index, instrument, the venue's key in config.toml, the venue) for every venue
    an instrument trades on: a real venue's own instruments on it; the others on every simulated
    venue (``[sim]`` when there is no ``[[venues]]``)."""
    venues = list(getattr(cfg, "venues", []) or [])
    real = {v.name: (k, v) for k, v in enumerate(venues) if getattr(v, "kind", "sim") != "sim"}
    sims = [(f"venues[{k}]", v) for k, v in enumerate(venues) if getattr(v, "kind", "sim") == "sim"]
    if not venues:
        sims = [("sim", cfg.sim)]
    for n, ins in enumerate(cfg.instruments):
        if ins.venue in real:
            k, v = real[ins.venue]
            yield n, ins, f"venues[{k}]", v
        else:
            for key, v in sims:
                yield n, ins, key, v


def check_accounts(cfg: Any) -> None:
    """Every instrument against the account of each venue it trades on (absolute keys)."""
    for n, ins, vkey, v in venues_of_instruments(cfg):
        _check_pair(n, ins, vkey, v)


def _check_pair(n: int, ins: Any, vkey: str, v: Any) -> None:
    kind, acct, sym = ins.kind, v.account or "cash", ins.symbol
    ikey = f"instruments[{n}]"
    what = f'{ikey} "{sym}" ({kind})'
    if kind == InstrumentKind.BETTING or acct == "betting":
        _need(
            kind == InstrumentKind.BETTING and acct == "betting",
            f"{vkey}.account",
            f'{what} on a {acct} account: betting selections need account = "betting", '
            "and a betting account holds only them",
        )
        return
    if kind in (InstrumentKind.PERPETUAL, InstrumentKind.FUTURE):
        _need(
            ins.initial_margin > 0,
            f"{ikey}.initial_margin",
            f'a {kind} posts margin: give its initial_margin (> 0) ("{sym}")',
        )
    if ins.is_margined:
        _need(
            kind in _MARGINABLE,
            f"{ikey}.initial_margin",
            f'a {kind} contract is paid in full: no margin ("{sym}")',
        )
        _need(
            acct == "margin",
            f"{vkey}.account",
            f'{what} is margined (initial_margin {ins.initial_margin:g}): it needs account = "margin"',
        )
        lev = getattr(v, "leverage", 0.0)
        cap = 1.0 / ins.initial_margin
        _need(
            not lev or lev <= cap * (1 + 1e-9),
            f"{vkey}.leverage",
            f"{lev:g} is more than {what} allows (1 / initial_margin = {cap:g})",
        )
    if getattr(v, "position_mode", "netting") == "hedging":
        _need(
            ins.is_margined,
            f"{vkey}.position_mode",
            f"hedging keeps a long and a short apart on margin: {what} is paid in full",
        )


def check_kind_prices(n: int, ins: Any) -> None:
    """A synthetic market's start price must be one the kind can quote (absolute keys)."""
    key, sym = f"instruments[{n}]", ins.symbol
    if ins.kind == InstrumentKind.BINARY:
        _need(
            0 < ins.initial_price < 1,
            f"{key}.initial_price",
            f'a binary contract prices a probability in (0, 1), not {ins.initial_price:g} ("{sym}")',
        )
        per = 1.0 / ins.tick_size
        _need(
            abs(per - round(per)) < 1e-6,
            f"{key}.tick_size",
            f'a binary contract pays 1: its tick must divide 1 (0.01, 0.001), not {ins.tick_size:g} ("{sym}")',
        )
    if ins.kind in (InstrumentKind.BINARY, InstrumentKind.BETTING):
        _need(
            not ins.resolution or ins.resolves_ns > 0,
            f"{key}.resolves",
            f'resolution = "{ins.resolution}" needs the time it resolves (resolves = "<ISO-8601>") ("{sym}")',
        )
    if ins.kind == InstrumentKind.BETTING:
        step = 0.01 / ins.tick_size
        _need(
            abs(step - round(step)) < 1e-9 and round(step) >= 1,
            f"{key}.tick_size",
            f'betting odds are quoted in 0.01 steps: the tick must divide 0.01 ("{sym}")',
        )
        _need(
            ins.px_in_range(ins.px_to_ticks(ins.initial_price)),
            f"{key}.initial_price",
            f'decimal odds run from 1.01 to 1000, not {ins.initial_price:g} ("{sym}")',
        )


def iso_ns(text: str) -> int:
    """An ISO-8601 date or date-time (UTC unless it names its offset) -> ns since the epoch;
    ValueError when it is not one."""
    t = text.strip()
    dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
