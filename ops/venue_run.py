"""A run on real venues: which venue (``--venue``), live or paper (three gates), its instruments.

Why before anything starts: a live run must be exactly what the trader asked for, and an
instrument the venue does not trade as configured must stop the start (exit 2 naming it), not
surface as a rejected order later. ``gekko run`` (ops/cli.py) calls, in order:

1. ``pick_venue`` (``--venue <name or kind>``): the run trades on that venue only; a known kind
   with no ``[[venues]]`` entry gets one with the defaults.
2. ``live_gates`` (``--live``): live needs ``live = true`` for the venue, its keys
   (ops/venue_keys.py) and ``--live``; whatever is missing is named (exit 2). Without
   ``--live`` every venue trades paper.
3. ``resolve_run``: the venue's markets loaded once (ccxt ``load_markets``), every configured
   instrument of the venue checked against them, its ``symbols`` created from them; the result
   is a new ``Config`` whose ``resolved`` section holds the markets and the live venues.
4. ``check_keys`` (live): the key itself. A keystore entry of ``permissions = "read"`` is
   refused, and the venue is asked what the key may do (engine/venues/ccxt_permissions.py):
   one that can withdraw is refused unless its keystore entry says ``allow_withdraw``, one the
   venue says cannot trade is refused, and no answer is a refusal too (``KeyRefused``).

The supervisor hands that result to every worker as an overlay file (``write_overlay`` /
``read_overlay``, applied by ``ops.config.load_config``), so no worker loads markets again or
decides live on its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from engine.venues.ccxt_markets import MarketMismatch, VenueMarket, market_symbol
from engine.venues.ccxt_markets import resolve_instruments as resolve_for_venue
from engine.venues.registry import live_kinds, lookup, real_kinds
from ops.config import Config, ConfigError, StrategySection
from ops.tls import tls_reason
from ops.venue_config import REAL_VENUE_STRUCTS, RealVenueKeys, ResolvedVenues, instrument_names
from ops.venue_keys import KeyRules, credentials_source, load_credentials, load_key

__all__ = [
    "OVERLAY_ENV",
    "KeyRefused",
    "read_overlay",
    "live_gates",
    "pick_venue",
    "resolve_run",
    "write_overlay",
]

log = logging.getLogger("gekko.venues")

#: the environment variable that tells a worker where the run's overlay is
OVERLAY_ENV = "GEKKO_RUN_OVERLAY"
#: the sections a run on real venues may change (the overlay carries exactly these)
_SECTIONS = ("instruments", "venues", "strategies", "portfolio", "inference", "sim", "resolved")

Loader = Callable[[str, Mapping[str, Any], Any], dict[str, VenueMarket]]


def _error(cfg: Config, key: str, problem: str) -> ConfigError:
    return ConfigError(cfg.source_path or "<config>", key, problem)


def _rebuild(cfg: Config, **sections: Any) -> Config:
    """``cfg`` with ``sections`` replaced, validated again as a whole."""
    raw = msgspec.to_builtins(cfg)
    raw.update(msgspec.to_builtins(sections))
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _error(cfg, "", f"the run's configuration: {exc}") from None


# --- 1. --venue -----------------------------------------------------------------------------------
def pick_venue(cfg: Config, arg: str) -> tuple[Config, str]:
    """The config narrowed to venue ``arg`` (a ``[[venues]]`` name, or a kind) and its name."""
    entry: Any = next((v for v in cfg.venues if v.name == arg), None)
    if entry is None and arg in real_kinds():
        of_kind = [v for v in cfg.venues if v.kind == arg]
        if len(of_kind) > 1:
            names = ", ".join(v.name for v in of_kind)
            raise _error(cfg, "--venue", f"several venues are of kind {arg!r} ({names}): name one")
        if of_kind:
            entry = of_kind[0]
        elif arg == "ccxt":
            raise _error(
                cfg, "--venue", 'kind "ccxt" needs a [[venues]] entry with exchange = "<ccxt id>"'
            )
        else:
            entry = REAL_VENUE_STRUCTS[arg](name=arg)
    if entry is None and arg == "sim":
        return _rebuild(cfg, venues=[]), "sim"
    if entry is None:
        known = sorted({*(v.name for v in cfg.venues), *real_kinds(), "sim"})
        raise _error(cfg, "--venue", f"no venue {arg!r}; known: {', '.join(known)}")
    if not isinstance(entry, RealVenueKeys):
        return _rebuild(cfg, venues=[entry]), entry.name
    # the instruments stay as they are until resolve_run knows the venue's markets
    return msgspec.structs.replace(cfg, venues=[entry]), entry.name


# --- 2. the live gates ----------------------------------------------------------------------------
class KeyRefused(ConfigError):
    """A live key refused for what it may do (a security event: the CLI audits it)."""


Probe = Callable[[str, Mapping[str, Any], Any], Any]


def check_key(cfg: Config, v: RealVenueKeys, creds: Any, rules: KeyRules, probe: Probe) -> str:
    """Refuse (``KeyRefused``) a key live trading must not use; the venue's answer otherwise."""
    where = f"venues[{v.name}]"
    named = f"keystore entry {rules.name!r}" if rules.name else f"the key of {v.name}"
    if rules.permissions != "trade":
        raise KeyRefused(
            cfg.source_path or "<config>",
            where,
            f'{named} has permissions = "{rules.permissions}": live trading needs "trade"',
        )
    try:
        got = probe(_exchange(v), v.venue_settings(), creds)
    except Exception as exc:  # no answer: cannot tell, so refused (fail closed)
        raise KeyRefused(
            cfg.source_path or "<config>",
            where,
            f"cannot tell whether {named} can withdraw ({type(exc).__name__}: {tls_reason(exc)}): "
            "refused",
        ) from None
    if got.can_withdraw is None:
        problem = f"the venue did not say whether {named} can withdraw ({got.how}): refused"
    elif got.can_withdraw and not rules.allow_withdraw:
        problem = (
            f"the venue says {named} can withdraw ({got.how}): refused; use a key without "
            "withdrawal rights, or set allow_withdraw on its keystore entry (gekko keys add)"
        )
    elif got.can_trade is False:
        problem = f"the venue says {named} cannot trade ({got.how})"
    else:
        if got.can_withdraw:
            log.warning("%s can withdraw: allowed by its keystore entry (allow_withdraw)", named)
        return got.how
    raise KeyRefused(cfg.source_path or "<config>", where, problem)


