"""A real venue's API keys: from the environment or a private file, never from config.toml.

Where they come from, in order: the environment variables ``GEKKO_<NAME>_API_KEY``,
``GEKKO_<NAME>_API_SECRET`` and (Coinbase legacy, some ccxt exchanges) ``GEKKO_<NAME>_API_PASSWORD``
(``<NAME>`` = the venue's name upper-cased, anything but letters and digits as ``_``), or the
venue's ``credentials_file``: a TOML file with ``api_key``, ``api_secret`` and optionally
``api_password``, refused unless only its owner may read it (mode 0600). Both at once is an
error (which one would win is a guess). Or, with ``keystore_entry`` on the venue and
``[keystore] path`` set, that entry of the encrypted keystore (ops/keystore.py; with the
environment or credentials_file too: an error). Every value found is registered with
``ops.secrets`` at once, so no log line, summary, Redis key or PostgreSQL row can carry it.

Only the processes that talk to the venue with the keys load them: the supervisor's pre-flight
(markets, fee tier, the live gates and the withdraw check), then exec; each loads them itself
from the source, so nothing hands them from process to process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from engine.venues.ccxt_session import Credentials
from ops.config import ConfigError, KeystoreSection
from ops.secrets import SecretError, read_secret_file, register
from ops.venue_config import RealVenueKeys, key_env_names

__all__ = ["KeyRules", "credentials_source", "load_credentials", "load_key", "worker_env"]

_FILE_KEYS = ("api_key", "api_secret", "api_password")


def _from_env(venue: RealVenueKeys, env: Mapping[str, str]) -> Credentials | None:
    key_name, secret_name, pw_name = key_env_names(venue.name)
    key, secret, pw = env.get(key_name, ""), env.get(secret_name, ""), env.get(pw_name, "")
    if not (key or secret):
        if pw:
            raise ValueError(f"{pw_name} is set but {key_name} and {secret_name} are not")
        return None
    register([v for v in (key, secret, pw) if v])  # masked before anything can print them
    if not (key and secret):
        missing = secret_name if key else key_name
        raise ValueError(f"{missing} is not set (both {key_name} and {secret_name} are needed)")
    return Credentials(key, secret, pw)


def _from_file(venue: RealVenueKeys, base: Path) -> Credentials:
    path = Path(os.path.expanduser(venue.credentials_file))
    if not path.is_absolute():
        path = base / path
    try:
        text = read_secret_file(str(path), "credentials_file")  # 0600 or refused
    except SecretError as exc:
        raise ValueError(exc.problem) from None
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError:
        raise ValueError(f"credentials file {path} is not valid TOML") from None
    if not isinstance(raw, dict):
        raise ValueError(f"credentials file {path} is not a TOML table")
    register([v for v in raw.values() if isinstance(v, str)])
    unknown = sorted(set(raw) - set(_FILE_KEYS))
    if unknown:
        raise ValueError(f"credentials file {path}: unknown keys {unknown} (use {_FILE_KEYS})")
    key, secret = raw.get("api_key", ""), raw.get("api_secret", "")
    if not (isinstance(key, str) and key and isinstance(secret, str) and secret):
        raise ValueError(f"credentials file {path} needs api_key and api_secret")
    pw = raw.get("api_password", "")
    return Credentials(key, secret, pw if isinstance(pw, str) else "")


class KeyRules(msgspec.Struct, frozen=True):
    """What Gekko may do with a venue's keys: a keystore entry says; keys from the
    environment or a credentials file may trade and may never withdraw."""

    name: str = ""  # the keystore entry ("" = not from the keystore)
    permissions: str = "trade"  # "read" | "trade"
    allow_withdraw: bool = False


def _from_keystore(
    venue: RealVenueKeys, config_path: str | Path, ks: KeystoreSection, env: Mapping[str, str]
) -> tuple[Credentials, KeyRules]:
    from ops import keystore

    path = ks.file(str(config_path))
    if not path:
        raise ValueError(f"keystore_entry {venue.keystore_entry!r} needs [keystore] path")
    try:
        secret, _ = keystore.passphrase(ks.passphrase_file, env, can_prompt=False)
        entry = keystore.find(keystore.load(path, secret), venue.keystore_entry, path)
    except keystore.KeystoreError as exc:
        raise ValueError(str(exc)) from None
    if entry.venue not in (venue.name, venue.kind):
        raise ValueError(
            f"keystore entry {entry.name!r} is for venue {entry.venue!r}, not {venue.name!r}"
        )
    creds = Credentials(entry.api_key, entry.api_secret, entry.api_password)
    return creds, KeyRules(entry.name, entry.permissions, entry.allow_withdraw)


def load_key(
    venue: RealVenueKeys,
    config_path: str | Path = "",
    env: Mapping[str, str] | None = None,
    keystore: KeystoreSection | None = None,
) -> tuple[Credentials, KeyRules] | None:
    """The venue's keys and their rules (None: it has none); a ``ConfigError`` naming the
    venue when they are half there, unreadable, or in two places. A relative
    ``credentials_file`` is relative to the config file."""
    env = os.environ if env is None else env
    where = f"venues[{venue.name}]"
    path = config_path or "<config>"
    try:
        from_env = _from_env(venue, env)
        given = [
            what
            for what, there in (
                (f"the environment ({key_env_names(venue.name)[0]})", from_env is not None),
                ("credentials_file", bool(venue.credentials_file)),
                ("keystore_entry", bool(venue.keystore_entry)),
            )
            if there
        ]
        if len(given) > 1:
            raise ValueError(f"keys in both {' and '.join(given)}: give one")
        if venue.keystore_entry:
            return _from_keystore(venue, config_path, keystore or KeystoreSection(), env)
        if venue.credentials_file:
            base = Path(config_path).resolve().parent if config_path else Path.cwd()
            return _from_file(venue, base), KeyRules()
        return None if from_env is None else (from_env, KeyRules())
    except ValueError as exc:
        raise ConfigError(path, where, str(exc)) from None


def load_credentials(
    venue: RealVenueKeys,
    config_path: str | Path = "",
    env: Mapping[str, str] | None = None,
    keystore: KeystoreSection | None = None,
) -> Credentials | None:
    """The venue's keys alone (``load_key``)."""
    got = load_key(venue, config_path, env, keystore)
    return None if got is None else got[0]


