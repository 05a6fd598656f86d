"""pyperf suite: backtest replay speed — Gekko's fast and exact paths, NautilusTrader, LOBSTER.

Benchmarks; pyperf's value is the time per event (events/s = 1 / value), the run alone timed
(data generated and loaded before it, on both sides):

- ``replay-fast`` / ``replay-exact`` / ``replay-nautilus``: ``--events`` (1,000,000) synthetic
  top-of-book quotes (a random walk of the mid, 1-2 tick spread, 1 ms apart) through an EMA
  crossover taker that never trades (``threshold_ticks`` beyond any move): Gekko's
  ``MomentumTaker`` in ``InlineRuntime`` with ``engine="fast"`` / ``"exact"`` against the
  ``SimExchange``, and the same logic as a NautilusTrader ``Strategy`` in its
  ``BacktestEngine`` (perf/_nautilus_ema.py), fed the same quotes through a temporary file.
- ``trading-fast`` / ``trading-exact`` / ``trading-nautilus``: ``--trade-events`` (50,000) of
  those quotes, the taker trading on every crossover (fast 10, slow 40, one lot, IOC limit
  two ticks through). Both sides' order counts are printed: the same decisions, or a bug.
- ``lobster-fast`` / ``lobster-exact``: the LOBSTER day (GOOG 2012-06-21, 5 levels, the
  shared data folder or ``--lobster-dir``) replayed from the file pair
  (``ReplaySource.from_lobster``) with the momentum taker: per event of the replay (deltas,
  trades, the opening snapshot).
- ``lobster-top-fast`` / ``lobster-top-exact``: the same day with the taker's
  ``updates_on = "top"`` (it hears the best bid / ask changes, not the deeper deltas: the fast
  path applies those in its kernel without calling Python); its goal is set against
  ``lobster-exact``, today's taker on today's path.
- ``lobster-rebuild-numba`` / ``lobster-rebuild-python``: the book reconstruction alone, per
  LOBSTER message: ``engine.lobster_rows.lobster_rows`` against ``iter_book_deltas``
  (trades included).
- ``infer-on`` / ``infer-off``: ``gekko backtest`` on the repository's config.toml
  (``ops.backtest_build.build_backtest``, ``--infer-events`` events), with ``[inference]`` as
  shipped (its share: the ``ForecastOverlay``'s own ``busy_ns`` over the run's wall time) and
  with it off.

NautilusTrader is never a dependency: the suite runs its side when ``NAUTILUS_PYTHON`` names a
Python >= 3.12 with ``nautilus_trader`` installed, and otherwise reports Gekko alone and says so.
Until ``InlineRuntime`` has an ``engine`` argument the ``-fast`` benchmarks are skipped; a
fast run the runtime declined (``replay_note``) is printed as such.

``python perf/bench_backtest.py --fast`` (``--only REGEX`` runs a subset). The main process
prints events/s, the ratios and the issue's goals.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402

LOBSTER_DIR = ROOT.parent / "shared" / "data" / "lobster"
GOOG = "GOOG_2012-06-21_34200000_57600000_{}_5.csv"
BENCHMARKS = (
    "replay-fast",
    "replay-exact",
    "replay-nautilus",
    "trading-fast",
    "trading-exact",
    "trading-nautilus",
    "lobster-fast",
    "lobster-exact",
    "lobster-top-fast",
    "lobster-top-exact",
    "lobster-rebuild-numba",
    "lobster-rebuild-python",
    "infer-on",
    "infer-off",
)
#: the taker's params: (fast, slow, threshold_ticks, slippage_ticks, size)
NEVER = (10, 40, 1e9, 2, 1)
TRADING = (10, 40, 0.0, 2, 1)
T0_NS = 1_704_186_000 * 10**9  # 2024-01-02 09:00 UTC


# --- data (main process) -----------------------------------------------------------------------


def make_quotes(n: int, seed: int = 7) -> np.ndarray:
    """(n, 5) int64: ts_event, bid_px, bid_qty, ask_px, ask_qty (ticks of 0.01, shares)."""
    rng = np.random.default_rng(seed)
    bid = 10_000 + np.cumsum(rng.choice([-1, 0, 1], size=n, p=[0.3, 0.4, 0.3]))
    ask = bid + rng.choice([1, 2], size=n)
    ts = T0_NS + np.arange(n, dtype=np.int64) * 1_000_000
    sizes = rng.integers(100, 1000, (2, n))
    return np.stack([ts, bid, sizes[0], ask, sizes[1]], axis=1).astype(np.int64)


# --- Gekko (workers) ---------------------------------------------------------------------------


class QuoteRows:
    """A columnar source of prepared quotes (engine.md_columns): rows and messages built
    before the run, as Nautilus's ticks are."""

    def __init__(self, q: np.ndarray) -> None:
        from engine.md_columns import BATCH_ROWS, MdKind, empty, to_messages

        rows = empty(len(q))
        rows["ts_event"], rows["instrument_id"], rows["kind"] = q[:, 0], 1, MdKind.QUOTE
        rows["bid_px"], rows["bid_qty"], rows["ask_px"], rows["ask_qty"] = q[:, 1:].T
        rows["seq"] = np.arange(1, len(q) + 1)
        self.rows = rows
        self._batches = [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]
        self._messages = list(to_messages(rows))

    def preamble(self) -> list[object]:
        return []

    def batches(self) -> Any:
        return iter(self._batches)

    def __iter__(self) -> Any:
        return iter(self._messages)


