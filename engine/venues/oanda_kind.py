"""The ``oanda`` venue kind: FX on OANDA v20, paper on its prices by default, or live.

One ``register`` call (``engine.venues.registry``). Market data is always OANDA's pricing
stream (``engine.venues.oanda_data``), which needs the account's keys: the kind says so
(``private_data``), and the feed gets them. Execution is paper unless the run decided live
(all three gates: ops/venue_run.py): paper is the simulated exchange matching our orders against
OANDA's quotes; live is ``engine.venues.oanda_exec.OandaExecutionClient``. Both sit behind
``OrderRulesGate`` (the minimum and maximum units OANDA lists). Keys: ``api_key`` = the
personal access token, ``account_id`` (or ``api_secret``) = the v20 account id (docs/oanda.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.instruments import InstrumentTable
from engine.venues.base import ExecutionClient
from engine.venues.ccxt_markets import OrderRulesGate, VenueMarket, resolve_instruments, venue_view
from engine.venues.data import MarketDataClient
from engine.venues.registry import VenueConfig, VenueKind, register

__all__ = ["load_markets", "probe_key"]


def load_markets(
    kind: str, settings: Mapping[str, Any], credentials: Any, timeout_s: float = 30.0
) -> dict[str, VenueMarket]:
    """The account's instruments by engine symbol ("EUR/USD"); blocking: start-up only. v20
    lists them only to an account, so keys are needed even for paper."""
    if credentials is None:
        raise ValueError(
            "OANDA lists its instruments only to an account: give its token and account id "
            "(docs/oanda.md), also for paper"
        )
    return asyncio.run(asyncio.wait_for(_load(settings, credentials), timeout_s))


async def _load(settings: Mapping[str, Any], credentials: Any) -> dict[str, VenueMarket]:
    from engine.venues.oanda_data import v20_client
    from engine.venues.oanda_wire import market_of

    client = v20_client(settings, credentials)
    try:
        return {m.symbol: m for m in (market_of(i) for i in await client.instruments())}
    finally:
        await client.close()


def probe_key(kind: str, settings: Mapping[str, Any], credentials: Any) -> Any:
    """What an OANDA token may do (the live start's key check): v20 has no endpoint that moves
    money off the account, so no token can withdraw; one that reads the account's summary
    reaches the account it trades. A failure raises: the start is refused (fail closed)."""
    from engine.venues.ccxt_permissions import KeyAbilities

    async def ask() -> None:
        from engine.venues.oanda_data import v20_client

        client = v20_client(settings, credentials)
        try:
            await client.summary()
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(ask(), 30.0))
    how = "v20 has no withdrawal endpoint; GET /v3/accounts/{id}/summary answered"
    return KeyAbilities(False, True, how)


def _markets(c: VenueConfig) -> dict[str, VenueMarket]:
    raw: Mapping[str, Any] | None = c.settings.get("markets")
    if not raw:
        return load_markets(c.kind, c.settings, c.credentials)
    return {
        s: m if isinstance(m, VenueMarket) else msgspec.convert(m, VenueMarket)
        for s, m in raw.items()
    }


def _execution(c: VenueConfig) -> ExecutionClient:
    mine = [i for i in c.instruments if i.venue == c.name]
    rules = resolve_instruments(c.name, mine, (), _markets(c), 0)
    table = InstrumentTable([r.instrument for r in rules])
    s = c.settings
    if not s.get("live"):
        from engine.venues.sim import SimExchange

        sim = SimExchange(
            table,
            name=c.name,
            latency_ns=int(s.get("latency_ns", 0)),
            jitter_ns=int(s.get("jitter_ns", 0)),
            seed=c.seed,
            record_path=c.record_path,
            # the paper account: the portfolio's cash, OANDA's leverage cap, netting (v20's FIFO)
            balance=s.get("balance"),
            leverage=float(s.get("leverage") or 0.0),
        )
        return OrderRulesGate(sim, rules)  # type: ignore[return-value]
    if c.credentials is None:
        raise ValueError(f"venue {c.name!r}: live trading needs OANDA's token and account id")
    from engine.venues.oanda_exec import OandaExecutionClient

    client = OandaExecutionClient(c.name, venue_view(table), s, c.credentials)
    return OrderRulesGate(client, rules)  # type: ignore[return-value]


def _market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.oanda_data import OandaDataClient

    table = venue_view(i for i in c.instruments if i.venue == c.name)
    return OandaDataClient(c.name, table, c.settings, c.credentials)


register(
    VenueKind(
        "oanda",
        _execution,
        _market_data,
        "OANDA v20 (FX): paper on its pricing stream, or live",
        real=True,
        live=True,
        markets=load_markets,
        private_data=True,
        probe=probe_key,
    )
)
