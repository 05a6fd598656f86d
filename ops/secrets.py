"""Secrets in the configuration: where they come from, and the one function that hides them.

Why here, in one place: a database password must be writable somewhere other than config.toml
(an environment variable, a systemd credential, a Kubernetes secret file), and whatever the
engine writes — logs, Redis, the audit log, CLI output, error messages — must never carry it.

- ``resolve(raw, schema)`` runs on the decoded TOML before validation (ops/config.py):
  ``${NAME}`` in any string value is the environment variable NAME (unset or empty: an error
  naming the key and the variable; ``$${`` is a literal ``${``), and a ``<key>_file`` sibling of
  a string key ``<key>`` reads the value from that file (one trailing newline stripped; the file
  must give no access to group or others; ``<key>`` and ``<key>_file`` together are an error).
  Every value taken from the environment or a file, and the password of any URL in a value, is
  remembered as a secret of this process.
- ``redact(text)`` masks remembered secrets, the password of URL userinfo (``scheme://user:pw@``)
  and the value of any key that looks secret (``password=``, ``"token": ...``, TOML
  ``api_key = "..."``, libpq ``password=...``). Idempotent: redacting twice changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import msgspec.inspect as mi

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values are not masked as literals (they would mask every digit)


class SecretError(ValueError):
    """A secret reference that cannot be resolved; ``key`` is the config key that holds it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


# --- the secrets of this process -----------------------------------------------------------------
_known: set[str] = set()
_known_re: re.Pattern[str] | None = None


def register(values: Iterable[str]) -> None:
    """Remember values as secrets: ``redact`` masks them wherever they appear."""
    global _known_re
    new = {v for v in values if len(v) >= MIN_SECRET_LEN} - _known
    if new:
        _known.update(new)
        alts = sorted(_known, key=len, reverse=True)  # the longest first: no partial masks
        _known_re = re.compile("|".join(re.escape(v) for v in alts))


def _recompile() -> None:
    global _known_re
    alts = sorted(_known, key=len, reverse=True)
    _known_re = re.compile("|".join(re.escape(v) for v in alts)) if alts else None


@contextlib.contextmanager
def transient() -> Iterator[None]:
    """Secrets first registered inside the block are forgotten after it: a process that uses
    a secret once (the supervisor's pre-flight with the venue's keys) keeps no reference to
    it (Python cannot wipe a string; dropping every reference is what it can do)."""
    before = set(_known)
    try:
        yield
    finally:
        if _known - before:
            _known.intersection_update(before)
            _recompile()


# --- resolution: ${ENV} and <key>_file -----------------------------------------------------------
_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


def _substitute(text: str, key: str, found: list[str], *, secret: bool = True) -> str:
    def one(m: re.Match[str]) -> str:
        tok, name = m.group(0), m.group(1)
        if tok == "$${":
            return "${"
        if name is None:
            raise SecretError(
                key, "malformed ${...} reference (use ${NAME}, or $${ for a literal ${)"
            )
        value = os.environ.get(name)
        if value is None:
            raise SecretError(
                key, f"environment variable {name} is not set (referenced as ${{{name}}})"
            )
        if value == "":
            raise SecretError(
                key, f"environment variable {name} is empty (referenced as ${{{name}}})"
            )
        if secret:
            found.append(value)
        return value

    return _REF.sub(one, text) if "$" in text else text


