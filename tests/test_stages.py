"""engine.stages: the routing decisions both runtimes share (strategy, risk, exec + portfolio)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    IntentNew,
    Liquidity,
    NewOrder,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    RiskEvent,
    RiskEventKind,
    Side,
    TimeInForce,
    TradingStateChanged,
)
from engine.portfolio import Portfolio
from engine.stages.exec import ExecStage
from engine.stages.risk import RiskStage
from engine.stages.strategy import StrategyStage
from engine.strategies.base import Strategy
from engine.strategy_host import StrategyHost

INS = InstrumentTable([Instrument(instrument_id=1, symbol="AAA")])


class Box:
    """An outbox that keeps what is published, by ring."""

    def __init__(self) -> None:
        self.out: list[tuple[str, Any]] = []

    def publish(self, ring: str, msg: Any) -> None:
        self.out.append((ring, msg))

    def publish_batch(self, ring: str, msgs: Any) -> None:
        for m in msgs:
            self.publish(ring, m)


class Namer(Strategy):
    """Sells on each quote, naming the lot (7, 1) for the order."""

    def __init__(self, ctx: Any, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.designated_lots: dict[int, list[tuple[int, int]]] = {}

    def on_quote(self, q: Quote) -> None:
        coid = self.ctx.sell(1, 1, q.bid_px)
        if coid is not None:
            self.designated_lots[coid] = [(7, 1)]
        self.ctx.buy(1, 1, q.bid_px - 5)  # names nothing


def test_strategy_stage_puts_the_named_lots_on_the_intent() -> None:
    box = Box()
    stage = StrategyStage(StrategyHost([Namer], INS), box)
    assert stage.on_md(Quote(1, 100, 5, 102, 5, 1, 1), 1) == 2
    (r1, sell), (r2, buy) = box.out
    assert r1 == r2 == "intents" and isinstance(sell, IntentNew)
    assert sell.lots == [(7, 1)] and buy.lots == []


def test_strategy_stage_hands_risk_refusals_to_the_strategy_and_ignores_the_rest() -> None:
    host = StrategyHost([Namer], INS)
    stage = StrategyStage(host, Box())
    stage.on_md(Quote(1, 100, 5, 102, 5, 1, 1), 1)
    coid = next(iter(host.open_orders()))
    stage.on_risk(RiskEvent(int(RiskEventKind.ORDER_REJECTED), 1, coid, "x", 0, 0, 2, 1), 2)
    assert coid in host.open_orders()  # a risk record is not a refusal
    stage.on_risk(OrderRejected(coid, 1, "risk: no", 1, 2, 2), 2)
    assert coid not in host.open_orders()


class FakeExec:
    def __init__(self) -> None:
        self.fills: list[Any] = []

    def on_order(self, o: Any, now: int) -> list[Any]:
        side = o.side
        return [
            OrderFilled(
                o.client_order_id, 1, 1, side, o.px, o.qty, o.qty, 0, 0.0,
                Liquidity.TAKER, 1, o.ts_origin, now, now,
            )
        ]  # fmt: skip


def order(coid: int, side: int, px: int, lots: list[tuple[int, int]] | None = None) -> NewOrder:
    return NewOrder(
        coid, 1, 1, side, int(OrderType.LIMIT), int(TimeInForce.IOC), px, 10, 0, 0,
        lots=lots or [],
    )  # fmt: skip


def test_exec_stage_designates_the_lots_the_order_carries() -> None:
    def realized(lots: list[tuple[int, int]] | None) -> tuple[float, float]:
        pf = Portfolio(INS)
        box = Box()
        stage = ExecStage(FakeExec(), pf, box)  # type: ignore[arg-type]
        stage.on_order(order(1, Side.BUY, 100), 1)  # lot (1, 1) at 100
        stage.on_order(order(2, Side.BUY, 90), 2)  # lot (2, 1) at 90
        stage.on_order(order(3, Side.SELL, 110, lots), 3)
        assert [r for r, _ in box.out] == ["events"] * 3
        return pf.positions[1].realized, pf.positions[1].multiplier

    (fifo, mult), (named, _) = realized(None), realized([(2, 1)])
    assert named - fifo == pytest.approx((100 - 90) * 10 * mult)  # closed the lot bought at 90


class FakeGate:
    state = 1

    def __init__(self, out: list[Any]) -> None:
        self.out = out

    def on_intent(self, it: Any, now: int) -> list[Any]:
        if it is None:
            raise TypeError("not an intent")
        return self.out


def test_risk_stage_routes_orders_to_exec_and_the_rest_on_risk() -> None:
    cancel = CancelOrder(1, 1, 1, 0, 0)
    rej = OrderRejected(2, 1, "risk: no", 0, 0, 0)
    changed = TradingStateChanged(2, 1, "kill", "operator", 0, 0)
    box = Box()
    RiskStage(FakeGate([cancel, rej, changed]), box).on_intent(object(), 5)
    assert box.out == [("orders", cancel), ("risk", rej), ("risk", changed)]
    box.out.clear()
    RiskStage(FakeGate([]), box, contain_errors=True).on_intent(None, 5)
    assert [r for r, _ in box.out] == ["risk"]  # a RiskEvent; no strategy intent to refuse


class Opener(Strategy):
    """Places one bid in ``on_start``, before any market data."""

    def on_start(self) -> None:
        self.ctx.buy(1, 1, 90)


def test_the_backtest_sends_what_a_strategy_places_in_on_start_as_a_process_does() -> None:
    from engine.backtest import run_backtest
    from tests.test_backtest import INS as BT_INS
    from tests.test_backtest import LIMITS, FakeVenue

    s = run_backtest(BT_INS, [Opener], LIMITS, FakeVenue(), [Quote(1, 100, 5, 102, 5, 1000, 0)])
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert [(o.side, o.px, o.qty) for o in news] == [(Side.BUY, 90, 1)]
