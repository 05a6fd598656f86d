"""Betfair's wire in engine terms, by hand: selections as instruments, the market stream's
images and deltas as books, status and settlement, and bets' cumulative states as fills.

No network: the messages are written here in the Exchange Stream API's documented shapes.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.betting import betfair_ladder_ok
from engine.enums import ExchangeStatusKind, OrderType, SettlementKind, Side, TimeInForce
from engine.instruments import Instrument
from engine.messages import (
    BookDelta,
    BookSnapshot,
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    Quote,
    Trade,
)
from engine.venues.betfair_orders import BetState, OrderBook, Tracked, parse_ref
from engine.venues.betfair_wire import (
    MarketStream,
    markets_from_catalogue,
    settlement_of,
    split_symbol,
)
from engine.venues.ccxt_markets import instrument_for
from tests.venues.betfair_market import on_ladder

MID = "1.200000001"
CATALOGUE = [
    {
        "marketId": MID,
        "marketName": "Match Odds",
        "runners": [
            {"selectionId": 47972, "runnerName": "Arsenal", "sortPriority": 1},
            {"selectionId": 48351, "runnerName": "Chelsea", "sortPriority": 2},
        ],
    }
]


def _instruments() -> list[Instrument]:
    markets = markets_from_catalogue(CATALOGUE, "GBP", "2.00")
    return [instrument_for(k + 1, "bf", m) for k, m in enumerate(markets.values())]


def test_the_engine_ladder_and_the_local_venue_agree_on_every_price() -> None:
    for ticks in range(90, 101_100):
        assert betfair_ladder_ok(ticks, 0.01) == on_ladder(Decimal(ticks) / 100), ticks
    assert [betfair_ladder_ok(t, 0.01) for t in (101, 201, 202, 303, 305, 100_000)] == [
        True,
        False,
        True,
        False,
        True,
        True,
    ]


def test_each_selection_is_a_betting_instrument_of_its_market() -> None:
    arsenal, chelsea = _instruments()
    assert (arsenal.symbol, arsenal.kind, arsenal.market_id, arsenal.outcome) == (
        f"{MID}/47972",
        "betting",
        MID,
        "Arsenal",
    )
    assert (arsenal.tick_size, arsenal.lot_size, arsenal.currency) == (0.01, 0.01, "GBP")
    assert chelsea.outcome == "Chelsea" and chelsea.market_id == arsenal.market_id
    m = markets_from_catalogue(CATALOGUE, "GBP", "2.00")[f"{MID}/47972"]
    assert m.min_qty == "2.00" and m.asset_class == "betting"
    assert split_symbol(f"{MID}/47972@bf") == (MID, 47972)
    with pytest.raises(ValueError, match="not a Betfair selection"):
        split_symbol("BTC/USDT")


def _image() -> dict:
    return {
        "op": "mcm",
        "pt": 1_000,
        "ct": "SUB_IMAGE",
        "mc": [
            {
                "id": MID,
                "img": True,
                "marketDefinition": {"status": "OPEN", "runners": [{"id": 47972}]},
                "rc": [
                    {
                        "id": 47972,
                        "atb": [[2.0, 10], [1.98, 5]],
                        "atl": [[2.02, 7]],
                        "trd": [[2.0, 3]],
                    },
                    {"id": 99999, "atb": [[5.0, 1]]},  # a selection nobody subscribed to
                ],
            }
        ],
    }


def test_an_image_is_a_snapshot_back_side_bid_lay_side_ask_and_a_quote() -> None:
    arsenal, chelsea = _instruments()
    s = MarketStream([arsenal, chelsea])
    out = s.on_mcm(_image(), 5)
    snaps = [m for m in out if type(m) is BookSnapshot]
    a = next(m for m in snaps if m.instrument_id == arsenal.instrument_id)
    # available to back (resting lays) is the bid side, best = highest odds; to lay the ask
    assert (a.bid_px, a.bid_qty, a.ask_px, a.ask_qty) == ([200, 198], [1000, 500], [202], [700])
    assert a.ts_event == 1_000 * 1_000_000 and a.ts_recv == 5
    c = next(m for m in snaps if m.instrument_id == chelsea.instrument_id)
    assert (c.bid_px, c.ask_px) == ([], [])  # not in the image: an empty book
    q = next(m for m in out if type(m) is Quote and m.instrument_id == arsenal.instrument_id)
    assert (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty) == (200, 1000, 202, 700)
    assert not any(type(m) is Trade for m in out)  # traded volume before us is no print
    assert not any(type(m) is ExchangeStatus for m in out)  # open, as expected


def test_deltas_are_levels_in_sequence_size_zero_removes_and_traded_volume_is_a_print() -> None:
    arsenal, _ = _instruments()
    s = MarketStream([arsenal])
    s.on_mcm(_image(), 5)
    delta = {
        "op": "mcm",
        "pt": 2_000,
        "mc": [
            {
                "id": MID,
                "rc": [{"id": 47972, "atb": [[2.0, 0]], "atl": [[2.04, 3]], "trd": [[2.0, 13]]}],
            }
        ],
    }
    out = s.on_mcm(delta, 6)
    deltas = [m for m in out if type(m) is BookDelta]
    assert [(d.side, d.px, d.qty, d.seq) for d in deltas] == [(1, 200, 0, 2), (-1, 204, 300, 3)]
    (t,) = [m for m in out if type(m) is Trade]
    assert (t.px, t.qty, t.side) == (200, 1000, int(Side.NONE))  # 13 - 3 matched at 2.00
    (q,) = [m for m in out if type(m) is Quote]
    assert (q.bid_px, q.ask_px, q.seq) == (198, 202, 3)


@pytest.mark.parametrize(
    ("market", "runner", "status", "reason"),
    [
        ("SUSPENDED", "ACTIVE", ExchangeStatusKind.HALTED, "suspended"),
        ("OPEN", "REMOVED", ExchangeStatusKind.HALTED, "removed"),
        ("CLOSED", "WINNER", ExchangeStatusKind.HALTED, "settled: winner"),
        ("CLOSED", "LOSER", ExchangeStatusKind.HALTED, "settled: loser"),
        ("CLOSED", "ACTIVE", ExchangeStatusKind.HALTED, "settled: void"),
    ],
)
def test_market_status_becomes_exchange_status_before_the_book_it_changes(
    market: str, runner: str, status: int, reason: str
) -> None:
    arsenal, _ = _instruments()
    s = MarketStream([arsenal])
    s.on_mcm(_image(), 5)
    md = {"status": market, "runners": [{"id": 47972, "status": runner}]}
    msg = {
        "op": "mcm",
        "mc": [{"id": MID, "marketDefinition": md, "rc": [{"id": 47972, "atb": [[2.0, 0]]}]}],
    }
    out = s.on_mcm(msg, 7)
    assert type(out[0]) is ExchangeStatus and (out[0].status, out[0].reason) == (status, reason)
    reopen = {
        "op": "mcm",
        "mc": [{"id": MID, "marketDefinition": {"status": "OPEN", "runners": []}}],
    }
    if market == "SUSPENDED":
        (again,) = s.on_mcm(reopen, 8)
        assert (again.status, again.reason) == (ExchangeStatusKind.OPEN, "open")


def test_settlement_reasons_read_back() -> None:
    assert settlement_of("settled: winner") == (SettlementKind.RESOLVED, 1)
    assert settlement_of("settled: loser") == (SettlementKind.RESOLVED, 0)
    assert settlement_of("settled: void") == (SettlementKind.VOID, -1)
    assert settlement_of("suspended") is None


def _tracked(book: OrderBook, ins: Instrument, coid: int = 7, qty: int = 500) -> Tracked:
    o = NewOrder(
        coid, 1, ins.instrument_id, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 200, qty, 1, 1
    )
    t = Tracked(o, ins, MID, 47972, book.ref(coid), 200, qty)
    book.orders[coid] = t
    return t


def test_cumulative_bet_states_make_each_fill_once_at_its_own_price() -> None:
    arsenal, _ = _instruments()
    book = OrderBook("bf", "Gabc")
    t = _tracked(book, arsenal)
    d = Decimal
    first = book.on_bet(t, BetState("11", d(2), d("2.0"), d(3)), 10, 10)
    assert [type(e) for e in first] == [OrderAccepted, OrderPartiallyFilled]
    assert (first[1].fill_qty, first[1].fill_px, first[1].leaves_qty) == (200, 200, 300)
    assert book.on_bet(t, BetState("11", d(2), d("2.0"), d(3)), 11, 11) == []  # said twice
    # 5 matched at 2.12 on average: the 3 new at (5 x 2.12 - 2 x 2.00) / 3 = 2.20
    last = book.on_bet(t, BetState("11", d(5), d("2.12"), d(0), complete=True), 12, 12)
    (f,) = last
    assert type(f) is OrderFilled and (f.fill_qty, f.fill_px, f.cum_qty, f.leaves_qty) == (
        300,
        220,
        500,
        0,
    )
    assert book.open_orders() == [] and [x.fill_id for x in book.fills] == [1, 2]
    assert parse_ref("Gabc", book.ref(7)) == 7 and parse_ref("Gxyz", book.ref(7)) is None


def test_a_bet_lapsed_at_the_close_expires_what_was_left() -> None:
    arsenal, _ = _instruments()
    book = OrderBook("bf", "Gabc")
    t = _tracked(book, arsenal)
    d = Decimal
    book.accept(t, "12", 1)
    out = book.on_bet(t, BetState("12", d(1), d("2.0"), d(0), lapsed=d(4), complete=True), 2, 2)
    assert [type(e) for e in out] == [OrderPartiallyFilled, OrderExpired]
    assert out[1].leaves_qty == 400 and book.report(t).status == 7  # EXPIRED
