"""CcxtExecutionClient against the local Binance.US server (tests/venues/binance.py): real ccxt
requests, real signatures, the server's matcher and user stream, and its faults."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_exec import CcxtExecutionClient
from engine.venues.ccxt_orders import Phase
from engine.venues.ccxt_session import Credentials
from tests.venues.binance import BinanceServer

KEY, SECRET = "test-key-e", "test-secret-e"
BTC = Instrument(instrument_id=1, symbol="BTC/USDT", venue="bn", tick_size=0.01, lot_size=0.00001)


@pytest.fixture
def server() -> Iterator[BinanceServer]:
    srv = BinanceServer()
    srv.add_key(KEY, SECRET, balances={"USDT": "100000", "BTC": "2"})
    with srv:
        yield srv


def _client(srv: BinanceServer, **extra: object) -> CcxtExecutionClient:
    settings = {
        "rest_url": srv.rest_url,
        "ws_url": srv.ws_url,
        "timeout_ms": 2000,
        "engine_id": "teste",
        "rest_poll_s": 0.5,
        "start_timeout_s": 20,
        **extra,
    }
    c = CcxtExecutionClient(
        "binanceus", "bn", InstrumentTable([BTC]), settings, Credentials(KEY, SECRET)
    )
    assert c.state() == "connected", c.state_reason
    return c


@pytest.fixture
def client(server: BinanceServer) -> Iterator[CcxtExecutionClient]:
    c = _client(server)
    yield c
    c.close()


def _order(coid: int, side: int, px: float, qty: float, kind: int = OrderType.LIMIT) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=1,
        side=int(side),
        order_type=int(kind),
        tif=int(TimeInForce.GTC),
        px=BTC.px_to_ticks(px) if kind == OrderType.LIMIT else 0,
        qty=BTC.qty_to_lots(qty),
        ts_origin=5,
        ts_approved=6,
    )


def _collect(
    c: CcxtExecutionClient, until: Callable[[list[object]], bool], timeout_s: float = 10.0
) -> list[object]:
    evs: list[object] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        evs += c.poll(time.monotonic_ns())
        if until(evs):
            return evs
        time.sleep(0.02)
    raise AssertionError(f"timed out; got {[type(e).__name__ for e in evs]}")


def _wait(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond()


def _has(tp: type, n: int = 1) -> Callable[[list[object]], bool]:
    return lambda evs: sum(type(e) is tp for e in evs) >= n


def test_submit_ack_fill_round_trip(server: BinanceServer, client: CcxtExecutionClient) -> None:
    o = _order(101, Side.BUY, 59000.0, 0.1)
    assert client.submit(o, time.monotonic_ns()) == []
    evs = _collect(client, _has(OrderAccepted))
    acc = next(e for e in evs if type(e) is OrderAccepted)
    assert acc.client_order_id == 101 and acc.venue_order_id > 0
    assert client.knows_order(101)
    assert [x.client_order_id for x in client.open_orders()] == [101]
    venue = server.call(server.matcher.find, "main", None, client.table.get(101).cid)
    server.call(server.matcher.fill_resting, venue)
    evs += _collect(client, _has(OrderFilled))
    fill = next(e for e in evs if type(e) is OrderFilled)
    # a buy pays its fee in BTC at this venue: the fill is the net amount received
    assert fill.fill_px == BTC.px_to_ticks(59000.0)
    assert fill.fill_qty == BTC.qty_to_lots(0.1 * (1 - 0.001))
    assert fill.fee > 0 and fill.leaves_qty == 0
    assert sum(type(e) in (OrderFilled, OrderPartiallyFilled) for e in evs) == 1  # once
    assert client.open_orders() == []
    assert client.query_order(101).filled_qty == fill.fill_qty


def test_cancel(client: CcxtExecutionClient) -> None:
    client.submit(_order(102, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    c = CancelOrder(102, 1, 1, 77, 78)
    assert client.cancel(c, time.monotonic_ns()) == []
    evs = _collect(client, _has(OrderCanceled))
    ev = next(e for e in evs if type(e) is OrderCanceled)
    assert ev.leaves_qty == 1000 and ev.ts_origin == 77
    assert client.open_orders() == []
    # a second cancel of a closed order is refused at once, without a request
    again = client.cancel(c, time.monotonic_ns())
    assert len(again) == 1 and again[0].reason == 2


def test_replace_is_binances_cancel_replace(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    client.submit(_order(103, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    r = ReplaceOrder(103, 1, 1, BTC.px_to_ticks(50100.0), 2000, 9, 10)
    assert client.replace(r, time.monotonic_ns()) == []
    evs = _collect(client, _has(OrderReplaced))
    rep = next(e for e in evs if type(e) is OrderReplaced)
    assert (rep.px, rep.qty) == (BTC.px_to_ticks(50100.0), 2000)
    assert not any(type(e) is OrderCanceled for e in evs)  # the old venue order's end is not ours
    [o] = client.open_orders()
    assert (o.client_order_id, o.px, o.qty) == (103, BTC.px_to_ticks(50100.0), 2000)
    t = client.table.get(103)
    venue = server.call(server.matcher.find, "main", None, t.cid)
    assert t.gen == 1 and str(venue.amount) in ("0.02", "0.02000")
    server.call(server.matcher.fill_resting, venue)
    evs = _collect(client, _has(OrderFilled))
    assert next(e for e in evs if type(e) is OrderFilled).client_order_id == 103


def test_unknown_submit_resolved_by_query_never_resent(server: BinanceServer) -> None:
    c = _client(server, timeout_ms=500, unknown_query_s=0.3, rest_poll_s=60, reconnect_s=4)
    try:
        server.faults.arm("fill_while_down")  # the user stream says nothing meanwhile
        server.faults.arm("delay_ack", delay_s=0.8, times=1)
        sent = time.monotonic()
        c.submit(_order(104, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
        deadline = time.monotonic() + 5
        while c.table.get(104).phase == Phase.PENDING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.table.get(104).phase == Phase.UNKNOWN
        assert c.knows_order(104)  # it may be at the venue: nobody may send it again
        evs = _collect(c, _has(OrderAccepted))
        assert not any(type(e) is OrderRejected for e in evs)  # a timeout is not a refusal
        assert c.stats["unknown"] == 1
        # submitted again (a restarted exec re-delivering it): not sent twice
        assert c.submit(_order(104, Side.BUY, 50000.0, 0.01), time.monotonic_ns()) == []
        assert c.stats["duplicate_submits"] == 1
        time.sleep(max(0.0, sent + 0.8 + 0.4 - time.monotonic()))  # the late answer came too
        # still one order, one ack
        evs = c.poll(time.monotonic_ns())
        assert not any(type(e) is OrderAccepted for e in evs)
        assert server.requests["POST /api/v3/order"] == 1
        cid = c.table.get(104).cid
        assert len([o for o in server.state()["orders"] if o["client_id"] == cid]) == 1
    finally:
        server.faults.clear("fill_while_down")
        c.close()


def _quiet(srv: BinanceServer, for_s: float = 0.4, timeout_s: float = 5.0) -> None:
    """Wait until the client's start-up requests (user-stream subscriptions) are over, so a
    one-shot fault armed next hits the request the test makes."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = (dict(srv.requests), len(srv.hub.select("user")))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= for_s and now[1]:
            return
        time.sleep(0.05)


