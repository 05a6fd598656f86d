"""The binanceusdm kind in paper: its contract markets, its market data and the simulated
exchange trading the perpetual on the local futures server's stream (synthetic, and the real
Binance capture replayed as USD-M futures where ../shared has it)."""

from __future__ import annotations

import time

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookSnapshot,
    MarkPrice,
    NewOrder,
    OrderPartiallyFilled,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_markets import MarketMismatch, check_instrument, instrument_for
from engine.venues.ccxt_perp_data import PerpDataClient
from engine.venues.ccxt_perp_markets import load_perp_markets
from engine.venues.ccxt_session import Credentials
from engine.venues.registry import VenueConfig, live_kinds, lookup, real_kinds
from tests.venues import binance_capture as bc
from tests.venues.binance_futures import BinanceFuturesServer

PERP = Instrument(
    instrument_id=1,
    symbol="BTC/USDT:USDT",
    venue="bf",
    tick_size=0.1,
    lot_size=0.001,
    kind="perpetual",
    funding_interval_s=28800,
    initial_margin=0.008,
    maintenance_margin=0.004,
)


@pytest.fixture
def server():
    made: list[BinanceFuturesServer] = []

    def make(**kw) -> BinanceFuturesServer:
        srv = BinanceFuturesServer(**kw).start()
        srv.add_key("pk", "ps", balances={"USDT": "1000"})
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


def _where(srv: BinanceFuturesServer, **extra) -> dict:
    return {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "timeout_ms": 3000, **extra}


def test_registered_as_a_live_real_kind() -> None:
    assert "binanceusdm" in real_kinds() and "binanceusdm" in live_kinds()
    assert lookup("binanceusdm").markets is not None


def test_contract_markets_as_perpetual_instruments(server) -> None:
    srv = server(funding_interval_s=14400)
    got = load_perp_markets("binanceusdm", _where(srv))
    assert list(got) == ["BTC/USDT:USDT"]  # no spot market of the venue's
    m = got["BTC/USDT:USDT"]
    assert (m.venue_symbol, m.tick, m.lot, m.min_notional) == ("BTCUSDT", "0.1", "0.001", "5")
    # without keys: the published percents (requiredMarginPercent 0.8 %, maint 0.4 %) and the
    # venue's fundingInfo interval (4 h here)
    assert m.instrument == {
        "contract_size": 1.0,
        "kind": "perpetual",
        "funding_interval_s": 14400,
        "initial_margin": 0.008,
        "maintenance_margin": 0.004,
        "funding_rate": 0.0001,  # premiumIndex's lastFundingRate: what paper's venue charges
    }
    ins = instrument_for(7, "bf", m)
    assert (ins.kind, ins.contract_size, ins.is_margined) == ("perpetual", 1.0, True)
    # a configured instrument whose kind or contract size disagrees is refused, naming it
    with pytest.raises(MarketMismatch, match="kind 'spot'"):
        check_instrument(
            "bf",
            Instrument(
                instrument_id=1, symbol="BTC/USDT:USDT", venue="bf", tick_size=0.1, lot_size=0.001
            ),
            got,
        )
    odd = Instrument(
        instrument_id=1,
        symbol="BTC/USDT:USDT",
        venue="bf",
        tick_size=0.1,
        lot_size=0.001,
        kind="perpetual",
        funding_interval_s=3600,
        contract_size=10,
    )
    with pytest.raises(MarketMismatch, match="contract_size"):
        check_instrument("bf", odd, got)


def test_margins_from_brackets_and_leverage(server) -> None:
    srv = server()
    keys = Credentials("pk", "ps")
    m = load_perp_markets("binanceusdm", _where(srv, leverage=20), keys)["BTC/USDT:USDT"]
    # the first bracket's maintMarginRatio; initial = 1 / the venue key's leverage
    assert (m.instrument["initial_margin"], m.instrument["maintenance_margin"]) == (0.05, 0.004)
    with pytest.raises(ValueError, match="leverage 200 is above the venue's 125"):
        load_perp_markets("binanceusdm", _where(srv, leverage=200), keys)
    with pytest.raises(ValueError, match="whole numbers"):
        load_perp_markets("binanceusdm", _where(srv, leverage=12.5), keys)


