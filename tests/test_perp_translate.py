"""The perpetual translations on their own (``engine.venues.ccxt_perp``, ``contract_keys``):
Binance's documented shapes in, engine events out, numbers by hand."""

from __future__ import annotations

import pytest

from engine.instruments import Instrument
from engine.messages import Side
from engine.venues.ccxt_markets import contract_keys
from engine.venues.ccxt_perp import (
    funding_payment,
    is_liquidation,
    liquidation_from_update,
    margin_status,
    position_lots,
)

ETH = Instrument(
    instrument_id=4,
    symbol="ETH/USDT:USDT",
    venue="bf",
    tick_size=0.01,
    lot_size=0.001,
    kind="perpetual",
    funding_interval_s=28800,
)


def test_a_short_receives_funding_when_the_rate_is_positive() -> None:
    # short 2.5 ETH, mark 3000, rate 0.0003: amount = -(-2.5) * 3000 * 0.0003 = +2.25
    income = {"income": "2.25000000", "asset": "USDT", "time": 1700000000000, "tranId": 77}
    rate = {"fundingRate": "0.00030000", "markPrice": "3000.00000000", "fundingTime": 1}
    fp = funding_payment(ETH, income, rate, fallback_position=0, now_ns=5)
    assert (fp.amount, fp.rate, fp.mark_px, fp.position) == (2.25, 0.0003, 300_000, -2500)
    assert (fp.ts_event, fp.ts_recv, fp.payment_id, fp.currency) == (
        1700000000000 * 10**6,
        5,
        77,
        "USDT",
    )


def test_funding_without_its_rate_record_keeps_the_known_position() -> None:
    fp = funding_payment(ETH, {"income": "-0.5", "tranId": 1, "time": 2}, None, 1200, 9)
    assert (fp.amount, fp.position, fp.rate, fp.mark_px, fp.currency) == (-0.5, 1200, 0.0, 0, "USD")


def test_liquidation_of_a_short_is_a_buy_at_the_fill_price() -> None:
    o = {
        "s": "ETHUSDT",
        "c": "autoclose-1",
        "S": "BUY",
        "o": "LIQUIDATION",
        "l": "2.500",
        "L": "3450.12",
        "ap": "3450.12",
        "n": "107.81625",
        "T": 1700000000123,
        "t": 42,
        "i": 9,
    }
    assert is_liquidation(o)
    liq = liquidation_from_update(ETH, o, 0, 1)
    assert liq is not None
    assert (liq.side, liq.px, liq.qty, liq.fee) == (int(Side.BUY), 345_012, 2500, 107.81625)
    assert (liq.liquidation_id, liq.ts_event) == (42, 1700000000123 * 10**6)
    assert liquidation_from_update(ETH, {**o, "l": "0"}, 0, 1) is None  # nothing filled


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"o": "MARKET", "c": "gk-1"}, False),
        ({"type": "LIMIT", "clientOrderId": "autoclose-16"}, True),
        ({"origType": "ADL"}, True),
        ({"o": "LIMIT", "c": "adl_autoclose"}, True),
    ],
)
def test_the_venues_closing_orders_are_told_apart(row: dict, expected: bool) -> None:
    assert is_liquidation(row) is expected


def test_margin_status_and_positions() -> None:
    acct = {
        "totalMarginBalance": "19.5",
        "totalMaintMargin": "20",
        "totalInitialMargin": "500",
        "assets": [{"asset": "USDT"}],
    }
    ms = margin_status("bf", acct, 3)
    assert (ms.equity, ms.maintenance_margin, ms.initial_margin, ms.margin_call) == (
        19.5,
        20.0,
        500.0,
        True,
    )
    assert not margin_status("bf", {**acct, "totalMarginBalance": "20.5"}, 3).margin_call
    assert position_lots(ETH, "1.5", "short") == -1500
    assert position_lots(ETH, "-1.5") == -1500


def test_contract_keys_of_ccxt_markets() -> None:
    spot = {"symbol": "BTC/USDT", "spot": True}
    assert contract_keys(spot) == {}
    future = {
        "symbol": "BTC/USDT:USDT-250328",
        "spot": False,
        "contract": True,
        "linear": True,
        "future": True,
        "expiry": 1743148800000,
        "contractSize": 1,
    }
    assert contract_keys(future) == {
        "contract_size": 1.0,
        "kind": "future",
        "expiry_ns": 1743148800000 * 10**6,
    }
    inverse = {
        "symbol": "BTC/USD:BTC",
        "spot": False,
        "contract": True,
        "linear": False,
        "inverse": True,
        "swap": True,
        "contractSize": 100,
    }
    with pytest.raises(ValueError, match="only linear"):
        contract_keys(inverse)