def _fills(evs: list[object]) -> list[OrderPartiallyFilled]:
    return [e for e in evs if isinstance(e, OrderPartiallyFilled)]


def test_partial_fills_from_cumulative_filled(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    server.faults.arm("partial_fill", parts=3)
    client.submit(_order(105, Side.BUY, 0, 0.03, OrderType.MARKET), time.monotonic_ns())
    evs = _collect(client, _has(OrderFilled))
    time.sleep(0.5)  # the user stream repeats what the REST answer carried: nothing new
    evs += client.poll(time.monotonic_ns())
    fills = _fills(evs)
    assert [type(f) for f in fills] == [OrderPartiallyFilled] * 2 + [OrderFilled]
    assert [f.cum_qty for f in fills] == sorted({f.cum_qty for f in fills})
    assert fills[-1].cum_qty == sum(f.fill_qty for f in fills) == BTC.qty_to_lots(0.03 * 0.999)
    assert [f.leaves_qty for f in fills] == [2000, 1000, 0]
    assert len({f.fill_id for f in fills}) == 3
    # a restarted client rebuilds the same fills, under the same ids, from the venue's REST
    again = _client(server)
    try:
        assert [(f.fill_id, f.cum_qty) for f in again.fills_since(0)] == [
            (f.fill_id, f.cum_qty) for f in fills
        ]
    finally:
        again.close()


def test_duplicate_and_reordered_user_events_apply_once(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    client.submit(_order(106, Side.SELL, 61000.0, 0.04), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    venue = server.call(server.matcher.find, "main", None, client.table.get(106).cid)
    server.faults.arm("dup_events", times=4)
    for _ in range(2):
        server.call(server.matcher.fill_resting, venue, "0.01")
    evs = _collect(client, lambda e: len(_fills(e)) >= 2)
    server.faults.clear("dup_events")
    server.faults.arm("reorder_events")
    for _ in range(2):
        server.call(server.matcher.fill_resting, venue, "0.01")
    evs += _collect(client, _has(OrderFilled))
    time.sleep(0.6)
    evs += client.poll(time.monotonic_ns())
    fills = _fills(evs)
    assert client.table.duplicate_trades >= 1  # the duplicates did reach the table
    assert sum(f.fill_qty for f in fills) == 4000 and len(fills) == 4
    assert type(fills[-1]) is OrderFilled and fills[-1].cum_qty == 4000
    assert [f.cum_qty for f in fills] == [1000, 2000, 3000, 4000]


def test_429_retry_after_honoured(server: BinanceServer, client: CcxtExecutionClient) -> None:
    server.faults.arm("rate_limit", retry_after=1)  # Retry-After: 1 (whole seconds)
    client.submit(_order(107, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    evs = _collect(client, _has(OrderRejected))
    assert "RateLimitExceeded" in evs[-1].reason or "DDoS" in evs[-1].reason
    assert client.guard.rate_limited == 1
    # inside Retry-After: refused here, nothing sent (the server would ban a retry)
    posts = server.requests["POST /api/v3/order"]
    refused = client.submit(_order(108, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    assert type(refused[0]) is OrderRejected and "Retry-After" in refused[0].reason
    _wait(lambda: time.monotonic() >= client.guard.blocked_until, 5)
    client.submit(_order(109, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    assert server.requests["POST /api/v3/order"] == posts + 1
    assert client.guard.bans == 0 and client.state() == "connected"


def test_418_ban_stops_order_entry_and_says_so(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    server.faults.arm("ban", retry_after=1)
    client.submit(_order(110, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    evs = _collect(client, _has(OrderRejected))
    assert client.state() == "banned" and "418" in client.state_reason
    halt = [e for e in evs if type(e) is ExchangeStatus]
    assert halt and halt[0].instrument_id == -1 and halt[0].status == 2
    seen = sum(server.requests.values())
    refused = client.submit(_order(111, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    assert type(refused[0]) is OrderRejected and "banned" in refused[0].reason
    time.sleep(0.5)
    assert sum(server.requests.values()) == seen  # nothing at all is sent into the ban
    evs = _collect(client, lambda e: client.state() == "connected", timeout_s=6)
    evs += client.poll(time.monotonic_ns())
    assert any(type(e) is ExchangeStatus and e.status == 1 for e in evs)
    client.submit(_order(112, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))


def test_timestamp_error_remeasures_the_clock_and_retries_once(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    _quiet(server)
    syncs = client.stats["clock_syncs"]
    server.faults.arm("timestamp")
    client.submit(_order(113, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    assert client.stats["nonce_retries"] == 1 and client.stats["clock_syncs"] == syncs + 1
    assert server.requests["POST /api/v3/order"] == 2


def test_a_skewed_venue_clock_is_measured_at_start() -> None:
    srv = BinanceServer(clock_offset_ms=20_000)  # 20 s ahead: outside Binance's recvWindow
    srv.add_key(KEY, SECRET, balances={"USDT": "100000"})
    with srv:
        c = _client(srv)
        try:
            assert abs(c.guard.clock.offset_ms - 20_000) < 1000
            c.submit(_order(114, Side.BUY, 50000.0, 0.01), time.monotonic_ns())
            _collect(c, _has(OrderAccepted))
        finally:
            c.close()


def test_fills_while_disconnected_are_backfilled_once(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    client.submit(_order(115, Side.BUY, 59000.0, 0.02), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    venue = server.call(server.matcher.find, "main", None, client.table.get(115).cid)
    server.faults.arm("fill_while_down")  # user sockets dropped, events withheld
    try:
        server.call(server.matcher.fill_resting, venue, "0.01")
        server.call(server.matcher.fill_resting, venue)
        evs = _collect(client, _has(OrderFilled))
    finally:
        server.faults.clear("fill_while_down")
    time.sleep(0.6)
    evs += client.poll(time.monotonic_ns())
    fills = _fills(evs)
    assert server.state()["withheld"] >= 2  # the stream never told us: REST did
    assert len(fills) == 2 and fills[-1].cum_qty == BTC.qty_to_lots(0.02 * 0.999)


def test_a_restarted_client_recognises_its_orders_and_never_resends(
    server: BinanceServer,
) -> None:
    a = _client(server)
    try:
        a.submit(_order(116, Side.BUY, 59000.0, 0.02), time.monotonic_ns())
        _collect(a, _has(OrderAccepted))
        cid = a.table.get(116).cid
    finally:
        a.close()  # exec is gone; the order rests at the venue and trades meanwhile
    venue = server.call(server.matcher.find, "main", None, cid)
    server.call(server.matcher.fill_resting, venue, "0.01")
    other = _client(server, engine_id="another")
    try:
        assert other.open_orders() == [] and not other.knows_order(116)
    finally:
        other.close()
    b = _client(server)
    try:
        [o] = b.open_orders()
        assert (o.client_order_id, o.qty, o.side) == (116, 1000, Side.BUY)
        assert b.knows_order(116)
        [f] = b.fills_since(0)
        assert (f.client_order_id, f.fill_qty) == (116, BTC.qty_to_lots(0.01 * 0.999))
        posts = server.requests["POST /api/v3/order"]
        assert b.submit(_order(116, Side.BUY, 59000.0, 0.02), time.monotonic_ns()) == []
        server.call(server.matcher.fill_resting, venue)
        evs = _collect(b, _has(OrderFilled))
        last = next(e for e in evs if type(e) is OrderFilled)
        assert last.client_order_id == 116 and last.leaves_qty == 0
        assert server.requests["POST /api/v3/order"] == posts  # never sent twice
    finally:
        b.close()


def test_selling_everything_bought_sells_what_the_fee_left() -> None:
    srv = BinanceServer()
    srv.add_key(KEY, SECRET, balances={"USDT": "100000"})  # no BTC but what we buy
    with srv:
        c = _client(srv)
        try:
            c.submit(_order(117, Side.BUY, 0, 0.1, OrderType.MARKET), time.monotonic_ns())
            bought = _fills(_collect(c, _has(OrderFilled)))
            held = sum(f.fill_qty for f in bought)
            assert held == BTC.qty_to_lots(0.1 * 0.999)  # the fee was 0.0001 BTC
            assert c.fees_paid()["BTC"] == pytest.approx(0.0001)
            c.submit(_order(118, Side.SELL, 0, BTC.lots_to_qty(held), OrderType.MARKET), 0)
            evs = _collect(c, lambda e: _has(OrderFilled)(e) or _has(OrderRejected)(e))
            assert not any(type(e) is OrderRejected for e in evs)
            assert sum(f.fill_qty for f in _fills(evs)) == held
        finally:
            c.close()


def test_a_reconnect_storm_loses_and_repeats_no_fill(server: BinanceServer) -> None:
    c = _client(server, reconnect_s=0.05, rest_poll_s=60)
    try:
        c.submit(_order(119, Side.BUY, 59000.0, 0.05), time.monotonic_ns())
        _collect(c, _has(OrderAccepted))
        venue = server.call(server.matcher.find, "main", None, c.table.get(119).cid)
        evs: list[object] = []
        for _ in range(5):
            server.faults.arm("disconnect", stream="user")
            server.call(server.matcher.fill_resting, venue, "0.01")
            time.sleep(0.1)
            evs += c.poll(time.monotonic_ns())
        evs += _collect(c, _has(OrderFilled))
        time.sleep(0.5)
        fills = _fills(evs + c.poll(time.monotonic_ns()))
        net = BTC.qty_to_lots(0.01 * 0.999)
        assert [f.cum_qty for f in fills] == [net * k for k in range(1, 6)]
        assert c.stats["reconnects"] >= 2 and c.stats["backfills"] >= 1
        assert c.state() == "connected"
    finally:
        c.close()


def test_fills_during_a_silent_user_stream_stall_come_over_rest(
    server: BinanceServer, client: CcxtExecutionClient
) -> None:
    client.submit(_order(120, Side.BUY, 59000.0, 0.01), time.monotonic_ns())
    _collect(client, _has(OrderAccepted))
    venue = server.call(server.matcher.find, "main", None, client.table.get(120).cid)
    server.faults.arm("stall", stream="user")  # the socket stays open and says nothing
    try:
        server.call(server.matcher.fill_resting, venue)
        fills = _fills(_collect(client, _has(OrderFilled)))
    finally:
        server.faults.clear("stall")
    assert len(fills) == 1 and client.stats["reconnects"] == 0  # found by the REST check