def live_gates(cfg: Config, live: bool, rules: dict[str, KeyRules] | None = None) -> dict[str, Any]:
    """The keys of each venue trading live (``{}``: paper). With ``--live`` every real venue
    of the run must pass all three gates, else a ``ConfigError`` naming what is missing.
    ``rules``: filled with each key's rules, for ``check_keys``."""
    real = cfg.real_venues()
    if not live:
        return {}
    if not real:
        raise _error(cfg, "--live", "needs a real venue: --venue <binanceus|coinbase|kraken>")
    keys: dict[str, Any] = {}
    for v in real:
        where = f"venues[{v.name}]"
        if v.kind not in live_kinds():
            raise _error(cfg, where, f"kind {v.kind!r} is market data and paper only, never live")
        missing = []
        if not v.live:
            missing.append(f"live = true for venue {v.name!r} in {cfg.source_path or 'config'}")
        got = load_key(v, cfg.source_path, keystore=cfg.keystore)
        if got is None:
            missing.append(f"API keys in {credentials_source(v)}")
        if missing:
            raise _error(
                cfg,
                where,
                "live trading needs all three of live = true, API keys and --live; missing: "
                + "; ".join(missing),
            )
        assert got is not None
        keys[v.name] = got[0]
        if rules is not None:
            rules[v.name] = got[1]
    return keys


