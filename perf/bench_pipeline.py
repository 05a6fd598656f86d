"""pyperf suite: tick-to-order latency of the whole pipeline, multi-process and inline.

Benchmarks:

- ``pipeline_spin-tick_to_ack`` / ``pipeline_block-tick_to_ack``: one market tick through the
  multi-process pipeline strategy → risk → exec (sim venue) and the venue's acknowledgement
  back, with every process on that wait strategy. The pyperf worker process creates the shared
  memory regions the way ``gekko run`` does (``ops.supervisor.Supervisor._create_regions``),
  starts the strategy, risk and exec workers with the supervisor's ``_start`` (one interpreter
  each, ``python -m ops.worker``), waits until all three are READY in the health table, and
  plays the feed itself: it publishes a BookSnapshot once, then per loop one Quote on ``md``
  (``ts_recv = time.monotonic_ns()``) and polls the ``events`` ring (the supervisor's gating
  slot) until the ``OrderAccepted`` of the order that quote caused comes back (matched by
  ``ts_origin == ts_recv``). The strategy is ``perf._pipeline:PingStrategy``: one IOC limit buy
  far below the market per quote, which the simulated exchange (zero latency) acknowledges and
  cancels at once. Time per loop = publish → ack, i.e. feed → strategy → risk → exec → venue →
  exec → driver: one hop more than the spec's tick-to-order, which ends when exec hands the
  order to the venue. That one is recorded by exec itself (``tick_to_order_ns`` in its shm
  metrics); the summary prints its p50 / p99 next to the spec, with the strategy's and risk's
  stages.
- ``inline-cost_per_tick``: the repo's config.toml (instruments, strategies, limits, sim venue)
  in ``engine.backtest.InlineRuntime``: a fresh runtime per call over ``loops`` pre-generated
  synthetic ticks, only ``run()`` timed. What one tick costs when everything shares a process.

Run ``python perf/bench_pipeline.py --fast`` (``make perf`` runs every suite); ``--only REGEX``
runs a subset. The main process prints a summary at the end: median per tick against the spec's
50 µs target and 100 µs maximum, and exec's own tick-to-order percentiles.

``spin`` burns one core per process (strategy, risk, exec and the driver: 4). With fewer free
cores than that the figure measures the scheduler's time slices, not the pipeline.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402

from perf._pipeline import STAGE_HISTOGRAMS, InlineSession, PipelineSession  # noqa: E402

#: (name, kind, wait strategy)
BENCHMARKS: list[tuple[str, str, str | None]] = [
    ("pipeline_spin-tick_to_ack", "pipeline", "spin"),
    ("pipeline_block-tick_to_ack", "pipeline", "block"),
    ("inline-cost_per_tick", "inline", None),
]
TARGET_S = 50e-6  # the spec's tick-to-order target
MAX_S = 100e-6  # ... and its maximum
#: untimed ticks through a fresh pipeline before pyperf's first call (imports, numba dispatch,
#: page faults, the venue's first book); the stage histograms are reported without them
WARM_TICKS = 20
#: a tick whose order does not come back in this long fails the run (a hung or dead worker)
TICK_TIMEOUT_S = 2.0

_SESSIONS: dict[str, Any] = {}
_ARGS: argparse.Namespace | None = None


# --- worker side ---------------------------------------------------------------------------------
def make_func(name: str, kind: str, wait: str | None) -> Any:
    def func(loops: int) -> float:
        s = _SESSIONS.get(name)
        if s is None:
            if kind == "pipeline":
                pin = (
                    [int(c) for c in _ARGS.pin.split(",")]
                    if _ARGS is not None and _ARGS.pin
                    else None
                )
                s = PipelineSession(
                    wait or "block",
                    tick_timeout_s=TICK_TIMEOUT_S,
                    pin=pin,
                    on_started=lambda sess: _record_pids(name, sess),
                )
                _SESSIONS[name] = s
                s.run(WARM_TICKS)
                s.mark_warm()
            else:
                s = _SESSIONS[name] = InlineSession()
                s.run(500)
        return s.run(loops)

    return func


def _record_pids(name: str, s: PipelineSession) -> None:
    """Leave the workers' pids where the main process looks, so it can reap them even if this
    process is killed before it stops them."""
    d = _ARGS.hist_dir if _ARGS is not None else None
    if not d:
        return
    pids = {n: h.proc.pid for n, h in s.sup.workers.items() if h.proc is not None}
    info = {"engine_id": s.engine_id, "pids": pids, "driver": os.getpid(), "tmp": str(s.tmp)}
    (Path(d) / f"pids.{name}.{os.getpid()}.json").write_text(json.dumps(info))


def _close_sessions() -> None:
    d = _ARGS.hist_dir if _ARGS is not None else None
    for name, s in list(_SESSIONS.items()):
        _SESSIONS.pop(name, None)
        if isinstance(s, PipelineSession):
            try:
                if d and s.ticks:
                    for worker, snap in s.histograms(since_warm=True).items():
                        np.save(Path(d) / f"hist.{name}.{worker}.{os.getpid()}.npy", snap.words)
            finally:
                s.close()
                if d:
                    with contextlib.suppress(OSError):
                        (Path(d) / f"pids.{name}.{os.getpid()}.json").unlink()
                left = s.leftovers()
                if left:
                    print(
                        f"bench_pipeline: {name}: left in /dev/shm: {', '.join(left)}",
                        file=sys.stderr,
                    )


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(1)  # run the atexit hook: stop the workers, remove the regions


# --- main side -----------------------------------------------------------------------------------
def _reap(hist_dir: str) -> None:
    """Kill pipeline workers a dead pyperf worker left behind, remove their regions."""
    from shm.region import cleanup_stale, list_semaphores, pid_alive

    for f in Path(hist_dir).glob("pids.*.json"):
        with contextlib.suppress(Exception):
            info = json.loads(f.read_text())
            if pid_alive(int(info["driver"])):
                continue
            for pid in info["pids"].values():
                with contextlib.suppress(Exception):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"ops.worker" in cmd and info["engine_id"].encode() in cmd:
                        os.kill(int(pid), signal.SIGKILL)
            eid = info["engine_id"]
            cleanup_stale(eid)
            if Path(info.get("tmp", "")).name.startswith("bench_pipeline_"):
                shutil.rmtree(info["tmp"], ignore_errors=True)
            import posix_ipc

            for sem in list_semaphores(eid):
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_semaphore(sem)


def _merged(hist_dir: str | None, name: str, worker: str) -> Any:
    """One worker's stage histogram, merged over every pyperf worker process of ``name``."""
    from shm.metrics import HistogramSnapshot, merge_snapshots

    if not hist_dir:
        return None
    files = sorted(Path(hist_dir).glob(f"hist.{name}.{worker}.*.npy"))
    if not files:
        return None
    return merge_snapshots([HistogramSnapshot(worker, np.load(f)) for f in files], worker)


