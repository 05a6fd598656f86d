"""The local Coinbase Advanced Trade server against RAW ccxt (async REST + pro websockets).

If ccxt 4.5.90's ``coinbase``, rebased onto the server and signing with a CDP key (an ES256
JWT), loads the products' rules, trades, and sees each armed fault as the ccxt exception the
real exchange's answer gives, the adapter tests that run on this server exercise what Coinbase
would do to them. The key pair is generated per run; the server holds only what it needs.
Every test runs on one module server (its random walk off: books move only by our orders)
with a fresh key and account.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxt_pro
import pytest

from engine.venues.ccxt_session import rebase_urls
from tests.venues.coinbase import CoinbaseServer
from tests.venues.coinbase_auth import new_test_key

_accounts = itertools.count(1)
Key = tuple[str, str]


@pytest.fixture(scope="module")
def server() -> Iterator[CoinbaseServer]:
    with CoinbaseServer(md_interval_s=3600, heartbeat_s=0.05) as srv:
        yield srv


@pytest.fixture
def key(server: CoinbaseServer) -> Iterator[Key]:
    """A fresh made-up CDP key (name, EC private key PEM) for an account with 1 BTC, 100k USD."""
    name, pem, _ = new_test_key()
    balances = {"BTC": "1", "USD": "100000"}
    server.call(server.add_key, name, pem, f"acct{next(_accounts)}", balances=balances)
    yield name, pem
    server.faults.clear()


def exchange(server: CoinbaseServer, key: Key, **config: Any) -> Any:
    ex = ccxt_pro.coinbase({"apiKey": key[0], "secret": key[1], "enableRateLimit": False} | config)
    ex.urls["api"] = rebase_urls(ex.urls["api"], server.rest_url, server.ws_url)
    return ex


def run(server: CoinbaseServer, key: Key, body: Callable[[Any], Awaitable[Any]], **cfg: Any) -> Any:
    async def main() -> Any:
        ex = exchange(server, key, **cfg)
        try:
            await ex.load_markets()
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def balances(server: CoinbaseServer, key: Key) -> dict[str, Decimal]:
    acct = server.matcher.accounts[server.keys[key[0]].account]
    return {a: acct.total(a) for a in acct.assets()}


# -- catalogue and authentication -------------------------------------------------------------


def test_load_markets_gives_tick_lot_minimums_and_the_fee_tier(server, key) -> None:
    async def body(ex: Any) -> Any:
        return ex.markets, await ex.fetch_time()

    markets, server_ms = run(server, key, body)
    btc = markets["BTC/USD"]
    assert btc["id"] == "BTC-USD" and btc["spot"] and btc["active"]
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 1e-08)
    assert btc["limits"]["amount"]["min"] == 1e-08
    assert btc["limits"]["cost"]["min"] == 1
    assert (btc["maker"], btc["taker"]) == (0.004, 0.006)  # /transaction_summary's tier
    assert set(markets) == {"BTC/USD", "ETH/USD"}
    assert abs(server_ms / 1000 - server.now_s()) < 5
    assert server.requests["GET /api/v3/brokerage/transaction_summary"] >= 1


def test_a_wrong_key_a_bad_signature_and_an_expired_jwt_are_refused(server, key) -> None:
    async def balance(ex: Any) -> Any:
        return await ex.fetch_balance()

    stranger = new_test_key()[:2]  # a key the exchange never issued
    with pytest.raises(ccxt.AuthenticationError):
        run(server, stranger, balance)
    other_pem = new_test_key()[1]  # the right key name, signed with another private key
    with pytest.raises(ccxt.AuthenticationError):
        run(server, (key[0], other_pem), balance)
    assert server.refused.get("unknown api key") and server.refused.get("invalid signature")

    server.auth.skew_s = 600  # the exchange's clock is 10 minutes ahead: every JWT is stale
    try:
        with pytest.raises(ccxt.AuthenticationError, match="request timestamp expired"):
            run(server, key, balance)
    finally:
        server.auth.skew_s = 0
    assert run(server, key, balance)["BTC"]["total"] == 1


def test_a_jwt_is_bound_to_its_method_and_path(server, key) -> None:
    ex = exchange(server, key)
    signed = ex.sign("brokerage/accounts", ["v3", "private"], "GET", {})
    auth = {"Authorization": signed["headers"]["Authorization"]}

    async def get(path: str) -> int:
        async with aiohttp.ClientSession() as s, s.get(server.rest_url + path, headers=auth) as r:
            return r.status

    assert asyncio.run(get("/api/v3/brokerage/accounts")) == 200
    assert asyncio.run(get("/api/v3/brokerage/orders/historical/fills")) == 401


# -- orders ------------------------------------------------------------------------------------


def test_create_edit_cancel_and_fetch_an_order_by_client_order_id(server, key) -> None:
    async def body(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        placed = await ex.create_order(
            "BTC/USD", "limit", "buy", 0.01, 50000, {"client_order_id": "gk-1"}
        )
        out["placed"] = placed
        out["again"] = await ex.create_order(  # a retry with the same id: the same order
            "BTC/USD", "limit", "buy", 0.01, 50000, {"client_order_id": "gk-1"}
        )
        out["open"] = await ex.fetch_open_orders("BTC/USD")
        out["edit"] = await ex.edit_order(placed["id"], "BTC/USD", "limit", "buy", 0.02, 50001)
        out["edited"] = await ex.fetch_order(placed["id"])
        out["bad_edit"] = await ex.edit_order("no-such-id", "BTC/USD", "limit", "buy", 0.02, 1)
        await ex.cancel_order(placed["id"])
        out["canceled"] = await ex.fetch_order(placed["id"])
        with pytest.raises(ccxt.BadRequest):
            await ex.cancel_order(placed["id"])  # Coinbase: success false → ccxt BadRequest
        with pytest.raises(ccxt.ExchangeError, match="order with this orderID was not found"):
            await ex.fetch_order("00000000-0000-0000-0000-000000000000")
        return out

    out = run(server, key, body)
    assert out["placed"]["clientOrderId"] == "gk-1" and out["placed"]["status"] is None
    assert out["again"]["id"] == out["placed"]["id"]
    assert [o["clientOrderId"] for o in out["open"]] == ["gk-1"]
    assert out["open"][0]["status"] == "open" and out["open"][0]["amount"] == 0.01
    assert out["edit"]["info"] == {"success": True, "errors": []}
    assert (out["edited"]["price"], out["edited"]["amount"]) == (50001, 0.02)
    assert out["bad_edit"]["info"]["success"] is False  # ccxt raises nothing for a failed edit
    assert out["bad_edit"]["info"]["errors"][0]["edit_failure_reason"] == "ORDER_NOT_FOUND"
    assert out["canceled"]["status"] == "canceled"
    view = server.call(server.state)  # what /__control/state tells another process
    mine = [o for o in view["orders"] if o["client_id"] == "gk-1"]
    assert [o["venue_id"] for o in mine] == [out["placed"]["id"]]
    assert server.matcher.submitted["gk-1"] == 2  # two entries, one order
    assert balances(server, key) == {"BTC": 1, "USD": 100000}  # every hold released


def test_a_marketable_order_fills_and_balances_move_with_quote_fees(server, key) -> None:
    ask = server.matcher.books["BTC/USD"].asks.best()

    async def body(ex: Any) -> tuple[Any, list[Any]]:
        order = await ex.create_order("BTC/USD", "limit", "buy", 0.5, float(ask) + 100)
        return await ex.fetch_order(order["id"]), await ex.fetch_my_trades("BTC/USD")

    order, trades = run(server, key, body)
    assert order["status"] == "closed" and order["filled"] == 0.5
    mine = [t for t in trades if t["order"] == order["id"]]
    cost = sum(Decimal(t["info"]["price"]) * Decimal(t["info"]["size"]) for t in mine)
    fee = sum(Decimal(t["info"]["commission"]) for t in mine)
    assert sum(Decimal(t["info"]["size"]) for t in mine) == Decimal("0.5")
    assert {t["fee"]["currency"] for t in mine} == {"USD"}  # fees in the quote, both sides
    assert {t["takerOrMaker"] for t in mine} == {"taker"}
    assert fee == cost * Decimal("0.006")
    assert Decimal(order["info"]["total_fees"]) == fee
    assert balances(server, key) == {"BTC": Decimal("1.5"), "USD": 100000 - cost - fee}


def test_refusals_map_to_ccxt_exceptions(server, key) -> None:
    bid = float(server.matcher.books["BTC/USD"].bids.best())

    async def body(ex: Any) -> None:
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order("BTC/USD", "limit", "buy", 10, bid)
        with pytest.raises(ccxt.ExchangeError, match="POST_ONLY"):
            await ex.create_order("BTC/USD", "limit", "sell", 0.01, bid, {"postOnly": True})

    run(server, key, body)
    assert not server.matcher.open_orders(server.keys[key[0]].account)


# -- websockets --------------------------------------------------------------------------------


def test_watch_order_book_trades_and_orders(server, key) -> None:
    async def body(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        book = await ex.watch_order_book("BTC/USD")
        out["snapshot_bid"] = book["bids"][0][0]
        orders = asyncio.ensure_future(ex.watch_orders())
        await asyncio.sleep(0.1)
        placed = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 59990.5)
        for _ in range(10):  # the user snapshot resolves first; wait for our order
            got = await orders
            if got:
                break
            orders = asyncio.ensure_future(ex.watch_orders())
        out["order_event"] = got[-1]
        for _ in range(10):
            book = await ex.watch_order_book("BTC/USD")
            if any(px == 59990.5 for px, _ in book["bids"]):
                break
        out["level"] = [lv for lv in book["bids"] if lv[0] == 59990.5]
        await ex.create_order("BTC/USD", "market", "sell", 0.001)
        # the subscription's snapshot of recent trades (newest last in ccxt's cache)
        out["trades"] = await asyncio.wait_for(ex.watch_trades("BTC/USD"), 5)
        out["placed"] = placed
        return out

    out = run(server, key, body)
    assert out["snapshot_bid"] > 59990.5  # the seeded book's best bid
    assert out["order_event"]["id"] == out["placed"]["id"]
    assert out["order_event"]["status"] == "open" and out["order_event"]["remaining"] == 0.01
    assert out["level"] == [[59990.5, 0.01]]
    assert out["trades"][-1]["side"] == "sell" and out["trades"][-1]["amount"] == 0.001


class RawWs:
    """A bare websocket client: what arrives, with each message's ``sequence_num``."""

    def __init__(self, server: CoinbaseServer, key: Key) -> None:
        self.server, self.key = server, key
        self.messages: list[dict] = []

    async def __aenter__(self) -> RawWs:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.server.ws_url)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))

    async def subscribe(self, channel: str, products: list[str]) -> None:
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel, "product_ids": products}
        if channel == "user":
            ex = ccxt_pro.coinbase({"apiKey": self.key[0], "secret": self.key[1]})
            msg["jwt"] = ex.create_auth_token(ex.seconds())
        await self.ws.send_str(json.dumps(msg))
        await asyncio.sleep(0.1)

    def on(self, channel: str) -> list[dict]:
        return [m for m in self.messages if m.get("channel") == channel]

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        await self.ws.close()
        await self.session.close()


