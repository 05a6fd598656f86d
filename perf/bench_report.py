"""pyperf suite: what the HTML report of a one-million-event backtest costs to build and write.

The report (ops/html_report.py) is written once, after the run stopped; this says how long a
trader waits for it at the end of a long backtest, against what the run already writes there.
Benchmarks, time per report:

- ``outputs-json`` (baseline): writing the same backtest's ``summary.json`` (as ``gekko
  backtest --json`` does) and its ``fills.jsonl`` (as the supervisor writes a run's);
- ``report-html``: ``ops.html_report.after_backtest``: gathering the report's data from the
  finished runtime (equity curve and marks, fills, risk events, latency histograms of a million
  ticks, the config), rendering every chart and writing the file.

The backtest itself (config.toml, inference off, ``--events N``, default 1,000,000) runs once;
what the report reads from it is kept in a pickle in the temp directory so pyperf's worker
processes do not rerun it (delete the file to rerun). Run ``python perf/bench_report.py
--fast``; the main process prints both times, their ratio and the report's size.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyperf  # noqa: E402

from ops.config import load_config  # noqa: E402


def _events() -> int:
    """``--events N`` (pyperf passes it on to its workers: they get no environment)."""
    for k, a in enumerate(sys.argv):
        if a == "--events" and k + 1 < len(sys.argv):
            return int(sys.argv[k + 1])
        if a.startswith("--events="):
            return int(a.split("=", 1)[1])
    return 1_000_000


EVENTS = _events()
CACHE = Path(tempfile.gettempdir()) / f"gekko-bench-report-{EVENTS}.pkl"
OUT = Path(tempfile.mkdtemp(prefix="gkbench"))  # this process's files, removed at its exit
atexit.register(shutil.rmtree, OUT, True)


def _config() -> Any:
    """config.toml with inference off (a backtest of the strategies, not of the model)."""
    text = (ROOT / "config.toml").read_text()
    at = text.index("enabled = true", text.index("[inference]"))
    text = text[:at] + "enabled = false" + text[at + len("enabled = true") :]
    path = OUT / "config.toml"
    path.write_text(text.replace('var_dir = "var"', f'var_dir = "{OUT / "var"}"'))
    return load_config(str(path))


def run_backtest(cfg: Any) -> dict[str, Any]:
    """The backtest ``gekko backtest`` runs (ops/cli.py), and what the report reads of it."""
    import itertools

    from engine.backtest import InlineRuntime
    from engine.md_rejects import MdValidator, RejectCounter, validated
    from procs.build import build_data_client, build_venue
    from procs.infer import with_forecasts

    ins = cfg.instrument_table()
    rejects = RejectCounter(cfg.market.on_bad_row)
    client = build_data_client(cfg, rejects)
    client.connect()
    client.subscribe(ins.ids)
    market = validated(itertools.islice(client.updates(), EVENTS), MdValidator(ins.ids), rejects)
    rt = InlineRuntime(
        ins,
        cfg.strategy_specs(),
        cfg.risk,
        build_venue(cfg, ins),
        with_forecasts(cfg, market),
        exec_policy=cfg.exec,
        **cfg.portfolio.backtest_kwargs(),
    )
    t = time.perf_counter()
    summary = rt.run()
    print(f"backtest: {rt.ticks} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    ts, eq, bench = rt.portfolio.equity_curve()
    return {
        "summary": {k: v for k, v in summary.items() if k != "orders_sent"},
        "curve": (ts, eq, bench),
        "marks": rt.portfolio.mark_curve(),
        "fill_log": rt.fill_log,
        "risk_events": rt.risk_events,
        "latencies_ns": rt.latencies_ns,
        "wall_ns_per_tick": rt.wall_ns_per_tick,
    }


def load() -> dict[str, Any]:
    if CACHE.exists():
        return pickle.loads(CACHE.read_bytes())
    data = run_backtest(_config())
    tmp = CACHE.with_suffix(f".{os.getpid()}")
    tmp.write_bytes(pickle.dumps(data))
    tmp.replace(CACHE)
    return data


class _Portfolio:
    """The two curves the report reads of the finished runtime's portfolio."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def equity_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.d["curve"]

    def mark_curve(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        return self.d["marks"]


DATA = load()
CFG = _config()
RT = SimpleNamespace(portfolio=_Portfolio(DATA), **{k: DATA[k] for k in (
    "fill_log", "risk_events", "latencies_ns", "wall_ns_per_tick")})  # fmt: skip
ENC = msgspec.json.Encoder()


def bench_outputs(loops: int) -> float:
    summary, fills = DATA["summary"], DATA["fill_log"]
    t0 = time.perf_counter()
    for _ in range(loops):
        (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        with open(OUT / "fills.jsonl", "wb") as f:
            for o in fills:
                f.write(ENC.encode({"type": type(o).__name__, **msgspec.structs.asdict(o)}) + b"\n")
    return time.perf_counter() - t0


def bench_report(loops: int) -> float:
    from ops.html_report import after_backtest

    t0 = time.perf_counter()
    for _ in range(loops):
        after_backtest(RT, DATA["summary"], CFG, OUT / "report.html")
    return time.perf_counter() - t0


def main() -> None:
    runner = pyperf.Runner(
        values=3,
        processes=4,
        add_cmdline_args=lambda cmd, args: cmd.extend(("--events", str(args.events))),
    )
    runner.argparser.add_argument("--events", type=int, default=1_000_000, help="backtest events")
    runner.metadata["description"] = f"HTML report of a {EVENTS}-event backtest vs its JSON outputs"
    args = runner.parse_args()
    b_json = runner.bench_time_func("outputs-json", bench_outputs)
    b_html = runner.bench_time_func("report-html", bench_report)
    if args.worker or b_json is None or b_html is None:
        return
    size = (OUT / "report.html").stat().st_size if (OUT / "report.html").exists() else 0
    if not size:
        bench_report(1)
        size = (OUT / "report.html").stat().st_size
    j, h = b_json.median(), b_html.median()
    print(f"\nbench_report summary (median), {EVENTS} events, {len(DATA['fill_log'])} fills:")
    print(f"  outputs-json  {j * 1e3:9.1f} ms  (summary.json + fills.jsonl)")
    print(f"  report-html   {h * 1e3:9.1f} ms  x{h / j:.1f} the baseline; {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
