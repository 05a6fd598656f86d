"""CcxtDataClient against the local Kraken and Coinbase Advanced servers (synthetic markets that
a test steps itself): the published book equals the server's book once the market rests, every
quote is the top of the published book, and each fault — a lost book update (Kraken: seen by
the CRC32 checksum; Coinbase: by the connection's ``sequence_num``), a silent stream, a dropped
connection — is counted, resynced, and leaves the book right again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade
from engine.venues.ccxt_data import CcxtDataClient

DEPTH = 10  # levels a side compared (Kraken's default subscription depth)


@dataclass
class Venue:
    kind: str
    ins: Instrument
    server: Any
    step: Callable[[], None]  # one market move, on the server's thread

    def top(self) -> tuple[dict[int, int], dict[int, int]]:
        """The server's best DEPTH levels a side in ticks/lots."""
        depth = self.server.call(self.server.matcher.books[self.ins.symbol].depth, DEPTH)
        conv = self.ins.px_to_ticks, self.ins.qty_to_lots
        return tuple(  # type: ignore[return-value]
            {conv[0](p): conv[1](q) for p, q in depth[side]} for side in ("bids", "asks")
        )


def _kraken() -> Venue:
    from tests.venues.kraken import KrakenServer

    srv = KrakenServer(md_interval_s=None).start()
    ins = Instrument(
        instrument_id=5, symbol="BTC/USD", venue="kraken", tick_size=0.1, lot_size=0.00000001
    )
    return Venue("kraken", ins, srv, lambda: srv.call(srv.market.step))


def _coinbase() -> Venue:
    from tests.venues.coinbase import CoinbaseServer

    srv = CoinbaseServer(md_interval_s=3600.0).start()
    ins = Instrument(
        instrument_id=6, symbol="BTC/USD", venue="coinbase", tick_size=0.01, lot_size=0.00000001
    )
    feeds = srv.feeds

    def step() -> None:
        def move() -> None:
            for spec in srv.matcher.specs.values():
                feeds._step(spec)
            feeds.publish_books()

        srv.call(move)

    return Venue("coinbase", ins, srv, step)


MAKERS = {"kraken": _kraken, "coinbase": _coinbase}


@pytest.fixture(params=sorted(MAKERS))
def venue(request: pytest.FixtureRequest) -> Iterator[tuple[Venue, Callable[..., CcxtDataClient]]]:
    module = {"kraken": "tests.venues.kraken", "coinbase": "tests.venues.coinbase"}[request.param]
    pytest.importorskip(module, reason=f"the local {request.param} server")
    v = MAKERS[request.param]()
    clients: list[CcxtDataClient] = []

    def client(**settings: Any) -> CcxtDataClient:
        base = {
            "rest_url": v.server.rest_url,
            "ws_url": v.server.ws_url,
            "book_depth": DEPTH,
            "book_hold_s": 0.3,  # a resting market's snapshots carry no venue time: held this
        }
        c = CcxtDataClient(v.kind, v.kind, InstrumentTable([v.ins]), base | settings)
        clients.append(c)
        c.connect()
        c.subscribe([v.ins.instrument_id])
        return c

    yield v, client
    for c in clients:
        c.close()
    v.server.stop()


class _Book:
    """Our messages applied in order (on the test's thread), every quote checked against it."""

    def __init__(self) -> None:
        self.sides: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.snapshots = self.quotes = self.trades = self.snap_ts = 0

    def apply(self, msgs: list) -> None:
        bids, asks = self.sides
        for m in msgs:
            t = type(m)
            if t is BookSnapshot:
                self.snapshots += 1
                self.snap_ts = m.ts_event
                bids.clear()
                asks.clear()
                bids.update(zip(m.bid_px, m.bid_qty, strict=True))
                asks.update(zip(m.ask_px, m.ask_qty, strict=True))
            elif t is BookDelta:
                side = bids if m.side == Side.BUY else asks
                if m.qty:
                    side[m.px] = m.qty
                else:
                    side.pop(m.px, None)
            elif t is Quote:
                self.quotes += 1
                bp, ap = max(bids), min(asks)
                assert (m.bid_px, m.bid_qty, m.ask_px, m.ask_qty) == (bp, bids[bp], ap, asks[ap])
            elif t is Trade:
                self.trades += 1
                assert m.px > 0 and m.qty > 0 and m.side in (Side.BUY, Side.SELL)


