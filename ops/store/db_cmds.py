"""``gekko db migrate`` / ``gekko db status``: the system of record's schema by hand.

``gekko run`` migrates automatically at start; these are for operators (a DSN database before
the first run, a check after an upgrade). With ``mode = "embedded"`` the embedded server is
started for the command and stopped after it, unless an engine already runs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ops.cli_common import load_config_or_exit, with_db


def cmd_migrate(args: argparse.Namespace) -> int:
    from ops.store.migrate import migrate

    cfg = load_config_or_exit(args.config)

    def go(conn: Any) -> int:
        done = migrate(conn)
        if done:
            from ops.store.audit import os_user, record_migrations

            for m in done:
                print(f"applied {m.version:04d}_{m.name}")
            try:  # who migrated, in the database just migrated
                record_migrations(conn, done, os_user(), "gekko db migrate", cfg=cfg)
            except Exception as exc:
                print(f"gekko: warning: migrations not audited ({exc})", file=sys.stderr)
        else:
            print("up to date")
        return 0

    return with_db(cfg, go)


def cmd_status(args: argparse.Namespace) -> int:
    from ops.store.migrate import status

    def go(conn: Any) -> int:
        rows = status(conn)
        for r in rows:
            print(f"{r['version']:04d}_{r['name']:<30} {r['state']}")
        counts = {}
        if all(r["state"] != "pending" for r in rows):
            tables = ("runs", "orders", "order_events", "fills", "quotes", "trades", "risk_events")
            for t in (*tables, "account_events", "models", "audit_log"):
                counts[t] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            print("rows: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        return 0 if all(r["state"] == "applied" for r in rows) else 1

    return with_db(load_config_or_exit(args.config), go)


def cmd_verify(args: argparse.Namespace) -> int:
    """``gekko db audit --verify``: every engine's hash chain and anchors (ops/store/audit_verify.py).
    Exit 0: intact; 1: a break (the first named first) or no database."""
    from ops.store.audit_anchor import anchor_paths, read_anchors
    from ops.store.audit_verify import format_report, verify

    cfg = load_config_or_exit(args.config)
    anchors, problems = read_anchors(anchor_paths(cfg, args.anchors))

    def go(conn: Any) -> int:
        from ops.store.migrate import applied

        with conn.transaction():
            chained = 8 in applied(conn)
        if not chained:
            print(
                "gekko: this database has no audit chain yet (migration 0008):"
                " run `gekko db migrate` first",
                file=sys.stderr,
            )
            return 1
        rep = verify(conn, anchors)
        rep.problems += problems
        for line in format_report(rep):
            print(line)
        return 0 if rep.intact else 1

    return with_db(cfg, go)


def cmd_audit(args: argparse.Namespace) -> int:
    """``gekko db audit [--last N] [--action X]``: the audit log, newest last."""
    from ops.store.audit import format_row, query

    if args.verify:
        return cmd_verify(args)
    if args.last < 0:
        print("gekko: --last must be >= 0", file=sys.stderr)
        return 2

    def go(conn: Any) -> int:
        rows = query(conn, args.last, args.action)
        if args.json:
            import json

            for r in rows:
                rid, ts, actor, action, detail, run_id = r
                print(
                    json.dumps(
                        {
                            "id": rid,
                            "ts": ts.isoformat(),
                            "actor": actor,
                            "action": action,
                            "run_id": run_id,
                            "detail": detail,
                        }
                    )
                )
            return 0
        if not rows:
            print("no audit records" + (f" for action {args.action!r}" if args.action else ""))
        for r in rows:
            print(format_row(r))
        return 0

    return with_db(load_config_or_exit(args.config), go)


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    db = sub.add_parser("db", help="the PostgreSQL system of record: migrate, status, audit")
    dsub = db.add_subparsers(dest="db_command", required=True)
    m = with_config(dsub.add_parser("migrate", help="apply pending schema migrations"))
    m.set_defaults(func=cmd_migrate)
    s = with_config(dsub.add_parser("status", help="applied / pending migrations and row counts"))
    s.set_defaults(func=cmd_status)
    a = with_config(
        dsub.add_parser("audit", help="the audit log: who did what, when (newest last)")
    )
    a.add_argument("--last", type=int, default=50, help="how many records (default 50)")
    a.add_argument(
        "--action", default="", help="only this action, or a prefix: run, operator, model, ..."
    )
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument(
        "--verify",
        action="store_true",
        help="prove every engine's hash chain intact and its anchors matched, or name the first"
        " altered, inserted or deleted record (exit 1)",
    )
    a.add_argument(
        "--anchors",
        action="append",
        default=[],
        metavar="FILE",
        help="with --verify: also check the anchors in FILE (a copy of [audit] anchor_file or of"
        " an <engine>.anchors journal); repeatable",
    )
    a.set_defaults(func=cmd_audit)
