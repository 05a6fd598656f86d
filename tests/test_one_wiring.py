"""One wiring: `gekko run --until-feed-done` and `gekko backtest` on the same replay give the same
orders, fills, positions and tax lots — the lots a strategy names for an order included.

The replay holds AAPL's quote still for long stretches (ask 100.02, then 99.02, then bid 101.00), so
what a marketable order fills at does not depend on how fast the worker processes are. The
strategy buys twice, then sells naming the SECOND lot (specific identification): FIFO would
close the first. Exec's portfolio must apply that choice in the run as the backtest's does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.messages import OrderPartiallyFilled, Quote, Side
from engine.messages import TimeInForce as Tif
from engine.strategies.base import Strategy
from tests.test_engine_e2e import eid, gekko, set_key, summary_of, write_config  # noqa: F401

pytestmark = pytest.mark.timeout(120)

AAPL = 1
PHASE = 150  # quotes per price level (0.6 s each at the run's 250 per second)
LEVELS = (100.0, 99.0, 101.0)  # small steps: risk halts on a flash move


class LotPicker(Strategy):
    """Buy 10 in the first phase, 10 in the second; in the third sell 10 naming the second lot."""

    def __init__(self, ctx: Any, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.n = 0
        self.opened: list[tuple[int, int]] = []  # (coid, fill_id) of each buy's fill
        self.designated_lots: dict[int, list[tuple[int, int]]] = {}

    def on_quote(self, q: Quote) -> None:
        if q.instrument_id != AAPL:
            return
        self.n += 1
        if self.n in (PHASE // 3, PHASE + PHASE // 3):
            self.ctx.buy(AAPL, 10, q.ask_px, tif=Tif.IOC)
        elif self.n == 2 * PHASE + PHASE // 3 and len(self.opened) == 2:
            coid = self.ctx.sell(AAPL, 10, q.bid_px, tif=Tif.IOC)
            if coid is not None:
                self.designated_lots[coid] = [self.opened[1]]

    def on_fill(self, ev: OrderPartiallyFilled) -> None:
        if ev.side == Side.BUY:
            self.opened.append((ev.client_order_id, ev.fill_id))


def _replay(path: Path) -> None:
    rows = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    t = 1_700_000_000_000_000_000
    for level in LEVELS:
        for _ in range(PHASE):
            t += 2_000_000  # 2 ms of market time
            rows.append(f"{t},AAPL,{level:.2f},1000,{level + 0.02:.2f},1000")
    path.write_text("\n".join(rows) + "\n")


def _config(tmp_path: Path, engine_id: str) -> Path:
    quotes = tmp_path / "quotes.csv"
    _replay(quotes)
    strategies = """
[[strategies]]
id = 1
path = "tests.test_one_wiring:LotPicker"
instruments = ["AAPL"]
"""
    cfg = write_config(
        tmp_path,
        engine_id,
        strategies=strategies,
        market=f'source = "replay"\nreplay_quotes = "{quotes}"\nrate_hz = 250.0',
    )
    # the staleness guards off: a stall of this shared box must not make the run skip ticks or
    # refuse intents the simulated clock never sees as old
    text = cfg.read_text()
    for key in ("max_intent_age_ms", "max_backlog_ms"):
        text, n = re.subn(rf"(?m)^{key} = [0-9.]+", f"{key} = 0.0", text, count=1)
        assert n == 1, key
    # fewer processes and no database to start: the run's record is summary.json and the jsonl
    for section, key, value in (
        ("storage.postgres", "mode", '"off"'),
        ("inference", "enabled", "false"),
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def _backtest(cfg_path: Path) -> tuple[list[Any], list[Any], Any]:
    """`gekko backtest` as ops.cli builds it, keeping every order and fill it publishes."""
    from engine.backtest import InlineRuntime
    from ops.config import load_config
    from procs.build import build_market, build_venue

    cfg = load_config(cfg_path)
    ins = cfg.instrument_table()
    rt = InlineRuntime(
        ins,
        cfg.strategy_specs(),
        cfg.risk,
        build_venue(cfg, ins),
        build_market(cfg),
        exec_policy=cfg.exec,
        **cfg.portfolio.backtest_kwargs(),
    )
    fills: list[Any] = []
    publish = rt.publish

    def keep(ring: str, msg: Any) -> None:
        if ring == "events" and isinstance(msg, OrderPartiallyFilled):
            fills.append(msg)
        publish(ring, msg)

    rt.publish = keep  # type: ignore[method-assign]
    s = rt.run()
    return s["orders_sent"], fills, rt.portfolio


def test_run_and_backtest_give_the_same_orders_fills_positions_and_lots(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    cfg = _config(tmp_path, eid)
    r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "60")
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary_of(tmp_path)
    assert s["stop_reason"] == "feed finished"
    run_dir = tmp_path / "var" / "last_run"
    live_orders = [json.loads(x) for x in (run_dir / "orders.jsonl").read_text().splitlines()]
    live_fills = [json.loads(x) for x in (run_dir / "fills.jsonl").read_text().splitlines()]

    orders, fills, pf = _backtest(cfg)
    # positions and tax lots: exec's positions table (the run) and the backtest's portfolio;
    # the lot left open is the FIRST buy's (at 100.02): the sell closed the one it named
    p = pf.positions[AAPL]
    live_p = s["positions"]["AAPL"]
    assert (live_p["position"], live_p["fills"]) == (p.position, p.fills) == (10, 3)
    assert [(lot.qty, lot.px) for lot in p.book.lots] == [(10, 10002)]
    assert live_p["realized"] == pytest.approx(p.realized) == pytest.approx(10 * (101.0 - 99.02))
    assert live_p["avg_px"] == pytest.approx(p.avg_px) == pytest.approx(10002)
    # the run's own record (ops/report.py) keeps the same lots
    assert s["portfolio"]["realized"] == pytest.approx(p.realized)
    fill_keys = ("client_order_id", "fill_id", "side", "fill_px", "fill_qty")
    assert [tuple(f[k] for k in fill_keys) for f in live_fills] == [
        tuple(getattr(f, k) for k in fill_keys) for f in fills
    ]
    order_keys = ("client_order_id", "instrument_id", "side", "order_type", "px", "qty")
    live = [(o["type"], *(o[k] for k in order_keys), o.get("lots")) for o in live_orders]
    inline = [
        (type(o).__name__, *(getattr(o, k) for k in order_keys), [list(x) for x in o.lots])
        for o in orders
    ]
    assert [o[0] for o in inline] == ["NewOrder"] * 3
    assert inline[2][-1], "the sell names the lot it closes"
    assert live == inline
