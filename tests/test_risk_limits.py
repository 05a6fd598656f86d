"""One scenario per pre-trade limit: the order just under the limit passes, just over is rejected,
with the limit's name in the reason and the figures an independent computation gives."""

from __future__ import annotations

import itertools

import msgspec
import numpy as np
import pytest
from scipy import stats as sps

from engine.instruments import Instrument
from engine.messages import (
    ExchangeStatus,
    ExchangeStatusKind,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderFilled,
    OrderFlag,
    OrderRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    RiskEvent,
    Side,
    TimeInForce,
    TradingState,
)
from engine.risk import RiskGate, RiskLimits

# tick 0.01, lot 1: 1 lot at 10_000 ticks is $100.00
INS = [
    Instrument(instrument_id=0, symbol="A", sector="tech"),
    Instrument(instrument_id=1, symbol="B", sector="tech"),
    Instrument(instrument_id=2, symbol="C", sector="tech"),
    Instrument(instrument_id=3, symbol="D", sector="energy"),
]
BASE = RiskLimits.off(
    max_order_notional=1e12, max_position_lots=10**9, max_open_orders=1000, capital=1_000_000.0
)
_ids = itertools.count(1)


def gate(**kw) -> RiskGate:
    g = RiskGate(msgspec.structs.replace(BASE, **kw), INS)
    for i in range(4):  # every mid at $100.00
        g.on_market_data(Quote(i, 9_999, 10, 10_001, 10, 0, 0))
    g.on_prices(1)
    return g


def new(iid=0, qty=1, side=Side.BUY, px=10_000, otype=OrderType.LIMIT, flags=0) -> IntentNew:
    return IntentNew(next(_ids), 1, iid, side, otype, TimeInForce.GTC, px, qty, 0, 0, flags=flags)


def ok(out) -> NewOrder:
    assert len(out) == 1 and isinstance(out[0], NewOrder | ReplaceOrder), out
    return out[0]


def rejected(out, reason: str) -> RiskEvent:
    ev = [m for m in out if isinstance(m, RiskEvent)]
    assert len(ev) == 1 and reason in ev[0].reason, out
    assert any(isinstance(m, OrderRejected) and reason in m.reason for m in out), out
    return ev[0]


def hold(g: RiskGate, iid: int, qty: int, px: int = 10_000) -> None:
    """A filled position (a fill of an order risk did not see: the venue's fill is the truth)."""
    side = Side.BUY if qty > 0 else Side.SELL
    g.on_exec_event(
        OrderFilled(next(_ids), 1, iid, side, px, abs(qty), abs(qty), 0, 0.0, 1, 1, 0, 1, 1)
    )


def test_single_position_5pct_of_equity() -> None:
    ok(gate(max_position_pct=5.0).on_intent(new(qty=500), 1))  # $50,000 = 5 % of $1M
    ev = rejected(gate(max_position_pct=5.0).on_intent(new(qty=501), 1), "position % of equity")
    assert ev.value == pytest.approx(5.01) and ev.limit == 5.0
    # the worst case counts the position and the open orders on the same side
    g = gate(max_position_pct=5.0)
    hold(g, 0, 300)
    ok(g.on_intent(new(qty=150), 1))
    ok(g.on_intent(new(qty=50), 1))
    rejected(g.on_intent(new(qty=1), 1), "position % of equity")
    # reducing is never blocked by it
    ok(g.on_intent(new(qty=300, side=Side.SELL), 1))


def test_equity_follows_the_pnl_of_fills() -> None:
    g = gate(max_position_pct=5.0)
    hold(g, 3, 1_000, px=10_000)  # $100k of D
    g.on_market_data(Quote(3, 4_999, 1, 5_001, 1, 0, 0))  # D halves: equity $950k
    g.on_prices(2)
    assert g.equity == pytest.approx(950_000.0)
    ok(g.on_intent(new(qty=475), 1))  # 5 % of $950k = $47,500
    rejected(gate(max_position_pct=5.0).on_intent(new(qty=501), 1), "position % of equity")
    g2 = gate(max_position_pct=5.0)
    hold(g2, 3, 1_000)
    g2.on_market_data(Quote(3, 4_999, 1, 5_001, 1, 0, 0))
    g2.on_prices(2)
    rejected(g2.on_intent(new(qty=476), 1), "position % of equity")


