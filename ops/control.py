"""The supervisor's control socket: how ``gekko kill / resume / status`` reach a running engine.

Why a socket and not a signal to the pid in the pid file: a pid file outlives a crashed
supervisor and its pid is soon someone else's, so a signal can stop an unrelated process while
the command reports success. A unix socket under ``var/`` answers only while the supervisor
that bound it runs, the answer names the engine and run, and the kernel tells the supervisor who
is asking (``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` — what ``getpeereid`` reads — on macOS):
that OS user is the audit row's actor, not a name the client claims.

- The socket is ``<var_dir>/gekko-<id>.sock``, mode 0600; a path too long for a unix socket
  (~104 bytes) moves to ``<tmp>/gekko-<uid>/<id>-<hash of var_dir>.sock`` (a 0700 directory of
  this user, checked). With ``[security] control_socket_dir`` it is ``<dir>/gekko-<id>.sock``,
  mode 0666 in a 0755 directory of this user: other local users can connect, and ops/roles.py
  decides what each may do. Both sides compute the same path from the config.
- One JSON line each way. Who is served is the ``authorize`` callback's word (default: only
  the supervisor's own user and root); a refusal is answered ``{"ok": false, "error": ...}``.
- Requests are handled one at a time on a thread of the supervisor; the handler decides the reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import socket
import stat
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("gekko.control")

SOCKET_MAX = 100  # sun_path is 104 (macOS) / 108 (Linux) bytes with its NUL
MAX_REQUEST = 65536


class ControlUnreachable(RuntimeError):
    """Nothing listens on the control socket (no socket, or refused): the request was not sent."""


class ControlNoAnswer(ControlUnreachable):
    """The request was sent but no answer came: it may or may not have been acted on."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel says."""

    pid: int | None
    uid: int
    user: str
    gid: int | None = None


def _private_tmp_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"gekko-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlUnreachable(
            f"{d} is not a private directory of this user: not used for the control socket"
        )
    return d


def socket_path(var_dir: str | Path, engine_id: str, socket_dir: str = "") -> Path:
    """Where engine ``engine_id``'s control socket is (``socket_dir``: [security]
    control_socket_dir, shared with other users)."""
    if socket_dir:
        return Path(socket_dir) / f"gekko-{engine_id}.sock"
    var = Path(var_dir).resolve()
    p = var / f"gekko-{engine_id}.sock"
    if len(str(p)) < SOCKET_MAX:
        return p
    h = hashlib.sha256(str(var).encode()).hexdigest()[:12]
    return _private_tmp_dir() / f"{engine_id}-{h}.sock"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process's pid (where the OS says it) and user."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return Peer(pid, uid, _user(uid), gid)
    # macOS / BSD: SOL_LOCAL (0), LOCAL_PEERCRED (1) -> struct xucred; LOCAL_PEERPID (2)
    fmt = "IIh16I"
    cred = struct.unpack(fmt, conn.getsockopt(0, 1, struct.calcsize(fmt)))
    uid, gid = cred[1], (cred[3] if cred[2] else None)  # cr_groups[0]: the effective gid
    pid: int | None = None
    with contextlib.suppress(OSError):
        pid = struct.unpack("i", conn.getsockopt(0, 2, 4))[0]
    return Peer(pid, uid, _user(uid), gid)


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf and len(buf) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


Handler = Callable[[dict[str, Any], Peer], dict[str, Any]]
#: (request, peer) -> "" to serve it, else why not (the reply's error)
Authorize = Callable[[dict[str, Any], Peer], str]


def owner_only(req: dict[str, Any], peer: Peer) -> str:
    """The default: only the supervisor's own OS user and root are served."""
    if peer.uid in (os.getuid(), 0):
        return ""
    return f"user {peer.user} may not control it"


def prepare_shared_dir(d: Path) -> None:
    """A directory other users may reach the socket in: ours (or root's), 0755, nobody else may
    write to it (they could replace the socket with their own). Raises ``OSError`` saying why."""
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o755, parents=True)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.getuid(), 0):
        raise OSError(f"{d}: not a directory of this user or root: refused for the control socket")
    if st.st_mode & 0o022:
        raise OSError(f"{d}: writable by other users: refused for the control socket")
    if st.st_uid == os.getuid():
        os.chmod(d, 0o755)


