"""What a Prometheus scrape every second costs the hot path: tick-to-order with and without it.

The pipeline is ``perf/bench_pipeline.py``'s (``perf._pipeline.PipelineSession``): strategy, risk
and exec as worker processes, this process playing the feed, one Quote per tick and its order's
acknowledgement awaited. Beside it runs a second process playing the supervisor's part: the
exporter (``ops.exporter.Exporter``, attached to the pipeline's shared memory exactly as
``gekko run`` attaches it) and a scraper that GETs ``/metrics`` once a second while the round
says so. Rounds alternate, scrape off / on, back to back in the same run, so both modes see the
same machine state; the exporter process is up in both (only the scrape differs).

Per mode it reports the publish-to-ack time the driver measures and exec's own tick-to-order
(its shm histogram: the tick's ``ts_recv`` to the order handed to the venue), the ratio on/off,
and the noise: the spread of the per-round medians of the off rounds. The scrape's cost is
"within noise" when the on rounds' median lies inside that spread.

Why not ``pyperf.Runner``: it runs one benchmark's worker processes after the other, never
alternating two modes on one warm pipeline; rounds here are timed by the same clocks pyperf uses.

Run: ``python perf/bench_exporter.py`` (``--rounds 10 --round-s 5 --wait block``; ``--pin
D,S,R,E`` pins the driver and the three workers; ``--exporter-cpu N`` pins the exporter
process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

WARM_TICKS = 200
SCRAPE_EVERY_S = 1.0


# --- the supervisor's part: exporter + scraper (its own process) ----------------------------------
def exporter_main(config_path: str, cpu: int | None) -> int:
    """Serve the engine's metrics; scrape them once a second while told "on" on stdin."""
    from ops.config import load_config
    from ops.exporter import Exporter

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    cfg = load_config(config_path)
    cfg.metrics.listen = "127.0.0.1:0"
    ex = Exporter(cfg, 0, dict)
    if not ex.start():
        print("error exporter did not start", flush=True)
        return 1
    on = threading.Event()
    quit_ = threading.Event()
    scrapes = [0, 0]  # count, bytes

    def scraper() -> None:
        url = f"http://{ex.address}/metrics"
        while not quit_.is_set():
            if on.is_set():
                with urllib.request.urlopen(url, timeout=5) as r:
                    scrapes[1] += len(r.read())
                scrapes[0] += 1
            quit_.wait(SCRAPE_EVERY_S)

    t = threading.Thread(target=scraper, daemon=True)
    t.start()
    print(f"ready {ex.address}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "on":
            on.set()
        elif cmd == "off":
            on.clear()
        elif cmd == "quit":
            break
        print(f"ok {scrapes[0]} {scrapes[1]}", flush=True)
    quit_.set()
    t.join(5)
    ex.stop()
    return 0


class ExporterProcess:
    def __init__(self, config_path: Path, cpu: int | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(config_path)]
        if cpu is not None:
            cmd += ["--exporter-cpu", str(cpu)]
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        line = self._line()
        if not line.startswith("ready"):
            raise RuntimeError(f"exporter process: {line!r}")
        self.address = line.split()[1]

    def _line(self) -> str:
        assert self.p.stdout is not None
        return self.p.stdout.readline().strip()

    def say(self, cmd: str) -> tuple[int, int]:
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        _, n, size = self._line().split()
        return int(n), int(size)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.p.stdin is not None
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)


# --- the driver ----------------------------------------------------------------------------------
def _exec_hist(session: Any) -> Any:
    return session.histograms()["exec"]


def _delta(after: Any, before: Any) -> Any:
    from shm.metrics import H_BUCKETS, H_COUNT, H_SUM, HistogramSnapshot

    w = after.words.copy()
    w[H_BUCKETS:] -= before.words[H_BUCKETS:]
    w[H_COUNT] -= before.words[H_COUNT]
    w[H_SUM] -= before.words[H_SUM]
    return HistogramSnapshot("exec", w)


def run_round(session: Any, seconds: float) -> tuple[list[float], Any]:
    """Ticks for ``seconds``: each tick's publish-to-ack (s), and exec's histogram of them."""
    before = _exec_hist(session)
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        out.append(session.tick())
    return out, _delta(_exec_hist(session), before)