def _fmt_us(s: float) -> str:
    return f"{s * 1e6:,.1f} us" if s == s else "n/a"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _verdict(v: float) -> str:
    t = "met" if v <= TARGET_S else "NOT met"
    m = "met" if v <= MAX_S else "NOT met"
    return f"target {t:<7}  max {m}"


def print_summary(
    results: dict[str, pyperf.Benchmark], hist_dir: str | None, load_before: str
) -> None:
    out: list[str] = []
    w = out.append
    ncpu = os.cpu_count() or 1
    w("")
    w("=" * 86)
    w(
        f"bench_pipeline summary: {ncpu} CPUs ({_cpu_model()}), load average (1/5/15 min) "
        f"{load_before} at start, {_loadavg()} at end"
    )
    w(f"spec: tick-to-order target {TARGET_S * 1e6:.0f} us, maximum {MAX_S * 1e6:.0f} us")
    w("=" * 86)
    w(f"{'benchmark':<30} {'median/tick':>12}  {'vs spec (median)':<30}")
    for name, _, _ in BENCHMARKS:
        b = results.get(name)
        if b is not None:
            med = b.median()
            w(f"{name:<30} {_fmt_us(med):>12}  {_verdict(med)}")

    rows = []
    for name, kind, _ in BENCHMARKS:
        if kind != "pipeline" or name not in results:
            continue
        for worker, stage in STAGE_HISTOGRAMS.items():
            snap = _merged(hist_dir, name, worker)
            if snap is not None and snap.count:
                rows.append((name, f"{worker}.{stage}", snap))
    if rows:
        w("")
        w(
            "per-stage latency from the workers' shm histograms (since ts_recv of the tick; warm-up excluded)"
        )
        w(f"{'benchmark':<30} {'stage':<30} {'p50':>11} {'p99':>11} {'count':>7}")
        for name, stage, snap in rows:
            w(
                f"{name:<30} {stage:<30} {_fmt_us(snap.percentile(50) * 1e-9):>11} "
                f"{_fmt_us(snap.percentile(99) * 1e-9):>11} {snap.count:>7}"
            )
        w("")
        w(
            "exec tick_to_order (the spec's tick-to-order: tick ts_recv -> order handed to the venue)"
        )
        for name, stage, snap in rows:
            if stage == "exec.tick_to_order_ns":
                p50, p99 = snap.percentile(50) * 1e-9, snap.percentile(99) * 1e-9
                w(
                    f"  {name:<28} p50 {_fmt_us(p50):>11} [{'met' if p50 <= TARGET_S else 'NOT met'} "
                    f"<= {TARGET_S * 1e6:.0f} us target]   p99 {_fmt_us(p99):>11} "
                    f"[{'met' if p99 <= MAX_S else 'NOT met'} <= {MAX_S * 1e6:.0f} us max]"
                )
    if any(kind == "pipeline" and name in results for name, kind, _ in BENCHMARKS):
        pin = _ARGS.pin if _ARGS is not None else None
        w("")
        w(
            f"pipeline processes: {f'pinned to CPUs {pin} (driver,strategy,risk,exec)' if pin else 'unpinned'}"
        )
    if "pipeline_spin-tick_to_ack" in results and ncpu < 4:
        w("")
        w(
            f"note: {ncpu} CPUs. pipeline_spin needs one free core per spinning process (strategy, risk, "
            "exec + this driver: 4)"
        )
        w(
            "to mean anything; here the spinners share cores and the figure measures scheduler time "
            "slices, not the pipeline."
        )
    print("\n".join(out), flush=True)


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    if args.only:
        cmd.extend(("--only", args.only))
    if args.hist_dir:
        cmd.extend(("--hist-dir", args.hist_dir))
    if args.pin:
        cmd.extend(("--pin", args.pin))


