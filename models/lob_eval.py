"""Out-of-sample scoring of next-mid-change direction forecasts on one event stream.

The target at event i is the sign of the first later mid that differs from the mid after i. The
stream is split by time: the forecasters fit on the first ``train_frac`` of the events (minus
the training rows whose target lies past the split: purged) and are scored on everything after
it. Consecutive events share their target until the mid moves, so they are not independent
samples: intervals come from a bootstrap over those groups (one per mid change), and the
Diebold–Mariano test compares per-group mean log losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.micro_pnl import CostRule, PnL, simulate
from models.lob_data import BookEvents
from models.lob_features import features_of_events
from models.lob_models import MLP, ImbalanceLogit, LinearLogit, baselines
from models.stat_tests import diebold_mariano

NOTIONAL = 20_000.0  # the trading simulation's order size, in the quote currency


def next_change(mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(direction, at) per event: +1 / -1 for the next different mid, 0 where none follows;
    ``at`` is the index of that next change (-1 where none). NaN mids (one-sided books) are
    carried over from the last good one."""
    m = mid.astype(np.float64).copy()
    good = np.isfinite(m)
    if not good.any():
        return np.zeros(len(m), np.int8), np.full(len(m), -1, np.int64)
    idx = np.where(good, np.arange(len(m)), 0)
    np.maximum.accumulate(idx, out=idx)
    m = m[idx]
    m[: np.argmax(good)] = m[np.argmax(good)]
    changes = np.flatnonzero(np.diff(m) != 0) + 1  # the index where a new mid starts
    k = np.searchsorted(changes, np.arange(len(m)), side="right")
    has = k < len(changes)
    at = np.where(has, changes[np.minimum(k, len(changes) - 1)], -1)
    direction = np.zeros(len(m), np.int8)
    direction[has] = np.sign(m[at[has]] - m[has]).astype(np.int8)
    return direction, at


@dataclass
class Scored:
    name: str
    accuracy: float
    ci: tuple[float, float]
    log_loss: float
    dm_p: float  # vs the imbalance baseline (NaN for itself)
    dm_verdict: str


@dataclass
class MicroReport:
    stream: str
    n_train: int
    n_test: int
    groups_test: int
    up_share: float
    rows: list[Scored] = field(default_factory=list)
    seeds_summary: str = ""
    pnl: list[PnL] = field(default_factory=list)
    fee_bps: float = 0.0


def group_bootstrap(
    hit: np.ndarray, group: np.ndarray, reps: int = 500, seed: int = 0
) -> tuple[float, float]:
    _, inv = np.unique(group, return_inverse=True)
    hits = np.bincount(inv, weights=hit.astype(np.float64))
    counts = np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(seed)
    acc = np.empty(reps)
    for r in range(reps):
        pick = rng.integers(0, len(counts), len(counts))
        acc[r] = hits[pick].sum() / counts[pick].sum()
    lo, hi = np.percentile(acc, [2.5, 97.5])
    return float(lo), float(hi)


def group_means(v: np.ndarray, group: np.ndarray) -> np.ndarray:
    _, inv = np.unique(group, return_inverse=True)
    return np.bincount(inv, weights=v) / np.bincount(inv)