def check_keys(
    cfg: Config, keys: Mapping[str, Any], rules: Mapping[str, KeyRules], probe: Probe | None = None
) -> None:
    """``check_key`` for each live venue (after its markets loaded: a venue that cannot be
    reached says so first). ``probe``: how the venue is asked (tests pass their own)."""
    from engine.venues.ccxt_permissions import probe_key

    for v in cfg.real_venues():
        if v.name in keys:
            ask = probe or lookup(v.kind).probe or probe_key  # a kind may ask its own way
            check_key(cfg, v, keys[v.name], rules.get(v.name, KeyRules()), ask)


# --- 3. markets and instruments ---------------------------------------------------------------------
def resolve_run(
    cfg: Config,
    *,
    only: str = "",
    live: Mapping[str, Any] | None = None,
    loader: Loader | None = None,
) -> Config:
    """The run's configuration with every real venue's instruments checked and created (see
    the module docstring). ``only``: the venue of ``--venue`` (its instruments alone are
    traded). ``MarketMismatch`` and unreachable venues become ``ConfigError``s (exit 2)."""
    real = cfg.real_venues()
    if not real:
        return cfg
    live = live or {}
    markets: dict[str, dict[str, VenueMarket]] = {}
    configured = [i.to_instrument() for i in cfg.instruments]
    keep = [i for i in cfg.instruments if not only or i.venue == only]
    sections = {i.symbol: i for i in keep}  # the run's names (--venue: its venue's alone)
    added: list[Any] = []
    next_id = max(i.instrument_id for i in cfg.instruments) + 1
    names = instrument_names(real, {i.symbol: i.venue for i in keep})
    for v in real:
        settings = v.venue_settings()
        # keys, where present, also in paper: the account's fee tier is what paper charges
        creds = live.get(v.name) or load_credentials(v, cfg.source_path, keystore=cfg.keystore)
        try:
            load = loader or lookup(v.kind).markets
            if load is None:
                raise ValueError(f"kind {v.kind!r} lists no markets")
            got = load(_exchange(v), settings, creds)
        except Exception as exc:  # a venue that cannot be reached cannot be traded: say which
            why = tls_reason(exc)  # ccxt's own text names the URL only, not a refused certificate
            raise _error(cfg, f"venues[{v.name}]", f"markets not loaded: {why}") from None
        mine = [i for i in configured if i.venue == v.name]
        try:
            rules = resolve_for_venue(v.name, mine, v.symbols, got, next_id, names[v.name])
        except MarketMismatch as exc:
            raise _error(cfg, f"instruments[{exc.symbol}]", str(exc)) from None
        used = {market_symbol(r.instrument.symbol) for r in rules}
        markets[v.name] = {s: m for s, m in got.items() if s in used}
        for r in rules[len(mine) :]:
            ins = r.instrument
            if ins.symbol in sections:
                raise _error(
                    cfg, f"venues[{v.name}].symbols", f"{ins.symbol!r} is an instrument elsewhere"
                )
            # a price the kind can have (a binary contract's is a probability in (0, 1), a
            # betting selection's decimal odds from 1.01)
            first_px = 0.5 if ins.kind == "binary" else 2.0 if ins.kind == "betting" else 1.0
            added.append(
                msgspec.structs.asdict(ins) | {"initial_price": first_px, "annual_vol": 0.0}
            )
            next_id = max(next_id, ins.instrument_id + 1)
    instruments = [msgspec.to_builtins(i) for i in keep] + added
    if not instruments:
        raise _error(cfg, "instruments", f"venue {only!r} has no instruments: list its symbols")
    resolved = ResolvedVenues(live=sorted(live), markets=markets)
    cfg = _unsuffixed(cfg, instruments)
    changes: dict[str, Any] = {"instruments": instruments, "resolved": resolved}
    if only:
        first = instruments[0]["symbol"]
        # paper only: a live run trades real money with the trader's own strategies alone
        default = None if live else default_strategy(first, markets.get(only, {}).get(first))
        changes |= _narrowed(cfg, {i["symbol"] for i in instruments}, default)
        v = next(v for v in real if v.name == only)
        cash = account_cash(v, dict(cfg.portfolio.cash), instruments, v.name in live)
        changes["portfolio"] = msgspec.structs.replace(changes["portfolio"], cash=cash)
    return _rebuild(cfg, **changes)


