"""Fuzz targets for every decoder of untrusted bytes, run two ways (docs/security.md, "Fuzzing").

Why one function per target, taking bytes: the same target runs under hypothesis in ``make test``
(``tests/test_fuzz.py``: the kept corpus replayed, then mutated and structured inputs, a few
hundred examples in all) and under atheris in ``make fuzz`` (``tests/fuzz/run_atheris.py``:
coverage-guided, ``FUZZ_SECONDS`` per target, seeded from the same corpus). A target returns
normally when its decoder accepted the input or refused it the documented way (the exception
types in ``Target.refusals``); any other exception is a bug, and so is an accepted input whose
messages would not fit a ring frame (``wire_ok``). Hangs and unbounded allocations show under
atheris (``-timeout``, ``-rss_limit_mb``); each input here is small, so hypothesis sees a hang
as a test timeout.

The corpus (``tests/fuzz/corpus/<target>/``) holds small real-shaped inputs, one file each, and
the regression inputs of bugs the fuzzers found (named ``regress-*``): they are replayed first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

CORPUS = Path(__file__).resolve().parent / "corpus"
INT64 = 1 << 63


@dataclass(frozen=True)
class Target:
    """A decoder under test: ``run(data)`` feeds it ``data``; ``refusals`` are the exception
    types it may raise to refuse an input (anything else escaping ``run`` is a bug)."""

    name: str
    run: Callable[[bytes], None]
    refusals: tuple[type[BaseException], ...] = ()

    def __call__(self, data: bytes) -> None:
        try:
            self.run(data)
        except AssertionError:
            raise  # a broken invariant, never a refusal
        except self.refusals:
            pass

    def corpus(self) -> list[bytes]:
        d = CORPUS / self.name
        return [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()] if d.is_dir() else []


def wire_ok(msgs: object) -> None:
    """Each engine message fits a ring frame: it encodes, decodes to itself, and every int
    field is an int64 (the rings' and numpy's type; a larger one would fail far from here)."""
    from engine.codec import MESSAGE_DECODER
    from engine.messages import TAG_BY_TYPE

    items = msgs if isinstance(msgs, list | tuple) else [msgs]
    for m in items:
        if not isinstance(m, msgspec.Struct):
            continue
        assert _int64_only(msgspec.structs.astuple(m)), f"{m!r:.300}: an int beyond int64"
        if type(m) in TAG_BY_TYPE:  # a ring message (a venue's report struct is not one)
            raw = msgspec.msgpack.encode(m)  # compared as bytes: NaN != NaN
            assert msgspec.msgpack.encode(MESSAGE_DECODER.decode(raw)) == raw


def _int64_only(v: object) -> bool:
    if isinstance(v, int):
        return -INT64 <= v < INT64
    if isinstance(v, list | tuple):
        return all(_int64_only(x) for x in v)
    if isinstance(v, dict):
        return all(_int64_only(x) for x in v.values())
    if isinstance(v, msgspec.Struct):
        return _int64_only(msgspec.structs.astuple(v))
    return True


def targets() -> dict[str, Target]:
    """Every target by name (imported here so a run of one does not import the rest twice)."""
    from tests.fuzz import targets_files, targets_wire

    out: dict[str, Target] = {}
    for t in (*targets_wire.TARGETS, *targets_files.TARGETS):
        out[t.name] = t
    return out
