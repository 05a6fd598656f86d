"""Each instrument kind through a backtest built from a config.toml the way `gekko backtest` builds
it (ops/backtest_build.py): a quote file, a scripted strategy, the simulated exchange's account
events (engine/venues/sim_accounts.py) reaching the portfolio, risk and the run's record — with
the P&L checked against hand-computed numbers. Every run falls back to the exact path (the fast
replay takes spot only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.messages import Quote
from engine.strategies.base import Strategy


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()) * 10**9


class Script(Strategy):
    """Sends ``params.orders`` = [[symbol, "buy" | "sell", lots, price (0: market)], ...] on the
    first quote of each order's instrument."""

    def on_start(self) -> None:
        self.todo = list(self.params["orders"])

    def on_quote(self, q: Quote) -> None:
        left = []
        for sym, side, qty, px in self.todo:
            ins = next(
                self.ctx.instrument(i)
                for i in self.ctx.instrument_ids
                if self.ctx.instrument(i).symbol == sym
            )
            if ins.instrument_id != q.instrument_id:
                left.append([sym, side, qty, px])
                continue
            ticks = ins.px_to_ticks(px) if px else None
            send = self.ctx.buy if side == "buy" else self.ctx.sell
            send(ins.instrument_id, int(qty), ticks)
        self.todo = left


_BASE = """
[engine]
id = "kinds"
var_dir = "{var}"
[market]
source = "replay"
replay_quotes = "{quotes}"
[backtest]
engine = "fast"
[inference]
enabled = false
[sim]
latency_us = 0.0
jitter_us = 0.0
maker_fee_bps = 0.0
taker_fee_bps = {taker}
{sim}
[portfolio]
cash = {cash}
benchmark = ""
[risk]
max_order_notional = 1e9
max_position_pct = 100.0
max_sector_pct = 100.0
daily_loss_reduce_pct = 99.0
daily_loss_halt_pct = 99.5
drawdown_reduce_pct = 99.0
drawdown_halt_pct = 99.5
flash_band_pct = 50.0
price_band_pct = 50.0
{instruments}
[[strategies]]
id = 1
path = "tests.test_backtest_kinds:Script"
instruments = {symbols}
[strategies.params]
orders = {orders}
"""


