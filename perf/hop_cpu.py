"""CPU time per tick of each pipeline worker: where a tick-to-order hop's time goes, per process.

Why: on a machine without a free core per process the pipeline's latencies measure the
scheduler, but the CPU each worker spends per tick does not depend on who else runs. This drives
``perf._pipeline.PipelineSession`` (the strategy, risk and exec workers of ``bench_pipeline``, the
ping strategy: one order per tick) for ``N`` ticks after a warm-up and reads each worker's user +
system time from ``/proc/<pid>/stat`` (Linux) before and after:

    .venv/bin/python perf/hop_cpu.py [ROOT] [--wait block|spin] [--ticks N]

``ROOT``: the checkout whose code runs (default: this one; an export of an older tree for an
A/B). Prints one JSON object: worker -> µs of CPU per tick, ``driver`` (this process: the feed's
part), ``tick_to_ack_us`` (wall time per tick) and the workers' stage p50s (µs since the tick).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--wait", default="block", choices=("block", "spin"))
    ap.add_argument("--ticks", type=int, default=3000)
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from perf._pipeline import PipelineSession

    s = PipelineSession(args.wait)
    try:
        pids = {n: h.proc.pid for n, h in s.sup.workers.items() if h.proc is not None}
        s.run(500)  # warm: caches, the first orders' paths
        s.mark_warm()
        c0 = {n: _cpu_s(p) for n, p in pids.items()}
        d0, t0 = _self_cpu_s(), time.perf_counter()
        s.run(args.ticks)
        wall, d1 = time.perf_counter() - t0, _self_cpu_s()
        c1 = {n: _cpu_s(p) for n, p in pids.items()}
        per = 1e6 / args.ticks
        out: dict[str, float] = {n: round((c1[n] - c0[n]) * per, 1) for n in pids}
        out["driver"] = round((d1 - d0) * per, 1)
        out["tick_to_ack_us"] = round(wall * per, 1)
        for n, snap in s.histograms(since_warm=True).items():
            out[f"{n}_p50_us"] = round(snap.percentile(50) / 1000, 1)
        print(json.dumps(out))
    finally:
        s.close()


if __name__ == "__main__":
    main()
