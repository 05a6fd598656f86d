"""Betfair: the live client behind ``ReconciledVenue`` (its ``reconcile_snapshot``), and a
selection settled with some bets voided and the others settled — from listClearedOrders to the
portfolio, risk and the positions every holder keeps, P&L by hand.

By hand (the partly voided selection): back 10.00 on Arsenal at 2.00 (bet A) and back 5.00 at
2.00 (bet B); Betfair voids B (matched after a disallowed goal) and settles Arsenal the winner:
A wins +10.00, B is undone (stake back, no profit); commission 5 % of the net +10.00 = 0.50;
the account 1000 -> 1009.50.
"""

from __future__ import annotations

import time
from decimal import Decimal

import msgspec
import pytest

from engine.account_events import position_after
from engine.accounts import Account
from engine.enums import SettlementKind, Side
from engine.instruments import Instrument, InstrumentTable
from engine.messages import NewOrder, OrderAccepted, OrderFilled, OrderRejected, Settlement
from engine.portfolio import Portfolio
from engine.risk import RiskGate
from engine.risk_limits import RiskLimits
from engine.venues.betfair_cleared import settlements
from engine.venues.reconciled import ReconciledVenue
from tests.test_betfair_exec import ARSENAL, CHELSEA, MID, MID2, UNDER, USERNAME, Live, live, srv  # noqa: F401

pytestmark = pytest.mark.timeout(120)

HOME = Instrument(
    instrument_id=1,
    symbol=f"{MID}/{ARSENAL}",
    venue="betfair",
    kind="betting",
    market_id=MID,
    tick_size=0.01,
    lot_size=0.01,
    currency="GBP",
)
AWAY = Instrument(
    instrument_id=2,
    symbol=f"{MID}/{CHELSEA}",
    venue="betfair",
    kind="betting",
    market_id=MID,
    tick_size=0.01,
    lot_size=0.01,
    currency="GBP",
)
BY_SEL = {(MID, ARSENAL): HOME, (MID, CHELSEA): AWAY}


def _row(bet: int, sel: int, side: str, size: str, status: str, outcome: str = "") -> dict:
    r = {
        "betId": str(bet),
        "marketId": MID,
        "selectionId": sel,
        "side": side,
        "sizeSettled": size,
        "priceMatched": 2.0 if sel == ARSENAL else 3.05,
        "_status": status,
    }
    return r | ({"betOutcome": outcome} if outcome else {})


def _cleared() -> list[Settlement]:
    rows = [
        _row(11, ARSENAL, "BACK", "10.0", "SETTLED", "WON"),
        _row(12, ARSENAL, "BACK", "5.0", "VOIDED"),
        _row(13, CHELSEA, "LAY", "4.0", "VOIDED"),  # every bet of Chelsea voided
    ]
    return settlements(MID, rows, BY_SEL, 0.5, 7)


def test_a_partly_voided_selection_settles_its_voided_bets_apart() -> None:
    v, a, c = _cleared()
    # the voided bet first, alone: its stake at its odds, partial
    assert (v.instrument_id, v.kind, v.px, v.position, v.settlement_id, v.partial) == (
        1,
        SettlementKind.VOID,
        200,
        500,
        12,
        True,
    )
    assert (a.kind, a.outcome, a.position, a.px, a.partial, a.fee) == (
        SettlementKind.RESOLVED,
        1,
        1000,
        0,
        False,
        0.0,
    )
    # a selection whose bets were all voided: one VOID of the whole selection, the commission
    # on the market's last Settlement
    assert (c.instrument_id, c.kind, c.px, c.position, c.partial, c.fee) == (
        2,
        SettlementKind.VOID,
        0,
        -400,
        False,
        0.5,
    )
    # every holder of positions: the voided bet's stake off, then flat
    assert position_after(1500, v) == 1000 and position_after(1000, a) == 0
    assert position_after(-400, c) == 0


def _fill(iid: int, side: int, px: int, qty: int, coid: int) -> OrderFilled:
    return OrderFilled(coid, 1, iid, side, px, qty, qty, 0, 0.0, 1, coid, 0, 0, 0)


def test_portfolio_and_risk_undo_the_voided_bet_and_settle_the_rest() -> None:
    v, a = _cleared()[:2]
    a = Settlement(
        a.instrument_id, a.kind, a.px, a.outcome, a.position, 8, 8, settlement_id=11, fee=0.5
    )
    fills = [
        _fill(1, Side.BUY, 200, 1000, (1 << 32) | 1),
        _fill(1, Side.BUY, 200, 500, (1 << 32) | 2),
    ]
    p = Portfolio(
        [HOME, AWAY],
        initial_cash={"GBP": 1000.0},
        accounts={"betfair": Account(kind="betting", commission=0.05)},
    )
    g = RiskGate(RiskLimits.off(capital=1000.0), [HOME, AWAY])
    for f in fills:
        p.on_event(f)
        g.on_exec_event(f)
    assert p.position(1) == 1500
    for ev in (v, a):
        p.on_event(ev)
        g.on_account_event(ev, 9)
        if ev is v:
            assert p.position(1) == 1000 and int(g.position[1]) == 1000
    assert p.position(1) == 0 and int(g.position[1]) == 0
    assert p.realized() == pytest.approx(10.0)  # only A's win: B was undone
    assert p.cash_by_currency["GBP"] == pytest.approx(1009.5)
    assert p.net_pnl() == pytest.approx(9.5)
    assert sum(s["net"] for s in p.strategy_pnl().values()) == pytest.approx(9.5)
    assert g.cash == pytest.approx(9.5)  # risk's cash: what the account moved since the start


