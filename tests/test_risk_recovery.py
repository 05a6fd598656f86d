"""Risk recovery after a crash: the orders that were open come back from the record.

Unit level: ``RiskGate.restore`` rebuilds open orders from orders + events without moving
positions, and fills the events ring delivers again are not taken off twice.

Whole engine: a strategy leaves orders resting at the simulated venue up to ``max_open_orders``
and keeps probing for one more; risk is SIGKILLed and restarted by the supervisor; the restarted
risk still refuses the probes (it counts the restored orders), and `gekko kill` cancels every
order that was open — at the venue, while the engine runs.
"""

from __future__ import annotations

import os
import signal
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.exec_engine import ExecEngine
from engine.instruments import Instrument
from engine.messages import (
    AlgoKind,
    CancelOrder,
    Control,
    ControlCommand,
    IntentCancel,
    IntentNew,
    IntentReplace,
    Message,
    NewOrder,
    OpenOrderSnapshot,
    OpenOrdersRequest,
    OrderAccepted,
    OrderCanceled,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderType,
    ReplaceOrder,
    RiskEventKind,
    Side,
    TimeInForce,
)
from engine.risk import RiskGate, RiskLimits
from engine.strategies.base import Strategy, StrategyContext
from engine.venues.sim import SimExchange
from tests.test_sim_exchange import TABLE, snap, trade

STRATEGY_ID = 7
RESTING = 5  # = max_open_orders in the engine test


# --- the gate alone --------------------------------------------------------------------------

INS = [Instrument(instrument_id=1, symbol="AAA", sector="tech")]


def _gate() -> RiskGate:
    return RiskGate(
        RiskLimits.off(max_order_notional=1e9, max_position_lots=1000, max_open_orders=3), INS
    )


def _new(coid: int, side: int, qty: int, px: int = 10_000) -> NewOrder:
    return NewOrder(coid, 1, 1, side, int(OrderType.LIMIT), int(TimeInForce.GTC), px, qty, 1, 1)


def _fill(coid: int, side: int, qty: int, cum: int, leaves: int, fill_id: int) -> Any:
    return OrderPartiallyFilled(
        coid, 100 + coid, 1, side, 10_000, qty, cum, leaves, 0.0, 1, fill_id, 1, 2, 2
    )


def test_restore_rebuilds_open_orders_without_touching_positions() -> None:
    g = _gate()
    orders = [_new(1, Side.BUY, 10), _new(2, Side.SELL, 4), _new(3, Side.BUY, 5)]
    events = [
        OrderAccepted(1, 101, 1, int(Side.BUY), 10_000, 10, 1, 2, 2),
        _fill(1, Side.BUY, 3, 3, 7, fill_id=1),
        OrderAccepted(2, 102, 1, int(Side.SELL), 10_000, 4, 1, 2, 2),
        OrderCanceled(3, 1, 5, "canceled", 1, 2, 2),
        ReplaceOrder(2, 1, 1, 10_100, 9, 3, 3),  # in flight: the larger size counts
    ]
    assert g.restore(orders, events) == 2
    assert sorted(g.open_orders) == [1, 2]
    assert int(g.open_buy[1]) == 7 and int(g.open_sell[1]) == 9
    assert int(g.position[1]) == 0 and g.cash == 0.0  # positions come from exec's table
    # the kill switch cancels exactly what is open
    out = g.on_control(Control(int(ControlCommand.KILL), 5, "test"))
    assert sorted(c.client_order_id for c in out if type(c).__name__ == "CancelOrder") == [1, 2]


def test_restored_orders_count_against_max_open_orders() -> None:
    g = _gate()
    g.restore([_new(c, Side.BUY, 1) for c in (1, 2, 3)], [])
    it = IntentNew(
        9, 1, 1, int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.GTC), 10_000, 1, 1, 1
    )
    out = g.on_intent(it, 10)
    assert [type(o).__name__ for o in out] == ["RiskEvent", "OrderRejected"]
    assert out[0].reason == "max open orders"


