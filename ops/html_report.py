"""The HTML report of a run or a backtest: one self-contained file, opened offline in a browser.

Written after the run stops (never on a hot path): ``after_run`` by the supervisor beside
summary.json (``var_dir/last_run/report.html``, and the run's ``run_reports`` row in
PostgreSQL), ``after_backtest`` by ``gekko backtest``; ``gekko report RUN_ID`` rebuilds a
recorded run's from PostgreSQL. The page is ``render(ReportData)`` (ops/report_data.py), its
charts SVG drawn by ops/report_charts.py; no script, no stylesheet or font from elsewhere.
Contents and how to read them: docs/reports.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ops.report import _fig, _small_pct
from ops.report_charts import (
    BUY,
    PALETTE,
    SELL,
    Chart,
    Markers,
    Series,
    bar_chart,
    histogram_chart,
    time_chart,
)
from ops.report_data import ReportData

log = logging.getLogger("gekko.report")

#: the latency stages in the order a tick travels (PostgreSQL's jsonb keeps no key order)
STAGES = ("tick_to_intent_ns", "tick_to_approval_ns", "tick_to_order_ns")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666}table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f6f8fa}
svg.chart{display:block;margin:8px 0;background:#fff}svg text{font:11px sans-serif;fill:#444}
svg text.title{font-weight:600;font-size:12px;fill:#222}.grid{stroke:#eee}.ax{stroke:#888}
.plot{fill:none;stroke:#ccc}pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
.none{color:#888;font-style:italic}
"""


# --- the page ------------------------------------------------------------------------------------
def render(d: ReportData) -> str:
    """The whole page (str)."""
    x0, x1 = _time_span(d)
    parts = [_header(d), _figures(d)]
    parts += _equity(d, x0, x1)
    parts += _prices(d, x0, x1)
    parts += _positions(d, x0, x1)
    parts += _attribution(d)
    parts += _latency(d)
    parts += _risk(d)
    parts += _analytics(d)
    parts.append(
        "<h2>Configuration used</h2><details><summary>config.toml (secrets masked)</summary>"
        f"<pre>{html.escape(d.config_text)}</pre></details>"
    )
    title = html.escape(_title(d))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def _title(d: ReportData) -> str:
    if d.kind == "backtest":
        return f"Gekko backtest report — engine {d.engine_id}"
    return f"Gekko run report — engine {d.engine_id}, run {d.run_id}"


def _header(d: ReportData) -> str:
    s = d.summary
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    src = {"postgres": "rebuilt from PostgreSQL", "run": "written by the run"}.get(
        d.source, "written by the backtest"
    )
    bits = [f"{src}, {when}"]
    if s.get("stop_reason"):
        bits.append(f"stopped: {s['stop_reason']}")
    if s.get("elapsed_s") is not None:
        bits.append(f"{float(s['elapsed_s']):.1f} s")
    return f"<h1>{html.escape(_title(d))}</h1><p class=meta>{html.escape(' · '.join(bits))}</p>"


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def _money(v: Any) -> str:
    return "-" if v is None else f"{float(v):+,.2f}"


_COMPONENTS = (("funding", "funding"), ("financing", "financing"), ("commission", "commission"))


def _figures(d: ReportData) -> str:
    s = d.summary
    net = sum(float(s.get(k) or 0.0) for k in ("realized", "unrealized", "funding", "financing"))
    net -= float(s.get("fees") or 0.0) + float(s.get("commission") or 0.0)
    rows = [
        ["market events", s.get("ticks")],
        ["intents", s.get("intents")],
        [
            "orders new / cancel / replace",
            _slash(s, "orders_new", "orders_cancel", "orders_replace"),
        ],
        ["fills", s.get("fills")],
        ["fills shown", len(d.fills.get("ts", []))],
        ["rejects risk / venue", _slash(s, "risk_rejects", "venue_rejects")],
        ["risk events", s.get("risk_events")],
        ["realized P&L", _money(s.get("realized"))],
        ["unrealized P&L", _money(s.get("unrealized"))],
        ["fees", "-" if s.get("fees") is None else f"{float(s['fees']):,.2f}"],
    ]
    # the account's P&L components (ops/report_accounts.py), where the run had them
    rows += [[name, _money(s[k])] for k, name in _COMPONENTS if s.get(k)]
    rows.append(["net P&L", _money(net)])
    acct = s.get("account") or {}
    for key in ("settlements", "liquidations", "margin_calls"):
        if acct.get(key):
            rows.append([key.replace("_", " "), acct[key]])
    return "<h2>Figures</h2>" + _table(["", "value"], rows, "figures")