def test_every_message_carries_the_connections_sequence_number(server, key) -> None:
    async def body(ex: Any) -> list[dict]:
        async with RawWs(server, key) as raw:
            await raw.subscribe("level2", ["BTC-USD"])
            await raw.subscribe("heartbeats", [])
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 59000)
            await asyncio.sleep(0.2)
            return raw.messages

    messages = run(server, key, body)
    seqs = [m["sequence_num"] for m in messages]
    assert seqs == list(range(len(seqs)))
    channels = {m["channel"] for m in messages}
    assert {"subscriptions", "l2_data", "heartbeats"} <= channels
    l2 = [m for m in messages if m["channel"] == "l2_data"]
    assert l2[0]["events"][0]["type"] == "snapshot"
    updates = [u for m in l2[1:] for u in m["events"][0]["updates"]]
    assert {"side": "bid", "price_level": "59000", "new_quantity": "0.01"}.items() <= updates[
        0
    ].items()


def test_the_user_channel_refuses_a_bad_jwt(server, key) -> None:
    async def body(ex: Any) -> list[dict]:
        async with RawWs(server, (key[0], new_test_key()[1])) as raw:
            await raw.subscribe("user", [])
            return raw.messages

    messages = run(server, key, body)
    assert messages == [{"type": "error", "message": "authentication failure"}]


