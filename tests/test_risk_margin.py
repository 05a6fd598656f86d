"""Risk on accounts: margin usage and leverage limits, margin calls (risk's own and a venue's)
to REDUCING, liquidations, funding, betting liability and binary exposure per market, with
hand-computed figures."""

from __future__ import annotations

from typing import Any

import pytest

from engine.enums import SettlementKind
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    FundingPayment,
    IntentNew,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderType,
    Quote,
    RiskEvent,
    RiskEventKind,
    Settlement,
    Side,
    TimeInForce,
    TradingState,
    TradingStateChanged,
)
from engine.risk import RiskGate, RiskLimits
from engine.stages.risk import RiskStage
from ops.config import ConfigError, parse_config

# BTC-PERP: tick 0.1, lot 0.001 BTC: money = ticks x lots / 10_000; 60_000 USDT = 600_000 ticks
PERP = Instrument(
    instrument_id=1,
    symbol="BTC-PERP",
    kind="perpetual",
    tick_size=0.1,
    lot_size=0.001,
    currency="USDT",
    initial_margin=0.05,
    maintenance_margin=0.025,
    funding_interval_s=28_800,
)
HOME = Instrument(
    instrument_id=2, symbol="HOME", kind="betting", market_id="1.1", outcome="Home", currency="GBP"
)
AWAY = Instrument(
    instrument_id=3, symbol="AWAY", kind="betting", market_id="1.1", outcome="Away", currency="GBP"
)
# a binary outcome token listed alone: its market may resolve either way
YES = Instrument(instrument_id=4, symbol="YES", kind="binary", market_id="m", outcome="Yes")
SPOT = Instrument(instrument_id=5, symbol="SPOT")
ALL = [PERP, HOME, AWAY, YES, SPOT]
_n = 0


def gate(**kw: Any) -> RiskGate:
    base: dict[str, Any] = dict(
        capital=10_000.0, max_position_lots=10**9, max_order_notional=1e12, max_open_orders=100
    )
    return RiskGate(RiskLimits.off(**(base | kw)), ALL)


def intent(iid: int, side: int, qty: int, px: int) -> IntentNew:
    global _n
    _n += 1
    return IntentNew(
        (1 << 32) | _n, 1, iid, side, int(OrderType.LIMIT), int(TimeInForce.GTC), px, qty, 5, 6
    )


def price(g: RiskGate, iid: int, bid: int, ask: int) -> list[Any]:
    g.on_market_data(Quote(iid, bid, 1, ask, 1, 1, 1))
    return g.on_prices(10)


def refusal(out: list[Any]) -> RiskEvent:
    ev = out[0]
    assert isinstance(ev, RiskEvent) and ev.kind == RiskEventKind.ORDER_REJECTED, out
    return ev


def test_margin_usage_and_leverage_are_limited() -> None:
    g = gate(max_margin_pct=50.0, max_leverage=3.0)
    price(g, 1, 599_990, 600_010)  # mark 60_000
    # 0.5 BTC: 30_000 notional, 1_500 initial margin (15 %), leverage 3.0: at both edges
    assert isinstance(g.on_intent(intent(1, Side.BUY, 500, 600_000), 20)[0], NewOrder)
    ev = refusal(g.on_intent(intent(1, Side.BUY, 100, 600_000), 21))  # open orders count
    assert ev.reason == "leverage" and ev.value == pytest.approx(3.6) and ev.limit == 3.0
    g2 = gate(max_margin_pct=10.0)
    price(g2, 1, 599_990, 600_010)
    g2.on_fill(1, Side.BUY, 300, 600_000, 0.0)  # 900 of margin in use
    ev = refusal(g2.on_intent(intent(1, Side.BUY, 100, 600_000), 20))
    assert ev.reason == "margin usage" and ev.value == pytest.approx(12.0)  # 1_200 / 10_000
    # reducing the position needs no margin
    assert isinstance(g2.on_intent(intent(1, Side.SELL, 300, 600_000), 21)[0], NewOrder)