def _backtest(
    tmp_path: Path,
    instruments: list[dict[str, Any]],
    quotes: list[tuple[str, str, float, float]],
    orders: list[list[Any]],
    *,
    cash: str = "{ USD = 1000000.0 }",
    sim: str = "",
    taker: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    rows = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    rows += [f"{_ns(t)},{sym},{bid},1000000,{ask},1000000" for t, sym, bid, ask in quotes]
    qfile = tmp_path / "quotes.csv"
    qfile.write_text("\n".join(rows) + "\n")
    tables = []
    for ins in instruments:
        lines = ["[[instruments]]"]
        for k, v in ins.items():
            lines.append(f"{k} = {v!r}".replace("'", '"'))
        tables.append("\n".join(lines))
    text = _BASE.format(
        var=tmp_path.as_posix(),
        quotes=qfile.as_posix(),
        taker=taker,
        sim=sim,
        cash=cash,
        instruments="\n".join(tables),
        symbols=str([i["symbol"] for i in instruments]).replace("'", '"'),
        orders=str(orders).replace("'", '"'),
    )
    bt = build_backtest(parse_config(text, tmp_path / "config.toml"))
    summary = bt.runtime.run()
    assert summary["replay_engine"] == "exact"
    assert "not spot" in summary["replay_note"]
    assert not summary["strategy_errors"]
    return bt.runtime, summary


PERP = {
    "instrument_id": 1,
    "symbol": "BTCUSDT-PERP",
    "kind": "perpetual",
    "currency": "USDT",
    "base_currency": "BTC",
    "tick_size": 0.1,
    "lot_size": 0.001,
    "funding_interval_s": 28800,
    "funding_rate": 0.0001,
    "initial_margin": 0.1,
    "maintenance_margin": 0.05,
}


def test_perpetual_funding_payment(tmp_path):
    rt, s = _backtest(
        tmp_path,
        [PERP],
        [
            ("2026-01-05T06:00:00", "BTCUSDT-PERP", 50_000.0, 50_000.2),
            ("2026-01-05T07:00:00", "BTCUSDT-PERP", 50_100.0, 50_100.2),
            ("2026-01-05T09:00:00", "BTCUSDT-PERP", 50_100.0, 50_100.2),
        ],
        [["BTCUSDT-PERP", "buy", 2_000, 0]],  # 2 BTC at the ask, 50000.2
        cash="{ USDT = 20000.0 }",  # 10% of the notional to open
        sim='account = "margin"',
    )
    assert s["positions"][1] == 2_000 and s["risk_positions"][1] == 2_000
    assert s["account_events"]["FundingPayment"] == 1
    # 08:00 UTC at the mark 50100.1 (the mid rounded down): 2 x 50100.1 x 0.0001, paid
    funding = -2 * 50_100.1 * 0.0001
    assert s["pnl"]["funding"] == pytest.approx(funding)
    assert s["pnl"]["unrealized"] == pytest.approx(2 * (50_100.1 - 50_000.2))
    assert s["pnl"]["net"] == pytest.approx(2 * 99.9 + funding)
    assert s["pnl"]["equity"] == pytest.approx(20_000 + 2 * 99.9 + funding)


def test_liquidation(tmp_path):
    rt, s = _backtest(
        tmp_path,
        [PERP],
        [
            ("2026-01-05T01:00:00", "BTCUSDT-PERP", 49_999.9, 50_000.0),
            ("2026-01-05T01:01:00", "BTCUSDT-PERP", 47_399.9, 47_400.1),  # equity 476 >= 474
            ("2026-01-05T01:02:00", "BTCUSDT-PERP", 47_299.9, 47_300.1),  # 456 < 473
        ],
        [["BTCUSDT-PERP", "buy", 200, 0]],  # 0.2 BTC at 50000, fee 4
        cash="{ USDT = 1000.0 }",
        sim='account = "margin"',
        taker=4.0,
    )
    assert s["account_events"]["Liquidation"] == 1
    assert [m.margin_call for m in rt.account_log if type(m).__name__ == "MarginStatus"] == [
        False,
        True,
        False,
    ]
    assert s["positions"][1] == 0
    # closed at the mark 47300: -0.2 x 2700 = -540; fees 4 + 0.2 x 47300 x 4 bps = 3.784
    assert s["pnl"]["realized"] == pytest.approx(-540.0)
    assert s["pnl"]["fees"] == pytest.approx(7.784)
    assert s["pnl"]["equity"] == pytest.approx(452.216)


def test_fx_position_over_rollovers_wednesday_counts_three_days(tmp_path):
    eurusd = {
        "instrument_id": 2,
        "symbol": "EUR/USD",
        "kind": "fx",
        "currency": "USD",
        "base_currency": "EUR",
        "tick_size": 0.00001,
        "lot_size": 1000.0,
        "pip_size": 0.0001,
        "financing_long_rate": -0.02,
        "financing_short_rate": 0.01,
    }
    rt, s = _backtest(
        tmp_path,
        [eurusd],
        [
            ("2026-01-06T12:00:00", "EUR/USD", 1.09999, 1.10001),  # a Tuesday
            ("2026-01-06T21:00:00", "EUR/USD", 1.19999, 1.20001),
            ("2026-01-06T23:00:00", "EUR/USD", 1.19999, 1.20001),  # past 17:00 New York
            ("2026-01-07T23:00:00", "EUR/USD", 1.19999, 1.20001),  # past Wednesday's
        ],
        [["EUR/USD", "buy", 100, 0]],  # 100,000 EUR at 1.10001
    )
    assert [(f.days, f.position) for f in rt.account_log] == [(1, 100), (3, 100)]
    # 100000 x 1.2 x -2% / 365 x (1 + 3), paid on the long
    financing = 100_000 * 1.2 * -0.02 / 365 * 4
    assert s["pnl"]["financing"] == pytest.approx(financing)
    assert s["pnl"]["unrealized"] == pytest.approx(100_000 * (1.2 - 1.10001))
    assert s["pnl"]["net"] == pytest.approx(100_000 * (1.2 - 1.10001) + financing)


def _binary(resolution: str) -> dict[str, Any]:
    return {
        "instrument_id": 4,
        "symbol": "RAIN-YES",
        "kind": "binary",
        "tick_size": 0.01,
        "initial_price": 0.5,
        "market_id": "rain-tomorrow",
        "outcome": "Yes",
        "resolves_ns": _ns("2026-06-01T00:00:00"),
        "resolution": resolution,
    }


@pytest.mark.parametrize(
    ("resolution", "realized", "kind"),
    [("1", 100 * (1 - 0.40), 2), ("0", -100 * 0.40, 2), ("void", 0.0, 3)],
)
def test_binary_resolved_one_zero_and_voided(tmp_path, resolution, realized, kind):
    rt, s = _backtest(
        tmp_path,
        [_binary(resolution)],
        [
            ("2026-05-31T12:00:00", "RAIN-YES", 0.39, 0.40),
            ("2026-05-31T18:00:00", "RAIN-YES", 0.55, 0.56),
            ("2026-06-01T00:00:01", "RAIN-YES", 0.55, 0.56),
        ],
        [["RAIN-YES", "buy", 100, 0]],  # 100 shares at 0.40
    )
    (st,) = rt.account_log
    assert st.kind == kind and st.position == 100
    assert s["positions"][4] == 0
    assert s["pnl"]["realized"] == pytest.approx(realized)
    assert s["pnl"]["unrealized"] == pytest.approx(0.0)
    assert s["pnl"]["net"] == pytest.approx(realized)


def _selection(iid: int, name: str, resolution: str) -> dict[str, Any]:
    return {
        "instrument_id": iid,
        "symbol": name,
        "kind": "betting",
        "currency": "GBP",
        "tick_size": 0.01,
        "lot_size": 1.0,
        "market_id": "1.2345",
        "outcome": name,
        "resolves_ns": _ns("2026-04-01T16:00:00"),
        "resolution": resolution,
    }


def test_back_and_lay_bets_settled_with_commission(tmp_path):
    rt, s = _backtest(
        tmp_path,
        [_selection(5, "Arsenal", "1"), _selection(6, "Chelsea", "0")],
        [  # bid = the best odds to back, ask = the best odds to lay
            ("2026-04-01T14:00:00", "Arsenal", 3.0, 3.05),
            ("2026-04-01T14:00:01", "Chelsea", 1.98, 2.0),
            ("2026-04-01T16:00:01", "Arsenal", 3.0, 3.05),
        ],
        [["Arsenal", "buy", 10, 2.9], ["Chelsea", "sell", 10, 2.02]],
        cash="{ GBP = 1000.0 }",
        sim='account = "betting"\ncommission_pct = 5.0',
    )
    assert [f.fill_px for f in rt.fill_log] == [300, 200]  # backed at 3.0, laid at 2.0
    assert s["account_events"]["Settlement"] == 2
    # back 10 @ 3.0 won: +20; lay 10 @ 2.0, the selection lost: +10; 5% of the net 30
    assert s["pnl"]["realized"] == pytest.approx(30.0)
    assert s["pnl"]["commission"] == pytest.approx(1.5)
    assert s["pnl"]["net"] == pytest.approx(28.5)
    assert sum(st.fee for st in rt.account_log) == pytest.approx(1.5)


def test_future_expiring(tmp_path):
    es = {
        "instrument_id": 3,
        "symbol": "ESH6",
        "kind": "future",
        "tick_size": 0.25,
        "lot_size": 1.0,
        "contract_size": 50.0,
        "initial_margin": 0.06,
        "maintenance_margin": 0.05,
        "expiry_ns": _ns("2026-03-20T13:30:00"),
    }
    rt, s = _backtest(
        tmp_path,
        [es],
        [
            ("2026-03-20T12:00:00", "ESH6", 5_000.0, 5_000.25),
            ("2026-03-20T13:00:00", "ESH6", 5_009.75, 5_010.25),
            ("2026-03-20T13:30:05", "ESH6", 5_020.0, 5_020.25),
        ],
        [["ESH6", "buy", 2, 0]],  # 2 contracts at 5000.25
        sim='account = "margin"',
    )
    (st,) = [e for e in rt.account_log if type(e).__name__ == "Settlement"]
    assert st.px == 20_040 and st.ts_event == es["expiry_ns"]  # the mark 5010.00
    assert s["positions"][3] == 0
    # 2 x 50 x (5010 - 5000.25)
    assert s["pnl"]["realized"] == pytest.approx(975.0)
    assert s["pnl"]["net"] == pytest.approx(975.0)


def test_risk_follows_settlements_and_liquidations(tmp_path):
    """The account events reach risk: its positions follow a liquidation and a settlement."""
    _, s = _backtest(
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
    assert s["positions"] == {1: 0, 4: 0}
    assert s["risk_positions"] == {1: 0, 4: 0}