# -- faults ------------------------------------------------------------------------------------


def test_rate_limit_and_ban_answer_429_with_retry_after(server, key) -> None:
    async def body(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        server.faults.arm("rate_limit", retry_after=3)
        with pytest.raises(ccxt.RateLimitExceeded):
            await ex.fetch_balance()
        out["retry_after"] = ex.last_response_headers.get("Retry-After")
        out["after"] = (await ex.fetch_balance())["BTC"]["total"]
        server.faults.arm("ban", retry_after=30)
        for _ in range(3):  # lasting: every request refused until it expires or is cleared
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_order_book("BTC/USD")
        out["ban_retry_after"] = int(ex.last_response_headers.get("Retry-After"))
        server.faults.clear("ban")
        out["after_ban"] = len((await ex.fetch_order_book("BTC/USD"))["bids"]) > 0
        return out

    out = run(server, key, body)
    assert out["retry_after"] == "3" and out["after"] == 1
    assert 25 <= out["ban_retry_after"] <= 30 and out["after_ban"]


def test_timestamp_fault_is_an_expired_token(server, key) -> None:
    async def body(ex: Any) -> float:
        server.faults.arm("timestamp")
        with pytest.raises(ccxt.AuthenticationError, match="request timestamp expired"):
            await ex.fetch_balance()
        return (await ex.fetch_balance())["USD"]["total"]

    assert run(server, key, body) == 100000


def test_a_late_ack_leaves_the_order_in_and_a_retry_with_its_id_does_not_double_it(
    server, key
) -> None:
    async def body(ex: Any) -> tuple[Any, list[Any]]:
        server.faults.arm("delay_ack", delay_s=1.0)
        params = {"client_order_id": "gk-late"}
        ex.timeout = 300
        with pytest.raises(ccxt.RequestTimeout):
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50000, params)
        ex.timeout = 10000
        again = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50000, params)
        return again, await ex.fetch_open_orders("BTC/USD")

    again, open_orders = run(server, key, body)
    assert [o["id"] for o in open_orders] == [again["id"]]