def _until(
    client: CcxtDataClient, book: _Book, cond: Callable[[], bool], limit_s: float = 15
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        book.apply(client.poll_updates(10_000))
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(
        f"timed out: state {client.state()} ({client.state_reason}), {client.counters()}, "
        f"reasons {list(client.reasons)}"
    )


def _settles_equal(v: Venue, client: CcxtDataClient, book: _Book) -> None:
    """The market rests: our book reaches the server's and stays there."""
    target = v.top()
    _until(client, book, lambda: book.sides == target and client.state() == "connected")


def _steps(v: Venue, n: int) -> None:
    for _ in range(n):
        v.step()
        time.sleep(0.005)


class _Stepper:
    """The market moving in the background (for faults that need a stream to go quiet)."""

    def __init__(self, v: Venue) -> None:
        self.v, self.stop_ = v, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop_.is_set():
            self.v.step()
            time.sleep(0.03)

    def stop(self) -> None:
        self.stop_.set()
        self.t.join(5)


def test_book_snapshot_first_then_equal_to_the_venue(venue):
    v, make = venue
    client = make(stale_after_s=0)
    book = _Book()
    _until(client, book, lambda: book.snapshots == 1 and client.state() == "connected")
    # the market has not moved: a snapshot without a venue time still goes out (after
    # book_hold_s, stamped with our clock), with its quote
    assert book.quotes == 1 and book.snap_ts > 0
    _steps(v, 40)
    _settles_equal(v, client, book)
    assert book.snapshots == 1 and book.quotes >= 1
    assert client.counters() == {"gaps": 0, "resyncs": 0, "reconnects": 0}


def test_lost_update_is_seen_counted_and_resynced(venue):
    v, make = venue
    client = make(stale_after_s=0, reconnect_min_s=0.05)
    book = _Book()
    _until(client, book, lambda: client.state() == "connected")
    _steps(v, 5)
    for _ in range(10):  # a lost update the next one overwrites leaves nothing to see: again
        v.server.faults.arm("gap")
        _steps(v, 4)
        _until(client, book, lambda: True, 0.2)
        if client.gaps:
            break
    assert client.gaps >= 1 and any(("checksum" in r or "sequence" in r) for r in client.reasons)
    _steps(v, 10)
    _until(client, book, lambda: client.resyncs >= 1)
    _settles_equal(v, client, book)
    assert book.snapshots == 1 + client.resyncs


def test_silent_stream_reconnects_and_resyncs(venue):
    v, make = venue
    client = make(stale_after_s=0.5, reconnect_min_s=0.05)
    book = _Book()
    stepper = _Stepper(v)
    try:
        _until(client, book, lambda: client.state() == "connected" and book.quotes >= 3)
        v.server.faults.arm("stall", seconds=1.0)
        _until(client, book, lambda: client.reconnects >= 1 and client.state() == "connected")
    finally:
        stepper.stop()
    assert any("keepalive" in r for r in client.reasons) and client.resyncs >= 1
    _settles_equal(v, client, book)


def test_a_quiet_market_on_a_live_connection_is_left_alone_unless_a_data_timer_says(venue):
    v, make = venue
    client = make(stale_after_s=0.3)  # pings every 0.1 s; the market does not move at all
    book = _Book()
    _until(client, book, lambda: client.state() == "connected")
    time.sleep(1.0)  # three windows without a market update, pongs flowing
    assert client.reconnects == 0 and client.state() == "connected", list(client.reasons)
    # the keepalive (and with it the snapshot's deadline) wide enough for a loaded box: the
    # reconnect that must come is the data timer's
    timed = make(stale_after_s=2.0, book_stale_after_s=0.3, reconnect_min_s=0.05)
    _until(timed, _Book(), lambda: timed.reconnects >= 1)
    assert any("silent" in r for r in timed.reasons)


def test_dropped_connection_reconnects_and_resyncs(venue):
    v, make = venue
    client = make(stale_after_s=0, reconnect_min_s=0.05)
    book = _Book()
    _until(client, book, lambda: client.state() == "connected")
    _steps(v, 5)
    v.server.faults.arm("disconnect")
    _until(client, book, lambda: client.reconnects >= 1 and client.state() == "connected")
    _steps(v, 10)
    _settles_equal(v, client, book)
    assert client.resyncs >= 1 and book.snapshots >= 2


def test_a_reconnect_storm_backs_off_and_ends_with_the_right_book(venue):
    v, make = venue
    # a session that lasts reconnect_max_s resets the backoff: 2 s, past what a loaded box takes
    client = make(stale_after_s=0, reconnect_min_s=0.05, reconnect_max_s=2.0)
    book = _Book()
    _until(client, book, lambda: client.state() == "connected")
    for k in range(5):  # the link drops again as soon as it is back, before the book is
        _until(client, book, lambda: bool(v.server.hub.select()))  # ... rebuilt, at times
        v.server.faults.arm("disconnect")
        _until(client, book, lambda k=k: client.reconnects > k)
    _until(client, book, lambda: client.state() == "connected")
    _steps(v, 10)
    _settles_equal(v, client, book)
    assert client.reconnects == 5 and book.snapshots == 1 + client.resyncs
    # the waits grew (0.05 s doubling, jittered 0.5-1x): by the fourth drop at least 0.2 s
    waits = list(client.waits)
    assert len(waits) == 5 and waits[0] <= 0.05 and max(waits[3:]) >= 0.2


def test_a_lost_update_on_one_book_leaves_the_other_alone():
    pytest.importorskip("tests.venues.kraken", reason="the local kraken server")
    from tests.venues.kraken import KrakenServer

    with KrakenServer(md_interval_s=None) as srv:
        btc = Instrument(
            instrument_id=5, symbol="BTC/USD", venue="kraken", tick_size=0.1, lot_size=0.00000001
        )
        eth = Instrument(
            instrument_id=6, symbol="ETH/USD", venue="kraken", tick_size=0.01, lot_size=0.00000001
        )
        settings = {
            "rest_url": srv.rest_url,
            "ws_url": srv.ws_url,
            "book_depth": DEPTH,
            "stale_after_s": 0,
            "book_hold_s": 0.3,
        }
        client = CcxtDataClient("kraken", "kraken", InstrumentTable([btc, eth]), settings)
        try:
            client.connect()
            client.subscribe([5, 6])
            msgs: list = []
            deadline = time.monotonic() + 15
            while client.state() != "connected" and time.monotonic() < deadline:
                msgs += client.poll_updates()
                time.sleep(0.01)
            assert client.state() == "connected"
            for _ in range(40):  # lose one update at a time until a checksum shows one
                srv.faults.arm("gap")
                for _ in range(3):
                    srv.call(srv.market.step)
                time.sleep(0.05)
                if client.gaps:
                    break
            deadline = time.monotonic() + 15
            while client.resyncs < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            msgs += client.poll_updates(100_000)
            assert client.gaps == 1 and client.resyncs == 1 and client.reconnects == 0
            snaps = [m.instrument_id for m in msgs if type(m) is BookSnapshot]
            assert sorted(snaps[:2]) == [5, 6] and len(snaps) == 3  # one book rebuilt, once
        finally:
            client.close()
