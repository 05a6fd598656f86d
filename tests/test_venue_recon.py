"""Reconciliation with a live venue and its state (engine.venue_recon, engine.venues.reconciled),
on the simulated exchange made to behave like a live one: it drops its connection (events made
while down never reach us: only REST shows them), has orders placed behind our back, and
reports balances."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from engine.exec_engine import ExecEngine
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookSnapshot,
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    TimeInForce,
    Trade,
)
from engine.routing import SmartRouter
from engine.venue_state import VenueState, external_orders_policy
from engine.venues.reconciled import ReconciledVenue
from engine.venues.reports import BalanceReport
from engine.venues.sim import SimExchange

IID = 1
LOT = 0.001
BUY, SELL = 1, -1


def table(*venues: str) -> InstrumentTable:
    return InstrumentTable(
        [
            Instrument(
                instrument_id=IID, symbol="BTC/USDT", venue=venues[0], tick_size=0.01, lot_size=LOT
            )
        ]
    )


@dataclass
class Snap:
    generation: int
    ts_ns: int
    open_orders: list
    fills: list
    balances: list


@dataclass
class FlakySim:
    """A SimExchange with a connection: while ``down``, what the venue does is withheld from us
    (kept in ``lost``); ``refresh`` is the client's REST view after a (re)connect. Balances:
    ``start_btc`` plus the venue's fills, minus buy fees when ``fee_in_base`` (Binance without
    BNB), plus whatever ``deposit`` moved behind our back."""

    sim: SimExchange
    start_btc: float = 2.0
    fee_in_base: bool = False
    deposit: float = 0.0
    connected: bool = True
    gen: int = 0
    snap: Snap | None = None
    lost: list = field(default_factory=list)
    refreshes_requested: int = 0

    @property
    def name(self) -> str:
        return self.sim.name

    def state(self) -> str:
        return "connected" if self.connected else "down"

    state_reason = "websocket closed (1006)"

    def _pass(self, evs: list) -> list:
        if self.connected:
            return evs
        self.lost += evs
        return []

    def submit(self, o, now):
        return self._pass(self.sim.submit(o, now))

    def cancel(self, c, now):
        return self._pass(self.sim.cancel(c, now))

    def replace(self, r, now):
        return self._pass(self.sim.replace(r, now))

    def on_market_data(self, m, now):
        return self._pass(self.sim.on_market_data(m, now))

    def poll(self, now):
        return self._pass(self.sim.poll(now))

    def __getattr__(self, a):
        return getattr(self.sim, a)

    def balance_btc(self) -> float:
        fills = self.sim.fills_since(0)
        btc = self.start_btc + self.deposit + sum(f.side * f.fill_qty * LOT for f in fills)
        if self.fee_in_base:
            btc -= sum(f.fee / (f.fill_px * 0.01) for f in fills if f.side == BUY)
        return btc

    def refresh(self, now: int = 0) -> None:
        self.gen += 1
        bal = [BalanceReport(venue=self.name, currency="BTC", total=self.balance_btc(), free=0.0)]
        self.snap = Snap(self.gen, now, self.sim.open_orders(), self.sim.fills_since(0), bal)

    def reconcile_snapshot(self):
        return self.snap

    def request_reconcile(self) -> None:
        self.refreshes_requested += 1
        self.refresh(1 << 60)  # a fresh view: after everything so far

    def drop(self) -> None:
        self.connected = False

    def reconnect(self, now: int) -> None:
        self.connected = True
        self.refresh(now)


def book(bid: int, ask: int, t: int) -> BookSnapshot:
    return BookSnapshot(IID, [bid], [1000], [ask], [1000], t, t)


def order(coid: int, side: int, qty: int, px: int = 0, strategy: int = 1) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=strategy,
        instrument_id=IID,
        side=side,
        order_type=int(OrderType.LIMIT if px else OrderType.MARKET),
        tif=int(TimeInForce.GTC if px else TimeInForce.IOC),
        px=px,
        qty=qty,
        ts_origin=1,
        ts_approved=1,
    )


def live(
    name: str = "A", policy: str = "halt", shared: bool = False, **kw
) -> tuple[FlakySim, ReconciledVenue]:
    """A live venue; ``shared``: its instrument is traded at other venues too (behind a router:
    its instrument names none of them)."""
    t = table("any" if shared else name)
    sim = SimExchange(t, name=name, maker_fee_bps=10, taker_fee_bps=10)
    sim.on_market_data(book(9990, 10010, 1), 1)
    flaky = FlakySim(sim, **kw)
    return flaky, ReconciledVenue(flaky, t, external_orders=policy)


def connect(flaky: FlakySim, target, now: int) -> list:
    """The client's REST view after a connect, then a pass of ``target`` (venue or engine)."""
    flaky.refresh(now)
    return target.poll(now)