def has_fast() -> bool:
    from engine.backtest import InlineRuntime

    return "engine" in inspect.signature(InlineRuntime).parameters


def gekko_runtime(source: Any, params: tuple, engine: str, updates_on: str = "book") -> Any:
    from engine.backtest import InlineRuntime
    from engine.instruments import Instrument
    from engine.risk import RiskLimits
    from engine.strategies.momentum import MomentumTaker
    from engine.strategy_host import StrategySpec
    from engine.venues.sim import SimExchange

    fast, slow, threshold, slip, size = params
    ins = [Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0)]
    spec = StrategySpec(
        MomentumTaker,
        {"fast": fast, "slow": slow, "threshold_ticks": threshold, "slippage_ticks": slip,
         "size": size, "updates_on": updates_on},
        instruments=[1],
    )  # fmt: skip
    limits = RiskLimits.off(max_order_notional=1e9, max_position_lots=1000, max_open_orders=100)
    kw = {"engine": engine} if has_fast() else {}
    return InlineRuntime(ins, [spec], limits, SimExchange(ins), source, **kw)


class Case:
    """One benchmark's prepared inputs in a worker; ``run()`` returns (seconds, info)."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args, self.name = args, name
        self.kind, _, self.side = name.partition("-")
        self.updates_on = "top" if self.side.startswith("top-") else "book"
        self.side = self.side.removeprefix("top-")
        data = Path(args.data_dir)
        self.events = json.loads((data / "events.json").read_text())[name]
        self.params = TRADING  # the LOBSTER day's taker trades
        if self.kind in ("replay", "trading"):
            self.file = data / f"{self.kind}.npy"
            self.params = NEVER if self.kind == "replay" else TRADING
            if self.side != "nautilus":
                self.source = QuoteRows(np.load(self.file))
                self._gekko(QuoteRows(np.load(self.file)[:2000]))  # warm (numba, imports)
        elif self.kind == "lobster" and self.side not in ("fast", "exact"):
            from engine.lobster import read_lobster

            d = Path(args.lobster_dir)
            mp, op = d / GOOG.format("message"), d / GOOG.format("orderbook")
            self.msgs, self.books = read_lobster(mp, op)
            self._rebuild(2000)  # warm: load the kernel from numba's cache
        elif self.kind == "lobster" and self.side == "fast":
            self._lobster_day()  # warm: load the fast path's kernels from numba's cache

    def _gekko(self, source: Any) -> tuple[float, dict[str, Any]]:
        rt = gekko_runtime(source, self.params, self.side, self.updates_on)
        t0 = time.perf_counter()
        s = rt.run()
        wall = time.perf_counter() - t0
        return wall, _info(rt, s)

    def run(self) -> tuple[float, dict[str, Any]]:
        if self.kind in ("replay", "trading"):
            if self.side == "nautilus":
                return run_nautilus(self.args.nautilus, self.file, self.params)
            return self._gekko(self.source)
        if self.kind == "lobster" and self.side in ("fast", "exact"):
            return self._lobster_day()
        if self.kind == "lobster":
            return self._rebuild()
        return self._infer()

    def _lobster_day(self) -> tuple[float, dict[str, Any]]:
        from engine.sources.replay import ReplaySource

        d = Path(self.args.lobster_dir)
        src = ReplaySource.from_lobster(
            d / GOOG.format("message"), d / GOOG.format("orderbook"), 5, 1, price_divisor=100
        )
        return self._gekko(src)

    def _rebuild(self, first: int | None = None) -> tuple[float, dict[str, Any]]:
        from engine.lobster import iter_book_deltas
        from engine.lobster_rows import lobster_rows

        msgs, books = self.msgs[:first], self.books[:first]
        t0 = time.perf_counter()
        if self.side.endswith("numba"):
            n = sum(len(b) for b in lobster_rows(msgs, books, include_trades=True))
        else:
            n = sum(1 for _ in iter_book_deltas(msgs, books, include_trades=True))
        return time.perf_counter() - t0, {"rows": n}

    def _infer(self) -> tuple[float, dict[str, Any]]:
        from ops.backtest_build import build_backtest
        from ops.config import load_config

        overlay = {} if self.side == "on" else {"inference": {"enabled": False}}
        cfg = load_config(ROOT / "config.toml", overlay=overlay)
        made = _record_overlays()
        rt = build_backtest(cfg, events=self.events).runtime
        t0 = time.perf_counter()
        s = rt.run()
        wall = time.perf_counter() - t0
        busy = sum(ov.busy_ns for ov in made) / 1e9
        return wall, _info(rt, s) | {"infer_s": busy, "infer_share": busy / wall}


def _record_overlays() -> list[Any]:
    """The ``ForecastOverlay``s the next backtest builds (their ``busy_ns`` is inference's
    own time): ``procs.infer.ForecastOverlay`` becomes a subclass that keeps its instances."""
    import procs.infer as infer

    base = getattr(infer.ForecastOverlay, "_bench_base", infer.ForecastOverlay)
    made: list[Any] = []

    class Recorded(base):  # type: ignore[misc,valid-type]
        _bench_base = base

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    infer.ForecastOverlay = Recorded
    return made


def _info(rt: Any, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "orders": s.get("orders"),
        "fills": s.get("fills"),
        "ticks": s.get("ticks"),
        "engine": getattr(rt, "replay_engine", "exact"),
        "note": getattr(rt, "replay_note", ""),
    }


def run_nautilus(python: str, file: Path, params: tuple) -> tuple[float, dict[str, Any]]:
    """perf/_nautilus_ema.py under ``python``: (its engine.run() seconds, its JSON line)."""
    cmd = [python, str(ROOT / "perf" / "_nautilus_ema.py"), str(file), *map(str, params)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_nt_env())
    if out.returncode != 0:
        raise RuntimeError(f"NautilusTrader run failed:\n{out.stderr[-2000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return float(info["wall_s"]), info


def _nt_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # Gekko's venv must not leak into the other interpreter
    env["PYTHONWARNINGS"] = "ignore"
    return env


_CASES: dict[str, Case] = {}


def make_func(args: argparse.Namespace, name: str) -> Any:
    def func(loops: int) -> float:
        case = _CASES.get(name)
        if case is None:
            case = _CASES[name] = Case(args, name)
        total = 0.0
        for _ in range(loops):
            wall, info = case.run()
            total += wall
        info["events"] = case.events
        (Path(args.data_dir) / f"{name}.{os.getpid()}.json").write_text(json.dumps(info))
        return total

    return func


# --- summary (main process) ----------------------------------------------------------------------


def _infos(data_dir: str, name: str) -> dict[str, Any]:
    files = sorted(Path(data_dir).glob(f"{name}.*.json"))
    return json.loads(files[-1].read_text()) if files else {}


def print_summary(
    results: dict[str, pyperf.Benchmark], data_dir: str, skipped: dict[str, str]
) -> None:
    rate = {n: 1.0 / b.median() for n, b in results.items()}
    info = {n: _infos(data_dir, n) for n in results}
    w = print
    w("")
    w(f"bench_backtest — {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    w(f"{'benchmark':<24} {'events':>10} {'events/s':>12} {'orders':>8} {'fills':>8}  note")
    for n in BENCHMARKS:
        if n in rate:
            i = info[n]
            note = i.get("engine", "") + (f" ({i['note']})" if i.get("note") else "")
            orders = i.get("orders", i.get("rows", ""))
            w(
                f"{n:<24} {i.get('events', 0):>10,} {rate[n]:>12,.0f} {orders!s:>8} "
                f"{i.get('fills', i.get('filled_orders', ''))!s:>8}  {note}"
            )
        elif n in skipped:
            w(f"{n:<24} {'skipped':>10}  {skipped[n]}")
    w("")

    def ratio(a: str, b: str) -> float | None:
        return rate[a] / rate[b] if a in rate and b in rate else None

    def goal(label: str, value: float | None, target: float, unit: str = "x") -> None:
        mark = "n/a" if value is None else ("met" if value >= target else "NOT met")
        shown = "not measured" if value is None else f"{value:,.2f}{unit}"
        w(f"[{mark:^7}] {label}: {shown}")

    for kind in ("replay", "trading"):
        a, b = info.get(f"{kind}-fast") or info.get(f"{kind}-exact"), info.get(f"{kind}-nautilus")
        if a and b:
            same = "same" if a.get("orders") == b.get("orders") else "DIFFERENT"
            w(f"{kind}: orders Gekko {a.get('orders')} / Nautilus {b.get('orders')} ({same})")
    goal("pure replay >= 3x NautilusTrader", ratio("replay-fast", "replay-nautilus"), 3)
    goal("trading >= 10x NautilusTrader", ratio("trading-fast", "trading-nautilus"), 10)
    goal("LOBSTER day fast >= 10x exact", ratio("lobster-fast", "lobster-exact"), 10)
    goal(
        "LOBSTER day, taker on the top of book, fast >= 10x today's exact",
        ratio("lobster-top-fast", "lobster-exact"),
        10,
    )
    goal("LOBSTER reconstruction >= 1,000,000 msg/s", rate.get("lobster-rebuild-numba"), 1e6, "/s")
    for a, b in (
        ("replay-fast", "replay-exact"),
        ("replay-exact", "replay-nautilus"),
        ("trading-fast", "trading-exact"),
        ("trading-exact", "trading-nautilus"),
        ("lobster-top-fast", "lobster-top-exact"),
        ("lobster-rebuild-numba", "lobster-rebuild-python"),
    ):
        r = ratio(a, b)
        if r is not None:
            w(f"[ ratio ] {a} / {b}: {r:,.2f}x")
    share = info.get("infer-on", {}).get("infer_share")
    mark = "n/a" if share is None else ("met" if share <= 0.2 else "NOT met")
    shown = "not measured" if share is None else f"{share:.1%} (ForecastOverlay.busy_ns / run)"
    w(f"[{mark:^7}] inference <= 20% of the default backtest: {shown}")
    r = ratio("infer-off", "infer-on")
    if r is not None:
        w(f"[ ratio ] infer-off / infer-on: {r:,.2f}x (forecasts steer orders: not the same run)")


# --- main ------------------------------------------------------------------------------------------


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    for opt in ("data_dir", "lobster_dir", "nautilus"):
        if getattr(args, opt):
            cmd.extend((f"--{opt.replace('_', '-')}", getattr(args, opt)))
    cmd.extend(("--infer-events", str(args.infer_events)))
    if args.only:
        cmd.extend(("--only", args.only))


def _skips(args: argparse.Namespace) -> dict[str, str]:
    why: dict[str, str] = {}
    if not args.nautilus:
        msg = "NAUTILUS_PYTHON is unset: Gekko alone (set it to a Python >= 3.12 with nautilus_trader)"
        why.update({"replay-nautilus": msg, "trading-nautilus": msg})
    if not has_fast():
        why.update(
            dict.fromkeys(
                ("replay-fast", "trading-fast", "lobster-fast", "lobster-top-fast"),
                "no fast path yet",
            )
        )
    if not (Path(args.lobster_dir) / GOOG.format("message")).is_file():
        msg = f"no LOBSTER day in {args.lobster_dir} (--lobster-dir)"
        why.update({n: msg for n in BENCHMARKS if n.startswith("lobster")})
    return why


def _prepare(args: argparse.Namespace) -> None:
    """The quote files and ``events.json`` (events per benchmark: pyperf's inner loops)."""
    d = Path(args.data_dir)
    np.save(d / "replay.npy", make_quotes(args.events))
    np.save(d / "trading.npy", make_quotes(args.trade_events, seed=8))
    events = dict.fromkeys(("replay-fast", "replay-exact", "replay-nautilus"), args.events)
    events |= dict.fromkeys(
        ("trading-fast", "trading-exact", "trading-nautilus"), args.trade_events
    )
    events |= {"infer-on": args.infer_events, "infer-off": args.infer_events}
    day = Path(args.lobster_dir)
    if (day / GOOG.format("message")).is_file():
        from engine.lobster import read_lobster_messages
        from engine.sources.replay import ReplaySource

        mp, op = day / GOOG.format("message"), day / GOOG.format("orderbook")
        src = ReplaySource.from_lobster(mp, op, 5, 1)
        n = len(src.preamble()) + sum(len(b) for b in src.batches())
        events |= dict.fromkeys(
            ("lobster-fast", "lobster-exact", "lobster-top-fast", "lobster-top-exact"), n
        )
        n = len(read_lobster_messages(mp))
        events |= {"lobster-rebuild-numba": n, "lobster-rebuild-python": n}
    (d / "events.json").write_text(json.dumps(events))


def main() -> None:
    runner = pyperf.Runner(
        processes=1, values=3, warmups=0, loops=1, add_cmdline_args=_add_cmdline_args
    )
    runner.metadata["description"] = "backtest replay: Gekko fast / exact, NautilusTrader, LOBSTER"
    ap = runner.argparser
    ap.add_argument("--only", metavar="REGEX", default=None, help="benchmarks matching REGEX")
    ap.add_argument("--events", type=int, default=1_000_000, help="quotes of the pure replay")
    ap.add_argument("--trade-events", type=int, default=50_000, help="quotes of the trading run")
    ap.add_argument("--infer-events", type=int, default=200_000, help="events of infer-on/off")
    ap.add_argument("--lobster-dir", default=str(LOBSTER_DIR), help="folder of the GOOG pair")
    ap.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    nt = os.environ.get("NAUTILUS_PYTHON", "")
    ap.add_argument("--nautilus", default=nt, help=argparse.SUPPRESS)
    args = runner.parse_args()
    owned = None
    if not args.worker and not args.data_dir:
        owned = args.data_dir = tempfile.mkdtemp(prefix="bench_backtest_")
        _prepare(args)
    events = json.loads((Path(args.data_dir) / "events.json").read_text())
    skipped = _skips(args)
    results: dict[str, pyperf.Benchmark] = {}
    try:
        for name in BENCHMARKS:
            if (args.only and not re.search(args.only, name)) or name in skipped:
                continue
            bench = runner.bench_time_func(name, make_func(args, name), inner_loops=events[name])
            _CASES.clear()
            if bench is not None:
                results[name] = bench
        if not args.worker:
            print_summary(results, args.data_dir, skipped)
    finally:
        if owned:
            shutil.rmtree(owned, ignore_errors=True)


if __name__ == "__main__":
    main()