def test_a_redelivered_fill_is_not_taken_off_twice_and_a_new_one_is() -> None:
    g = _gate()
    f1 = _fill(1, Side.BUY, 3, 3, 7, fill_id=11)
    g.restore([_new(1, Side.BUY, 10)], [f1])
    assert g.open_orders[1].leaves == 7
    g.on_exec_event(f1, count_fill=False)  # the events ring delivers it again
    assert g.open_orders[1].leaves == 7 and int(g.open_buy[1]) == 7
    g.on_exec_event(_fill(1, Side.BUY, 2, 5, 5, fill_id=12))  # a new fill
    assert g.open_orders[1].leaves == 5 and int(g.open_buy[1]) == 5
    assert int(g.position[1]) == 2  # only the new fill moved the position
    g.on_exec_event(OrderReplaced(1, 1, 10_050, 4, 1, 3, 3))
    assert int(g.open_buy[1]) == 4
    g.on_exec_event(OrderCanceled(1, 1, 4, "canceled", 1, 4, 4))
    assert g.open_orders == {} and int(g.open_buy[1]) == 0


def test_restore_ignores_garbage() -> None:
    g = _gate()
    bad = [
        _new(1, Side.BUY, 0),  # no quantity
        NewOrder(2, 1, 99, 1, 2, 1, 10_000, 5, 1, 1),  # unknown instrument
        NewOrder(3, 1, 1, 5, 2, 1, 10_000, 5, 1, 1),  # no such side
        "not an order",
    ]
    assert g.restore(bad, [object(), None]) == 0
    assert g.open_orders == {} and not g.open_buy.any() and not g.open_sell.any()


def _session(actions: list) -> tuple[RiskGate, list[NewOrder], list[Any]]:
    """A live gate in front of a simulated venue: (the gate, the orders it approved, the stream
    of requests and execution events in publication order)."""
    lim = RiskLimits.off(max_order_notional=1e12, max_position_lots=10**9, max_open_orders=10**6)
    gate = RiskGate(lim, TABLE)
    venue = SimExchange(TABLE)
    book = snap([(100, 50), (99, 20)], [(101, 10), (102, 20)])
    venue.on_market_data(book, 1)
    gate.on_market_data(book)
    approved: list[NewOrder] = []
    stream: list[Any] = []
    t = 10
    for kind, coid, side, off, qty in actions:
        t += 1
        out: list[Any] = []
        if kind == "new":
            px = (100 if side == Side.BUY else 101) + off
            it = IntentNew(
                coid, 1, 1, side, int(OrderType.LIMIT), int(TimeInForce.GTC), px, qty, t, t
            )
            out = gate.on_intent(it, t)
        elif kind == "cancel":
            out = gate.on_intent(IntentCancel(coid, 1, 1, t, t), t)
        elif kind == "replace":
            o = gate.open_orders.get(coid)
            px = (100 if o is None or o.side == Side.BUY else 101) + off
            out = gate.on_intent(IntentReplace(coid, 1, 1, px, qty, t, t), t)
        evs: list[Any] = []
        for o in out:
            if isinstance(o, NewOrder):
                approved.append(o)
                evs += venue.submit(o, t)
            elif type(o).__name__ == "CancelOrder":
                stream.append(o)
                evs += venue.cancel(o, t)
            elif isinstance(o, ReplaceOrder):
                stream.append(o)
                evs += venue.replace(o, t)
        if kind == "trade":
            evs += venue.on_market_data(trade(100 + off, qty, side), t)
        for k, ev in enumerate(evs):  # exec stamps them in the order it publishes them
            ev = msgspec.structs.replace(ev, ts_recv=t * 1000 + k)
            stream.append(ev)
            gate.on_exec_event(ev)
    return gate, approved, stream


def _open_view(g: RiskGate) -> tuple:
    return (
        {c: (o.leaves, o.reserved, o.px) for c, o in g.open_orders.items()},
        g.open_buy.tolist(),
        g.open_sell.tolist(),
    )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "new", "cancel", "replace", "trade"]),
            st.integers(1, 8),  # client order id
            st.sampled_from([int(Side.BUY), int(Side.SELL)]),
            st.integers(-3, 3),  # price offset from the touch
            st.integers(1, 30),  # quantity
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_restore_then_the_ring_equals_the_live_gate(actions: list, cut: float, back: float) -> None:
    """Whatever part of the events the record holds when risk restarts, and however many of
    them the events ring delivers again, the restored gate ends with the live gate's open
    orders and open quantities."""
    live, approved, stream = _session(actions)
    events = [i for i, e in enumerate(stream) if hasattr(e, "ts_recv")]
    n_cut = int(len(events) * cut)  # events[:n_cut] are in the record
    recorded = set(events[:n_cut])
    record = [e for i, e in enumerate(stream) if i in recorded or not hasattr(e, "ts_recv")]
    redeliver = events[int(n_cut * back) :]  # the crashed process had read up to here
    g = RiskGate(live.limits, live.instruments)
    g.restore(approved, record)
    for i in redeliver:
        g.on_exec_event(stream[i], count_fill=False)
    assert _open_view(g) == _open_view(live)


