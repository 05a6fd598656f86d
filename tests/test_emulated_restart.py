"""Orders exec emulates survive a restart the way the exec process does it (table rebuilt from
what the journal holds, reconciled with the venue, ``restore_lists``): a plain stop stays armed
(not closed as "not open at the venue"), at its amended level; a trailing stop goes on from
its journaled mark (``procs.exec_trails``); an amend of a held list leg is kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.contingent import OCO, OTO
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    NewOrder,
    OrderCanceled,
    OrderTriggered,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.reconcile import reconcile
from engine.venues.sim import SimExchange
from procs.exec_trails import TrailLog, load_trails
from procs.recovery import exec_local

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
BUY, SELL = Side.BUY, Side.SELL
LMT, STP, TRAIL = OrderType.LIMIT, OrderType.STOP, OrderType.TRAILING_STOP
POLICY = ExecPolicy(max_retries=0)


def new(coid, side, px, qty, typ=LMT, stop_px=0, **kw) -> NewOrder:
    return NewOrder(coid, 1, IID, side, typ, TimeInForce.GTC, px, qty, 0, 0, stop_px, **kw)


@dataclass
class Run:
    venue: SimExchange
    engine: ExecEngine
    orders: list[NewOrder] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    trails: dict[int, tuple[int, int]] = field(default_factory=dict)
    t: int = 1

    def keep(self, out):
        self.events += [e for e in out if hasattr(e, "client_order_id")]
        return out

    def take(self, o):
        self.t += 1
        if isinstance(o, NewOrder):
            self.orders.append(o)
        else:
            self.events.append(o)
        return self.keep(self.engine.on_order(o, self.t))

    def quote(self, bid, ask):
        self.t += 1
        return self.keep(
            self.engine.on_market_data(Quote(IID, bid, 10, ask, 10, self.t, self.t), self.t)
        )


def start() -> Run:
    venue = SimExchange(INS)
    run = Run(venue, ExecEngine(venue, INS, POLICY, algo_engine=None))
    run.engine.emulator.on_trail = lambda c, m, s: run.trails.__setitem__(c, (m, s))
    run.quote(99, 101)
    return run


def restart(run: Run, *, local: bool = True, trails: bool = True) -> Run:
    """As ``procs.recovery`` + ``procs.exec._apply_recovery``: a new engine from the journal's
    orders and events, the venue reconciled, the local orders held or armed again."""
    ids = exec_local(run.orders, run.events, run.venue, POLICY) if local else set()
    res = reconcile(run.orders, run.events, run.venue, run.t, local_ids=ids)
    eng = ExecEngine(run.venue, INS, POLICY, algo_engine=None, id_block=1)
    eng.table = res.table
    new_run = Run(run.venue, eng, list(run.orders), list(run.events), dict(run.trails), run.t)
    eng.emulator.on_trail = lambda c, m, s: new_run.trails.__setitem__(c, (m, s))
    new_run.keep(res.publish + eng.restore_lists(run.t, ids, run.events))
    if trails:
        eng.restore_trails(run.trails)
    return new_run


def test_a_plain_emulated_stop_stays_armed_at_its_amended_level():
    run = start()
    run.take(new(5, SELL, 0, 3, STP, 95))
    run.take(ReplaceOrder(5, 1, IID, 93, 2, run.t, run.t))  # the stop moves down, 2 lots
    assert run.engine.emulator.stop_px(5) == 93
    run = restart(run)
    assert 5 in run.engine.emulator and run.engine.emulator.stop_px(5) == 93
    assert run.engine.table.get(5).is_open and run.engine.table.get(5).emulated
    assert not run.quote(94, 96)  # above the amended level: nothing (the old 95 would fire)
    out = run.quote(92, 94)
    trig = [e for e in out if isinstance(e, OrderTriggered)]
    assert [(e.client_order_id, e.qty) for e in trig] == [(5, 2)]


def test_without_exec_local_reconciliation_closes_the_stop():
    """What the exec process did before: the stop never reached the venue, so it looked
    missing there — the test that the local set is what keeps it."""
    run = start()
    run.take(new(5, SELL, 0, 3, STP, 95))
    assert 5 in exec_local(run.orders, run.events, run.venue, POLICY)
    run = restart(run, local=False)
    assert 5 not in run.engine.emulator and not run.engine.table.get(5).is_open


def test_a_triggered_emulated_stop_is_not_armed_again():
    run = start()
    run.take(new(5, SELL, 0, 3, STP, 95))
    run.quote(94, 96)  # fires: a MARKET went to the venue
    assert 5 not in exec_local(run.orders, run.events, run.venue, POLICY)
    run = restart(run)
    assert 5 not in run.engine.emulator


@pytest.mark.parametrize("journaled", [True, False])
def test_a_trailing_stop_goes_on_from_its_journaled_mark(journaled):
    run = start()
    run.take(new(6, SELL, 0, 2, TRAIL, 3))  # trails 3 ticks under the best bid
    for bid in (102, 106, 110, 108):
        run.quote(bid, bid + 2)
    assert run.engine.emulator.stop_px(6) == 107 and run.trails[6] == (110, 107)
    run = restart(run, trails=journaled)
    run.quote(108, 110)  # the first quote the restarted exec sees: 108 - 3 = 105 from it alone
    assert run.engine.emulator.stop_px(6) == (107 if journaled else 105)
    fired = [e for e in run.quote(106, 108) if isinstance(e, OrderTriggered)]
    assert bool(fired) is journaled  # 106 is under the journaled level, above the market's


def test_trail_log_keeps_the_last_move_of_each_order(tmp_path):
    log = TrailLog(tmp_path / "x.trails")
    log.append(6, 110, 107)
    log.append(7, 50, 53)
    log.append(6, 112, 109)
    log.close()
    assert load_trails(tmp_path / "x.trails") == {6: (112, 109), 7: (50, 53)}
    assert load_trails(tmp_path / "none.trails") == {}


def test_an_amend_of_a_held_bracket_stop_survives_a_restart():
    run = start()
    run.take(new(1, BUY, 100, 4, contingency=OTO))
    run.take(new(2, SELL, 110, 4, parent_id=1, contingency=OCO, linked=[3]))
    run.take(new(3, SELL, 0, 4, STP, 90, parent_id=1, contingency=OCO, linked=[2]))
    run.take(ReplaceOrder(3, 1, IID, 88, 4, run.t, run.t))  # the held stop-loss moves to 88
    assert run.engine.lists.legs[3].waiting and run.engine.lists.legs[3].order.stop_px == 88
    run = restart(run)
    assert run.engine.lists.legs[3].waiting and run.engine.lists.legs[3].order.stop_px == 88
    run.quote(98, 100)  # the entry fills: the stop-loss is armed at its amended level
    assert run.engine.emulator.stop_px(3) == 88
    assert not [e for e in run.quote(89, 91) if isinstance(e, OrderCanceled | OrderTriggered)]
