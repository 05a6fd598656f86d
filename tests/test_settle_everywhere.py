"""A settled position is flat everywhere, a liquidation moves it by its quantity everywhere, and an
account event counts once per (venue, type, venue id) (docs/instruments-and-accounts.md,
"Settled is flat, everywhere").

The backtests are built from a config.toml the way `gekko backtest` builds them (as in
tests/test_backtest_kinds.py): the simulated exchange liquidates a perpetual and resolves a
binary, or settles a back and a lay bet, and the portfolio, risk, exec's order table, the
strategy's context and the run's record (``ops.report.RunRecord`` fed what the rings carried)
all hold 0 afterwards; the strategy heard each event with its position already moved. Then the
pieces one by one: repeats by venue, exec's gate, its journal and reconciliation, the strategy
host's share of a liquidation among strategies and who hears ``on_account_event``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine.account_events import AccountGate, event_key
from engine.enums import SettlementKind
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    FundingPayment,
    Liquidation,
    NewOrder,
    OrderFilled,
    Quote,
    ReconciliationKind,
    Settlement,
)
from engine.oms import OrderTable
from engine.portfolio import Portfolio
from engine.reconcile import reconcile
from engine.strategies.base import Strategy, subscriptions_of
from engine.strategy_host import StrategyHost, StrategySpec
from tests.test_backtest_kinds import _BASE, PERP, Script, _binary, _ns, _selection


class Listener(Script):
    """``Script``'s orders, and every account event it hears with its positions at the time."""

    heard: ClassVar[list[tuple[str, int, dict[int, int]]]] = []

    def on_account_event(self, ev: Any) -> None:
        iid = getattr(ev, "instrument_id", -1)
        Listener.heard.append((type(ev).__name__, iid, dict(self.ctx.positions)))


