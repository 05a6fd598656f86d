"""Venue kinds: ``kind`` in a ``[[venues]]`` table → the factories of its two clients.

One place says which venues exist, so the config check, the feed and exec all agree: a kind is
registered once with a factory for its market-data client (``engine.venues.data``) and one for
its execution client (``engine.venues.base``), both built from a ``VenueConfig``. Adding a real
exchange is one ``register`` call (as NautilusTrader's per-adapter ``factories.py``): ``"sim"``,
the simulated exchange, here; the real exchanges in ``engine.venues.ccxt_kinds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.instruments import InstrumentTable
from engine.venues.base import ExecutionClient
from engine.venues.data import MarketDataClient

__all__ = [
    "UnknownVenueKind",
    "VenueConfig",
    "VenueKind",
    "known_kinds",
    "lookup",
    "register",
]


@dataclass(frozen=True)
class VenueConfig:
    """What a factory gets: the venue's name and kind, the instruments, its own ``settings``
    (units already converted, e.g. ``latency_ns``), the run's seed, where its durable record
    goes (None: memory only), and ``market``, the local market source that a simulated venue
    serves (None for a venue with its own market data), and ``credentials`` (an
    ``engine.venues.ccxt_session.Credentials``, live real venues only)."""

    name: str
    kind: str
    instruments: InstrumentTable
    settings: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    record_path: Path | None = None
    market: Callable[[], Iterator[object]] | None = None
    credentials: Any = field(default=None, repr=False)


#: ``(exchange id or kind, venue settings, credentials) -> {symbol: VenueMarket}``: what a real
#: venue lists, loaded once by the pre-flight (ops/venue_run.py)
MarketsLoader = Callable[[str, Mapping[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class VenueKind:
    """A registered kind: ``execution`` and ``market_data`` build its clients. A real venue
    (``real``) has ``markets``, its pre-flight's loader, and a ``[[venues]]`` struct of its own
    in ops/venue_config.py; ``live``: it may trade real money (all three gates passed);
    ``private_data``: its market data needs the account's keys (OANDA's prices), so its
    market-data client is built with them and the feed gets them."""

    kind: str
    execution: Callable[[VenueConfig], ExecutionClient]
    market_data: Callable[[VenueConfig], MarketDataClient]
    doc: str = ""
    real: bool = False
    live: bool = False
    markets: MarketsLoader | None = None
    private_data: bool = False
    #: ``(exchange or kind, settings, credentials) -> KeyAbilities`` (engine/venues/
    #: ccxt_permissions.py): what the key may do, asked before a live run (None: ccxt's)
    probe: Callable[[str, Mapping[str, Any], Any], Any] | None = None


class UnknownVenueKind(ValueError):
    """A ``kind`` nothing is registered for; the message names the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(
            f"unknown venue kind {kind!r}; known kinds: {', '.join(repr(k) for k in known_kinds())}"
        )


_KINDS: dict[str, VenueKind] = {}


def register(entry: VenueKind) -> None:
    """Add a kind (a second registration of the same kind is a mistake)."""
    if entry.kind in _KINDS:
        raise ValueError(f"venue kind {entry.kind!r} is registered twice")
    _KINDS[entry.kind] = entry


def lookup(kind: str) -> VenueKind:
    """The registered kind, or ``UnknownVenueKind``."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise UnknownVenueKind(kind) from None


def known_kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def real_kinds() -> tuple[str, ...]:
    """The kinds of real venues (their own market data; paper by default)."""
    return tuple(sorted(k for k, e in _KINDS.items() if e.real))


def live_kinds() -> tuple[str, ...]:
    """The real kinds that may trade live."""
    return tuple(sorted(k for k, e in _KINDS.items() if e.live))


# --- the simulated exchange ---------------------------------------------------------------------
def _sim_execution(c: VenueConfig) -> ExecutionClient:
    from engine.venues.multi import ShiftedVenue
    from engine.venues.sim import SimExchange
    from engine.venues.sim_odds import OddsVenue, odds_pivots

    s = c.settings
    sim = SimExchange(
        c.instruments,
        name=c.name,
        maker_fee_bps=s.get("maker_fee_bps", 0.0),
        taker_fee_bps=s.get("taker_fee_bps", 0.0),
        latency_ns=s.get("latency_ns", 0),
        jitter_ns=s.get("jitter_ns", 0),
        seed=c.seed,
        record_path=c.record_path,
        # the account (engine.venues.sim_accounts): its cash, a betting market's commission
        balance=s.get("balance"),
        commission_pct=s.get("commission_pct", 0.0),
        liquidation_buffer=s.get("liquidation_buffer", 1.0),
        leverage=s.get("leverage", 0.0),
        position_mode=s.get("position_mode", "netting"),
    )
    pivots = odds_pivots(c.instruments)  # betting: matched on inverted odds
    venue: Any = OddsVenue(sim, pivots) if pivots else sim
    off, scale = s.get("px_offset_ticks", 0), s.get("size_scale", 1.0)
    return ShiftedVenue(venue, off, scale) if off or scale != 1.0 else venue


def _sim_market_data(c: VenueConfig) -> MarketDataClient:
    from engine.venues.sim_data import SimDataClient

    if c.market is None:
        raise ValueError(f"simulated venue {c.name!r} needs a market source")
    return SimDataClient(c.instruments, c.market, name=c.name)


register(
    VenueKind(
        "sim",
        _sim_execution,
        _sim_market_data,
        "the simulated exchange over the configured market source ([market], [sim])",
    )
)


# the real venues register themselves (their clients import their libraries only when built)
from engine.venues import (  # noqa: E402, F401
    betfair_kind,
    ccxt_kinds,
    oanda_kind,
    perp_kinds,
    polymarket_kind,
)
