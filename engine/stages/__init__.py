"""Engine stages: the one wiring between the engine's components (DESIGN §5).

A stage wraps one component — ``StrategyStage`` the strategy host, ``RiskStage`` the risk gate,
``ExecStage`` the exec engine and the portfolio — and says, per input ring of
``engine.topology``, what a message does (``handlers``), what time alone does (``timers``), and
on which output ring each result goes, through the ``Outbox`` it is given. Every routing
decision lives here and nowhere else; both runtimes run these same stages: the worker processes
(``procs.loop``, one stage per process, outputs on shared-memory rings) and the inline backtest
(``engine.backtest``, all stages in one process, outputs on a time-ordered queue). Time is
always passed in (``now_ns``), so a stage is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: a handler of one input ring: ``fn(msg, now_ns)``
Handler = Callable[[Any, int], Any]


class Outbox(Protocol):
    """Where a stage's outputs go, by output ring name."""

    def publish(self, ring: str, msg: Any) -> None: ...

    def publish_batch(self, ring: str, msgs: Sequence[Any]) -> None: ...


@dataclass(frozen=True)
class Every:
    """A timer a stage asks for: ``fn(now_ns)`` every ``interval_ns``."""

    interval_ns: int
    fn: Callable[[int], Any]


class Stage:
    """What both runtimes read of a stage: its name (the process of ``engine.topology``), its
    handlers by input ring, its timers."""

    name: str = ""
    handlers: dict[str, Handler]
    timers: tuple[Every, ...] = ()