# --- storage off: exec's answer (OpenOrdersRequest -> OpenOrderSnapshot) -----------------------


def _exec_session(actions: list) -> tuple[RiskGate, ExecEngine]:
    """A live gate in front of exec (``ExecEngine`` over a simulated venue), every order and
    event passed on at once as the processes do."""
    lim = RiskLimits.off(max_order_notional=1e12, max_position_lots=10**9, max_open_orders=10**6)
    gate = RiskGate(lim, TABLE)
    ex = ExecEngine(SimExchange(TABLE), TABLE)
    book = snap([(100, 50), (99, 20)], [(101, 10), (102, 20)])
    ex.on_market_data(book, 1)
    gate.on_market_data(book)
    t = 10
    used: set[int] = set()  # a client order id is used once (exec ignores a reused one)
    for kind, coid, side, off, qty in actions:
        t += 1
        if kind == "new" and coid not in used:
            used.add(coid)
            px = (100 if side == Side.BUY else 101) + off
            out = gate.on_intent(
                IntentNew(
                    coid, 1, 1, side, int(OrderType.LIMIT), int(TimeInForce.GTC), px, qty, t, t
                ),
                t,
            )
        elif kind == "cancel":
            out = gate.on_intent(IntentCancel(coid, 1, 1, t, t), t)
        elif kind == "replace":
            o = gate.open_orders.get(coid)
            px = (100 if o is None or o.side == Side.BUY else 101) + off
            out = gate.on_intent(IntentReplace(coid, 1, 1, px, qty, t, t), t)
        else:
            out = []
        evs: list[Any] = []
        for o in out:
            if isinstance(o, NewOrder | CancelOrder | ReplaceOrder):
                evs += ex.on_order(o, t)
        if kind == "trade":
            evs += ex.on_market_data(trade(100 + off, qty, side), t)
        evs += ex.poll(t)
        for ev in evs:
            gate.on_exec_event(ev)
    return gate, ex


def _answer(ex: ExecEngine, rid: int = 5) -> list[Any]:
    return ex.open_order_snapshot(OpenOrdersRequest(rid, 1), 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "new", "cancel", "replace", "trade"]),
            st.integers(1, 8),
            st.sampled_from([int(Side.BUY), int(Side.SELL)]),
            st.integers(-3, 3),
            st.integers(1, 30),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_exec_answer_restores_the_live_gate_open_orders(actions: list) -> None:
    """Whatever happened before the crash, a fresh gate fed exec's answer holds the live gate's
    open orders, prices and open quantities — and ends where it does after one more event."""
    live, ex = _exec_session(actions)
    ans = _answer(ex)
    assert ans[-1].end and ans[-1].count == len(ans) - 1 and ans[-1].request_id == 5
    g = RiskGate(live.limits, live.instruments)
    added = g.restore_open(ans)
    assert sorted(added) == sorted(live.open_orders)
    assert _open_view(g) == _open_view(live)
    # the next event (here a cancel's) moves both alike
    for coid in list(live.open_orders)[:1]:
        for ev in ex.on_order(CancelOrder(coid, 1, 1, 99, 99), 99):
            live.on_exec_event(ev)
            g.on_exec_event(ev)
        assert _open_view(g) == _open_view(live)


