"""The local Kraken server against RAW ccxt 4.5.90 ``kraken`` (async, on a local loop).

Not our adapter: these tests pin what the server speaks, so the adapters' tests can trust it.
Each runs ccxt on its own event loop against a server on its own thread; keys are made up here.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest

from engine.venues.ccxt_session import Credentials, make_exchange
from tests.venues.kraken import KrakenServer
from tests.venues.kraken_wire import api_sign, book_checksum, new_test_key

BTC = "BTC/USD"


@pytest.fixture
def keys() -> tuple[str, str]:
    return new_test_key()


@pytest.fixture
def srv(keys: tuple[str, str]) -> Iterator[KrakenServer]:
    """A server with no synthetic market moves (books change only when a test says so)."""
    with KrakenServer(md_interval_s=None) as server:
        server.add_key(*keys, balances={"USD": "100000", "BTC": "2"})
        yield server


def run(
    srv: KrakenServer,
    keys: tuple[str, str] | None,
    body: Callable[[Any], Awaitable[Any]],
    **settings: Any,
) -> Any:
    """``body(exchange)`` on a fresh loop with a fresh ccxt kraken pointed at ``srv``."""

    async def main() -> Any:
        config = {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "timeout_ms": 3000} | settings
        ex = make_exchange("kraken", config, Credentials(*keys) if keys else None)
        try:
            return await asyncio.wait_for(body(ex), 20)
        finally:
            await ex.close()

    return asyncio.run(main())


def spy(ex: Any) -> list[dict[str, Any]]:
    """Every websocket message ccxt receives (wrap before the first watch)."""
    seen: list[dict[str, Any]] = []
    handle = ex.handle_message

    def wrapper(client: Any, message: Any) -> Any:
        seen.append(message)
        return handle(client, message)

    ex.handle_message = wrapper
    return seen


async def until(cond: Callable[[], bool]) -> None:
    """Let ccxt's receive loop run until ``cond()`` (a watch call would wait for the NEXT
    message, and hang if the one wanted has already been handled)."""
    while not cond():
        await asyncio.sleep(0.01)


def checksum_of(srv: KrakenServer, book: Any) -> int:
    """Kraken's checksum of the book ccxt holds (ccxt 4.5.90 cannot compute it itself)."""
    levels = {
        side: [(Decimal(repr(p)), Decimal(repr(q))) for p, q in book[side][:10]]
        for side in ("asks", "bids")
    }
    return book_checksum(srv.pairs[BTC], levels["asks"], levels["bids"])


# ---------------------------------------------------------------------------------------------
# markets, authentication


def test_load_markets_gives_tick_lot_minimums_and_fees(srv: KrakenServer) -> None:
    async def body(ex: Any) -> None:
        markets = await ex.load_markets()
        btc, eth = markets[BTC], markets["ETH/USD"]
        assert (btc["id"], btc["altname"], btc["wsId"]) == ("XXBTZUSD", "XBTUSD", "XBT/USD")
        assert btc["precision"] == {"price": 0.1, "amount": 1e-8}
        assert eth["precision"]["price"] == 0.01
        assert btc["limits"]["amount"]["min"] == 0.0001
        assert btc["limits"]["cost"]["min"] == 0.5
        assert btc["active"] and (btc["maker"], btc["taker"]) == (0.0016, 0.0026)
        assert abs(await ex.fetch_time() - ex.milliseconds()) < 5000
        assert (await ex.fetch_status())["status"] == "ok"

    run(srv, None, body)


