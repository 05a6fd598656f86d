"""What the engine's settings structs share: strictness and the key-naming error.

``config.toml`` loads straight into the engine's own structs (``RiskLimits`` is ``[risk]``,
``ExecPolicy`` is ``[exec]``), so each key, its default, its unit and its check are stated once,
next to the code that uses them. A struct checks itself in ``__post_init__`` and names the bad key
relative to its section (``"max_position_pct"``); ``ops/config.py`` prefixes the section where
msgspec found it (``"risk.max_position_pct"``), and the CLI exits 2 with it.

Values the engine needs in other units (ns, intervals) come from the struct's ``derived()``,
computed once when it is built and then read as plain instance attributes (``dict=True`` holds
them: a dict lookup, as fast as a field, on the hot path). They are declared ``ClassVar`` so a
reader and a type checker see them, and they are not keys: a config naming one is refused.
"""

from __future__ import annotations

from typing import Any

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
    """Base of a settings struct: frozen, keyword-only, unknown keys refused; ``check`` runs and
    ``derived`` is computed whenever one is built (decoded, constructed or ``replace``d)."""

    def __post_init__(self) -> None:
        self.check()
        self.__dict__.update(self.derived())

    def check(self) -> None:
        """Raise ``SettingError`` naming the first bad key (nothing to check by default)."""

    def derived(self) -> dict[str, Any]:
        """The values the engine needs in other units, by attribute name (none by default)."""
        return {}

    def __copy__(self) -> Settings:
        return msgspec.structs.replace(self)  # a copy derives its values too
