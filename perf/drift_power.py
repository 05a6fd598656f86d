"""Do the live drift monitors fire where they should, and stay quiet where they should not?

Not a pyperf suite: a measurement of the monitors' power and false alarms on the demo market
(config.toml's synthetic market, 0.2 s bars, window 500), quoted in docs/forecasting.md
("Serving guardrails"). Rows: the shipped model as config.toml serves it, then skill-less toy
models (forecast = scale x the mean of the last 8 returns, no information about the next one)
whose MAE ratio to naive stays under the old rule's 1.2 at small scales.

    .venv/bin/python -m perf.drift_power      # about two minutes on one core
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from engine.messages import DriftEvent
from ops.config import load_config
from procs.build import build_market
from procs.infer import InferEngine

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 3_000_000


def measure(cfg: Any, events: int) -> dict[str, Any]:
    eng = InferEngine(cfg, clock=lambda: 0)
    eng.poll_model()
    first: dict[str, int] = {}
    zs: list[float] = []
    ratios: list[float] = []
    seen = 0
    for m in itertools.islice(build_market(cfg), events):
        for e in eng.on_market_data(m):
            if isinstance(e, DriftEvent) and e.drifting:
                first.setdefault(e.kind, eng.counts["bars"])
        bars = eng.counts["bars"]
        if bars != seen and eng.drift.samples == eng.drift.window and bars % 25 == 0:
            seen = bars
            zs.append(eng.drift.z())
            a, b = eng.drift.maes()
            ratios.append(a / b)
    return {
        "bars": eng.counts["bars"],
        "ratio": (min(ratios), max(ratios)),
        "z": (min(zs), max(zs)),
        "coverage": eng.coverage.coverage(),
        "first": first,
    }


def _toy(scale: float) -> Any:
    from tests._onnx_models import write_model  # the tests' contract-following tiny models
    from tests.test_infer import make_cfg

    d = write_model(Path(tempfile.mkdtemp()) / "m", input_size=8, scale=scale, bar_seconds=0.2)
    return make_cfg(d, bar_seconds=0.2)


def main() -> None:
    print(
        "| model | bars | MAE / naive (min … max) | old rule (x 1.2) | error z (min … max) | first entering (bar) |"
    )
    print("|---|---|---|---|---|---|")
    rows = [("shipped (config.toml)", load_config(ROOT / "config.toml"))]
    rows += [(f"no skill, scale {s}", _toy(s)) for s in (0.1, 0.25)]
    for name, cfg in rows:
        r = measure(cfg, EVENTS)
        lo, hi = r["ratio"]
        old = "silent" if hi <= 1.2 else ("always" if lo > 1.2 else "at times")
        first = ", ".join(f"{k} {v}" for k, v in r["first"].items()) or "none"
        print(
            f"| {name} | {r['bars']} | {lo:.3f} … {hi:.3f} | {old} | "
            f"{r['z'][0]:.1f} … {r['z'][1]:.1f} | {first} |"
        )


if __name__ == "__main__":
    main()
