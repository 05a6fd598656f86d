"""Amending a working algo parent (``AlgoEngine.amend``: a ReplaceOrder addressed to the parent,
``new_qty`` = its new OPEN quantity, as for a plain order: the new total is filled + new_qty)
through the real ExecEngine and SimExchange.

Each algorithm (TWAP, VWAP, iceberg, POV) is run on a small deterministic market: a book with
the bid at 99 (50 lots) and a deep ask at 101, plus a 10-lot sell print at 100 every 100 ms.
Marketable children take at 101; an iceberg child resting at 100 is filled by the prints.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.algos.vwap import VwapProfile
from engine.exec_engine import ExecEngine
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    BookSnapshot,
    CancelOrder,
    NewOrder,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    ReplaceOrder,
    ReplaceRejectReason,
    TimeInForce,
    Trade,
)
from engine.venues.sim import SimExchange

IID = 1
TABLE = InstrumentTable([Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1)])
MS = 1_000_000
S = 1_000 * MS
PARENT = 7 << 32 | 1
PLAIN = 7 << 32 | 2
STEP = 100 * MS

#: algorithm -> (parent limit, parameters); all BUY 100 lots
ALGOS: dict[str, tuple[int, int, dict[str, float]]] = {
    "twap": (AlgoKind.TWAP, 102, {"duration_s": 10.0, "slices": 10.0}),
    "vwap": (AlgoKind.VWAP, 102, {"duration_s": 10.0, "slices": 10.0, "profile": 2.0}),
    "iceberg": (AlgoKind.ICEBERG, 100, {"display_qty": 10.0}),
    "pov": (AlgoKind.POV, 102, {"rate": 0.5}),
}
#: the same, with children that rest (passive TWAP/VWAP at the touch; iceberg at its limit)
RESTING = {
    "twap": (AlgoKind.TWAP, 102, {"duration_s": 10.0, "slices": 10.0, "passive": 1.0}),
    "vwap": (
        AlgoKind.VWAP,
        102,
        {"duration_s": 10.0, "slices": 10.0, "passive": 1.0, "profile": 1.0},
    ),
    "iceberg": ALGOS["iceberg"],
}


def parent_order(algo: int, px: int, params: dict[str, float], qty: int = 100) -> NewOrder:
    return NewOrder(
        client_order_id=PARENT,
        strategy_id=7,
        instrument_id=IID,
        side=1,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
        px=px,
        qty=qty,
        ts_origin=1,
        ts_approved=1,
        algo=int(algo),
        algo_params=params,
    )


def amend(qty: int, px: int, now: int, coid: int = PARENT) -> ReplaceOrder:
    return ReplaceOrder(coid, 7, IID, px, qty, now, now)


class Desk:
    """Exec (ExecEngine + SimExchange, no latency) on the deterministic market."""

    def __init__(self, latency_ns: int = 0) -> None:
        self.venue = SimExchange(TABLE, latency_ns=latency_ns)
        self.exec = ExecEngine(self.venue, TABLE)
        self.out: list[object] = []
        self.now = 0
        self.print_qty = 10
        self.market(0)

    def market(self, t: int) -> None:
        book = BookSnapshot(IID, [99], [50], [101], [100_000], t, t, t // MS + 1)
        self.out += self.exec.on_market_data(book, t)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            t = self.now + STEP
            self.out += self.exec.poll(t)
            self.market(t)
            if self.print_qty:
                tr = Trade(IID, 100, self.print_qty, -1, t, t)
                self.out += self.exec.on_market_data(tr, t)
            self.now = t

    def send(self, order: object) -> list[object]:
        res = self.exec.on_order(order, self.now)  # type: ignore[arg-type]
        self.out += res
        return res

    def start(self, algo: int, px: int, params: dict[str, float], qty: int = 100) -> None:
        self.step()
        self.send(parent_order(algo, px, params, qty))

    # views ------------------------------------------------------------------------------------
    @property
    def parent(self):
        return self.exec.algo.parent(PARENT)

    def events(self, coid: int = PARENT) -> list[object]:
        return [e for e in self.out if getattr(e, "client_order_id", None) == coid]

    def fills(self) -> list[OrderPartiallyFilled]:
        return [e for e in self.events() if isinstance(e, OrderPartiallyFilled)]

    def filled(self) -> int:
        return sum(f.fill_qty for f in self.fills())

    def children(self) -> list:
        return [r for r in self.exec.table.orders.values() if r.client_order_id != PARENT]

    def open_children(self) -> list[NewOrder]:
        return self.venue.open_orders()

    def run_until_filled(self, lots: int, limit: int = 400) -> None:
        for _ in range(limit):
            if self.filled() >= lots:
                return
            self.step()
        raise AssertionError(f"only {self.filled()} of {lots} lots filled")

    def run_to_end(self, limit: int = 400) -> None:
        for _ in range(limit):
            if self.ends():
                return
            self.step()
        raise AssertionError("the parent never ended")

    def ends(self) -> list[object]:
        return [e for e in self.events() if isinstance(e, OrderFilled | OrderCanceled)]


def check_parent_whole(d: Desk, qty: int) -> None:
    """The parent filled exactly ``qty`` once; its children's fills sum to it; nothing rests;
    every parent fill has cum + leaves = the parent's quantity at that moment (<= qty)."""
    (end,) = d.ends()
    assert isinstance(end, OrderFilled) and end.cum_qty == qty and end.leaves_qty == 0
    assert d.filled() == qty == sum(r.cum_qty for r in d.children())
    assert all(f.cum_qty <= qty for f in d.fills())
    assert [f.cum_qty for f in d.fills()] == sorted(f.cum_qty for f in d.fills())
    assert d.open_children() == []
    assert d.exec.algo.anomalies == {}


