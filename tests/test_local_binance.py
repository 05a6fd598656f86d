"""The local Binance.US server against RAW ccxt (async REST + pro websockets, not our adapter).

If ccxt 4.5.90's ``binanceus``, once its urls are rebased onto the server, loads the configured
rules, trades, and sees each armed fault as the ccxt exception a real Binance answer gives, then
the adapter tests that run on this server exercise what the real exchange would do to them.
Every test runs on one module server with its own API key and account.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from engine.venues.ccxt_session import rebase_urls
from tests.venues import binance_capture
from tests.venues.binance import BinanceServer, CaptureMarket
from tests.venues.core import SymbolSpec

SPECS = [
    SymbolSpec(),  # BTC/USDT: tick 0.01, lot 0.00001, min notional 5 (the synthetic book's)
    SymbolSpec("ETH/USDT", "ETHUSDT", "ETH", "USDT", tick="0.05", lot="0.001", min_notional="10"),
]
_keys = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceServer]:
    with BinanceServer(SPECS) as srv:
        yield srv


@pytest.fixture
def key(server: BinanceServer) -> Iterator[tuple[str, str]]:
    """A fresh made-up API key whose account holds 1 BTC and 100000 USDT."""
    n = next(_keys)
    api_key, secret = f"test-key-{n}", f"test-secret-{n}"
    server.call(
        server.add_key, api_key, secret, f"acct{n}", balances={"BTC": "1", "USDT": "100000"}
    )
    yield api_key, secret
    server.faults.clear()
    server.call(server.reset_limits)


def exchange(
    server: BinanceServer, key: tuple[str, str], pro: bool = False, **config: object
) -> ccxt_async.Exchange:
    cls = ccxt_pro.binanceus if pro else ccxt_async.binanceus
    ex = cls(
        {"apiKey": key[0], "secret": key[1], "enableRateLimit": False, "timeout": 3000, **config}
    )
    ex.urls["api"] = rebase_urls(ex.urls["api"], server.rest_url, server.ws_url)
    return ex


def run(server: BinanceServer, key: tuple[str, str], body, pro: bool = False, **config: object):  # noqa: ANN001, ANN201
    """Run ``body(exchange)`` on a fresh loop with a fresh exchange, closing it after."""

    async def main():  # noqa: ANN202
        ex = exchange(server, key, pro, **config)
        try:
            await ex.load_markets()
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def test_load_markets_gives_the_configured_rules(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        return ex.markets

    markets = run(server, key, body)
    btc, eth = markets["BTC/USDT"], markets["ETH/USDT"]
    assert (
        btc["precision"]["price"],
        btc["precision"]["amount"],
        btc["limits"]["cost"]["min"],
    ) == (0.01, 1e-05, 5.0)
    assert (
        eth["precision"]["price"],
        eth["precision"]["amount"],
        eth["limits"]["cost"]["min"],
    ) == (0.05, 0.001, 10.0)
    assert btc["active"] and eth["id"] == "ETHUSDT" and eth["spot"]


def test_bad_signature_and_stale_timestamp_are_refused(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        return await ex.fetch_balance()

    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        run(server, (key[0], "not-the-secret"), body)
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        run(server, ("unknown-key", key[1]), body)
    server.clock_offset_ms = 60_000  # our clock a minute behind the venue's: outside recvWindow
    try:
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            run(server, key, body)
    finally:
        server.clock_offset_ms = 0
    assert run(server, key, body)["free"]["BTC"] == 1.0  # the same key, signed right: accepted


def test_user_stream_subscription_checks_its_signature(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def main() -> list[dict]:
        answers = []
        async with aiohttp.ClientSession() as session:
            for secret, offset_ms in (("not-the-secret", 0), (key[1], -120_000), (key[1], 0)):
                params = {"apiKey": key[0], "timestamp": int(time.time() * 1000) + offset_ms}
                payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
                params["signature"] = hmac.new(
                    secret.encode(), payload.encode(), hashlib.sha256
                ).hexdigest()
                async with session.ws_connect(f"{server.ws_url}/ws-api/v3") as ws:
                    request = {
                        "id": "7",
                        "method": "userDataStream.subscribe.signature",
                        "params": params,
                    }
                    await ws.send_str(json.dumps(request))
                    answers.append(json.loads((await ws.receive(timeout=5)).data))
        return answers

    bad, stale, good = asyncio.run(main())
    assert (bad["status"], bad["error"]["code"]) == (400, -1022)
    assert (stale["status"], stale["error"]["code"]) == (400, -1021)
    assert good == {"id": "7", "status": 200, "result": {"subscriptionId": 0}}


def test_order_round_trip_by_client_order_id(server: BinanceServer, key: tuple[str, str]) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        placed = await ex.create_order(
            "BTC/USDT", "limit", "buy", 0.01, 50000, {"clientOrderId": "gk-1"}
        )
        order_count = ex.last_response_headers["X-MBX-ORDER-COUNT-10S"]
        by_cid = await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "gk-1"})
        opened = await ex.fetch_open_orders("BTC/USDT")
        balance = await ex.fetch_balance()
        cancelled = await ex.cancel_order(placed["id"], "BTC/USDT")
        after = await ex.fetch_order(placed["id"], "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound, match="-2011"):
            await ex.cancel_order(placed["id"], "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            await ex.fetch_order("999999", "BTC/USDT")
        assert int(order_count) >= 1
        return placed, by_cid, opened, balance, cancelled, after, await ex.fetch_balance()

    placed, by_cid, opened, locked, cancelled, after, freed = run(server, key, body)
    assert placed["clientOrderId"] == "gk-1" and placed["status"] == "open"
    assert by_cid["id"] == placed["id"] and [o["clientOrderId"] for o in opened] == ["gk-1"]
    assert locked["used"]["USDT"] == 500.0 and locked["free"]["USDT"] == 99500.0
    assert cancelled["status"] == "canceled" and after["status"] == "canceled"
    assert freed["free"]["USDT"] == 100000.0 and freed["used"]["USDT"] == 0.0


def test_marketable_orders_fill_with_the_fee_in_the_received_asset(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        book = await ex.fetch_order_book("BTC/USDT", 5)
        buy = await ex.create_order("BTC/USDT", "market", "buy", 0.01)
        after_buy = await ex.fetch_balance()
        sell = await ex.create_order("BTC/USDT", "limit", "sell", 0.00999, 1000)  # all we received
        return (
            book,
            buy,
            after_buy,
            sell,
            await ex.fetch_balance(),
            await ex.fetch_my_trades("BTC/USDT"),
        )

    book, buy, after_buy, sell, after_sell, trades = run(server, key, body)
    ask, bid = Decimal(str(book["asks"][0][0])), Decimal(str(book["bids"][0][0]))
    assert buy["status"] == "closed" and buy["filled"] == 0.01
    assert buy["fee"] == {"currency": "BTC", "cost": 1e-05}  # 0.1 % of 0.01 BTC, in BTC
    assert Decimal(str(after_buy["total"]["BTC"])) == Decimal("1.00999")
    assert Decimal(str(after_buy["total"]["USDT"])) == Decimal(100000) - ask * Decimal("0.01")
    assert sell["status"] == "closed" and sell["fee"]["currency"] == "USDT"  # filled at the bid
    proceeds = bid * Decimal("0.00999")
    fee = (proceeds * Decimal("0.001")).quantize(
        Decimal("1e-8"), ROUND_HALF_UP
    )  # 8 places, as Binance
    expected = Decimal(100000) - ask * Decimal("0.01") + proceeds - fee
    assert Decimal(str(after_sell["total"]["USDT"])) == expected
    assert after_sell["total"]["BTC"] == 1.0
    assert [(t["side"], t["takerOrMaker"], t["fee"]["currency"]) for t in trades] == [
        ("buy", "taker", "BTC"),
        ("sell", "taker", "USDT"),
    ]


def test_venue_rule_refusals_map_to_ccxt_errors(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        codes = []
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order("BTC/USDT", "limit", "buy", 10, 50000)  # 500000 USDT > 100000
        codes.append(json.loads(ex.last_http_response))
        with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):  # raw request: ccxt would round
            await ex.privatePostOrder(
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.000015",
                    "price": "50000",
                }
            )
        codes.append(json.loads(ex.last_http_response))
        with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
            await ex.create_order("BTC/USDT", "limit", "buy", 0.00001, 50000)  # 0.5 USDT < 5
        codes.append(json.loads(ex.last_http_response))
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 70000, {"postOnly": True})
        codes.append(json.loads(ex.last_http_response))
        return codes

    assert run(server, key, body) == [
        {"code": -2010, "msg": "Account has insufficient balance for requested action."},
        {"code": -1013, "msg": "Filter failure: LOT_SIZE"},
        {"code": -1013, "msg": "Filter failure: NOTIONAL"},
        {"code": -2010, "msg": "Order would immediately match and take."},
    ]


def test_rate_limit_ban_and_timestamp_faults(server: BinanceServer, key: tuple[str, str]) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        await ex.fetch_time()
        weight_header = ex.last_response_headers["X-MBX-USED-WEIGHT-1M"]
        server.faults.arm("rate_limit", retry_after=7)
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            await ex.fetch_balance()
        retry_after = ex.last_response_headers["Retry-After"]
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # retried inside Retry-After: banned
            await ex.fetch_time()
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # banned: every request refused
            await ex.fetch_order_book("BTC/USDT")
        server.call(server.reset_limits)
        server.faults.arm("timestamp")
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await ex.fetch_open_orders("BTC/USDT")
        return weight_header, retry_after, await ex.fetch_open_orders("BTC/USDT")

    weight_header, retry_after, open_orders = run(server, key, body)
    assert int(weight_header) >= 1 and retry_after == "7" and open_orders == []


def test_weight_over_the_limit_is_answered_429(server: BinanceServer, key: tuple[str, str]) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        server.weight_limit = int(ex.last_response_headers["X-MBX-USED-WEIGHT-1M"]) + 25
        try:
            await ex.fetch_balance()  # weight 20: inside the limit
            t0 = time.time()
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                await ex.fetch_balance()
            t1 = time.time()
        finally:
            server.weight_limit = 1200
        return int(ex.last_response_headers["Retry-After"]), t0, t1

    retry, t0, t1 = run(server, key, body)
    # as Binance: the seconds left in the minute whose weight is spent (its window resets then)
    assert retry in {math.ceil(60 - t0 % 60), math.ceil(60 - t1 % 60)}, (retry, t0, t1)


def test_delay_ack_times_out_but_the_order_is_in(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        server.faults.arm("delay_ack", delay_s=1.5)
        with pytest.raises(ccxt.RequestTimeout):
            await ex.create_order(
                "BTC/USDT", "limit", "buy", 0.01, 50000, {"clientOrderId": "gk-late"}
            )
        return await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "gk-late"})

    assert run(server, key, body, timeout=500)["status"] == "open"


def test_partial_fill_fault_splits_the_next_order(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        server.faults.arm("partial_fill", parts=3)
        order = await ex.create_order("BTC/USDT", "market", "buy", 0.03)
        return order, await ex.fetch_my_trades("BTC/USDT")

    order, trades = run(server, key, body)
    assert order["filled"] == 0.03 and [t["amount"] for t in trades] == [0.01, 0.01, 0.01]


def test_user_stream_and_market_disconnect_are_network_errors(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        book = await ex.watch_order_book("BTC/USDT")
        top = (await ex.watch_bids_asks(["BTC/USDT"]))["BTC/USDT"]
        assert top["bid"] < top["ask"]
        watching = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
        await asyncio.sleep(0.3)
        await ex.create_order("BTC/USDT", "market", "sell", 0.01, None, {"clientOrderId": "gk-ws"})
        seen = await asyncio.wait_for(watching, 5)
        while seen[-1]["status"] != "closed":  # NEW and TRADE may come in two updates
            seen = await asyncio.wait_for(ex.watch_orders("BTC/USDT"), 5)
        server.faults.arm("disconnect")
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 5)
        return book, seen

    book, seen = run(server, key, body, pro=True)
    assert book["bids"] and book["asks"] and book["nonce"] >= 1000
    assert [(o["clientOrderId"], o["status"]) for o in seen][-1] == ("gk-ws", "closed")


def test_gap_in_the_depth_stream_is_an_invalid_nonce(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        await ex.watch_order_book("BTC/USDT")
        server.faults.arm("gap")
        with pytest.raises(ccxt.InvalidNonce):
            for _ in range(100):
                await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 5)

    run(server, key, body, pro=True)
    assert server.gaps >= 1


# -- raw websocket checks: exact frames, no ccxt cache in between


async def _user_socket(
    server: BinanceServer, key: tuple[str, str], session: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse:
    """A WS-API user-data subscription signed the way ccxt signs it."""

    params = {"apiKey": key[0], "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["signature"] = hmac.new(key[1].encode(), payload.encode(), hashlib.sha256).hexdigest()
    ws = await session.ws_connect(f"{server.ws_url}/ws-api/v3")
    await ws.send_str(
        json.dumps({"id": "1", "method": "userDataStream.subscribe.signature", "params": params})
    )
    answer = json.loads((await ws.receive(timeout=5)).data)
    assert answer["status"] == 200 and answer["result"]["subscriptionId"] == 0
    return ws


async def _reports(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        event = json.loads((await ws.receive(timeout=5)).data)["event"]
        if event["e"] == "executionReport":
            out.append(event)
    return out


def test_user_event_faults_dup_reorder_and_fills_while_down(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def body(ex):  # noqa: ANN001, ANN202
        async with aiohttp.ClientSession() as session:
            ws = await _user_socket(server, key, session)
            server.faults.arm("dup_events", times=1)
            await ex.create_order(
                "BTC/USDT", "limit", "buy", 0.01, 50000, {"clientOrderId": "gk-dup"}
            )
            dup = await _reports(ws, 2)
            server.faults.arm("reorder_events", times=1)
            await ex.create_order(
                "BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "gk-re"}
            )
            reordered = await _reports(ws, 2)
            resting = await ex.create_order(
                "BTC/USDT", "limit", "sell", 0.01, 90000, {"clientOrderId": "gk-down"}
            )
            await _reports(ws, 1)
            server.faults.arm("fill_while_down")
            dropped = await ws.receive(timeout=5)
            while dropped.type == aiohttp.WSMsgType.TEXT:  # what was sent before the drop
                dropped = await ws.receive(timeout=5)
            server.call(
                lambda: server.matcher.fill_resting(server.matcher.find(ex_account, resting["id"]))
            )
            server.faults.clear("fill_while_down")
            trades = await ex.fetch_my_trades("BTC/USDT")
            return dup, reordered, dropped, trades

    ex_account = server.keys[key[0]].account
    dup, reordered, dropped, trades = run(server, key, body)
    assert [(r["c"], r["x"]) for r in dup] == [("gk-dup", "NEW"), ("gk-dup", "NEW")]
    assert [r["x"] for r in reordered] == ["TRADE", "NEW"]  # the NEW held back behind the TRADE
    assert dropped.type in (
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.ERROR,
    )
    assert server.events.withheld >= 2  # its executionReport and account position never sent
    assert [t["order"] for t in trades if t["side"] == "sell"] == [
        str(server.matcher.find(ex_account, client_id="gk-down").order_id)
    ]


def test_stall_stops_market_frames_and_keeps_the_socket(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def main() -> tuple[int, int, bool]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_url}/ws/0") as ws,
        ):
            await ws.send_str(
                json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1})
            )
            assert json.loads((await ws.receive(timeout=5)).data) == {"result": None, "id": 1}
            await ws.receive(timeout=5)  # frames flow
            server.faults.arm("stall", stream="market")
            await asyncio.sleep(0.2)  # let queued frames drain
            sent = server.frames_sent
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    await ws.receive(timeout=0.5)
            stalled_frames = server.frames_sent - sent
            server.faults.clear("stall")
            frame = json.loads((await ws.receive(timeout=5)).data)
            return stalled_frames, frame["u"], ws.closed

    stalled_frames, update_id, closed = asyncio.run(main())
    assert stalled_frames > 0 and update_id > 1000 and not closed  # frames were due, none came


def test_control_route_arms_a_fault_from_another_process(
    server: BinanceServer, key: tuple[str, str]
) -> None:
    async def main() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.rest_url}/__control/fault", json={"name": "ban", "retry_after": 3}
            ) as r:
                assert (await r.json())["ok"]
            async with session.get(f"{server.rest_url}/api/v3/ping") as r:
                return r.status, int(r.headers["Retry-After"])

    assert asyncio.run(main()) == (418, 3)


@pytest.mark.skipif(not binance_capture.available(), reason=binance_capture.SKIP_REASON)
def test_capture_is_served_byte_for_byte() -> None:
    capture = binance_capture.load()
    depth_frames = [f.data for f in capture.frames if f.stream == binance_capture.DEPTH_STREAM][:5]

    async def main() -> tuple[bytes, list[bytes]]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{srv.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=1000") as r:
                snapshot = await r.read()
            async with session.ws_connect(f"{srv.ws_url}/ws/0") as ws:
                await ws.send_str(
                    json.dumps(
                        {"method": "SUBSCRIBE", "params": [binance_capture.DEPTH_STREAM], "id": 1}
                    )
                )
                await ws.receive(timeout=5)
                frames = [(await ws.receive(timeout=5)).data.encode() for _ in range(5)]
            return snapshot, frames

    with BinanceServer(market=CaptureMarket(speed=0)) as srv:
        snapshot, frames = asyncio.run(main())
    assert snapshot == capture.snapshot_text and frames == depth_frames


def test_runs_as_a_process_and_takes_faults_over_http(tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.venues",
            "binanceus",
            "--key",
            "k",
            "--secret",
            "s",
            "--balance",
            "BTC=2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        req = urllib.request.Request(
            f"{url}/__control/fault", data=b'{"name": "timestamp"}', method="POST"
        )
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["ok"]
        state = json.loads(urllib.request.urlopen(f"{url}/__control/state", timeout=5).read())
        assert state["accounts"]["main"]["BTC"] == {"free": "2", "locked": "0"}
        assert urllib.request.urlopen(f"{url}/api/v3/ping", timeout=5).status == 200
        skew = b'{"clock_offset_ms": 3600000}'  # the venue's clock an hour ahead
        req = urllib.request.Request(f"{url}/__control/settings", data=skew, method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["ok"]
        before = time.time() * 1000
        server_ms = json.loads(urllib.request.urlopen(f"{url}/api/v3/time", timeout=5).read())[
            "serverTime"
        ]
        assert server_ms - before >= 3_600_000 - 1000
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
