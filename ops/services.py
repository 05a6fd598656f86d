"""The services a run stands on: a private ``var/``, the embedded PostgreSQL and Redis, and the
guardian that stops those two if the supervisor dies without doing so.

Kept apart from ``ops/supervisor.py`` (which starts and watches workers) because their lifetime is
the run's, not a worker's: started before the workers that need them, stopped after every worker
and region is gone.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from ops.config import Config

log = logging.getLogger("gekko.supervisor")


class Background:
    """Run ``fn`` in a thread; ``join`` re-raises what it raised."""

    def __init__(self, fn: Any) -> None:
        import threading

        self._exc: BaseException | None = None
        self._t = threading.Thread(target=self._run, args=(fn,), name="pg-start", daemon=True)
        self._t.start()

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to join()
            self._exc = exc

    def join(self, meanwhile: Any = None) -> None:
        """Wait for it; ``meanwhile()`` runs every 20 ms until then."""
        while self._t.is_alive():
            if meanwhile is not None:
                meanwhile()
            self._t.join(0.02)
        if self._exc is not None:
            raise self._exc


class EmbeddedServices:
    """Start and stop the run's services; ``pg_dsn`` is what the workers are given."""

    def __init__(self, cfg: Config, run_id: int) -> None:
        self.cfg = cfg
        self.var = Path(cfg.engine.var_dir)
        self.run_id = run_id
        self.redis_server: Any = None  # the embedded Redis this run started (ops.store.redis_store)
        self.pg_server: Any = None  # the embedded PostgreSQL this run started (ops.store.pg)
        self.pg_dsn = ""
        self.guardian: Any = None  # ops/guardian.py: stops the embedded servers if we are killed
        self.tls_refused: list[tuple[str, str]] = []  # (service, why): audited by the supervisor

    def warn_plaintext(self) -> None:
        """A warning at every start for each remote address ``allow_plaintext`` leaves unverified."""
        from ops.tls import plaintext_allowed

        st = self.cfg.storage
        for line in plaintext_allowed(
            st.postgres.mode, st.postgres.tls, st.redis.mode, st.redis.tls
        ):
            log.warning("%s (docs/security.md, TLS)", line)

    def secure_var(self) -> None:
        """``var/`` private (ops/fsperm.py); a var/ an older version left readable is narrowed."""
        from ops.fsperm import tighten
        from ops.store.pg import PgSettings

        self.var.mkdir(parents=True, exist_ok=True)
        pg_dir = Path(PgSettings.from_config(self.cfg).data_dir)
        n = tighten(self.var, skip=[pg_dir])
        if n:
            log.warning(
                "%s: %d files and directories were readable by other users; now private",
                self.var,
                n,
            )

    def start_guardian(self) -> None:
        """The process that stops our embedded PostgreSQL / Redis if we die without doing so."""
        from ops.guardian import Guardian
        from ops.store.pg import PgSettings
        from ops.store.redis_store import embedded_dbfile, needs_redis

        pg = PgSettings.from_config(self.cfg)
        pg_dir = str(Path(pg.data_dir).resolve()) if pg.mode == "embedded" else ""
        embedded_redis = needs_redis(self.cfg) and self.cfg.storage.redis.mode == "embedded"
        rd = str(embedded_dbfile(self.cfg)) if embedded_redis else ""
        if pg_dir or rd:
            self.guardian = Guardian(pg_dir, rd, self.cfg.engine.log_format, self.cfg.engine.id)

    def start_redis(self) -> None:
        """Start the embedded Redis before the workers that use it (none use it: none started)."""
        from ops.store.redis_store import RedisUnavailable, needs_redis, start_embedded

        if needs_redis(self.cfg) and self.cfg.storage.redis.mode == "embedded":
            try:
                self.redis_server = start_embedded(self.cfg)
            except RedisUnavailable as exc:  # trading goes on; the bridge logs and retries
                log.error("%s; the engine runs without Redis", exc)

    def start_postgres(self) -> None:
        """Start the embedded PostgreSQL (or check the DSN's), apply migrations, before any worker.

        A database given by DSN that does not answer is not fatal: the recorder journals until it
        does. An embedded one that cannot start is (its data directory is ours to fix).
        """
        from engine.venues.sim import prune_records
        from ops.store.migrate import migrate
        from ops.store.pg import EmbeddedPostgres, PgSettings, connect
        from procs.build import venue_record_path

        # each run is a fresh simulated exchange session: earlier runs' venue records go
        prune_records(self.var / "venue", keep=venue_record_path(self.cfg, self.run_id))
        settings = PgSettings.from_config(self.cfg)
        if not settings.enabled:
            return
        if settings.mode == "embedded":
            self.pg_server = EmbeddedPostgres(settings.data_dir)
            self.pg_dsn = self.pg_server.start()
            log.info("embedded PostgreSQL running under %s", settings.data_dir)
        else:
            self.pg_dsn = settings.mode
        try:
            with connect(self.pg_dsn, settings) as conn:
                conn.autocommit = True
                done = migrate(conn)
                if done:
                    from ops.store.audit import record_migrations

                    try:  # the database is up right here: the row is written directly
                        record_migrations(
                            conn,
                            done,
                            "supervisor",
                            f"gekko run (run {self.run_id})",
                            cfg=self.cfg,
                        )
                    except Exception as exc:
                        log.error("audit: migrations applied but not recorded (%s)", exc)
            if done:
                log.info(
                    "database migrated: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in done)
                )
        except Exception as exc:
            if self.pg_server is not None:
                raise
            from ops.secrets import redact
            from ops.tls import is_tls_failure

            if is_tls_failure(str(exc)):  # refused, never downgraded: the recorder journals
                self.tls_refused.append(("postgres", redact(str(exc))))
            log.error(
                "PostgreSQL at the configured DSN is unreachable (%s): the recorder journals until it is back",
                exc,
            )

    def _stop_postgres(self) -> None:
        if self.pg_server is not None:
            with contextlib.suppress(Exception):
                self.pg_server.stop()
            self.pg_server = None

    def _stop_redis(self) -> None:
        if self.redis_server is not None:
            with contextlib.suppress(Exception):
                self.redis_server.stop()
            self.redis_server = None

    def stop(self) -> None:
        """Stop Redis, then PostgreSQL; the guardian has nothing left to do."""
        self._stop_redis()
        self._stop_postgres()
        if self.guardian is not None:
            self.guardian.done()