def last_replaced(d: Desk) -> OrderReplaced:
    return [e for e in d.events() if isinstance(e, OrderReplaced)][-1]


# --- quantity up / down / below filled, per algorithm -------------------------------------------


@pytest.mark.parametrize("name", list(ALGOS))
def test_amend_qty_up_fills_the_new_quantity(name: str) -> None:
    algo, px, params = ALGOS[name]
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(30)
    filled = d.filled()
    d.send(amend(160 - filled, px, d.now))  # to a total of 160
    rep = last_replaced(d)
    assert (rep.px, rep.qty) == (px, 160 - filled)  # qty = the new open quantity, as for plain
    prog = [e for e in d.events() if isinstance(e, AlgoProgress)][-1]
    assert prog.filled_qty + prog.remaining_qty == 160
    d.run_to_end()
    check_parent_whole(d, 160)
    if name == "iceberg":  # never showed more than its display size
        assert max(r.qty for r in d.children()) <= 10


@pytest.mark.parametrize("name", list(ALGOS))
def test_amend_qty_down_stops_at_the_new_quantity(name: str) -> None:
    algo, px, params = ALGOS[name]
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(30)
    target = d.filled() + 7
    d.send(amend(7, px, d.now))  # 7 more lots: a total of filled + 7
    assert last_replaced(d).qty == 7
    p = d.parent
    assert p.filled + p.open_qty <= target  # the open children fit the new quantity at once
    d.run_to_end()
    check_parent_whole(d, target)


@pytest.mark.parametrize("name", list(ALGOS))
def test_amend_to_or_below_the_filled_quantity_is_rejected(name: str) -> None:
    algo, px, params = ALGOS[name]
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(30)
    filled = d.filled()
    (big,) = d.send(amend(1 << 70, px, d.now))
    assert isinstance(big, OrderReplaceRejected) and big.reason == ReplaceRejectReason.INVALID
    assert big.detail.startswith("new qty") and "out of range" in big.detail
    # the range check is on the total: an open quantity in range whose total (with the filled
    # lots) is not, is refused too
    (edge,) = d.send(amend((1 << 62) - filled, px, d.now))
    assert isinstance(edge, OrderReplaceRejected) and edge.reason == ReplaceRejectReason.INVALID
    assert edge.detail.startswith("new qty") and "out of range" in edge.detail
    # totals of filled - 5, filled, 0 and -3 lots: new open quantities <= 0
    for total in (filled - 5, filled, 0, -3):
        qty = total - filled
        (rej,) = [e for e in d.send(amend(qty, px, d.now)) if isinstance(e, OrderReplaceRejected)]
        assert rej.client_order_id == PARENT and rej.reason == ReplaceRejectReason.INVALID
        assert rej.detail == f"new qty must be > 0, got {qty} (cancel the parent to stop it)"
    assert not [e for e in d.events() if isinstance(e, OrderReplaced)]
    assert d.parent.qty == 100 and d.parent.is_working  # unchanged, goes on
    d.run_to_end()
    check_parent_whole(d, 100)


