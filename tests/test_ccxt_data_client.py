"""CcxtDataClient's life cycle against the local Binance.US server's synthetic book (no capture
needed): an instrument the venue does not list is refused naming it; a venue that is down
never blocks the caller, is retried with backoff, and is streamed from once it comes up."""

from __future__ import annotations

import random
import socket
import time

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import BookSnapshot
from engine.venues.ccxt_data import CcxtDataClient, backoff_s

BTC = Instrument(
    instrument_id=1, symbol="BTC/USDT", venue="binanceus", tick_size=0.01, lot_size=0.00001
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(port: int) -> dict:
    return {
        "rest_url": f"http://127.0.0.1:{port}",
        "ws_url": f"ws://127.0.0.1:{port}",
        "timeout_ms": 1000,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.4,
    }


def test_an_instrument_the_venue_does_not_list_is_refused_naming_it():
    from tests.venues.binance import BinanceServer

    with BinanceServer() as srv:
        doge = Instrument(instrument_id=2, symbol="DOGE/USDT", venue="binanceus")
        client = CcxtDataClient(
            "binanceus", "bn", InstrumentTable([BTC, doge]), _settings(srv.port)
        )
        with pytest.raises(ValueError, match="DOGE/USDT"):
            client.connect()
        assert client.state() == "down"


def test_a_dead_venue_never_blocks_and_is_streamed_from_once_it_is_up():
    from tests.venues.binance import BinanceServer

    port = _free_port()
    client = CcxtDataClient("binanceus", "bn", InstrumentTable([BTC]), _settings(port))
    try:
        client.connect()  # nothing listens: not an error, the session retries
        client.subscribe([BTC.instrument_id])
        deadline = time.monotonic() + 10
        while client.reconnects < 3 and time.monotonic() < deadline:
            t0 = time.monotonic()
            assert client.poll_updates() == []
            assert time.monotonic() - t0 < 0.05  # never waits on the venue
            time.sleep(0.02)
        assert client.reconnects >= 3 and client.state() == "down"
        assert "ExchangeNotAvailable" in client.state_reason
        with BinanceServer(port=port) as _srv:
            msgs: list = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and client.state() != "connected":
                msgs += client.poll_updates()
                time.sleep(0.02)
            msgs += client.poll_updates()
            assert client.state() == "connected", client.state_reason
            assert any(type(m) is BookSnapshot for m in msgs)
            assert client.instruments()[0].instrument == BTC
    finally:
        t0 = time.monotonic()
        client.close()
        assert time.monotonic() - t0 < 10
    assert client.state() == "down"


def test_backoff_doubles_to_its_cap_with_jitter():
    rng = random.Random(1)
    waits = [backoff_s(k, 0.5, 30.0, rng) for k in range(12)]
    for k, w in enumerate(waits):
        full = min(30.0, 0.5 * 2**k)
        assert full * 0.5 <= w <= full
    assert max(waits) <= 30.0 and waits[-1] >= 15.0
    assert len({round(w / min(30.0, 0.5 * 2**k), 6) for k, w in enumerate(waits)}) > 5  # jittered