def test_the_local_betfair_voids_one_bet_and_settles_the_other(live: Live) -> None:  # noqa: F811
    a = live.order((MID, ARSENAL), Side.BUY, "2.0", "10")
    b = live.order((MID, ARSENAL), Side.BUY, "2.0", "5")
    for o in (a, b):
        live.submit(o)
    live.wait(lambda: len(live.of(OrderFilled)) == 2, why="both bets matched")
    bet_b = live.ex.inner.book.orders[b.client_order_id].bet_id
    live.srv.settle(MID, ARSENAL, void_bets=[bet_b])
    live.wait(lambda: len(live.of(Settlement)) == 2, why="two settlements")
    v, s = live.of(Settlement)
    assert (v.kind, v.partial, v.px, v.position, v.settlement_id) == (
        SettlementKind.VOID,
        True,
        200,
        500,
        int(bet_b),
    )
    assert (s.kind, s.outcome, s.position, s.fee, s.partial) == (
        SettlementKind.RESOLVED,
        1,
        1000,
        0.5,
        False,
    )
    assert live.ex.positions() == {}
    assert live.srv.ex.balance[USERNAME] == Decimal("1009.50")


def test_the_live_client_is_reconciled_like_the_others(live: Live) -> None:  # noqa: F811
    """Wrapped as exec wraps it (procs.build: ``wrap_live``): orders go out once a view newer
    than the last drop was compared; a drop refuses new orders until the client's fresh view
    after the reconnect; a restarted client never reuses a fill id."""
    from engine.venues.reconciled import wrap_live
    from engine.venues.registry import VenueConfig

    vc = VenueConfig("betfair", "betfair", InstrumentTable(list(live.ex.inner._insts.values())), {})
    rv = wrap_live(live.ex, vc)
    assert isinstance(rv, ReconciledVenue) and not rv.checks_balances

    def step() -> list:  # as exec: market data into the venue, its events out of it
        now = time.time_ns()
        for m in live.md.poll_updates():
            rv.on_market_data(m, now)
        got = rv.poll(now)
        live.events += got
        return got

    def until(what, why: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            step()
            if what():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out: {why} ({rv.venue_status()})")

    until(lambda: rv.venue_status().state.word == "connected", "reconciled at start")
    first = live.ex.reconcile_snapshot().generation
    o = live.order((MID, CHELSEA), Side.BUY, "6.0", "3")  # rests
    got = rv.submit(o, time.time_ns())
    assert got == []
    until(lambda: step() is not None and live.of(OrderAccepted, o.client_order_id), "accepted")
    until(lambda: live.ex.reconcile_snapshot().generation > first, "a view with the bet")
    view = live.ex.reconcile_snapshot()
    assert [(x.client_order_id, x.px, x.qty) for x in view.open_orders] == [
        (o.client_order_id, 600, 300)
    ]
    assert view.balances == []  # a bet is no asset: no balance check
    live.srv.faults.arm("disconnect")
    until(lambda: rv.venue_status().state.word != "connected", "the drop seen")
    (r,) = rv.submit(live.order((MID, ARSENAL), Side.BUY, "2.0", "2"), time.time_ns())
    assert type(r) is OrderRejected and "betfair" in r.reason
    until(lambda: rv.venue_status().state.word == "connected", "reconciled after the drop")
    assert rv.reconciliations >= 2 and rv.venue_status().reason == ""
    # the resting bet is still ours and open: nothing ended or adopted by reconciliation
    assert [x.client_order_id for x in live.ex.open_orders()] == [o.client_order_id]
    f = live.order((MID, ARSENAL), Side.BUY, "2.0", "2")
    assert rv.submit(f, time.time_ns()) == []
    until(lambda: live.of(OrderFilled, f.client_order_id) != [], "filled through reconciliation")


def test_a_restarted_client_never_reuses_a_fill_id(live: Live) -> None:  # noqa: F811
    """Betfair gives fills no ids and reconciliation drops an id it has seen (the record is
    seeded with the run's fills after a restart), so a restarted client's ids come after."""
    o = live.order((MID2, UNDER), Side.BUY, "2.0", "2")
    live.submit(o)
    live.wait(lambda: live.of(OrderFilled, o.client_order_id) != [], why="matched")
    before = max(f.fill_id for f in live.of(OrderFilled))
    live.srv.settle(MID2, UNDER)  # cleared: the restart finds no bet of ours to know again
    live.wait(lambda: live.of(Settlement) != [], why="settled")
    live.ex.close()
    again = Live(live.srv, symbols=[f"{MID}/{ARSENAL}", f"{MID}/{CHELSEA}"])  # MID2 closed
    try:
        again.wait(lambda: again.ex.state() == "connected", why="restarted")
        n = again.order((MID, ARSENAL), Side.BUY, "2.0", "3")
        n = NewOrder(n.client_order_id + 50, *list(msgspec.structs.astuple(n))[1:])
        again.submit(n)
        again.wait(lambda: again.of(OrderFilled, n.client_order_id) != [], why="matched again")
        (f,) = again.of(OrderFilled, n.client_order_id)
        assert f.fill_id > before
    finally:
        again.close()
