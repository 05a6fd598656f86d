"""``gekko eval --html``: the evaluation as one self-contained page, with calibration plots.

Why a page: a calibration plot says at a glance what a coverage number hides — which levels
are off and in which direction (bands too narrow put too many outcomes below the low levels
and too few below the high ones). Same style and chart code as the run report
(ops/html_report.py, ops/report_charts.py): no script, nothing fetched from elsewhere. Input:
``EvalReport.to_dict()`` of each seed and, for several seeds, models.prob_eval's summary.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ops.html_report import CSS, _table
from ops.report_charts import bar_chart


def _mean_observed(reports: Sequence[dict]) -> dict[str, list[float]]:
    """Per forecaster, the share of outcomes at or below each level, averaged over seeds."""
    got: dict[str, list[list[float]]] = {}
    for r in reports:
        for p in r.get("probabilistic", []):
            if p.get("observed"):
                got.setdefault(p["name"], []).append(list(p["observed"]))
    return {n: np.mean(np.array(v), axis=0).tolist() for n, v in got.items()}


def calibration_chart(reports: Sequence[dict], names: Sequence[str] | None = None, what="") -> str:
    """Observed minus nominal share below each level, in points, per forecaster (0 = calibrated);
    ``names`` picks the forecasters (default: all), ``what`` names them in the title."""
    levels = reports[0].get("levels", [])
    obs = _mean_observed(reports)
    obs = {n: v for n, v in obs.items() if names is None or n in names}
    if not levels or not obs:
        return ""
    groups = {n: [100.0 * (o - t) for o, t in zip(v, levels, strict=True)] for n, v in obs.items()}
    cats = [f"τ={t:g}" for t in levels]
    return bar_chart(f"{what or 'forecasters'}: observed - τ, pt", cats, groups)


def _prob_table(r: dict) -> str:
    head = ["forecaster", "pinball", "CRPS", "coverage", "nominal", "band width", "worst level"]
    rows = [
        [
            p["name"],
            f"{p['pinball']:.3g}",
            f"{p['crps']:.3g}",
            f"{100 * p['coverage']:.1f}%",
            f"{100 * p['nominal']:.0f}%",
            f"{p['width']:.3g}",
            f"{100 * p.get('level_error', float('nan')):.1f} pt",
        ]
        for p in r.get("probabilistic", [])
    ]
    return _table(head, rows)


def _point_table(r: dict) -> str:
    head = ["forecaster", "MAE", "RMSE", "MASE", "dir. acc.", "n"]
    rows = []
    for m in r["table"]:
        da = "-" if m.get("dir_acc") is None else f"{100 * m['dir_acc']:.1f}%"
        rows.append(
            [m["name"], f"{m['mae']:.3g}", f"{m.get('rmse', float('nan')):.3g}",
             f"{m['mase']:.3f}", da, m["n"]]
        )  # fmt: skip
    return _table(head, rows)


def _dm_table(r: dict) -> str:
    head = ["model", "baseline", "loss", "DM stat", "p", "verdict"]
    rows = [
        [d["model"], d["baseline"], d["loss"], f"{d['stat']:.2f}", f"{d['p_value']:.3g}",
         d["verdict"]]
        for d in r.get("dm", [])
    ]  # fmt: skip
    return _table(head, rows)


def _seed_table(summary: dict) -> str:
    from models.prob_eval import SEED_SCORES, spread_cell

    head = ["forecaster"] + [s[0] for s in SEED_SCORES]
    rows = [
        [name] + [spread_cell(per.get(label), fmt, scale) for label, _, fmt, scale in SEED_SCORES]
        for name, per in summary["scores"].items()
    ]
    dm = [
        [d["model"], d["baseline"], d["loss"], f"{d['p_min']:.3g} – {d['p_max']:.3g}",
         f"{d['model_better']}/{d['n_seeds']}", f"{d['model_worse']}/{d['n_seeds']}"]
        for d in summary["dm"]
    ]  # fmt: skip
    dm_head = ["model", "baseline", "loss", "p (min – max)", "model better", "model worse"]
    return _table(head, rows) + "<h3>Diebold–Mariano over the seeds</h3>" + _table(dm_head, dm)


def render(reports: Sequence[dict], summary: dict | None = None) -> str:
    """The page (str) for one seed's report or several seeds' reports and their summary."""
    r = reports[0]
    title = f"Gekko forecast evaluation — {r.get('data') or 'data'}, {r.get('architecture')}"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    how = f"{r['folds']}-fold walk-forward" if r.get("folds") else "held-out last part"
    meta = f"{when} · {how}, input {r['input_size']} bars, horizon {r['horizon']}"
    parts = [f"<h1>{html.escape(title)}</h1><p class=meta>{html.escape(meta)}</p>"]
    model = r["architecture"]
    ours = [p["name"] for p in r.get("probabilistic", []) if p["name"].startswith(model)]
    others = [p["name"] for p in r.get("probabilistic", []) if p["name"] not in ours]
    seeds = f", mean of {len(reports)} seeds" if len(reports) > 1 else ""
    parts += [
        "<h2>Calibration</h2><p class=meta>share of outcomes at or below each quantile minus "
        f"its level τ, in points (0: calibrated; below 0 at low τ and above at high τ: bands "
        f"too wide){html.escape(seeds)}</p>",
        calibration_chart(reports, ours, "the model"),
        calibration_chart(reports, others, "baselines"),
    ]
    if summary and len(reports) > 1:
        parts += ["<h2>Over the seeds</h2>", _seed_table(summary)]
    first = f" (seed {r.get('seed')})" if len(reports) > 1 else ""
    parts += [f"<h2>Quantile forecasts{first}</h2>", _prob_table(r)]
    parts += [f"<h2>Point forecasts{first}</h2>", _point_table(r)]
    parts += [f"<h2>Diebold–Mariano tests{first}</h2>", _dm_table(r)]
    for n in r.get("notes", []):
        parts.append(f"<p class=none>{html.escape(n)}</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def write(path: str | Path, reports: Sequence[dict], summary: dict | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render(reports, summary))
    return p
