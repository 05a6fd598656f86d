"""What the ``gekko`` subcommand modules share: loading the config, opening the database.

Why a module of its own: ``ops.cli`` builds its parser from ``ops.model_cmds`` and
``ops.store.db_cmds``, which used to reach back into ``ops.cli`` for these helpers (an import
cycle that only function-level imports kept from failing). All three import from here instead;
nothing imports ``ops.cli`` but the console script.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ops.config import Config, ConfigError, load_config


def load_config_or_exit(path: str, venue: str = "") -> Config:
    """The config at ``path`` (``venue``: as ``ops.config.load_config`` takes it); a bad one
    ends the command with exit code 2."""
    try:
        return load_config(path, venue=venue)
    except ConfigError as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def with_db(cfg: Any, fn: Callable[[Any], int]) -> int:
    """``fn(connection)`` on the configured PostgreSQL; 1 (and a message) if there is none or it
    fails."""
    from ops.store.pg import PgSettings, configured_connection  # psycopg: only when needed

    s = PgSettings.from_config(cfg)
    if not s.enabled:
        print("gekko: [storage.postgres] mode is 'off': no database", file=sys.stderr)
        return 1
    try:
        with configured_connection(s) as conn:
            return fn(conn)
    except Exception as exc:
        # some failures carry no message (a server going down under us): name the type then
        why = str(exc).strip() or f"{type(exc).__name__} (the database went away or refused us)"
        from ops.secrets import redact  # a connection error may quote the DSN

        print(f"gekko: database error: {redact(why)}", file=sys.stderr)
        return 1