def _slash(s: dict[str, Any], *keys: str) -> str:
    return " / ".join(str(s.get(k) if s.get(k) is not None else "-") for k in keys)


def _time_span(d: ReportData) -> tuple[int | None, int | None]:
    ts = list(d.equity.get("ts") or []) + list(d.fills.get("ts") or [])
    return (min(ts), max(ts)) if ts else (None, None)


def _none(what: str) -> str:
    return f'<p class="none">{html.escape(what)}</p>'


def _equity(d: ReportData, x0: int | None, x1: int | None) -> list[str]:
    ts = np.asarray(d.equity.get("ts") or [], dtype=np.int64)
    eq = np.asarray(d.equity.get("equity") or [], dtype=np.float64)
    out = ["<h2>Equity and drawdown</h2>"]
    if ts.size < 2:
        return [*out, _none("fewer than two equity points: nothing to draw")]
    events = [(int(e["ts"]), f"{e['kind']}: {e['reason']}") for e in d.risk_events]
    peak = np.maximum.accumulate(eq)
    pct = bool(np.all(peak > 0))
    dd = (eq / peak - 1.0) * 100.0 if pct else eq - peak
    out.append(
        time_chart(
            Chart(
                "Equity (base currency); risk events dashed",
                "",
                [Series("equity", ts, eq)],
                events=events,
                x0=x0,
                x1=x1,
            )
        )
    )
    name = "drawdown %" if pct else "drawdown"
    out.append(
        time_chart(
            Chart(
                "Drawdown from the running peak" + (" (%)" if pct else ""),
                "",
                [Series(name, ts, dd, PALETTE[1], fill=True)],
                events=events,
                x0=x0,
                x1=x1,
            )
        )
    )
    return out


def _prices(d: ReportData, x0: int | None, x1: int | None) -> list[str]:
    """Per instrument: its mark at each equity point and its fills (buys up, sells down)."""
    out = ["<h2>Prices and fills</h2>"]
    ts = np.asarray(d.equity.get("ts") or [], dtype=np.int64)
    f = {k: np.asarray(v) for k, v in d.fills.items()}
    drawn = 0
    for iid, ins in sorted(d.instruments.items()):
        tick, sym = float(ins["tick_size"]), str(ins["symbol"])
        marks = np.asarray((d.equity.get("marks") or {}).get(str(iid)) or [], dtype=np.float64)
        ok = marks > 0
        series = [Series(f"{sym} mark", ts[ok], marks[ok] * tick)] if ok.sum() >= 2 else []
        sel = f["instrument_id"] == iid if f["ts"].size else np.zeros(0, dtype=bool)
        markers = []
        for side, shape, color, word in ((1, "up", BUY, "buy"), (-1, "down", SELL, "sell")):
            m = sel & (f["side"] == side) if sel.size else sel
            if m.any():
                label = _fill_label(word, f["qty"][m], f["px"][m] * tick, f["strategy"][m])
                markers.append(
                    Markers(f"{word}s", f["ts"][m], f["px"][m] * tick, color, shape, label)
                )
        if not series and not markers:
            continue
        n = int(sel.sum())
        title = f"{sym}: mark price and {n} fills"
        ev = [(int(e["ts"]), f"{e['kind']}: {e['reason']}") for e in d.risk_events
              if int(e["instrument_id"]) == iid]  # fmt: skip
        out.append(time_chart(Chart(title, "", series, markers, events=ev, x0=x0, x1=x1)))
        drawn += 1
    return out if drawn else [*out, _none("no prices and no fills to draw")]


def _fill_label(
    word: str, qty: np.ndarray, px: np.ndarray, strategy: np.ndarray
) -> Callable[[int], str]:
    """The hover text of fill i, made only for the fills a chart keeps."""
    return lambda i: f"{word} {qty[i]} @ {px[i]:.6g} (strategy {strategy[i]})"


