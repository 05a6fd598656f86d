"""Betfair sessions: the API client pointed where the settings say, and the stream socket.

betfairlightweight knows only Betfair's own hosts. ``BetfairApi`` re-points its identity and
API endpoints at ``rest_url`` (a test's local server; "" keeps the library's own), and
``StreamSocket`` connects its stream to ``stream_url`` ("tls://host:port"; "" = the library's
host on 443) with the certificate verified (against ``stream_ca_file`` when given: the library
itself does not verify). No Betfair host is written here.

Credentials (``engine.venues.ccxt_session.Credentials``; docs/betfair.md): ``api_key`` is the
app key (X-Application); with ``api_password`` set, ``api_secret`` is the username and an
interactive login makes the session token; without it, ``api_secret`` is a session token
already issued (kept alive with keepAlive). ``StreamWorker`` runs one subscription on its own
thread: connect, authenticate, subscribe (again with the last ``initialClk`` / ``clk`` after a
reconnect), read; a socket that says nothing for ``stale_after_s`` (no heartbeat either) is
dropped and reconnected with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from betfairlightweight import APIClient
from betfairlightweight.streaming import BaseListener, BetfairStream

__all__ = ["BetfairApi", "StreamSocket", "StreamWorker", "api_error_code"]

log = logging.getLogger(__name__)


def api_error_code(exc: BaseException) -> str:
    """The APINGException ``errorCode`` of a failed call ("" when the call never answered)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        data = (resp.get("error") or {}).get("data") or {}
        code = (data.get("APINGException") or {}).get("errorCode")
        if code:
            return str(code)
        if resp.get("error"):
            return str(resp["error"])
    return ""


class BetfairApi(APIClient):
    """betfairlightweight's client on ``settings``' endpoints, returning plain dicts."""

    def __init__(self, credentials: Any, settings: Mapping[str, Any]) -> None:
        if credentials is None or not credentials.api_key or not credentials.secret:
            raise ValueError(
                "betfair needs an app key (api_key) and a session or user (api_secret)"
            )
        self.interactive = bool(credentials.password)
        user = credentials.secret if self.interactive else "session"
        super().__init__(
            user,
            password=credentials.password or "-",
            app_key=credentials.api_key,
            lightweight=True,
            session=requests.Session(),
        )
        if not self.interactive:
            self.set_session_token(credentials.secret)
        base = str(settings.get("rest_url") or "").rstrip("/")
        if base:
            self.identity_uri = f"{base}/api/"
            self.api_uri = f"{base}/exchange/"
        timeout = float(settings.get("timeout_ms", 10_000)) / 1000
        for ep in (self.betting, self.account, self.login_interactive, self.keep_alive):
            ep.read_timeout = timeout

    def ensure_session(self) -> str:
        """A live session token: logged in (interactive), or the given one kept alive."""
        if self.interactive and (self.session_token is None or self.session_expired):
            self.login_interactive()
        elif self.session_expired:
            self.keep_alive()
        return str(self.session_token)


class StreamSocket(BetfairStream):
    """The library's stream on our address with the server's certificate checked."""

    def __init__(
        self,
        listener: BaseListener,
        app_key: str,
        session_token: str,
        stream_url: str,
        ca_file: str,
        timeout_s: float,
    ) -> None:
        super().__init__(0, listener, app_key, session_token, timeout_s, 65536, None)
        hostport = stream_url.partition("://")[2] or stream_url
        host, _, port = hostport.rpartition(":")
        self._address = (host, int(port)) if stream_url else (self.host, 443)
        self._ca_file = ca_file

    def _create_socket(self) -> socket.socket:
        ctx = ssl.create_default_context(cafile=self._ca_file or None)
        raw = socket.create_connection(self._address, timeout=self.timeout)
        s = ctx.wrap_socket(raw, server_hostname=self._address[0])
        s.settimeout(self.timeout)
        return s


class _Listener(BaseListener):
    """Hands every message to ``on_message``; keeps the clocks a resubscription needs."""

    def __init__(self, op: str, on_message: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.op, self.on_message = op, on_message
        self.first_clk: str | None = None
        self.last_clk: str | None = None
        self.error = ""

    def register_stream(self, unique_id: int, operation: str) -> None:
        self.stream_unique_id, self.stream_type = unique_id, operation

    def update_unique_id(self, unique_id: int) -> None:
        self.stream_unique_id = unique_id

    def on_data(self, raw_data: str) -> bool | None:
        msg = json.loads(raw_data)
        op = msg.get("op")
        if op == "connection":
            self.connection_id = msg.get("connectionId")
        elif op == "status" and msg.get("statusCode") == "FAILURE":
            self.error = f"{msg.get('errorCode')}: {msg.get('errorMessage')}"
            if msg.get("connectionClosed"):
                return False
        elif op == self.op:
            if msg.get("initialClk"):
                self.first_clk = msg["initialClk"]
            if msg.get("clk"):
                self.last_clk = msg["clk"]
        self.on_message(msg)
        return None


class StreamWorker:
    """One stream subscription on its own thread (see the module docstring)."""

    def __init__(
        self,
        name: str,
        op: str,
        api: BetfairApi,
        settings: Mapping[str, Any],
        subscribe: Callable[[StreamSocket, str | None, str | None], None],
        on_message: Callable[[dict[str, Any]], None],
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.name, self.op, self.api = name, op, api
        self._subscribe, self._on_state = subscribe, on_state or (lambda s: None)
        self.listener = _Listener(op, on_message)
        self._url = str(settings.get("stream_url") or "")
        self._ca = str(settings.get("stream_ca_file") or "")
        self._stale_s = float(settings.get("stale_after_s", 10.0))
        self._min_s = float(settings.get("reconnect_min_s", 0.5))
        self._max_s = float(settings.get("reconnect_max_s", 30.0))
        self._stop = threading.Event()
        self._stream: StreamSocket | None = None
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.reconnects = 0
        self.connected = threading.Event()
        self.last_error = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"betfair-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        s = self._stream
        if s is not None:
            with contextlib.suppress(Exception):  # the reader may be closing it right now
                s.stop()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        wait = self._min_s
        while not self._stop.is_set():
            try:
                token = self.api.ensure_session()
                s = StreamSocket(
                    self.listener, self.api.app_key, token, self._url, self._ca, self._stale_s
                )
                self._stream = s
                s._connect()
                s.authenticate()
                if self.listener.error:
                    raise ConnectionError(self.listener.error)
                lst = self.listener
                self._subscribe(s, lst.first_clk, lst.last_clk)
                self.connects += 1
                self.reconnects += self.connects > 1
                self.connected.set()
                self._on_state("connected")
                wait = self._min_s
                s._read_loop()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a wait
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("betfair %s stream: %s", self.name, self.last_error)
            finally:
                self.connected.clear()
                if self._stream is not None:
                    with contextlib.suppress(Exception):
                        self._stream.stop()
            if self._stop.is_set():
                break
            self._on_state("down")
            if "SESSION" in self.listener.error and self.api.interactive:
                self.api.session_token = None  # expired: the next connect logs in again
            self.listener.error = ""
            self._stop.wait(wait * (1 + random.random() * 0.2))
            wait = min(wait * 2, self._max_s)
        self._on_state("down")


def now_ns() -> int:
    return time.time_ns()
