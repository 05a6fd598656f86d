"""A sweep's results in PostgreSQL (tables ``sweeps`` and ``sweep_trials``, migration 0009), and
the plain summary (JSON) the report, the database row and ``--json`` share.

Written once, after the sweep, in one transaction (a sweep is either recorded whole or not at
all); through ``ops.store.audit.open_database``, which migrates first. Storage off or a
database that does not answer costs one line on stderr, never the sweep's results: the
terminal table and the HTML report are written regardless.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from ops.sweep_search import SweepOutcome, WindowStats, objective_of
from ops.sweep_trial import TrialResult

_TRIAL_COLS = (
    "sweep_id, trial, window_no, role, fold, params, status, error, objective, net_pnl, sharpe,"
    " sharpe_annual, max_drawdown, turnover, fills, metrics, wall_s"
)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def trial_brief(r: TrialResult, objective: str) -> dict[str, Any]:
    m = r.metrics
    return {
        "trial": r.trial,
        "window": r.window,
        "role": r.role,
        "fold": r.fold,
        "params": r.params,
        "status": r.status,
        "error": r.error,
        "objective": objective_of(r, objective),
        **{k: _num(m.get(k)) for k in ("net_pnl", "sharpe", "max_drawdown", "turnover")},
        "fills": m.get("fills"),
    }


def _window(s: WindowStats, objective: str) -> dict[str, Any]:
    return {
        "window": s.window,
        "trials": s.searched,
        "ok": s.ok,
        "best": trial_brief(s.best, objective) if s.best else None,
        "deflated_sharpe": _num(s.dsr.dsr) if s.dsr else None,
        "expected_max_sharpe": _num(s.dsr.sr0) if s.dsr else None,
        "pbo": _num(s.pbo.pbo) if s.pbo else None,
        "pbo_splits": s.pbo.splits if s.pbo else 0,
        "note": s.note,
    }


def summary_of(out: SweepOutcome) -> dict[str, Any]:
    """Windows, per-window figures and folds as plain JSON types."""
    obj = out.objective
    return {
        "method": out.method,
        "objective": obj,
        "parallelism": out.parallelism,
        "wall_s": out.wall_s,
        "trials": len(out.trials),
        "not_ok": {
            st: sum(t.status == st for t in out.trials) for st in ("invalid", "failed", "timeout")
        },
        "windows": [
            {
                "window": w.index,
                "label": w.label,
                "seed": w.seed,
                "start_ns": w.start_ns,
                "end_ns": w.end_ns,
                "events": w.events,
            }
            for w in out.windows
        ],  # fmt: skip
        "per_window": [_window(s, obj) for s in out.stats],
        "folds": [
            {
                "fold": f.fold,
                "params": f.is_trial.params,
                "in_sample": trial_brief(f.is_trial, obj),
                "out_of_sample": trial_brief(f.oos_trial, obj) if f.oos_trial else None,
            }
            for f in out.folds
        ],
    }


def _trial_row(sweep_id: int, r: TrialResult, objective: str) -> tuple:
    m = r.metrics
    return (
        sweep_id, r.trial, r.window, r.role, r.fold, json.dumps(r.params), r.status, r.error,
        objective_of(r, objective), _num(m.get("net_pnl")), _num(m.get("sharpe")),
        _num(m.get("sharpe_annual")), _num(m.get("max_drawdown")), _num(m.get("turnover")),
        m.get("fills"), json.dumps(m, default=str), r.wall_s,
    )  # fmt: skip


def write_sweep(
    conn: Any, engine_id: str, settings: dict, out: SweepOutcome, config_text: str
) -> int:
    """Insert the sweep and its trials (one transaction); returns the new ``sweep_id``."""
    summary = summary_of(out)
    with conn.transaction():
        sweep_id = conn.execute(
            "INSERT INTO sweeps (engine_id, method, objective, settings, summary, config_text,"
            " trials, failed, wall_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING sweep_id",
            (
                engine_id,
                out.method,
                out.objective,
                json.dumps(settings, default=str),
                json.dumps(summary),
                config_text,
                len(out.trials),
                sum(not t.ok for t in out.trials),
                out.wall_s,
            ),  # fmt: skip
        ).fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO sweep_trials ({_TRIAL_COLS}) VALUES ({', '.join(['%s'] * 17)})",
                [_trial_row(sweep_id, r, out.objective) for r in out.trials],
            )
    return int(sweep_id)


def record_sweep(cfg: Any, settings: dict, out: SweepOutcome, config_text: str) -> int | None:
    """``write_sweep`` on the configured database (migrated first); None, and one line on
    stderr, when storage is off or the database fails."""
    from ops.store.audit import open_database
    from ops.store.pg import PgSettings

    if not PgSettings.from_config(cfg).enabled:
        print("gekko: [storage.postgres] mode is 'off': sweep not recorded", file=sys.stderr)
        return None
    try:
        with open_database(cfg) as conn:
            return write_sweep(conn, cfg.engine.id, settings, out, config_text)
    except Exception as exc:
        from ops.secrets import redact

        first = redact((str(exc).strip().splitlines() or [""])[0])
        print(
            f"gekko: warning: sweep not recorded in PostgreSQL ({type(exc).__name__}: {first})",
            file=sys.stderr,
        )
        return None