def _log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def samples(ev: BookEvents) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, label 0/1, group, event index) of every event with a valid book and a later
    change; the group is the index of that change."""
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    direction, at = next_change(ev.mid)
    keep = valid & (direction != 0) & np.isfinite(x).all(axis=1)
    idx = np.flatnonzero(keep)
    return x[idx], (direction[idx] > 0).astype(np.float64), at[idx], idx


def evaluate_stream(
    ev: BookEvents,
    seeds: tuple[int, ...] = (0, 1, 2),
    train_frac: float = 0.7,
    fee_bps: float = 0.2,
    latency_ns: int = 0,
) -> MicroReport:
    x, y, group, idx = samples(ev)
    split = int(len(ev) * train_frac)
    train = (idx < split) & (group < split)  # purged: no training target looks past the split
    test = idx >= split
    xtr, ytr, xte, yte, gte = x[train], y[train], x[test], y[test], group[test]
    rep = MicroReport(ev.name, int(train.sum()), int(test.sum()), len(np.unique(gte)), yte.mean())
    forecasters: list[Any] = [*baselines(), LinearLogit()] + [MLP(seed=s) for s in seeds]
    scored = []
    predictions = []
    for f in forecasters:
        p = f.fit(xtr, ytr).predict(xte)
        predictions.append((f, p))
        loss = _log_loss(p, yte)
        scored.append((f, (p > 0.5) == (yte > 0.5), loss, group_means(loss, gte)))
    ref = next(gl for f, _, _, gl in scored if isinstance(f, ImbalanceLogit))
    accs: list[float] = []
    for f, hit, loss, gl in scored:
        own = isinstance(f, ImbalanceLogit)
        dm = diebold_mariano(gl, ref)
        rep.rows.append(
            Scored(
                f.name,
                float(hit.mean()),
                group_bootstrap(hit, gte),
                float(loss.mean()),
                float("nan") if own else dm.p_value,
                "-" if own else dm.verdict(),
            )
        )
        if isinstance(f, MLP):
            accs.append(float(hit.mean()))
    by_name = {f.name: p for f, p in predictions}
    rep.fee_bps = fee_bps
    rep.pnl = trading_controls(
        ev, split, idx[test], by_name, expected_move(ev, idx[train], group[train]), fee_bps,
        latency_ns,
    )  # fmt: skip
    if accs:
        rep.seeds_summary = (
            f"mlp over {len(accs)} seeds: accuracy {np.mean(accs):.1%} ± {np.std(accs):.1%}"
        )
    return rep


def expected_move(ev: BookEvents, rows: np.ndarray, at: np.ndarray) -> float:
    """Mean absolute size of the next mid change over the training rows (price units)."""
    mid = ev.mid
    moves = np.abs(mid[at] - mid[rows])
    moves = moves[np.isfinite(moves)]
    return float(moves.mean()) if moves.size else 0.0


def trading_controls(
    ev: BookEvents,
    split: int,
    rows: np.ndarray,
    p: dict[str, np.ndarray],
    expected_move: float,
    fee_bps: float,
    latency_ns: int = 0,
) -> list[PnL]:
    """The cost-aware rule on the test block with our forecasts (the all-feature logit and the
    first MLP) and the imbalance baseline; then, to show the edge before costs, the rule
    without its cost check (any P(up) at least 0.2 from a coin) on ours and on two controls:
    ours shuffled (a random signal of the same distribution) and reversed."""
    seg = ev.slice(split, len(ev))
    # about NOTIONAL of currency an order, whatever the units
    mid0 = float(np.nanmedian(seg.mid)) if len(seg) else 0.0
    qty = max(1, round(NOTIONAL / (mid0 * ev.px_unit * ev.qty_unit))) if mid0 > 0 else 1
    aware = CostRule(expected_move, fee_bps, qty=qty, latency_ns=latency_ns)
    blind = CostRule(
        expected_move, fee_bps, margin=0.0, conviction=0.2, qty=qty, latency_ns=latency_ns
    )
    out = []
    ours = "logit (all features)"
    shuffled = np.random.default_rng(0).permutation(p[ours])
    runs = [(n, p[n], aware) for n in (ours, "mlp (seed 0)", "imbalance logit") if n in p]
    for name, probs in ((ours, p[ours]), ("shuffled", shuffled), ("reversed", 1 - p[ours])):
        runs.append((f"{name}, no cost check", probs, blind))
    for name, probs, rule in runs:
        full = np.full(len(seg), 0.5)
        full[rows - split] = probs
        out.append(
            simulate(
                name,
                seg.ts,
                seg.bid_px[:, 0],
                seg.bid_sz[:, 0],
                seg.ask_px[:, 0],
                seg.ask_sz[:, 0],
                full,
                ev.px_unit,
                rule,
                ev.qty_unit,
            )
        )
    return out


def format_report(r: MicroReport) -> str:
    lines = [
        f"{r.stream}: {r.n_train} training events, {r.n_test} test events "
        f"({r.groups_test} mid changes; {r.up_share:.1%} up)",
        "",
        "| forecaster | accuracy (95% CI) | log loss | vs imbalance logit (DM p) |",
        "|---|---|---|---|",
    ]
    for s in r.rows:
        dm = "-" if s.dm_verdict == "-" else f"{s.dm_verdict} (p={s.dm_p:.2g})"
        lines.append(
            f"| {s.name} | {s.accuracy:.1%} [{s.ci[0]:.1%}, {s.ci[1]:.1%}] | {s.log_loss:.4f} | {dm} |"
        )
    if r.seeds_summary:
        lines += ["", r.seeds_summary]
    if r.pnl:
        lines += [
            "",
            f"Acting on it through the simulated exchange (taker, {r.fee_bps:g} bp fee, orders "
            f"of about {NOTIONAL:,.0f}, the rule of engine/micro_pnl.py):",
            "",
            "| signal | round trips | gross | fees | net | per trip | won |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in r.pnl:
            lines.append(
                f"| {x.name} | {x.trades} | {x.gross:.2f} | {x.fees:.2f} | {x.net:.2f} | "
                f"{x.per_trade:.3f} | {x.hit_rate:.0%} |"
            )
    return "\n".join(lines)