@pytest.mark.parametrize("name", list(ALGOS))
def test_amend_after_the_parent_is_done_or_canceled_is_rejected(name: str) -> None:
    algo, px, params = ALGOS[name]
    d = Desk()
    d.start(algo, px, params)
    d.run_to_end()
    check_parent_whole(d, 100)
    (rej,) = d.send(amend(100, px, d.now))  # 100 more: a total of 200
    assert isinstance(rej, OrderReplaceRejected) and rej.reason == ReplaceRejectReason.NOT_OPEN
    assert rej.detail == "parent order is no longer working"
    # a canceled one too
    d2 = Desk()
    d2.start(algo, px, params)
    d2.run_until_filled(10)
    d2.send(CancelOrder(PARENT, 7, IID, d2.now, d2.now))
    d2.step()
    assert isinstance(d2.ends()[0], OrderCanceled)
    (rej,) = d2.send(amend(200 - d2.filled(), px, d2.now))  # a total of 200
    assert isinstance(rej, OrderReplaceRejected) and rej.reason == ReplaceRejectReason.NOT_OPEN
    assert rej.detail == "parent order is no longer working"
    # and an id no parent has is a plain replace of nothing: ignored, counted
    before = d2.exec.ignored_requests
    assert d2.send(amend(5, px, d2.now, coid=12345)) == []
    assert d2.exec.ignored_requests == before + 1


# --- price -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RESTING))
def test_a_new_limit_reprices_the_resting_children(name: str) -> None:
    algo, px, params = RESTING[name]
    d = Desk()
    d.print_qty = 0  # nothing fills: the children rest
    d.start(algo, px, params)
    d.step(3)
    before = d.open_children()
    assert before, "a resting child"
    # buy: a lower limit below the resting price; the child moves to it, same id, same qty
    assert d.filled() == 0
    d.send(amend(100, 98, d.now))  # total (= open) quantity unchanged
    after = d.open_children()
    assert [o.client_order_id for o in after] == [o.client_order_id for o in before]
    assert [o.qty for o in after] == [o.qty for o in before]
    assert all(o.px == 98 for o in after)
    assert last_replaced(d).px == 98 and d.parent.order.px == 98
    # later children respect the new limit too
    d.step(25)
    assert all(r.px <= 98 for r in d.children())
    d.print_qty = 10
    # back to the first limit: the prints fill the iceberg at 100; a passive parent takes what
    # is left at the end of its window (ask 101)
    d.send(amend(100 - d.filled(), px, d.now))  # the total stays 100
    d.run_to_end()
    check_parent_whole(d, 100)
    assert max(r.px for r in d.children()) <= px


@pytest.mark.parametrize("name", ["twap", "vwap"])
def test_a_higher_limit_moves_a_capped_passive_child_to_the_touch_not_across(name: str) -> None:
    algo, _, params = RESTING[name]
    d = Desk()
    d.print_qty = 0
    d.start(algo, 98, params)  # the bid (99) is above the limit: the child rests capped at 98
    d.step(2)
    (capped,) = d.open_children()
    assert capped.px == 98
    d.send(amend(100 - d.filled(), 103, d.now))  # a limit above the ask (101) ...
    (moved,) = d.open_children()
    # ... moves it to the touch (99), where a new passive child would rest: it does not take
    assert (moved.client_order_id, moved.px) == (capped.client_order_id, 99)
    assert d.filled() == 0


