"""A real venue's API keys: from the environment or a private file, never from config.toml.

Where they come from, in order: the environment variables ``GEKKO_<NAME>_API_KEY``,
``GEKKO_<NAME>_API_SECRET`` and (Coinbase legacy, some ccxt exchanges) ``GEKKO_<NAME>_API_PASSWORD``
(``<NAME>`` = the venue's name upper-cased, anything but letters and digits as ``_``), or the
venue's ``credentials_file``: a TOML file with ``api_key``, ``api_secret`` and optionally
``api_password``, refused unless only its owner may read it (mode 0600). Both at once is an
error (which one would win is a guess). Every value found is registered with ``ops.secrets`` at
once, so no log line, summary, Redis key or PostgreSQL row can carry it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from engine.venues.ccxt_session import Credentials
from ops.config import ConfigError
from ops.secrets import SecretError, read_secret_file, register
from ops.venue_config import RealVenueKeys, key_env_names

__all__ = ["credentials_source", "load_credentials"]

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


def load_credentials(
    venue: RealVenueKeys, config_path: str | Path = "", env: Mapping[str, str] | None = None
) -> Credentials | None:
    """The venue's keys (None: it has none); a ``ConfigError`` naming the venue when they are
    half there, in a readable file, or in two places. A relative ``credentials_file`` is
    relative to the config file."""
    env = os.environ if env is None else env
    where = f"venues[{venue.name}]"
    path = config_path or "<config>"
    try:
        from_env = _from_env(venue, env)
        if venue.credentials_file and from_env is not None:
            raise ValueError(
                f"keys in both the environment ({key_env_names(venue.name)[0]}) and "
                f"credentials_file: give one"
            )
        if venue.credentials_file:
            base = Path(config_path).resolve().parent if config_path else Path.cwd()
            return _from_file(venue, base)
        return from_env
    except ValueError as exc:
        raise ConfigError(path, where, str(exc)) from None


def credentials_source(venue: RealVenueKeys) -> str:
    """Where the keys are looked for, for messages ("GEKKO_BN_API_KEY and ..." or the file)."""
    if venue.credentials_file:
        return f"credentials_file {venue.credentials_file}"
    key_name, secret_name, _ = key_env_names(venue.name)
    return f"the environment variables {key_name} and {secret_name}"
