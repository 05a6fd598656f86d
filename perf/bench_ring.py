"""pyperf suite: the shared-memory ring against multiprocessing.Queue and faster_fifo.

Every benchmark moves messages between TWO processes: the worker process pyperf spawns runs the
producer (or the "ping" side) and times it; a helper process forked from it (lazily, on the first
timed call, and kept alive across pyperf's loops) runs the consumer (or echoes the pings back).
``func(loops)`` moves ``loops`` messages and returns the elapsed seconds, so pyperf reports
time per message (throughput = 1 / that) or, for ``rtt``, time per round trip.

Benchmarks, ``<transport>-<measure>-<size>``:

- transports: ``ring_spin`` / ``ring_block`` (``shm.ring`` with that wait strategy on both
  sides), ``mp_queue`` (``multiprocessing.Queue``), ``faster_fifo`` (``faster_fifo.Queue``);
- measures: ``throughput`` (one message per ``publish`` / ``put``, decoded one by one by
  ``poll`` / ``get``; encoding and decoding included), ``batch`` (``publish_batch`` ->
  ``poll_batch``; ``put_many`` -> ``get_many`` for faster_fifo), ``rawbatch``
  (``publish_raw_batch`` -> ``poll_raw_batch``: already-encoded frames, indexed not decoded),
  ``rtt`` (ping-pong over two rings / queues: time per round trip);
- sizes: 64 and 512 bytes of msgpack (``perf._ring_workers.Msg64`` / ``Msg512``; the queues
  pickle the very same objects).

Run ``python perf/bench_ring.py --fast`` (``make perf`` runs every suite). The main process
prints a summary at the end: rates, per-message round-trip percentiles, ring/baseline ratios and
the issue's goals, met or not. ``--only REGEX`` runs a subset (e.g. ``--only 'rtt-64$'``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
from itertools import cycle, islice
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyperf  # noqa: E402

from perf._ring_workers import (  # noqa: E402
    BATCH,
    POOL,
    RAW_BATCH,
    RING_CAPACITY,
    last_seq,
    make_decoder,
    make_pool,
    serve,
)

SIZES = (64, 512)
RINGS = ("ring_spin", "ring_block")
MEASURES: dict[str, tuple[str, ...]] = {
    "throughput": (*RINGS, "mp_queue", "faster_fifo"),
    "batch": (*RINGS, "faster_fifo"),
    "rawbatch": RINGS,
    "rtt": (*RINGS, "mp_queue", "faster_fifo"),
}
BENCHMARKS = [(f"{t}-{m}-{s}", t, m, s) for m, ts in MEASURES.items() for s in SIZES for t in ts]

#: faster_fifo's buffer: its default (1 MB) for 64 B, 4 MB for 512 B messages
FIFO_BYTES = {64: 1_000_000, 512: 4_000_000}
#: untimed messages sent through a fresh session (numba kernels load from cache, pages fault in)
WARM_MESSAGES = 20_000


def _ctx() -> Any:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


class Session:
    """One benchmark's transport and helper process, alive for the pyperf worker's lifetime."""

    def __init__(self, runner: pyperf.Runner, transport: str, measure: str, size: int) -> None:
        self.args = runner.args
        self.name = f"{transport}-{measure}-{size}"
        self.transport, self.measure, self.size = transport, measure, size
        self.pool = make_pool(size)
        self.batch = self.pool[:BATCH]
        self.rings: list[Any] = []
        self.prod = self.cons = None
        self.q_in = self.q_out = None
        self.samples: list[np.ndarray] = []
        self.calls = 0
        self.proc: Any = None
        self.conn: Any = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        transport, measure, size = self.transport, self.measure, self.size
        ctx = _ctx()
        if transport.startswith("ring"):
            from shm.ring import Ring

            wait = transport.split("_", 1)[1]
            engine_id = f"pb{os.getpid()}"
            tag = f"{measure[:3]}{size}"
            ping = Ring.create(engine_id, f"{tag}a", RING_CAPACITY, consumers=[("helper", True)])
            self.rings.append(ping)
            self.prod = ping.producer(wait=wait)
            spec: dict[str, Any] = {"engine_id": engine_id, "ping": f"{tag}a", "wait": wait}
            if measure == "rtt":
                pong = Ring.create(engine_id, f"{tag}b", RING_CAPACITY, consumers=[("bench", True)])
                self.rings.append(pong)
                self.cons = pong.consumer("bench", gating=True, wait=wait, decoder=make_decoder())
                spec["pong"] = f"{tag}b"
            if measure == "rawbatch":
                frame = msgspec.msgpack.encode(self.pool[0])
                self.raw_types = np.full(
                    RAW_BATCH, type(self.pool[0]).__struct_config__.tag, dtype=np.int64
                )
                self.raw_payload = np.frombuffer(frame * RAW_BATCH, dtype=np.uint8)
                self.raw_offsets = np.arange(RAW_BATCH + 1, dtype=np.int64) * len(frame)
        elif transport == "mp_queue":
            self.q_in = ctx.Queue()
            self.q_out = ctx.Queue() if measure == "rtt" else None
            spec = {"ping": self.q_in, "pong": self.q_out}
        elif transport == "faster_fifo":
            import faster_fifo

            self.q_in = faster_fifo.Queue(max_size_bytes=FIFO_BYTES[size])
            self.q_out = (
                faster_fifo.Queue(max_size_bytes=FIFO_BYTES[size]) if measure == "rtt" else None
            )
            spec = {"ping": self.q_in, "pong": self.q_out}
        else:
            raise ValueError(transport)
        close_fds = (self.args.pipe,) if isinstance(self.args.pipe, int) else ()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=serve,
            args=(child, os.getpid(), close_fds, transport, measure, spec),
            name=f"bench_ring helper {self.name}",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self._expect("ready", timeout=60)
        self.timed = {
            "throughput": self._throughput,
            "batch": self._batch,
            "rawbatch": self._rawbatch,
            "rtt": self._rtt,
        }[measure]
        self.timed(2000 if measure == "rtt" else WARM_MESSAGES)

    # --- control ---------------------------------------------------------------------------------
    def _expect(self, what: str, timeout: float = 30.0) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(
                f"{self.name}: helper process did not answer {what!r} in {timeout:.0f}s"
            )
        reply = self.conn.recv()
        tag = reply[0] if isinstance(reply, tuple) else reply
        if tag != what:
            raise RuntimeError(f"{self.name}: helper answered {reply!r}, expected {what!r}")
        return reply[1] if isinstance(reply, tuple) else None

    def _go(self, n: int) -> None:
        self.conn.send(("run", n))
        self._expect("go")

    def _check(self, got: Any, want: Any) -> None:
        if got != want:
            raise RuntimeError(
                f"{self.name}: helper saw {got!r}, expected {want!r}: messages lost or reordered"
            )

    def __call__(self, loops: int) -> float:
        self.calls += 1
        return self.timed(loops)

    # --- timed runs ------------------------------------------------------------------------------
    def _throughput(self, loops: int) -> float:
        send = self.prod.publish if self.prod is not None else self.q_in.put
        it = islice(cycle(self.pool), loops)
        self._go(loops)
        t0 = perf_counter()
        for m in it:
            send(m)
        got = self._expect("done", timeout=60)
        dt = perf_counter() - t0
        self._check(got, last_seq(loops, POOL))
        return dt

    def _batch(self, loops: int) -> float:
        send = self.prod.publish_batch if self.prod is not None else self.q_in.put_many
        batch = self.batch
        full, rem = divmod(loops, BATCH)
        tail = batch[:rem]
        self._go(loops)
        t0 = perf_counter()
        for _ in range(full):
            send(batch)
        if rem:
            send(tail)
        got = self._expect("done", timeout=60)
        dt = perf_counter() - t0
        self._check(got, (loops, last_seq(rem or BATCH, POOL)))
        return dt

    def _rawbatch(self, loops: int) -> float:
        send = self.prod.publish_raw_batch
        types, payload, offsets = self.raw_types, self.raw_payload, self.raw_offsets
        full, rem = divmod(loops, RAW_BATCH)
        tail_types, tail_offsets = types[:rem], offsets[: rem + 1]
        self._go(loops)
        t0 = perf_counter()
        for _ in range(full):
            send(types, payload, offsets)
        if rem:
            send(tail_types, payload, tail_offsets)
        got = self._expect("done", timeout=60)
        dt = perf_counter() - t0
        self._check(got, (loops, self.size, int(types[0])))
        return dt

    def _rtt(self, loops: int) -> float:
        msg = self.pool[0]
        ts = [0] * (loops + 1)
        tick = perf_counter_ns
        m = None
        self._go(loops)
        if self.prod is not None:
            pub = self.prod.publish
            poll = self.cons.poll
            wait = self.cons.wait_for_data
            for i in range(loops):
                ts[i] = tick()
                pub(msg)
                m = poll()
                while m is None:
                    wait(1.0)
                    m = poll()
        else:
            put, get = self.q_in.put, self.q_out.get
            for i in range(loops):
                ts[i] = tick()
                put(msg)
                m = get()
        ts[loops] = tick()
        self._check(self._expect("done", timeout=60), loops)
        self._check(m, msg)
        if self._recording():
            self.samples.append(np.diff(np.asarray(ts, dtype=np.int64)))
        return (ts[loops] - ts[0]) * 1e-9

    def _recording(self) -> bool:
        """Keep per-message samples of measured values only (not calibration, not warmups)."""
        a = self.args
        if not a.worker or not a.rtt_dir:
            return False
        if a.calibrate_loops or a.recalibrate_loops or a.calibrate_warmups or a.recalibrate_warmups:
            return False
        return self.calls > (a.warmups or 0)

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        if self.samples and self.args.rtt_dir:
            with contextlib.suppress(OSError):
                np.save(
                    os.path.join(self.args.rtt_dir, f"{self.name}.{os.getpid()}.npy"),
                    np.concatenate(self.samples),
                )
            self.samples = []
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.conn.send(("stop",))
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
            self.proc = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        for q in (self.q_in, self.q_out):
            if q is not None and self.transport == "mp_queue":
                q.cancel_join_thread()
                q.close()
        self.q_in = self.q_out = None
        for role in (self.prod, self.cons):
            if role is not None:
                with contextlib.suppress(Exception):
                    role.close()
        self.prod = self.cons = None
        for ring in self.rings:
            ring.unlink()
            with contextlib.suppress(Exception):
                ring.close()
        self.rings = []


_SESSIONS: dict[str, Session] = {}


def _close_sessions() -> None:
    while _SESSIONS:
        _, s = _SESSIONS.popitem()
        s.close()


def make_func(runner: pyperf.Runner, transport: str, measure: str, size: int) -> Any:
    name = f"{transport}-{measure}-{size}"

    def func(loops: int) -> float:
        s = _SESSIONS.get(name)
        if s is None:
            s = _SESSIONS[name] = Session(runner, transport, measure, size)
        return s(loops)

    return func


# --- summary (main process only) ---------------------------------------------------------------


def _fmt_time(sec: float) -> str:
    if sec < 1e-6:
        return f"{sec * 1e9:7.1f} ns"
    if sec < 1e-3:
        return f"{sec * 1e6:7.2f} us"
    return f"{sec * 1e3:7.2f} ms"


def _fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:7.2f} M/s"
    return f"{per_s / 1e3:7.1f} k/s"


def _rtt_percentiles(rtt_dir: str | None, name: str) -> dict[str, float] | None:
    if not rtt_dir:
        return None
    files = sorted(glob.glob(os.path.join(rtt_dir, f"{glob.escape(name)}.*.npy")))
    if not files:
        return None
    ns = np.concatenate([np.load(f) for f in files]).astype(np.float64)
    p50, p90, p99 = np.percentile(ns, [50, 90, 99])
    return {
        "n": float(ns.size),
        "p50": p50 * 1e-9,
        "p90": p90 * 1e-9,
        "p99": p99 * 1e-9,
        "mean": ns.mean() * 1e-9,
    }


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def print_summary(
    results: dict[str, pyperf.Benchmark], rtt_dir: str | None, load_before: str = "n/a"
) -> None:
    med = {name: b.median() for name, b in results.items()}
    out: list[str] = []
    w = out.append
    w("")
    w("=" * 78)
    w(f"bench_ring summary: pyperf median per message, rate = 1 / that; {os.cpu_count()} CPUs,")
    w(f"load average (1/5/15 min) {load_before} at start, {_loadavg()} at end")
    w("=" * 78)
    w(f"{'benchmark':<30} {'time/msg':>11} {'rate':>12}")
    for name, _, measure, _ in BENCHMARKS:
        if name in med:
            unit = (
                "round trip"
                if measure == "rtt"
                else ("frames" if measure == "rawbatch" else "msgs")
            )
            w(f"{name:<30} {_fmt_time(med[name]):>11} {_fmt_rate(1 / med[name]):>12} {unit}")

    pct = {n: _rtt_percentiles(rtt_dir, n) for n in med if n.split("-")[1] == "rtt"}
    if any(pct.values()):
        w("")
        w("round trip per message (per-message timestamps of the measured values)")
        w(f"{'benchmark':<30} {'p50':>11} {'p90':>11} {'p99':>11} {'samples':>9}")
        for name, p in pct.items():
            if p:
                w(
                    f"{name:<30} {_fmt_time(p['p50']):>11} {_fmt_time(p['p90']):>11} "
                    f"{_fmt_time(p['p99']):>11} {int(p['n']):>9}"
                )

    def ratio(ring: str, base: str) -> float | None:
        if ring in med and base in med:
            return med[base] / med[ring]
        return None

    pairs = []
    for size in SIZES:
        for ring in RINGS:
            for base in ("mp_queue", "faster_fifo"):
                pairs.append((f"{ring}-throughput-{size}", f"{base}-throughput-{size}"))
            pairs.append((f"{ring}-batch-{size}", f"faster_fifo-batch-{size}"))
            pairs.append((f"{ring}-batch-{size}", f"mp_queue-throughput-{size}"))
            for base in ("mp_queue", "faster_fifo"):
                pairs.append((f"{ring}-rtt-{size}", f"{base}-rtt-{size}"))
    rows = [(ring, base, ratio(ring, base)) for ring, base in pairs]
    rows = [(ring, base, r) for ring, base, r in rows if r is not None]
    if rows:
        w("")
        w("ring vs baseline  (baseline time per message / ring time per message; > 1: ring ahead)")
        w(f"{'ring':<26} {'baseline':<26} {'ratio':>8}")
        for ring, base, r in rows:
            w(f"{ring:<26} {base:<26} {r:>7.2f}x")

    w("")
    w("goals (issue), with ring_spin")
    goals = []

    def goal(label: str, value: float | None, target: float, fmt: Any, higher: bool = True) -> None:
        if value is None:
            goals.append(f"[  n/a  ] {label}: not measured")
            return
        ok = value >= target if higher else value <= target
        short = "" if ok else f"  (short by {target / value if higher else value / target:.2f}x)"
        goals.append(f"[{'met' if ok else 'NOT met':^7}] {label}: {fmt(value)}{short}")

    tp = med.get("ring_spin-throughput-64")
    goal(
        "one-way 64 B single-message >= 1,000,000 msg/s",
        tp and 1 / tp,
        1e6,
        lambda v: f"{v:,.0f} msg/s",
    )
    goal(
        "one-way 64 B >= 10x mp.Queue",
        ratio("ring_spin-throughput-64", "mp_queue-throughput-64"),
        10.0,
        lambda v: f"{v:.2f}x",
    )
    goal(
        "one-way 64 B ahead of faster_fifo",
        ratio("ring_spin-throughput-64", "faster_fifo-throughput-64"),
        1.0 + 1e-9,
        lambda v: f"{v:.2f}x",
    )
    rb = med.get("ring_spin-rawbatch-64")
    goal(
        "batched raw 64 B frames >= 10,000,000 frames/s",
        rb and 1 / rb,
        1e7,
        lambda v: f"{v:,.0f} frames/s",
    )
    p = pct.get("ring_spin-rtt-64")
    p50 = p["p50"] if p else med.get("ring_spin-rtt-64")
    goal(
        "round trip 64 B p50 <= 5 us (spin)" + ("" if p else " [pyperf median]"),
        p50,
        5e-6,
        lambda v: f"{v * 1e6:.2f} us",
        higher=False,
    )
    out.extend(goals)
    if (os.cpu_count() or 1) < 4:
        out.append("")
        out.append(
            f"note: {os.cpu_count()} CPUs: producer and consumer (spinning) share them with each other "
            "and the OS; spin figures need one free core per process to mean anything."
        )
    print("\n".join(out), flush=True)


def _cleanup_stale_rings() -> None:
    """Remove rings of bench workers that died without unlinking (their creator is gone)."""
    with contextlib.suppress(Exception):
        from shm.region import cleanup_stale, list_regions

        for full in list_regions():
            m = re.match(r"/gk_(pb\d+)_", full)
            if m:
                cleanup_stale(m.group(1))


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    if args.only:
        cmd.extend(("--only", args.only))
    if args.rtt_dir:
        cmd.extend(("--rtt-dir", args.rtt_dir))


def main() -> None:
    # --fast: 3 worker processes x 2 values per benchmark (a worker costs ~1 s: imports, fork)
    runner = pyperf.Runner(processes=6, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = (
        "shm ring vs multiprocessing.Queue vs faster_fifo, two processes"
    )
    runner.argparser.add_argument(
        "--only",
        metavar="REGEX",
        default=None,
        help="run only the benchmarks whose name matches REGEX",
    )
    runner.argparser.add_argument("--rtt-dir", default=None, help=argparse.SUPPRESS)
    args = runner.parse_args()
    owned_dir = None
    if not args.worker and not args.rtt_dir and not args.compare_to:
        owned_dir = args.rtt_dir = tempfile.mkdtemp(prefix="bench_ring_rtt_")
    atexit.register(_close_sessions)
    load_before = _loadavg()
    results: dict[str, pyperf.Benchmark] = {}
    try:
        for name, transport, measure, size in BENCHMARKS:
            if args.only and not re.search(args.only, name):
                continue
            bench = runner.bench_time_func(name, make_func(runner, transport, measure, size))
            _close_sessions()
            if bench is not None:
                results[name] = bench
        if not args.worker and results:
            print_summary(results, args.rtt_dir, load_before)
    finally:
        _close_sessions()
        if not args.worker:
            _cleanup_stale_rings()
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
