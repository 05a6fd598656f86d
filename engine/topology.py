"""Which ring goes from whom to whom: the engine's wiring, declared once as data (DESIGN §2, §5).

Both runtimes are built from it: the supervisor creates the shared-memory rings it lists and
each worker process attaches to them by name (``procs.runtime``); the inline backtest
(``engine.backtest``) routes every message a stage publishes on a ring to the readers listed
here. It lives in ``engine`` (pure data) so that the inline runtime can read it without
importing ``procs``; ``procs.runtime`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKERS = ("feed", "strategy", "risk", "exec")


@dataclass(frozen=True)
class RingSpec:
    name: str
    capacity_key: str  # attribute of cfg.rings
    producer: str
    consumers: tuple[tuple[str, bool], ...]  # (reader, gating)


TOPOLOGY: tuple[RingSpec, ...] = (
    # trading readers gate market data: a strategy must see every tick for its orders to be
    # reproducible; the supervisor's monitor may fall behind and only counts what it missed
    # risk needs only the latest prices: it reads them from the feed's top-of-book table
    # (the supervisor counts ticks from the feed's metrics: it never decodes market data)
    RingSpec("md", "md_capacity", "feed", (("strategy", True), ("exec", True))),
    RingSpec("intents", "intents_capacity", "strategy", (("risk", True),)),
    RingSpec("orders", "orders_capacity", "risk", (("exec", True), ("supervisor", True))),
    RingSpec(
        "events",
        "events_capacity",
        "exec",
        (("strategy", True), ("risk", True), ("supervisor", True)),
    ),
    RingSpec("risk", "risk_capacity", "risk", (("strategy", True), ("supervisor", True))),
    RingSpec("control", "control_capacity", "supervisor", tuple((w, True) for w in WORKERS)),
)
RING_BY_NAME = {r.name: r for r in TOPOLOGY}

#: the seqlock tables that carry state rather than a stream: (table, writer, readers). The feed's
#: top-of-book table gives risk its prices; in the inline runtime each market-data message reaches
#: the table's readers as it is written.
TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("tob", "feed", ("risk",)),
    ("positions", "exec", ("risk", "strategy")),
)


def readers(ring: str, specs: tuple[RingSpec, ...] = TOPOLOGY) -> tuple[str, ...]:
    """The processes that read ``ring``, in the order the topology lists them."""
    for s in specs:
        if s.name == ring:
            return tuple(r for r, _ in s.consumers)
    raise KeyError(f"no ring {ring!r} in the topology")