def of(evs, cls):
    return [e for e in evs if type(e) is cls]


def test_no_order_before_the_first_reconciliation_then_orders_flow() -> None:
    flaky, v = live()
    flaky.connected = False
    assert v.poll(1) == []
    rej = v.submit(order(1, BUY, 5, 10000), 2)
    assert of(rej, OrderRejected) and "venue A down" in rej[0].reason
    flaky.connected = True
    v.poll(3)
    assert v.venue_status().state == VenueState.RESYNCING  # connected, not reconciled yet
    assert of(v.submit(order(2, BUY, 5, 10000), 4), OrderRejected)
    connect(flaky, v, 5)
    assert v.venue_status().state == VenueState.CONNECTED
    assert of(v.submit(order(3, BUY, 5, 10000), 6), OrderAccepted)


def test_a_fill_while_disconnected_is_applied_once_after_the_reconnect() -> None:
    flaky, v = live()
    eng = ExecEngine(v, table("A"))
    connect(flaky, eng, 1)
    evs = eng.on_order(order(10, BUY, 10, 10000), 2)
    assert of(evs, OrderAccepted)
    flaky.drop()
    assert eng.on_market_data(Trade(IID, 9995, 4, SELL, 3, 3, 1), 3) == []  # filled at the venue
    down = eng.poll(4)  # its instrument halted upstream (risk, strategies) while it is down
    assert [(type(e), e.status) for e in down] == [(ExchangeStatus, ExchangeStatusKind.HALTED)]
    assert "A down: websocket closed" in down[0].reason
    assert v.venue_status().state == VenueState.DOWN
    assert eng.on_order(order(11, BUY, 1, 10000), 5) == []  # exec holds it meanwhile
    assert [o.client_order_id for o in eng.held_orders()] == [11]
    refused = v.submit(order(13, BUY, 1, 10000), 5)  # and the venue's gate refuses
    assert of(refused, OrderRejected) and "venue A down" in refused[0].reason
    flaky.reconnect(6)
    evs = eng.poll(7)
    assert [(e.status, e.instrument_id) for e in of(evs, ExchangeStatus)] == [
        (ExchangeStatusKind.OPEN, IID)
    ]
    assert [e.client_order_id for e in of(evs, OrderAccepted)] == [11]  # sent once it is back
    missed = [e for e in evs if isinstance(e, OrderPartiallyFilled)]
    assert [(f.client_order_id, f.fill_qty, f.cum_qty, f.leaves_qty) for f in missed] == [
        (10, 10, 10, 0)
    ]
    assert v.venue_status().state == VenueState.CONNECTED
    assert eng.position(IID) == 10 and [o.client_order_id for o in eng.open_orders()] == [11]
    # the user stream delivers what it had missed after all: applied once, not twice
    assert [type(e) for e in flaky.lost] == [OrderFilled]
    assert v._through(list(flaky.lost)) == []
    assert v.duplicates_dropped == 1
    flaky.refresh(8)  # and another reconciliation finds nothing new
    assert eng.poll(9) == []
    # with the stream up, fills come the ordinary way
    eng.on_order(order(12, BUY, 5, 10000), 10)
    done = eng.on_market_data(Trade(IID, 9995, 6, SELL, 11, 11, 2), 11)
    assert sorted(f.fill_qty for f in of(done, OrderFilled)) == [1, 5]
    flaky.refresh(12)
    assert eng.poll(13) == []
    assert eng.position(IID) == 16 and eng.table.anomaly_count == 0
    assert v.venue_status().state == VenueState.CONNECTED


