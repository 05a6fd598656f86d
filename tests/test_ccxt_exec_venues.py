"""CcxtExecutionClient's round trip on each venue's local server (Binance.US in
tests/test_ccxt_exec.py with its faults; here Coinbase Advanced and Kraken): submit → ack → fill,
cancel, replace (an amend in place on both), all through real ccxt requests and signatures."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderType,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_exec import CcxtExecutionClient
from engine.venues.ccxt_session import Credentials


@dataclass(frozen=True)
class Venue:
    kind: str
    module: str
    server: str
    keys: Callable[[], tuple[str, str]]
    inst: Instrument
    balances: dict[str, str]


def _coinbase_keys() -> tuple[str, str]:
    from tests.venues.coinbase_auth import new_test_key

    name, pem, _ = new_test_key()
    return name, pem


def _kraken_keys() -> tuple[str, str]:
    from tests.venues.kraken_wire import new_test_key

    return new_test_key()


VENUES = [
    Venue(
        "coinbase",
        "tests.venues.coinbase",
        "CoinbaseServer",
        _coinbase_keys,
        Instrument(instrument_id=1, symbol="BTC/USD", venue="cb", tick_size=0.01, lot_size=1e-8),
        {"USD": "100000", "BTC": "2"},
    ),
    Venue(
        "kraken",
        "tests.venues.kraken",
        "KrakenServer",
        _kraken_keys,
        Instrument(instrument_id=1, symbol="BTC/USD", venue="kr", tick_size=0.1, lot_size=1e-8),
        {"USD": "100000", "BTC": "2"},
    ),
]


@pytest.fixture(params=VENUES, ids=lambda v: v.kind)
def venue(request: pytest.FixtureRequest) -> Iterator[tuple[Venue, Any, CcxtExecutionClient]]:
    v: Venue = request.param
    try:
        cls = getattr(importlib.import_module(v.module), v.server)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"the local {v.kind} server is not there yet: {e}")
    key, secret = v.keys()
    srv = cls()
    srv.add_key(key, secret, balances=v.balances)
    with srv:
        settings = {
            "rest_url": srv.rest_url,
            "ws_url": srv.ws_url,
            "timeout_ms": 3000,
            "engine_id": "testv",
            "rest_poll_s": 0.5,
            "start_timeout_s": 20,
        }
        c = CcxtExecutionClient(
            v.kind, v.inst.venue, InstrumentTable([v.inst]), settings, Credentials(key, secret)
        )
        try:
            assert c.state() == "connected", c.state_reason
            yield v, srv, c
        finally:
            c.close()


def _order(inst: Instrument, coid: int, px: float, qty: float) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=inst.instrument_id,
        side=int(Side.BUY),
        order_type=int(OrderType.LIMIT),
        tif=int(TimeInForce.GTC),
        px=inst.px_to_ticks(px),
        qty=inst.qty_to_lots(qty),
        ts_origin=5,
        ts_approved=6,
    )


def _collect(c: CcxtExecutionClient, tp: type, timeout_s: float = 10.0) -> list[object]:
    evs: list[object] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        evs += c.poll(time.monotonic_ns())
        if any(type(e) is tp for e in evs):
            return evs
        time.sleep(0.02)
    raise AssertionError(f"no {tp.__name__}; got {[type(e).__name__ for e in evs]}")


def test_round_trip_cancel_replace(venue: tuple[Venue, Any, CcxtExecutionClient]) -> None:
    v, srv, c = venue
    inst = v.inst
    # submit -> ack -> fill (the market trades with our resting order)
    c.submit(_order(inst, 201, 40000.0, 0.01), time.monotonic_ns())
    acc = next(e for e in _collect(c, OrderAccepted) if type(e) is OrderAccepted)
    assert acc.client_order_id == 201
    order = srv.call(srv.matcher.find, "main", None, c.table.get(201).cid)
    srv.call(srv.matcher.fill_resting, order)
    evs = _collect(c, OrderFilled)
    time.sleep(0.5)
    evs += c.poll(time.monotonic_ns())
    fills = [e for e in evs if isinstance(e, OrderPartiallyFilled)]
    assert len(fills) == 1 and fills[0].fill_px == inst.px_to_ticks(40000.0)
    assert fills[0].cum_qty == inst.qty_to_lots(0.01)  # fees in USD here: the whole amount
    # cancel
    c.submit(_order(inst, 202, 39000.0, 0.01), time.monotonic_ns())
    _collect(c, OrderAccepted)
    c.cancel(CancelOrder(202, 1, 1, 7, 8), time.monotonic_ns())
    ev = next(e for e in _collect(c, OrderCanceled) if type(e) is OrderCanceled)
    assert ev.client_order_id == 202 and ev.leaves_qty == inst.qty_to_lots(0.01)
    # replace: amended in place (same venue order), then filled at the new price
    c.submit(_order(inst, 203, 38000.0, 0.02), time.monotonic_ns())
    _collect(c, OrderAccepted)
    new_px = inst.px_to_ticks(38500.0)
    c.replace(ReplaceOrder(203, 1, 1, new_px, inst.qty_to_lots(0.01), 9, 10), time.monotonic_ns())
    rep = next(e for e in _collect(c, OrderReplaced) if type(e) is OrderReplaced)
    assert (rep.px, rep.qty) == (new_px, inst.qty_to_lots(0.01))
    [o] = c.open_orders()
    assert (o.client_order_id, o.px, o.qty) == (203, new_px, inst.qty_to_lots(0.01))
    order = srv.call(srv.matcher.find, "main", None, c.table.get(203).cid)
    srv.call(srv.matcher.fill_resting, order)
    fill = next(e for e in _collect(c, OrderFilled) if type(e) is OrderFilled)
    assert fill.client_order_id == 203 and fill.fill_px == new_px
    assert c.open_orders() == [] and c.state() == "connected"