def test_sector_exposure_15pct_of_equity() -> None:
    def setup() -> RiskGate:
        g = gate(max_position_pct=10.0, max_sector_pct=15.0)
        hold(g, 0, 500)  # tech $50k
        hold(g, 1, -500)  # tech $50k short: gross exposure counts it
        return g

    ok(setup().on_intent(new(iid=2, qty=500), 1))  # tech $150k = 15 %
    ev = rejected(setup().on_intent(new(iid=2, qty=501), 1), "sector exposure (tech)")
    assert ev.value == pytest.approx(15.01) and ev.limit == 15.0
    ok(setup().on_intent(new(iid=3, qty=500), 1))  # energy is another sector


def correlated(rho_b: float, rho_c: float, t: int = 100) -> np.ndarray:
    """Returns with sample correlations exactly corr(A,B) = rho_b, corr(A,C) = rho_c."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(t, 4))
    x -= x.mean(axis=0)
    q, _ = np.linalg.qr(x)  # orthonormal, zero-mean columns
    a, e1, e2, e3 = q.T
    r = np.column_stack(
        [
            a,
            rho_b * a + np.sqrt(1 - rho_b**2) * e1,
            rho_c * a + np.sqrt(1 - rho_c**2) * e2,
            e3,
        ]
    )
    return r * 0.01


def test_correlation_with_a_held_position_above_070_rejected() -> None:
    r = correlated(0.71, 0.69)
    g = gate(max_correlation=0.70, min_history=20)
    g.set_returns(r)
    hold(g, 0, 10)  # long A
    ok(g.on_intent(new(iid=2, qty=10), 1))  # C: 0.69
    ev = rejected(g.on_intent(new(iid=1, qty=10), 1), "correlation with A")  # B: 0.71
    assert ev.value == pytest.approx(np.corrcoef(r, rowvar=False)[0, 1]) and ev.limit == 0.70
    # short B against long A is a hedge (-0.71)
    ok(g.on_intent(new(iid=1, qty=10, side=Side.SELL), 1))


def test_correlation_and_var_wait_for_enough_history() -> None:
    g = gate(max_correlation=0.70, max_var_pct=0.0001, min_history=101)
    g.set_returns(correlated(0.99, 0.99))  # 100 rows < 101
    hold(g, 0, 10)
    ok(g.on_intent(new(iid=1, qty=10), 1))
    assert g.skipped_stats == 1


def test_var_after_the_order_within_its_limit() -> None:
    rng = np.random.default_rng(12)
    r = rng.normal(0, 0.02, (250, 4))

    def setup(method: str, limit_pct: float) -> RiskGate:
        g = gate(max_var_pct=limit_pct, var_method=method, min_history=20)
        g.set_returns(r)
        hold(g, 3, 200)  # $20k of D
        return g

    def var_with(qty: int, method: str) -> float:
        w = np.array([qty * 100.0, 0.0, 0.0, 200 * 100.0])
        pnl = r @ w
        h = -np.quantile(pnl, 0.01)
        p = sps.norm.ppf(0.99) * pnl.std(ddof=1) - pnl.mean()
        return {"historical": h, "parametric": p, "both": max(h, p)}[method]

    for method in ("historical", "parametric", "both"):
        v400, v401 = var_with(400, method), var_with(401, method)
        assert v401 > v400
        limit_pct = (v400 + v401) / 2 / 1_000_000 * 100
        ok(setup(method, limit_pct).on_intent(new(qty=400), 1))
        ev = rejected(setup(method, limit_pct).on_intent(new(qty=401), 1), "VaR")
        assert ev.value == pytest.approx(v401, rel=1e-9)
        assert ev.limit == pytest.approx(limit_pct * 10_000)
    # an order that lowers VaR passes even above the limit
    g = setup("both", 0.0001)
    ok(g.on_intent(new(iid=3, qty=100, side=Side.SELL), 1))


def test_max_order_notional() -> None:
    g = gate(max_order_notional=10_000.0)
    ok(g.on_intent(new(qty=1, px=1_000_000), 1))  # $10,000.00
    rejected(g.on_intent(new(qty=1, px=1_000_001), 1), "max order notional")


def test_max_orders_per_second_sliding_window() -> None:
    g = gate(max_orders_per_s=3)
    t0 = 10**9
    for k in range(3):
        ok(g.on_intent(new(), t0 + k))
    ev = rejected(g.on_intent(new(), t0 + 3), "max orders per second")
    assert (ev.value, ev.limit) == (4, 3)
    rejected(g.on_intent(new(), t0 + 10**9 - 1), "max orders per second")  # 1 ns short of 1 s
    ok(g.on_intent(new(), t0 + 10**9))  # the first has left the window
    rejected(g.on_intent(new(), t0 + 10**9), "max orders per second")
    # replaces count too
    g2 = gate(max_orders_per_s=2)
    o = ok(g2.on_intent(new(), t0))
    ok(g2.on_intent(IntentReplace(o.client_order_id, 1, 0, 10_001, 1, 0, 0), t0 + 1))
    out = g2.on_intent(IntentReplace(o.client_order_id, 1, 0, 10_002, 1, 0, 0), t0 + 2)
    assert "max orders per second" in out[0].reason


def test_max_open_orders() -> None:
    g = gate(max_open_orders=2)
    ok(g.on_intent(new(), 1))
    ok(g.on_intent(new(), 1))
    rejected(g.on_intent(new(), 1), "max open orders")


def test_price_band_versus_mid() -> None:
    g = gate(price_band_pct=5.0)  # mid $100.00
    ok(g.on_intent(new(px=10_500), 1))  # +5.00 %
    ok(g.on_intent(new(px=9_500, side=Side.SELL), 1))
    ev = rejected(g.on_intent(new(px=10_501), 1), "price band")
    assert ev.value == pytest.approx(5.01)
    rejected(g.on_intent(new(px=9_499, side=Side.SELL), 1), "price band")
    ok(g.on_intent(new(px=0, otype=OrderType.MARKET), 1))  # market orders have no price to band
    # a replace to a fat-finger price cancels the order instead
    o = ok(g.on_intent(new(px=10_000), 1))
    out = g.on_intent(IntentReplace(o.client_order_id, 1, 0, 20_000, 1, 0, 0), 2)
    assert "price band" in out[0].reason and type(out[1]).__name__ == "CancelOrder"


def test_reduce_only_when_the_state_is_reducing() -> None:
    g = gate()
    hold(g, 0, 10)
    g.trading.escalate(TradingState.REDUCING, "test", "test", 1)
    ok(g.on_intent(new(qty=4, side=Side.SELL), 1))
    ok(g.on_intent(new(qty=6, side=Side.SELL), 1))  # with the open 4: down to exactly 0
    ev = rejected(
        g.on_intent(new(qty=1, side=Side.SELL), 1), "reduce-only (trading state REDUCING)"
    )
    assert (ev.value, ev.limit) == (-1, 10)
    rejected(g.on_intent(new(qty=1), 1), "reduce-only")
    rejected(g.on_intent(new(iid=1, qty=1), 1), "reduce-only")  # flat: anything would increase
    # the REDUCE_ONLY flag asks the same of one order while ACTIVE
    g2 = gate()
    hold(g2, 0, -5)
    ok(g2.on_intent(new(qty=5, flags=OrderFlag.REDUCE_ONLY), 1))
    rejected(g2.on_intent(new(qty=1, flags=OrderFlag.REDUCE_ONLY), 1), "reduce-only order")
    ok(g2.on_intent(new(qty=1), 1))


def test_instrument_halted_by_the_venue() -> None:
    g = gate()
    out = g.on_status(ExchangeStatus(1, ExchangeStatusKind.HALTED, "news pending", 5, 5), 5)
    assert [type(m).__name__ for m in out] == ["InstrumentHalted"] and out[0].instrument_id == 1
    rejected(g.on_intent(new(iid=1), 6), "instrument halted: venue halted: news pending")
    ok(g.on_intent(new(iid=0), 6))  # only that instrument
    out = g.on_status(ExchangeStatus(1, ExchangeStatusKind.OPEN, "", 7, 7), 7)
    assert [type(m).__name__ for m in out] == ["InstrumentResumed"]
    ok(g.on_intent(new(iid=1), 8))
    # the whole venue (-1): every instrument
    g.on_status(ExchangeStatus(-1, ExchangeStatusKind.CIRCUIT_BREAKER, "level 1", 9, 9), 9)
    for i in range(4):
        rejected(g.on_intent(new(iid=i), 10), "venue circuit breaker")
