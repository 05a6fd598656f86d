"""The ``betfair`` venue kind: the Betfair Exchange (back / lay on selections; docs/betfair.md).

Market data is always the venue's own stream (``betfair_data``). Execution is paper unless the
run decided live (``settings["live"]``: all three gates, ops/venue_run.py): paper is the
simulated exchange matching our bets on the venue's ladders (``betfair_paper``), live is
``betfair_exec``. Both sit behind ``OrderRulesGate`` (the venue's minimum stake). The markets
come from listMarketCatalogue: those of ``market_ids`` and of the ``symbols`` listed
("<marketId>/<selectionId>"), or the first ``catalogue_max`` the venue lists when neither names
one. Betfair answers nothing, not even its catalogue, without an app key and a session: even
a paper run needs credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine.instruments import InstrumentTable
from engine.venues.base import ExecutionClient
from engine.venues.ccxt_markets import MarketRules, OrderRulesGate, VenueMarket, venue_view
from engine.venues.data import MarketDataClient
from engine.venues.registry import VenueConfig, VenueKind, register

__all__ = ["load_markets", "probe_key", "venue_rules"]

#: what listMarketCatalogue is asked to project
_PROJECTION = ["RUNNER_DESCRIPTION", "MARKET_DESCRIPTION", "EVENT"]


def load_markets(exchange: str, settings: Mapping[str, Any], creds: Any) -> dict[str, Any]:
    """The venue's selections as ``VenueMarket``s (one per selection)."""
    from engine.venues.betfair_session import BetfairApi
    from engine.venues.betfair_wire import markets_from_catalogue, split_symbol

    if creds is None:
        raise ValueError(
            "betfair lists nothing without an app key and a session: set the venue's "
            "credentials (credentials_file, keystore_entry or GEKKO_<NAME>_API_KEY / _API_SECRET)"
        )
    api = BetfairApi(creds, settings)
    api.ensure_session()
    ids = list(settings.get("market_ids") or [])
    ids += [split_symbol(s)[0] for s in settings.get("symbols") or []]
    filt = {"marketIds": sorted(set(ids))} if ids else {}
    cat = api.betting.list_market_catalogue(
        filter=filt,
        market_projection=_PROJECTION,
        max_results=int(settings.get("catalogue_max", 100)),
    )
    return markets_from_catalogue(
        cat, str(settings.get("currency", "GBP")), str(settings.get("min_stake", "1.00"))
    )


def _markets(c: VenueConfig) -> dict[str, VenueMarket]:
    raw: Mapping[str, Any] | None = c.settings.get("markets")
    if not raw:
        return load_markets(c.kind, c.settings, c.credentials)  # type: ignore[return-value]
    return {
        s: m if isinstance(m, VenueMarket) else msgspec.convert(m, VenueMarket)
        for s, m in raw.items()
    }


def venue_rules(c: VenueConfig) -> list[MarketRules]:
    """This venue's instruments with their rules (``MarketMismatch`` where they disagree)."""
    from engine.venues.ccxt_markets import resolve_instruments

    mine = [i for i in c.instruments if i.venue == c.name]
    return resolve_instruments(c.name, mine, (), _markets(c), 0)


def _paper(c: VenueConfig, rules: list[MarketRules]) -> Any:
    from engine.venues.betfair_paper import BetfairPaper
    from engine.venues.sim import SimExchange
    from engine.venues.sim_odds import OddsVenue, odds_pivots

    s = c.settings
    table = InstrumentTable([r.instrument for r in rules])
    sim = SimExchange(
        table,
        name=c.name,
        latency_ns=int(s.get("latency_ns", 0)),
        jitter_ns=int(s.get("jitter_ns", 0)),
        seed=c.seed,
        record_path=c.record_path,
        commission_pct=float(s.get("commission_pct", 5.0)),
    )
    return BetfairPaper(OddsVenue(sim, odds_pivots(table)), sim)


def _execution(c: VenueConfig) -> ExecutionClient:
    rules = venue_rules(c)
    if not c.settings.get("live"):
        return OrderRulesGate(_paper(c, rules), rules)  # type: ignore[return-value]
    if c.credentials is None:
        raise ValueError(f"venue {c.name!r}: live trading needs Betfair credentials")
    from engine.venues.betfair_exec import BetfairExecutionClient

    insts = venue_view(r.instrument for r in rules)
    client = BetfairExecutionClient(c.name, insts, c.settings, c.credentials)
    return OrderRulesGate(client, rules)  # type: ignore[return-value]


def _market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.betfair_data import BetfairDataClient

    rules = venue_rules(c)
    table = venue_view(r.instrument for r in rules)
    return BetfairDataClient(c.name, table, rules, c.settings, c.credentials)  # type: ignore[return-value]


def probe_key(_kind: str, settings: Mapping[str, Any], creds: Any) -> Any:
    """What the key may do: it logs in and reads the account's funds (it can bet); Betfair's
    API (API-NG) has no withdrawal operation, so no app key or session can withdraw."""
    from engine.venues.betfair_session import BetfairApi
    from engine.venues.ccxt_permissions import KeyAbilities

    api = BetfairApi(creds, settings)
    api.ensure_session()
    api.account.get_account_funds()
    how = "betfair: the session reads the account's funds; API-NG has no withdrawal operation"
    return KeyAbilities(can_withdraw=False, can_trade=True, how=how)


register(
    VenueKind(
        "betfair",
        _execution,
        _market_data,
        "the Betfair Exchange: back / lay on its live ladders, paper or live",
        real=True,
        live=True,
        markets=load_markets,
        private_data=True,  # its market data needs the account's session, paper too
        probe=probe_key,
    )
)
