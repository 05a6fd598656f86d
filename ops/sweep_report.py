"""What a sweep shows: the terminal table ``gekko sweep`` prints and its HTML report (one
self-contained file, the charts SVG drawn by ops/report_charts.py, the page's style that of
ops/html_report.py). Both read the plain summary of ops/sweep_store.py, plus the trials'
equity curves for the charts. How to read them: docs/sweeps.md.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

from ops.html_report import CSS
from ops.report_charts import PALETTE, Chart, Series, bar_chart, time_chart
from ops.sweep_search import SweepOutcome

#: trials listed per window in the terminal (the best ones; every trial that is not ok too)
TOP_PER_WINDOW = 5


def _f(v: Any, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def _params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(p.items())) or "(none)"


def _trial_line(t: dict[str, Any]) -> str:
    return (
        f"  {t['trial']:>5} {t['window']:>3} {t['role']:<6} {_params(t['params'])[:28]:<28} "
        f"{t['status']:<7} {_f(t['objective']):>10} {_f(t['net_pnl'], ',.2f'):>12} "
        f"{_f(t['sharpe']):>9} {_f(t['max_drawdown']):>9} {_f(t['turnover']):>9} "
        f"{t['fills'] if t['fills'] is not None else '-':>6}"
    )


def format_sweep(s: dict[str, Any], shown: list[dict[str, Any]]) -> str:
    """The terminal report: ``shown`` (``shown_trials``: each window's best trials and every
    trial not ok), the per-window verdict (deflated Sharpe ratio, PBO), the walk-forward folds."""
    nw = len(s["windows"])
    lines = [
        "",
        f"Gekko sweep — {s['method']}, {s['trials']} trials on {nw} window(s), "
        f"objective {s['objective']}, {s['parallelism']} at a time, {s['wall_s']:.1f} s wall",
    ]
    bad = s["not_ok"]
    lines.append(
        f"  not ok: {bad['invalid']} invalid, {bad['failed']} failed, {bad['timeout']} timed out"
    )
    head = (
        f"  {'trial':>5} {'win':>3} {'role':<6} {'params':<28} {'status':<7} {'objective':>10} "
        f"{'net P&L':>12} {'sharpe':>9} {'max dd':>9} {'turnover':>9} {'fills':>6}"
    )
    lines += ["", head]
    for t in shown:
        lines.append(_trial_line(t))
        if t["error"]:
            lines.append(f"        ! {t['error'][:110]}")
    lines += ["", "  per window (best trial; DSR: P(skill, not luck); PBO: P(overfit))"]
    lines.append(
        f"  {'win':>3} {'data':<42} {'ok':>7} {'best params':<28} {'objective':>10} "
        f"{'DSR':>6} {'PBO':>6}"
    )
    labels = {w["window"]: w["label"] for w in s["windows"]}
    for w in s["per_window"]:
        b = w["best"] or {}
        lines.append(
            f"  {w['window']:>3} {labels[w['window']][:42]:<42} {w['ok']:>3}/{w['trials']:<3} "
            f"{_params(b.get('params', {}))[:28]:<28} {_f(b.get('objective')):>10} "
            f"{_f(w['deflated_sharpe'], '.3f'):>6} {_f(w['pbo'], '.3f'):>6}"
            + (f"  ({w['note']})" if w["note"] else "")
        )
    if s["folds"]:
        lines += ["", "  walk-forward (optimise on window k, test on k+1)"]
        lines.append(
            f"  {'fold':>4} {'params':<28} {'IS obj':>10} {'OOS obj':>10} {'IS P&L':>12} "
            f"{'OOS P&L':>12} {'OOS status':<10}"
        )
        for f in s["folds"]:
            i, o = f["in_sample"], f["out_of_sample"] or {}
            lines.append(
                f"  {f['fold']:>4} {_params(f['params'])[:28]:<28} {_f(i['objective']):>10} "
                f"{_f(o.get('objective')):>10} {_f(i['net_pnl'], ',.2f'):>12} "
                f"{_f(o.get('net_pnl'), ',.2f'):>12} {o.get('status', 'missing'):<10}"
            )
    return "\n".join(lines)


def shown_trials(out: SweepOutcome) -> list[dict[str, Any]]:
    """The terminal's rows: per window its ``TOP_PER_WINDOW`` best, and every trial not ok."""
    from ops.sweep_store import trial_brief

    rows = [trial_brief(t, out.objective) for t in out.trials]
    keep: list[dict[str, Any]] = []
    for w in out.windows:
        mine = [r for r in rows if r["window"] == w.index and r["objective"] is not None]
        keep += sorted(mine, key=lambda r: (-r["objective"], r["trial"]))[:TOP_PER_WINDOW]
    keep += [r for r in rows if r["status"] != "ok" or (r["objective"] is None)]
    seen: set[int] = set()
    return [r for r in keep if not (r["trial"] in seen or seen.add(r["trial"]))]