def test_iceberg_follows_a_higher_limit_and_a_cut_shrinks_its_displayed_child() -> None:
    algo, px, params = ALGOS["iceberg"]
    d = Desk()
    d.print_qty = 4  # each print fills 4 lots of the displayed 10
    d.start(algo, px, params)
    d.step(1)
    (shown,) = d.open_children()
    assert (shown.px, shown.qty) == (100, 6)
    filled = d.filled()
    assert filled == 4
    d.send(amend(100 - filled, 100, d.now))  # same total and limit: nothing changes ...
    assert d.open_children() == [shown]  # ... no replace, nothing canceled
    d.send(amend(2, 100, d.now))  # cut to filled + 2: the displayed child shrinks to 2, same id
    (small,) = d.open_children()
    assert (small.client_order_id, small.qty) == (shown.client_order_id, 2)
    d.run_to_end()
    check_parent_whole(d, filled + 2)


def test_pov_children_after_a_price_change_use_the_new_limit() -> None:
    algo, px, params = ALGOS["pov"]
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(20)
    n = len(d.children())
    d.send(amend(100 - d.filled(), 101, d.now))  # same total, a lower limit
    d.run_to_end()
    check_parent_whole(d, 100)
    assert {r.px for r in d.children()[n:]} == {101}


def test_twap_schedule_after_an_amend_spreads_what_is_left_over_the_remaining_slices() -> None:
    algo, px, params = ALGOS["twap"]
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(30)  # slices 0-2 sent, 10 lots each
    assert [r.qty for r in d.children()] == [10, 10, 10] and d.filled() == 30
    d.send(amend(140, px, d.now))  # a total of 170: 140 left over the 7 slices to come, 20 each
    d.run_to_end()
    assert [r.qty for r in d.children()] == [10, 10, 10] + [20] * 7
    check_parent_whole(d, 170)
    d2 = Desk()
    d2.start(algo, px, params)
    d2.run_until_filled(30)
    assert d2.filled() == 30
    d2.send(amend(14, px, d2.now))  # a total of 44: 14 left over 7 slices, 2 each
    d2.run_to_end()
    assert [r.qty for r in d2.children()] == [10, 10, 10] + [2] * 7
    check_parent_whole(d2, 44)


def test_a_plain_order_replace_still_goes_to_the_venue_unchanged() -> None:
    d = Desk()
    d.step()
    plain = msgspec.structs.replace(
        parent_order(0, 98, {}, qty=30), client_order_id=PLAIN, algo=0, algo_params={}
    )
    d.send(plain)
    d.send(algo_parent := parent_order(AlgoKind.ICEBERG, 100, {"display_qty": 10.0}))
    assert algo_parent.client_order_id != PLAIN
    res = d.send(ReplaceOrder(PLAIN, 7, IID, 97, 12, d.now, d.now))
    (rep,) = [e for e in res if isinstance(e, OrderReplaced)]
    assert (rep.client_order_id, rep.px, rep.qty) == (PLAIN, 97, 12)  # leaves semantics
    (o,) = [o for o in d.open_children() if o.client_order_id == PLAIN]
    assert (o.px, o.qty) == (97, 12)
    assert d.parent.qty == 100 and not [e for e in d.events() if isinstance(e, OrderReplaced)]


def test_an_amend_is_written_to_the_algo_log_before_it_takes_effect() -> None:
    algo, px, params = ALGOS["twap"]
    d = Desk()
    seen: list[tuple] = []

    def hook(pid: int, order: NewOrder, ts: int, **extra: object) -> None:
        # at the time of writing, the parent still has its old quantity
        seen.append((pid, order.qty, order.px, d.parent.qty, extra.get("amend")))

    d.exec.algo.on_record = hook
    d.start(algo, px, params)
    d.run_until_filled(30)
    assert d.filled() == 30
    d.send(amend(120, 101, d.now))  # 120 open: the log holds the resulting total, 150
    (entry,) = [s for s in seen if s[4] is not None]
    assert entry[:4] == (PARENT, 150, 101, 100)
    assert (entry[4].qty, entry[4].px, entry[4].rebase_slice, entry[4].rebase_base) == (
        150,
        101,
        3,
        30,
    )


# --- the property: amends interleaved with fills -----------------------------------------------