def _positions(d: ReportData, x0: int | None, x1: int | None) -> list[str]:
    """Each instrument's position (lots) after every fill, from the fills in order."""
    f = {k: np.asarray(v) for k, v in d.fills.items()}
    out = ["<h2>Position over time</h2>"]
    if not f["ts"].size:
        return [*out, _none("no fills: the position stayed flat")]
    series = []
    for k, (iid, ins) in enumerate(sorted(d.instruments.items())):
        m = f["instrument_id"] == iid
        if not m.any():
            continue
        t = f["ts"][m]
        pos = np.cumsum(f["side"][m] * f["qty"][m])
        order = np.argsort(t, kind="stable")
        t, pos = np.r_[t[order][0], t[order]], np.r_[0, pos[order]]
        if x1 is not None and t[-1] < x1:
            t, pos = np.r_[t, x1], np.r_[pos, pos[-1]]
        series.append(Series(str(ins["symbol"]), t, pos, PALETTE[k % len(PALETTE)], step=True))
    out.append(time_chart(Chart("Position (lots) per instrument", "", series, x0=x0, x1=x1)))
    return out


def _attribution(d: ReportData) -> list[str]:
    by = d.summary.get("pnl_by_strategy") or {}
    out = ["<h2>P&amp;L by strategy</h2>"]
    if not by:
        return [*out, _none("no strategy traded")]
    keys = sorted(by, key=lambda k: int(k))
    names = [d.strategies.get(int(k), f"strategy {k}") for k in keys]
    rows = [
        [n, _money(v["net"]), _money(v["realized"]), _money(v["unrealized"]),
         f"{float(v['fees']):,.2f}", int(v["fills"]), f"{float(v.get('notional', 0.0)):,.0f}"]
        for n, v in zip(names, (by[k] for k in keys), strict=True)
    ]  # fmt: skip
    out.append(
        _table(
            ["strategy", "net", "realized", "unrealized", "fees", "fills", "notional"],
            rows,
            "attribution",
        )  # fmt: skip
    )
    groups = {
        "net": [float(by[k]["net"]) for k in keys],
        "realized": [float(by[k]["realized"]) for k in keys],
        "unrealized": [float(by[k]["unrealized"]) for k in keys],
        "fees paid": [-float(by[k]["fees"]) for k in keys],
    }
    out.append(bar_chart("P&L by strategy (base currency)", names, groups))
    return out


def _latency(d: ReportData) -> list[str]:
    out = ["<h2>Latency</h2>"]
    drawn = 0
    for stage in sorted(d.latency, key=lambda k: (STAGES.index(k) if k in STAGES else 9, k)):
        h = d.latency[stage]
        if not h.get("count"):
            continue
        p = " ".join(f"{k} {_ns(h.get(k))}" for k in ("p50", "p99") if h.get(k) is not None)
        title = f"{stage.replace('_ns', '')}: {int(h['count'])} measured, {p}"
        out.append(histogram_chart(title, h["edges_ns"], h["counts"]))
        drawn += 1
    return out if drawn else [*out, _none("nothing was measured")]


def _ns(v: Any) -> str:
    from ops.report_charts import fmt_ns

    return fmt_ns(float(v))


def _risk(d: ReportData) -> list[str]:
    out = [f"<h2>Risk events ({len(d.risk_events)})</h2>"]
    if not d.risk_events:
        return [*out, _none("none")]
    t0 = _time_span(d)[0] or d.risk_events[0]["ts"]
    sym = {int(k): v["symbol"] for k, v in d.instruments.items()}
    counts: dict[str, int] = {}
    for e in d.risk_events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    out.append(_table(["kind", "events"], sorted(counts.items()), "risk-kinds"))
    rows = [
        [f"{(e['ts'] - t0) / 1e9:.3f}", e["kind"], sym.get(e["instrument_id"], e["instrument_id"]),
         e["reason"]]
        for e in d.risk_events[:500]
    ]  # fmt: skip
    more = len(d.risk_events) - len(rows)
    tail = _none(f"and {more} more (the run's risk.jsonl or the risk_events table)") if more else ""
    return [*out, _table(["s since start", "kind", "instrument", "reason"], rows, "risk"), tail]