def test_a_margin_call_moves_to_reducing_once() -> None:
    g = gate()
    price(g, 1, 599_990, 600_010)
    g.on_fill(1, Side.BUY, 1_000, 600_000, 0.0)  # 1 BTC, 60_000 notional on 10_000 equity
    resting = g.on_intent(intent(1, Side.BUY, 10, 590_000), 11)[0]
    assert isinstance(resting, NewOrder)
    assert not [o for o in price(g, 1, 559_990, 560_010) if isinstance(o, RiskEvent)]
    # 51_000: equity 10_000 - 9_000 = 1_000 < maintenance 51_000 x 0.025 = 1_275
    out = price(g, 1, 509_990, 510_010)
    calls = [o for o in out if isinstance(o, RiskEvent) and o.kind == RiskEventKind.MARGIN_CALL]
    assert len(calls) == 1
    assert calls[0].value == pytest.approx(1_000.0) and calls[0].limit == pytest.approx(1_275.0)
    assert any(isinstance(o, TradingStateChanged) for o in out)
    assert [o.client_order_id for o in out if isinstance(o, CancelOrder)] == [
        resting.client_order_id
    ]
    assert g.state == TradingState.REDUCING
    assert "REDUCING" in refusal(g.on_intent(intent(1, Side.BUY, 1, 510_000), 12)).reason
    assert isinstance(g.on_intent(intent(1, Side.SELL, 500, 510_000), 13)[0], NewOrder)
    assert not [o for o in price(g, 1, 509_980, 510_000) if isinstance(o, RiskEvent)]
    # an operator's resume while still below maintenance: called again at the next refresh
    g.on_control(Control(int(ControlCommand.RESUME), 50))
    assert g.state == TradingState.ACTIVE
    again = [o for o in price(g, 1, 509_990, 510_010) if isinstance(o, RiskEvent)]
    assert [e.kind for e in again] == [RiskEventKind.MARGIN_CALL]
    assert g.state == TradingState.REDUCING


def test_a_venue_margin_call_and_a_liquidation_reach_risk_through_its_stage() -> None:
    g = gate()
    price(g, 1, 599_990, 600_010)
    g.on_fill(1, Side.BUY, 1_000, 600_000, 0.0)
    sent: list[tuple[str, Any]] = []

    class Box:
        def publish(self, ring: str, msg: Any) -> None:
            sent.append((ring, msg))

        def publish_batch(self, ring: str, msgs: Any) -> None:
            sent.extend((ring, m) for m in msgs)

    stage = RiskStage(g, Box())
    stage.on_event(FundingPayment(1, 0.0001, 600_000, 1_000, -6.0, "USDT", 1, 2), 20)
    assert g.equity == pytest.approx(10_000.0 - 6.0)
    stage.on_event(MarginStatus("sim", "USDT", 900.0, 3_000.0, 1_500.0, 30, True), 30)
    kinds = [m.kind for r, m in sent if isinstance(m, RiskEvent)]
    assert kinds == [RiskEventKind.MARGIN_CALL] and {r for r, _ in sent} == {"risk"}
    assert g.state == TradingState.REDUCING
    stage.on_event(MarginStatus("sim", "USDT", 800.0, 3_000.0, 1_500.0, 31, True), 31)
    assert len(sent) == 2  # the event and the state change: once per episode
    # the venue closes the long at 51_000 with a 5 USDT fee: a fill no order of ours made
    stage.on_event(Liquidation(1, Side.SELL, 510_000, 1_000, 5.0, 40, 41), 40)
    liq = [m for _, m in sent if isinstance(m, RiskEvent)][-1]
    assert liq.kind == RiskEventKind.LIQUIDATION and liq.value == 1_000
    assert int(g.position[1]) == 0
    g.refresh_exposure()
    assert g.equity == pytest.approx(10_000.0 - 6.0 - 9_000.0 - 5.0)


def test_betting_liability_per_market_counts_open_orders() -> None:
    g = gate(max_market_liability=50.0)
    # back 40 on Home at 3.0: liability 40 (Away wins); a bet moves no cash
    assert isinstance(g.on_intent(intent(2, Side.BUY, 40, 300), 1)[0], NewOrder)
    ev = refusal(g.on_intent(intent(2, Side.BUY, 20, 300), 2))  # 60 with the open back
    assert ev.reason == "market liability" and ev.value == pytest.approx(60.0)
    g.on_fill(2, Side.BUY, 40, 300, 0.0)
    g.open_orders.clear()
    g.open_buy[:] = 0
    assert g.equity == 10_000.0
    # a lay of Away at 2.0 for 45: liability 45 x 1 = 45 if Away wins, covered by Home's loss?
    # outcomes: Home wins +80 + 45 = 125; Away wins -40 - 45 = -85 > 50: refused
    ev = refusal(g.on_intent(intent(3, Side.SELL, 45, 200), 3))
    assert ev.value == pytest.approx(85.0)
    # a lay of Home at 2.0 for 40 greens down the risk: allowed whatever the limit
    assert isinstance(g.on_intent(intent(2, Side.SELL, 40, 200), 4)[0], NewOrder)
    g.on_fill(2, Side.SELL, 40, 200, 0.0)
    # Home wins: +80 - 40 = +40; loses: -40 + 40 = 0; settled won, 5 % commission of 40
    g.on_account_event(Settlement(2, int(SettlementKind.RESOLVED), 0, 1, 0, 9, 9, fee=2.0), 9)
    assert g.equity == pytest.approx(10_000.0 + 40.0 - 2.0)
    assert int(g.position[2]) == 0 and g.acct.win[2] == 0.0


