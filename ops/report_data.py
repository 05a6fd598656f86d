"""What an HTML report shows, gathered once from wherever the run left it.

Three sources give the same ``ReportData``: a backtest's inline runtime (``from_backtest``), a
finished ``gekko run``'s record (``from_run``, in the supervisor after the workers stopped), and
PostgreSQL for a recorded run (``load_from_pg``: fills and risk events from their own tables,
the rest from ``run_reports``, which ``store`` writes at the end of the run). The page itself
(ops/html_report.py) only ever sees this structure, so a report rebuilt from the database is the
report the run wrote. Columns are plain lists (JSON-ready) and prices stay in ticks until drawn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.enums import RiskEventKind
from ops.report_accounts import tally_from_pg
from ops.secrets import redact

#: latency histogram bins: four per octave from 64 ns to 2^36 ns (about 69 s)
_EDGES_NS = 2.0 ** (np.arange(6 * 4, 36 * 4 + 1) / 4.0)

#: the figures of a run's summary the report shows (the rest of summary.json stays there)
SUMMARY_KEYS = (
    "ticks",
    "intents",
    "orders_new",
    "orders_cancel",
    "orders_replace",
    "fills",
    "risk_rejects",
    "venue_rejects",
    "risk_events",
    "realized",
    "unrealized",
    "fees",
    "funding",  # the account's P&L components besides (ops/report_accounts.py)
    "financing",
    "commission",
    "account",
    "stop_reason",
    "elapsed_s",
    "exit_code",
    "analytics",
    "pnl_by_strategy",
    "md_rejected",
)


@dataclass
class ReportData:
    """Everything one report draws; see the module docstring."""

    kind: str  # "run" | "backtest"
    engine_id: str
    run_id: int | None
    source: str  # where the data was read: "run", "backtest", "postgres"
    instruments: dict[int, dict[str, Any]]  # id -> {symbol, tick_size}
    strategies: dict[int, str]  # id -> name
    summary: dict[str, Any]
    equity: dict[str, Any]  # {"ts": [ns], "equity": [base ccy], "marks": {id: [ticks]}}
    fills: dict[str, list[Any]]  # columns: ts, instrument_id, side, px (ticks), qty, strategy
    risk_events: list[dict[str, Any]]  # {ts, kind, instrument_id, reason}
    latency: dict[str, dict[str, Any]]  # stage -> {edges_ns, counts, count, p50, p99}
    config_text: str
    extra: dict[str, Any] = field(default_factory=dict)


# --- pieces every source shares ---------------------------------------------------------------
def instruments_of(cfg: Any) -> dict[int, dict[str, Any]]:
    return {
        int(i.instrument_id): {"symbol": i.symbol, "tick_size": float(i.tick_size)}
        for i in cfg.instruments
    }


def strategy_names(cfg: Any) -> dict[int, str]:
    """Each strategy's id and the name the summary table uses (ops/report.format_analytics)."""
    out: dict[int, str] = {}
    for k, st in enumerate(getattr(cfg, "strategies", None) or []):
        out[int(st.id or k + 1)] = st.name or st.path.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return out


def config_text(cfg: Any) -> str:
    """The configuration file the run read, secrets masked (ops/secrets.redact)."""
    path = getattr(cfg, "source_path", "") or ""
    try:
        with open(path, encoding="utf-8") as f:
            return redact(f.read())
    except OSError:
        return f"(the configuration file {path!r} could not be read)"


def equity_of(portfolio: Any) -> dict[str, Any]:
    ts, eq, _ = portfolio.equity_curve()
    _, marks = portfolio.mark_curve()
    return {
        "ts": ts.tolist(),
        "equity": eq.tolist(),
        "marks": {str(iid): m.tolist() for iid, m in marks.items()},
    }


def fill_columns(fills: Any) -> dict[str, list[Any]]:
    """Fill messages (OrderPartiallyFilled and OrderFilled) as columns, in arrival order."""
    cols: dict[str, list[Any]] = {k: [] for k in ("ts", "instrument_id", "side", "px", "qty")}
    cols["strategy"] = []
    for f in fills:
        cols["ts"].append(int(f.ts_event))
        cols["instrument_id"].append(int(f.instrument_id))
        cols["side"].append(int(f.side))
        cols["px"].append(int(f.fill_px))
        cols["qty"].append(int(f.fill_qty))
        cols["strategy"].append(int(f.client_order_id) >> 32)
    return cols


