"""The keystore: venue API keys at rest, encrypted with a key only the operator's passphrase gives.

Why a file of our own: config.toml, the environment and a plain credentials file all hold the
secret in the clear for anyone who reads them (a backup, a support bundle, a mis-set mode). Here
a stolen file alone is useless: AES-256-GCM under a key derived from the passphrase by Argon2id
(memory-hard: guessing costs memory, not just time). The file is JSON (docs/security.md):

    {"format": "gekko-keystore", "version": 1,
     "kdf": {"name": "argon2id", "salt": b64, "iterations": n, "lanes": n, "memory_kib": n},
     "cipher": {"name": "aes-256-gcm", "nonce": b64}, "ciphertext": b64}

The header (format, version, kdf) is the cipher's associated data: changing a parameter breaks
authentication like changing a byte of ciphertext does. Every write takes a fresh salt and nonce.
The file must be the current user's and mode 0600 (group/others: refused, naming the file); it
is written to a 0600 temporary file and renamed over the old one, under an exclusive lock.

The passphrase (``passphrase``): ``GEKKO_KEYSTORE_PASSPHRASE``, else ``[keystore]
passphrase_file``, else ``$CREDENTIALS_DIRECTORY/gekko-keystore`` (systemd ``LoadCredential``),
else a prompt when a terminal is attached; none of them: refused. Two of the first two: refused
(which one would win is a guess). Every secret read is registered with ``ops.secrets``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import json
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ops.secrets import register

__all__ = [
    "PASSPHRASE_ENV",
    "CREDENTIAL_NAME",
    "KdfParams",
    "KeyEntry",
    "KeystoreError",
    "load",
    "passphrase",
    "save",
]

FORMAT, VERSION = "gekko-keystore", 1
PASSPHRASE_ENV = "GEKKO_KEYSTORE_PASSPHRASE"
CREDENTIAL_NAME = "gekko-keystore"  # the file systemd's LoadCredential= puts there
PERMISSIONS = ("read", "trade")
MIN_PASSPHRASE = 12  # a new keystore's passphrase: at least this many characters
# floors below which a file is refused (OWASP's Argon2id minimum: 19 MiB, 2 passes)
MIN_MEMORY_KIB, MIN_ITERATIONS = 19 * 1024, 2
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeystoreError(ValueError):
    """A keystore that cannot be used; the message names the file and what to do."""


class KdfParams(msgspec.Struct, forbid_unknown_fields=True):
    """Argon2id's parameters, stored in the file's header (defaults: new files)."""

    name: str = "argon2id"
    salt: str = ""
    iterations: int = 3
    lanes: int = 4
    memory_kib: int = 64 * 1024


class KeyEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One API key set and what it is for. ``repr`` never shows the secrets."""

    name: str
    venue: str  # the [[venues]] name or kind it is for
    account: str = ""  # the venue account / sub-account / portfolio, for people
    permissions: str = "trade"  # "read" | "trade": what Gekko may use it for
    allow_withdraw: bool = False  # a key the venue says can withdraw is refused unless true
    api_key: str
    api_secret: str
    api_password: str = ""
    created: float = 0.0  # unix seconds
    rotated: float = 0.0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise KeystoreError(f"key name {self.name!r}: 1-64 letters, digits, _ . or -")
        if self.permissions not in PERMISSIONS:
            raise KeystoreError(
                f"key {self.name}: permissions must be one of {', '.join(PERMISSIONS)}"
            )
        if not (self.api_key and self.api_secret):
            raise KeystoreError(f"key {self.name}: api_key and api_secret are both needed")

    def __repr__(self) -> str:
        return f"KeyEntry({self.name!r}, venue={self.venue!r}, ***)"

    __str__ = __repr__

    def public(self) -> dict[str, Any]:
        """What ``gekko keys list`` may show: everything but the secrets."""
        return {
            "name": self.name,
            "venue": self.venue,
            "account": self.account,
            "permissions": self.permissions,
            "allow_withdraw": self.allow_withdraw,
            "created": self.created,
            "rotated": self.rotated,
        }


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    kdf: KdfParams
    cipher: dict[str, str]
    ciphertext: str


