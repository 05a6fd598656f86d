"""engine.accounts: what each account kind holds, margin, leverage, liquidation price, funding,
FX financing and the 17:00 New York rollover (Wednesday x3), against hand-computed numbers."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.accounts import (
    Account,
    AccountKind,
    CashStyle,
    MarginSummary,
    account_refusal,
    cash_style,
    financing_amount,
    funding_amount,
    initial_fraction,
    initial_margin,
    liquidation_price,
    maintenance_margin,
    margin_call,
    multiplier,
    next_funding_ns,
    next_rollover_ns,
    rollover_days,
    should_liquidate,
)
from engine.instruments import Instrument

PERP = Instrument(
    instrument_id=1,
    symbol="BTCUSDT-PERP",
    kind="perpetual",
    tick_size=0.1,
    lot_size=0.001,
    currency="USDT",
    initial_margin=0.1,
    maintenance_margin=0.05,
    funding_interval_s=28_800,
)
EURUSD = Instrument(
    instrument_id=2,
    symbol="EUR_USD",
    kind="fx",
    tick_size=0.00001,
    lot_size=1.0,
    base_currency="EUR",
    pip_size=0.0001,
    initial_margin=0.0333,
    maintenance_margin=0.0333,
    financing_long_rate=-0.02,
    financing_short_rate=0.01,
)
SPOT = Instrument(instrument_id=3, symbol="AAA")
BET = Instrument(instrument_id=4, symbol="HORSE", kind="betting", market_id="1.23")
YES = Instrument(instrument_id=5, symbol="YES", kind="binary", tick_size=0.001, market_id="m")


def _utc_ns(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def test_each_account_kind_holds_its_instruments_only():
    assert account_refusal("cash", SPOT) is None
    assert account_refusal("cash", YES) is None
    margined_spot = Instrument(instrument_id=8, symbol="AAPL", initial_margin=0.25)
    assert "needs a margin account" in account_refusal("cash", margined_spot)
    assert "cannot hold perpetual" in account_refusal("cash", PERP)
    assert account_refusal("margin", PERP) is None and account_refusal("margin", EURUSD) is None
    assert "cannot hold betting" in account_refusal("margin", BET)
    assert account_refusal("betting", BET) is None
    assert "cannot hold spot" in account_refusal("betting", SPOT)
    assert "unknown account kind" in account_refusal("isolated", SPOT)
    # an unmargined FX pair is currency bought outright: a cash account holds it
    fx_cash = Instrument(
        instrument_id=9, symbol="GBP_USD", kind="fx", base_currency="GBP", pip_size=0.0001
    )
    assert account_refusal(AccountKind.CASH, fx_cash) is None
    with pytest.raises(ValueError, match="position_mode"):
        Account(position_mode="both")
    with pytest.raises(ValueError, match="commission"):
        Account(kind="betting", commission=5.0)  # a fraction, not percent


def test_cash_styles_and_multiplier():
    assert cash_style(SPOT) == cash_style(YES) == CashStyle.NOTIONAL
    assert cash_style(PERP) == cash_style(EURUSD) == CashStyle.PNL
    assert cash_style(BET) == CashStyle.BET
    es = Instrument(
        instrument_id=6,
        symbol="ES",
        kind="future",
        tick_size=0.25,
        contract_size=50,
        expiry_ns=1,
        initial_margin=0.05,
    )
    assert multiplier(es) == pytest.approx(12.5)  # $12.50 a tick, the E-mini's


def test_margin_and_leverage_of_one_btc_long():
    # 1 BTC (1000 lots of 0.001) at 50,000.0 (500,000 ticks of 0.1): notional 50,000 USDT
    assert initial_margin(PERP, 1000, 500_000) == pytest.approx(5_000.0)  # 10 %
    assert maintenance_margin(PERP, -1000, 500_000) == pytest.approx(2_500.0)  # 5 %, shorts too
    # an account capped at 5x posts 20 % (1 / 5), more than the instrument's 10 %
    assert initial_fraction(PERP, 5.0) == pytest.approx(0.2)
    assert initial_fraction(PERP, 20.0) == pytest.approx(0.1)  # the instrument's own is higher
    assert initial_margin(PERP, 1000, 500_000, leverage=5.0) == pytest.approx(10_000.0)
    s = MarginSummary(equity=10_000.0, initial=5_000.0, maintenance=2_500.0, notional=50_000.0,
                      margin_call=False)  # fmt: skip
    assert (s.free, s.usage, s.leverage) == pytest.approx((5_000.0, 0.5, 5.0))
    broke = MarginSummary(-1.0, 5_000.0, 2_500.0, 50_000.0, True)
    assert broke.as_dict()["leverage"] is None  # infinite: JSON-safe


def test_liquidation_price_long_and_short_by_hand():
    # long 1 BTC at 50,000 with 10,000 USDT behind it, mm 5 %:
    # 10,000 + (m - 50,000) = 0.05 m  ->  m = 40,000 / 0.95 = 42,105.263...
    m = liquidation_price(PERP, 1000, 500_000, 10_000.0)
    assert m * 0.1 == pytest.approx(40_000 / 0.95)
    eq = 10_000 + (m * 0.1 - 50_000)
    assert eq == pytest.approx(0.05 * m * 0.1)  # equity == maintenance there
    # short 1 BTC: 10,000 - (m - 50,000) = 0.05 m  ->  m = 60,000 / 1.05
    assert liquidation_price(PERP, -1000, 500_000, 10_000.0) * 0.1 == pytest.approx(60_000 / 1.05)
    # a long backed by more than it is worth never liquidates; flat: none
    assert liquidation_price(PERP, 1000, 500_000, 60_000.0) == 0.0
    assert liquidation_price(PERP, 0, 500_000, 10_000.0) == 0.0


def test_margin_call_and_liquidation_threshold():
    assert not margin_call(2_600.0, 2_500.0) and margin_call(2_400.0, 2_500.0)
    assert not margin_call(-5.0, 0.0)  # nothing margined: no call
    assert should_liquidate(2_400.0, 2_500.0) and not should_liquidate(2_600.0, 2_500.0)
    assert should_liquidate(2_600.0, 2_500.0, buffer=1.1)  # a venue that liquidates earlier


def test_funding_payment_by_hand():
    # long 1 BTC, mark 50,000, rate +0.01 %: the long pays 5 USDT; a short receives it
    assert funding_amount(PERP, 1000, 500_000, 0.0001) == pytest.approx(-5.0)
    assert funding_amount(PERP, -1000, 500_000, 0.0001) == pytest.approx(5.0)
    assert funding_amount(PERP, 1000, 500_000, -0.0002) == pytest.approx(10.0)
    # the 8-hour schedule: 00:00, 08:00, 16:00 UTC
    t = _utc_ns(2026, 12, 7, 7, 59)
    assert next_funding_ns(PERP, t) == _utc_ns(2026, 12, 7, 8, 0)
    assert next_funding_ns(PERP, _utc_ns(2026, 12, 7, 8, 0)) == _utc_ns(2026, 12, 7, 16, 0)


def test_fx_financing_by_hand_with_wednesday_triple():
    # long 10,000 EUR/USD at mid 1.10000 (110,000 ticks), -2 %/year: 10,000 x 1.1 x 0.02 / 365
    one_day = 10_000 * 1.1 * 0.02 / 365
    assert financing_amount(EURUSD, 10_000, 110_000, 1) == pytest.approx(-one_day)
    assert financing_amount(EURUSD, 10_000, 110_000, 3) == pytest.approx(-3 * one_day)
    # a short earns the short rate, +1 %
    assert financing_amount(EURUSD, -10_000, 110_000, 1) == pytest.approx(one_day / 2)
    assert financing_amount(EURUSD, 0, 110_000, 1) == 0.0


def test_rollover_times_and_days_in_new_york():
    # winter (EST, UTC-5): Monday 2026-12-07 17:00 New York is 22:00 UTC
    mon = next_rollover_ns(_utc_ns(2026, 12, 7, 12, 0))
    assert mon == _utc_ns(2026, 12, 7, 22, 0) and rollover_days(mon) == 1
    tue = next_rollover_ns(mon)
    wed = next_rollover_ns(tue)
    assert wed == _utc_ns(2026, 12, 9, 22, 0) and rollover_days(wed) == 3
    assert rollover_days(tue) == 1
    fri = next_rollover_ns(next_rollover_ns(wed))
    assert fri == _utc_ns(2026, 12, 11, 22, 0)
    assert next_rollover_ns(fri) == _utc_ns(2026, 12, 14, 22, 0)  # the weekend: Monday next
    # summer (EDT, UTC-4): Wednesday 2026-07-08 17:00 New York is 21:00 UTC
    w = next_rollover_ns(_utc_ns(2026, 7, 8, 20, 0))
    assert w == _utc_ns(2026, 7, 8, 21, 0) and rollover_days(w) == 3
    # a week of rollovers pays for seven days
    t, days = _utc_ns(2026, 12, 6, 0, 0), 0
    for _ in range(5):
        t = next_rollover_ns(t)
        days += rollover_days(t)
    assert days == 7
