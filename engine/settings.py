"""What the engine's settings structs share: strictness and the key-naming error.

``config.toml`` loads straight into the engine's own structs (``RiskLimits`` is ``[risk]``,
``ExecPolicy`` is ``[exec]``), so each key, its default, its unit and its check are stated once,
next to the code that uses them. A struct checks itself in ``__post_init__`` and names the bad key
relative to its section (``"max_position_pct"``); ``ops/config.py`` prefixes the section where
msgspec found it (``"risk.max_position_pct"``), and the CLI exits 2 with it.

Values the engine needs in other units (ns, intervals) are ``functools.cached_property``s of the
struct, computed once in ``__post_init__`` and then read as plain attributes (``dict=True`` holds
them; they are not keys: a config that names one is refused as an unknown key).
"""

from __future__ import annotations

import msgspec


class SettingError(ValueError):
    """A setting that cannot be used: ``key`` (relative to its section unless ``relative`` is
    False) and what is wrong with it."""

    relative = True

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def need(cond: bool, key: str, problem: str) -> None:
    """Raise ``SettingError(key, problem)`` unless ``cond``."""
    if not cond:
        raise SettingError(key, problem)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    """Base of a settings struct: frozen, keyword-only, unknown keys refused; ``dict=True`` keeps
    the derived values (cached properties) of an instance."""