# --- the file ------------------------------------------------------------------------------------
def check_mode(path: Path) -> None:
    """Refuse a keystore another user owns or group/others may access."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeystoreError(f"keystore {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeystoreError(f"keystore {path} is not a regular file")
    if st.st_uid != os.getuid():
        raise KeystoreError(f"keystore {path} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeystoreError(
            f"keystore {path} is accessible by group or others (mode {mode:04o}): chmod 600 {path}"
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise KeystoreError(f"keystore {path}: {what} is not base64") from None


def _aad(h: _Header) -> bytes:
    head = {"format": h.format, "version": h.version, "kdf": msgspec.to_builtins(h.kdf)}
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


def _derive(secret: str, kdf: KdfParams, salt: bytes) -> bytes:
    return Argon2id(
        salt=salt,
        length=32,
        iterations=kdf.iterations,
        lanes=kdf.lanes,
        memory_cost=kdf.memory_kib,
    ).derive(secret.encode())


def _read_header(path: Path) -> _Header:
    check_mode(path)
    try:
        h = msgspec.json.decode(path.read_bytes(), type=_Header)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise KeystoreError(f"keystore {path} is not a Gekko keystore ({exc})") from None
    if h.format != FORMAT or h.version != VERSION:
        raise KeystoreError(f"keystore {path}: format {h.format!r} version {h.version} unknown")
    kdf = h.kdf
    if kdf.name != "argon2id" or h.cipher.get("name") != "aes-256-gcm":
        raise KeystoreError(f"keystore {path}: only argon2id and aes-256-gcm are accepted")
    if kdf.memory_kib < MIN_MEMORY_KIB or kdf.iterations < MIN_ITERATIONS or kdf.lanes < 1:
        raise KeystoreError(
            f"keystore {path}: Argon2id parameters below the floor "
            f"({MIN_MEMORY_KIB} KiB, {MIN_ITERATIONS} passes): refused"
        )
    return h


def load(path: str | Path, secret: str) -> list[KeyEntry]:
    """The entries of the keystore at ``path``; a wrong passphrase or an altered file is a
    ``KeystoreError`` (the two cannot be told apart, by design). Secrets are registered."""
    path = Path(path)
    h = _read_header(path)
    salt = _unb64(h.kdf.salt, "salt", path)
    nonce = _unb64(h.cipher.get("nonce", ""), "nonce", path)
    if len(salt) < 16 or len(nonce) != 12:
        raise KeystoreError(f"keystore {path}: salt or nonce of the wrong size")
    key = _derive(secret, h.kdf, salt)
    try:
        plain = AESGCM(key).decrypt(nonce, _unb64(h.ciphertext, "ciphertext", path), _aad(h))
    except InvalidTag:
        raise KeystoreError(f"keystore {path}: wrong passphrase, or the file was altered") from None
    try:
        entries = msgspec.json.decode(plain, type=list[KeyEntry])
    except (msgspec.DecodeError, msgspec.ValidationError, KeystoreError) as exc:
        raise KeystoreError(f"keystore {path}: content not readable ({exc})") from None
    register(v for e in entries for v in (e.api_key, e.api_secret, e.api_password) if v)
    return entries


def save(
    path: str | Path, secret: str, entries: list[KeyEntry], kdf: KdfParams | None = None
) -> None:
    """Encrypt ``entries`` to ``path`` (fresh salt and nonce; ``kdf``: the parameters, the
    defaults for a new file), atomically: a 0600 temporary file, fsynced, renamed over."""
    path = Path(path)
    kdf = msgspec.structs.replace(kdf or KdfParams(), salt=_b64(secrets.token_bytes(16)))
    nonce = secrets.token_bytes(12)
    h = _Header(FORMAT, VERSION, kdf, {"name": "aes-256-gcm", "nonce": _b64(nonce)}, "")
    key = _derive(secret, kdf, base64.b64decode(kdf.salt))
    h.ciphertext = _b64(AESGCM(key).encrypt(nonce, msgspec.json.encode(entries), _aad(h)))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(h))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of the keystore (``<path>.lock``, 0600)."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def find(entries: list[KeyEntry], name: str, path: str | Path) -> KeyEntry:
    for e in entries:
        if e.name == name:
            return e
    known = ", ".join(e.name for e in entries) or "none"
    raise KeystoreError(f"keystore {path} has no key {name!r} (it has: {known})")


def now() -> float:
    return round(time.time(), 3)


# --- the passphrase ------------------------------------------------------------------------------
def _read_file(path: Path, what: str) -> str:
    from ops.secrets import SecretError, read_secret_file

    try:
        return read_secret_file(str(path), what)
    except SecretError as exc:
        raise KeystoreError(f"the keystore's passphrase cannot be used ({exc.problem})") from None


def passphrase(
    passphrase_file: str = "",
    env: Mapping[str, str] | None = None,
    *,
    prompt: Callable[[str], str] | None = None,
    confirm: bool = False,
    can_prompt: bool = True,
) -> tuple[str, str]:
    """(the passphrase, where it came from) — see the module docstring for the order.
    ``prompt``: how to ask (``getpass.getpass``; only when stdin is a terminal); ``confirm``:
    ask twice (a new keystore or a new passphrase) and enforce ``MIN_PASSPHRASE``;
    ``can_prompt`` False: never ask (a run's exec reads it again after a restart, with no
    terminal), so a missing source is an error at once."""
    env = os.environ if env is None else env
    from_env = env.get(PASSPHRASE_ENV, "")
    if from_env and passphrase_file:
        raise KeystoreError(
            f"the keystore's passphrase is in both {PASSPHRASE_ENV} and [keystore] "
            "passphrase_file: give one"
        )
    if from_env:
        value, source = from_env, PASSPHRASE_ENV
    elif passphrase_file:
        path = Path(os.path.expanduser(passphrase_file))
        value, source = _read_file(path, "keystore.passphrase_file"), f"file {path}"
    elif (
        env.get("CREDENTIALS_DIRECTORY")
        and (Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME).exists()
    ):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        value, source = _read_file(path, "CREDENTIALS_DIRECTORY"), f"systemd credential {path}"
    else:
        ask = prompt
        if not can_prompt:
            raise KeystoreError(
                f"the keystore's passphrase is not given (gekko run never prompts: exec reads it again on a "
                f"restart): set {PASSPHRASE_ENV}, [keystore] passphrase_file or a systemd "
                f"credential named {CREDENTIAL_NAME}"
            )
        if ask is None:
            if not sys.stdin.isatty():
                raise KeystoreError(
                    f"the keystore's passphrase is not given and there is no terminal to ask on; set {PASSPHRASE_ENV}, "
                    "[keystore] passphrase_file or a systemd credential named "
                    f"{CREDENTIAL_NAME}"
                )
            ask = getpass.getpass
        value = ask("keystore passphrase: ")
        if confirm and ask("keystore passphrase again: ") != value:
            raise KeystoreError(
                "the keystore's passphrase was typed differently twice: the two entries differ"
            )
        source = "prompt"
    if not value:
        raise KeystoreError(f"the keystore's passphrase from {source} is empty")
    if confirm and len(value) < MIN_PASSPHRASE:
        raise KeystoreError(
            f"the keystore's passphrase from {source} is too short (at least {MIN_PASSPHRASE} characters)"
        )
    register([value])
    return value, source
