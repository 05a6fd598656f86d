"""OANDA v20: our client against the local v20 server (tests/venues/oanda.py).

The live execution client on the transaction log (market, limit, stop, replace, cancel, a
native bracket, financing at the rollover, a dropped stream recovered by ``sinceid``), the
market-data client (snapshots, a stalled stream reopened), the wire's conversions and the
server's own checks (Bearer token, account in the path, 429).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.enums import ContingencyType
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookSnapshot,
    CancelOrder,
    Financing,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_session import Credentials
from engine.venues.oanda_data import OandaDataClient
from engine.venues.oanda_exec import OandaExecutionClient
from engine.venues.oanda_http import RateLimited, V20Client, V20Error
from engine.venues.oanda_wire import market_of, rfc3339_ns
from tests.venues.oanda import ACCOUNT, TOKEN, OandaServer

EUR = Instrument(
    instrument_id=1,
    symbol="EUR/USD",
    venue="oanda",
    tick_size=0.00001,
    lot_size=1.0,
    kind="fx",
    pip_size=0.0001,
    base_currency="EUR",
    currency="USD",
)
JPY = Instrument(
    instrument_id=2,
    symbol="USD/JPY",
    venue="oanda",
    tick_size=0.001,
    lot_size=1.0,
    kind="fx",
    pip_size=0.01,
    base_currency="USD",
    currency="JPY",
)
TABLE = InstrumentTable([EUR, JPY])
KEYS = Credentials(TOKEN, ACCOUNT, "")


@pytest.fixture
def srv() -> Iterator[OandaServer]:
    s = OandaServer(tick_s=0, heartbeat_s=0.2).start()
    yield s
    s.stop()


def _settings(srv: OandaServer, **more: Any) -> dict[str, Any]:
    base = {"rest_url": srv.rest_url, "account_id": ACCOUNT, "engine_id": "t1"}
    base |= {"stale_after_s": 1.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    return base | more


@pytest.fixture
def ex(srv: OandaServer) -> Iterator[OandaExecutionClient]:
    c = OandaExecutionClient("oanda", TABLE, _settings(srv), KEYS, start=False)
    assert c.start(10.0)
    yield c
    c.close()


def _until(ex: OandaExecutionClient, got: list[Any], ok: Callable[[list[Any]], bool]) -> list[Any]:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        got += ex.poll(time.monotonic_ns())
        if ok(got):
            return got
        time.sleep(0.01)
    raise AssertionError(f"not seen in time; got {got}")


def _order(coid: int, side: int, ot: int, px: int, qty: int, **kw: Any) -> NewOrder:
    tif = kw.pop("tif", TimeInForce.GTC)
    return NewOrder(coid, 1, 1, side, ot, tif, px, qty, 0, 0, **kw)


def _of(evs: list[Any], t: type, coid: int | None = None) -> list[Any]:
    return [e for e in evs if type(e) is t and (coid is None or e.client_order_id == coid)]


# --- wire ----------------------------------------------------------------------------------------
def test_an_instrument_becomes_an_fx_market_with_oanda_rules(srv: OandaServer) -> None:
    async def load() -> list[dict[str, Any]]:
        c = V20Client(srv.rest_url, TOKEN, ACCOUNT)
        try:
            return await c.instruments()
        finally:
            await c.close()

    eur = next(market_of(i) for i in asyncio.run(load()) if i["name"] == "EUR_USD")
    assert (eur.symbol, eur.venue_symbol, eur.tick, eur.lot) == (
        "EUR/USD",
        "EUR_USD",
        "0.00001",
        "1",
    )
    assert eur.instrument["kind"] == "fx" and eur.instrument["pip_size"] == 0.0001
    assert eur.instrument["base_currency"] == "EUR" and eur.instrument["initial_margin"] == 0.0333
    assert (eur.instrument["financing_long_rate"], eur.instrument["financing_short_rate"]) == (
        -0.0325,
        0.0102,
    )


def test_rfc3339_keeps_all_nine_digits() -> None:
    assert rfc3339_ns("2026-12-07T21:00:00.123456789Z") == 1_796_677_200_123_456_789
    assert rfc3339_ns("2026-12-07T21:00:00Z") == 1_796_677_200_000_000_000
    assert rfc3339_ns("1796677200.5") == 1_796_677_200_500_000_000


def test_the_server_checks_the_token_the_account_and_answers_429(srv: OandaServer) -> None:
    async def run() -> None:
        wrong = V20Client(srv.rest_url, "not-the-token", ACCOUNT)
        other = V20Client(srv.rest_url, TOKEN, "101-001-0000000-009")
        ok = V20Client(srv.rest_url, TOKEN, ACCOUNT, retries=1, retry_min_s=0.01)
        try:
            with pytest.raises(V20Error) as e401:
                await wrong.summary()
            assert e401.value.status == 401
            with pytest.raises(V20Error) as e403:
                await other.summary()
            assert e403.value.status == 403
            srv.faults.arm("rate_limit", times=1, retry_after=0.01)
            assert (await ok.summary())["id"] == ACCOUNT  # one 429, retried
            assert ok.rate_limited == 1
            srv.faults.arm("rate_limit", times=5, retry_after=0.01)
            with pytest.raises(RateLimited):
                await ok.summary()
        finally:
            for c in (wrong, other, ok):
                await c.close()

    asyncio.run(run())


# --- execution -----------------------------------------------------------------------------------
def test_a_market_order_fills_at_the_ask_and_moves_the_position(
    srv: OandaServer, ex: OandaExecutionClient
) -> None:
    assert ex.submit(_order(1, Side.BUY, OrderType.MARKET, 0, 1000), 0) == []
    evs = _until(ex, [], lambda g: bool(_of(g, OrderFilled, 1)))
    assert len(_of(evs, OrderAccepted, 1)) == 1
    (fill,) = _of(evs, OrderFilled, 1)
    assert (fill.fill_px, fill.fill_qty, fill.leaves_qty) == (108012, 1000, 0)  # the ask
    assert ex.positions() == {1: 1000}
    assert ex.fills_since(0) == [fill] and ex.fills_since(fill.fill_id) == []
    rep = ex.query_order(1)
    assert rep is not None and rep.filled_qty == 1000 and rep.open_qty == 0
    state = srv.state()["accounts"][ACCOUNT]
    assert state["positions"][0]["long"]["units"] == "1000"


def test_a_limit_rests_is_replaced_and_canceled(srv: OandaServer, ex: OandaExecutionClient) -> None:
    ex.submit(_order(2, Side.BUY, OrderType.LIMIT, 107000, 500), 0)
    evs = _until(ex, [], lambda g: bool(_of(g, OrderAccepted, 2)))
    assert [(o.px, o.qty) for o in ex.open_orders()] == [(107000, 500)]
    ex.replace(ReplaceOrder(2, 1, 1, 106990, 300, 0, 0), 0)
    evs = _until(ex, evs, lambda g: bool(_of(g, OrderReplaced, 2)))
    (rep,) = _of(evs, OrderReplaced, 2)
    assert (rep.px, rep.qty) == (106990, 300)
    pending = srv.state()["accounts"][ACCOUNT]["orders"]
    live = [o for o in pending if o["state"] == "PENDING"]
    assert [(o["price"], o["units"]) for o in live] == [("1.0699", "300")]
    ex.cancel(CancelOrder(2, 1, 1, 0, 0), 0)
    evs = _until(ex, evs, lambda g: bool(_of(g, OrderCanceled, 2)))
    assert ex.open_orders() == []
    ex.cancel(CancelOrder(2, 1, 1, 0, 0), 0)  # a second cancel: refused, not open
    assert _of(ex.poll(0) + ex.cancel(CancelOrder(2, 1, 1, 0, 0), 0), OrderCancelRejected, 2)


def test_a_stop_triggers_when_the_bid_reaches_it(
    srv: OandaServer, ex: OandaExecutionClient
) -> None:
    ex.submit(_order(3, Side.SELL, OrderType.STOP, 0, 200, stop_px=107900), 0)
    evs = _until(ex, [], lambda g: bool(_of(g, OrderAccepted, 3)))
    srv.set_price("EUR_USD", "1.07890", "1.07902")
    evs = _until(ex, evs, lambda g: bool(_of(g, OrderFilled, 3)))
    assert _of(evs, OrderFilled, 3)[0].fill_px == 107890
    assert ex.positions() == {1: -200}


def test_an_order_oanda_refuses_is_rejected_with_its_reason(ex: OandaExecutionClient) -> None:
    ex.submit(_order(4, Side.BUY, OrderType.MARKET, 0, 0), 0)  # refused here: qty 0
    ex.submit(NewOrder(5, 1, 99, Side.BUY, OrderType.MARKET, 3, 0, 10, 0, 0), 0)
    bad = _order(6, Side.BUY, OrderType.TRAILING_STOP, 0, 10)
    assert "TRAILING_STOP" in ex.submit(bad, 0)[0].reason


def test_a_bracket_is_native_and_its_take_profit_cancels_the_stop(
    srv: OandaServer, ex: OandaExecutionClient
) -> None:
    OTO, OCO = int(ContingencyType.OTO), int(ContingencyType.OCO)
    entry = _order(10, Side.BUY, OrderType.MARKET, 0, 1000, contingency=OTO, list_id=1)
    tp = _order(11, Side.SELL, OrderType.LIMIT, 108500, 1000, contingency=OCO, parent_id=10)
    sl = _order(
        12, Side.SELL, OrderType.STOP, 0, 1000, stop_px=107500, contingency=OCO, parent_id=10
    )
    tp = NewOrder(**{**_as_dict(tp), "linked": [12], "list_id": 1})
    sl = NewOrder(**{**_as_dict(sl), "linked": [11], "list_id": 1})
    assert ex.supports_contingency(OTO) and ex.accepts_list([entry, tp, sl]) == ""
    assert ex.submit_list([entry, tp, sl], 0) == []
    evs = _until(ex, [], lambda g: len(_of(g, OrderAccepted)) == 3)
    assert _of(evs, OrderFilled, 10)
    orders = srv.state()["accounts"][ACCOUNT]["orders"]
    kinds = {o["type"]: o for o in orders if o["state"] == "PENDING"}
    assert kinds["TAKE_PROFIT"]["price"] == "1.085" and kinds["STOP_LOSS"]["price"] == "1.075"
    srv.set_price("EUR_USD", "1.08600", "1.08612")  # the take-profit is reached
    evs = _until(ex, evs, lambda g: bool(_of(g, OrderFilled, 11) and _of(g, OrderCanceled, 12)))
    assert _of(evs, OrderFilled, 11)[0].fill_px == 108600
    assert ex.positions() == {} and ex.open_orders() == []


def test_a_list_oanda_cannot_take_whole_is_refused_leg_by_leg(ex: OandaExecutionClient) -> None:
    a = _order(20, Side.BUY, OrderType.LIMIT, 107000, 10, contingency=int(ContingencyType.OTO))
    b = _order(21, Side.BUY, OrderType.LIMIT, 106000, 10, parent_id=20)  # same side: no bracket
    assert ex.accepts_list([a, b]) != ""
    evs = ex.submit_list([a, b], 0)
    assert {e.client_order_id for e in _of(evs, OrderRejected)} == {20, 21}


def _as_dict(o: NewOrder) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(o)


def test_financing_at_the_rollover_is_booked_as_oanda_pays_it(
    srv: OandaServer, ex: OandaExecutionClient
) -> None:
    ex.submit(_order(30, Side.BUY, OrderType.MARKET, 0, 100_000), 0)
    evs = _until(ex, [], lambda g: bool(_of(g, OrderFilled, 30)))
    srv.set_price("EUR_USD", "1.10000", "1.10000")  # mid 1.1
    wednesday = dt.datetime(2026, 12, 9, 17, 0, tzinfo=ZoneInfo("America/New_York"))
    tx = srv.rollover(when_ns=int(wednesday.timestamp() * 1e9))
    evs = _until(ex, evs, lambda g: any(type(e) is Financing for e in g))
    (fin,) = [e for e in evs if type(e) is Financing]
    # 100,000 EUR long x 1.1 x -3.25 % / 365 x 3 days (Wednesday) = -29.3836 USD
    want = 100_000 * 1.1 * -0.0325 / 365 * 3
    assert fin.amount == pytest.approx(want, abs=1e-4) and round(want, 4) == -29.3836
    assert (fin.instrument_id, fin.position, fin.currency) == (1, 100_000, "USD")
    assert fin.payment_id == int(tx["id"]) and ex.financing() == [fin]
    assert fin.days == 3  # the transaction's time says the day: Wednesday's rollover pays 3


def test_a_dropped_stream_loses_nothing_the_log_has(
    srv: OandaServer, ex: OandaExecutionClient
) -> None:
    ex.submit(_order(40, Side.SELL, OrderType.LIMIT, 108100, 700), 0)
    evs = _until(ex, [], lambda g: bool(_of(g, OrderAccepted, 40)))
    srv.faults.arm("fill_while_down")  # the stream drops, and no transaction is streamed ...
    srv.set_price("EUR_USD", "1.08100", "1.08112")  # ... while the limit fills at OANDA
    # the reconnect (or a heartbeat's lastTransactionID) reads the log from our last id
    evs = _until(ex, evs, lambda g: bool(_of(g, OrderFilled, 40)))
    # the fill never came on the stream (withheld): a read of the log brought it (a backfill
    # already under way when the fault was armed may be the one, on a loaded box)
    assert srv.withheld >= 1 and ex.stats["backfills"] >= 1
    srv.faults.clear("fill_while_down")
    srv.faults.arm("disconnect")
    time.sleep(0.5)
    evs += ex.poll(0)
    assert len(_of(evs, OrderFilled, 40)) == 1 and ex.positions() == {1: -700}
    assert ex.stats["reconnects"] >= 1 and ex.stats["backfills"] >= 1
    snap = ex.reconcile_snapshot()
    deadline = time.monotonic() + 5
    while (snap is None or not snap.fills) and time.monotonic() < deadline:
        time.sleep(0.05)
        snap = ex.reconcile_snapshot()
    assert snap is not None and [b.currency for b in snap.balances] == ["EUR", "USD"]


def test_financing_days_follow_the_new_york_rollover() -> None:
    from engine.venues.oanda_orders import V20Orders

    log = V20Orders("oanda", "G", [EUR])
    log.positions[1] = 1000
    wed = dt.datetime(2026, 12, 9, 17, 0, 1, tzinfo=ZoneInfo("America/New_York"))
    thu = wed + dt.timedelta(days=1)

    def tx(i: int, when: dt.datetime) -> dict[str, Any]:
        t = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000001Z")
        pf = [{"instrument": "EUR_USD", "financing": "-0.1000"}]
        return {"id": str(i), "time": t, "type": "DAILY_FINANCING", "positionFinancings": pf}

    evs, hole = log.ingest([tx(1, wed), tx(2, thu)], 0)
    assert not hole and [(e.days, e.amount, e.position) for e in evs] == [
        (3, -0.1, 1000),
        (1, -0.1, 1000),
    ]
    again, hole = log.ingest([tx(2, thu), tx(4, thu)], 0)  # 2 seen: dropped; 4 after a hole
    assert again == [] and hole


# --- market data ---------------------------------------------------------------------------------
def test_prices_arrive_as_snapshots_and_a_stalled_stream_is_reopened(srv: OandaServer) -> None:
    md = OandaDataClient("oanda", TABLE, _settings(srv, stale_after_s=0.5), KEYS)
    md.connect()
    assert {r.instrument.symbol: r.min_qty_lots for r in md.instruments()} == {
        "EUR/USD": 1,
        "USD/JPY": 1,
    }
    md.subscribe([1, 2])
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 5
        while len({m.instrument_id for m in got if type(m) is Quote}) < 2:
            got += md.poll_updates()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        snap = next(m for m in got if type(m) is BookSnapshot and m.instrument_id == 1)
        assert (snap.bid_px[0], snap.ask_px[0]) == (108000, 108012)
        assert md.state() == "connected"
        srv.faults.arm("stall", seconds=1.0)  # no line, no heartbeat: the stream is dead
        deadline = time.monotonic() + 8
        while md.counters()["reconnects"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        srv.faults.clear("stall")
        srv.set_price("EUR_USD", "1.09000", "1.09010")
        deadline = time.monotonic() + 8
        moved: list[Any] = []
        while not any(type(m) is Quote and m.bid_px == 109000 for m in moved):
            moved += md.poll_updates()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert "StreamStalled" in md.reasons[0]
    finally:
        md.close()


def test_units_are_exact_decimals() -> None:
    from engine.venues.oanda_wire import order_body

    body = order_body(EUR, _order(1, Side.SELL, OrderType.LIMIT, 108123, 2500), "G1")
    assert (body["units"], body["price"], body["type"]) == ("-2500", "1.08123", "LIMIT")
    assert Decimal(body["price"]) == Decimal("1.08123")


def test_a_bracket_through_the_kind_reconciliation_and_the_rules_gate(srv: OandaServer) -> None:
    """What exec holds for a live OANDA venue (the kind's client behind ``OrderRulesGate`` and
    ``ReconciledVenue``) takes a bracket whole, and its legs' events are exec's."""
    from engine.venues.reconciled import ReconciledVenue, wrap_live
    from engine.venues.registry import VenueConfig, lookup

    vc = VenueConfig("oanda", "oanda", TABLE, _settings(srv, live=True), credentials=KEYS)
    venue = wrap_live(lookup("oanda").execution(vc), vc)
    assert isinstance(venue, ReconciledVenue)
    try:
        deadline = time.monotonic() + 10
        while venue.venue_status().state.word != "connected":
            venue.poll(time.monotonic_ns())
            assert time.monotonic() < deadline, venue.venue_status()
            time.sleep(0.02)
        OTO, OCO = int(ContingencyType.OTO), int(ContingencyType.OCO)
        entry = _order(50, Side.SELL, OrderType.MARKET, 0, 300, contingency=OTO)
        tp = _order(51, Side.BUY, OrderType.LIMIT, 107000, 300, contingency=OCO, parent_id=50)
        sl = _order(
            52, Side.BUY, OrderType.STOP, 0, 300, stop_px=109000, contingency=OCO, parent_id=50
        )
        assert venue.supports_contingency(OTO) and not venue.supports_contingency(OCO)
        assert venue.submit_list([entry, tp, sl], time.monotonic_ns()) == []
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(_of(got, OrderAccepted)) < 3:
            got += venue.poll(time.monotonic_ns())
            assert time.monotonic() < deadline, got
            time.sleep(0.01)
        assert _of(got, OrderFilled, 50) and venue.foreign_events == 0
        too_small = _order(53, Side.BUY, OrderType.MARKET, 0, 0, contingency=OTO)
        kid = _order(54, Side.SELL, OrderType.LIMIT, 109000, 0, parent_id=53)
        refused = venue.submit_list([too_small, kid], time.monotonic_ns())
        assert {e.client_order_id for e in _of(refused, OrderRejected)} == {53, 54}
    finally:
        venue.close()


# --- config and keys -----------------------------------------------------------------------------
def test_the_feed_gets_only_the_keys_of_venues_whose_prices_need_them() -> None:
    from ops.venue_keys import worker_env

    env = {"GEKKO_OANDA_API_KEY": "t", "GEKKO_OANDA_API_SECRET": "a", "GEKKO_BN_API_KEY": "b"}
    env |= {"PATH": "/bin"}
    assert set(worker_env(env, "feed", ("oanda",))) == {
        "GEKKO_OANDA_API_KEY",
        "GEKKO_OANDA_API_SECRET",
        "PATH",
    }
    assert set(worker_env(env, "feed")) == {"PATH"}
    assert set(worker_env(env, "strategy", ("oanda",))) == {"PATH"}
    assert set(worker_env(env, "exec")) == set(env)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("", "venues[0].rest_url"),
        (
            'rest_url = "http://127.0.0.1:1"\nstream_url = "ws://127.0.0.1:1"',
            "venues[0].stream_url",
        ),
        ('rest_url = "http://127.0.0.1:1"\naccount_id = "a b"', "venues[0].account_id"),
    ],
)
def test_an_oanda_venue_without_its_host_or_with_a_bad_key_is_refused(entry: str, key: str) -> None:
    from ops.config import ConfigError, parse_config

    text = f'[[instruments]]\ninstrument_id = 1\nsymbol = "A"\n[[venues]]\nname = "o"\nkind = "oanda"\n{entry}\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert e.value.key == key, e.value


def test_a_restarted_client_knows_its_orders_and_the_fills_it_missed(srv: OandaServer) -> None:
    """Exec restarts: its orders and the fills that came while it was gone are read back from
    the log by our client ids (the journal has the rest), and nothing is sent twice."""
    first = OandaExecutionClient("oanda", TABLE, _settings(srv), KEYS, start=False)
    assert first.start(10.0)
    first.submit(_order(60, Side.BUY, OrderType.LIMIT, 107500, 400), 0)
    first.submit(_order(61, Side.BUY, OrderType.LIMIT, 100000, 100), 0)
    _until(first, [], lambda g: len(_of(g, OrderAccepted)) == 2)
    first.close()
    srv.set_price("EUR_USD", "1.07490", "1.07500")  # 60 fills while nobody listens
    again = OandaExecutionClient("oanda", TABLE, _settings(srv), KEYS, start=False)
    try:
        assert again.start(10.0)
        assert again.knows_order(60) and again.knows_order(61) and not again.knows_order(62)
        done = again.query_order(60)
        assert done is not None and done.filled_qty == 400 and done.open_qty == 0
        assert [(f.client_order_id, f.fill_qty, f.fill_px) for f in again.fills_since(0)] == [
            (60, 400, 107500)
        ]
        assert [(o.client_order_id, o.px, o.qty) for o in again.open_orders()] == [
            (61, 100000, 100)
        ]
        assert again.positions() == {1: 400} and again.poll(0) == []
        snap = again.reconcile_snapshot()
        assert snap is not None and [o.client_order_id for o in snap.open_orders] == [61]
        again.submit(_order(61, Side.BUY, OrderType.LIMIT, 100000, 100), 0)  # never twice
        assert sum(n for k, n in srv.state()["requests"].items() if k == "POST orders") == 2
    finally:
        again.close()


def test_a_submit_whose_answer_is_lost_is_settled_by_the_log_and_never_resent(
    srv: OandaServer,
) -> None:
    c = OandaExecutionClient("oanda", TABLE, _settings(srv, timeout_ms=300), KEYS, start=False)
    try:
        assert c.start(10.0)
        srv.faults.arm("delay_ack", delay_s=1.0)  # made at OANDA, answered after our timeout
        c.submit(_order(70, Side.BUY, OrderType.MARKET, 0, 50), 0)
        evs = _until(c, [], lambda g: bool(_of(g, OrderFilled, 70)))
        time.sleep(1.2)
        evs += c.poll(0)
        assert len(_of(evs, OrderFilled, 70)) == 1 and len(_of(evs, OrderAccepted, 70)) == 1
        assert c.stats["unknown"] == 1 and c.positions() == {1: 50}
        assert sum(n for k, n in srv.state()["requests"].items() if k == "POST orders") == 1
    finally:
        c.close()


def test_a_pair_that_stops_trading_halts_and_opens_again(srv: OandaServer) -> None:
    from engine.messages import ExchangeStatus, ExchangeStatusKind

    md = OandaDataClient("oanda", TABLE, _settings(srv), KEYS)
    md.connect()
    md.subscribe([1])
    try:
        got: list[Any] = []

        def wait(ok: Callable[[list[Any]], bool]) -> None:
            deadline = time.monotonic() + 5
            while not ok(got):
                got.extend(md.poll_updates())
                assert time.monotonic() < deadline, got
                time.sleep(0.01)

        wait(lambda g: any(type(m) is Quote for m in g))
        srv.set_tradeable("EUR_USD", False)  # the weekend close
        wait(lambda g: any(type(m) is ExchangeStatus for m in g))
        (halt,) = [m for m in got if type(m) is ExchangeStatus]
        assert (halt.instrument_id, halt.status) == (1, ExchangeStatusKind.HALTED)
        quotes = sum(1 for m in got if type(m) is Quote)
        srv.set_tradeable("EUR_USD", True)
        wait(lambda g: sum(1 for m in g if type(m) is ExchangeStatus) == 2)
        assert [m for m in got if type(m) is ExchangeStatus][-1].status == ExchangeStatusKind.OPEN
        after_halt = got[got.index(halt) + 1 :]
        opened = next(i for i, m in enumerate(after_halt) if type(m) is ExchangeStatus)
        assert not any(type(m) is Quote for m in after_halt[:opened])  # no book while closed
        assert quotes >= 1
    finally:
        md.close()
