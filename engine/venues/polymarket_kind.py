"""The ``polymarket`` venue kind: Polymarket's CLOB (binary outcome tokens; docs/polymarket.md).

Market data always comes from the venue's market channel (``polymarket_data``). Execution is
paper unless the run decided live (``settings["live"]``: ops/venue_run.py's three gates): paper
is the simulated exchange matching our orders against the venue's real book, settled when the
venue resolves a market (``polymarket_paper``); live is
``polymarket_exec.PolymarketExecutionClient`` (orders signed with the wallet's key). Both sit
behind ``OrderRulesGate``: the market's minimum size and status refuse an order before it
leaves, the same in paper and live. Credentials: ``api_secret`` is the wallet's private key.
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

__all__ = ["venue_markets", "venue_rules"]


def venue_markets(c: VenueConfig) -> dict[str, VenueMarket]:
    """The venue's markets as the pre-flight loaded them (or loaded now, once)."""
    raw: Mapping[str, Any] | None = c.settings.get("markets")
    if not raw:
        from engine.venues.polymarket_rest import load_markets

        return load_markets(c.settings)
    return {
        s: m if isinstance(m, VenueMarket) else msgspec.convert(m, VenueMarket)
        for s, m in raw.items()
    }


def venue_rules(c: VenueConfig, markets: dict[str, VenueMarket]) -> list[MarketRules]:
    from engine.venues.ccxt_markets import resolve_instruments

    mine = [i for i in c.instruments if i.venue == c.name]
    return resolve_instruments(c.name, mine, (), markets, 0)


def _execution(c: VenueConfig) -> ExecutionClient:
    markets = venue_markets(c)
    rules = venue_rules(c, markets)
    s = c.settings
    if not s.get("live"):
        from engine.venues.sim import SimExchange

        paper = SimExchange(
            InstrumentTable([r.instrument for r in rules]),
            name=c.name,
            maker_fee_bps=max((r.maker_fee_bps for r in rules), default=0.0),
            taker_fee_bps=max((r.taker_fee_bps for r in rules), default=0.0),
            latency_ns=int(s.get("latency_ns", 0)),
            jitter_ns=int(s.get("jitter_ns", 0)),
            seed=c.seed,
            record_path=c.record_path,
        )
        from engine.venues.polymarket_paper import ResolvingPaper

        return OrderRulesGate(ResolvingPaper(paper), rules)  # type: ignore[return-value]
    if c.credentials is None:
        raise ValueError(f"venue {c.name!r}: live trading needs the wallet key (api_secret)")
    from engine.venues.polymarket_exec import PolymarketExecutionClient

    table = venue_view(r.instrument for r in rules)
    client = PolymarketExecutionClient(
        c.name, table, markets, s, c.credentials, journal=c.record_path
    )
    return OrderRulesGate(client, rules)  # type: ignore[return-value]


def _market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.polymarket_data import PolymarketDataClient

    table = venue_view(i for i in c.instruments if i.venue == c.name)
    return PolymarketDataClient(c.name, table, dict(c.settings) | {"markets": venue_markets(c)})


def _load_markets(_kind: str, settings: Mapping[str, Any], _creds: Any) -> dict[str, Any]:
    from engine.venues.polymarket_rest import load_markets

    return load_markets(settings)  # type: ignore[return-value]


def _probe(_kind: str, settings: Mapping[str, Any], creds: Any) -> Any:
    """What the key may do: the venue must know it (its API key derives), and a wallet's
    private key controls the wallet's funds, so it can always withdraw (a live run needs
    ``allow_withdraw`` on its keystore entry: docs/polymarket.md)."""
    import asyncio

    from engine.venues.ccxt_permissions import KeyAbilities
    from engine.venues.polymarket_rest import ClobRest

    async def derive() -> str:
        rest = ClobRest(
            str(settings.get("rest_url") or ""), int(settings.get("timeout_ms", 10_000))
        )
        try:
            chain = int(settings.get("chain_id", 137))
            await rest.derive_creds(str(getattr(creds, "secret", "") or ""), chain)
            return rest.address
        finally:
            await rest.close()

    address = asyncio.run(derive())
    how = f"polymarket: the API key of wallet {address} derives; the wallet key holds its funds"
    return KeyAbilities(can_withdraw=True, can_trade=True, how=how)


register(
    VenueKind(
        "polymarket",
        _execution,
        _market_data,
        "Polymarket's CLOB (binary outcome tokens): paper on its live book, or live",
        real=True,
        live=True,
        markets=_load_markets,
        probe=_probe,
    )
)