def risk_rows(events: Any) -> list[dict[str, Any]]:
    return [
        {
            "ts": int(e.ts),
            "kind": _kind_name(int(e.kind)),
            "instrument_id": int(e.instrument_id),
            "reason": str(e.reason),
        }
        for e in sorted(events, key=lambda e: e.ts)
    ]


def _kind_name(kind: int) -> str:
    try:
        return RiskEventKind(kind).name
    except ValueError:
        return str(kind)


def log_histogram(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Latencies (ns) binned four bins an octave; percentiles from the values themselves."""
    values = np.asarray(values, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    # the bin of each value straight from its logarithm (no sort: a million values in ms)
    k = np.floor(np.log2(np.clip(values, _EDGES_NS[0], _EDGES_NS[-1])) * 4.0) - 6 * 4
    k = np.clip(k, 0, _EDGES_NS.size - 2).astype(np.int64)
    counts = np.bincount(k, weights=w, minlength=_EDGES_NS.size - 1)
    nz = np.nonzero(counts)[0]
    lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
    total = float(counts.sum())
    out = {
        "edges_ns": _EDGES_NS[lo : hi + 1].tolist() if nz.size else [],
        "counts": counts[lo:hi].astype(np.int64).tolist(),
        "count": int(total),
    }
    if not total:
        out["p50"] = out["p99"] = None
    elif w is None:
        out["p50"], out["p99"] = (float(v) for v in np.percentile(values, [50, 99]))
    else:
        out["p50"], out["p99"] = (_weighted_percentile(values, w, p) for p in (50, 99))
    return out


def _weighted_percentile(values: np.ndarray, w: np.ndarray | None, p: float) -> float:
    if w is None:
        return float(np.percentile(values, p))
    order = np.argsort(values)
    cum = np.cumsum(w[order])
    rank = max(1.0, np.ceil(cum[-1] * p / 100.0))
    return float(values[order][int(np.searchsorted(cum, rank))])


def _snapshot_histogram(snap: Any) -> dict[str, Any]:
    """A shm latency histogram (shm/metrics.py: 4,480 log-linear buckets) in the report's bins;
    its p50/p99 are the histogram's own (the run summary's figures)."""
    from shm.metrics import H_BUCKETS, NBUCKETS, bucket_value

    counts = snap.words[H_BUCKETS : H_BUCKETS + NBUCKETS].astype(np.float64)
    nz = np.nonzero(counts)[0]
    vals = np.array([bucket_value(int(i)) for i in nz], dtype=np.float64)
    out = log_histogram(vals, counts[nz])
    s = snap.summary()
    out["p50"], out["p99"] = _finite(s.get("p50")), _finite(s.get("p99"))
    return out


def _finite(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


# --- the three sources --------------------------------------------------------------------------
def from_backtest(rt: Any, summary: dict[str, Any], cfg: Any) -> ReportData:
    """A finished ``engine.backtest.InlineRuntime`` and the summary ``gekko backtest`` printed."""
    lat = {"tick_to_order_ns (simulated)": log_histogram(np.asarray(rt.latencies_ns))}
    lat["wall_ns_per_tick"] = log_histogram(np.asarray(rt.wall_ns_per_tick))
    pnl = summary.get("pnl") or {}
    figures = {
        "ticks": summary.get("ticks"),
        "intents": summary.get("intents"),
        "orders_new": summary.get("new_orders"),
        "orders_cancel": summary.get("cancels"),
        "orders_replace": summary.get("replaces"),
        "fills": summary.get("fills"),
        "risk_rejects": summary.get("risk_rejects"),
        "venue_rejects": summary.get("venue_rejects"),
        "risk_events": summary.get("risk_events"),
        "realized": pnl.get("realized"),
        "unrealized": pnl.get("unrealized"),
        "fees": pnl.get("fees"),
        **{k: _component(summary, k) for k in ("funding", "financing", "commission")},
        "md_rejected": summary.get("md_rejected"),
        "analytics": summary.get("analytics") or {},
        "pnl_by_strategy": summary.get("pnl_by_strategy") or {},
    }
    return ReportData(
        kind="backtest",
        engine_id=cfg.engine.id,
        run_id=None,
        source="backtest",
        instruments=instruments_of(cfg),
        strategies=strategy_names(cfg),
        summary=_plain(figures),
        equity=equity_of(rt.portfolio),
        fills=fill_columns(rt.fill_log),
        risk_events=risk_rows(rt.risk_events),
        latency=lat,
        config_text=config_text(cfg),
    )


def _component(summary: dict[str, Any], key: str) -> float | None:
    """A backtest's P&L component besides realized / unrealized / fees (funding, financing,
    commission): its ``pnl`` figure, else the portfolio summary's (None: the run had none)."""
    for where in (summary.get("pnl") or {}, summary.get("portfolio") or {}):
        v = where.get(key)
        if isinstance(v, int | float):
            return float(v)
    return None