def test_exec_answer_leaves_out_algo_children_and_counts_the_parent() -> None:
    ex = ExecEngine(SimExchange(TABLE), TABLE)
    ex.on_market_data(snap([(100, 50), (99, 20)], [(101, 10), (102, 20)]), 1)
    parent = NewOrder(
        7 << 32 | 1,
        7,
        1,
        1,
        int(OrderType.LIMIT),
        int(TimeInForce.GTC),
        95,
        200,
        1,
        1,
        algo=int(AlgoKind.ICEBERG),
        algo_params={"display_qty": 20},
    )
    plain = NewOrder(
        7 << 32 | 2, 7, 1, -1, int(OrderType.LIMIT), int(TimeInForce.GTC), 110, 4, 1, 1
    )
    ex.on_order(parent, 2)
    ex.on_order(plain, 2)
    ex.poll(3)
    assert len(ex.table.open_orders()) == 2  # the plain order and one iceberg child
    ans = _answer(ex, rid=9)
    rows = {a.order_id: (a.side, a.px, a.leaves_qty, a.strategy_id) for a in ans if not a.end}
    assert rows == {7 << 32 | 1: (1, 95, 200, 7), 7 << 32 | 2: (-1, 110, 4, 7)}
    g = _gate()
    assert sorted(g.restore_open(ans)) == sorted(rows)
    assert int(g.open_buy[1]) == 200 and int(g.open_sell[1]) == 4
    # the kill switch cancels the parent (exec cancels its children) and the plain order
    out = g.on_control(Control(int(ControlCommand.KILL), 5, "test"))
    assert sorted(c.client_order_id for c in out if isinstance(c, CancelOrder)) == sorted(rows)


def test_restore_open_ignores_garbage_and_what_the_gate_holds() -> None:
    g = _gate()
    g.restore_open([OpenOrderSnapshot(1, 50, 7, 1, 1, 10_000, 3)])
    bad = [
        OpenOrderSnapshot(1, 50, 7, 1, 1, 10_000, 9),  # already open here: kept as it is
        OpenOrderSnapshot(1, 51, 7, 99, 1, 10_000, 3),  # unknown instrument
        OpenOrderSnapshot(1, 52, 7, -5, 1, 10_000, 3),  # negative instrument id
        OpenOrderSnapshot(1, 53, 7, 1, 4, 10_000, 3),  # no such side
        OpenOrderSnapshot(1, 54, 7, 1, 1, 10_000, 0),  # nothing left
        OpenOrderSnapshot(1, 0, 0, -1, 0, 0, 0, end=True, count=6),
        _new(55, Side.BUY, 3),  # not a snapshot
        None,
    ]
    assert g.restore_open(bad) == []
    assert list(g.open_orders) == [50] and int(g.open_buy[1]) == 3


