"""Does the order-book direction model pay when the engine trades on it? Full `gekko backtest`
runs on the held-out part of real LOBSTER days, beside random-signal and reversed-signal
controls on the same events.

Per whole LOBSTER day (``models.lob_data.lobster_days``):

1. ``gekko micro-train --lobster <message file> --train-frac 0.7 --out <tmp>``: the model sees
   the first 70 % of the day's events only (as ``gekko micro-eval`` scores it);
2. the day from the first message after that split is written out as its own LOBSTER pair (the
   replay opens on that row's book, as LOBSTER's mid-day extracts do), so nothing the model
   trained on is traded;
3. ``gekko backtest``'s own build (``ops.backtest_build.build_backtest``) over config.toml with
   that pair as the market, ``[inference] micro_model_dir`` set (the backtest serves the model
   on every event: ``procs.infer_micro``) and one strategy, ``CostAwareForecast`` with
   ``source = "micro"`` about ``--notional`` a trade, run with ``signal`` = model, reversed and
   random (``--random-seeds``), at each ``--margins`` (1: enter only when the expected move
   beats the round trip; 0: every forecast that leans is traded, the costs still paid).

    .venv/bin/python -m perf.micro_controls --lobster <data>/lobster [--days AAPL-L1 AMZN-L1]
        [--margins 1 0] [--random-seeds 1 2 3] [--sim-fee 0.2] [--json out.json]

Prints one markdown row per run: forecasts, entries, fills, P&L before fees, fees, net, the max
drawdown of equity (currency), and how often the expected move paid for the trade.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from perf.cost_aware_controls import Probe, _set  # the same probe and config edit

ROOT = Path(__file__).resolve().parent.parent


def train(message: Path, out: Path, frac: float) -> dict:
    """``gekko micro-train`` on the day's first ``frac`` of events; the model's meta.json."""
    cmd = [sys.executable, "-m", "ops.cli", "micro-train", "--lobster", str(message)]
    cmd += ["--train-frac", str(frac), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads((out / "meta.json").read_text())


def held_out_pair(message: Path, book: Path, frac: float, out: Path) -> tuple[Path, Path, int]:
    """The day from the first message after the training split, as a LOBSTER pair in ``out``
    (same file names); the number of rows in it."""
    from models.lob_data import lobster_events

    ev = lobster_events(message, book).coalesced()
    split_ns = int(ev.ts[int(len(ev) * frac)])  # the first held-out event (micro-train's split)
    msg_lines = message.read_text().splitlines(keepends=True)
    book_lines = book.read_text().splitlines(keepends=True)
    first = next(
        k for k, ln in enumerate(msg_lines) if round(float(ln.split(",", 1)[0]) * 1e9) >= split_ns
    )
    out.mkdir(parents=True, exist_ok=True)
    m, b = out / message.name, out / book.name
    m.write_text("".join(msg_lines[first:]))
    b.write_text("".join(book_lines[first:]))
    return m, b, len(msg_lines) - first


def config_text(
    pair: tuple[Path, Path],
    levels: int,
    ticker: str,
    model: Path,
    var: Path,
    params: dict,
    fee_bps: float,
    path: str = "perf.micro_controls:Probe",
    maker_fee_bps: float | None = None,
) -> str:
    """config.toml replaying ``pair`` as ``ticker`` (the AAPL instrument renamed), serving the
    micro model, with the strategy at ``path`` (``Probe``) as the only one."""
    s = (ROOT / "config.toml").read_text()
    s = s.replace('id = "gekko"', 'id = "microctl"', 1)
    s = s.replace('var_dir = "var"', f'var_dir = "{var}"', 1)
    s = s.replace('symbol = "AAPL"', f'symbol = "{ticker}"', 1)
    s = s.replace('benchmark = "AAPL"', f'benchmark = "{ticker}"', 1)
    s = s.replace(
        'model_dir = "models/shipped/default"', f'model_dir = "{ROOT}/models/shipped/default"'
    )
    s = _set(s, "market", "source", '"replay"')
    s = _set(s, "market", "replay_lobster_messages", f'"{pair[0]}"')
    s = _set(s, "market", "replay_lobster_orderbook", f'"{pair[1]}"')
    s = _set(s, "market", "replay_lobster_levels", levels)
    s = _set(s, "market", "replay_lobster_symbol", f'"{ticker}"')
    s = _set(s, "inference", "micro_model_dir", f'"{model}"')
    s = _set(s, "sim", "taker_fee_bps", fee_bps)
    if maker_fee_bps is not None:
        s = _set(s, "sim", "maker_fee_bps", maker_fee_bps)
    start = s.index("[[strategies]]\nid = 1")
    end = s.index("# A target-weight rebalancer")
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items())
    block = (
        f'[[strategies]]\nid = 3\npath = "{path}"\ninstruments = ["{ticker}"]\n'
        f"[strategies.params]\n{body}\n"
    )
    return s[:start] + block + s[end:]


def run_one(text: str, tmp: Path) -> dict:
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    bt = build_backtest(parse_config(text, tmp / "config.toml"), 10**9)
    summary = bt.runtime.run()
    strat: Probe = bt.runtime.host.slots[0].strategy  # (Probe: path perf.micro_controls:Probe)
    pnl, an = summary["pnl"], summary["analytics"]
    micro = bt.overlay.micro
    return {
        "replay": summary["replay_engine"],
        "micro_forecasts": micro.forecasts if micro is not None else 0,
        "forecasts": strat.forecasts,
        "entries": strat.entries,
        "fills": summary["fills"],
        "risk_rejects": summary["risk_rejects"],
        "gross": pnl["realized"] + pnl["unrealized"],
        "fees": pnl["fees"],
        "net": pnl["net"],
        "max_dd": an["max_drawdown"] * an["start_equity"],
        "decisions": len(strat.ratios),
        "paid": sum(r > 1.0 for r in strat.ratios),
        "max_ratio": max(strat.ratios, default=0.0),
        "heals": bt.rejects.repairs.get("lobster_heals", 0),
    }


def main(argv: list[str] | None = None) -> int:
    from models.lob_data import lobster_days

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lobster", type=Path, required=True, help="a directory of LOBSTER pairs")
    ap.add_argument("--days", nargs="*", default=[], help="e.g. AAPL-L1 GOOG-L5 (default: all)")
    ap.add_argument("--train-frac", type=float, default=0.7)
    ap.add_argument("--margins", type=float, nargs="+", default=[1.0, 0.0])
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--notional", type=float, default=20_000.0, help="about this much a trade")
    ap.add_argument("--sim-fee", type=float, default=0.2, help="[sim] taker_fee_bps")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    days = lobster_days(a.lobster)
    names = a.days or list(days)
    runs = [("model", 0), ("reversed", 0)] + [("random", r) for r in a.random_seeds]
    head = "| day | margin | signal | micro forecasts | entries | fills | P&L before fees | fees | net | max DD | move > cost |"
    print(head)
    print("| --- " * (head.count("|") - 1) + "|")
    rows = []
    for name in names:
        message, book = days[name]
        ticker, levels = name.split("-L")[0], int(name.split("-L")[1])
        with tempfile.TemporaryDirectory(prefix="microctl-") as t:
            tmp = Path(t)
            meta = train(message, tmp / "model", a.train_frac)
            pair = held_out_pair(message, book, a.train_frac, tmp / "day")
            mid = first_mid(pair[1])
            size = max(1, round(a.notional / mid))
            for margin in a.margins:
                for signal, rseed in runs:
                    params = {
                        "source": "micro", "size": size, "steps": 1, "signal": signal,
                        "seed": rseed, "margin": margin,
                    }  # fmt: skip
                    text = config_text(
                        pair[:2], levels, ticker, tmp / "model", tmp, params, a.sim_fee
                    )
                    r = run_one(text, tmp)
                    label = signal if signal != "random" else f"random({rseed})"
                    r.update(day=name, margin=margin, signal=label, size=size, rows=pair[2])
                    r["train_rows"] = meta["train_rows"]
                    rows.append(r)
                    print(
                        f"| {name} | {margin:g} | {label} | {r['micro_forecasts']} | {r['entries']} "
                        f"| {r['fills']} | {r['gross']:+.2f} | {r['fees']:.2f} | {r['net']:+.2f} "
                        f"| {r['max_dd']:.2f} | {r['paid']}/{r['decisions']} |",
                        flush=True,
                    )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


def first_mid(book: Path) -> float:
    """The mid of a LOBSTER orderbook file's first row, in dollars."""
    cells = book.read_text().split("\n", 1)[0].split(",")
    return (int(cells[0]) + int(cells[2])) / 2 / 10_000


if __name__ == "__main__":
    sys.exit(main())