def _run(tmp_path: Path, instruments: list[dict[str, Any]], quotes: list[tuple], orders: list,
         cash: str, sim: str) -> tuple[Any, dict[str, Any], Any]:  # fmt: skip
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    rows = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    rows += [f"{_ns(t)},{sym},{bid},1000000,{ask},1000000" for t, sym, bid, ask in quotes]
    (tmp_path / "quotes.csv").write_text("\n".join(rows) + "\n")
    tables = []
    for ins in instruments:
        lines = ["[[instruments]]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in ins.items()]
        tables.append("\n".join(lines))
    text = _BASE.format(
        var=tmp_path.as_posix(),
        quotes=(tmp_path / "quotes.csv").as_posix(),
        taker=0.0,
        sim=sim,
        cash=cash,
        instruments="\n".join(tables),
        symbols=str([i["symbol"] for i in instruments]).replace("'", '"'),
        orders=str(orders).replace("'", '"'),
    ).replace("tests.test_backtest_kinds:Script", "tests.test_settle_everywhere:Listener")
    cfg = parse_config(text, tmp_path / "config.toml")
    Listener.heard = []
    bt = build_backtest(cfg)
    s = bt.runtime.run()
    assert not s["strategy_errors"]
    return bt.runtime, s, cfg


def _record(cfg: Any, rt: Any) -> Any:
    """The run's record fed what the orders and events rings carried (fills and account events
    in the order they were published)."""
    from ops.report import RunRecord

    rec = RunRecord(cfg)
    for o in rt.orders_sent:
        rec.on_order(o)
    for ev in sorted([*rt.fill_log, *rt.account_log], key=lambda e: e.ts_event):
        rec.on_event(ev)
    return rec


def _flat_everywhere(rt: Any, s: dict[str, Any], cfg: Any, iids: list[int]) -> None:
    rec = _record(cfg, rt)
    ctx = rt.host.slots[0].ctx
    for iid in iids:
        held = {
            "portfolio": s["positions"][iid],
            "risk": s["risk_positions"][iid],
            "exec": rt.exec.table.position(iid),
            "strategy": ctx.positions[iid],
            "record": rec.portfolio.position(iid),
            "record_fills": rec.fill_position[iid],
        }
        assert held == dict.fromkeys(held, 0), (iid, held)


def test_a_liquidation_and_a_binary_settlement_seen_alike_everywhere(tmp_path: Path) -> None:
    rt, s, cfg = _run(
        tmp_path,
        [PERP, _binary("1")],
        [
            ("2026-05-31T01:00:00", "BTCUSDT-PERP", 49_999.9, 50_000.0),
            ("2026-05-31T01:00:01", "RAIN-YES", 0.39, 0.40),
            ("2026-05-31T01:02:00", "BTCUSDT-PERP", 47_299.9, 47_300.1),
            ("2026-06-01T00:00:01", "RAIN-YES", 0.55, 0.56),
        ],
        [["BTCUSDT-PERP", "buy", 200, 0], ["RAIN-YES", "buy", 100, 0]],
        cash="{ USDT = 1000.0, USD = 1000.0 }",
        sim='account = "margin"',
    )
    assert s["account_events"]["Liquidation"] == 1 and s["account_events"]["Settlement"] == 1
    _flat_everywhere(rt, s, cfg, [1, 4])
    moved = [(n, iid, pos[iid]) for n, iid, pos in Listener.heard if iid >= 0]
    # heard after its context moved: the liquidation closed the 200 lots, the resolution the 100
    assert moved == [("Liquidation", 1, 0), ("Settlement", 4, 0)]
    assert any(n == "MarginStatus" for n, _, _ in Listener.heard)  # the venue's margin call
    # the record's P&L is the portfolio's: resolved 1 pays 1 a share on 100 bought at 0.40
    assert _record(cfg, rt).portfolio.positions[4].realized == pytest.approx(60.0)


def test_a_back_and_a_lay_settled_leave_no_stake_anywhere(tmp_path: Path) -> None:
    rt, s, cfg = _run(
        tmp_path,
        [_selection(5, "Arsenal", "1"), _selection(6, "Chelsea", "0")],
        [
            ("2026-04-01T14:00:00", "Arsenal", 3.0, 3.05),
            ("2026-04-01T14:00:01", "Chelsea", 1.98, 2.0),
            ("2026-04-01T16:00:01", "Arsenal", 3.0, 3.05),
        ],
        [["Arsenal", "buy", 10, 2.9], ["Chelsea", "sell", 10, 2.02]],
        cash="{ GBP = 1000.0 }",
        sim='account = "betting"\ncommission_pct = 5.0',
    )
    assert s["account_events"]["Settlement"] == 2
    _flat_everywhere(rt, s, cfg, [5, 6])
    # P&L unchanged by the flat position: back 10 @ 3.0 won +20, lay 10 @ 2.0 lost +10, 5 %
    assert s["pnl"]["realized"] == pytest.approx(30.0)
    assert s["pnl"]["net"] == pytest.approx(28.5)
    assert [(n, iid, pos[iid]) for n, iid, pos in Listener.heard] == [
        ("Settlement", 5, 0),
        ("Settlement", 6, 0),
    ]


# --- the pieces ----------------------------------------------------------------------------------
A = Instrument(instrument_id=1, symbol="BTC-PERP", venue="a", kind="perpetual",
               funding_interval_s=28800, initial_margin=0.1, maintenance_margin=0.05)  # fmt: skip
B = Instrument(instrument_id=2, symbol="BTC-PERP-B", venue="b", kind="perpetual",
               funding_interval_s=28800, initial_margin=0.1, maintenance_margin=0.05)  # fmt: skip


def _pay(iid: int, pid: int, amount: float = -5.0) -> FundingPayment:
    return FundingPayment(iid, 0.0001, 500, 1, amount, "USD", 1, 1, payment_id=pid)


def test_a_repeat_is_the_same_venue_type_and_id() -> None:
    p = Portfolio(InstrumentTable([A, B]), initial_cash={"USD": 100.0})
    for ev in (_pay(1, 7), _pay(2, 7), _pay(1, 7), _pay(1, 0), _pay(1, 0)):
        p.on_event(ev)
    # id 7 at venue a and id 7 at venue b are two payments; a's again is a repeat; no id: each
    assert p.duplicate_events == 1
    assert p.components["funding"]["USD"] == pytest.approx(-20.0)
    st = Settlement(1, int(SettlementKind.EXPIRY), 500, 0, 0, 1, 1, settlement_id=7)
    assert event_key("a", st) == ("a", "Settlement", 7) != event_key("a", _pay(1, 7))
    assert event_key("a", _pay(1, 0)) is None


def test_exec_drops_a_repeat_and_moves_its_table() -> None:
    gate, table = AccountGate([A, B]), OrderTable()
    table.positions.update({1: 5, 2: -3})
    liq = Liquidation(1, -1, 400, 2, 0.0, 1, 1, liquidation_id=9)  # a SELL of 2
    assert gate.admit(liq, table) and table.positions[1] == 3
    assert not gate.admit(liq, table) and table.positions[1] == 3  # the same again: dropped
    st = Settlement(2, int(SettlementKind.EXPIRY), 500, 0, -3, 1, 1, settlement_id=9)
    assert gate.admit(st, table) and table.positions[2] == 0  # id 9 again, but venue b's
    assert gate.admit(_pay(1, 9), table) and table.positions[1] == 3  # a payment moves none
    gate2 = AccountGate([A, B])
    gate2.remember(liq)  # replayed from exec's journal after a restart
    assert not gate2.admit(liq, table) and gate2.repeats == 1


class _Venue:
    """What reconciliation asks of a venue that settled everything."""

    def __init__(self, positions: dict[int, int]) -> None:
        self._positions = positions

    def open_orders(self) -> list[Any]:
        return []

    def fills_since(self, fill_id: int) -> list[Any]:
        return []

    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    def knows_order(self, coid: int) -> bool:
        return True


def test_the_journal_keeps_account_events_and_reconciliation_counts_them(tmp_path: Path) -> None:
    from procs.exec_journal import ExecJournal, load_exec_journal

    o = NewOrder(1 << 32 | 1, 1, 1, 1, 1, 1, 500, 4, 0, 1)  # buy 4 lots, limit 500, GTC
    fill = OrderFilled(o.client_order_id, 1, 1, 1, 500, 4, 4, 0, 0.0, 0, 11, 0, 2, 2)
    pay = _pay(1, 3)
    st = Settlement(1, int(SettlementKind.EXPIRY), 510, 0, 4, 3, 3, settlement_id=4)
    j = ExecJournal(tmp_path / "x.journal")
    j.append(o, [fill], 0)
    j.append(None, [pay, st], 1)
    j.close()
    loaded = load_exec_journal(tmp_path / "x.journal", 3)
    assert [type(e).__name__ for e in loaded.events] == [
        "OrderFilled",
        "FundingPayment",
        "Settlement",
    ]
    assert OrderTable.rebuild(loaded.orders, loaded.events).position(1) == 0
    res = reconcile(loaded.orders, loaded.events, _Venue({1: 0}), 10)  # type: ignore[arg-type]
    assert not [e for e in res.events if e.kind == ReconciliationKind.POSITION_MISMATCH]
    res = reconcile(loaded.orders, loaded.events, _Venue({1: 4}), 10)  # type: ignore[arg-type]
    (bad,) = [e for e in res.events if e.kind == ReconciliationKind.POSITION_MISMATCH]
    assert (bad.stored, bad.venue) == (0, 4)


class Quiet(Strategy):
    """Overrides nothing: the host never calls the base class's on_account_event."""


class Hears(Strategy):
    heard: ClassVar[list[tuple[int, str]]] = []

    def on_account_event(self, ev: Any) -> None:
        Hears.heard.append((self.ctx.strategy_id, type(ev).__name__))


class QuotesOnly(Hears):
    subscriptions = frozenset({"quote"})

    def on_quote(self, q: Quote) -> None:
        pass


def test_strategies_share_a_liquidation_and_hear_what_they_subscribe_to() -> None:
    host = StrategyHost(
        [
            StrategySpec(strategy=Hears, instruments=[1], strategy_id=1),
            StrategySpec(strategy=Hears, instruments=[1], strategy_id=2),
            StrategySpec(strategy=Quiet, instruments=[1], strategy_id=3),
            StrategySpec(strategy=QuotesOnly, instruments=[1], strategy_id=4),
        ],
        InstrumentTable([A]),
        on_error="raise",
    )
    host.start(0)
    assert "account" not in subscriptions_of(Quiet) and "account" in subscriptions_of(Hears)
    assert "account" not in subscriptions_of(QuotesOnly)
    ctx = {s.strategy_id: s.ctx for s in host.slots}
    ctx[1].positions[1], ctx[2].positions[1], ctx[3].positions[1] = 3, -1, 4
    Hears.heard = []
    host.on_exec_event(Liquidation(1, -1, 400, 5, 0.0, 1, 1, liquidation_id=1), 5)
    # a SELL of 5 closes the longs in strategy-id order: 3 of strategy 1, 2 of strategy 3's 4
    assert {k: c.positions[1] for k, c in ctx.items()} == {1: 0, 2: -1, 3: 2, 4: 0}
    host.on_exec_event(Settlement(1, int(SettlementKind.EXPIRY), 400, 0, 1, 2, 2), 6)
    assert {k: c.positions[1] for k, c in ctx.items()} == dict.fromkeys(ctx, 0)
    host.on_exec_event(_pay(1, 2), 7)
    assert Hears.heard == [
        (sid, n) for n in ("Liquidation", "Settlement", "FundingPayment") for sid in (1, 2)
    ]
    assert host.unrouted == 0


def test_a_restarted_strategy_does_not_apply_a_redelivered_liquidation_twice() -> None:
    host = StrategyHost([StrategySpec(strategy=Hears, instruments=[1], strategy_id=1)],
                        InstrumentTable([A]), on_error="raise")  # fmt: skip
    host.start(0)
    host.seed_positions({1: 3}, as_of_ns=100)  # exec's table: 5 bought, 2 liquidated
    ctx = host.slots[0].ctx
    host.on_exec_event(Liquidation(1, -1, 400, 2, 0.0, 90, 90, liquidation_id=1), 101)
    assert ctx.positions[1] == 3  # delivered again: in the seeded position already
    host.on_exec_event(Liquidation(1, -1, 400, 1, 0.0, 110, 110, liquidation_id=2), 111)
    assert ctx.positions[1] == 2  # a new one moves it