def main() -> None:
    global _ARGS
    # --fast: 3 worker processes x 2 values per benchmark (+ one calibration worker each);
    # a pipeline worker costs 2-4 s to start its three processes
    runner = pyperf.Runner(processes=6, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = (
        "tick -> order ack through strategy/risk/exec worker processes (spin, block), "
        "and the inline runtime's cost per tick"
    )
    runner.argparser.add_argument(
        "--only",
        metavar="REGEX",
        default=None,
        help="run only the benchmarks whose name matches REGEX",
    )
    runner.argparser.add_argument(
        "--pin",
        metavar="D,S,R,E",
        default=None,
        help="pin the pipeline benchmarks' driver, strategy, risk and exec "
        "to these four CPUs (one free core each; default: unpinned)",
    )
    runner.argparser.add_argument("--hist-dir", default=None, help=argparse.SUPPRESS)
    args = _ARGS = runner.parse_args()
    if args.pin and (
        len(args.pin.split(",")) != 4 or not all(c.strip().isdigit() for c in args.pin.split(","))
    ):
        runner.argparser.error("--pin needs four CPU ids: driver,strategy,risk,exec (e.g. 2,3,4,5)")
    owned_dir = None
    if not args.worker and not args.hist_dir and not args.compare_to:
        owned_dir = args.hist_dir = tempfile.mkdtemp(prefix="bench_pipeline_")
    if args.worker:
        signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_close_sessions)
    load_before = _loadavg()
    results: dict[str, pyperf.Benchmark] = {}
    try:
        for name, kind, wait in BENCHMARKS:
            if args.only and not re.search(args.only, name):
                continue
            meta = {"unit_of_loop": "tick", "wait": wait or "inline"}
            bench = runner.bench_time_func(name, make_func(name, kind, wait), metadata=meta)
            _close_sessions()
            if bench is not None:
                results[name] = bench
        if not args.worker and results:
            print_summary(results, args.hist_dir, load_before)
    finally:
        _close_sessions()
        if not args.worker and args.hist_dir:
            _reap(args.hist_dir)
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
