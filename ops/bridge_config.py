"""The bridge's keys in ``[bridge]``: this engine's MAC key and its peers' (the allow-list).

Its own module so that ``ops/config.py`` only calls ``check_bridge_auth``. Fail closed: a bridge
that is on must be able to sign what it publishes and authenticate what it subscribes to, or the
configuration is refused at load, naming the key — unless ``authenticate = false`` is written
(the bridge then warns and audits at every start). The frame format and the receiver's checks
are ``procs/bridge_auth.py``; the operator's view is docs/security.md, "Bridge authentication".
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from engine.settings import SettingError
from ops.secrets import register
from procs.bridge_auth import MIN_KEY_CHARS

_STRICT = {"forbid_unknown_fields": True, "kw_only": True}
_ENGINE_RE = re.compile(r"[A-Za-z0-9]{1,12}")


class _KeyedError(SettingError):
    relative = False


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise _KeyedError(key, problem)


class BridgePeer(msgspec.Struct, **_STRICT):
    """``[bridge.peers.<engine id>]``: the key another engine signs its frames with. Each may be
    given as ``mac_key_file`` (a 0600 file) or ``"${ENV}"`` (ops/secrets.py)."""

    mac_key: str = ""
    previous_mac_key: str = ""  # also accepted while that engine rotates its key ("" = none)


def check_bridge_auth(bc: Any) -> None:
    """The key checks of a ``BridgeSection`` (its ``__post_init__``); registers the keys as
    secrets, so that ``redact`` masks them wherever they might be printed."""
    register([bc.mac_key, *(k for p in bc.peers.values() for k in (p.mac_key, p.previous_mac_key))])
    for eid, peer in bc.peers.items():
        key = f"bridge.peers.{eid}"
        _need(bool(_ENGINE_RE.fullmatch(eid)), key, "an engine id is 1-12 letters or digits")
        _need(bool(peer.mac_key), f"{key}.mac_key", "missing (or give mac_key_file)")
        for name in ("mac_key", "previous_mac_key"):
            value = getattr(peer, name)
            _need(
                not value or len(value) >= MIN_KEY_CHARS,
                f"{key}.{name}",
                f"must be at least {MIN_KEY_CHARS} characters",
            )
    _need(
        not bc.mac_key or len(bc.mac_key) >= MIN_KEY_CHARS,
        "bridge.mac_key",
        f"must be at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -base64 32`)",
    )
    if not bc.enabled or not bc.authenticate:
        return
    _need(
        bool(bc.mac_key) or not bc.publish,
        "bridge.mac_key",
        f"the bridge is on and publishes {list(bc.publish)} but has no key to sign them with: "
        'set mac_key_file (a 0600 file) or mac_key = "${ENV}" (32+ characters), or write '
        "authenticate = false to run unauthenticated (refused: fail closed)",
    )
    for k, sub in enumerate(bc.subscribe):
        engine = sub.split(":", 1)[0]
        _need(
            engine in bc.peers,
            f"bridge.subscribe[{k}]",
            f"engine {engine!r} is not in the allow-list: give its key as "
            f"[bridge.peers.{engine}] mac_key_file (or authenticate = false; refused: fail closed)",
        )
