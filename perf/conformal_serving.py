"""Do the served bands keep their nominal coverage through a volatility regime change?

Not a pyperf suite: the measurement behind docs/forecasting.md ("Probabilistic evaluation and
calibration", adaptive conformal in serving). A small NHITS is trained on the bars before
``--split`` (split-conformal offsets and their residuals from its validation block, as ``gekko
train`` stores them), then every later bar is replayed through the infer engine
(``procs.infer.InferEngine``, one quote per open / high / low / close and one trade per bar,
each trading bar on the next bar slot so no empty bar is invented) twice: ``[inference]
conformal = "fixed"`` and ``"adaptive"``. Each forecast's step-1 band (the outer quantiles) is
scored against the next bar's realised log return; the table gives the coverage per calendar
year (per month for a capture under two years long), its range over rolling 250-bar windows,
and over the whole held-back span, for each mode.

    .venv/bin/python -m perf.conformal_serving                          # S&P 500, 2007-2018
    .venv/bin/python -m perf.conformal_serving --source tsd:btc15m --split 2021-10-15
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.messages import Forecast, Quote, Trade
from ops.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
PX = 1e4  # price ticks per unit: a mid moves by 1e-8 of itself at S&P levels


def train(bars: Any, split_ns: int, out: Path, args: argparse.Namespace) -> dict:
    """The model of the bars before ``split_ns`` (final split: the last 20 % validates and
    calibrates), written to ``out`` with its conformal entry."""
    from models.conformal import fit_split
    from models.data import final_split, make_windows
    from models.export import write_model_dir
    from models.train import TrainConfig, fit, predict

    n = int(np.searchsorted(bars.ts_ns, split_ns))
    x, y = make_windows(bars.features()[:n], args.input_size, args.horizon)
    f = final_split(len(x), args.horizon)
    cfg = TrainConfig(
        input_size=args.input_size, horizon=args.horizon, epochs=args.epochs, seed=args.seed
    )
    tr, va = slice(*f.train), slice(*f.val)
    res = fit(x[tr], y[tr], x[va], y[va], cfg)
    src = f"validation block of the final fit ({va.stop - va.start} windows)"
    conformal = fit_split(y[va], predict(res.model, x[va])[1], cfg.quantiles, source=src)
    return write_model_dir(
        out,
        name="conformal-check",
        version="1",
        cfg=cfg,
        result=res,
        bar_seconds=bars.bar_seconds(),
        data=f"{args.source} before {args.split}",
        data_sha256="",
        metrics={},
        checkpoint=False,
        conformal=conformal.to_meta(),
        instruments=[bars.symbol],
    )


def events(bars: Any, start: int, bar_ns: int, iid: int) -> list[Any]:
    """Bars ``start..`` as messages, each on the bar slot after the one before (no gap bars)."""
    out: list[Any] = []
    for k in range(start, len(bars)):
        t0 = int(bars.ts_ns[start]) + (k - start) * bar_ns
        for j, p in enumerate((bars.open[k], bars.high[k], bars.low[k], bars.close[k])):
            px = int(round(p * PX))
            out.append(Quote(iid, px, 1, px, 1, t0 + (j + 1) * bar_ns // 8, 0))
        if bars.volume[k] > 0:
            out.append(Trade(iid, px, int(bars.volume[k]), 1, t0 + 5 * bar_ns // 8, 0))
    return out


def serve(model_dir: Path, msgs: list[Any], bar_s: float, mode: str, gamma: float) -> Any:
    """Forecasts of the messages through InferEngine; with the engine, for its ACI counts."""
    from procs.infer import InferEngine

    text = (ROOT / "config.toml").read_text()
    a = text.index("\n[inference]\n") + 1
    b = text.index("\n[", a + 1)
    sec = text[a:b]
    for key, v in (
        ("model_dir", f'"{model_dir}"'),
        ("bar_seconds", repr(bar_s)),
        ("instruments", '["AAPL"]'),
        ("mismatch", '"warn"'),  # trained on another symbol's bars: that is the point
        ("conformal", f'"{mode}"'),
        ("conformal_gamma", repr(gamma)),
    ):
        sec, k = re.subn(rf"(?m)^{key} = .*$", f"{key} = {v}", sec)
        assert k == 1, key
    cfg = parse_config(text[:a] + sec + text[b:])
    eng = InferEngine(cfg, clock=lambda: 0)
    eng.poll_model()
    fcs: list[tuple[int, Forecast]] = []
    for i, m in enumerate(msgs):
        fcs += [(i, f) for f in eng.on_market_data(m) if isinstance(f, Forecast)]
    return eng, fcs


def score(fcs: list[tuple[int, Forecast]], msgs: list[Any], bars: Any, start: int, bar_ns: int):
    """Per forecast: (bar index of its step 1, inside the step-1 band?)."""
    logc = np.log(np.round(bars.close * PX))
    out = []
    for _, f in fcs:
        k = start + (f.ts_event - int(bars.ts_ns[start])) // bar_ns  # the closing event's bar
        if k >= len(bars) or k < 1:
            continue
        y = logc[k] - logc[k - 1]
        out.append((k, f.quantiles[0][0] <= y <= f.quantiles[-1][0]))
    return out


def measure(bars: Any, split_ns: int, args: argparse.Namespace) -> tuple[dict, dict]:
    """One seed: train, then serve the held-back bars in each mode; (meta, rows by mode)."""
    tmp = Path(tempfile.mkdtemp(prefix="conformal-check-"))
    meta = train(bars, split_ns, tmp / "m", args)
    bar_ns = int(round(bars.bar_seconds() * 1e9))
    test0 = int(np.searchsorted(bars.ts_ns, split_ns))
    start = test0 - args.input_size  # the first window ends on the last training bar
    msgs = events(bars, start, bar_ns, 1)
    span_years = (bars.ts_ns[-1] - bars.ts_ns[test0]) / (365.25 * 86400e9)
    unit = "Y" if span_years >= 2 else "M"  # calendar years, or months of a short capture
    period = bars.ts_ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]").astype(str)
    runs = [("fixed", 0.0)] + [("adaptive", float(g)) for g in args.gamma.split(",")]
    rows: dict[str, Any] = {}
    for mode, g in runs:
        eng, fcs = serve(tmp / "m", msgs, bars.bar_seconds(), mode, g or 0.005)
        sc = [(k, h) for k, h in score(fcs, msgs, bars, start, bar_ns) if k >= test0]
        k = np.array([a for a, _ in sc])
        hit = np.array([b for _, b in sc], dtype=float)
        per = {str(y): float(hit[period[k] == y].mean()) for y in np.unique(period[k])}
        roll = np.convolve(hit, np.ones(250) / 250, mode="valid") if len(hit) >= 250 else hit
        name = mode if mode == "fixed" else f"adaptive γ={g:g}"
        rows[name] = {
            "overall": float(hit.mean()),
            "n": len(hit),
            "per_period": per,
            "rolling_250": [float(roll.min()), float(roll.max())],
        }
        if eng.aci is not None:  # the engine's own step-1 counts (all bars served)
            a, f, n = eng.aci.coverage()
            rows[name]["engine_counts"] = {"served": a, "fixed": f, "n": n}
    return meta, rows


def table(rows: dict) -> None:
    ys = sorted({y for r in rows.values() for y in r["per_period"]})
    head = ["bands", "overall", "rolling 250 min-max", *ys]
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for name, r in rows.items():
        lo, hi = r["rolling_250"]
        cells = [name, f"{100 * r['overall']:.1f}%", f"{100 * lo:.0f}-{100 * hi:.0f}%"]
        cells += [f"{100 * r['per_period'][y]:.0f}" if y in r["per_period"] else "" for y in ys]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default="arch:sp500", help="arch:sp500 | arch:nasdaq | tsd:btc15m")
    p.add_argument("--split", default="2007-01-01", help="held back from this date (UTC)")
    p.add_argument("--gamma", default="0.005", help="comma-separated conformal_gamma values")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--horizon", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args()
    logging.getLogger("gekko").setLevel(logging.ERROR)  # drift and mismatch lines: not the point
    from models.data import load_builtin

    (bars,) = load_builtin(args.source)
    split = dt.datetime.fromisoformat(args.split).replace(tzinfo=dt.UTC)
    split_ns = int(split.timestamp() * 1e9)
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict[int, dict] = {}
    for seed in seeds:
        args.seed = seed
        meta, out[seed] = measure(bars, split_ns, args)
        q = meta["quantiles"]
        print(
            f"\n{args.source}, seed {seed}: trained before {args.split} ({meta['architecture']}, "
            f"calibration: {meta['conformal']['source']}), held back "
            f"{out[seed]['fixed']['n']} bars; step-1 band {q[0]:g}-{q[-1]:g}, nominal "
            f"{100 * (q[-1] - q[0]):.0f}%\n"
        )
        table(out[seed])
    if len(seeds) > 1:
        print(f"\noverall coverage over seeds {args.seeds}: mean ± sd (min-max)\n")
        print("| bands | overall | min-max |\n| --- | --- | --- |")
        for name in out[seeds[0]]:
            v = np.array([out[s][name]["overall"] for s in seeds]) * 100
            print(
                f"| {name} | {v.mean():.1f} ± {v.std(ddof=1):.1f}% | {v.min():.1f}-{v.max():.1f}% |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
