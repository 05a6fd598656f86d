"""The run's last audit record, ``run.stop``, written after every worker is gone.

Why apart from the supervisor's other audit records: those travel through the control ring to
the recorder while the engine runs; this one comes when the recorder has stopped, so it goes to
PostgreSQL directly, or into this run's journal for the next run's recorder to replay — with
any record the control ring never took.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.messages import AuditEvent

log = logging.getLogger("gekko.supervisor")


def _rounded(x: Any) -> Any:
    """Money figures for the audit row: to 1e-6, not 240.69749499999995."""
    return round(x, 6) if isinstance(x, float) else x


def record_run_stop(
    cfg: Any,
    pg_dsn: str,
    run_id: int,
    reason: str,
    exit_code: int,
    summary: dict[str, Any],
    outbox: Any,
) -> None:
    """``run.stop`` with the run's key figures; never raises (a record, not trading state)."""
    from ops.store.audit import audit_event, os_user, record_or_journal
    from ops.store.pg import PgSettings
    from ops.store.sink import journal_path

    settings = PgSettings.from_config(cfg)
    if not settings.enabled:
        return
    s = summary
    ev = audit_event(
        os_user(),
        "run.stop",
        engine_id=cfg.engine.id,
        run_id=run_id,
        reason=reason,
        exit_code=exit_code,
        elapsed_s=s.get("elapsed_s"),
        orders_new=s.get("orders_new"),
        fills=s.get("fills"),
        risk_rejects=s.get("risk_rejects"),
        realized=_rounded(s.get("realized")),
        unrealized=_rounded(s.get("unrealized")),
        fees=_rounded(s.get("fees")),
        consistent=s.get("consistent"),
        restarts=len(s.get("restarts") or []),
    )
    # audit records the control ring never took (a reader held it back to the end)
    unsent = [m for m in (outbox.take_all() if outbox else []) if isinstance(m, AuditEvent)]
    if unsent:
        log.warning("audit: %d records the control ring never took, recorded now", len(unsent))
    try:
        record_or_journal(
            pg_dsn, settings, journal_path(cfg, run_id), run_id, [*unsent, ev], cfg=cfg
        )
    except Exception as exc:
        log.error("audit: run.stop not recorded (%s)", exc)
