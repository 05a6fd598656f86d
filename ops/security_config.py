"""``[security]``: who may operate the engine, locally (roles) and over the Redis bus (remote control).

Its own module, as ``ops/venue_config.py`` is for venues: ``ops/config.py`` only hangs the section
on ``Config``. The contract (what each role may do, the command format) is docs/security.md,
"Operator roles" and "Remote control"; the checks are ``ops/roles.py`` and
``ops/remote_control.py``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import msgspec

from engine.settings import SettingError

_STRICT = {"forbid_unknown_fields": True, "kw_only": True}
ROLE_NAMES = ("viewer", "trader", "admin")  # lowest to highest
_NAME_RE = re.compile(r"@?[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?")
_OPERATOR_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SOCKET_DIR_MAX = 80  # the socket's name follows: sun_path holds ~104 bytes


class _KeyedError(SettingError):
    relative = False


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise _KeyedError(key, problem)


def public_key_bytes(text: str) -> bytes | None:
    """The 32 raw bytes of a base64 Ed25519 public key, or None when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class RolesSection(msgspec.Struct, **_STRICT):
    """``[security.roles]``: OS user names (``@name``: every member of that OS group) per role.
    The engine's own OS user and root are always admin; anyone not listed is refused."""

    viewer: list[str] = []
    trader: list[str] = []
    admin: list[str] = []

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for role in ROLE_NAMES:
            for k, name in enumerate(getattr(self, role)):
                key = f"security.roles.{role}[{k}]"
                _need(
                    bool(_NAME_RE.fullmatch(name)),
                    key,
                    f"must be an OS user name, or '@group', not {name!r}",
                )
                _need(
                    name not in seen,
                    key,
                    f"{name!r} is listed as {seen.get(name)} already (one role per name)",
                )
                seen[name] = role

    def names(self) -> dict[str, str]:
        """Each listed name (``@group`` included) -> its role."""
        return {n: r for r in ROLE_NAMES for n in getattr(self, r)}


class RemoteControlSection(msgspec.Struct, **_STRICT):
    """``[security.remote_control]``: signed kill / resume commands over the Redis bus."""

    enabled: bool = False  # off: nothing listens for remote commands
    operators: dict[str, str] = {}  # operator name -> base64 Ed25519 public key (32 bytes)
    max_age_s: float = 60.0  # a command's lifetime (expires - issued) may not exceed this
    clock_skew_s: float = 5.0  # tolerated difference between the sender's clock and ours
    # the sending side (`gekko kill --remote`): who signs, with which private key
    operator: str = ""  # "" = this OS user's name
    key_file: str = ""  # Ed25519 private key, PEM (gekko remote keygen), mode 0600

    def __post_init__(self) -> None:
        key = "security.remote_control"
        for name, pub in self.operators.items():
            _need(
                bool(_OPERATOR_RE.fullmatch(name)),
                f"{key}.operators.{name}",
                "an operator name is 1-64 letters, digits, '_', '.' or '-'",
            )
            _need(
                public_key_bytes(pub) is not None,
                f"{key}.operators.{name}",
                "must be a base64 Ed25519 public key (32 bytes; `gekko remote keygen` prints it)",
            )
        _need(
            math.isfinite(self.max_age_s) and 0 < self.max_age_s <= 3600,
            f"{key}.max_age_s",
            "must be within (0, 3600] seconds",
        )
        _need(
            math.isfinite(self.clock_skew_s) and 0 <= self.clock_skew_s <= 60,
            f"{key}.clock_skew_s",
            "must be within [0, 60] seconds",
        )
        _need(
            not self.operator or bool(_OPERATOR_RE.fullmatch(self.operator)),
            f"{key}.operator",
            "an operator name is 1-64 letters, digits, '_', '.' or '-'",
        )
        _need(
            not self.enabled or bool(self.operators),
            f"{key}.operators",
            "remote control is enabled but names no operator: nobody could use it",
        )


class SecuritySection(msgspec.Struct, **_STRICT):
    """``[security]``: where the control socket lives, the roles, remote control."""

    # "" = <var_dir>/gekko-<id>.sock, mode 0600: only this engine's OS user and root reach it.
    # A directory here: the socket is made there with mode 0666 (the directory 0755) so the
    # users [security.roles] names can connect; each connection is still checked by the
    # kernel's peer credentials against the roles.
    control_socket_dir: str = ""
    roles: RolesSection = msgspec.field(default_factory=RolesSection)
    remote_control: RemoteControlSection = msgspec.field(default_factory=RemoteControlSection)

    def __post_init__(self) -> None:
        d = self.control_socket_dir
        _need(
            not d or (d.startswith("/") and len(d) <= SOCKET_DIR_MAX),
            "security.control_socket_dir",
            f"must be an absolute path of at most {SOCKET_DIR_MAX} characters",
        )


def check_security(cfg: object) -> None:
    """Cross-section checks (``Config.__post_init__``): remote control rides the bridge's Redis."""
    sec = cfg.security  # type: ignore[attr-defined]
    _need(
        not sec.remote_control.enabled or cfg.bridge.enabled,  # type: ignore[attr-defined]
        "security.remote_control.enabled",
        "remote control travels on the Redis bus: it needs [bridge] enabled = true",
    )