class _Sink:
    """Stands for the ``orders`` ring's producer: keeps what is published."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)


def test_ask_exec_holds_intents_until_its_own_answer_is_complete() -> None:
    from procs.risk import AskExec

    sink = _Sink()
    ask = AskExec(sink, timeout_s=60.0)
    [req] = sink.sent
    assert isinstance(req, OpenOrdersRequest) and req.request_id == ask.request_id
    assert ask.holding()
    rid = ask.request_id
    row = OpenOrderSnapshot(rid, 50, 7, 1, 1, 10_000, 3)
    assert not ask.take(OpenOrderSnapshot(rid - 1, 0, 0, -1, 0, 0, 0, end=True))  # not ours
    assert not ask.take(row) and ask.holding()
    assert ask.take(OpenOrderSnapshot(rid, 0, 0, -1, 0, 0, 0, end=True, count=1))
    assert not ask.holding() and not ask.timed_out and ask.rows == [row]
    assert not ask.take(OpenOrderSnapshot(rid, 0, 0, -1, 0, 0, 0, end=True))  # answered once


def test_ask_exec_lets_intents_through_after_the_timeout_and_takes_a_late_answer() -> None:
    from procs.risk import AskExec

    ask = AskExec(_Sink(), timeout_s=0.05)
    time.sleep(0.1)  # the wait counts from the loop's first question (READY), not from the request
    assert ask.holding() and not ask.timed_out
    time.sleep(0.1)
    assert not ask.holding() and ask.timed_out
    assert ask.take(OpenOrderSnapshot(ask.request_id, 0, 0, -1, 0, 0, 0, end=True))


def test_other_readers_of_the_events_ring_ignore_the_answer() -> None:
    from engine.portfolio import Portfolio
    from engine.strategy_host import StrategyHost

    class Quiet(Strategy):
        def on_order_event(self, ev: Any) -> None:
            raise AssertionError(f"a strategy was handed {ev!r}")

        on_fill = on_order_event

    host = StrategyHost([Quiet], INS)
    host.context(1)  # the hosted strategy is id 1: the answer names one of its orders
    s = OpenOrderSnapshot(1, 1 << 32 | 1, 1, 1, 1, 10_000, 3)
    end = OpenOrderSnapshot(1, 0, 0, -1, 0, 0, 0, end=True, count=1)
    assert host.on_exec_event(s, 1) == [] and host.on_exec_event(end, 1) == []
    p = Portfolio(INS)
    p.on_event(s)
    p.on_order(OpenOrdersRequest(1, 1))
    assert not p.positions or all(x.position == 0 for x in p.positions.values())
    # the frames cross the rings: both decode as themselves
    dec = msgspec.msgpack.Decoder(Message)
    for m in (s, end, OpenOrdersRequest(9, 9)):
        assert dec.decode(msgspec.msgpack.encode(m)) == m


def test_open_orders_timeout_is_validated() -> None:
    from ops.config import ConfigError, parse_config

    text = (Path(__file__).resolve().parents[1] / "config.toml").read_text()
    assert parse_config(text).risk.open_orders_timeout_s == 10.0
    line = "\nopen_orders_timeout_s = 10.0"
    assert line in text
    for bad in ("0.0", "-1.0", "nan"):
        with pytest.raises(ConfigError) as err:
            parse_config(text.replace(line, f"\nopen_orders_timeout_s = {bad}"), "my.toml")
        assert err.value.key == "risk.open_orders_timeout_s"


# --- the whole engine --------------------------------------------------------------------------


class RestingOrders(Strategy):
    """``count`` limit buys of one lot ``below_pct`` under the bid (they rest and never fill),
    then one more every ``probe_s`` — which risk must refuse while ``count`` are open."""

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.count = int(params.get("count", RESTING))
        self.below = float(params.get("below_pct", 4.0)) / 100.0
        self.probe_ns = int(float(params.get("probe_s", 0.2)) * 1e9)
        self.sent = 0
        self.next_probe = 0

    def on_quote(self, q: Any) -> None:
        bid = self.ctx.best_bid(q.instrument_id)
        if bid is None:
            return
        now = time.monotonic_ns()
        if self.sent >= self.count:
            if now < self.next_probe:
                return
            self.next_probe = now + self.probe_ns
        self.sent += 1
        self.ctx.buy(q.instrument_id, 1, max(1, int(bid[0] * (1.0 - self.below))))


STRATEGIES = f"""
[[strategies]]
id = {STRATEGY_ID}
path = "tests.test_risk_recovery:RestingOrders"
instruments = ["MSFT"]
[strategies.params]
count = {RESTING}
"""


def _config(
    tmp_path: Path, eid: str, dsn: str, more: tuple[tuple[str, str, str], ...] = ()
) -> Path:
    from tests.test_engine_e2e import set_key, write_config

    cfg = write_config(tmp_path, eid, strategies=STRATEGIES)
    text = cfg.read_text()
    for section, key, value in (
        ("risk", "max_open_orders", str(RESTING)),
        ("storage.postgres", "mode", f'"{dsn}"'),
        ("inference", "enabled", "false"),  # fewer processes on a small test machine
        *more,
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def venue_frames(tmp_path: Path) -> list[Any]:
    """The simulated exchange's own record, read while it is written (a torn tail is left)."""
    dec = msgspec.msgpack.Decoder(Message)
    paths = list((tmp_path / "var" / "venue").glob("*.venue"))
    if not paths:
        return []
    data = paths[0].read_bytes()
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            break
        try:
            out.append(dec.decode(data[pos + 4 : pos + 4 + n]))
        except msgspec.DecodeError:
            break
        pos += 4 + n
    return out


def _ours(frames: list[Any], kind: type) -> set[int]:
    """Our strategy's orders with a ``kind`` event at the venue (cancels: on request only)."""
    return {
        f.client_order_id
        for f in frames
        if isinstance(f, kind)
        and f.client_order_id >> 32 == STRATEGY_ID
        and (kind is not OrderCanceled or f.reason == "canceled")
    }


def _risk_events(dsn: str) -> list[tuple[str, int, float]]:
    import psycopg

    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT reason, ts, value FROM risk_events WHERE kind = %s",
            (int(RiskEventKind.ORDER_REJECTED),),
        ).fetchall()


def _checker(proc: Any) -> Callable[[bool, str], None]:
    """``check(ok, what)``: on failure, stop the engine and fail with what it said."""

    def check(ok: bool, what: str) -> None:
        if not ok:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=90)
            raise AssertionError(f"{what}\n{err[-4000:]}")

    return check