def _analytics(d: ReportData) -> list[str]:
    """The equity-curve analytics as ``ops.report.format_analytics`` prints them."""
    a = d.summary.get("analytics") or {}
    out = ["<h2>Analytics</h2>"]
    if not a.get("points"):
        return [*out, _none("no equity curve")]
    lvl = f"{float(a.get('var_level', 0.95)):.0%}"
    rows = [
        ["equity points", a.get("points")],
        ["total return", _fig(a.get("total_return"), True)],
        ["max drawdown", _fig(a.get("max_drawdown"), True)],
        [f"VaR {lvl} per sample", _small_pct(a.get("var"))],
        [f"expected shortfall {lvl} per sample", _small_pct(a.get("expected_shortfall"))],
    ]
    ann = ("annualized_return", "volatility", "sharpe", "sortino", "calmar")
    if a.get("annualised", True):
        rows += [[k.replace("_", " "), _fig(a.get(k), k in ann[:2])] for k in ann]
    else:
        note = a.get("annualise_note") or "run too short to annualise"
        rows.append(["annualised return, volatility, Sharpe, Sortino, Calmar", f"n/a ({note})"])
    for k, pct in (("beta", False), ("alpha", True), ("excess_total_return", True),
                   ("information_ratio", False)):  # fmt: skip
        if a.get(k) is not None:
            rows.append([k.replace("_", " "), _fig(a.get(k), pct)])
    return [*out, _table(["measure", "value"], rows, "analytics")]


# --- writing -------------------------------------------------------------------------------------
def write(d: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(d), encoding="utf-8")
    tmp.replace(path)
    return path


def after_run(
    cfg: Any,
    record: Any,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    run_id: int,
    run_dir: Path,
    pg_dsn: str,
    out: Any = None,
) -> Path | None:
    """The supervisor's last word on a run: report.html beside summary.json and, with storage
    on, the run's ``run_reports`` row. Never raises: a report is not trading state."""
    if not cfg.report.html and not pg_dsn:
        return None
    from ops.report_data import from_run, store

    try:
        data = from_run(record, summary, metrics, cfg, run_id)
    except Exception:
        log.exception("report: could not gather the run's data")
        return None
    if pg_dsn:
        try:
            from ops.store.pg import PgSettings, connect

            with connect(pg_dsn, PgSettings.from_config(cfg)) as conn:
                conn.autocommit = True
                store(conn, data)
        except Exception as exc:
            log.warning("report: run %s not stored in PostgreSQL (%s)", run_id, exc)
    if not cfg.report.html:
        return None
    try:
        path = write(data, run_dir / "report.html")
    except Exception:
        log.exception("report: could not write %s", run_dir / "report.html")
        return None
    print(f"  report: {path}", file=out or sys.stdout, flush=True)
    return path


def backtest_path(cfg: Any, report: str, json_path: str) -> Path:
    """``--report``, else beside ``--json``, else ``var_dir/last_backtest/report.html``."""
    if report:
        return Path(report)
    if json_path:
        return Path(json_path).with_suffix(".html")
    return Path(cfg.engine.var_dir) / "last_backtest" / "report.html"


def after_backtest(rt: Any, summary: dict[str, Any], cfg: Any, path: Path) -> Path:
    from ops.report_data import from_backtest

    return write(from_backtest(rt, summary, cfg), path)


# --- gekko report RUN_ID -------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from ops.cli_common import load_config_or_exit, with_db
    from ops.report_data import RunNotRecorded, load_from_pg

    cfg = load_config_or_exit(args.config)
    path = Path(args.out or Path(cfg.engine.var_dir) / "reports" / f"report-{args.run_id}.html")

    def go(conn: Any) -> int:
        try:
            data = load_from_pg(conn, args.run_id)
        except RunNotRecorded as exc:
            print(f"gekko: {exc}", file=sys.stderr)
            return 1
        print(f"gekko: report of run {args.run_id}: {write(data, path)}")
        return 0

    return with_db(cfg, go)


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    p = with_config(
        sub.add_parser("report", help="rebuild a recorded run's HTML report from PostgreSQL")
    )
    p.add_argument(
        "run_id", type=int, help="the run id (gekko status, summary.json, the runs table)"
    )
    p.add_argument(
        "--out", default="", help="where to write it (default: var_dir/reports/report-RUN_ID.html)"
    )
    p.set_defaults(func=cmd_report)
