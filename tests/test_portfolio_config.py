"""[portfolio] config and the rebalancer from config.toml, through `gekko backtest`'s path."""

from __future__ import annotations

import json

import pytest

from ops.cli import main
from ops.config import ConfigError, parse_config
from tests.conftest import ROOT

BASE = (ROOT / "config.toml").read_text()


def test_portfolio_section_defaults_and_values():
    cfg = parse_config(BASE)
    p = cfg.portfolio
    assert p.cash == {"USD": 1_000_000.0} and p.lot_method == "fifo" and p.benchmark == "AAPL"
    kw = p.backtest_kwargs()
    assert kw["benchmark"] == "AAPL" and kw["equity_interval_ns"] == 100_000_000
    # a config without [portfolio] still loads, with the defaults
    start = BASE.index("[portfolio]")
    end = (
        BASE.index("[storage.redis]")
        if "[storage.redis]" in BASE
        else BASE.index("[[instruments]]")
    )
    bare = parse_config(BASE[:start] + BASE[end:])
    assert bare.portfolio.benchmark == "" and bare.portfolio.cash == {"USD": 1_000_000.0}


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('lot_method = "fifo"', 'lot_method = "average"', "portfolio.lot_method"),
        ('benchmark = "AAPL"', 'benchmark = "SPY"', "portfolio.benchmark"),
        ("fx_rates = {}", "fx_rates = { EUR = -1.0 }", "portfolio.fx_rates.EUR"),
        ("var_level = 0.95", "var_level = 95", "portfolio.var_level"),
        ("equity_interval_s = 0.1", "equity_interval_s = 0", "portfolio.equity_interval_s"),
        ("cash = { USD = 1000000.0 }", 'cash = { USD = "lots" }', "portfolio.cash"),
    ],
)
def test_portfolio_mistakes_name_the_key(old, new, key):
    assert old in BASE
    with pytest.raises(ConfigError) as err:
        parse_config(BASE.replace(old, new, 1), "config.toml")
    assert err.value.key.startswith(key)  # msgspec names a map entry "portfolio.cash[...]"


def rebalancer_config() -> str:
    """The shipped config with its strategies replaced by the commented rebalancer example."""
    head = BASE[: BASE.index("[[strategies]]")]
    example = BASE[BASE.index("# [[strategies]]\n# id = 1") :]
    enabled = []
    for line in example.splitlines():
        if not line.startswith("# "):
            break  # the end of the example block
        enabled.append(line[2:])
    return head + "\n".join(enabled) + "\n"


def test_backtest_with_the_rebalancer_from_config(tmp_path, capsys):
    path = tmp_path / "config.toml"
    text = rebalancer_config().replace("interval_s = 10.0", "interval_s = 0.2")
    path.write_text(text)
    cfg = parse_config(text)
    assert cfg.strategies[0].params["substitutes"] == {"AAPL": "XOM"}
    out = tmp_path / "s.json"
    assert main(["backtest", "--config", str(path), "--events", "4000", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Sharpe" in printed and "vs AAPL: beta" in printed and "P&L Rebalancer" in printed
    s = json.loads(out.read_text())
    a = s["analytics"]
    assert a["points"] >= 3 and a["max_drawdown"] is not None and a["var"] is not None
    pf = s["portfolio"]
    assert pf["lot_method"] == "fifo" and pf["cash_by_currency"]["USD"] < 1_000_000.0
    aapl = pf["instruments"]["1"]
    assert aapl["position"] > 0  # it invested ~30 % of its 200 000 in AAPL
    value = aapl["position"] * aapl["mark"] * 0.01
    assert value == pytest.approx(0.3 * 200_000, rel=0.1)
    assert set(s["pnl_by_strategy"]) == {"1"}
    assert s["pnl_by_strategy"]["1"]["net"] == pytest.approx(pf["net_pnl"])


def test_run_record_builds_the_account_and_analytics_from_the_rings(engine_id):
    from engine.messages import NewOrder, OrderFilled, Side
    from ops.report import RunRecord, format_summary
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable

    cfg = parse_config(BASE.replace("equity_interval_s = 0.1", "equity_interval_s = 0.001"))
    table = SeqlockTable.create(engine_id, "positions", POSITION_DTYPE, len(cfg.instruments))
    try:
        for k, ins in enumerate(cfg.instruments):
            table.write(k, {"instrument_id": ins.instrument_id})
        rec = RunRecord(cfg)
        coid = (2 << 32) | 1
        rec.on_order(NewOrder(coid, 2, 1, Side.BUY, 2, 2, 19_000, 100, 0, 0))
        rec.on_event(OrderFilled(coid, 1, 1, Side.BUY, 19_000, 100, 100, 0, 1.0, 2, 1, 0, 0, 0))
        marks = [19_000, 19_100, 18_900, 19_200]
        for m in marks:
            table.write(0, {"instrument_id": 1, "position": 100, "fills": 1, "mark_px": m})
            rec.maybe_sample(table, force=True)
        s = rec.summary({}, table)
        assert s["pnl_by_strategy"][2]["net"] == pytest.approx(100 * 2.0 - 1.0)
        a = s["analytics"]
        assert a["points"] == len(marks) + 1  # + the closing point summary() adds
        eq = [1_000_000 - 1.0 + 100 * (m - 19_000) * 0.01 for m in [*marks, marks[-1]]]
        assert a["end_equity"] == pytest.approx(eq[-1])
        assert a["max_drawdown"] == pytest.approx((eq[1] - eq[2]) / eq[1])
        assert a["beta"] is not None
        text = format_summary({**s, "stop_reason": "test"}, cfg)
        assert "max DD" in text and "P&L MomentumTaker" in text
    finally:
        table.close()
        table.unlink()
