"""Local wire-compatible exchange servers for tests (Binance.US, Coinbase Advanced, Kraken).

Each server speaks the subset of its exchange's REST and websocket protocol that ccxt 4.5.90
uses, verifies request signatures the way the exchange does, matches orders in a real book and
injects faults on command. The exchange-neutral parts (matching, balances, user-event fan-out,
faults, the server thread) are in :mod:`tests.venues.core`; one module per exchange adds its
wire format. ``python -m tests.venues <kind>`` runs one as a process for cross-process tests.
"""

from __future__ import annotations

KINDS = {
    "binanceus": "tests.venues.binance:BinanceServer",
    "coinbase": "tests.venues.coinbase:CoinbaseServer",
    "kraken": "tests.venues.kraken:KrakenServer",
    "binanceusdm": "tests.venues.binance_futures:BinanceFuturesServer",
    "krakenfutures": "tests.venues.kraken_futures:KrakenFuturesServer",
    "oanda": "tests.venues.oanda:OandaServer",
    "polymarket": "tests.venues.polymarket:PolymarketServer",
    "betfair": "tests.venues.betfair:BetfairServer",
}


def server_class(kind: str) -> type:
    """The server class for a venue kind (imported lazily: each module is its helper's)."""
    import importlib

    try:
        target = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown local venue kind {kind!r} (known: {sorted(KINDS)})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
