"""Polymarket's CLOB against the local server (tests/venues/polymarket.py): signatures checked the
venue's way, markets as binary instruments, the market channel, live orders, fills and
resolution with hand-computed P&L. Keys are throwaway wallets made here (eth-account)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from engine.enums import ExchangeStatusKind, Liquidity, OrderFlag, OrderType, Side, TimeInForce
from engine.instruments import InstrumentTable
from engine.messages import (
    BookDelta,
    BookSnapshot,
    CancelOrder,
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    Quote,
    ReplaceOrder,
    Settlement,
    Trade,
)
from engine.portfolio import Portfolio
from engine.venues import polymarket_wire as wire
from engine.venues.ccxt_markets import instrument_for
from engine.venues.ccxt_session import Credentials
from engine.venues.data import SequenceGuard
from engine.venues.polymarket_data import PolymarketDataClient
from engine.venues.polymarket_exec import PolymarketExecutionClient
from engine.venues.polymarket_rest import load_markets
from tests.venues.polymarket import PolymarketServer

RAIN_YES, RAIN_NO = "will-it-rain-in-lisbon-YES/USDC", "will-it-rain-in-lisbon-NO/USDC"
FED_YES = "fed-cuts-in-march-YES/USDC"


@pytest.fixture
def srv() -> Iterator[PolymarketServer]:
    s = PolymarketServer().start()
    yield s
    s.stop()


def _wallet() -> tuple[str, str]:
    a = Account.create()
    return a.key.hex(), a.address


def _settings(s: PolymarketServer) -> dict[str, Any]:
    return {"rest_url": s.rest_url, "ws_url": s.ws_url, "rest_poll_s": 0.1, "ping_s": 0.5}


def _table(markets: dict[str, Any]) -> InstrumentTable:
    return InstrumentTable(
        [instrument_for(k + 1, "pm", markets[s]) for k, s in enumerate(sorted(markets))]
    )


def _until(pred: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


# --- the wire: what the venue checks ----------------------------------------------------------------
def _l2_post(s: PolymarketServer, addr: str, creds: tuple[str, str, str], body: str) -> Any:
    h = wire.l2_headers(addr, creds, "POST", "/order", body, int(time.time()))
    return httpx.post(s.rest_url + "/order", headers=h, content=body)


def test_the_clob_checks_l1_l2_and_order_signatures_the_venues_way(srv: PolymarketServer) -> None:
    pk, addr = _wallet()
    other, _ = _wallet()
    forged = wire.l1_headers(other, wire.CHAIN_ID) | {"POLY_ADDRESS": addr}
    assert httpx.post(srv.rest_url + "/auth/api-key", headers=forged).status_code == 401
    got = httpx.post(srv.rest_url + "/auth/api-key", headers=wire.l1_headers(pk, wire.CHAIN_ID))
    c = got.json()
    creds = (c["apiKey"], c["secret"], c["passphrase"])
    again = httpx.get(srv.rest_url + "/auth/derive-api-key", headers=wire.l1_headers(pk, 137))
    assert again.json() == c  # derived: the same key for the same wallet

    token = srv.markets[next(iter(srv.markets))].tokens[0][0]
    signed = wire.sign_order(
        pk, 137, token_id=token, side=Side.BUY, price="0.45", size="10", tick="0.001"
    )
    body = json.dumps({"order": signed, "owner": creds[0], "orderType": "GTC"})
    wrong = (creds[0], "c2VjcmV0LW5vdC10aGUta2V5czEyMzQ1Njc4OTAxMg==", creds[2])
    assert _l2_post(srv, addr, wrong, body).status_code == 401  # HMAC with another secret
    h = wire.l2_headers(addr, creds, "POST", "/order", body, int(time.time()))
    tampered = body.replace('"10000000"', '"20000000"')
    assert httpx.post(srv.rest_url + "/order", headers=h, content=tampered).status_code == 401

    forged_order = dict(signed, takerAmount="20000000")  # changed after signing
    bad = _l2_post(srv, addr, creds, json.dumps({"order": forged_order, "owner": creds[0]}))
    assert bad.status_code == 400 and bad.json()["errorMsg"] == "invalid signature"
    by_other = wire.sign_order(
        other, 137, token_id=token, side=1, price="0.45", size="10", tick="0.001"
    )
    bad = _l2_post(srv, addr, creds, json.dumps({"order": by_other, "owner": creds[0]}))
    assert bad.json()["errorMsg"] == "invalid signature"
    assert srv.signature_failures == 2 and srv.auth_failures == 3

    ok = _l2_post(srv, addr, creds, body).json()
    assert ok["success"] and ok["status"] == "live"
    assert ok["orderID"] == wire.order_hash(signed, 137)  # the id is the typed-data hash
    assert wire.order_terms(signed) == ("BUY", Decimal("0.45"), Decimal("10"))


def test_py_clob_client_itself_trades_on_the_local_clob(srv: PolymarketServer) -> None:
    """The official client (its own headers, order builder and body) against our server: the
    local CLOB speaks the protocol, not just our reading of it."""
    from py_clob_client.client import ClobClient
    from py_clob_client.clob_types import OrderArgs

    pk, _ = _wallet()
    client = ClobClient(srv.rest_url, key=pk, chain_id=137)
    client.set_api_creds(client.create_or_derive_api_creds())
    token = srv.markets[next(iter(srv.markets))].tokens[0][0]
    order = client.create_order(OrderArgs(token_id=token, price=0.41, size=12.5, side="BUY"))
    got = client.post_order(order)
    assert got["success"] and got["orderID"] == wire.order_hash(order.dict(), 137)
    assert [o["id"] for o in client.get_orders()] == [got["orderID"]]
    assert client.cancel(got["orderID"])["canceled"] == [got["orderID"]]
    assert client.get_orders() == []


def test_markets_are_binary_instruments_one_per_outcome_token(srv: PolymarketServer) -> None:
    markets = load_markets(_settings(srv))
    assert sorted(markets) == sorted([RAIN_YES, RAIN_NO, FED_YES, "fed-cuts-in-march-NO/USDC"])
    rain = markets[RAIN_YES]
    cid = next(m.condition_id for m in srv.markets.values() if m.slug.startswith("will"))
    assert rain.instrument["kind"] == "binary" and rain.instrument["market_id"] == cid
    assert rain.instrument["outcome"] == "Yes" and rain.instrument["resolves_ns"] > 0
    assert (rain.tick, rain.lot, rain.min_qty, rain.quote) == ("0.001", "0.01", "5", "USDC")
    assert markets[FED_YES].tick == "0.01"
    assert rain.venue_symbol == srv.markets[cid].tokens[0][0]
    ins = instrument_for(1, "pm", rain)
    assert ins.kind == "binary" and ins.outcome == "Yes" and ins.tick_size == 0.001
    # resolution: the winner pays 1, a 50/50 pays 0.5 each, a closed unresolved market nothing
    toks = [{"token_id": "a", "winner": True, "price": 1}, {"token_id": "b", "price": 0}]
    assert wire.resolution_payouts({"closed": True, "tokens": toks}) == {"a": 1, "b": 0}
    half = [{"token_id": "a", "price": 0.5}, {"token_id": "b", "price": 0.5}]
    assert wire.resolution_payouts({"closed": True, "tokens": half}) == {"a": 0.5, "b": 0.5}
    open_ = [{"token_id": "a", "price": 0.7}, {"token_id": "b", "price": 0.3}]
    assert wire.resolution_payouts({"closed": True, "tokens": open_}) is None
    assert wire.resolution_payouts({"closed": False, "tokens": toks}) is None


# --- the market channel -----------------------------------------------------------------------------
def test_market_channel_books_in_sequence_prints_reconnects_and_halts(
    srv: PolymarketServer,
) -> None:
    markets = load_markets(_settings(srv))
    table = _table(markets)
    md = PolymarketDataClient("pm", table, _settings(srv) | {"markets": markets})
    md.connect()
    md.subscribe(table.ids)
    got: list[object] = []

    def take(pred: Callable[[list[object]], bool]) -> bool:
        def more() -> bool:
            got.extend(md.poll_updates())
            return pred(got)

        return _until(more)

    try:
        assert take(lambda ms: sum(isinstance(m, BookSnapshot) for m in ms) == 4)
        yes = table.by_symbol(RAIN_YES)
        snap = next(
            m for m in got if isinstance(m, BookSnapshot) and m.instrument_id == yes.instrument_id
        )
        assert (snap.bid_px[:2], snap.ask_px[:2]) == ([480, 470], [520, 530])
        assert snap.bid_qty[0] == 30_000  # 300 shares in lots of 0.01
        token = markets[RAIN_YES].venue_symbol
        srv.call(srv.market_take, token, "buy", "100")  # takes 100 of the 300 at 0.52
        assert take(lambda ms: any(isinstance(m, Trade) for m in ms))
        assert take(
            lambda ms: any(
                isinstance(m, Quote)
                and m.instrument_id == yes.instrument_id
                and m.ask_qty == 20_000
                for m in ms
            )
        )
        trade = next(m for m in got if isinstance(m, Trade))
        assert (trade.px, trade.qty, trade.side) == (520, 10_000, Side.BUY)
        delta = next(m for m in got if isinstance(m, BookDelta))
        assert (delta.side, delta.px, delta.qty) == (Side.SELL, 520, 20_000)
        guard = SequenceGuard()
        assert all(guard.accept(m) for m in got) and guard.gaps == 0

        srv.faults.arm("disconnect", stream="market")
        n = len(got)
        assert take(lambda ms: sum(isinstance(m, BookSnapshot) for m in ms[n:]) == 4)
        assert md.counters()["reconnects"] >= 1 and md.counters()["resyncs"] >= 4

        srv.call(srv.change_tick, token, "0.01")
        assert take(lambda ms: any(isinstance(m, ExchangeStatus) for m in ms))
        halt = next(m for m in got if isinstance(m, ExchangeStatus))
        assert halt.status == ExchangeStatusKind.HALTED and "tick size changed" in halt.reason
        assert yes.instrument_id in md.halted
        cid = markets[FED_YES].instrument["market_id"]
        srv.call(srv.resolve, cid, "No")
        fed = table.by_symbol(FED_YES).instrument_id
        assert take(
            lambda ms: any(isinstance(m, ExchangeStatus) and m.instrument_id == fed for m in ms)
        )
        why = next(
            m.reason for m in got if isinstance(m, ExchangeStatus) and m.instrument_id == fed
        )
        assert why == "market resolved (No): pays 0"
    finally:
        md.close()


# --- live execution -----------------------------------------------------------------------------------
class Live:
    """A live execution client on a fresh wallet, with what it said so far."""

    def __init__(
        self, srv: PolymarketServer, journal: Path | None = None, pk: str = "", **settings: Any
    ) -> None:
        self.srv = srv
        self.markets = load_markets(_settings(srv))
        self.table = _table(self.markets)
        self.pk = pk or _wallet()[0]
        self.ex = PolymarketExecutionClient(
            "pm",
            self.table,
            self.markets,
            _settings(srv) | settings,
            Credentials("", self.pk),
            journal=journal,
        )
        self.events: list[object] = []

    def iid(self, sym: str) -> int:
        return self.table.by_symbol(sym).instrument_id

    def token(self, sym: str) -> str:
        return self.markets[sym].venue_symbol

    def order(self, coid: int, sym: str, side: Side, px: int, lots: int, **kw: Any) -> None:
        o = NewOrder(
            coid,
            1,
            self.iid(sym),
            side,
            kw.pop("order_type", OrderType.LIMIT),
            kw.pop("tif", TimeInForce.GTC),
            px,
            lots,
            0,
            0,
            **kw,
        )
        self.events += self.ex.submit(o, 0)

    def wait(self, pred: Callable[[list[object]], bool], timeout_s: float = 5.0) -> bool:
        def more() -> bool:
            self.events += self.ex.poll(0)
            return pred(self.events)

        return _until(more, timeout_s)

    def of(self, t: type, coid: int | None = None) -> list[Any]:
        return [
            e for e in self.events if type(e) is t and (coid is None or e.client_order_id == coid)
        ]


@pytest.fixture
def live(srv: PolymarketServer) -> Iterator[Live]:
    lv = Live(srv)
    assert lv.ex.state() == "connected"
    yield lv
    lv.ex.close()


def test_live_orders_rest_replace_fill_and_are_refused_with_the_venues_reasons(live: Live) -> None:
    live.order(1, RAIN_YES, Side.BUY, 450, 2000)  # 20 shares at 0.45: rests
    assert live.wait(lambda ev: len(live.of(OrderAccepted, 1)) == 1)
    assert [(o.px, o.qty) for o in live.ex.open_orders()] == [(450, 2000)]
    live.events += live.ex.replace(ReplaceOrder(1, 1, live.iid(RAIN_YES), 440, 1500, 0, 0), 0)
    assert live.wait(lambda ev: len(live.of(OrderReplaced, 1)) == 1)
    assert [(o.px, o.qty) for o in live.ex.open_orders()] == [(440, 1500)]
    (resting,) = [
        o for o in live.srv.matcher.orders.values() if o.is_open and o.account != "market"
    ]
    assert (resting.price, resting.amount) == (Decimal("0.44"), Decimal("15"))

    # through the bids at 0.48 (300) and 0.47 (500) down to ours at 0.44
    live.srv.call(live.srv.market_take, live.token(RAIN_YES), "sell", "815", "0.44")
    assert live.wait(lambda ev: live.of(OrderFilled, 1))
    (fill,) = live.of(OrderFilled, 1)
    assert (fill.fill_px, fill.fill_qty, fill.liquidity) == (440, 1500, Liquidity.MAKER)

    live.order(2, RAIN_YES, Side.BUY, 520, 1000, tif=TimeInForce.FOK)  # takes the ask
    assert live.wait(lambda ev: live.of(OrderFilled, 2))
    assert live.of(OrderFilled, 2)[0].liquidity == Liquidity.TAKER
    live.order(3, RAIN_YES, Side.BUY, 300, 1000, tif=TimeInForce.IOC)  # FAK: nothing to take
    live.order(4, RAIN_YES, Side.BUY, 530, 1000, flags=int(OrderFlag.POST_ONLY))
    live.order(5, RAIN_YES, Side.BUY, 500, 100)  # 1 share: below the market's 5
    live.order(6, RAIN_YES, Side.BUY, 0, 1000, order_type=OrderType.MARKET)
    assert live.wait(lambda ev: all(live.of(OrderRejected, c) for c in (3, 4, 5, 6)))
    why = {c: live.of(OrderRejected, c)[0].reason for c in (3, 4, 5, 6)}
    assert "no orders found to match with FAK order" in why[3]
    assert "post-only order: order crosses book" in why[4]
    assert "lower than the minimum: 5" in why[5]
    assert "limit orders only" in why[6]
    assert live.ex.positions() == {live.iid(RAIN_YES): 2500}

    live.srv.faults.arm("rate_limit", retry_after=0.2, path="/order")
    live.order(7, RAIN_YES, Side.BUY, 400, 1000)
    assert live.wait(lambda ev: live.of(OrderRejected, 7))
    assert "rate limited by the venue" in live.of(OrderRejected, 7)[0].reason
    live.events += live.ex.cancel(CancelOrder(1, 1, live.iid(RAIN_YES), 0, 0), 0)
    assert live.wait(lambda ev: live.ex.poll(0) == [] and bool(live.events))


def test_a_market_resolved_while_an_order_rests_cancels_it_and_settles_by_hand(live: Live) -> None:
    """Hand-computed: 10 000 USDC; buy 10 YES taking the ask at 0.52 (-5.20); a bid of 20 at
    0.49 (the best) hit for 5 (-2.45); 15 YES held, cost 7.65. The market resolves YES while 15
    of the bid rest: the rest is canceled (its 7.35 freed), the 15 shares pay 15.00: realized
    +7.35 and 10 007.35 USDC at the venue."""
    live.order(1, RAIN_YES, Side.BUY, 520, 1000, tif=TimeInForce.FOK)
    live.order(2, RAIN_YES, Side.BUY, 490, 2000)
    assert live.wait(lambda ev: live.of(OrderFilled, 1) and live.of(OrderAccepted, 2))
    live.srv.call(live.srv.market_take, live.token(RAIN_YES), "sell", "5", "0.49")
    assert live.wait(lambda ev: live.of(OrderPartiallyFilled, 2))
    cid = live.markets[RAIN_YES].instrument["market_id"]
    live.srv.call(live.srv.resolve, cid, "Yes")
    assert live.wait(
        lambda ev: live.of(OrderCanceled, 2) and any(type(e) is Settlement for e in ev)
    )
    assert live.of(OrderCanceled, 2)[0].leaves_qty == 1500
    (st,) = [e for e in live.events if type(e) is Settlement]
    assert (st.instrument_id, st.px, st.outcome, st.position) == (live.iid(RAIN_YES), 1000, 1, 1500)
    assert live.ex.positions() == {}
    assert live.wait(lambda ev: live.ex.balances()[0].total == pytest.approx(10_007.35))

    pf = Portfolio(live.table, 10_000.0, base_currency="USDC")
    for e in live.events:
        if isinstance(e, OrderPartiallyFilled | Settlement):
            pf.on_event(e)
    assert pf.position(live.iid(RAIN_YES)) == 0
    assert pf.realized() == pytest.approx(7.35)
    live.order(3, RAIN_YES, Side.BUY, 450, 1000)  # the market is over
    assert "the market is resolved" in live.of(OrderRejected, 3)[0].reason


def test_a_50_50_resolution_pays_half_a_share(live: Live) -> None:
    """Buy 10 NO at 0.51 (-5.10); resolved 50/50: each share pays 0.50 (+5.00): -0.10."""
    live.order(1, RAIN_NO, Side.BUY, 510, 1000, tif=TimeInForce.FOK)
    assert live.wait(lambda ev: live.of(OrderFilled, 1))
    live.srv.call(live.srv.resolve, live.markets[RAIN_NO].instrument["market_id"], "50-50")
    assert live.wait(lambda ev: any(type(e) is Settlement for e in ev))
    (st,) = [e for e in live.events if type(e) is Settlement]
    assert (st.px, st.outcome, st.position) == (500, 1, 1000)
    assert live.wait(lambda ev: live.ex.balances()[0].total == pytest.approx(9_999.90))
    pf = Portfolio(live.table, 10_000.0, base_currency="USDC")
    for e in live.events:
        if isinstance(e, OrderPartiallyFilled | Settlement):
            pf.on_event(e)
    assert pf.realized() == pytest.approx(-0.10)


def test_fills_missed_while_the_user_channel_is_down_come_from_rest(live: Live) -> None:
    live.order(1, RAIN_YES, Side.BUY, 490, 2000)
    assert live.wait(lambda ev: live.of(OrderAccepted, 1))
    live.srv.faults.arm("fill_while_down")  # drops the user channel and withholds its events
    live.srv.call(live.srv.market_take, live.token(RAIN_YES), "sell", "20", "0.49")
    assert live.wait(lambda ev: live.of(OrderFilled, 1))
    assert live.srv.events.withheld >= 1 and live.ex.stats["user_reconnects"] >= 1
    assert sum(f.fill_qty for f in live.ex.fills_since(0)) == 2000  # once, not twice


def test_a_restarted_client_knows_its_orders_from_the_journal(
    srv: PolymarketServer, tmp_path: Path
) -> None:
    first = Live(srv, journal=tmp_path / "pm.venue")
    first.order(1, RAIN_YES, Side.BUY, 450, 2000)
    assert first.wait(lambda ev: first.of(OrderAccepted, 1))
    first.events += first.ex.replace(ReplaceOrder(1, 1, first.iid(RAIN_YES), 440, 1500, 0, 0), 0)
    assert first.wait(lambda ev: first.of(OrderReplaced, 1))
    first.ex.close()
    again = Live(srv, journal=tmp_path / "pm.venue", pk=first.pk)
    try:
        assert again.ex.knows_order(1) and again.ex.stats["restored"] == 1
        assert [(o.client_order_id, o.px, o.qty) for o in again.ex.open_orders()] == [
            (1, 440, 1500)  # the replaced terms
        ]
        again.events += again.ex.cancel(CancelOrder(1, 1, again.iid(RAIN_YES), 0, 0), 0)
        assert again.wait(lambda ev: again.of(OrderCanceled, 1))
        assert not any(o.is_open for o in srv.matcher.orders.values() if o.account != "market")
    finally:
        again.ex.close()


def test_gtd_orders_carry_the_venues_minute_of_margin(live: Live) -> None:
    exp = time.time_ns() + 30 * 10**9
    live.order(1, RAIN_YES, Side.BUY, 450, 1000, tif=TimeInForce.GTD, expire_ns=exp)
    live.order(2, RAIN_YES, Side.BUY, 450, 1000, tif=TimeInForce.GTD)  # no expiry given
    live.order(3, RAIN_YES, Side.BUY, 450, 1000, tif=TimeInForce.DAY)
    assert live.wait(lambda ev: live.of(OrderAccepted, 1))
    assert "GTD needs expire_ns" in live.of(OrderRejected, 2)[0].reason
    assert "the CLOB has GTC, GTD, FOK and IOC" in live.of(OrderRejected, 3)[0].reason
    (o,) = [o for o in live.srv.matcher.orders.values() if o.is_open and o.account != "market"]
    assert o.extra["order_type"] == "GTD"
    assert int(o.extra["expiration"]) == exp // 10**9 + 60


def test_paper_settles_when_the_channel_says_the_market_resolved(srv: PolymarketServer) -> None:
    """The paper venue (the simulated exchange on the CLOB's book) closes its position at the
    payout the market channel names: 10 YES bought at 0.52, the market resolves YES (1)."""
    from engine.venues.polymarket_paper import payout_of, resolved_reason
    from engine.venues.registry import VenueConfig, lookup

    markets = load_markets(_settings(srv))
    yes = instrument_for(1, "pm", markets[RAIN_YES])
    settings = _settings(srv) | {"markets": markets, "latency_ns": 1000}
    ex = lookup("polymarket").execution(
        VenueConfig("pm", "polymarket", InstrumentTable([yes]), settings)
    )
    t = 10**9
    ev = ex.on_market_data(BookSnapshot(1, [480], [30_000], [520], [30_000], t, t, 1), t)
    ev += ex.submit(
        NewOrder(1, 1, 1, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 520, 1000, t, t), t
    )
    ev += ex.poll(2 * t)
    assert [type(e) for e in ev] == [OrderAccepted, OrderFilled] and ex.positions() == {1: 1000}
    why = resolved_reason("Yes", Decimal(1))
    assert why == "market resolved (Yes): pays 1" and payout_of(why) == 1
    assert payout_of(resolved_reason("50-50", Decimal("0.5"))) == Decimal("0.5")
    assert payout_of("tick size changed to 0.01 (configured 0.001): restart") is None
    ev = ex.on_market_data(ExchangeStatus(1, ExchangeStatusKind.HALTED, why, 3 * t, 3 * t), 3 * t)
    ev += ex.poll(4 * t)
    (st,) = [e for e in ev if type(e) is Settlement]
    assert (st.px, st.outcome, st.position) == (1000, 1, 1000)
    assert ex.positions().get(1, 0) == 0
    ex.on_market_data(ExchangeStatus(1, ExchangeStatusKind.HALTED, why, 5 * t, 5 * t), 5 * t)
    assert not [e for e in ex.poll(6 * t) if type(e) is Settlement]  # once


def test_a_silent_user_channel_is_reconnected(srv: PolymarketServer) -> None:
    lv = Live(srv, stale_after_s=0.4, ping_s=0.1)
    try:
        assert lv.ex.state() == "connected"
        srv.faults.arm("stall", seconds=1.0, stream="user")  # no events, no PONG
        assert _until(lambda: lv.ex.stats["user_reconnects"] >= 1)
    finally:
        lv.ex.close()


def test_the_ethereum_libraries_leave_the_recursion_limit_and_poison_frames_raise() -> None:
    """py_ecc raises the recursion limit to 100,000 on import; the engine puts it back, so a
    deeply nested frame is still a RecursionError for the bridge, not a crashed process."""
    code = (
        "import sys\n"
        "limit = sys.getrecursionlimit()\n"
        "import engine.venues.polymarket_wire\n"
        "import eth_account, py_clob_client.client\n"
        "assert sys.getrecursionlimit() == limit, sys.getrecursionlimit()\n"
        "from procs.bridge_recv import decode_remote\n"
        "deep = b'\\x96\\x30\\xa1p\\xa1r\\xa31-0\\x01' * 100_000\n"
        "try:\n"
        "    decode_remote(deep)\n"
        "except RecursionError:\n"
        "    print('refused')\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stderr[-2000:]