#: USD stablecoins a margin account may hold its cash in (1 USD each)
_USD_COINS = ("USDT", "USDC")


def account_cash(
    v: RealVenueKeys, cash: dict[str, float], instruments: list[dict[str, Any]], live: bool
) -> dict[str, float]:
    """The portfolio's cash for a run on ``v`` alone, in the currency of its account: a margin
    account margins each instrument in the instrument's currency, so cash held in another is
    no margin (a USDT perpetual on an account with USD only is liquidated at once). Paper with
    a ``paper_balance``: that balance (the simulated account's). Else a margin account whose
    instruments all settle in one USD stablecoin the cash does not name books the USD amount
    in it (USDT, 1 USD each), not in both: the portfolio and the venue's account hold the same
    money. Anything else: ``cash`` as configured."""
    if v.account != "margin":
        return cash
    own = dict(getattr(v, "paper_balance", {}) or {})
    if own and not live:
        return {k: float(x) for k, x in own.items()}
    ccys = {str(i.get("currency") or "USD") for i in instruments}
    if len(ccys) != 1:
        return cash
    ccy = ccys.pop()
    if ccy in _USD_COINS and ccy not in cash and "USD" in cash:
        out = {k: x for k, x in cash.items() if k != "USD"}
        out[ccy] = cash["USD"]
        return out
    return cash


#: what a ``--venue`` run that no strategy trades runs (see ``default_strategy``)
DEFAULT_STRATEGY = "engine.strategies.momentum:MomentumTaker"
DEFAULT_NAME = "default"
#: ... on a betting venue (``default_strategy``)
DEFAULT_BET_STRATEGY = "engine.strategies.green_up:GreenUp"
#: its size per trade, in the quote currency: at least this, and twice the venue's minimum
DEFAULT_NOTIONAL = 100.0


def default_strategy(symbol: str, market: VenueMarket | None) -> dict[str, Any]:
    """The strategy a ``--venue`` run gets when no ``[[strategies]]`` names the venue's
    instruments (a trader runs ``gekko run --venue binanceus`` to see it trade paper): the
    momentum taker on the venue's first symbol, long only (a spot account cannot sell what it
    does not hold), paper only, each trade ``DEFAULT_NOTIONAL`` or twice the venue's minimum
    notional in the quote currency, in whole lots at the first mid (it passes the venue's
    rules and stays far inside ``[risk] max_position_notional``)."""
    if market is not None and market.instrument.get("kind") == "betting":
        return _default_bet(symbol, market)
    floor = float(market.min_notional) if market is not None else 0.0
    notional = max(DEFAULT_NOTIONAL, 2 * floor)
    params = {"fast": 10, "slow": 40, "notional": notional, "long_only": True}
    return {
        "path": DEFAULT_STRATEGY,
        "name": DEFAULT_NAME,
        "instruments": [symbol],
        "params": params,
    }


def _default_bet(symbol: str, market: VenueMarket) -> dict[str, Any]:
    """A betting selection's default: ``engine.strategies.green_up:GreenUp`` (a momentum
    taker's BUY would back at the lay odds: docs/betfair.md), backing twice the venue's
    minimum stake (at least 10 in its currency) and cashing out on the next quote."""
    stake = max(10.0, 2 * float(market.min_qty))
    lots = round(stake / float(market.lot))
    params = {"stake": lots, "cash_out_at": 0.0}
    return {
        "path": DEFAULT_BET_STRATEGY,
        "name": DEFAULT_NAME,
        "instruments": [symbol],
        "params": params,
    }


