"""Down, flat or up over a fixed horizon (the next k events, or the next Δt), out of sample.

The next-change target (``models.lob_eval``) asks "which way, once it moves"; this one also
asks "will it move at all" over a horizon a strategy holds for, which is where the always-no-
change baseline belongs: over a few events the mid mostly does not move. Classes are 0 down,
1 flat, 2 up. Samples overlap by up to the horizon, so intervals come from a bootstrap over
blocks of consecutive events and the Diebold–Mariano test compares block-mean log losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.lob_data import BookEvents
from models.lob_eval import group_bootstrap, group_means
from models.lob_features import features_of_events
from models.lob_models import NoChange, Softmax
from models.stat_tests import diebold_mariano


def horizon_labels(
    mid: np.ndarray, ts: np.ndarray, events: int = 0, dt_ns: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(class 0/1/2, has a horizon) per event: the sign of the mid ``events`` later, or at
    the last event by ``ts + dt_ns``, against the mid now (one-sided books carry the last)."""
    m = mid.astype(np.float64).copy()
    good = np.isfinite(m)
    idx = np.where(good, np.arange(len(m)), 0)
    np.maximum.accumulate(idx, out=idx)
    m = m[idx]
    n = len(m)
    if events:
        j = np.arange(n) + events
    else:
        j = np.searchsorted(ts, ts + dt_ns, side="right") - 1
    ok = (j < n) & (j > np.arange(n)) & good
    j = np.minimum(j, n - 1)
    return (np.sign(m[j] - m) + 1).astype(np.int64), ok


@dataclass
class HorizonRow:
    name: str
    accuracy: float
    ci: tuple[float, float]
    on_change: float  # the way it leans (P(up) vs P(down)) right, where the mid did move
    log_loss: float
    dm: str


@dataclass
class HorizonReport:
    stream: str
    horizon: str
    n_test: int
    shares: tuple[float, float, float]  # down, flat, up in the test block
    rows: list[HorizonRow] = field(default_factory=list)


def evaluate_horizon(
    ev: BookEvents, events: int = 0, dt_ns: int = 0, train_frac: float = 0.7
) -> HorizonReport:
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    y, ok = horizon_labels(ev.mid, ev.ts, events, dt_ns)
    keep = np.flatnonzero(valid & ok & np.isfinite(x).all(axis=1))
    split = int(len(ev) * train_frac)
    reach = keep + events if events else np.searchsorted(ev.ts, ev.ts[keep] + dt_ns)
    train, test = keep[(keep < split) & (reach < split)], keep[keep >= split]
    yte = y[test]
    shares = tuple(float(s) for s in np.bincount(yte, minlength=3) / max(len(yte), 1))
    what = f"next {events} events" if events else f"next {dt_ns / 1e6:g} ms"
    rep = HorizonReport(ev.name, what, len(test), shares)  # type: ignore[arg-type]
    block = max(events, 50)
    blocks = (test - split) // block
    out = []
    for f in (NoChange(), Softmax(True), Softmax(False)):
        p = f.fit(x[train], y[train]).predict(x[test])
        # no change is always its call; its probabilities (the training shares) score its loss
        pred = np.ones(len(p), np.int64) if isinstance(f, NoChange) else p.argmax(axis=1)
        loss = -np.log(np.clip(p[np.arange(len(yte)), yte], 1e-7, 1.0))
        moved = yte != 1  # the direction it leans (up vs down), where the mid did move
        lean = np.where(p[:, 2] >= p[:, 0], 2, 0)
        on_change = float((lean[moved] == yte[moved]).mean()) if moved.any() else float("nan")
        out.append((f.name, pred == yte, on_change, loss))
    ref = group_means(out[1][3], blocks)
    for name, hit, on_change, loss in out:
        dm = (
            "-"
            if name == "imbalance softmax"
            else diebold_mariano(group_means(loss, blocks), ref).verdict()
        )
        rep.rows.append(
            HorizonRow(
                name,
                float(hit.mean()),
                group_bootstrap(hit, blocks),
                on_change,
                float(loss.mean()),
                dm,
            )
        )
    return rep


def format_horizon(r: HorizonReport) -> str:
    d, f, u = r.shares
    lines = [
        f"{r.stream}, {r.horizon}: {r.n_test} test events ({d:.0%} down, {f:.0%} flat, {u:.0%} up)",
        "",
        "| forecaster | accuracy (95% CI) | right way when it moved | log loss | vs imbalance softmax |",
        "|---|---|---|---|---|",
    ]
    for x in r.rows:
        lines.append(
            f"| {x.name} | {x.accuracy:.1%} [{x.ci[0]:.1%}, {x.ci[1]:.1%}] | {x.on_change:.1%} | "
            f"{x.log_loss:.4f} | {x.dm} |"
        )
    return "\n".join(lines)