def credentials_source(venue: RealVenueKeys) -> str:
    """Where the keys are looked for, for messages ("GEKKO_BN_API_KEY and ..." or the file)."""
    if venue.keystore_entry:
        return f"keystore entry {venue.keystore_entry}"
    if venue.credentials_file:
        return f"credentials_file {venue.credentials_file}"
    key_name, secret_name, _ = key_env_names(venue.name)
    return f"the environment variables {key_name} and {secret_name}"


#: the one worker that talks to a venue with its keys (live orders); no other worker gets them
KEY_WORKERS = ("exec",)
_KEY_VAR = re.compile(r"GEKKO_[A-Z0-9_]+_API_(?:KEY|SECRET|PASSWORD)")


def worker_env(
    env: Mapping[str, str], worker: str, feed_venues: tuple[str, ...] = ()
) -> dict[str, str]:
    """The environment a worker starts with: the venues' key variables and the keystore's
    passphrase only for ``KEY_WORKERS`` (a strategy's code, the recorder or the bridge never
    see them, not even in /proc/<pid>/environ). ``feed_venues``: venues whose market data
    needs their keys (a kind with ``private_data``: OANDA's prices); the feed gets theirs."""
    from ops.keystore import PASSPHRASE_ENV

    if worker in KEY_WORKERS:
        return dict(env)
    keep: set[str] = set()
    if worker == "feed" and feed_venues:
        keep = {n for v in feed_venues for n in key_env_names(v)} | {PASSPHRASE_ENV}
    return {
        k: v
        for k, v in env.items()
        if k in keep or (k != PASSPHRASE_ENV and not _KEY_VAR.fullmatch(k))
    }
