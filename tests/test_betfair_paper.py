"""Betfair paper: the venue's stream drives the simulated exchange, which never bets there.

Built the way `gekko run --venue betfair` builds it (the pre-flight lists the selections from
the local Betfair's catalogue, ``venue_configs`` makes the clients). A back takes the odds
available to back (the bid side), a lay the odds available to lay; a suspension on the stream
halts the selection; the market's settlement (or void) on the stream settles the simulated
position, with the commission on the market's net winnings. By hand, on a fresh local server
(Arsenal: lays 2.00 / 1.98 / 1.96, backs 2.02 / 2.04 / 2.06; Chelsea 3.00 ... / 3.05 ...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.enums import ExchangeStatusKind, OrderType, SettlementKind, Side, TimeInForce
from engine.messages import (
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    Quote,
    Settlement,
)
from engine.venues.registry import lookup
from procs.build import venue_configs
from tests.test_venue_wiring import venue_run_config
from tests.venues.betfair import SYMBOLS, BetfairServer, venue_extra

pytestmark = pytest.mark.timeout(120)

MID, ARSENAL = "1.200000001", 47972
SETTLE_NS = 10_000_000_000


class Paper:
    def __init__(self, srv: BetfairServer, tmp_path: Path) -> None:
        self.srv = srv
        cfg = venue_run_config("betfair", srv, venue_extra(srv, tmp_path))
        self.vc = venue_configs(cfg, record_path=tmp_path / "bf.venue")[0]
        self.ids = {i.symbol: i.instrument_id for i in cfg.instrument_table()}
        self.ex = lookup("betfair").execution(self.vc)
        self.md = lookup("betfair").market_data(self.vc)
        self.md.connect()
        self.md.subscribe(list(self.ids.values()))
        self.now = 0
        self.events: list[object] = []
        self.md_seen: list[object] = []

    def pump(self, until: Any, timeout_s: float = 8.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.md.poll_updates():
                self.now = max(self.now, m.ts_event)  # type: ignore[attr-defined]
                self.md_seen.append(m)
                self.events += self.ex.on_market_data(m, self.now)
            self.events += self.ex.poll(self.now + SETTLE_NS)
            if until():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out: {self.events[-6:]}")

    def submit(self, coid: int, sym: str, side: int, px: int, qty: int) -> None:
        o = NewOrder(coid, 1, self.ids[sym], side, OrderType.LIMIT, TimeInForce.GTC, px, qty, 0, 0)
        self.events += self.ex.submit(o, self.now)
        self.pump(lambda: any(getattr(e, "client_order_id", 0) == coid for e in self.events))

    def of(self, t: type, coid: int | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if type(e) is t and (coid is None or getattr(e, "client_order_id", 0) == coid)
        ]

    def close(self) -> None:
        self.md.close()
        self.ex.close()


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[Paper]:
    with BetfairServer() as srv:
        p = Paper(srv, tmp_path)
        iid = p.ids[SYMBOLS[0]]
        p.pump(lambda: any(type(m) is Quote and m.instrument_id == iid for m in p.md_seen))
        yield p
        p.close()


def test_paper_backs_at_the_best_back_odds_lays_at_the_best_lay_and_sends_nothing(
    paper: Paper,
) -> None:
    arsenal, chelsea = SYMBOLS
    paper.submit(1, arsenal, Side.BUY, 190, 1000)  # back 10 at 1.90 or better: 2.00
    paper.submit(2, chelsea, Side.SELL, 310, 500)  # lay 5 at 3.10 or lower: 3.05
    paper.pump(lambda: len(paper.of(OrderFilled)) == 2)
    (back,) = paper.of(OrderFilled, 1)
    (lay,) = paper.of(OrderFilled, 2)
    assert (back.fill_px, back.fill_qty) == (200, 1000) and (lay.fill_px, lay.fill_qty) == (
        305,
        500,
    )
    assert paper.ex.positions() == {paper.ids[arsenal]: 1000, paper.ids[chelsea]: -500}
    paper.submit(3, arsenal, Side.BUY, 201, 100)  # 2.01 is not on the ladder
    (r,) = paper.of(OrderRejected, 3)
    assert "ladder" in r.reason
    assert paper.srv.requests.count("placeOrders") == 0  # paper: the venue saw no bet


def test_paper_halts_on_suspension_and_settles_with_the_market(paper: Paper) -> None:
    """By hand: back 10 on Arsenal at 2.00 and lay 5 on Chelsea at 3.05; Arsenal wins: the
    back +10.00, the lay (Chelsea lost) +5.00; commission 5 % x 15.00 = 0.75 over the market's
    settlements."""
    arsenal, chelsea = SYMBOLS
    paper.submit(1, arsenal, Side.BUY, 200, 1000)
    paper.submit(2, chelsea, Side.SELL, 305, 500)
    paper.srv.suspend(MID)
    iid = paper.ids[arsenal]
    paper.pump(
        lambda: any(type(m) is ExchangeStatus and m.instrument_id == iid for m in paper.md_seen)
    )
    paper.submit(3, arsenal, Side.BUY, 200, 100)
    (r,) = paper.of(OrderRejected, 3)
    assert "halt" in r.reason.lower()
    paper.srv.resume(MID)
    paper.srv.settle(MID, ARSENAL)
    paper.pump(lambda: len(paper.of(Settlement)) == 2)
    by = {s.instrument_id: s for s in paper.of(Settlement)}
    a, c = by[iid], by[paper.ids[chelsea]]
    assert (a.kind, a.outcome, a.position) == (SettlementKind.RESOLVED, 1, 1000)
    assert (c.kind, c.outcome, c.position) == (SettlementKind.RESOLVED, 0, -500)
    assert a.fee + c.fee == pytest.approx(0.75)  # the market's commission, in all
    assert not any(paper.ex.positions().values())  # flat
    halted = [m for m in paper.md_seen if type(m) is ExchangeStatus and m.instrument_id == iid]
    assert [(m.status, m.reason) for m in halted] == [
        (ExchangeStatusKind.HALTED, "suspended"),
        (ExchangeStatusKind.OPEN, "open"),
        (ExchangeStatusKind.HALTED, "settled: winner"),
    ]


def test_paper_commission_is_on_the_markets_net_winnings(paper: Paper) -> None:
    """By hand: back 10 on Arsenal at 2.00 (wins: +10.00) and back 5 on Chelsea at 3.00
    (loses: -5.00): the market's net +5.00, commission 5 % = 0.25 (not 5 % of the 10.00 won)."""
    arsenal, chelsea = SYMBOLS
    paper.submit(1, arsenal, Side.BUY, 200, 1000)
    paper.submit(2, chelsea, Side.BUY, 300, 500)
    paper.pump(lambda: len(paper.of(OrderFilled)) == 2)
    paper.srv.settle(MID, ARSENAL)
    paper.pump(lambda: len(paper.of(Settlement)) == 2)
    assert sum(s.fee for s in paper.of(Settlement)) == pytest.approx(0.25)


def test_paper_position_is_voided_with_its_market(paper: Paper) -> None:
    arsenal, _ = SYMBOLS
    paper.submit(1, arsenal, Side.BUY, 200, 700)
    paper.pump(lambda: paper.of(OrderFilled, 1) != [])
    assert paper.of(OrderAccepted, 1) != []
    paper.srv.void(MID)
    paper.pump(lambda: paper.of(Settlement) != [])
    (v,) = [s for s in paper.of(Settlement) if s.instrument_id == paper.ids[arsenal]]
    assert (v.kind, v.outcome, v.position, v.fee) == (SettlementKind.VOID, -1, 700, 0.0)


def test_a_venue_run_without_strategies_greens_up_by_default(tmp_path: Path) -> None:
    """`gekko run --venue betfair` with no [[strategies]] for its selections: GreenUp on the
    first (a momentum taker's BUY would back at the lay odds), twice the minimum stake."""
    with BetfairServer() as srv:
        cfg = venue_run_config("betfair", srv, venue_extra(srv, tmp_path))
    (s,) = cfg.strategies
    assert (s.path, s.instruments, s.params) == (
        "engine.strategies.green_up:GreenUp",
        [SYMBOLS[0]],
        {"stake": 1000, "cash_out_at": 0.0},
    )
