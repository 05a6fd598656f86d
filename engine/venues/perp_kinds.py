"""The perpetual-futures venue kinds: ``binanceusdm`` (Binance USD-M futures) and
``krakenfutures`` (Kraken Futures' linear "flex" perpetuals), both through ccxt.

One ``register`` call per kind (``engine.venues.registry``). Market data is the venue's own
(``CcxtDataClient``: book and trades of the contract, ``engine.venues.ccxt_perp_data`` adds the
mark price and funding rate). Execution is paper unless the run decided live, as for the spot
kinds (``engine.venues.ccxt_kinds``): paper is the simulated exchange on the venue's real book,
with the contract's instrument (kind ``perpetual``, contract size, funding interval, margins,
as ``engine.venues.ccxt_perp_markets`` loaded them); live is
``engine.venues.ccxt_perp_exec.PerpExecutionClient`` (orders, positions, leverage, funding
payments, margin calls, liquidations; Kraken's, polling REST, is
``engine.venues.kraken_perp``). Both sit behind ``OrderRulesGate``. Only one-way (netting)
position mode is modelled: ``position_mode = "hedging"`` is refused when the clients
are built (Binance's hedge mode keeps a long and a short apart: not this client's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine.venues.base import ExecutionClient
from engine.venues.ccxt_markets import MarketRules, OrderRulesGate, VenueMarket, venue_view
from engine.venues.data import MarketDataClient
from engine.venues.registry import VenueConfig, VenueKind, register

__all__ = ["PERP_EXCHANGE_IDS", "paper_balance"]

#: kind -> ccxt exchange id
PERP_EXCHANGE_IDS = {"binanceusdm": "binanceusdm", "krakenfutures": "krakenfutures"}


def _settings(c: VenueConfig) -> dict[str, Any]:
    from engine.venues.ccxt_perp_markets import perp_settings

    if str(c.settings.get("position_mode") or "netting") != "netting":
        raise ValueError(
            f"venue {c.name!r}: position_mode {c.settings.get('position_mode')!r} — only one-way "
            "(netting) positions are modelled on kind " + repr(c.kind)
        )
    return perp_settings(c.settings)


def _markets(c: VenueConfig) -> dict[str, VenueMarket]:
    raw: Mapping[str, Any] | None = c.settings.get("markets")
    if not raw:
        from engine.venues.ccxt_perp_markets import load_perp_markets

        return load_perp_markets(PERP_EXCHANGE_IDS[c.kind], _settings(c), c.credentials)
    return {
        sym: m if isinstance(m, VenueMarket) else msgspec.convert(m, VenueMarket)
        for sym, m in raw.items()
    }


def _rules(c: VenueConfig) -> list[MarketRules]:
    from engine.venues.ccxt_markets import resolve_instruments

    mine = [i for i in c.instruments if i.venue == c.name]
    return resolve_instruments(c.name, mine, (), _markets(c), 0)


def paper_balance(c: VenueConfig, currencies: set[str]) -> dict[str, float]:
    """The simulated account's starting balance: the venue's ``paper_balance``, else the run's
    (``settings["balance"]``: the portfolio's cash) with a USD amount also counted in each
    USD stablecoin the contracts settle in (USDT, USDC: 1 USD each) that it does not name."""
    own = dict(c.settings.get("paper_balance") or {})
    if own:
        return {k: float(v) for k, v in own.items()}
    out = {k: float(v) for k, v in dict(c.settings.get("balance") or {}).items()}
    for ccy in currencies:
        if ccy not in out and ccy in _USD_STABLE and "USD" in out:
            out[ccy] = out["USD"]
    return out


_USD_STABLE = frozenset({"USDT", "USDC"})


def _paper(c: VenueConfig, rules: list[MarketRules]) -> Any:
    """The simulated exchange on the venue's book: its fees (the highest of these markets'),
    the account's leverage cap and starting balance (``paper_balance``)."""
    from engine.instruments import InstrumentTable
    from engine.venues.sim import SimExchange

    s = c.settings
    insts = [r.instrument for r in rules]
    return SimExchange(
        InstrumentTable(insts),
        name=c.name,
        maker_fee_bps=max((r.maker_fee_bps for r in rules), default=0.0),
        taker_fee_bps=max((r.taker_fee_bps for r in rules), default=0.0),
        latency_ns=int(s.get("latency_ns", 0)),
        jitter_ns=int(s.get("jitter_ns", 0)),
        seed=c.seed,
        record_path=c.record_path,
        balance=paper_balance(c, {i.currency for i in insts}),
        leverage=float(s.get("leverage") or 0.0),
    )


def _execution(c: VenueConfig) -> ExecutionClient:
    settings = _settings(c)
    rules = _rules(c)
    if not c.settings.get("live"):
        return OrderRulesGate(_paper(c, rules), rules)  # type: ignore[return-value]
    if c.credentials is None:
        raise ValueError(f"venue {c.name!r}: live trading needs API keys")
    from engine.venues.ccxt_perp_exec import PerpExecutionClient
    from engine.venues.kraken_perp import KrakenPerpExecutionClient

    table = venue_view(r.instrument for r in rules)
    ex_id = PERP_EXCHANGE_IDS[c.kind]
    cls = KrakenPerpExecutionClient if c.kind == "krakenfutures" else PerpExecutionClient
    client = cls(ex_id, c.name, table, settings, c.credentials)
    return OrderRulesGate(client, rules)  # type: ignore[return-value]


def _market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.ccxt_perp_data import PerpDataClient

    table = venue_view(i for i in c.instruments if i.venue == c.name)
    return PerpDataClient(PERP_EXCHANGE_IDS[c.kind], c.name, table, _settings(c))


def _load_markets(exchange: str, settings: Mapping[str, Any], creds: Any) -> dict[str, Any]:
    from engine.venues.ccxt_perp_markets import load_perp_markets

    return load_perp_markets(PERP_EXCHANGE_IDS.get(exchange, exchange), settings, creds)  # type: ignore[return-value]


register(
    VenueKind(
        "binanceusdm",
        _execution,
        _market_data,
        "Binance USD-M perpetual futures through ccxt: paper on its live data, or live",
        real=True,
        live=True,
        markets=_load_markets,
    )
)
register(
    VenueKind(
        "krakenfutures",
        _execution,
        _market_data,
        "Kraken Futures perpetuals (flex, USD-settled) through ccxt: paper on its live data, or "
        "live (REST polling)",
        real=True,
        live=True,
        markets=_load_markets,
    )
)