def _wait_resting(check: Callable[[bool, str], None], tmp_path: Path, eid: str) -> set[int]:
    """Wait until the strategy's RESTING orders rest at the venue and risk refuses the probes
    beyond them; returns their client order ids."""
    from tests.test_engine_e2e import _wait_for, wait_counter

    check(
        _wait_for(lambda: len(_ours(venue_frames(tmp_path), OrderAccepted)) >= RESTING, 90),
        "the orders never rested at the venue",
    )
    check(wait_counter(eid, "risk", "rejected", 2), "no probe refused before the crash")
    return _ours(venue_frames(tmp_path), OrderAccepted)


def _wait_canceled(check: Callable[[bool, str], None], tmp_path: Path, resting: set[int]) -> None:
    """Wait until every order in ``resting`` is canceled at the venue."""
    from tests.test_engine_e2e import _wait_for

    check(
        _wait_for(lambda: _ours(venue_frames(tmp_path), OrderCanceled) >= resting, 60),
        f"canceled at the venue: {_ours(venue_frames(tmp_path), OrderCanceled)} of {resting}",
    )


@pytest.mark.timeout(240)
def test_orders_open_before_a_risk_crash_are_counted_and_canceled_by_the_kill_switch(
    tmp_path: Path, pg_dsn: str
) -> None:
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        gekko,
        health,
        is_ready,
        running_engine,
        summary_of,
        wait_counter,
    )
    from tests.test_risk_e2e import records

    eid = "k" + uuid.uuid4().hex[:7]
    cfg = _config(tmp_path, eid, pg_dsn)
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)

        resting = _wait_resting(check, tmp_path, eid)
        assert len(resting) == RESTING
        old_pid = health(eid)["risk"][0]
        os.kill(old_pid, signal.SIGKILL)  # a crash: the supervisor restarts it
        check(_wait_for(lambda: is_ready(eid, "risk", not_pid=old_pid), 120), "risk not back")
        t_back = time.monotonic_ns()
        # the restarted risk counts the restored orders: the probes are still refused
        n = counter(eid, "risk", "rejected")
        check(wait_counter(eid, "risk", "rejected", n + 3), "no probe refused after the restart")
        assert not _ours(venue_frames(tmp_path), OrderCanceled)  # all still resting
        t_kill = time.monotonic_ns()
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        # every order that was open before the crash is canceled at the venue (not by the
        # shutdown: the engine is still running)
        _wait_canceled(check, tmp_path, resting)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [x["worker"] for x in s["restarts"]] == ["risk"]
    orders = records(tmp_path, "orders.jsonl")
    ours = [o for o in orders if o.get("strategy_id") == STRATEGY_ID]  # not the OpenOrdersRequest
    # only the resting orders were ever approved: no probe got through, before or after
    assert {o["client_order_id"] for o in ours if o["type"] == "NewOrder"} == resting
    cancels = [o for o in ours if o["type"] == "CancelOrder"]
    assert {c["client_order_id"] for c in cancels} >= resting
    assert all(c["ts_approved"] >= t_kill for c in cancels)  # from the kill, after the restart
    # the refusals after the restart were for max open orders, counting the restored ones
    after = [(why, v) for why, ts, v in _risk_events(pg_dsn) if t_back <= ts < t_kill]
    assert after and all(why == "max open orders" and v == RESTING + 1 for why, v in after), after
    # from exec's answer, with a database too: recovery never depends on it (procs/recovery.py)
    assert f"{RESTING} open orders restored from exec's answer ({RESTING} sent)" in err, err[-3000:]


