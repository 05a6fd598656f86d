"""Recovery figures of chaos runs: per worker, how long from a restart (and from the fault) to
working again, as measured by the probe. ``CHAOS_RESULTS=<file>`` appends each run's figures as
one JSON line, so several runs can be summed into the table in perf/README.md."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from typing import Any

from tests.chaos.faults import WORKERS


def run_figures(res: Any) -> dict[str, Any]:
    """One run's counts and recovery samples (seconds), ready for JSON."""
    rec: dict[str, list[list[float]]] = {}
    for r in res.recoveries:
        if r.t_working and r.t_restart:
            rec.setdefault(r.worker, []).append(
                [round(r.restart_to_working_s, 3), round(r.fault_to_working_s, 3)]
            )
    return {
        "seed": res.seed,
        "seconds": res.seconds,
        "faults": len(res.faults),
        "checks": res.checks,
        "violations": res.violations,
        "recoveries": rec,
    }


def recovery_table(results: Sequence[Any]) -> str:
    """A plain-text table: worker, restarts measured, restart->working and fault->working."""
    figs = [run_figures(r) for r in results]
    path = os.environ.get("CHAOS_RESULTS", "")
    if path:
        with open(path, "a") as f:
            for fig in figs:
                f.write(json.dumps(fig) + "\n")
    return format_table(figs)


def format_table(figs: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"chaos: {len(figs)} runs, {sum(f['faults'] for f in figs)} faults, "
        f"{sum(f['checks'] for f in figs)} invariant checks, "
        f"{sum(bool(f['violations']) for f in figs)} failing runs",
        f"{'worker':<9} {'n':>3}  restart->working median/max s  fault->working median/max s",
    ]
    for w in WORKERS:
        samples = [s for f in figs for s in f["recoveries"].get(w, [])]
        if not samples:
            lines.append(f"{w:<9} {0:>3}")
            continue
        a = [s[0] for s in samples]
        b = [s[1] for s in samples]
        lines.append(
            f"{w:<9} {len(samples):>3}  {statistics.median(a):>14.2f} / {max(a):<6.2f}"
            f"         {statistics.median(b):>10.2f} / {max(b):.2f}"
        )
    return "\n".join(lines)