def test_binary_exposure_per_market_and_resolution() -> None:
    g = gate(max_binary_exposure=50.0)
    price(g, 4, 39, 41)
    # 100 shares at 0.40: 40 lost if it resolves 0
    assert isinstance(g.on_intent(intent(4, Side.BUY, 100, 40), 1)[0], NewOrder)
    g.on_fill(4, Side.BUY, 100, 40, 0.0)
    g.open_orders.clear()
    g.open_buy[:] = 0
    ev = refusal(g.on_intent(intent(4, Side.BUY, 50, 40), 2))
    assert ev.reason == "binary market exposure" and ev.value == pytest.approx(60.0)
    g2 = gate(max_binary_exposure=50.0)
    ev = refusal(g2.on_intent(intent(4, Side.SELL, 100, 40), 1))  # short: 60 lost on 1
    assert ev.value == pytest.approx(60.0)
    # resolved 1: each share pays 1.00 (100 ticks): +60 on the 100 bought at 0.40
    g.on_account_event(Settlement(4, int(SettlementKind.RESOLVED), 100, 1, 100, 5, 5), 5)
    assert int(g.position[4]) == 0
    assert g.cash == pytest.approx(60.0)


def test_a_binary_resolved_1_without_its_payout_pays_1_a_share() -> None:
    g = gate()
    g.on_fill(4, Side.BUY, 100, 40, 0.0)
    g.on_account_event(Settlement(4, int(SettlementKind.RESOLVED), 0, 1, 100, 5, 5), 5)
    assert int(g.position[4]) == 0 and g.cash == pytest.approx(60.0)


def test_a_voided_binary_is_unwound_at_its_cost() -> None:
    g = gate()
    g.on_fill(4, Side.BUY, 100, 40, 0.5)
    g.on_account_event(Settlement(4, int(SettlementKind.VOID), 0, -1, 100, 5, 5), 5)
    assert int(g.position[4]) == 0 and g.cash == pytest.approx(-0.5)  # the fee stays charged


def test_a_spot_only_gate_has_no_account_work() -> None:
    g = RiskGate(RiskLimits.off(), [SPOT])
    assert not g.acct.any_margined and not g.acct.market and not g.acct.betting


def test_the_account_limits_are_config_keys() -> None:
    base = '[engine]\nid = "r"\n[[instruments]]\ninstrument_id = 1\nsymbol = "X"\n'
    cfg = parse_config(base.replace("[[", "[risk]\nmax_leverage = 5.0\n[["), "r.toml")
    assert cfg.risk.max_leverage == 5.0 and cfg.risk.max_margin_pct == 100.0
    with pytest.raises(ConfigError) as err:
        parse_config(base.replace("[[", "[risk]\nmax_market_liability = -1\n[["), "r.toml")
    assert err.value.key == "risk.max_market_liability"
    with pytest.raises(ConfigError) as err:
        parse_config(base.replace("[[", "[risk]\nmax_margin_pct = 120\n[["), "r.toml")
    assert err.value.key == "risk.max_margin_pct"


def test_a_restarted_gate_rebuilds_a_selections_liability_from_the_positions_table() -> None:
    g = gate(max_market_liability=50.0)
    # exec's table: HOME backed for 40 at 3.0 (average odds in ticks), fees 0.1
    g.seed_positions([(2, 40, 300.0, 0.0, 0.1)])
    assert (g.acct.win[2], g.acct.lose[2]) == (pytest.approx(80.0), pytest.approx(-40.0))
    assert g.equity == pytest.approx(10_000.0 - 0.1)  # a bet is no holding worth stake x odds
    ev = refusal(g.on_intent(intent(2, Side.BUY, 20, 300), 2))
    assert ev.value == pytest.approx(60.0)


def test_a_backtest_liquidation_reaches_risk(tmp_path) -> None:
    """Through the inline runtime: the simulated venue's margin call and liquidation (its
    account events) are risk's MARGIN_CALL and LIQUIDATION, REDUCING, and a flat position."""
    from tests.test_backtest_kinds import PERP as PERP_TABLE
    from tests.test_backtest_kinds import _backtest

    rt, s = _backtest(
        tmp_path,
        [PERP_TABLE],
        [
            ("2026-01-05T01:00:00", "BTCUSDT-PERP", 49_999.9, 50_000.0),
            ("2026-01-05T01:01:00", "BTCUSDT-PERP", 47_399.9, 47_400.1),
            ("2026-01-05T01:02:00", "BTCUSDT-PERP", 47_299.9, 47_300.1),
        ],
        [["BTCUSDT-PERP", "buy", 200, 0]],
        cash="{ USDT = 1000.0 }",
        sim='account = "margin"',
        taker=4.0,
    )
    kinds = [e.kind for e in rt.risk_events]
    assert RiskEventKind.MARGIN_CALL in kinds and RiskEventKind.LIQUIDATION in kinds
    assert kinds.index(RiskEventKind.MARGIN_CALL) < kinds.index(RiskEventKind.LIQUIDATION)
    assert s["risk_positions"][1] == 0 == s["positions"][1]
    assert rt.risk.state == TradingState.REDUCING
