"""The probabilistic half of ``gekko eval``: DM tests against each baseline, tables, seed spread.

Why apart from models/evaluate.py: that module walks the data forward and collects forecasts;
this one turns collected forecasts into what a forecaster reads — pinball / CRPS / coverage per
forecaster, a Diebold–Mariano test of the model against every baseline (on squared error, and
on CRPS where the baseline gives quantiles), and, over several seeds, mean ± spread of the
model's scores with the range of its DM p-values (one seed is one draw, never a result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.probabilistic import (
    ProbScore,
    SeedSummary,
    crps,
    fmt_spread,
    prob_score,
    seed_summary,
)


@dataclass(frozen=True)
class DMRow:
    """The model against one baseline on one loss; ``mean_diff`` < 0: the model's is lower."""

    model: str  # the model, or its calibrated bands ("nhits + split conformal")
    baseline: str
    loss: str  # "squared error" | "CRPS"
    stat: float
    p_value: float
    mean_diff: float
    n: int

    def verdict(self, alpha: float = 0.05) -> str:
        if not math.isfinite(self.p_value) or self.p_value >= alpha:
            return "no significant difference"
        return "model better" if self.mean_diff < 0 else "model worse"

    def to_dict(self) -> dict:
        return {**self.__dict__, "verdict": self.verdict()}


