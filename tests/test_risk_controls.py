"""Real-time controls: the trading state and its breakers, stop loss / take profit, venue and
flash-move halts, and the state that must survive a restart of the risk process."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument
from engine.market_guard import MarketGuard
from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    ExchangeStatus,
    ExchangeStatusKind,
    InstrumentHalted,
    InstrumentResumed,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    OrderType,
    Quote,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
    Side,
    TimeInForce,
    TradingState,
    TradingStateChanged,
)
from engine.risk import RiskGate, RiskLimits
from engine.trading_state import TradingStateMachine
from procs.risk import load_state, save_state

INS = [Instrument(instrument_id=0, symbol="A"), Instrument(instrument_id=1, symbol="B")]
BASE = RiskLimits.off(
    max_order_notional=1e12, max_position_lots=10**9, max_open_orders=1000, capital=1_000_000.0
)
_ids = itertools.count(1)
S = 1_000_000_000


def gate(**kw) -> RiskGate:
    g = RiskGate(msgspec.structs.replace(BASE, **kw), INS)
    price(g, 0, 10_000)
    price(g, 1, 10_000)
    return g


def price(g: RiskGate, iid: int, mid: int, now: int = 1) -> list:
    g.on_market_data(Quote(iid, mid - 1, 10, mid + 1, 10, 0, 0))
    return g.on_prices(now, now)


def new(iid=0, qty=1, side=Side.BUY, px=10_000) -> IntentNew:
    return IntentNew(next(_ids), 1, iid, side, OrderType.LIMIT, TimeInForce.GTC, px, qty, 0, 0)


def fill(g: RiskGate, iid: int, qty: int, px: int = 10_000, coid: int | None = None) -> None:
    side = Side.BUY if qty > 0 else Side.SELL
    g.on_exec_event(
        OrderFilled(coid or next(_ids), 1, iid, side, px, abs(qty), abs(qty), 0, 0.0, 1, 1, 0, 1, 1)
    )


def of(out, cls) -> list:
    return [m for m in out if isinstance(m, cls)]


def test_daily_loss_breaker_reduces_then_halts_and_only_resume_lifts_it() -> None:
    g = gate(daily_loss_reduce_pct=1.0, daily_loss_halt_pct=2.0)
    fill(g, 0, 10_000)  # $1M of A at $100: $1 is 1 % of equity
    resting = [g.on_intent(new(iid=1, qty=1), 1)[0] for _ in range(2)]  # open, flat in B
    assert not price(g, 0, 9_901)  # -$9,900: 0.99 %
    assert g.state == TradingState.ACTIVE
    out = price(g, 0, 9_900, now=2)  # -$10,000: 1 % of the day's starting equity
    ch = of(out, TradingStateChanged)
    assert len(ch) == 1 and ch[0].state == TradingState.REDUCING and ch[0].source == "daily_loss"
    assert ch[0].value == pytest.approx(1.0) and ch[0].limit == 1.0 and ch[0].ts == 2
    # REDUCING pulls the orders that would add to a position (B is flat: both)
    assert {c.client_order_id for c in of(out, CancelOrder)} == {o.client_order_id for o in resting}
    assert "reduce-only" in g.on_intent(new(iid=1), 3)[0].reason
    sell = g.on_intent(new(qty=10, side=Side.SELL), 3)[0]
    assert isinstance(sell, NewOrder)
    assert not price(g, 0, 9_899, now=3)  # already REDUCING: nothing new to record
    out = price(g, 0, 9_800, now=4)  # -2 %
    ch = of(out, TradingStateChanged)
    assert ch[0].state == TradingState.HALTED and ch[0].prev_state == TradingState.REDUCING
    assert of(out, RiskEvent)[0].kind == RiskEventKind.LIMIT_BREACH
    # HALTED cancels everything still open (the earlier cancels are not confirmed yet: again)
    cancels = {c.client_order_id for c in of(out, CancelOrder)}
    assert cancels == set(g.open_orders) and sell.client_order_id in cancels and len(cancels) == 3
    # the market recovers: still halted (breakers only escalate)
    assert not price(g, 0, 10_000, now=5)
    assert g.state == TradingState.HALTED
    assert "trading halted" in g.on_intent(new(), 6)[0].reason
    out = g.on_control(Control(ControlCommand.RESUME, 7, "operator ok"), 70)
    ch = of(out, TradingStateChanged)
    assert ch[0].state == TradingState.ACTIVE and ch[0].source == "operator" and ch[0].wall_ns == 70
    assert g.state == TradingState.ACTIVE and g.day_start_equity == g.equity


def test_drawdown_protection_measures_from_the_peak() -> None:
    g = gate(drawdown_reduce_pct=3.0, drawdown_halt_pct=5.0)
    fill(g, 0, 10_000)
    price(g, 0, 12_000)  # +$200k: peak $1.2M
    assert g.peak_equity == pytest.approx(1_200_000.0)
    assert not price(g, 0, 11_641)  # -$35.9k: 2.99 % below the peak
    out = price(g, 0, 11_640, now=2)  # -$36k: 3 %
    assert of(out, TradingStateChanged)[0].state == TradingState.REDUCING
    out = price(g, 0, 11_400, now=3)  # -$60k: 5 %
    assert of(out, TradingStateChanged)[0].state == TradingState.HALTED
    assert of(out, TradingStateChanged)[0].source == "drawdown"


def test_kill_switch_halts_cancels_and_flatten_closes_positions() -> None:
    g = gate()
    fill(g, 0, 7)
    fill(g, 1, -3)
    o = g.on_intent(new(iid=0, qty=1), 1)[0]
    out = g.on_control(Control(ControlCommand.FLATTEN, 5, "gekko kill --flatten"), 50)
    ch = of(out, TradingStateChanged)
    assert ch[0].state == TradingState.HALTED and ch[0].reason == "gekko kill --flatten"
    assert [c.client_order_id for c in of(out, CancelOrder)] == [o.client_order_id]
    flat = {
        m.instrument_id: (m.side, m.qty, m.order_type, m.strategy_id) for m in of(out, NewOrder)
    }
    assert flat == {0: (Side.SELL, 7, OrderType.MARKET, 0), 1: (Side.BUY, 3, OrderType.MARKET, 0)}
    # a second kill while halted still cancels, records the operator's action, changes nothing
    out = g.on_control(Control(ControlCommand.KILL, 6), 60)
    assert (
        not of(out, TradingStateChanged) and of(out, RiskEvent)[0].kind == RiskEventKind.KILL_SWITCH
    )


def test_stop_loss_and_take_profit_close_the_position_through_exec() -> None:
    g = gate(stop_loss_pct=2.0, take_profit_pct=5.0)
    fill(g, 0, 100)  # long A at $100
    fill(g, 1, -50)  # short B at $100
    resting = g.on_intent(new(iid=0, qty=5, px=9_000), 1)[0]
    assert not price(g, 0, 9_801)  # -1.99 %
    out = price(g, 0, 9_800, now=2)  # -2 %: stop loss
    ev = of(out, RiskEvent)[0]
    assert ev.reason == "stop loss" and ev.instrument_id == 0 and ev.value == pytest.approx(-2.0)
    assert [c.client_order_id for c in of(out, CancelOrder)] == [resting.client_order_id]
    (stop,) = of(out, NewOrder)
    assert (stop.side, stop.qty, stop.order_type, stop.tif, stop.strategy_id) == (
        Side.SELL,
        100,
        OrderType.MARKET,
        TimeInForce.IOC,
        0,
    )
    assert not of(price(g, 0, 9_700, now=3), NewOrder)  # one protective order at a time
    fill(g, 0, -100, px=9_700, coid=stop.client_order_id)
    assert g.position[0] == 0 and stop.client_order_id not in g.open_orders
    # while HALTED nothing leaves but cancels (and an operator's flatten): no stop either
    halted = gate(stop_loss_pct=2.0)
    fill(halted, 0, 100)
    halted.on_control(Control(ControlCommand.KILL, 2))
    assert not of(price(halted, 0, 9_000, now=3), NewOrder)
    # short B: a fall of 5 % is the take profit
    assert not price(g, 1, 9_501)
    out = price(g, 1, 9_500, now=4)
    assert of(out, RiskEvent)[0].reason == "take profit"
    assert [(m.instrument_id, m.side, m.qty) for m in of(out, NewOrder)] == [(1, Side.BUY, 50)]


def test_average_entry_follows_adds_partial_closes_and_flips() -> None:
    g = gate()
    fill(g, 0, 10, px=10_000)
    fill(g, 0, 30, px=12_000)
    assert g.avg_px[0] == pytest.approx(11_500.0)
    fill(g, 0, -20, px=13_000)  # a partial close keeps the entry
    assert g.avg_px[0] == pytest.approx(11_500.0)
    fill(g, 0, -30, px=9_000)  # through zero: the rest is short at 9_000
    assert g.position[0] == -10 and g.avg_px[0] == 9_000.0
    # equity: capital + cash + position at the mark ($100)
    cash = -10 * 100.0 - 30 * 120.0 + 20 * 130.0 + 30 * 90.0
    price(g, 0, 10_000)
    assert g.equity == pytest.approx(1_000_000.0 + cash - 10 * 100.0)


def test_flash_move_halts_the_instrument_until_prices_are_calm() -> None:
    g = gate(flash_band_pct=3.0, flash_window_s=1.0, flash_cooldown_s=5.0)
    step = S // 10  # risk samples prices every few ms; here every 100 ms
    t = 10 * S

    def climb(g: RiskGate) -> None:
        for k in range(10):
            assert not price(g, 0, 10_000 + 30 * k, t + k * step)

    g2 = gate(flash_band_pct=3.0, flash_window_s=1.0, flash_cooldown_s=5.0)
    climb(g2)
    assert not price(g2, 0, 10_300, t + S)  # +3.00 % in 1 s: within the band
    climb(g)
    t += S
    out = price(g, 0, 10_301, t)  # +3.01 % against the sample 1 s before
    (h,) = of(out, InstrumentHalted)
    assert (
        h.instrument_id == 0 and "flash move" in h.reason and (h.ref_px, h.px) == (10_000, 10_301)
    )
    assert "instrument halted: flash move" in g.on_intent(new(iid=0, px=10_301), t + S)[0].reason
    assert isinstance(g.on_intent(new(iid=1), t + S)[0], NewOrder)  # only that instrument
    # prices keep jumping: still halted; then calm for the cool-down once the jump left the window
    t2 = t + 5 * step
    for k in range(2, 6):
        price(g, 0, 10_301, t + k * step)
    price(g, 0, 10_700, t2)
    resumed_at = 0
    for k in range(1, 80):
        now = t2 + k * step
        out = price(g, 0, 10_700, now)
        if of(out, InstrumentResumed):
            resumed_at = now
            break
        assert "instrument halted" in g.on_intent(new(iid=0, px=10_700), now)[0].reason
    assert 5 * S + S // 2 <= resumed_at - t2 <= 5 * S + S + step
    assert isinstance(g.on_intent(new(iid=0, px=10_700), resumed_at)[0], NewOrder)


def test_market_guard_keeps_venue_and_flash_halts_apart() -> None:
    mg = MarketGuard(2, band=0.01, window_ns=S, cooldown_ns=S)
    mg.on_status(ExchangeStatus(0, ExchangeStatusKind.HALTED, "", 0, 0), 0)
    mg.on_prices(np.array([100.0, 100.0]), 1)
    out = mg.on_prices(np.array([110.0, 100.0]), 2)
    assert not out and mg.flash_halted[0]  # already halted by the venue: no second message
    # the venue reopens while prices are still wild: stays halted
    assert not mg.on_status(ExchangeStatus(0, ExchangeStatusKind.OPEN, "", 3, 3), 3)
    assert mg.halted[0]
    out = mg.on_prices(np.array([110.0, 100.0]), 3 * S)
    assert [type(m) for m in out] == [InstrumentResumed]
    assert mg.on_status(ExchangeStatus(7, ExchangeStatusKind.HALTED, "", 0, 0), 0) == []  # unknown
    assert mg.on_status(ExchangeStatus(0, 99, "", 0, 0), 0) == []  # unknown status


def test_trading_state_machine_only_escalates() -> None:
    m = TradingStateMachine()
    assert m.escalate(TradingState.ACTIVE, "x", "y", 1) is None
    assert m.escalate(TradingState.HALTED, "kill", "operator", 2, 20).state == TradingState.HALTED
    assert m.escalate(TradingState.REDUCING, "loss", "daily_loss", 3) is None
    assert m.state == TradingState.HALTED and m.reason == "kill" and m.since_ns == 2
    ch = m.resume("ok", "operator", 4)
    assert (ch.prev_state, ch.state) == (TradingState.HALTED, TradingState.ACTIVE)
    assert m.resume("again", "operator", 5) is None


def test_state_survives_a_restart_of_the_gate(tmp_path: Path) -> None:
    g = gate(daily_loss_halt_pct=2.0)
    fill(g, 0, 10_000)
    price(g, 0, 9_700, now=3)
    assert g.state == TradingState.HALTED
    path = tmp_path / "risk-state.json"
    save_state(path, g.persistent_state())
    snap = load_state(path)
    assert snap["state"] == "HALTED" and snap["source"] == "daily_loss" and snap["since_ns"] == 3
    g2 = gate(daily_loss_halt_pct=2.0)  # a new process
    g2.restore_state(snap)
    assert g2.state == TradingState.HALTED and g2.day_start_equity == 1_000_000.0
    assert "trading halted" in g2.on_intent(new(), 4)[0].reason
    g2.on_control(Control(ControlCommand.RESUME, 5))
    assert isinstance(g2.on_intent(new(), 6)[0], NewOrder)


def test_positions_seeded_after_a_restart_give_the_same_equity() -> None:
    g = gate()
    fill(g, 0, 100, px=10_000)
    fill(g, 0, -40, px=11_000)  # realized $400
    price(g, 0, 10_500)
    g2 = gate()
    g2.seed_positions([(0, 60, 10_000.0, 400.0, 0.0)])
    price(g2, 0, 10_500)
    assert g2.position[0] == 60 and g2.equity == pytest.approx(g.equity)
    assert g2.exposure[0] == pytest.approx(g.exposure[0])


def test_state_file_is_atomic_and_a_corrupt_one_means_halted(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    assert load_state(path) is None
    save_state(path, {"state": "REDUCING", "reason": "r", "source": "s"})
    assert json.loads(path.read_text())["state"] == "REDUCING"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left
    path.write_text('{"state": "ACTIVE", ')  # a torn write by something else
    assert load_state(path)["state"] == "HALTED"
    path.write_text('{"state": "SIDEWAYS"}')
    assert load_state(path)["state"] == "HALTED"
    with pytest.raises(ValueError):
        TradingStateMachine().restore({"state": "SIDEWAYS"})


def test_stop_blocks_new_orders_without_recording_a_halt() -> None:
    g = gate()
    g.on_intent(new(), 1)
    out = g.on_control(Control(ControlCommand.STOP, 2, "shutdown"))
    assert len(of(out, CancelOrder)) == 1 and not of(out, TradingStateChanged)
    assert g.state == TradingState.ACTIVE and g.persistent_state()["state"] == "ACTIVE"
    assert "engine stopping" in g.on_intent(new(), 3)[0].reason


@pytest.mark.parametrize(
    "line, key",
    [
        ("max_position_pct = 150.0", "risk.max_position_pct"),
        ("max_correlation = 0.0", "risk.max_correlation"),
        ('var_method = "monte carlo"', "risk.var_method"),
        ("var_confidence = 1.0", "risk.var_confidence"),
        ("min_history = 2", "risk.min_history"),
        ("daily_loss_reduce_pct = 3.0", "risk.daily_loss_reduce_pct"),
        ("flash_window_s = 0.0", "risk.flash_window_s"),
        ("capital = 0.0", "risk.capital"),
        ("max_orders_per_s = -1", "risk.max_orders_per_s"),
        ("max_var_pct = nan", "risk.max_var_pct"),
    ],
)
def test_config_mistakes_name_the_risk_key(line: str, key: str) -> None:
    from ops.config import ConfigError, parse_config

    text = Path(__file__).resolve().parent.parent.joinpath("config.toml").read_text()
    name = line.split(" = ")[0]
    start = text.index("[risk]")
    at = text.index(f"\n{name} = ", start) + 1
    text = text[:at] + line + text[text.index("\n", at) :]
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "config.toml")
    assert exc.value.key == key, str(exc.value)


def test_a_fill_already_in_the_seeded_positions_only_closes_the_order() -> None:
    g = gate()
    o = g.on_intent(new(qty=5), 1)[0]
    g.seed_positions([(0, 5, 10_000.0, 0.0, 0.0)])  # exec's table already holds the fill
    g.on_exec_event(
        OrderFilled(o.client_order_id, 1, 0, Side.BUY, 10_000, 5, 5, 0, 0.0, 1, 1, 0, 1, 1),
        count_fill=False,
    )
    assert g.position[0] == 5 and g.open_buy[0] == 0 and not g.open_orders


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "fill", "cancel", "replace", "prices"]),
            st.integers(0, 1),
            st.integers(1, 30),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(9_000, 11_000),
        ),
        max_size=60,
    )
)
def test_bookkeeping_stays_exact_whatever_the_sequence(steps) -> None:
    """Open quantities equal the open orders' leaves, positions equal the signed fills, equity
    equals capital + cash + marked positions, and the VaR caches equal a recompute."""
    g = gate(max_position_pct=5.0, max_sector_pct=15.0, max_var_pct=1.0, min_history=20)
    g.set_returns(np.random.default_rng(1).normal(0, 0.01, (60, 2)))
    signed = np.zeros(2, dtype=np.int64)
    for kind, iid, qty, side, px in steps:
        live = [c for c, o in g.open_orders.items() if o.instrument_id == iid]
        if kind == "new":
            g.on_intent(new(iid=iid, qty=qty, side=side, px=px), 1)
        elif kind == "prices":
            price(g, iid, px)
        elif live and kind == "fill":
            o = g.open_orders[live[0]]
            q = min(qty, o.leaves)
            cls = OrderFilled if q == o.leaves else OrderPartiallyFilled
            g.on_exec_event(
                cls(live[0], 1, iid, o.side, px, q, q, o.leaves - q, 0.1, 1, 1, 0, 1, 1)
            )
            signed[iid] += o.side * q
        elif live and kind == "cancel":
            g.on_exec_event(OrderCanceled(live[0], iid, 0, "", 0, 1, 1))
        elif live and kind == "replace":
            out = g.on_intent(IntentReplace(live[0], 1, iid, px, qty, 0, 0), 1)
            if isinstance(out[0], ReplaceOrder):
                g.on_exec_event(OrderReplaced(live[0], iid, px, qty, 0, 1, 1))
    for i in range(2):
        legs = [o for o in g.open_orders.values() if o.instrument_id == i]
        assert g.open_buy[i] == sum(o.leaves for o in legs if o.side == Side.BUY)
        assert g.open_sell[i] == sum(o.leaves for o in legs if o.side == Side.SELL)
    assert (g.position == signed).all()
    g.on_prices(2)
    assert g.equity == pytest.approx(1_000_000.0 + g.cash + float((g.exposure).sum()))
    pnl = g.stats.rt.T @ g.exposure
    assert np.allclose(g.stats.pnl, pnl)
    assert g.stats.hist_var() == pytest.approx(-np.quantile(pnl, 0.01), abs=1e-9)


def test_an_intent_the_gate_cannot_judge_is_refused_not_fatal() -> None:
    from engine.stages.risk import refused

    g = gate()
    with pytest.raises(TypeError, match="not an intent"):
        g.on_intent(Quote(0, 1, 1, 2, 1, 0, 0), 1)  # what the process catches
    it = new()
    ev, rej = refused(it, "risk error: TypeError", g.state, 5)
    assert isinstance(ev, RiskEvent) and ev.kind == RiskEventKind.ORDER_REJECTED
    assert (rej.client_order_id, rej.reason) == (it.client_order_id, "risk: risk error: TypeError")
    assert len(refused(Quote(0, 1, 1, 2, 1, 0, 0), "x", g.state, 5)) == 1  # no strategy to tell