def test_disconnect_drops_the_socket_and_a_new_watch_reconnects(server, key) -> None:
    async def body(ex: Any) -> int:
        await ex.watch_order_book("BTC/USD")
        pending = asyncio.ensure_future(ex.watch_order_book("BTC/USD"))
        await asyncio.sleep(0.1)
        before = server.hub.accepted["market"]
        server.faults.arm("disconnect")
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(pending, 5)
        book = await ex.watch_order_book("BTC/USD")  # reconnects, resubscribes, new snapshot
        assert book["bids"]
        return server.hub.accepted["market"] - before

    assert run(server, key, body) == 1


def test_stall_keeps_the_socket_and_sends_nothing(server, key) -> None:
    async def body(ex: Any) -> tuple[int, int]:
        async with RawWs(server, key) as raw:
            await raw.subscribe("heartbeats", [])
            server.faults.arm("stall")
            await asyncio.sleep(0.1)
            n = len(raw.messages)
            await asyncio.sleep(0.4)
            stalled = len(raw.messages) - n
            server.faults.clear("stall")
            await asyncio.sleep(0.3)
            return stalled, len(raw.messages) - n - stalled

    stalled, resumed = run(server, key, body)
    assert stalled == 0 and resumed > 0


def test_gap_skips_one_level2_sequence_number_and_its_update(server, key) -> None:
    """ccxt coinbase does not check ``sequence_num``: its book silently misses the lost level.
    A ``handle_message`` hook set before the first watch sees every message and the jump."""

    async def body(ex: Any) -> tuple[list[int], Any]:
        seen: list[int] = []
        handle = ex.handle_message

        def hook(client: Any, message: Any) -> None:
            if isinstance(message, dict) and message.get("channel") == "l2_data":
                seen.append(message["sequence_num"])
            handle(client, message)

        ex.handle_message = hook
        await ex.watch_order_book("BTC/USD")
        server.faults.arm("gap")
        await ex.create_order("BTC/USD", "limit", "buy", 0.01, 58000)  # its update is lost
        await ex.create_order("BTC/USD", "limit", "buy", 0.01, 58001)
        for _ in range(10):
            book = await ex.watch_order_book("BTC/USD", 1000)
            if any(px == 58001 for px, _ in book["bids"]):
                break
        return seen, {px for px, _ in book["bids"]}

    seen, bids = run(server, key, body)
    assert seen[-1] == seen[-2] + 2 and server.feeds.gaps == 1
    assert 58001 in bids and 58000 not in bids  # ccxt applied on past the gap
    assert Decimal(58000) in server.feeds.published["BTC/USD"]["bids"]