def from_run(record: Any, summary: dict[str, Any], metrics: dict[str, Any], cfg: Any, run_id: int):
    """A finished run: the supervisor's ``ops.report.RunRecord``, its summary and the workers'
    metrics regions (still mapped: the report is written before they are removed)."""
    lat: dict[str, dict[str, Any]] = {}
    for worker, hist in (
        ("strategy", "tick_to_intent_ns"),
        ("risk", "tick_to_approval_ns"),
        ("exec", "tick_to_order_ns"),
    ):
        if worker in metrics:
            lat[hist] = _snapshot_histogram(metrics[worker].snapshots()[hist])
    return ReportData(
        kind="run",
        engine_id=cfg.engine.id,
        run_id=run_id,
        source="run",
        instruments=instruments_of(cfg),
        strategies=strategy_names(cfg),
        summary=_plain({k: summary.get(k) for k in SUMMARY_KEYS}),
        equity=equity_of(record.portfolio),
        fills=fill_columns(record.fills),
        risk_events=risk_rows(record.risk_events),
        latency=lat,
        config_text=config_text(cfg),
    )


def _plain(obj: Any) -> Any:
    """JSON types only (dict keys become strings, as they come back from PostgreSQL)."""
    return json.loads(json.dumps(obj, default=str))


# --- PostgreSQL ----------------------------------------------------------------------------------
def store(conn: Any, data: ReportData) -> None:
    """The run's ``run_reports`` row (migration 0007); fills and risk events are already stored."""
    from psycopg.types.json import Jsonb

    conn.execute(
        "INSERT INTO run_reports (run_id, engine_id, summary, equity, latency, strategies,"
        " config_text) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
        (
            data.run_id,
            data.engine_id,
            Jsonb(data.summary),
            Jsonb(data.equity),
            Jsonb(data.latency),
            Jsonb({str(k): v for k, v in data.strategies.items()}),
            data.config_text,
        ),
    )


class RunNotRecorded(LookupError):
    """No report data for that run id in the database (said with what is there)."""


def load_from_pg(conn: Any, run_id: int) -> ReportData:
    """A recorded run's report data: ``run_reports`` plus its fills, risk events and the
    instruments it traded (``run_instruments``: ids may mean other symbols in other runs)."""
    row = conn.execute(
        "SELECT engine_id, summary, equity, latency, strategies, config_text"
        " FROM run_reports WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        recent = [
            str(r[0])
            for r in conn.execute("SELECT run_id FROM run_reports ORDER BY run_id DESC LIMIT 5")
        ]
        known = f"; the latest recorded: {', '.join(recent)}" if recent else "; none is recorded"
        raise RunNotRecorded(f"run {run_id} has no report in the database{known}")
    engine_id, summary, equity, latency, strategies, cfg_text = row
    instruments = {
        int(iid): {"symbol": sym, "tick_size": float(tick)}
        for iid, sym, tick in conn.execute(
            "SELECT instrument_id, symbol, tick_size FROM run_instruments WHERE run_id = %s",
            (run_id,),
        )
    }
    fills: dict[str, list[Any]] = {
        k: [] for k in ("ts", "instrument_id", "side", "px", "qty", "strategy")
    }
    for ts, iid, side, px, qty, coid in conn.execute(
        "SELECT ts_event, instrument_id, side, px, qty, client_order_id FROM fills"
        " WHERE run_id = %s ORDER BY ts_recv, fill_id",
        (run_id,),
    ):
        for k, v in zip(fills, (ts, iid, side, px, qty, int(coid) >> 32), strict=True):
            fills[k].append(int(v))
    extra = {"account_events": tally_from_pg(conn, run_id)}  # migration 0010
    risk = [
        {"ts": int(ts), "kind": _kind_name(int(kind)), "instrument_id": int(iid), "reason": why}
        for ts, kind, iid, why in conn.execute(
            "SELECT ts, kind, instrument_id, reason FROM risk_events WHERE run_id = %s ORDER BY ts",
            (run_id,),
        )
    ]
    return ReportData(
        kind="run",
        engine_id=engine_id,
        run_id=run_id,
        source="postgres",
        instruments=instruments,
        strategies={int(k): v for k, v in strategies.items()},
        summary=summary,
        equity=equity,
        fills=fills,
        risk_events=risk,
        latency=latency,
        config_text=cfg_text,
        extra=extra,
    )
