"""Shared by the execution-client tests on the local exchange servers: each venue's server,
test keys, instrument and order-entry path, a context that yields a running server and a
factory of connected ``CcxtExecutionClient``\\ s (all closed at the end), and the small helpers
the tests poll with."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import NewOrder, OrderPartiallyFilled, OrderType, Side, TimeInForce
from engine.venues.ccxt_exec import CcxtExecutionClient
from engine.venues.ccxt_session import Credentials

__all__ = [
    "ALL_VENUES",
    "BINANCEUS",
    "COINBASE",
    "KRAKEN",
    "Make",
    "Venue",
    "collect",
    "fills",
    "order",
    "quiet",
    "venue_env",
]


@dataclass(frozen=True)
class Venue:
    kind: str
    module: str
    server: str
    keys: Callable[[], tuple[str, str]]
    inst: Instrument
    balances: dict[str, str]
    order_post: str  # the server's request counter key of an order entry


def _coinbase_keys() -> tuple[str, str]:
    from tests.venues.coinbase_auth import new_test_key

    name, pem, _ = new_test_key()
    return name, pem


def _kraken_keys() -> tuple[str, str]:
    from tests.venues.kraken_wire import new_test_key

    return new_test_key()


BINANCEUS = Venue(
    "binanceus",
    "tests.venues.binance",
    "BinanceServer",
    lambda: ("test-key-v", "test-secret-v"),
    Instrument(instrument_id=1, symbol="BTC/USDT", venue="bn", tick_size=0.01, lot_size=1e-5),
    {"USDT": "100000", "BTC": "2"},
    "POST /api/v3/order",
)
COINBASE = Venue(
    "coinbase",
    "tests.venues.coinbase",
    "CoinbaseServer",
    _coinbase_keys,
    Instrument(instrument_id=1, symbol="BTC/USD", venue="cb", tick_size=0.01, lot_size=1e-8),
    {"USD": "100000", "BTC": "2"},
    "POST /api/v3/brokerage/orders",
)
KRAKEN = Venue(
    "kraken",
    "tests.venues.kraken",
    "KrakenServer",
    _kraken_keys,
    Instrument(instrument_id=1, symbol="BTC/USD", venue="kr", tick_size=0.1, lot_size=1e-8),
    {"USD": "100000", "BTC": "2"},
    "POST /0/private/AddOrder",
)
ALL_VENUES = [BINANCEUS, COINBASE, KRAKEN]

Make = Callable[..., CcxtExecutionClient]


@contextmanager
def venue_env(v: Venue, **defaults: Any) -> Iterator[tuple[Any, Make]]:
    """(v's running local server, a factory of connected clients: ``make(**settings)``)."""
    try:
        cls = getattr(importlib.import_module(v.module), v.server)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"the local {v.kind} server is not there yet: {e}")
    key, secret = v.keys()
    srv = cls()
    srv.add_key(key, secret, balances=v.balances)
    clients: list[CcxtExecutionClient] = []

    def make(**extra: Any) -> CcxtExecutionClient:
        settings = {
            "rest_url": srv.rest_url,
            "ws_url": srv.ws_url,
            "timeout_ms": 3000,
            "engine_id": "testv",
            "rest_poll_s": 0.5,
            "start_timeout_s": 20,
            **defaults,
            **extra,
        }
        creds = Credentials(key, secret)
        c = CcxtExecutionClient(v.kind, v.inst.venue, InstrumentTable([v.inst]), settings, creds)
        clients.append(c)
        assert c.state() == "connected", c.state_reason
        return c

    with srv:
        try:
            yield srv, make
        finally:
            for c in clients:
                c.close()


def order(
    inst: Instrument,
    coid: int,
    px: float,
    qty: float,
    kind: int = OrderType.LIMIT,
    side: int = Side.BUY,
) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=inst.instrument_id,
        side=int(side),
        order_type=int(kind),
        tif=int(TimeInForce.GTC),
        px=inst.px_to_ticks(px) if kind == OrderType.LIMIT else 0,
        qty=inst.qty_to_lots(qty),
        ts_origin=5,
        ts_approved=6,
    )


def collect(
    c: CcxtExecutionClient,
    until: type | Callable[[list[object]], bool],
    timeout_s: float = 10.0,
) -> list[object]:
    """Poll ``c`` until an event of type ``until`` (or ``until(events)``) is there."""

    def done(evs: list[object]) -> bool:
        if isinstance(until, type):
            return any(type(e) is until for e in evs)
        return until(evs)

    evs: list[object] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        evs += c.poll(time.monotonic_ns())
        if done(evs):
            return evs
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {until}; got {[type(e).__name__ for e in evs]}")


def quiet(srv: Any, for_s: float = 0.6, timeout_s: float = 8.0) -> None:
    """Wait until the client has stopped making requests (start-up, reconnects)."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = dict(srv.requests)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= for_s:
            return
        time.sleep(0.05)


def fills(evs: list[object]) -> list[OrderPartiallyFilled]:
    return [e for e in evs if isinstance(e, OrderPartiallyFilled)]