def _paper_run(srv: BinanceFuturesServer, ins: Instrument) -> tuple[list, list, PerpDataClient]:
    kind = lookup("binanceusdm")
    cfg = VenueConfig(
        name="bf",
        kind="binanceusdm",
        instruments=InstrumentTable([ins]),
        # cash in the instrument's currency: its margin (with none, the venue refuses the buy)
        settings=_where(srv, paper_balance={ins.currency: 100_000.0}),
    )
    md = kind.market_data(cfg)
    assert isinstance(md, PerpDataClient)
    ex = kind.execution(cfg)
    assert type(ex.inner).__name__ == "SimExchange"  # paper: the simulated exchange
    got: list = []
    events: list = []
    md.connect()
    md.subscribe([ins.instrument_id])
    try:
        deadline = time.monotonic() + 20
        sent = False
        while time.monotonic() < deadline:
            for msg in md.poll_updates(4096):
                got.append(msg)
                events.extend(ex.on_market_data(msg, time.monotonic_ns()))
            if not sent and any(type(m) is BookSnapshot for m in got):
                now = time.monotonic_ns()
                order = NewOrder(
                    client_order_id=11,
                    strategy_id=1,
                    instrument_id=ins.instrument_id,
                    side=int(Side.BUY),
                    order_type=int(OrderType.MARKET),
                    tif=int(TimeInForce.IOC),
                    px=0,
                    qty=10,
                    ts_origin=now,
                    ts_approved=now,
                )
                events.extend(ex.submit(order, now))
                sent = True
            events.extend(ex.poll(time.monotonic_ns()))
            if sent and md.marks() and any(isinstance(e, OrderPartiallyFilled) for e in events):
                break
            time.sleep(0.02)
    finally:
        md.close()
    return got, events, md


def test_paper_trades_the_perpetual_on_the_venue_stream(server) -> None:
    srv = server()
    srv.call(setattr, srv, "mark_override", "60000.0")
    got, events, md = _paper_run(srv, PERP)
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert sum(f.fill_qty for f in fills) == 10, [type(e).__name__ for e in events]
    book = next(m for m in got if type(m) is BookSnapshot)
    assert any(type(m) is Quote for m in got)
    # the buy lifts the synthetic book's ask (60000.1 and up), never below the best bid
    assert min(f.fill_px for f in fills) >= 600_001 and book.instrument_id == 1
    mark = md.marks()[1]
    assert (mark.px, mark.rate) == (600_000, 0.0001)
    assert mark.next_funding_ns % (28800 * 10**9) == 0
    # and on the ring: the venue's mark, index and funding rate as a MarkPrice (tag 61)
    ring = [m for m in got if type(m) is MarkPrice]
    assert ring and ring[-1].instrument_id == 1
    last = ring[-1]
    assert (last.mark_px, last.index_px, last.funding_rate) == (600_000, 600_000, 0.0001)
    assert last.next_funding_ns == mark.next_funding_ns
    assert srv.requests["GET /fapi/v1/depth"] >= 1  # the book came from the futures API


@pytest.mark.skipif(not bc.available(), reason=bc.SKIP_REASON)
def test_paper_on_the_real_capture_as_usdm(server) -> None:
    srv = server(capture=bc.CAPTURE_PATH, speed=20)
    ins = Instrument(
        instrument_id=1,
        symbol="BTC/USDT:USDT",
        venue="bf",
        tick_size=0.01,
        lot_size=0.00001,
        kind="perpetual",
        funding_interval_s=28800,
    )
    got, events, md = _paper_run(srv, ins)
    snap = next(m for m in got if type(m) is BookSnapshot)
    cap = bc.load()
    best_bid = max(float(p) for p, _ in cap.snapshot["bids"])
    # the first book is the capture's REST snapshot, served by the futures depth endpoint
    assert snap.bid_px[0] == round(best_bid / 0.01)
    assert sum(e.fill_qty for e in events if isinstance(e, OrderPartiallyFilled)) == 10
    assert md.counters()["gaps"] == 0  # pu continuity held over the replayed diffs


def test_a_skipped_futures_depth_diff_breaks_pu_and_the_book_resyncs(server) -> None:
    srv = server()
    kind = lookup("binanceusdm")
    cfg = VenueConfig(
        name="bf", kind="binanceusdm", instruments=InstrumentTable([PERP]), settings=_where(srv)
    )
    md = kind.market_data(cfg)
    md.connect()
    md.subscribe([PERP.instrument_id])
    try:
        got: list = []
        deadline = time.monotonic() + 20
        armed = False
        while time.monotonic() < deadline:
            got.extend(md.poll_updates(4096))
            if not armed and any(type(m) is BookSnapshot for m in got):
                srv.faults.arm("gap")
                armed = True
            if armed and md.counters()["gaps"] >= 1 and md.state() == "connected":
                break
            time.sleep(0.02)
        assert srv.gaps == 1 and md.counters()["gaps"] >= 1
        assert md.counters()["resyncs"] >= 1 and md.state() == "connected"
        assert sum(type(m) is BookSnapshot for m in got) >= 1
    finally:
        md.close()


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ('position_mode = "hedging"', "venues[0].position_mode", "hedging cannot"),
        ('account = "cash"', "venues[0].account", "margin"),
        ("perp_poll_s = 0.0", "venues[0].perp_poll_s", "> 0"),
        ("paper_balance = { USDT = -1.0 }", "venues[0].paper_balance", ">= 0"),
    ],
)
def test_venue_keys_the_kind_cannot_model_are_refused(entry: str, key: str, problem: str) -> None:
    from ops.config import ConfigError, parse_config

    one = '[[instruments]]\ninstrument_id = 1\nsymbol = "A"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(f'{one}[[venues]]\nname = "bf"\nkind = "binanceusdm"\n{entry}\n', "my.toml")
    assert err.value.key == key and problem in err.value.problem, str(err.value)