# --- HTML ----------------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _equity_charts(out: SweepOutcome) -> list[str]:
    """Per searched window: the equity curves of its five best trials."""
    from ops.sweep_search import objective_of

    parts = []
    for st in out.stats:
        mine = [
            t
            for t in out.trials
            if t.window == st.window
            and t.role == "search"
            and objective_of(t, out.objective) is not None
        ]
        mine.sort(key=lambda t: (-(objective_of(t, out.objective) or 0.0), t.trial))
        series = [
            Series(f"#{t.trial} {_params(t.params)}", t.curve_ts, t.curve_eq, PALETTE[k % 7])
            for k, t in enumerate(mine[:5])
            if t.curve_ts.size
        ]
        if series:
            label = out.windows[st.window].label
            parts.append(
                time_chart(Chart(f"window {st.window} ({label}): equity, best 5", "equity", series))
            )
    return parts


def _window_table(s: dict[str, Any]) -> str:
    """Per window: the best trial, its deflated Sharpe ratio, PBO."""
    labels = {w["window"]: w["label"] for w in s["windows"]}
    return (
        _table(
            [
                "window",
                "data",
                "ok / trials",
                "best params",
                "objective",
                "net P&L",
                "DSR",
                "SR0 (luck)",
                "PBO",
                "note",
            ],
            [
                [
                    w["window"],
                    labels[w["window"]],
                    f"{w['ok']} / {w['trials']}",
                    _params((w["best"] or {}).get("params", {})),
                    _f((w["best"] or {}).get("objective")),
                    _f((w["best"] or {}).get("net_pnl"), ",.2f"),
                    _f(w["deflated_sharpe"], ".3f"),
                    _f(w["expected_max_sharpe"], ".4g"),
                    _f(w["pbo"], ".3f"),
                    w["note"],
                ]
                for w in s["per_window"]
            ],
        )  # fmt: skip
    )


def _fold_parts(s: dict[str, Any]) -> list[str]:
    """Walk-forward: each fold's in-sample and out-of-sample figures, table and chart."""
    if not s["folds"]:
        return []
    parts: list[str] = []
    parts.append("<h2>Walk-forward: in sample beside out of sample</h2>")
    rows, cats, is_v, oos_v = [], [], [], []
    for f in s["folds"]:
        i, o = f["in_sample"], f["out_of_sample"] or {}
        rows.append(
            [
                f["fold"],
                _params(f["params"]),
                _f(i["objective"]),
                _f(o.get("objective")),
                _f(i["net_pnl"], ",.2f"),
                _f(o.get("net_pnl"), ",.2f"),
                o.get("status", "missing"),
            ]
        )
        cats.append(f"fold {f['fold']}")
        is_v.append(i["objective"] or 0.0)
        oos_v.append(o.get("objective") or 0.0)
    parts.append(
        _table(
            [
                "fold",
                "params",
                "IS objective",
                "OOS objective",
                "IS net P&L",
                "OOS net P&L",
                "OOS status",
            ],
            rows,
        )  # fmt: skip
    )
    parts.append(bar_chart(f"{s['objective']}: in sample vs out of sample", cats,
                           {"in sample": is_v, "out of sample": oos_v}))  # fmt: skip
    return parts


def _trials_table(out: SweepOutcome) -> str:
    """Every trial, one row each."""
    from ops.sweep_store import trial_brief

    return (
        _table(
            [
                "trial",
                "window",
                "role",
                "params",
                "status",
                "objective",
                "net P&L",
                "sharpe",
                "max drawdown",
                "turnover",
                "fills",
                "error",
            ],
            [
                [
                    t["trial"],
                    t["window"],
                    t["role"],
                    _params(t["params"]),
                    t["status"],
                    _f(t["objective"]),
                    _f(t["net_pnl"], ",.2f"),
                    _f(t["sharpe"]),
                    _f(t["max_drawdown"]),
                    _f(t["turnover"]),
                    t["fills"],
                    t["error"],
                ]
                for t in (trial_brief(x, out.objective) for x in out.trials)
            ],
        )  # fmt: skip
    )


def render_html(out: SweepOutcome, s: dict[str, Any], config_text: str) -> str:
    """The page: per-window verdicts, walk-forward folds (table and chart), the best trials'
    equity curves, every trial, the configuration."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f"Gekko sweep report — {s['method']}, objective {s['objective']}"
    bad = s["not_ok"]
    parts = [
        f"<h1>{html.escape(title)}</h1><p class=meta>{when} · {s['trials']} trials · "
        f"{s['parallelism']} at a time · {s['wall_s']:.1f} s · not ok: {bad['invalid']} invalid,"
        f" {bad['failed']} failed, {bad['timeout']} timed out</p>",
        "<h2>Per window</h2><p>DSR: the probability that the best trial's Sharpe ratio is skill "
        "rather than the luck of trying this many; PBO: the probability that the in-sample best "
        "ranks at or below the median out of sample (docs/sweeps.md).</p>",
    ]
    parts.append(_window_table(s))
    parts += _fold_parts(s)
    parts.append("<h2>Equity curves</h2>")
    parts += _equity_charts(out) or ["<p class=none>no trial completed</p>"]
    parts.append("<h2>Every trial</h2>")
    parts.append(_trials_table(out))
    parts.append(
        "<h2>Configuration used</h2><details><summary>config.toml (secrets masked)</summary>"
        f"<pre>{html.escape(config_text)}</pre></details>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def write_html(out: SweepOutcome, s: dict[str, Any], config_text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_html(out, s, config_text), encoding="utf-8")
    tmp.replace(path)
    return path