def _exchange(v: RealVenueKeys) -> str:
    return v.exchange if v.kind == "ccxt" else v.kind


def _unsuffixed(cfg: Config, instruments: list[dict[str, Any]]) -> Config:
    """``cfg`` whose strategies, inference and benchmark name "<symbol>@<venue>" as the run
    names the instrument: the plain symbol where no other venue lists it (``instrument_names``;
    config.toml may use either name)."""
    names = {i["symbol"] for i in instruments}
    alias = {
        f"{i['symbol']}@{i['venue']}": i["symbol"] for i in instruments if "@" not in i["symbol"]
    }

    def rename(xs: list[str]) -> list[str]:
        return [x if x in names else alias.get(x, x) for x in xs]

    strategies = [
        msgspec.structs.replace(s, instruments=rename(s.instruments)) for s in cfg.strategies
    ]
    inf = msgspec.structs.replace(
        cfg.inference,
        instruments=rename(cfg.inference.instruments),
        micro_instruments=rename(cfg.inference.micro_instruments),
    )
    pf = msgspec.structs.replace(cfg.portfolio, benchmark=rename([cfg.portfolio.benchmark])[0])
    return msgspec.structs.replace(cfg, strategies=strategies, inference=inf, portfolio=pf)


def _narrowed(
    cfg: Config, symbols: set[str], default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Sections that name instruments, narrowed to ``symbols`` (a strategy left with none of
    its instruments does not run: logged; none left: ``default`` runs, said at warning level)."""
    strategies = []
    for k, s in enumerate(cfg.strategies):
        names = [x for x in s.instruments if x in symbols]
        if s.instruments and not names:
            log.warning("strategy %s (%s) trades none of this venue's instruments", k + 1, s.path)
            continue
        strategies.append(msgspec.structs.replace(s, instruments=names, id=s.id or k + 1))
    if not strategies and default is not None:
        strategies.append(msgspec.convert(default | {"id": 1}, StrategySection))
        log.warning(
            "no strategy trades this venue's instruments (%s): the default strategy trades "
            "%s (%s); add a [[strategies]] table naming the venue's symbols to run your own",
            ", ".join(sorted(symbols)),
            default["instruments"][0],
            default["path"],
        )
    elif cfg.strategies and not strategies:
        log.warning(
            "no strategy trades this venue's instruments (%s): the run only watches the "
            'market; add a [[strategies]] table with instruments = ["%s"] to trade',
            ", ".join(sorted(symbols)),
            min(symbols),
        )
    pf = cfg.portfolio
    bench = pf.benchmark if pf.benchmark in symbols else ""
    inf = cfg.inference
    return {
        "strategies": strategies,
        "portfolio": msgspec.structs.replace(pf, benchmark=bench),
        "inference": msgspec.structs.replace(
            inf,
            instruments=[x for x in inf.instruments if x in symbols],
            # none left: kept, so the micro model is refused naming them (not widened to all)
            micro_instruments=[x for x in inf.micro_instruments if x in symbols]
            or inf.micro_instruments,
        ),
        "sim": msgspec.structs.replace(
            cfg.sim, halts=[h for h in cfg.sim.halts if h.instrument in symbols | {"*"}]
        ),
    }


# --- the overlay: the run's decisions, handed to every worker -------------------------------------
def write_overlay(cfg: Config, path: Path) -> Path | None:
    """Write the sections a run on real venues changed (None, nothing written: a run without
    one). The file is the supervisor's, private to its user (var/ is 0700)."""
    if not cfg.real_venues():
        return None
    data = {k: msgspec.to_builtins(getattr(cfg, k)) for k in _SECTIONS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return path


def read_overlay(path: str | Path | None) -> dict[str, Any] | None:
    """A run's overlay (``ops.config.load_config(..., overlay=)`` applies it; None: none)."""
    if not path:
        return None
    data = json.loads(Path(path).read_text())
    return {k: v for k, v in data.items() if k in _SECTIONS}
