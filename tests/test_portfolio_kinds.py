"""Portfolio over every instrument kind and account: hand-computed funding, liquidation, FX
rollover (Wednesday x3), binary resolved 1 / 0 / voided, back and lay bets settled with
commission on net winnings, a green-up, a future's expiry, hedged long + short; and the cost
view == cash view property for any mix of fills, marks and account events."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.accounts import Account, financing_amount, funding_amount, rollover_days
from engine.betting import commission, green_up_stake
from engine.enums import OrderFlag, SettlementKind
from engine.instruments import Instrument
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderFilled,
    Settlement,
    Side,
)
from engine.portfolio import Portfolio

PERP = Instrument(
    instrument_id=1,
    symbol="BTCUSDT-PERP",
    venue="perp",
    kind="perpetual",
    tick_size=0.1,
    lot_size=0.001,
    currency="USDT",
    initial_margin=0.1,
    maintenance_margin=0.05,
    funding_interval_s=28_800,
)
ES = Instrument(
    instrument_id=2,
    symbol="ESZ6",
    venue="perp",
    kind="future",
    tick_size=0.25,
    contract_size=50,
    initial_margin=0.05,
    maintenance_margin=0.04,
    expiry_ns=1,
    currency="USD",
)
EURUSD = Instrument(
    instrument_id=3,
    symbol="EUR_USD",
    venue="oanda",
    kind="fx",
    tick_size=0.00001,
    base_currency="EUR",
    pip_size=0.0001,
    initial_margin=0.0333,
    maintenance_margin=0.0333,
    financing_long_rate=-0.02,
    financing_short_rate=0.01,
    currency="USD",
)
YES = Instrument(
    instrument_id=4, symbol="YES", venue="pm", kind="binary", tick_size=0.001, market_id="m1",
    currency="USDC",
)  # fmt: skip
HORSE_A = Instrument(
    instrument_id=5, symbol="A", venue="bf", kind="betting", market_id="1.1", currency="GBP"
)
HORSE_B = Instrument(
    instrument_id=6, symbol="B", venue="bf", kind="betting", market_id="1.1", currency="GBP"
)
HEDGED = Instrument(
    instrument_id=7,
    symbol="ETHUSDT-PERP",
    venue="hedge",
    kind="perpetual",
    tick_size=0.01,
    lot_size=0.01,
    currency="USDT",
    initial_margin=0.1,
    maintenance_margin=0.05,
    funding_interval_s=28_800,
)
ACCOUNTS = {
    "perp": Account(kind="margin"),
    "oanda": Account(kind="margin"),
    "pm": Account(kind="cash"),
    "bf": Account(kind="betting", commission=0.05),
    "hedge": Account(kind="margin", position_mode="hedging"),
}
ALL = [PERP, ES, EURUSD, YES, HORSE_A, HORSE_B, HEDGED]

_ids = iter(range(1, 10**9))


def fill(iid, side, px, qty, fee=0.0, coid=(1 << 32) | 1):
    return OrderFilled(coid, 1, iid, side, px, qty, qty, 0, fee, 1, next(_ids), 0, 0, 0)


def pf(cash=None, **kw):
    return Portfolio(ALL, initial_cash=cash or {"USD": 0.0}, accounts=ACCOUNTS, **kw)


def check_views(p: Portfolio) -> None:
    """The invariant: every P&L component summed == the change in equity; strategies sum up."""
    assert p.net_pnl() == pytest.approx(p.equity() - p.initial_cash, abs=1e-6)
    assert sum(v["net"] for v in p.strategy_pnl().values()) == pytest.approx(p.net_pnl(), abs=1e-6)


def test_funding_payment_on_a_perpetual():
    p = pf({"USDT": 10_000.0})
    p.on_event(fill(1, Side.BUY, 500_000, 1000))  # 1 BTC at 50,000.0
    assert p.cash_by_currency["USDT"] == 10_000.0  # margined: the notional does not move cash
    assert p.summary()["margin"]["initial_margin"] == pytest.approx(5_000.0)
    amount = funding_amount(PERP, 1000, 500_000, 0.0001)
    assert amount == pytest.approx(-5.0)  # the long pays 1 bp of 50,000
    ev = FundingPayment(1, 0.0001, 500_000, 1000, amount, "USDT", 1, 1, payment_id=77)
    p.on_event(ev)
    p.on_event(ev)  # the same payment again: applied once
    assert p.duplicate_events == 1
    assert p.cash_by_currency["USDT"] == pytest.approx(9_995.0)
    assert p.funding() == pytest.approx(-5.0) and p.positions[1].funding == pytest.approx(-5.0)
    assert p.equity() == pytest.approx(9_995.0) and p.net_pnl() == pytest.approx(-5.0)
    assert p.strategy_pnl()[1]["funding"] == pytest.approx(-5.0)
    comp = p.pnl_components()["funding"]
    assert comp == {"by_currency": {"USDT": pytest.approx(-5.0)}, "total": pytest.approx(-5.0)}
    check_views(p)


def test_liquidation_price_then_liquidation():
    p = pf({"USDT": 10_000.0})
    p.on_event(fill(1, Side.BUY, 500_000, 1000))
    p.mark(1, 500_000)
    # 10,000 + (m - 50,000) = 5 % of m  ->  m = 42,105.26
    assert p.liquidation_price(1) * 0.1 == pytest.approx(40_000 / 0.95)
    p.mark(1, 430_000)  # 43,000: equity 3,000 > maintenance 2,150
    m = p.margin("perp")
    assert m.equity == pytest.approx(3_000.0) and m.maintenance == pytest.approx(2_150.0)
    assert not m.margin_call and m.leverage == pytest.approx(43_000 / 3_000)
    p.mark(1, 421_000)  # 42,100: equity 2,100 < maintenance 2,105
    assert p.margin().margin_call
    # the USDT account alone says the same; a USD deposit elsewhere would not back it
    assert p.margin(currency="USDT").equity == pytest.approx(2_100.0)
    p.cash_by_currency["USD"] += 1_000_000.0
    assert p.margin(currency="USDT").margin_call and not p.margin().margin_call
    p.cash_by_currency["USD"] -= 1_000_000.0
    p.on_event(Liquidation(1, Side.SELL, 421_000, 1000, 10.0, 5, 5, liquidation_id=3))
    pos = p.positions[1]
    assert pos.position == 0 and pos.liquidations == 1
    assert p.realized() == pytest.approx(-7_900.0) and p.fees() == pytest.approx(10.0)
    assert p.cash_by_currency["USDT"] == pytest.approx(10_000 - 7_900 - 10)
    assert p.strategy_pnl()[1]["realized"] == pytest.approx(-7_900.0)  # the holder's loss
    assert not p.margin().margin_call and p.liquidation_price(1) == 0.0
    check_views(p)


def test_fx_position_over_rollovers_in_the_account_currency():
    # a EUR account trading EUR/USD (P&L in USD, 1 USD = 0.9 EUR)
    p = pf({"EUR": 10_000.0}, base_currency="EUR", fx_rates={"USD": 0.9})
    p.on_event(fill(3, Side.BUY, 110_000, 10_000))  # long 10,000 EUR at 1.10000
    tue = int(dt.datetime(2026, 12, 8, 22, tzinfo=dt.UTC).timestamp()) * 10**9  # 17:00 NY
    wed = tue + 86_400 * 10**9
    assert (rollover_days(tue), rollover_days(wed)) == (1, 3)
    one_day = 10_000 * 1.1 * 0.02 / 365  # 0.60274 USD paid a day
    for k, ts in enumerate((tue, wed), 1):
        days = rollover_days(ts)
        amt = financing_amount(EURUSD, 10_000, 110_000, days)
        p.on_event(Financing(3, 10_000, amt, "USD", days, ts, ts, payment_id=k))
    assert p.financing() == pytest.approx(-4 * one_day * 0.9)  # in EUR
    assert p.components["financing"]["USD"] == pytest.approx(-4 * one_day)
    p.on_event(fill(3, Side.SELL, 110_100, 10_000))  # out 10 pips up: +10 USD
    comp = p.pnl_components()
    assert comp["realized"]["by_currency"] == {"USD": pytest.approx(10.0)}
    assert comp["realized"]["total"] == pytest.approx(9.0)
    assert p.net_pnl() == pytest.approx((10.0 - 4 * one_day) * 0.9)
    assert p.cash_by_currency["USD"] == pytest.approx(10.0 - 4 * one_day)
    check_views(p)


@pytest.mark.parametrize(
    ("outcome", "kind", "px", "realized", "cash"),
    [
        (1, SettlementKind.RESOLVED, 1000, 60.0, 1_059.9),  # pays 1 a share
        (0, SettlementKind.RESOLVED, 0, -40.0, 959.9),  # pays nothing
        (1, SettlementKind.RESOLVED, 500, 10.0, 1_009.9),  # a 50/50 resolution at 0.5
        (-1, SettlementKind.VOID, 0, 0.0, 999.9),  # unwound at cost; the fee stays
    ],
)
def test_binary_contract_resolved_and_voided(outcome, kind, px, realized, cash):
    p = pf({"USDC": 1_000.0})
    p.on_event(fill(4, Side.BUY, 400, 100, fee=0.1))  # 100 YES at 0.400
    assert p.cash_by_currency["USDC"] == pytest.approx(959.9)
    p.mark(4, 450)
    p.on_event(Settlement(4, kind, px, outcome, 100, 9, 9, settlement_id=1))
    assert p.position(4) == 0 and p.lots(4) == []
    assert p.realized() == pytest.approx(realized)
    assert p.cash_by_currency["USDC"] == pytest.approx(cash)
    assert p.unrealized() == 0.0 and p.net_pnl() == pytest.approx(realized - 0.1)
    check_views(p)


def test_back_and_lay_bets_settled_with_commission_on_net_winnings():
    p = pf({"GBP": 100.0})
    p.on_event(fill(5, Side.BUY, 300, 10))  # back A 10 at 3.0
    p.on_event(fill(6, Side.SELL, 250, 10))  # lay B 10 at 2.5 (liability 15)
    assert p.cash_by_currency["GBP"] == 100.0  # nothing moves until settlement
    assert p.exposure("1.1") == pytest.approx(25.0)  # B wins: -10 - 15; A wins: +20 + 10
    # B loses first: the lay wins 10; the market is still open, no commission yet
    p.on_event(Settlement(6, SettlementKind.RESOLVED, 0, 0, 10, 1, 1, settlement_id=6))
    assert p.commission() == 0.0 and p.realized() == pytest.approx(10.0)
    # A wins: +20, net market winnings 30: the venue charges 5 % of 30 on the market's last
    fee = commission(10.0 + 20.0, 0.05)
    p.on_event(Settlement(5, SettlementKind.RESOLVED, 0, 1, 10, 1, 1, settlement_id=5, fee=fee))
    assert p.realized() == pytest.approx(30.0) and p.commission() == pytest.approx(1.5)
    assert p.cash_by_currency["GBP"] == pytest.approx(128.5)
    assert p.net_pnl() == pytest.approx(28.5) and p.exposures() == {}
    check_views(p)


def test_bets_that_net_nothing_pay_no_commission():
    p = pf({"GBP": 100.0})
    p.on_event(fill(5, Side.BUY, 300, 10))  # back A 10 at 3.0
    p.on_event(fill(6, Side.SELL, 250, 10))  # lay B 10 at 2.5
    # A loses (-10), B loses (+10): net market winnings 0, so no commission on B's +10
    p.on_event(Settlement(6, SettlementKind.RESOLVED, 0, 0, 10, 1, 1))
    fee = commission(-10.0 + 10.0, 0.05)
    p.on_event(Settlement(5, SettlementKind.RESOLVED, 0, 0, 10, 1, 1, fee=fee))
    assert p.commission() == 0.0 and p.realized() == pytest.approx(0.0)
    assert p.cash_by_currency["GBP"] == pytest.approx(100.0)
    check_views(p)


def test_commission_is_shared_by_the_strategies_that_won():
    p = pf({"GBP": 100.0})
    p.on_event(fill(5, Side.BUY, 300, 10, coid=(1 << 32) | 1))  # strategy 1 backs A 10 at 3.0
    p.on_event(fill(6, Side.BUY, 200, 30, coid=(2 << 32) | 1))  # strategy 2 backs B 30 at 2.0
    p.on_event(Settlement(5, SettlementKind.RESOLVED, 0, 1, 0, 1, 1))  # A won: +20
    p.on_event(Settlement(6, SettlementKind.RESOLVED, 0, 0, 0, 1, 1))  # B lost: -30
    assert p.commission() == 0.0  # the market lost 10 on net: the venue charged nothing
    p2 = pf({"GBP": 100.0})
    p2.on_event(fill(5, Side.BUY, 300, 10, coid=(1 << 32) | 1))
    p2.on_event(fill(5, Side.BUY, 300, 30, coid=(2 << 32) | 1))
    p2.on_event(Settlement(5, SettlementKind.RESOLVED, 0, 1, 0, 1, 1, fee=4.0))  # +20, +60
    by = p2.strategy_pnl()
    assert p2.commission() == pytest.approx(4.0)
    assert (by[1]["commission"], by[2]["commission"]) == pytest.approx((1.0, 3.0))
    check_views(p2)


def test_a_lay_lost_and_a_voided_market():
    p = pf({"GBP": 100.0})
    p.on_event(fill(5, Side.SELL, 400, 5))  # lay A 5 at 4.0: liability 15
    p.on_event(Settlement(5, SettlementKind.RESOLVED, 0, 1, 5, 1, 1))  # A won
    assert p.realized() == pytest.approx(-15.0) and p.commission() == 0.0
    p.on_event(fill(6, Side.BUY, 200, 10))  # back B 10 at 2.0 ...
    p.on_event(Settlement(6, SettlementKind.VOID, 0, -1, 10, 2, 2))  # ... voided: undone
    assert p.realized() == pytest.approx(-15.0) and p.cash_by_currency["GBP"] == pytest.approx(85)
    check_views(p)


def test_green_up_cash_out_locks_the_same_result_either_way():
    for won in (0, 1):
        p = pf({"GBP": 100.0})
        p.on_event(fill(5, Side.BUY, 300, 10))  # back A 10 at 3.0
        p.mark(5, 200)  # the price shortens to 2.0
        assert p.unrealized() == pytest.approx(5.0)  # -10 + 30 / 2
        stake = green_up_stake(10, 3.0, 2.0)
        assert stake == pytest.approx(15.0)
        p.on_event(fill(5, Side.SELL, 200, 15))  # lay 15 at 2.0: +5 whatever happens
        assert p.exposure("1.1") == 0.0
        p.on_event(Settlement(5, SettlementKind.RESOLVED, 0, won, 0, 1, 1, fee=0.25))
        assert p.realized() == pytest.approx(5.0) and p.commission() == pytest.approx(0.25)
        assert p.cash_by_currency["GBP"] == pytest.approx(104.75)
        check_views(p)


def test_future_expiry_settles_at_the_mark():
    p = pf({"USD": 100_000.0})
    p.on_event(fill(2, Side.BUY, 20_000, 2, fee=2.5))  # 2 E-minis at 5,000.00 ($50 a point)
    assert p.margin().notional == pytest.approx(500_000.0)
    p.on_event(Settlement(2, SettlementKind.EXPIRY, 20_040, 0, 2, 9, 9))  # expires at 5,010
    assert p.position(2) == 0 and p.realized() == pytest.approx(2 * 50 * 10)
    assert p.cash_by_currency["USD"] == pytest.approx(100_000 + 1_000 - 2.5)
    assert p.margin().notional == 0.0
    check_views(p)


def test_hedging_keeps_a_long_and_a_short_apart():
    p = pf({"USDT": 10_000.0})
    p.on_event(fill(7, Side.BUY, 300_000, 100))  # long 1 ETH at 3,000.00
    p.on_event(fill(7, Side.SELL, 310_000, 50))  # short 0.5 at 3,100: opens the short leg
    pos = p.positions[7]
    assert (pos.long_qty, pos.short_qty, pos.position) == (100, 50, 50)
    assert p.realized() == 0.0
    p.mark(7, 320_000)  # long +200, short -50
    assert p.unrealized() == pytest.approx(150.0)
    coid = (1 << 32) | 9
    p.on_event(
        NewOrder(coid, 1, 7, Side.SELL, 2, 320_000, 50, 1, 0, 0, flags=OrderFlag.REDUCE_ONLY)
    )
    p.on_event(fill(7, Side.SELL, 320_000, 50, coid=coid))  # reduce-only: closes half the long
    assert (pos.long_qty, pos.short_qty, pos.position) == (50, 50, 0)
    assert p.realized() == pytest.approx(100.0) and p.unrealized() == pytest.approx(50.0)
    assert p.margin("hedge").notional == pytest.approx(3_200.0)  # both legs post margin
    summary = p.summary()["instruments"][7]
    assert (summary["long"], summary["short"]) == (50, 50)
    check_views(p)


def test_summary_is_json_and_margin_status_is_kept():
    p = pf({"USDT": 10.0})
    p.on_event(fill(1, Side.BUY, 500_000, 1000))
    p.mark(1, 400_000)  # equity deeply negative: leverage infinite
    p.on_event(MarginStatus("perp", "USDT", -9_990.0, 4_000.0, 2_000.0, 1, margin_call=True))
    assert p.venue_margin["perp"].margin_call
    s = json.loads(json.dumps(p.summary(), allow_nan=False))
    assert s["margin"]["margin_call"] and s["margin"]["leverage"] is None
    assert set(s["pnl_components"]) == {
        "realized", "unrealized", "fees", "funding", "financing", "commission"
    }  # fmt: skip


# --- the property: cost view == cash view for every kind ------------------------------------

_KIND_PX = {1: (1, 10**6), 2: (1, 10**5), 3: (50_000, 200_000), 4: (1, 999), 5: (101, 2_000),
            6: (101, 2_000), 7: (1, 10**6)}  # fmt: skip


@st.composite
def _step(draw):
    iid = draw(st.sampled_from(sorted(_KIND_PX)))
    lo, hi = _KIND_PX[iid]
    what = draw(st.sampled_from(["fill", "fill", "fill", "mark", "pay", "settle", "liq"]))
    px = draw(st.integers(lo, hi))
    if what == "fill":
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        qty = draw(st.integers(1, 500))
        fee = draw(st.floats(0, 3, allow_nan=False))
        sid = draw(st.integers(1, 3))
        reduce = draw(st.booleans())
        return ("fill", iid, side, px, qty, fee, sid, reduce)
    if what == "pay":
        return ("pay", iid, draw(st.floats(-50, 50, allow_nan=False)), draw(st.booleans()))
    if what == "settle":
        kind = draw(st.sampled_from(list(SettlementKind)))
        fee = draw(st.sampled_from([0.0, 0.0, 1.5]))
        return ("settle", iid, kind, draw(st.sampled_from([0, 1])), px, fee)
    if what == "liq":
        return ("liq", iid, draw(st.sampled_from([Side.BUY, Side.SELL])), px,
                draw(st.integers(1, 300)), draw(st.floats(0, 2, allow_nan=False)))  # fmt: skip
    return ("mark", iid, px)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step(), max_size=50))
@example(  # a void after lots the strategies hold differently from the portfolio
    steps=[("liq", 1, Side.BUY, 104, 1, 0.0)]
    + [("fill", 1, Side.BUY, 1, 1, 0.0, 1, False)] * 4
    + [("fill", 1, Side.SELL, 1, 1, 0.0, 1, False), ("settle", 1, SettlementKind.VOID, 0, 1, 0.0)]
)
@example(  # a void of hedged legs that net to nothing: the lots' difference goes to strategy 0
    steps=[
        ("fill", 7, Side.BUY, 100_000, 1, 0.0, 1, False),
        ("fill", 7, Side.SELL, 200_000, 1, 0.0, 1, False),
        ("settle", 7, SettlementKind.VOID, 0, 1, 0.0),
    ]
)
@example(  # two strategies win in one market: the commission is shared, not charged twice
    steps=[
        ("fill", 5, Side.BUY, 300, 10, 0.0, 1, False),
        ("fill", 5, Side.BUY, 300, 10, 0.0, 2, False),
        ("settle", 5, SettlementKind.RESOLVED, 1, 0, 4.0),
    ]
)
def test_cost_view_equals_cash_view_for_every_kind(steps):
    p = pf({"USD": 50_000.0, "EUR": 1_000.0}, fx_rates={"USDT": 1.0, "GBP": 1.25, "EUR": 1.1})
    for n, step in enumerate(steps, 1):
        kind, iid = step[0], step[1]
        if kind == "fill":
            _, _, side, px, qty, fee, sid, reduce = step
            coid = (sid << 32) | n
            flags = OrderFlag.REDUCE_ONLY if reduce else 0
            p.on_event(NewOrder(coid, sid, iid, side, 2, px, qty, 1, 0, 0, flags=flags))
            p.on_event(fill(iid, side, px, qty, fee, coid=coid))
        elif kind == "mark":
            p.mark(iid, step[2])
        elif kind == "pay":
            ccy = p.positions[iid].currency if step[3] else "EUR"
            if iid == 3:
                p.on_event(Financing(iid, p.position(iid), step[2], ccy, 1, n, n))
            else:
                p.on_event(FundingPayment(iid, 0.0, 1, p.position(iid), step[2], ccy, n, n))
        elif kind == "settle":
            _, _, skind, outcome, px, fee = step
            p.on_event(Settlement(iid, skind, px, outcome, 0, n, n, fee=fee))
        else:
            _, _, side, px, qty, fee = step
            p.on_event(Liquidation(iid, side, px, qty, fee, n, n))
        pos = p.positions[iid]
        if pos.short_book is not None:  # hedged legs never cross zero
            assert pos.long_qty >= 0 and pos.short_qty >= 0
        tol = 1e-7 * (1 + sum(abs(x) for x in p.cash_by_currency.values()) + abs(p.equity()))
        assert p.net_pnl() == pytest.approx(p.equity() - p.initial_cash, abs=tol)
        assert sum(v["net"] for v in p.strategy_pnl().values()) == pytest.approx(
            p.net_pnl(), abs=tol
        )
