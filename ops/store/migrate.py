"""Versioned migrations: plain SQL files ``migrations/NNNN_name.sql`` applied in order.

Each file runs in its own transaction together with the row that records it in
``schema_migrations``, so a migration is applied entirely or not at all. A transaction-level
advisory lock serialises concurrent ``migrate`` calls (the supervisor at start, ``gekko db
migrate`` by hand). A recorded migration whose file changed since is reported, never re-run:
history is append-only, a change is a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([\w-]+)\.sql$")
_LOCK_KEY = 0x6765_6B6B_6F00  # "gekko": pg_advisory_xact_lock key for migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` in ``directory``, by version; a gap or a duplicate is an error."""
    out: list[Migration] = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise ValueError(f"migration file {p.name!r} is not named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text()))
    out.sort(key=lambda m: m.version)
    for k, m in enumerate(out, start=1):
        if m.version != k:
            raise ValueError(
                f"migrations must be numbered 0001, 0002, ... without gaps: found {m.version:04d} at {k}"
            )
    return out


_CREATE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def applied(conn: Any) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of the migrations recorded in this database."""
    conn.execute(_CREATE)
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {int(v): (n, c) for v, n, c in rows}


def migrate(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not yet recorded, in order; returns those applied now."""
    todo = load_migrations(directory)
    done: list[Migration] = []
    for m in todo:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            have = applied(conn)
            if m.version in have:
                continue
            conn.execute(m.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            done.append(m)
    return done


def status(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[dict[str, Any]]:
    """One row per known migration: applied or pending, and whether its file changed since."""
    with conn.transaction():
        have = applied(conn)
    rows = []
    for m in load_migrations(directory):
        rec = have.get(m.version)
        rows.append(
            {
                "version": m.version,
                "name": m.name,
                "state": "pending"
                if rec is None
                else ("applied" if rec[1] == m.checksum else "changed"),
            }
        )
    return rows