def _user_orders(raw: RawWs) -> list[dict]:
    return [
        o for m in raw.on("user") for e in m["events"] if e["type"] == "update" for o in e["orders"]
    ]


def test_dup_and_reorder_events_on_the_user_channel(server, key) -> None:
    async def body(ex: Any) -> tuple[list[dict], list[dict]]:
        async with RawWs(server, key) as raw:
            await raw.subscribe("user", [])
            server.faults.arm("dup_events", times=1)
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50000, {"client_order_id": "d1"})
            await asyncio.sleep(0.1)
            dup = _user_orders(raw)
            server.faults.arm("reorder_events", times=1)
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50000, {"client_order_id": "r1"})
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50000, {"client_order_id": "r2"})
            await asyncio.sleep(0.5)
            return dup, _user_orders(raw)[len(dup) :]

    dup, reordered = run(server, key, body)
    assert [o["client_order_id"] for o in dup] == ["d1", "d1"]
    assert [o["client_order_id"] for o in reordered] == ["r2", "r1"]


def test_partial_fill_splits_a_taking_order(server, key) -> None:
    async def body(ex: Any) -> list[Any]:
        server.faults.arm("partial_fill", parts=3)
        order = await ex.create_order("BTC/USD", "market", "sell", 0.03)
        trades = await ex.fetch_my_trades("BTC/USD")
        return [t for t in trades if t["order"] == order["id"]]

    trades = run(server, key, body)
    assert len(trades) == 3 and sum(t["amount"] for t in trades) == pytest.approx(0.03)


def test_fill_while_down_reaches_only_rest(server, key) -> None:
    account = server.keys[key[0]].account

    async def body(ex: Any) -> tuple[list[dict], Any]:
        async with RawWs(server, key) as raw:
            await raw.subscribe("user", [])
            order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 59999.5)
            await asyncio.sleep(0.1)
            seen = len(_user_orders(raw))
            server.faults.arm("fill_while_down")  # the user socket drops; events withheld
            await asyncio.sleep(0.1)
            resting = server.call(server.matcher.find, account, order["id"])
            server.call(server.matcher.fill_resting, resting)  # the market trades with it
            await asyncio.sleep(0.1)
            after = _user_orders(raw)[seen:]
            return after, await ex.fetch_order(order["id"])

    after, fetched = run(server, key, body)
    assert after == [] and server.events.withheld >= 1
    assert fetched["status"] == "closed" and fetched["filled"] == 0.01
    assert not server.matcher.open_orders(account)


def test_the_random_walk_moves_the_book_and_prints_trades() -> None:
    with CoinbaseServer(md_interval_s=0.01) as srv:

        async def body() -> tuple[Any, Any]:
            ex = exchange(srv, ("", ""))
            try:
                first = await ex.watch_order_book("ETH/USD")
                snapshot = [list(map(tuple, first["bids"][:5]))]
                for _ in range(20):
                    await ex.watch_order_book("ETH/USD")
                trades = await asyncio.wait_for(ex.watch_trades("ETH/USD"), 10)
                book = await ex.watch_order_book("ETH/USD")
                return snapshot, (book, trades)
            finally:
                await ex.close()

        snapshot, (book, trades) = asyncio.run(body())
        assert trades and trades[-1]["symbol"] == "ETH/USD"
        assert book["bids"][0][0] < book["asks"][0][0]
        assert [list(map(tuple, book["bids"][:5]))] != snapshot
