"""CcxtExecutionClient on the local Coinbase Advanced and Kraken servers (Binance.US: in
tests/test_ccxt_exec.py): submit → ack → fill, cancel, replace (an amend in place on both), and
the faults each server has, all through real ccxt requests and signatures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.instruments import InstrumentTable
from engine.messages import (
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    ReplaceOrder,
)
from engine.venues.ccxt_exec import CcxtExecutionClient
from engine.venues.ccxt_orders import Phase
from engine.venues.ccxt_session import Credentials
from tests._venue_clients import (
    COINBASE,
    KRAKEN,
    Make,
    Venue,
    collect,
    fills,
    order,
    quiet,
    venue_env,
)

VENUES = [COINBASE, KRAKEN]
Env = tuple[Venue, Any, Make]
_order, _collect, _quiet, _fills = order, collect, quiet, fills


@pytest.fixture(params=VENUES, ids=lambda v: v.kind)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """(venue, its running server, a factory of connected clients closed at the end)."""
    v: Venue = request.param
    with venue_env(v, retry_after_default_s=1) as (srv, make):  # Kraken says no Retry-After
        yield v, srv, make


def test_round_trip_cancel_replace(env: Env) -> None:
    v, srv, make = env
    c = make()
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


ORDER_POST = {v.kind: v.order_post for v in VENUES}


def test_partial_fills(env: Env) -> None:
    v, srv, make = env
    c = make()
    srv.faults.arm("partial_fill", parts=3)
    c.submit(_order(v.inst, 211, 0, 0.03, OrderType.MARKET), time.monotonic_ns())
    evs = _collect(c, OrderFilled)
    time.sleep(0.5)
    fills = _fills(evs + c.poll(time.monotonic_ns()))
    assert [type(f) for f in fills] == [OrderPartiallyFilled] * 2 + [OrderFilled]
    assert [f.cum_qty for f in fills] == [1_000_000, 2_000_000, 3_000_000]
    assert [f.leaves_qty for f in fills] == [2_000_000, 1_000_000, 0]


def test_fills_while_disconnected_are_backfilled_once(env: Env) -> None:
    v, srv, make = env
    c = make()
    c.submit(_order(v.inst, 212, 40000.0, 0.02), time.monotonic_ns())
    _collect(c, OrderAccepted)
    order = srv.call(srv.matcher.find, "main", None, c.table.get(212).cid)
    srv.faults.arm("fill_while_down")
    try:
        srv.call(srv.matcher.fill_resting, order, "0.01")
        srv.call(srv.matcher.fill_resting, order)
        evs = _collect(c, OrderFilled)
    finally:
        srv.faults.clear("fill_while_down")
    time.sleep(0.6)
    fills = _fills(evs + c.poll(time.monotonic_ns()))
    assert srv.state()["withheld"] >= 2
    assert [f.cum_qty for f in fills] == [1_000_000, 2_000_000]


def test_unknown_submit_found_by_client_id_never_resent(env: Env) -> None:
    v, srv, make = env
    c = make(timeout_ms=500, unknown_query_s=0.3, rest_poll_s=60)
    srv.faults.arm("fill_while_down")  # the user stream goes silent ...
    try:
        _quiet(srv)  # ... after its reconnect (whose snapshot would ack an order at once)
        srv.faults.arm("delay_ack", delay_s=0.8, times=1)
        sent = time.monotonic()
        c.submit(_order(v.inst, 213, 40000.0, 0.01), time.monotonic_ns())
        deadline = time.monotonic() + 5
        while c.table.get(213).phase == Phase.PENDING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.table.get(213).phase == Phase.UNKNOWN and c.knows_order(213)
        evs = _collect(c, OrderAccepted)
        assert not any(type(e) is OrderRejected for e in evs)
        assert c.submit(_order(v.inst, 213, 40000.0, 0.01), time.monotonic_ns()) == []
        time.sleep(max(0.0, sent + 0.8 + 0.4 - time.monotonic()))  # the late answer came too
        assert not any(type(e) is OrderAccepted for e in c.poll(time.monotonic_ns()))
        assert srv.requests[ORDER_POST[v.kind]] == 1
    finally:
        srv.faults.clear("fill_while_down")


def test_rate_limit_retry_after_honoured(env: Env) -> None:
    v, srv, make = env
    c = make()
    _quiet(srv)
    srv.faults.arm("rate_limit", retry_after=1)  # Retry-After: 1 (whole seconds)
    evs = c.submit(_order(v.inst, 214, 40000.0, 0.01), time.monotonic_ns())
    evs = evs or _collect(c, OrderRejected)
    assert type(evs[-1]) is OrderRejected
    posts = srv.requests[ORDER_POST[v.kind]]
    refused = c.submit(_order(v.inst, 215, 40000.0, 0.01), time.monotonic_ns())
    assert type(refused[0]) is OrderRejected and "Retry-After" in refused[0].reason, evs
    deadline = time.monotonic() + 5
    while time.monotonic() < min(c.guard.blocked_until, deadline):
        time.sleep(0.02)
    c.submit(_order(v.inst, 216, 40000.0, 0.01), time.monotonic_ns())
    _collect(c, OrderAccepted)
    assert srv.requests[ORDER_POST[v.kind]] == posts + 1


def test_kraken_lockout_stops_order_entry() -> None:
    from tests.venues.kraken import KrakenServer

    v = VENUES[1]
    key, secret = v.keys()
    with KrakenServer() as srv:
        srv.add_key(key, secret, balances=v.balances)
        settings = {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "ban_default_s": 1}
        c = CcxtExecutionClient(
            "kraken", "kr", InstrumentTable([v.inst]), settings, Credentials(key, secret)
        )
        try:
            _quiet(srv)
            srv.faults.arm("ban", retry_after=1)
            evs = c.submit(_order(v.inst, 221, 40000.0, 0.01), time.monotonic_ns())
            evs = evs or _collect(c, OrderRejected)
            assert c.state() == "banned" and "lockout" in c.state_reason
            refused = c.submit(_order(v.inst, 222, 40000.0, 0.01), time.monotonic_ns())
            assert type(refused[0]) is OrderRejected and "banned" in refused[0].reason
            srv.faults.clear("ban")
            deadline = time.monotonic() + 6
            while c.state() != "connected" and time.monotonic() < deadline:
                time.sleep(0.05)
            c.submit(_order(v.inst, 223, 40000.0, 0.01), time.monotonic_ns())
            _collect(c, OrderAccepted)
        finally:
            c.close()


def test_coinbase_token_times_follow_the_venue_clock() -> None:
    from tests.venues.coinbase import CoinbaseServer

    v = VENUES[0]
    key, secret = v.keys()
    with CoinbaseServer(clock_offset_s=600) as srv:  # 10 min ahead: a token lives 120 s
        srv.add_key(key, secret, balances=v.balances)
        settings = {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "start_timeout_s": 20}
        c = CcxtExecutionClient(
            "coinbase", "cb", InstrumentTable([v.inst]), settings, Credentials(key, secret)
        )
        try:
            assert c.state() == "connected", c.state_reason
            assert abs(c.guard.clock.offset_ms - 600_000) < 2000
            c.submit(_order(v.inst, 224, 40000.0, 0.01), time.monotonic_ns())
            _collect(c, OrderAccepted)
        finally:
            c.close()