def read_secret_file(path: str, key: str) -> str:
    """The content of a secret file, one trailing newline stripped; refused when group or others
    may access it (they could read the secret), when empty, or when not UTF-8 text."""
    p = Path(path)
    try:
        st = p.stat()
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise SecretError(
                key,
                f"secret file {path} is accessible by group or others (mode {mode:04o}): "
                f"chmod 600 {path}",
            )
        data = p.read_bytes()
    except OSError as exc:
        raise SecretError(key, f"cannot read secret file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SecretError(key, f"secret file {path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise SecretError(key, f"secret file {path} is empty")
    return text


def _unwrap(t: Any) -> Any:
    """The struct / list / dict type inside an Optional (``X | None``)."""
    if isinstance(t, mi.UnionType):
        for u in t.types:
            if isinstance(u, (mi.StructType, mi.ListType, mi.DictType, mi.StrType)):
                return u
    return t


def _is_str(t: Any) -> bool:
    return isinstance(_unwrap(t), mi.StrType)


def _walk(node: Any, t: Any, where: str, found: list[str]) -> Any:
    t = _unwrap(t)
    if isinstance(node, dict):
        fields = {f.encode_name: f.type for f in t.fields} if isinstance(t, mi.StructType) else None
        out: dict[str, Any] = {}
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            target = k.removesuffix("_file") if isinstance(k, str) else ""
            if (
                fields is not None
                and k != target
                and k not in fields
                and _is_str(fields.get(target))
            ):
                if target in node:
                    raise SecretError(key, f"give {target} or {k}, not both")
                if not isinstance(v, str) or not v:
                    raise SecretError(key, "must be the path of a file")
                value = read_secret_file(_substitute(v, key, found, secret=False), key)
                found.append(value)
                found.extend(m.group(2) for m in _USERINFO.finditer(value))
                out[target] = value  # file content is literal: no ${...} inside it
                continue
            sub = fields.get(k) if fields is not None else None
            if sub is None and isinstance(t, mi.DictType):
                sub = t.value_type
            out[k] = _walk(v, sub, key, found)
        return out
    if isinstance(node, list):
        item = t.item_type if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType)) else None
        return [_walk(v, item, f"{where}[{i}]", found) for i, v in enumerate(node)]
    if isinstance(node, str):
        value = _substitute(node, where, found)
        found.extend(m.group(2) for m in _USERINFO.finditer(value))  # a URL's password
        return value
    return node


def resolve(raw: dict[str, Any], schema: type) -> dict[str, Any]:
    """``raw`` (decoded TOML) with ``${NAME}`` and ``<key>_file`` resolved against the struct
    type ``schema``; the values found are registered as secrets. Raises ``SecretError``."""
    found: list[str] = []
    out = _walk(raw, mi.type_info(schema), "", found)
    register(found)
    return out


# --- redaction ------------------------------------------------------------------------------------
# scheme://user:password@ — the password (non-empty) up to the last @ before the host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:'\"]*:)([^\s/?#'\"]+)@")
_SECRET_NAME = (
    r"[A-Za-z0-9_.\-]*?(?:password|passwd|passphrase|secret|token|credentials?"
    r"|api[_-]?key|apikey|(?:private|access|auth|signing|encryption|master|mac)[_-]?key)"
    r"[A-Za-z0-9_\-]*"
)
_KEYVAL = re.compile(
    rf"(?i)(?<![A-Za-z0-9_])({_SECRET_NAME})([\"']?[ \t]*[=:][ \t]*)"
    r"(\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s,;&}\])\"']+)"
)
_NOT_SECRET_SUFFIX = ("_file", "_path", "_dir", "_env", "_s", "_ms", "_count")


_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _mask_value(m: re.Match[str]) -> str:
    name, sep, value = m.group(1), m.group(2), m.group(3)
    if name.lower().endswith(_NOT_SECRET_SUFFIX) or _ENV_REF.fullmatch(value.strip("\"'")):
        return m.group(0)  # a file path, a duration, or a ${NAME} reference: not the secret
    if value[:1] in "\"'" and len(value) >= 2:
        return f"{name}{sep}{value[0]}{MASK}{value[0]}"
    return f"{name}{sep}{MASK}"


def _mask_userinfo(m: re.Match[str]) -> str:
    return m.group(0) if _ENV_REF.fullmatch(m.group(2)) else f"{m.group(1)}{MASK}@"


def redact(text: str) -> str:
    """``text`` with every secret masked (see the module docstring)."""
    if not text:
        return text
    if _known_re is not None:
        text = _known_re.sub(MASK, text)
    text = _USERINFO.sub(_mask_userinfo, text)
    return _KEYVAL.sub(_mask_value, text)


def config_digest(text: str) -> str:
    """sha256 of the redacted configuration text: what Redis and the audit log carry (a hash of
    the text with its password would let anyone holding the rest guess the password offline)."""
    return hashlib.sha256(redact(text).encode()).hexdigest()


class _MaskedStream:
    """A text stream that redacts each write (the ``gekko`` CLI's stdout and stderr)."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, s: str) -> int:
        self._inner.write(redact(s))
        return len(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def masked_std_streams() -> Iterator[None]:
    """stdout and stderr redacted for the block (restored after it)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _MaskedStream(out), _MaskedStream(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