def test_bad_signature_unknown_key_and_stale_nonce_are_refused(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    wrong_secret = new_test_key()[1]

    async def body(ex: Any) -> None:
        ex.secret = wrong_secret
        # ccxt maps "EAPI:Invalid signature" to nothing specific: a plain ExchangeError
        with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature"):
            await ex.fetch_balance()
        ex.apiKey = "bm90LWEta2V5"
        with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
            await ex.fetch_balance()
        ex.apiKey, ex.secret = keys
        assert (await ex.fetch_balance())["USD"]["free"] == 100000
        ex.options["lastNonce"] = 0
        ex.options["timeDifference"] = 60_000  # a nonce one minute behind the last one
        with pytest.raises(ccxt.InvalidNonce, match="EAPI:Invalid nonce"):
            await ex.fetch_balance()

    run(srv, keys, body)
    assert srv.matcher.open_orders("main") == []


def test_refusals_are_http_200_with_krakens_error_list(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    async def body() -> list[tuple[int, dict[str, Any]]]:
        out = []
        async with aiohttp.ClientSession() as http:
            path, nonce = "/0/private/Balance", "1700000000000"
            form = f"nonce={nonce}"
            for secret in (new_test_key()[1], keys[1]):
                sign = api_sign(path, nonce, form, secret)
                headers = {"API-Key": keys[0], "API-Sign": sign}
                async with http.post(srv.rest_url + path, data=form, headers=headers) as r:
                    out.append((r.status, json.loads(await r.text())))
        return out

    (s1, bad), (s2, good) = asyncio.run(body())
    assert (s1, bad) == (200, {"error": ["EAPI:Invalid signature"], "result": {}})
    assert s2 == 200 and good["error"] == [] and good["result"]["ZUSD"] == "100000.00000000"


# ---------------------------------------------------------------------------------------------
# orders


def test_create_edit_cancel_fetch_by_client_order_id(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    cid = str(uuid.uuid4())

    async def body(ex: Any) -> None:
        placed = await ex.create_order(BTC, "limit", "buy", 0.001, 40000, {"clientOrderId": cid})
        txid = placed["id"]
        assert txid.startswith("O") and len(txid) == 19
        got = await ex.fetch_order(txid)
        assert (got["clientOrderId"], got["status"], got["price"]) == (cid, "open", 40000)
        with pytest.raises(ccxt.ExchangeError, match="EOrder:Duplicate order"):
            await ex.create_order(BTC, "limit", "buy", 0.001, 40000, {"clientOrderId": cid})
        found = await ex.fetch_open_orders(BTC, params={"clientOrderId": cid})
        assert [o["id"] for o in found] == [txid]
        edited = await ex.edit_order(txid, BTC, "limit", "buy", 0.002, 40100.0)
        assert edited["id"].startswith("T")  # ccxt returns the amend id; the order keeps its txid
        got = await ex.fetch_order(txid)
        assert (got["id"], got["amount"], got["price"]) == (txid, 0.002, 40100.0)
        assert (await ex.fetch_balance())["USD"]["used"] == pytest.approx(0.002 * 40100)
        await ex.cancel_order(txid)
        assert (await ex.fetch_order(txid))["status"] == "canceled"
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order(txid)
        closed = await ex.fetch_closed_orders(params={"clientOrderId": cid})
        assert [(o["id"], o["clientOrderId"]) for o in closed] == [(txid, cid)]
        assert (await ex.fetch_balance())["USD"]["used"] == 0

    run(srv, keys, body)


def test_marketable_order_fills_and_fees_come_out_of_the_quote(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    async def body(ex: Any) -> None:
        before = await ex.fetch_balance()
        buy = await ex.create_order(BTC, "market", "buy", 0.01)
        order = await ex.fetch_order(buy["id"])
        assert (order["status"], order["filled"]) == ("closed", 0.01)
        assert order["fee"]["currency"] == "USD"
        (trade,) = await ex.fetch_my_trades(BTC)
        assert trade["order"] == buy["id"] and trade["takerOrMaker"] == "taker"
        cost, fee = Decimal(trade["info"]["cost"]), Decimal(trade["info"]["fee"])
        assert fee == (cost * Decimal("0.0026")).quantize(Decimal("0.0001"))
        after = await ex.fetch_balance()
        assert Decimal(str(after["BTC"]["total"])) - Decimal(
            str(before["BTC"]["total"])
        ) == Decimal("0.01")
        spent = Decimal(str(before["USD"]["total"])) - Decimal(str(after["USD"]["total"]))
        assert spent == cost + fee
        sell = await ex.create_order(BTC, "market", "sell", 0.01)  # all of what was bought
        assert (await ex.fetch_order(sell["id"]))["status"] == "closed"
        assert (await ex.fetch_balance())["BTC"]["total"] == before["BTC"]["total"]

    run(srv, keys, body)


def test_post_only_that_would_take_is_accepted_then_cancelled(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    async def body(ex: Any) -> None:
        ask = (await ex.fetch_order_book(BTC))["asks"][0][0]
        placed = await ex.create_order(BTC, "limit", "buy", 0.001, ask, {"postOnly": True})
        got = await ex.fetch_order(placed["id"])
        assert (got["status"], got["info"]["reason"], got["filled"]) == (
            "canceled",
            "Post only order",
            0,
        )

    run(srv, keys, body)


# ---------------------------------------------------------------------------------------------
# websockets


def test_ws_book_checksums_match_trades_and_ticker(keys: tuple[str, str]) -> None:
    with KrakenServer(md_interval_s=0.01) as server:

        async def body(ex: Any) -> None:
            seen = spy(ex)
            checked = 0
            while checked < 15:
                book = await ex.watch_order_book(BTC)
                last = [m for m in seen if m.get("channel") == "book"][-1]
                assert last["data"][0]["checksum"] == checksum_of(server, book)
                checked += 1
            assert {m["type"] for m in seen if m.get("channel") == "book"} == {"snapshot", "update"}
            trades = await ex.watch_trades(BTC)
            assert trades[-1]["symbol"] == BTC and trades[-1]["price"] > 0
            ticker = await ex.watch_ticker(BTC)
            assert 0 < ticker["bid"] < ticker["ask"]

        run(server, None, body)


def test_ws_orders_and_my_trades(srv: KrakenServer, keys: tuple[str, str]) -> None:
    cid = "gk-1"

    async def body(ex: Any) -> None:
        watching = asyncio.ensure_future(ex.watch_orders(BTC))
        await asyncio.sleep(0.2)
        placed = await ex.create_order(BTC, "limit", "sell", 0.002, 60000, {"clientOrderId": cid})
        (order,) = await watching
        # ccxt reads the client id from order_userref: the cl_ord_id is in ``info``
        assert (order["id"], order["status"], order["info"]["cl_ord_id"]) == (
            placed["id"],
            "open",
            cid,
        )
        trades = asyncio.ensure_future(ex.watch_my_trades(BTC))
        await asyncio.sleep(0.1)
        srv.call(srv.fill, "main", placed["id"])
        (trade,) = await trades
        assert (trade["order"], trade["amount"], trade["price"]) == (placed["id"], 0.002, 60000)
        assert trade["fee"] == {"cost": pytest.approx(60000 * 0.002 * 0.0016), "currency": "USD"}
        mine = ex.orders.hashmap[BTC]
        await until(lambda: mine[placed["id"]]["status"] == "closed")
        assert mine[placed["id"]]["info"]["cum_qty"] == 0.002

    run(srv, keys, body)


# ---------------------------------------------------------------------------------------------
# faults, each as the ccxt exception a client sees


def test_rate_limit_ban_and_nonce_faults(srv: KrakenServer, keys: tuple[str, str]) -> None:
    async def body(ex: Any) -> None:
        await ex.load_markets()
        srv.faults.arm("rate_limit")
        with pytest.raises(ccxt.DDoSProtection, match="EAPI:Rate limit exceeded"):
            await ex.fetch_balance()
        srv.faults.arm("rate_limit", scope="public")
        with pytest.raises(ccxt.DDoSProtection, match="EGeneral:Too many requests"):
            await ex.fetch_order_book(BTC)
        await ex.fetch_balance()  # each was one request
        srv.faults.arm("rate_limit", scope="orders", retry_after=0.5)
        await ex.fetch_balance()  # not an order entry
        for _ in range(2):  # refused until Kraken's counter has decayed
            with pytest.raises(ccxt.DDoSProtection, match="EOrder:Rate limit exceeded"):
                await ex.create_order(BTC, "limit", "buy", 0.001, 40000)
        await asyncio.sleep(0.6)
        await ex.fetch_open_orders()
        srv.faults.arm("ban", retry_after=30)
        for call in (ex.fetch_balance(), ex.fetch_time()):
            with pytest.raises(ccxt.DDoSProtection, match="EGeneral:Temporary lockout"):
                await call
        srv.faults.clear("ban")
        srv.faults.arm("timestamp")
        with pytest.raises(ccxt.InvalidNonce, match="EAPI:Invalid nonce"):
            await ex.create_order(BTC, "limit", "buy", 0.001, 40000)
        await ex.fetch_balance()

    run(srv, keys, body)
    assert srv.matcher.open_orders("main") == []
    assert srv.faults.fired["ban"] == 2


def test_delayed_ack_times_out_but_the_order_exists(
    srv: KrakenServer, keys: tuple[str, str]
) -> None:
    cid = "late-ack-1"

    async def body(ex: Any) -> None:
        await ex.load_markets()
        srv.faults.arm("delay_ack", delay_s=1.5)
        with pytest.raises(ccxt.RequestTimeout):
            await ex.create_order(BTC, "limit", "buy", 0.001, 40000, {"clientOrderId": cid})
        (found,) = await ex.fetch_open_orders(BTC, params={"clientOrderId": cid})
        assert found["status"] == "open"

    run(srv, keys, body, timeout_ms=300)


def test_partial_fill_fault_splits_a_taking_order(srv: KrakenServer, keys: tuple[str, str]) -> None:
    async def body(ex: Any) -> None:
        srv.faults.arm("partial_fill", parts=3)
        placed = await ex.create_order(BTC, "market", "buy", 0.003)
        trades = await ex.fetch_my_trades(BTC)
        assert [t["amount"] for t in trades] == [0.001] * 3
        assert (await ex.fetch_order(placed["id"]))["filled"] == 0.003

    run(srv, keys, body)


def test_disconnect_and_stall_show_as_network_errors(srv: KrakenServer) -> None:
    async def body(ex: Any) -> None:
        await ex.watch_order_book(BTC)
        srv.faults.arm("disconnect")
        with pytest.raises(ccxt.NetworkError):
            while True:
                await ex.watch_order_book(BTC)
        book = await ex.watch_order_book(BTC)  # a new connection: a new snapshot
        assert book["bids"] and book["asks"]
        srv.faults.arm("stall", seconds=5)
        with pytest.raises(ccxt.RequestTimeout, match="ping-pong"):
            while True:
                await ex.watch_order_book(BTC)

    run(srv, None, body, ccxt_options={"ws": {"keepAlive": 200}})
    assert srv.hub.accepted["market"] >= 2


def test_gap_shows_as_a_checksum_mismatch(srv: KrakenServer) -> None:
    async def body(ex: Any) -> None:
        seen = spy(ex)
        book = await ex.watch_order_book(BTC)
        bid = book["bids"][0][0]
        srv.call(srv.market_level, BTC, "buy", bid, "0.3")
        book = await ex.watch_order_book(BTC)
        assert seen[-1]["data"][0]["checksum"] == checksum_of(srv, book)
        srv.faults.arm("gap")
        srv.call(srv.market_level, BTC, "buy", bid, "0.4")  # this update is withheld
        srv.call(srv.market_level, BTC, "sell", book["asks"][0][0], "0.5")
        book = await ex.watch_order_book(BTC)
        assert book["bids"][0] == [bid, 0.3]  # the client never heard of 0.4
        assert seen[-1]["data"][0]["checksum"] != checksum_of(srv, book)

    run(srv, None, body)
    assert srv.ws.gaps == 1


def _executions(seen: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [
        (m["sequence"], m["data"][0]["exec_type"])
        for m in seen
        if m.get("channel") == "executions" and m["type"] == "update"
    ]


def test_duplicated_and_reordered_user_events(srv: KrakenServer, keys: tuple[str, str]) -> None:
    async def body(ex: Any) -> None:
        seen = spy(ex)
        watching = asyncio.ensure_future(ex.watch_orders(BTC))
        await until(lambda: any(m.get("type") == "snapshot" for m in seen))
        srv.faults.arm("dup_events", times=1)
        await ex.create_order(BTC, "limit", "buy", 0.001, 40000)
        await until(lambda: len(_executions(seen)) >= 3)
        (s1, t1), (s2, t2), (s3, t3) = _executions(seen)
        assert (s1, t1) == (s2, t2) == (s1, "pending_new") and (s3, t3) == (s1 + 1, "new")
        srv.faults.arm("reorder_events", times=1)
        await ex.create_order(BTC, "limit", "buy", 0.001, 40001)
        await until(lambda: len(_executions(seen)) >= 5)
        (s4, t4), (s5, t5) = _executions(seen)[3:]
        assert (t4, t5) == ("new", "pending_new") and s4 == s5 + 1
        assert len(await watching) == 1

    run(srv, keys, body)


def test_fill_while_down_is_only_seen_over_rest(srv: KrakenServer, keys: tuple[str, str]) -> None:
    async def body(ex: Any) -> None:
        placed = await ex.create_order(BTC, "limit", "sell", 0.001, 61000)
        await ex.watch_orders(BTC)
        srv.faults.arm("fill_while_down")
        with pytest.raises(ccxt.NetworkError):
            while True:
                await ex.watch_orders(BTC)
        srv.call(srv.fill, "main", placed["id"])
        assert (await ex.fetch_order(placed["id"]))["status"] == "closed"
        (trade,) = await ex.fetch_my_trades(BTC)
        assert trade["order"] == placed["id"]
        srv.faults.clear("fill_while_down")
        ex.myTrades = None  # a fresh view: what the reconnect's snapshot says
        (again,) = await ex.watch_my_trades(BTC)
        assert again["order"] == placed["id"]

    run(srv, keys, body)
    assert srv.events.withheld >= 2  # the trade and the filled status never went out


def test_control_routes_for_other_processes(srv: KrakenServer, keys: tuple[str, str]) -> None:
    """What a test in another process does over HTTP: fill an order by its txid, print a trade."""

    async def body(ex: Any) -> None:
        placed = await ex.create_order(BTC, "limit", "buy", 0.001, 45000)
        async with aiohttp.ClientSession() as http:
            fill = {"order_id": placed["id"], "qty": "0.0004"}
            async with http.post(srv.rest_url + "/__control/fill", json=fill) as r:
                assert (r.status, (await r.json())["ok"]) == (200, True)
            trade = {"symbol": BTC, "side": "buy", "qty": "0.01"}
            async with http.post(srv.rest_url + "/__control/trade", json=trade) as r:
                assert (await r.json())["fills"] >= 1
            bad = {"order_id": "ONOPE0-00000-000000"}
            async with http.post(srv.rest_url + "/__control/fill", json=bad) as r:
                assert r.status == 400
        got = await ex.fetch_order(placed["id"])
        assert (got["status"], got["filled"]) == ("open", 0.0004)
        prints = await ex.fetch_trades(BTC)
        assert prints[-1]["side"] == "buy" and prints[-1]["amount"] > 0

    run(srv, keys, body)


def test_runs_as_a_process(keys: tuple[str, str]) -> None:
    """``python -m tests.venues kraken``: signed requests with the key it was given, faults
    armed over HTTP (what the real-process tests do)."""
    import subprocess
    import sys
    from pathlib import Path

    args = ["--key", keys[0], "--secret", keys[1], "--balance", "USD=1000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.venues", "kraken", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}"

        async def body() -> None:
            config = {"rest_url": url, "ws_url": url.replace("http", "ws")}
            ex = make_exchange("kraken", config, Credentials(*keys))
            try:
                assert (await ex.fetch_balance())["USD"]["free"] == 1000
                ban = {"name": "ban"}
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(url + "/__control/fault", json=ban) as r,
                ):
                    assert (await r.json())["ok"]
                with pytest.raises(ccxt.DDoSProtection, match="Temporary lockout"):
                    await ex.fetch_balance()
            finally:
                await ex.close()

        asyncio.run(body())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
