"""Betfair live: the execution and market-data clients against the local Betfair server.

The server (tests/venues/betfair.py) checks the app key and the session on every call and on
the stream, matches backs against lays on its ladders, suspends, settles and voids markets and
injects faults. Prices are decimal odds in ticks of 0.01 and stakes lots of 0.01 GBP; a BUY
backs, a SELL lays. The house liquidity of a fresh server on Arsenal (1.200000001/47972): lays
at 2.00 / 1.98 / 1.96 (available to back), backs at 2.02 / 2.04 / 2.06 (available to lay), 100
GBP each; Chelsea (48351) 3.00 / 2.95 / 2.90 and 3.05 / 3.10 / 3.15.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from engine.enums import ExchangeStatusKind, OrderType, SettlementKind, Side, TimeInForce
from engine.instruments import InstrumentTable
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceOrder,
    Settlement,
)
from engine.order_states import OrderStatus
from engine.venues.betfair_kind import load_markets, probe_key
from engine.venues.betfair_session import BetfairApi, StreamWorker, api_error_code
from engine.venues.ccxt_markets import instrument_for
from engine.venues.ccxt_session import Credentials
from engine.venues.registry import VenueConfig, lookup
from engine.venues.reports import FillReport, PositionReport
from tests.venues.betfair import APP_KEY, PASSWORD, USERNAME, BetfairServer

pytestmark = pytest.mark.timeout(120)

MID, MID2 = "1.200000001", "1.200000002"
ARSENAL, CHELSEA, UNDER = 47972, 48351, 47973
CREDS = Credentials(APP_KEY, USERNAME, PASSWORD)


def _settings(srv: BetfairServer, **more: Any) -> dict[str, Any]:
    return {
        "rest_url": srv.rest_url,
        "stream_url": srv.stream_url,
        "stream_ca_file": srv.ca_file,
        "heartbeat_ms": 500,
        "stale_after_s": 1.5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "rest_poll_s": 0.3,
        "unknown_window_s": 1.0,
        "start_timeout_s": 10.0,
        "engine_id": "gtest",
        "symbols": [f"{MID}/{ARSENAL}", f"{MID}/{CHELSEA}", f"{MID2}/{UNDER}"],
    } | more


class Live:
    """The venue's clients as exec and the feed would hold them: market data pumped into the
    execution client (suspension, settlement), events collected."""

    def __init__(self, srv: BetfairServer, **more: Any) -> None:
        self.srv = srv
        s = _settings(srv, **more)
        markets = load_markets("betfair", s, CREDS)
        ins = [instrument_for(k + 1, "betfair", markets[sym]) for k, sym in enumerate(s["symbols"])]
        self.ids = {(i.market_id, int(i.symbol.split("/")[1])): i.instrument_id for i in ins}
        vc = VenueConfig(
            "betfair",
            "betfair",
            InstrumentTable(ins),
            s | {"live": True, "markets": markets},
            credentials=CREDS,
        )
        self.ex = lookup("betfair").execution(vc)
        self.md = lookup("betfair").market_data(vc)
        self.md.connect()
        self.md.subscribe([i.instrument_id for i in ins])
        self.events: list[object] = []
        self.md_seen: list[object] = []
        self.coid = 100

    def pump(self) -> None:
        now = time.time_ns()
        for m in self.md.poll_updates():
            self.md_seen.append(m)
            self.events += self.ex.on_market_data(m, now)
        self.events += self.ex.poll(now)

    def wait(self, what: Callable[[], bool], timeout_s: float = 8.0, why: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            if what():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {why or what}: {self.events[-8:]}")

    def of(self, t: type, coid: int | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if type(e) is t and (coid is None or getattr(e, "client_order_id", None) == coid)
        ]

    def order(self, sel: tuple[str, int], side: int, odds: str, stake: str, **kw: Any) -> NewOrder:
        self.coid += 1
        px, qty = int(Decimal(odds) * 100), int(Decimal(stake) * 100)
        tif = kw.get("tif", TimeInForce.GTC)
        otype = kw.get("order_type", OrderType.LIMIT)
        return NewOrder(self.coid, 1, self.ids[sel], side, otype, tif, px, qty, 1, 1)

    def submit(self, o: NewOrder) -> None:
        self.events += self.ex.submit(o, time.time_ns())

    def close(self) -> None:
        self.md.close()
        self.ex.close()


@pytest.fixture
def srv() -> Iterator[BetfairServer]:
    with BetfairServer() as s:
        yield s


@pytest.fixture
def live(srv: BetfairServer) -> Iterator[Live]:
    lv = Live(srv)
    lv.wait(lambda: lv.ex.state() == "connected" and lv.md_seen != [], why="both streams")
    yield lv
    lv.close()


# --- login and authentication ---------------------------------------------------------------------
def test_every_call_needs_the_app_key_and_a_session_the_betfair_way(srv: BetfairServer) -> None:
    s = _settings(srv)
    bad_key = BetfairApi(Credentials("not-our-app", USERNAME, PASSWORD), s)
    with pytest.raises(Exception) as e:
        bad_key.ensure_session()
    assert "INVALID_APP_KEY" in str(e.value)
    no_session = BetfairApi(Credentials(APP_KEY, "expired-session-token"), s)
    with pytest.raises(Exception) as e2:
        no_session.betting.list_market_catalogue(filter={})
    assert api_error_code(e2.value) == "INVALID_SESSION_INFORMATION"
    srv.add_key(APP_KEY, "issued-session-token")  # a session made elsewhere: used as it is
    ok = BetfairApi(Credentials(APP_KEY, "issued-session-token"), s)
    assert len(ok.betting.list_market_catalogue(filter={}, max_results=10)) == 2
    # the stream refuses a session it does not know, and says why
    worker = StreamWorker("t", "mcm", no_session, s, lambda *a: None, lambda m: None)
    worker.start()
    deadline = time.monotonic() + 5
    while "INVALID_SESSION" not in worker.last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop()
    assert "INVALID_SESSION_INFORMATION" in worker.last_error and worker.connects == 0
    got = probe_key("betfair", s, CREDS)
    assert (got.can_withdraw, got.can_trade) == (False, True)


# --- orders ---------------------------------------------------------------------------------------
def test_a_back_takes_the_best_odds_on_offer_and_the_reports_agree(live: Live) -> None:
    o = live.order((MID, ARSENAL), Side.BUY, "1.90", "10")  # back at 1.90 or better
    live.submit(o)
    live.wait(lambda: live.of(OrderFilled, o.client_order_id) != [], why="the back's fill")
    (acc,) = live.of(OrderAccepted, o.client_order_id)
    assert acc.venue_order_id > 0
    (f,) = live.of(OrderFilled, o.client_order_id)
    assert (f.fill_px, f.fill_qty, f.leaves_qty, f.side) == (200, 1000, 0, Side.BUY)  # at 2.00
    assert live.ex.positions() == {o.instrument_id: 1000}
    assert live.ex.fills_since(0) == [f] and live.ex.fills_since(f.fill_id) == []
    assert live.ex.fill_reports() == [FillReport.from_fill("betfair", f)]
    assert live.ex.position_reports() == [
        PositionReport(venue="betfair", instrument_id=o.instrument_id, qty=1000)
    ]
    rep = live.ex.query_order(o.client_order_id)
    assert rep is not None and (rep.status, rep.filled_qty, rep.open_qty) == (
        OrderStatus.FILLED,
        1000,
        0,
    )
    (bet,) = [b for b in srv_bets(live) if b.ref == live.ex.book.ref(o.client_order_id)]
    assert (bet.side, bet.matched, bet.avg_price) == ("BACK", Decimal(10), Decimal("2.00"))
    # the venue's book lost 10 at 2.00 on the back side: the feed saw it
    live.wait(
        lambda: any(
            getattr(m, "bid_px", 0) == 200 and getattr(m, "bid_qty", 0) == 9000
            for m in live.md_seen
        ),
        why="the quote after the match",
    )


def srv_bets(live: Live) -> list[Any]:
    return [b for b in live.srv.ex.bets.values() if b.account is not None]


def test_a_resting_lay_is_replaced_reduced_matched_by_a_backer_and_not_canceled_twice(
    live: Live,
) -> None:
    o = live.order((MID, ARSENAL), Side.SELL, "1.50", "20")  # lay at 1.50: below every back
    live.submit(o)
    coid = o.client_order_id
    live.wait(lambda: live.of(OrderAccepted, coid) != [], why="accepted")
    assert [(x.client_order_id, x.px, x.qty) for x in live.ex.open_orders()] == [(coid, 150, 2000)]
    # a new price is a new bet for the rest (replaceOrders); a smaller stake a sizeReduction
    live.events += live.ex.replace(
        ReplaceOrder(coid, 1, o.instrument_id, 160, 1500, 2, 2), time.time_ns()
    )
    live.wait(lambda: live.of(OrderReplaced, coid) != [], why="replaced")
    assert [(x.px, x.qty) for x in live.ex.open_orders()] == [(160, 1500)]
    assert live.srv.requests.count("replaceOrders") == 1 and "cancelOrders" in live.srv.requests
    bigger = ReplaceOrder(coid, 1, o.instrument_id, 160, 5000, 3, 3)
    (rej,) = live.ex.replace(bigger, time.time_ns())
    assert type(rej) is OrderReplaceRejected and "cannot add" in rej.detail
    # a backer at 1.60 or better takes the 300 GBP laid at 2.00-1.96 first, then 5 of ours
    live.srv.take(MID, ARSENAL, "BACK", "1.60", "305")
    live.wait(lambda: live.of(OrderPartiallyFilled, coid) != [], why="the lay's first fill")
    (p,) = live.of(OrderPartiallyFilled, coid)
    assert (p.fill_px, p.fill_qty, p.cum_qty, p.leaves_qty, p.side) == (
        160,
        500,
        500,
        1000,
        Side.SELL,
    )
    live.srv.take(MID, ARSENAL, "BACK", "1.60", "50")
    live.wait(lambda: live.of(OrderFilled, coid) != [], why="the rest")
    assert live.ex.positions() == {o.instrument_id: -1500}
    (late,) = live.ex.cancel(CancelOrder(coid, 1, o.instrument_id, 4, 4), time.time_ns())
    assert type(late) is OrderCancelRejected


def test_a_cancel_ends_the_bet_and_the_venue_refuses_what_it_cannot_take(live: Live) -> None:
    o = live.order((MID, CHELSEA), Side.BUY, "5.0", "4")  # back at 5.0: nobody lays that
    live.submit(o)
    live.wait(lambda: live.of(OrderAccepted, o.client_order_id) != [], why="accepted")
    live.events += live.ex.cancel(
        CancelOrder(o.client_order_id, 1, o.instrument_id, 2, 2), time.time_ns()
    )
    live.wait(lambda: live.of(OrderCanceled, o.client_order_id) != [], why="canceled")
    (c,) = live.of(OrderCanceled, o.client_order_id)
    assert c.leaves_qty == 400 and live.ex.open_orders() == []
    rejected: dict[str, str] = {}
    for name, order in (
        ("off the ladder", live.order((MID, CHELSEA), Side.BUY, "3.03", "2")),
        (
            "market order",
            live.order((MID, CHELSEA), Side.BUY, "3.0", "2", order_type=OrderType.MARKET),
        ),
        ("day order", live.order((MID, CHELSEA), Side.BUY, "3.0", "2", tif=TimeInForce.DAY)),
        (
            "duplicate",
            NewOrder(
                o.client_order_id,
                1,
                o.instrument_id,
                Side.BUY,
                OrderType.LIMIT,
                TimeInForce.GTC,
                300,
                200,
                1,
                1,
            ),
        ),
    ):
        (r,) = live.ex.submit(order, time.time_ns())
        assert type(r) is OrderRejected, name
        rejected[name] = r.reason
    assert "ladder" in rejected["off the ladder"] and "LIMIT" in rejected["market order"]
    assert "DAY" in rejected["day order"] and "duplicate" in rejected["duplicate"]
    # below the venue's minimum stake: the venue says so (exec's rules gate would say it first)
    tiny = live.order((MID, CHELSEA), Side.BUY, "5.0", "0.50")
    live.ex.inner.submit(tiny, time.time_ns())
    live.wait(lambda: live.of(OrderRejected, tiny.client_order_id) != [], why="venue refusal")
    assert "INVALID_BET_SIZE" in live.of(OrderRejected, tiny.client_order_id)[0].reason
    # fill or kill with 100 on offer at 3.00 for 500: lapses whole, nothing matched
    fok = live.order((MID, CHELSEA), Side.BUY, "3.0", "500", tif=TimeInForce.FOK)
    live.submit(fok)
    live.wait(lambda: live.of(OrderCanceled, fok.client_order_id) != [], why="fok lapsed")
    assert live.of(OrderCanceled, fok.client_order_id)[0].leaves_qty == 50_000
    assert live.of(OrderPartiallyFilled, fok.client_order_id) == []
    # immediate or cancel: what is there matches (100 at 3.00), the rest is cancelled
    ioc = live.order((MID, CHELSEA), Side.BUY, "3.0", "150", tif=TimeInForce.IOC)
    live.submit(ioc)
    live.wait(lambda: live.of(OrderCanceled, ioc.client_order_id) != [], why="ioc rest")
    (f,) = live.of(OrderPartiallyFilled, ioc.client_order_id)
    assert (f.fill_px, f.fill_qty) == (300, 10_000)
    assert live.of(OrderCanceled, ioc.client_order_id)[0].leaves_qty == 5_000


def test_a_suspended_market_refuses_bets_until_it_reopens(live: Live) -> None:
    live.srv.suspend(MID)
    # the venue refuses a bet sent before the news reached exec
    early = live.order((MID, CHELSEA), Side.BUY, "3.0", "2")
    live.submit(early)
    iid = live.ids[(MID, ARSENAL)]
    live.wait(lambda: live.of(OrderRejected, early.client_order_id) != [], why="venue refusal")
    assert "MARKET_SUSPENDED" in live.of(OrderRejected, early.client_order_id)[0].reason
    live.wait(
        lambda: any(type(e) is ExchangeStatus and e.instrument_id == iid for e in live.md_seen),
        why="the suspension on the stream",
    )
    st = next(e for e in live.md_seen if type(e) is ExchangeStatus and e.instrument_id == iid)
    assert (st.status, st.reason) == (ExchangeStatusKind.HALTED, "suspended")
    o = live.order((MID, ARSENAL), Side.BUY, "2.0", "2")
    (r,) = live.ex.submit(o, time.time_ns())
    assert type(r) is OrderRejected and "suspended" in r.reason
    live.srv.resume(MID)
    live.wait(lambda: iid not in live.ex.inner._halted, why="reopened")
    again = live.order((MID, ARSENAL), Side.BUY, "2.0", "2")
    live.submit(again)
    live.wait(lambda: live.of(OrderFilled, again.client_order_id) != [], why="filled after")


# --- settlement -----------------------------------------------------------------------------------
def test_a_back_and_a_lay_settle_with_commission_on_the_net_winnings(live: Live) -> None:
    """By hand: back 10 on Arsenal at 2.00 (wins: +10.00), lay 10 on Chelsea at 3.05 (Chelsea
    loses: the lay wins +10.00). Net +20.00; commission 5 % = 1.00 on the market's last
    Settlement; the account 1000 -> 1019.00."""
    back = live.order((MID, ARSENAL), Side.BUY, "2.0", "10")
    lay = live.order((MID, CHELSEA), Side.SELL, "3.05", "10")
    for o in (back, lay):
        live.submit(o)
    live.wait(lambda: len(live.of(OrderFilled)) == 2, why="both bets matched")
    assert live.ex.positions() == {back.instrument_id: 1000, lay.instrument_id: -1000}
    live.srv.settle(MID, ARSENAL)
    live.wait(lambda: len(live.of(Settlement)) == 2, why="two settlements")
    by = {s.instrument_id: s for s in live.of(Settlement)}
    a, c = by[back.instrument_id], by[lay.instrument_id]
    assert (a.kind, a.outcome, a.position, a.px) == (SettlementKind.RESOLVED, 1, 1000, 0)
    assert (c.kind, c.outcome, c.position) == (SettlementKind.RESOLVED, 0, -1000)
    assert sorted([a.fee, c.fee]) == [0.0, 1.0]
    assert live.ex.positions() == {}
    assert live.srv.ex.balance[USERNAME] == Decimal("1019.00")
    statuses = {(e.instrument_id, e.reason) for e in live.md_seen if type(e) is ExchangeStatus}
    assert {
        (back.instrument_id, "settled: winner"),
        (lay.instrument_id, "settled: loser"),
    } <= statuses
    (r,) = live.ex.submit(live.order((MID, ARSENAL), Side.BUY, "2.0", "2"), time.time_ns())
    assert type(r) is OrderRejected


def test_listings_are_read_page_by_page(live: Live) -> None:
    live.srv.page_size = 1  # one row a call: every listing needs its pages
    bets = [live.order((MID, CHELSEA), Side.BUY, odds, "2") for odds in ("6.0", "6.2", "6.4")]
    for o in bets:
        live.submit(o)
    live.wait(lambda: len(live.of(OrderAccepted)) == 3, why="three resting bets")
    live.ex.close()
    again = Live(live.srv)  # the restart reads listCurrentOrders: three pages
    try:
        assert sorted(x.px for x in again.ex.open_orders()) == [600, 620, 640]
        assert live.srv.requests.count("listCurrentOrders") >= 3
    finally:
        again.close()


def test_a_market_voided_after_fills_undoes_the_bets(live: Live) -> None:
    back = live.order((MID2, UNDER), Side.BUY, "2.0", "6")
    rest = live.order((MID2, UNDER), Side.BUY, "9.0", "3")  # rests: lapses at the close
    live.submit(back)
    live.submit(rest)
    live.wait(lambda: live.of(OrderFilled, back.client_order_id) != [], why="matched")
    live.wait(lambda: live.of(OrderAccepted, rest.client_order_id) != [], why="resting")
    live.srv.void(MID2)
    live.wait(lambda: live.of(Settlement) != [], why="void")
    (v,) = live.of(Settlement)
    assert (v.kind, v.outcome, v.position, v.fee) == (SettlementKind.VOID, -1, 600, 0.0)
    live.wait(
        lambda: live.ex.query_order(rest.client_order_id).status == OrderStatus.EXPIRED,
        why="lapsed",
    )
    assert live.srv.ex.balance[USERNAME] == Decimal("1000")  # stakes back, no commission


# --- faults ---------------------------------------------------------------------------------------
def test_a_fill_while_the_stream_is_down_arrives_once_after_the_reconnect(live: Live) -> None:
    o = live.order((MID, ARSENAL), Side.SELL, "1.50", "10")
    live.submit(o)
    live.wait(lambda: live.of(OrderAccepted, o.client_order_id) != [], why="resting")
    before = live.ex.inner._stream.connects
    live.srv.faults.arm("disconnect")
    live.srv.take(MID, ARSENAL, "BACK", "1.50", "310")  # the house's 300 first, then ours
    live.wait(lambda: live.of(OrderFilled, o.client_order_id) != [], why="the fill")
    live.wait(lambda: live.ex.inner._stream.connects > before, why="reconnected")
    time.sleep(0.5)
    live.pump()
    assert (
        len(live.of(OrderFilled, o.client_order_id)) == 1
        and live.of(OrderPartiallyFilled, o.client_order_id) == []
    )
    assert live.md.counters()["reconnects"] >= 1


def test_an_expired_session_is_logged_in_again_and_the_bet_placed_once(live: Live) -> None:
    live.srv.sessions.clear()  # the venue forgot every session (expired)
    o = live.order((MID, ARSENAL), Side.BUY, "2.0", "3")
    live.submit(o)
    live.wait(lambda: live.of(OrderFilled, o.client_order_id) != [], why="placed after login")
    assert live.ex.inner.stats["relogins"] >= 1
    assert [b.size for b in srv_bets(live)] == [Decimal(3)]


def test_rate_limits_are_waited_out_and_a_stale_stream_is_reconnected(live: Live) -> None:
    live.srv.faults.arm("rate_limit", times=2)
    o = live.order((MID, ARSENAL), Side.BUY, "2.0", "2")
    live.submit(o)
    live.wait(lambda: live.of(OrderFilled, o.client_order_id) != [], why="placed after waits")
    assert live.ex.inner.stats["rate_limited"] >= 2 and live.srv.faults.fired["rate_limit"] >= 2
    before = live.md.counters()["reconnects"]
    live.srv.faults.arm("stall", seconds=2.5)  # no data, no heartbeat: stale after 1.5 s
    live.wait(
        lambda: live.md.counters()["reconnects"] > before, timeout_s=10, why="stale -> reconnect"
    )


def test_a_restarted_client_knows_its_resting_bets_from_the_venue(live: Live) -> None:
    o = live.order((MID, CHELSEA), Side.BUY, "6.0", "3")
    done = live.order((MID, ARSENAL), Side.BUY, "2.0", "10")
    live.submit(o)
    live.submit(done)
    live.wait(lambda: live.of(OrderAccepted, o.client_order_id) != [], why="resting")
    live.wait(lambda: live.of(OrderFilled, done.client_order_id) != [], why="matched")
    live.ex.close()
    again = Live(live.srv)
    try:
        assert again.ex.knows_order(o.client_order_id) and again.ex.knows_order(
            done.client_order_id
        )
        assert [(x.client_order_id, x.px, x.qty) for x in again.ex.open_orders()] == [
            (o.client_order_id, 600, 300)
        ]
        assert again.ex.poll(time.time_ns()) == []  # known again quietly, not accepted twice
        # the matched bet is the venue's position; its fills are the record's, not new ones
        assert again.ex.positions() == {done.instrument_id: 1000}
        assert again.ex.fills_since(0) == []
    finally:
        again.close()


# --- the local venue speaks Betfair's shapes ------------------------------------------------------
def test_betfairlightweights_own_resources_and_stream_caches_read_the_local_venue(
    srv: BetfairServer,
) -> None:
    """The library's typed resources (not our lightweight dicts) and its stream caches need
    every field Betfair documents as always there: the local venue sends them."""
    import json

    import requests
    from betfairlightweight import APIClient
    from betfairlightweight.streaming import StreamListener

    from tests.venues.betfair_stream import market_change, market_state, order_json

    c = APIClient(USERNAME, PASSWORD, app_key=APP_KEY, session=requests.Session())
    c.identity_uri, c.api_uri = f"{srv.rest_url}/api/", f"{srv.rest_url}/exchange/"
    c.login_interactive()
    proj = ["RUNNER_DESCRIPTION", "EVENT", "MARKET_DESCRIPTION"]
    cat = c.betting.list_market_catalogue(filter={}, market_projection=proj, max_results=10)
    assert [r.runner_name for r in cat[0].runners] == ["Arsenal", "Chelsea", "The Draw"]
    (book,) = c.betting.list_market_book([MID])
    assert (book.status, book.runners[0].ex.available_to_back[0].price) == ("OPEN", 2)
    limit = {"size": 2.0, "price": 1.5, "persistenceType": "LAPSE"}
    ins = {"orderType": "LIMIT", "selectionId": ARSENAL, "side": "LAY", "limitOrder": limit}
    placed = c.betting.place_orders(MID, [ins | {"customerOrderRef": "r1"}])
    bet = placed.place_instruction_reports[0].bet_id
    rep = c.betting.replace_orders(MID, [{"betId": bet, "newPrice": 1.6}])
    new = rep.replace_instruction_reports[0].place_instruction_reports.bet_id
    assert [o.bet_id for o in c.betting.list_current_orders().orders] == [bet, new]
    assert c.betting.cancel_orders(MID, [{"betId": new}]).status == "SUCCESS"
    assert c.account.get_account_funds().available_to_bet_balance == 1000
    srv.settle(MID, ARSENAL)
    assert c.betting.list_cleared_orders(bet_status="SETTLED").orders == []  # nothing matched
    m = srv.ex.markets[MID]
    mcm = {"op": "mcm", "id": 1, "clk": "1", "pt": 1, "ct": "SUB_IMAGE"}
    lst = StreamListener(max_latency=None)
    lst.register_stream(1, "marketSubscription")
    lst.on_data(json.dumps(mcm | {"mc": [market_change(m, market_state(m), None)]}))
    (mb,) = lst.snap()
    assert (mb.status, [r.status for r in mb.runners]) == ("CLOSED", ["WINNER", "LOSER", "LOSER"])
    ocm = {"op": "ocm", "id": 2, "clk": "1", "pt": 1, "ct": "SUB_IMAGE"}
    orc = {"id": ARSENAL, "fullImage": True, "uo": [order_json(srv.ex.bets[bet])]}
    orders = StreamListener(max_latency=None)
    orders.register_stream(2, "orderSubscription")
    orders.on_data(json.dumps(ocm | {"oc": [{"id": MID, "orc": [orc]}]}))
    (o,) = orders.snap()[0].orders
    assert (o.bet_id, o.customer_order_ref, o.status) == (bet, "r1", "EXECUTION_COMPLETE")


@pytest.mark.parametrize("policy", ["halt", "cancel"])
def test_a_bet_this_engine_did_not_place_halts_the_venue_or_is_canceled(
    srv: BetfairServer, policy: str
) -> None:
    live = Live(srv, external_orders=policy)
    try:
        live.wait(lambda: live.ex.state() == "connected", why="connected")
        manual = BetfairApi(CREDS, _settings(srv))  # the account's owner, by hand
        manual.ensure_session()
        limit = {"size": 5.0, "price": 1.5, "persistenceType": "LAPSE"}
        ins = {"orderType": "LIMIT", "selectionId": ARSENAL, "side": "LAY", "limitOrder": limit}
        got = manual.betting.place_orders(MID, [ins | {"customerOrderRef": "by-hand"}])
        bet = srv.ex.bets[got["instructionReports"][0]["betId"]]
        if policy == "halt":
            live.wait(lambda: live.ex.state() == "halted", why="halted")
            (st,) = [e for e in live.events if type(e) is ExchangeStatus]
            assert (st.instrument_id, st.status) == (-1, ExchangeStatusKind.HALTED)
            (r,) = live.ex.submit(live.order((MID, CHELSEA), Side.BUY, "3.0", "2"), 1)
            assert type(r) is OrderRejected and "not placed by this engine" in r.reason
            assert bet.remaining == 5  # left alone
        else:
            live.wait(lambda: bet.remaining == 0, why="canceled at the venue")
            assert live.ex.state() == "connected" and bet.cancelled == 5
    finally:
        live.close()


def test_a_venue_down_at_start_is_tried_again_until_it_answers() -> None:
    import socket

    from engine.venues.betfair_exec import BetfairExecutionClient

    ports = []
    for _ in range(2):  # ports nobody listens on yet
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    srv = BetfairServer(port=ports[0], stream_port=ports[1])
    s = _settings(srv) | {"rest_url": f"http://127.0.0.1:{ports[0]}", "timeout_ms": 500}
    ex = BetfairExecutionClient("betfair", [], s, CREDS, start=False)
    try:
        assert ex.start(0.5) is False and ex.state() == "down"
        srv.start()
        deadline = time.monotonic() + 10
        while ex.state() != "connected" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.state() == "connected" and ex.synced.is_set()
    finally:
        ex.close()
        srv.stop()


def test_the_data_client_refuses_bad_keys_and_waits_out_a_venue_that_does_not_answer(
    srv: BetfairServer,
) -> None:
    from engine.instruments import InstrumentTable
    from engine.venues.betfair_data import BetfairDataClient

    wrong = Credentials(APP_KEY, USERNAME, "not-the-password")
    md = BetfairDataClient("betfair", InstrumentTable([]), [], _settings(srv), wrong)
    with pytest.raises(ValueError, match="INVALID_USERNAME_OR_PASSWORD"):
        md.connect()  # retrying would not fix it: the feed says so and stops
    away = _settings(srv) | {"rest_url": "http://127.0.0.1:1", "timeout_ms": 300}
    md = BetfairDataClient("betfair", InstrumentTable([]), [], away, CREDS)
    md.connect()  # not answered: the stream's reconnects try again
    assert md.state() == "down"