def test_an_order_that_ended_unheard_is_closed() -> None:
    flaky, v = live()
    eng = ExecEngine(v, table("A"))
    connect(flaky, eng, 1)
    eng.on_order(order(20, BUY, 5, 10000), 2)
    flaky.drop()
    flaky.sim.cancel(CancelOrder(20, 1, IID, 3, 3), 3)  # canceled at the venue (by hand)
    flaky.reconnect(4)
    evs = eng.poll(5)
    assert [(e.client_order_id, e.leaves_qty) for e in of(evs, OrderCanceled)] == [(20, 5)]
    assert eng.open_orders() == []


def external(flaky: FlakySim, coid: int = 777, now: int = 2) -> NewOrder:
    o = order(coid, SELL, 3, 10050, strategy=9)
    flaky.sim.submit(o, now)  # placed behind our back: we never see its events
    return o


def test_unknown_order_adopted_is_ours_its_fills_count_and_a_kill_cancels_it() -> None:
    flaky, v = live(policy="adopt")
    eng = ExecEngine(v, table("A"))
    external(flaky)
    evs = connect(flaky, eng, 3)
    assert [e.client_order_id for e in of(evs, OrderAccepted)] == [777]
    assert 777 in eng.table and eng.table.get(777).is_open
    assert v.venue_status().state == VenueState.CONNECTED
    fills = eng.on_market_data(Trade(IID, 10060, 3, BUY, 6, 6, 1), 6)
    assert [f.fill_qty for f in of(fills, OrderFilled)] == [3]
    assert eng.position(IID) == -3
    # another unknown order, adopted, then the kill switch (exec's cancel_all) cancels it there
    external(flaky, 778)
    flaky.refresh(7)
    eng.poll(8)
    assert eng.table.get(778).is_open
    out = eng.cancel_all(9)
    assert [e.client_order_id for e in of(out, OrderCanceled)] == [778]
    assert flaky.sim.open_orders() == []


def test_unknown_order_canceled_at_the_venue_and_nothing_published() -> None:
    flaky, v = live(policy="cancel")
    external(flaky)
    evs = connect(flaky, v, 3)
    assert evs == []
    assert flaky.sim.open_orders() == []
    assert v.venue_status().state == VenueState.CONNECTED


def test_unknown_order_halts_that_venue_only() -> None:
    fa, a = live("A", policy="halt", shared=True)
    fb, b = live("B", shared=True)
    router = SmartRouter({"A": a, "B": b})
    external(fa)
    connect(fa, a, 3)
    connect(fb, b, 3)
    s = a.venue_status()
    assert s.state == VenueState.HALTED and "777" in s.reason and "external_orders" in s.reason
    assert fa.sim.open_orders()  # left alone: halting is not canceling
    evs = router.submit(order(30, BUY, 2), 4)  # a market buy: only B can take it
    assert sum(f.fill_qty for f in of(evs, OrderFilled)) == 2
    assert router.legs_sent == {"A": 0, "B": 1}
    # a halt lasts until the operator resumes (reconnects do not lift it)
    fa.drop()
    a.poll(5)
    fa.reconnect(6)
    a.poll(7)
    assert a.venue_status().state == VenueState.HALTED
    a.resume(8)
    a.poll(9)
    assert a.venue_status().state == VenueState.HALTED  # the order is still there: halted again


def test_every_venue_down_refuses_the_order_saying_why() -> None:
    fa, a = live("A", shared=True)
    fb, b = live("B", shared=True)
    router = SmartRouter({"A": a, "B": b})
    connect(fa, a, 1)
    fb.drop()
    b.poll(1)
    evs = router.submit(order(40, BUY, 1), 2)
    assert router.legs_sent == {"A": 1, "B": 0} and of(evs, OrderFilled)
    fa.drop()
    a.poll(3)
    rej = router.submit(order(41, BUY, 1), 4)
    assert of(rej, OrderRejected)
    assert "A down" in rej[0].reason and "B down" in rej[0].reason


