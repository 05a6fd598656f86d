"""Is the shipped model's edge real after costs? ``CostAwareForecast`` backtested beside its
controls on the same markets: the model's forecasts, the same forecasts reversed, and with a
random sign (several seeds), each through ``gekko backtest``'s own build (ops/backtest_build.py).

Each run is config.toml with one strategy, ``CostAwareForecast`` on AAPL (the other instruments'
market runs as before: the model forecasts them all), on synthetic market seeds the shipped model
was not trained on (it was trained on seed 7). ``--margin 0`` takes the cost check out (every
forecast is traded, the costs still paid): the control that shows the edge before the rule.

    .venv/bin/python -m perf.cost_aware_controls --seeds 11 12 13 --events 1000000 \
        --random-seeds 1 2 3 --margins 1 0 [--sim-fee 0] [--base config.toml] [--json out.json]

Prints one markdown row per run: entries, fills, P&L before fees, fees, net, the max drawdown
of equity (currency), and how often the expected move paid for the trade (max |move| / cost).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.messages import Forecast
from engine.strategies.cost_aware import CostAwareForecast

ROOT = Path(__file__).resolve().parent.parent


class Probe(CostAwareForecast):
    """``CostAwareForecast`` that also records |expected move| / round-trip cost per decision."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.ratios: list[float] = []

    def entry_for(self, f: Forecast) -> int:
        self.last_cost = None
        want = super().entry_for(f)
        mid = self.ctx.mid(f.instrument_id)
        if self.last_cost and mid is not None:
            mu = math.fsum(f.point[: min(self.steps, len(f.point))])
            self.ratios.append(abs(mid * math.expm1(mu)) / self.last_cost)
        return want


def _set(text: str, section: str, key: str, value: object) -> str:
    """``key = value`` in ``[section]`` of a config text (the key's first line after it)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"[{section}]\n")
    for k in range(start + 1, len(lines)):
        if lines[k].startswith(f"{key} ="):
            lines[k] = f"{key} = {value}\n"
            return "".join(lines)
    raise ValueError(f"[{section}] {key} not found")


def config_text(
    base: Path, var: Path, seed: int, signal: str, rseed: int, margin: float, sim_fee: float | None
) -> str:
    """``base`` with ``Probe`` as the only strategy, the market's seed and ``var`` as var_dir."""
    s = base.read_text()
    s = s.replace('id = "gekko"', 'id = "costctl"', 1)
    s = s.replace('var_dir = "var"', f'var_dir = "{var}"', 1)
    s = s.replace(
        'model_dir = "models/shipped/default"', f'model_dir = "{ROOT}/models/shipped/default"'
    )
    s = _set(s, "market", "seed", seed)
    if sim_fee is not None:
        s = _set(s, "sim", "taker_fee_bps", sim_fee)
    start = s.index("[[strategies]]\nid = 1")
    end = s.index("# A target-weight rebalancer")
    block = (
        '[[strategies]]\nid = 3\npath = "perf.cost_aware_controls:Probe"\ninstruments = ["AAPL"]\n'
        f'[strategies.params]\nsize = 10\nsignal = "{signal}"\nseed = {rseed}\nmargin = {margin}\n\n'
    )
    return s[:start] + block + s[end:]


def run_one(
    base: Path,
    seed: int,
    signal: str,
    rseed: int,
    margin: float,
    events: int,
    sim_fee: float | None,
) -> dict:
    from ops.backtest_build import build_backtest
    from ops.config import load_config

    with tempfile.TemporaryDirectory(prefix="costctl-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_text(base, Path(tmp), seed, signal, rseed, margin, sim_fee))
        bt = build_backtest(load_config(path), events)
        summary = bt.runtime.run()
    strat: Probe = bt.runtime.host.slots[0].strategy
    pnl, an = summary["pnl"], summary["analytics"]
    gross = pnl["realized"] + pnl["unrealized"]
    return {
        "seed": seed,
        "signal": signal if signal != "random" else f"random({rseed})",
        "margin": margin,
        "entries": strat.entries,
        "fills": summary["fills"],
        "gross": gross,
        "fees": pnl["fees"],
        "net": pnl["net"],
        "max_dd": an["max_drawdown"] * an["start_equity"],
        "decisions": len(strat.ratios),
        "paid": sum(r > 1.0 for r in strat.ratios),
        "max_ratio": max(strat.ratios, default=0.0),
        "forecasts": strat.forecasts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--margins", type=float, nargs="+", default=[1.0, 0.0])
    ap.add_argument("--sim-fee", type=float, default=None, help="[sim] taker_fee_bps override")
    ap.add_argument("--json", default="")
    ap.add_argument("--base", type=Path, default=ROOT / "config.toml", help="the config to vary")
    a = ap.parse_args(argv)
    runs = [("model", 0), ("reversed", 0)] + [("random", r) for r in a.random_seeds]
    print(
        "| seed | margin | signal | forecasts | entries | fills | P&L before fees | fees | net | max DD | move > cost | max move/cost |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for margin in a.margins:
        for seed in a.seeds:
            for signal, rseed in runs:
                r = run_one(a.base, seed, signal, rseed, margin, a.events, a.sim_fee)
                rows.append(r)
                print(
                    f"| {r['seed']} | {r['margin']:g} | {r['signal']} | {r['forecasts']} | {r['entries']} "
                    f"| {r['fills']} | {r['gross']:+.2f} | {r['fees']:.2f} | {r['net']:+.2f} "
                    f"| {r['max_dd']:.2f} | {r['paid']}/{r['decisions']} | {r['max_ratio']:.3f} |",
                    flush=True,
                )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