_ACTION = st.one_of(
    st.tuples(st.just("step"), st.integers(1, 8), st.integers(0, 25)),
    st.tuples(st.just("amend"), st.integers(-40, 80), st.integers(-3, 2)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["twap", "vwap", "iceberg", "pov", "passive"]),
    actions=st.lists(_ACTION, min_size=1, max_size=12),
)
def test_amends_interleaved_with_fills_never_overfill_the_parent(
    name: str, actions: list[tuple[str, int, int]]
) -> None:
    algo, px, params = RESTING["twap"] if name == "passive" else ALGOS[name]
    d = Desk()
    d.start(algo, px, params)
    qty = 100
    seen = len(d.fills())
    for kind, a, b in actions:
        if kind == "step":
            d.print_qty = b
            d.step(a)
        else:
            p = d.parent
            # the amend asks for a total of qty + a: an open quantity of that less the filled
            total, new_px = qty + a, px + b
            working, filled = p.is_working, p.filled
            new_open = total - filled
            res = d.send(amend(new_open, new_px, d.now))
            ok = [e for e in res if isinstance(e, OrderReplaced)]
            if working and new_open > 0 and new_px > 0:
                assert ok and ok[0].qty == new_open
                assert p.qty == filled + new_open == total
                qty = total
            else:
                assert not ok
                assert [e for e in res if isinstance(e, OrderReplaceRejected)]
        p = d.parent
        # child quantity that can still fill never exceeds what the parent has left ...
        open_at_venue = sum(o.qty for o in d.open_children())
        assert p.filled + open_at_venue <= p.qty == qty
        # ... and cum never exceeds the parent's quantity; each parent fill since the last
        # action has cum + leaves = the quantity in force
        assert p.filled <= p.qty
        fills = d.fills()
        assert all(f.cum_qty <= qty for f in fills)
        assert all(f.cum_qty + f.leaves_qty == qty for f in fills[seen:])
        seen = len(fills)
    assert d.filled() == sum(r.cum_qty for r in d.children())
    assert d.exec.algo.anomalies == {}


def test_vwap_amend_keeps_the_profile_shape_for_what_is_left() -> None:
    algo, px, params = ALGOS["vwap"]
    assert params["profile"] == VwapProfile.U_SHAPE
    d = Desk()
    d.start(algo, px, params)
    d.run_until_filled(20)
    k0 = d.parent.impl.next_slice
    shares = d.parent.impl.shares
    filled = d.filled()
    d.send(amend(300 - filled, px, d.now))  # to a total of 300
    d.run_to_end()
    check_parent_whole(d, 300)
    kids = [r.qty for r in d.children()]
    # the slices after the amend carry 300 - base in the proportions of the remaining shares
    after = kids[k0:]
    s0 = shares[k0 - 1]
    base = filled
    for i, q in enumerate(after[:-1]):
        k = k0 + i
        want = int((300 - base) * (shares[k] - s0) / (1 - s0) + 1e-9)
        prev = int((300 - base) * (shares[k - 1] - s0) / (1 - s0) + 1e-9) if k > k0 else 0
        assert q == want - prev


def test_a_fill_racing_a_cut_at_the_venue_is_forwarded_and_counted_not_lost() -> None:
    """With latency, the venue can fill a child before the amend's shrink reaches it: the fill
    is real, so the parent ends filled above its amended quantity, once, and it is counted."""
    algo, px, params = ALGOS["iceberg"]
    d = Desk(latency_ns=MS)
    d.print_qty = 0
    d.start(algo, px, params, qty=20)
    d.step(1)
    (shown,) = d.open_children()
    assert shown.qty == 10
    d.print_qty = 10
    d.step(1)  # the first child filled, the second (10) is sent ...
    assert d.filled() == 10
    d.now += 2 * MS
    d.out += d.exec.poll(d.now)  # ... and rests at the venue
    (second,) = d.open_children()
    assert second.qty == 10
    d.send(amend(2, px, d.now))  # cut to a total of 12: the child must shrink to 2 ...
    t = d.now + MS // 2  # ... but a print fills it before the replace lands
    d.out += d.exec.on_market_data(Trade(IID, 100, 10, -1, t, t), t)
    d.out += d.exec.poll(d.now + 5 * MS)
    (end,) = d.ends()
    assert isinstance(end, OrderFilled) and end.cum_qty == 20 == d.filled()
    assert d.exec.algo.anomalies == {"fill_beyond_amended_qty": 1}
    assert d.open_children() == []
    assert sum(r.cum_qty for r in d.children()) == 20