def test_balances_explained_by_fees_in_the_received_asset_do_not_halt() -> None:
    flaky, v = live(fee_in_base=True)
    eng = ExecEngine(v, table("A"))
    connect(flaky, eng, 1)
    eng.on_order(order(50, BUY, 500), 2)  # a market buy: 0.5 BTC, its fee paid in BTC
    flaky.refresh(3)
    eng.poll(4)
    assert v.venue_status().state == VenueState.CONNECTED, v.venue_status()
    eng.on_order(order(51, SELL, 499), 5)  # sell what arrived (less than bought)
    flaky.refresh(6)
    eng.poll(7)
    assert v.venue_status().state == VenueState.CONNECTED, v.venue_status()


def test_an_unexplained_balance_halts_the_venue_printing_the_difference() -> None:
    fa, a = live("A", shared=True)
    fb, b = live("B", shared=True)
    router = SmartRouter({"A": a, "B": b})
    eng = ExecEngine(router, table("any"))
    fa.refresh(1)
    connect(fb, eng, 1)
    eng.on_order(order(60, BUY, 100), 2)
    fa.deposit = 0.25  # coins moved in behind our back
    fa.refresh(3)
    eng.poll(4)
    # checked twice (a fill may land between the two REST calls; no orders meanwhile), then
    # halted
    assert fa.refreshes_requested == 1
    assert a.venue_status().state == VenueState.RESYNCING
    eng.poll(5)
    s = a.venue_status()
    assert s.state == VenueState.HALTED
    assert "BTC" in s.reason and "+0.25 unexplained" in s.reason
    assert b.venue_status().state == VenueState.CONNECTED
    sent_a = router.legs_sent["A"]
    evs = eng.on_order(order(61, BUY, 1), 6)
    assert of(evs, OrderFilled) and router.legs_sent["A"] == sent_a
    # the operator has looked: resume takes the venue's balances as the new baseline
    a.resume(7)
    eng.poll(8)
    assert a.venue_status().state == VenueState.CONNECTED


def test_external_orders_setting_is_checked() -> None:
    assert external_orders_policy({}) == "halt"
    assert external_orders_policy({"external_orders": "Adopt"}) == "adopt"
    with pytest.raises(ValueError, match="external_orders"):
        external_orders_policy({"external_orders": "ignore"})


def test_start_up_reconciliation_leaves_a_spot_venues_positions_to_its_balance_check() -> None:
    from engine.reconcile import reconcile

    o = order(70, BUY, 5, 10000)
    # the journal has a fill this venue never reported: positions disagree
    fill = OrderFilled(70, 1, IID, BUY, 10000, 5, 5, 0, 0.0, 1, 99, 1, 2, 2)
    flaky, v = live()
    plain = SimExchange(table("A"), name="A")
    kinds = [e.kind for e in reconcile([o], [fill], plain, 3).events]
    assert 6 in kinds  # POSITION_MISMATCH: exec would not trade (procs.recovery)
    kinds = [e.kind for e in reconcile([o], [fill], v, 3).events]
    assert 6 not in kinds  # the venue's balance check decides, halting that venue only


def test_the_baseline_outlives_a_restart_so_coins_moved_meanwhile_halt_the_venue() -> None:
    flaky, v = live()
    kept: list[dict] = []
    v.on_baseline = kept.append
    eng = ExecEngine(v, table("A"))
    connect(flaky, eng, 1)
    assert kept == [{"BTC": 2.0}]
    eng.on_order(order(80, BUY, 100), 2)  # 0.1 BTC bought
    connect(flaky, eng, 3)
    fills = [f for f in flaky.sim.fills_since(0)]
    # exec restarts: a new client view over the same venue, the baseline and the journal's fills
    for moved, expect in ((0.0, VenueState.CONNECTED), (0.3, VenueState.HALTED)):
        flaky.deposit = moved
        again = ReconciledVenue(flaky, table("A"))
        again.restore_baseline(kept[0])
        again.seed([], fills)
        connect(flaky, again, 4)
        again.poll(5)  # the second look a difference gets
        assert again.venue_status().state == expect, again.venue_status()
    assert "+0.3 unexplained" in again.venue_status().reason