def _us(s: float) -> str:
    return f"{s * 1e6:9.1f} us"


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def report(rounds: list[tuple[str, list[float], Any]], scrapes: tuple[int, int], args: Any) -> str:
    from shm.metrics import merge_snapshots

    lines = []
    w = lines.append
    w("")
    w("=" * 88)
    w(
        f"bench_exporter: {os.cpu_count()} CPUs, wait={args.wait}, {len(rounds)} rounds of "
        f"{args.round_s:g} s alternated (off, on, ...), scrape every {SCRAPE_EVERY_S:g} s in 'on'"
    )
    w(f"scrapes: {scrapes[0]} ({scrapes[1] / max(1, scrapes[0]) / 1024:.0f} KiB each)")
    w("=" * 88)
    w(f"{'mode':<10} {'ticks':>7} {'ack p50':>12} {'ack p90':>12} {'ack p99':>12}   "
      f"{'t2o p50':>12} {'t2o p99':>12}")  # fmt: skip
    med: dict[str, float] = {}
    for mode in ("off", "on"):
        ticks = [t for m, ts, _ in rounds if m == mode for t in ts]
        h = merge_snapshots([s for m, _, s in rounds if m == mode], "exec")
        med[mode] = _pct(ticks, 50)
        w(
            f"{'scrape ' + mode:<10} {len(ticks):>7} {_us(_pct(ticks, 50))} {_us(_pct(ticks, 90))} "
            f"{_us(_pct(ticks, 99))}   {_us(h.percentile(50) / 1e9)} {_us(h.percentile(99) / 1e9)}"
        )
    per_round = {
        mode: [statistics.median(ts) for m, ts, _ in rounds if m == mode and ts]
        for mode in ("off", "on")
    }
    lo, hi = min(per_round["off"]), max(per_round["off"])
    on = statistics.median(per_round["on"])
    w("")
    w(f"median publish-to-ack, on / off: {med['on'] / med['off']:.3f}")
    w(
        f"per-round medians: off {_us(lo).strip()} .. {_us(hi).strip()} (the noise), "
        f"on {_us(min(per_round['on'])).strip()} .. {_us(max(per_round['on'])).strip()}"
    )
    verdict = "within noise" if lo <= on <= hi else ("above noise" if on > hi else "below noise")
    w(f"the scrape's cost: the on rounds' median {_us(on).strip()} is {verdict}")
    return "\n".join(lines)


def figures(rounds: list[tuple[str, list[float], Any]]) -> dict[str, Any]:
    """Per mode: ticks and publish-to-ack p50/p99 (s); the on/off ratio of the medians."""
    out: dict[str, Any] = {}
    for mode in ("off", "on"):
        ticks = [t for m, ts, _ in rounds if m == mode for t in ts]
        out[mode] = {"ticks": len(ticks), "p50_s": _pct(ticks, 50), "p99_s": _pct(ticks, 99)}
    out["ratio_on_off_p50"] = out["on"]["p50_s"] / out["off"]["p50_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="rounds in all, alternated (even)")
    ap.add_argument("--round-s", type=float, default=5.0, help="seconds of ticks per round")
    ap.add_argument("--wait", default="block", choices=("block", "spin", "yield", "backoff"))
    ap.add_argument("--pin", default=None, metavar="D,S,R,E")
    ap.add_argument("--exporter-cpu", type=int, default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    # make perf's options (pyperf's names): fewer, shorter rounds; the figures as JSON; no rounds
    ap.add_argument("--fast", action="store_true", help="4 rounds of 2 s")
    ap.add_argument("-o", "--output", default=None, help="write the figures as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no line per round")
    args = ap.parse_args()
    if args.serve:
        return exporter_main(args.serve, args.exporter_cpu)
    from perf._pipeline import PipelineSession

    if args.fast:
        args.rounds, args.round_s = 4, 2.0
    pin = [int(c) for c in args.pin.split(",")] if args.pin else None
    session = PipelineSession(args.wait, tick_timeout_s=5.0, pin=pin)
    ex = None
    try:
        ex = ExporterProcess(session.config_path, args.exporter_cpu)
        session.run(WARM_TICKS)
        rounds = []
        for k in range(max(2, args.rounds + args.rounds % 2)):
            mode = "on" if k % 2 else "off"
            ex.say(mode)
            ticks, hist = run_round(session, args.round_s)
            rounds.append((mode, ticks, hist))
            if not args.quiet:
                print(f"round {k + 1}: scrape {mode:<3} {len(ticks)} ticks, median "
                      f"{_us(statistics.median(ticks)).strip()}", file=sys.stderr, flush=True)  # fmt: skip
        scrapes = ex.say("off")
        print(report(rounds, scrapes, args), flush=True)
        if args.output:
            Path(args.output).write_text(json.dumps(figures(rounds), indent=2))
    finally:
        if ex is not None:
            ex.close()
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