def window_sq_error(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-window squared error, averaged over the horizon: ``[m]``."""
    return np.mean((pred.astype(np.float64) - y) ** 2, axis=1)


def window_crps(q: np.ndarray, y: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Per-window CRPS (quantile approximation), averaged over the horizon: ``[m]``."""
    return crps(y, q, levels).mean(axis=1)


def dm_missing() -> str | None:
    """Why the DM tests cannot run here (scipy absent: the runtime install), or None."""
    try:
        from scipy import stats

        stats.t.sf(1.0, df=2)
    except Exception as exc:  # noqa: BLE001 - not installed, or a dependency of it broken
        return f"Diebold–Mariano tests skipped: {type(exc).__name__}: {exc} (pip install scipy)"
    return None


def dm_rows(
    model: str,
    points: dict[str, np.ndarray],
    quants: dict[str, np.ndarray],
    y: np.ndarray,
    levels: Sequence[float],
) -> list[DMRow]:
    """DM tests of ``model`` (a key of both dicts) against every other forecaster in them: on
    squared error, and on CRPS for the model and each of its calibrated variants (keys
    ``"<model> + ..."``) against every quantile baseline.

    Windows overlap by ``horizon - 1`` bars, so the test allows that many autocovariances.
    """
    from models.stat_tests import diebold_mariano  # scipy: evaluation only

    h = y.shape[1]
    out = []
    base = window_sq_error(points[model], y)
    for name, p in points.items():
        if name != model:
            r = diebold_mariano(base, window_sq_error(p, y), h)
            out.append(DMRow(model, name, "squared error", r.stat, r.p_value, r.mean_diff, r.n))
    ours = [n for n in quants if n == model or n.startswith(model + " +")]
    for m in ours:
        base = window_crps(quants[m], y, levels)
        for name, q in quants.items():
            if name not in ours:
                r = diebold_mariano(base, window_crps(q, y, levels), h)
                out.append(DMRow(m, name, "CRPS", r.stat, r.p_value, r.mean_diff, r.n))
    return out


def prob_rows(quants: dict[str, np.ndarray], y: np.ndarray, levels: Sequence[float]) -> list:
    """One ProbScore per forecaster that gives quantiles."""
    return [prob_score(name, y, q, levels) for name, q in quants.items()]


def format_prob(prob: Sequence[ProbScore], dm: Sequence[DMRow], levels: Sequence[float]) -> str:
    """The pinball / CRPS / coverage table and the DM table."""
    lv = ", ".join(f"{t:g}" for t in levels)
    w = max([26] + [len(s.name) for s in prob])
    lines = [
        f"quantile forecasts at levels {lv} (pinball: mean over levels; CRPS from those levels; "
        "worst level: the largest gap between a level and the share of outcomes below it)",
        f"| {'forecaster':<{w}} | {'pinball':>9} | {'CRPS':>9} | {'coverage':>8} | "
        f"{'nominal':>7} | {'band width':>10} | {'worst level':>11} |",
        f"|{'-' * (w + 2)}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 9}|{'-' * 12}|{'-' * 13}|",
    ]
    for s in prob:
        lines.append(
            f"| {s.name:<{w}} | {s.pinball:>9.3g} | {s.crps:>9.3g} | {100 * s.coverage:>7.1f}% | "
            f"{100 * s.nominal:>6.0f}% | {s.width:>10.3g} | {100 * s.level_error:>9.1f}pt |"
        )
    if dm:
        lines += [
            "Diebold–Mariano (HLN), model vs each baseline, two-sided:",
            f"| {'model':<{w}} | {'baseline':<15} | {'loss':<13} | {'DM stat':>8} | {'p':>8} | "
            f"verdict |",
            f"|{'-' * (w + 2)}|{'-' * 17}|{'-' * 15}|{'-' * 10}|{'-' * 10}|{'-' * 9}|",
        ]
        for d in dm:
            lines.append(
                f"| {d.model:<{w}} | {d.baseline:<15} | {d.loss:<13} | {d.stat:>8.2f} | "
                f"{d.p_value:>8.3g} | {d.verdict()} |"
            )
    return "\n".join(lines)


# --- several seeds ---------------------------------------------------------------------------

SEED_SCORES = (  # (label, where in the report dict, format, scale)
    ("MAE", ("point", "mae"), ".3g", 1.0),
    ("RMSE", ("point", "rmse"), ".3g", 1.0),
    ("MASE", ("point", "mase"), ".3f", 1.0),
    ("dir. acc. %", ("point", "dir_acc"), ".1f", 100.0),
    ("pinball", ("prob", "pinball"), ".3g", 1.0),
    ("CRPS", ("prob", "crps"), ".3g", 1.0),
    ("coverage %", ("prob", "coverage"), ".1f", 100.0),
    ("worst level pt", ("prob", "level_error"), ".1f", 100.0),
)


def _find(report: dict, kind: str, name: str) -> dict | None:
    rows = report["table"] if kind == "point" else report.get("probabilistic", [])
    return next((r for r in rows if r["name"] == name), None)


def seed_summary_dict(reports: Sequence[dict], names: Sequence[str]) -> dict:
    """Mean ± spread over the seeds' reports (``EvalReport.to_dict()``) for each forecaster in
    ``names``, and the range of the model's DM p-values against each baseline."""
    out: dict = {"seeds": [r.get("seed") for r in reports], "scores": {}, "dm": []}
    for name in names:
        per = {}
        for label, (kind, key), _, _ in SEED_SCORES:
            vals = [(_find(r, kind, name) or {}).get(key) for r in reports]
            s = seed_summary([v for v in vals if v is not None])
            if s.n:
                per[label] = s.__dict__
        out["scores"][name] = per
    keys = [(d["model"], d["baseline"], d["loss"]) for d in reports[0].get("dm", [])]
    for key in keys:
        rows = [
            d
            for r in reports
            for d in r.get("dm", [])
            if (d["model"], d["baseline"], d["loss"]) == key
        ]
        ps = [d["p_value"] for d in rows]
        model, base, loss = key
        out["dm"].append(
            {
                "model": model,
                "baseline": base,
                "loss": loss,
                "p_min": min(ps),
                "p_max": max(ps),
                "model_better": sum(d["verdict"] == "model better" for d in rows),
                "model_worse": sum(d["verdict"] == "model worse" for d in rows),
                "n_seeds": len(rows),
            }
        )
    return out


def format_seeds(summary: dict) -> str:
    """The mean ± spread table over seeds and the DM verdict counts."""
    seeds = summary["seeds"]
    labels = [s[0] for s in SEED_SCORES]
    lines = [
        f"over {len(seeds)} seeds ({', '.join(str(s) for s in seeds)}): mean ± standard deviation",
        "| forecaster | " + " | ".join(labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for name, per in summary["scores"].items():
        cells = []
        for label, _, fmt, scale in SEED_SCORES:
            cells.append(spread_cell(per.get(label), fmt, scale))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary["dm"]:
        lines += [
            "DM tests over the seeds (model vs baseline): p range, seeds where significant",
            "| model | baseline | loss | p (min – max) | model better | model worse |",
            "|---|---|---|---|---|---|",
        ]
        for d in summary["dm"]:
            lines.append(
                f"| {d['model']} | {d['baseline']} | {d['loss']} | {d['p_min']:.3g} – {d['p_max']:.3g} | "
                f"{d['model_better']}/{d['n_seeds']} | {d['model_worse']}/{d['n_seeds']} |"
            )
    return "\n".join(lines)


def spread_cell(d: dict | None, fmt: str, scale: float) -> str:
    """A summary's ``mean ± std`` cell (``-`` when the forecaster has no such score)."""
    return "-" if d is None else fmt_spread(SeedSummary(**d), fmt, scale)