class ControlServer:
    """The listening side, on a daemon thread of the supervisor. ``shared``: the socket is
    0666 (its directory prepared by ``prepare_shared_dir``), for other local users."""

    def __init__(
        self,
        path: Path,
        handle: Handler,
        *,
        authorize: Authorize = owner_only,
        shared: bool = False,
    ) -> None:
        self.path = path
        self._handle = handle
        self._authorize = authorize
        self._shared = shared
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._shared:
            prepare_shared_dir(self.path.parent)
        # a leftover socket file: the caller has proven no live engine owns this id
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(self.path))  # 0700 dir, or umask 077: nobody else reaches it before the chmod
        os.chmod(self.path, 0o666 if self._shared else 0o600)
        s.listen(8)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with conn:
                try:
                    self._one(conn)
                except Exception as exc:  # one bad client never stops the server
                    log.warning("control: request failed: %s", exc)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        peer = peer_of(conn)
        try:
            req = json.loads(_read_line(conn) or b"null")
        except ValueError:
            req = None
        if not isinstance(req, dict):
            req = {"op": None}
        why = self._authorize(req, peer)  # before the handler: a refused request reaches nothing
        if why:
            reply: dict[str, Any] = {"ok": False, "error": why}
            log.warning(
                "control: refused %r from %s (pid %s): %s", req.get("op"), peer.user, peer.pid, why
            )
        elif req.get("op") is None:
            reply = {"ok": False, "error": "not a request"}
        else:
            reply = self._handle(req, peer)
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self.path.unlink()


def request(path: Path, body: dict[str, Any], timeout_s: float = 20.0) -> dict[str, Any]:
    """Send one request, return the reply; ``ControlUnreachable`` when nobody answers."""
    if not path.exists():
        raise ControlUnreachable(f"no control socket at {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise ControlUnreachable(f"nothing listens on {path} ({exc.strerror})") from None
        try:
            s.sendall(json.dumps(body).encode() + b"\n")
            line = _read_line(s)
        except OSError as exc:  # TimeoutError included
            raise ControlNoAnswer(f"no answer on {path} within {timeout_s:g}s ({exc})") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlNoAnswer(f"no answer on {path} (the connection closed)") from None
    if not isinstance(reply, dict):
        raise ControlNoAnswer(f"a garbled answer on {path}")
    return reply


# --- the supervisor's inbox: commands from the socket thread and from signal handlers -------
@dataclass
class ControlItem:
    """One operator command on its way to the ``control`` ring."""

    command: int  # a ControlCommand
    arg: str  # the command as typed, e.g. "gekko kill --flatten"
    actor: str | None  # the OS user (socket); None: a signal (ops/operator.py names the sender)
    cli_pid: int | None = None
    via: str = "signal"
    detail: dict[str, Any] = field(default_factory=dict)  # more for its audit row
    done: threading.Event = field(default_factory=threading.Event)
    result: str = ""  # "forwarded", or why not
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _claimed: bool = False

    def claim(self) -> bool:
        """The forwarder takes it (False: it was withdrawn meanwhile)."""
        with self._lock:
            if self.done.is_set():
                return False
            self._claimed = True
            return True

    def finish(self, result: str) -> None:
        with self._lock:
            if not self.done.is_set():
                self.result = result
                self.done.set()

    def withdraw(self, why: str) -> None:
        """Give up on it unless the forwarder has it already (then its result stands)."""
        with self._lock:
            if self._claimed or self.done.is_set():
                return
            self.result = why
            self.done.set()


class ControlInbox:
    """A deque: ``put`` is safe from a signal handler (no lock), ``submit`` waits for the
    forwarder (the supervisor's main thread) to publish the command or for ``timeout_s``."""

    def __init__(self) -> None:
        self._q: deque[ControlItem] = deque()

    def put(self, item: ControlItem) -> None:
        self._q.append(item)

    def submit(self, item: ControlItem, timeout_s: float) -> str:
        self._q.append(item)
        if not item.done.wait(timeout_s):
            item.withdraw(f"not forwarded within {timeout_s:g}s; withdrawn")
            item.done.wait(5.0)  # claimed meanwhile: the forwarder finishes it at once
        return item.result

    def take(self) -> ControlItem | None:
        try:
            return self._q.popleft()
        except IndexError:
            return None