def test_an_order_adopted_behind_a_router_is_canceled_where_it_rests() -> None:
    fa, a = live("A", policy="adopt", shared=True)
    fb, b = live("B", shared=True)
    router = SmartRouter({"A": a, "B": b})
    eng = ExecEngine(router, table("any"))
    external(fa)
    fb.refresh(3)
    evs = connect(fa, eng, 3)
    assert [e.client_order_id for e in of(evs, OrderAccepted)] == [777]
    assert [o.client_order_id for o in router.open_orders()] == [777]
    fills = eng.on_market_data(Trade(IID, 10060, 3, BUY, 6, 6, 1), 6)  # A's book trades through
    assert [(f.client_order_id, f.fill_qty) for f in of(fills, OrderFilled)] == [(777, 3)]
    assert eng.position(IID) == -3 and eng.table.anomaly_count == 0
    external(fa, 778, now=7)
    fa.refresh(7)
    eng.poll(8)
    out = eng.cancel_all(9)
    assert [e.client_order_id for e in of(out, OrderCanceled)] == [778]
    assert fa.sim.open_orders() == [] and router.open_orders() == []


def test_a_ban_that_ends_without_a_reconnect_is_reconciled_before_orders_go_again() -> None:
    flaky, v = live()
    connect(flaky, v, 1)
    flaky.state = lambda: "banned"  # 418: the client refuses order entry; nothing reconnects
    v.poll(2)
    assert v.venue_status().state == VenueState.BANNED
    assert of(v.submit(order(90, BUY, 1, 10000), 3), OrderRejected)
    del flaky.state  # the ban is over
    v.poll(4)  # back, but with the view from before the ban: a fresh one is asked for
    assert flaky.refreshes_requested == 1
    v.poll(5)
    assert v.venue_status().state == VenueState.CONNECTED
    assert of(v.submit(order(91, BUY, 1, 10000), 6), OrderAccepted)


def test_an_instrument_is_routed_only_to_the_venues_that_trade_it() -> None:
    two = InstrumentTable(
        [
            Instrument(instrument_id=1, symbol="BTC/USDT", venue="A", tick_size=0.01, lot_size=LOT),
            Instrument(instrument_id=2, symbol="BTC/USD", venue="B", tick_size=0.01, lot_size=LOT),
        ]
    )
    flakies, venues = {}, {}
    for name in ("A", "B"):
        sim = SimExchange(two, name=name)
        for iid in (1, 2):
            sim.on_market_data(BookSnapshot(iid, [9990], [1000], [10010], [1000], 1, 1), 1)
        flakies[name] = FlakySim(sim)
        venues[name] = ReconciledVenue(flakies[name], two)
        flakies[name].refresh(1)
        venues[name].poll(1)
    router = SmartRouter(venues)
    buy_usd = msgspec.structs.replace(order(100, BUY, 2), instrument_id=2)
    assert of(router.submit(buy_usd, 2), OrderFilled)
    assert router.legs_sent == {"A": 0, "B": 1}  # A, listed first, does not quote BTC/USD
    flakies["B"].drop()
    venues["B"].poll(3)
    rej = router.submit(msgspec.structs.replace(order(101, BUY, 2), instrument_id=2), 4)
    assert of(rej, OrderRejected) and "B down" in rej[0].reason  # not sent to A instead


def test_a_balance_difference_the_next_view_does_not_confirm_is_no_halt() -> None:
    flaky, v = live()
    connect(flaky, v, 1)
    flaky.deposit = 0.05  # e.g. a fill that landed between the REST calls of one view
    connect(flaky, v, 2)
    assert v.venue_status().state == VenueState.RESYNCING  # no orders until it is rechecked
    assert "checking again" in v.venue_status().reason
    flaky.deposit = 0.0
    flaky.refresh(3)
    v.poll(3)
    assert v.venue_status().state == VenueState.CONNECTED
