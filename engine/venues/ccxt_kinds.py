"""The real venue kinds: ``binanceus``, ``coinbase`` (Advanced Trade), ``kraken`` and ``ccxt``.

Each is one ``register`` call (``engine.venues.registry``). Market data always comes from the
venue (``engine.venues.ccxt_data.CcxtDataClient``). Execution is paper unless the run decided
live (``settings["live"]``, set only when all three gates passed: ops/venue_run.py): paper is the
simulated exchange (``engine.venues.sim.SimExchange``) matching our orders against the venue's
real book, with the venue's fees and latency ``paper_latency_us``; live is
``engine.venues.ccxt_exec.CcxtExecutionClient``. Both sit behind ``OrderRulesGate``, so an order
the venue would refuse is refused before it leaves, the same way in paper and live. The generic
``ccxt`` kind (``exchange = "<ccxt id>"``) is market data and paper only.

``settings["markets"]`` carries the venue's markets as the pre-flight loaded them (symbol →
``VenueMarket`` fields); a client built without them (a test, a worker started by hand) loads
them itself, once, at start.
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

__all__ = ["EXCHANGE_IDS", "LIVE_KINDS", "REAL_KINDS", "exchange_id", "venue_rules"]

#: kind -> ccxt exchange id (the generic kind names its own: ``exchange``)
EXCHANGE_IDS = {"binanceus": "binanceus", "coinbase": "coinbase", "kraken": "kraken"}
LIVE_KINDS = tuple(EXCHANGE_IDS)
REAL_KINDS = (*LIVE_KINDS, "ccxt")


def exchange_id(c: VenueConfig) -> str:
    """The ccxt exchange id of a real venue."""
    if c.kind == "ccxt":
        ex = str(c.settings.get("exchange") or "")
        if not ex:
            raise ValueError(f"venue {c.name!r} (kind 'ccxt') needs exchange = \"<ccxt id>\"")
        return ex
    return EXCHANGE_IDS[c.kind]


def _markets(c: VenueConfig) -> dict[str, VenueMarket]:
    raw: Mapping[str, Any] | None = c.settings.get("markets")
    if not raw:
        from engine.venues.ccxt_markets import load_markets

        return load_markets(exchange_id(c), c.settings, c.credentials)
    return {
        sym: m if isinstance(m, VenueMarket) else msgspec.convert(m, VenueMarket)
        for sym, m in raw.items()
    }


def venue_rules(c: VenueConfig) -> list[MarketRules]:
    """The rules of this venue's instruments (those of ``c.instruments`` whose ``venue`` is
    its name), each checked against its market (``MarketMismatch`` when they disagree)."""
    from engine.venues.ccxt_markets import resolve_instruments

    mine = [i for i in c.instruments if i.venue == c.name]
    return resolve_instruments(c.name, mine, (), _markets(c), 0)


def _paper(c: VenueConfig, rules: list[MarketRules]) -> Any:
    from engine.venues.sim import SimExchange

    s = c.settings
    # one fee per side for the simulated venue: the highest the venue charges on these
    # instruments (fees differ per market on some venues; erring high never flatters a result)
    maker = max((r.maker_fee_bps for r in rules), default=0.0)
    taker = max((r.taker_fee_bps for r in rules), default=0.0)
    return SimExchange(
        InstrumentTable([r.instrument for r in rules]),
        name=c.name,
        maker_fee_bps=maker,
        taker_fee_bps=taker,
        latency_ns=int(s.get("latency_ns", 0)),
        jitter_ns=int(s.get("jitter_ns", 0)),
        seed=c.seed,
        record_path=c.record_path,
    )


def _execution(c: VenueConfig) -> ExecutionClient:
    rules = venue_rules(c)
    if not c.settings.get("live"):
        return OrderRulesGate(_paper(c, rules), rules)  # type: ignore[return-value]
    if c.kind not in LIVE_KINDS:
        raise ValueError(f"venue {c.name!r}: kind {c.kind!r} is market data and paper only")
    if c.credentials is None:
        raise ValueError(f"venue {c.name!r}: live trading needs API keys")
    from engine.venues.ccxt_exec import CcxtExecutionClient

    table = venue_view(r.instrument for r in rules)  # the venue's symbols ("BTC/USDT@x": its own)
    client = CcxtExecutionClient(exchange_id(c), c.name, table, c.settings, c.credentials)
    return OrderRulesGate(client, rules)  # type: ignore[return-value]


def _market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.ccxt_data import CcxtDataClient

    table = venue_view(i for i in c.instruments if i.venue == c.name)
    return CcxtDataClient(exchange_id(c), c.name, table, c.settings)


def _load_markets(exchange: str, settings: Mapping[str, Any], creds: Any) -> dict[str, Any]:
    from engine.venues.ccxt_markets import load_markets

    return load_markets(exchange, settings, creds)  # type: ignore[return-value]


for _kind, _doc in (
    ("binanceus", "Binance.US spot through ccxt: paper on its live data, or live"),
    ("coinbase", "Coinbase Advanced Trade through ccxt: paper on its live data, or live"),
    ("kraken", "Kraken spot through ccxt: paper on its live data, or live"),
    ("ccxt", 'any ccxt exchange (exchange = "<id>"): its market data, paper trading only'),
):
    register(
        VenueKind(
            _kind,
            _execution,
            _market_data,
            _doc,
            real=True,
            live=_kind in LIVE_KINDS,
            markets=_load_markets,
        )
    )
