"""Typed strategy parameters: a ``[strategies.params]`` table checked against a declared struct.

Why: a misspelt parameter (``half_spread_tick``) or one of the wrong type (``size = "10"``) in a
trading strategy is a silently wrong setting. A strategy class declares its parameters once, as
``Params``: a ``StrategyParams`` subclass (a ``msgspec.Struct`` with ``forbid_unknown_fields``)
or a plain dataclass, whose fields are the parameters with their types and defaults and whose
``__post_init__`` checks ranges with ``check``. ``parse_params`` turns the config table into an
instance, refusing unknown keys and wrong types with a ``ParamError`` that names the key and the
expected type, so the CLI can stop before anything starts (``ops/preflight.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

import msgspec


class StrategyParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the shipped strategies' ``Params`` (subclasses inherit the strictness)."""


class ParamError(ValueError):
    """One bad parameter: ``key`` is its name inside the params table (``""``: the table)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"params.{key}: {problem}" if key else f"params: {problem}")


def check(cond: bool, key: str, problem: str) -> None:
    """For ``Params.__post_init__``: a range check that names its parameter."""
    if not cond:
        raise ParamError(key, problem)


def field_names(params_type: type) -> list[str]:
    """The parameter names a ``Params`` type declares (a msgspec Struct or a dataclass)."""
    if dataclasses.is_dataclass(params_type):
        return [f.name for f in dataclasses.fields(params_type)]
    if isinstance(params_type, type) and issubclass(params_type, msgspec.Struct):
        return list(params_type.__struct_fields__)
    raise TypeError(f"{params_type!r}: Params must be a msgspec.Struct or a dataclass")


def parse_params(params_type: type, raw: Mapping[str, Any]) -> Any:
    """``raw`` (a config table) as an instance of ``params_type``; every failure a ParamError.

    Unknown keys are refused here for both kinds of type (a dataclass has no
    ``forbid_unknown_fields``), with the closest known name as a hint."""
    if not isinstance(raw, Mapping):
        raise ParamError("", f"must be a table, not {type(raw).__name__}")
    names = field_names(params_type)
    for key in sorted(set(raw) - set(names)):
        near = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(names)})"
        raise ParamError(str(key), f"unknown parameter{hint}")
    try:
        return msgspec.convert(dict(raw), type=params_type)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ParamError):
            raise cause from None
        if isinstance(cause, ValueError | TypeError):
            raise ParamError("", str(cause)) from None
        raise _from_msgspec(str(exc)) from None


_AT = re.compile(r"\s*-\s*at `\$\.?(.*)`$")
_EXPECTED = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _from_msgspec(msg: str) -> ParamError:
    """'Expected `int`, got `str` - at `$.size`' -> ParamError('size', 'expected int, got str')."""
    at = _AT.search(msg)
    key = at.group(1) if at else ""
    text = msg[: at.start()] if at else msg
    missing = _MISSING.search(text)
    if missing:
        name = missing.group(1)
        return ParamError(f"{key}.{name}" if key else name, "required parameter is missing")
    expected = _EXPECTED.search(text)
    if expected:
        return ParamError(key, f"expected {expected.group(1)}, got {expected.group(2)}")
    return ParamError(key, text[:1].lower() + text[1:])