@pytest.mark.timeout(240)
def test_storage_off_a_restarted_risk_takes_the_open_orders_from_exec(tmp_path: Path) -> None:
    """No record to load: the restarted risk asks exec (``OpenOrdersRequest``), holds new
    intents back until exec's answer is in, then counts the resting orders against
    max_open_orders and the kill switch cancels every one of them at the venue."""
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        gekko,
        health,
        is_ready,
        running_engine,
        summary_of,
        wait_counter,
    )
    from tests.test_risk_e2e import records

    eid = "o" + uuid.uuid4().hex[:7]
    cfg = _config(tmp_path, eid, "off")
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)

        resting = _wait_resting(check, tmp_path, eid)
        assert len(resting) == RESTING
        old_pid = health(eid)["risk"][0]
        os.kill(old_pid, signal.SIGKILL)
        check(_wait_for(lambda: is_ready(eid, "risk", not_pid=old_pid), 120), "risk not back")
        check(wait_counter(eid, "risk", "orders_restored", RESTING), "exec's answer not applied")
        t_back = time.monotonic_ns()
        n = counter(eid, "risk", "rejected")
        check(wait_counter(eid, "risk", "rejected", n + 3), "no probe refused after the restart")
        assert counter(eid, "risk", "orders_restored") == RESTING
        assert not _ours(venue_frames(tmp_path), OrderCanceled)  # all still resting
        t_kill = time.monotonic_ns()
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        _wait_canceled(check, tmp_path, resting)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert [x["worker"] for x in summary_of(tmp_path)["restarts"]] == ["risk"]
    assert f"{RESTING} open orders restored from exec's answer ({RESTING} sent)" in err, err[-3000:]
    assert "no answer from exec" not in err
    orders = records(tmp_path, "orders.jsonl")
    # the question went to exec once, on the orders ring, after the crash
    assert [o["type"] for o in orders].count("OpenOrdersRequest") == 1
    ours = [o for o in orders if o.get("strategy_id") == STRATEGY_ID]
    assert {o["client_order_id"] for o in ours if o["type"] == "NewOrder"} == resting
    cancels = [o for o in ours if o["type"] == "CancelOrder"]
    assert {c["client_order_id"] for c in cancels} >= resting
    assert all(c["ts_approved"] >= t_kill for c in cancels)
    # the refusals after the restart were for max open orders, counting exec's open orders
    after = [
        (e["reason"], e["value"])
        for e in records(tmp_path, "risk.jsonl")
        if e["type"] == "RiskEvent"
        and e["kind"] == int(RiskEventKind.ORDER_REJECTED)
        and t_back <= e["ts"] < t_kill
    ]
    assert after and all(why == "max open orders" and v == RESTING + 1 for why, v in after), after


@pytest.mark.timeout(240)
def test_storage_off_exec_answering_late_is_still_applied(tmp_path: Path) -> None:
    """Exec is frozen (SIGSTOP) while risk restarts: risk waits ``open_orders_timeout_s``, logs
    that no answer came, and approves again (the probes, up to max_open_orders, queue for exec
    behind the request). Exec thawed answers the request first; risk applies the late answer,
    so `gekko kill` still cancels the orders that rested before the crash."""
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        gekko,
        health,
        is_ready,
        running_engine,
        wait_counter,
    )
    from tests.test_risk_e2e import records

    eid = "l" + uuid.uuid4().hex[:7]
    more = (
        ("risk", "open_orders_timeout_s", "0.5"),
        ("supervisor", "heartbeat_timeout_s", "60.0"),  # a frozen exec is not restarted here
    )
    cfg = _config(tmp_path, eid, "off", more)
    with running_engine(cfg, tmp_path, eid) as proc:
        check = _checker(proc)

        resting = _wait_resting(check, tmp_path, eid)
        exec_pid, old_pid = health(eid)["exec"][0], health(eid)["risk"][0]
        os.kill(exec_pid, signal.SIGSTOP)
        try:
            os.kill(old_pid, signal.SIGKILL)
            check(_wait_for(lambda: is_ready(eid, "risk", not_pid=old_pid), 120), "risk not back")
            # no answer: after the timeout the probes are approved again (exec has them queued)
            n_ok = counter(eid, "risk", "approved")
            check(
                wait_counter(eid, "risk", "approved", n_ok + 1), "none approved after the timeout"
            )
            assert counter(eid, "risk", "orders_restored") == 0
        finally:
            os.kill(exec_pid, signal.SIGCONT)
        check(wait_counter(eid, "risk", "orders_restored", RESTING), "late answer not applied")
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        _wait_canceled(check, tmp_path, resting)
        assert health(eid)["exec"][0] == exec_pid  # the same exec answered
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert "no answer from exec about its open orders in time" in err, err[-3000:]
    assert (
        f"{RESTING} open orders restored from exec's answer ({RESTING} sent, after the timeout)"
        in err
    )
    orders = records(tmp_path, "orders.jsonl")
    new_ids = [
        o["client_order_id"]
        for o in orders
        if o["type"] == "NewOrder" and o.get("strategy_id") == STRATEGY_ID
    ]
    assert len(new_ids) == len(set(new_ids)) > RESTING  # probes approved after the timeout
