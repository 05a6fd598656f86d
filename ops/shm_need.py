"""How much of /dev/shm an engine needs: its rings, tables, metrics and semaphores, from its config.

Why a module of its own: `gekko doctor` compares it with the host's /dev/shm, and the deployment
files (compose.yaml's ``shm_size``, the Kubernetes ``/dev/shm`` emptyDir) are sized from it (a
test holds them to it). The figures are computed with the same topology and layout helpers the
supervisor creates the regions with (``procs.runtime.topology``, ``shm.layout.data_offset``,
...), never guessed: a bigger ``[rings]`` capacity or another worker changes them here too.

tmpfs gives memory by the page, so every region and semaphore is counted in whole pages. Ring
pages are all touched once the ring wraps: the need is the steady state, not the first minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from procs.runtime import (
    ALL_WORKERS,
    COUNTERS,
    HEALTH_DTYPE,
    HISTOGRAMS,
    POSITION_DTYPE,
    TOB_DTYPE,
    enabled_workers,
    topology,
)
from procs.venue_status import STATS_DTYPE, VENUE_DTYPE, venue_names
from shm.layout import data_offset
from shm.metrics import H_WORDS, _words_offset
from shm.region import HEADER_SIZE
from shm.seqlock import _rows_offset

PAGE = 4096
MIB = 1 << 20
#: Docker's default /dev/shm, and the smallest size we recommend
MIN_RECOMMENDED = 64 * MIB


def pages(n: int) -> int:
    """``n`` bytes rounded up to whole pages (what tmpfs charges)."""
    return (max(n, HEADER_SIZE) + PAGE - 1) // PAGE * PAGE


def ring_bytes(capacity: int, n_consumers: int) -> int:
    """A ring's region as ``Ring.create`` sizes it (the supervisor's max_consumers rule)."""
    return data_offset(max(8, n_consumers + 2)) + capacity


def ring_semaphores(n_consumers: int) -> int:
    """One semaphore per consumer slot plus the producer's (``Ring._semaphore_names``)."""
    return max(8, n_consumers + 2) + 1


def table_bytes(dtype: Any, nrows: int) -> int:
    return _rows_offset(nrows) + nrows * dtype.itemsize


def metrics_bytes(n_counters: int, n_hists: int) -> int:
    return _words_offset(n_counters + n_hists) + (n_counters + n_hists * H_WORDS) * 8


@dataclass
class ShmNeed:
    """What one engine holds in /dev/shm while it runs (bytes, whole pages)."""

    regions: dict[str, int] = field(default_factory=dict)  # short name -> bytes (page-rounded)
    semaphores: int = 0

    @property
    def region_bytes(self) -> int:
        return sum(self.regions.values())

    @property
    def total(self) -> int:
        return self.region_bytes + self.semaphores * PAGE

    @property
    def recommended(self) -> int:
        """Twice the need (a second engine id beside it during a migration, PostgreSQL's
        dynamic shared memory where it shares the host), in a power of two of MiB, 64 MiB at
        least (Docker's default)."""
        size = MIN_RECOMMENDED
        while size < 2 * self.total:
            size *= 2
        return size

    def ring_lines(self) -> list[str]:
        rings = {k[5:]: v for k, v in self.regions.items() if k.startswith("ring:")}
        return [f"{n} {mib(b)}" for n, b in sorted(rings.items(), key=lambda kv: -kv[1])]


def shm_need(cfg: Any) -> ShmNeed:
    """The /dev/shm an engine run with ``cfg`` creates (the supervisor's ``_create_regions``)."""
    need = ShmNeed()
    for spec in topology(cfg):
        cap = int(getattr(cfg.rings, spec.capacity_key))
        need.regions[f"ring:{spec.name}"] = pages(ring_bytes(cap, len(spec.consumers)))
        need.semaphores += ring_semaphores(len(spec.consumers))
    n_ins = len(cfg.instruments)
    need.regions["table:health"] = pages(table_bytes(HEALTH_DTYPE, len(ALL_WORKERS)))
    need.regions["table:positions"] = pages(table_bytes(POSITION_DTYPE, n_ins))
    need.regions["table:tob"] = pages(table_bytes(TOB_DTYPE, n_ins))
    n_venues = len(venue_names(cfg))
    need.regions["table:venues"] = pages(table_bytes(VENUE_DTYPE, n_venues))
    need.regions["table:vstats"] = pages(table_bytes(STATS_DTYPE, n_venues))
    workers = enabled_workers(cfg)
    for w in workers:
        need.regions[f"metrics:{w}"] = pages(metrics_bytes(len(COUNTERS[w]), len(HISTOGRAMS[w])))
    need.semaphores += len(workers)  # each worker's wake-up semaphore (procs.runtime.Waiter)
    return need


def mib(n: int) -> str:
    """``n`` bytes in MiB, one decimal (how the deploy files' comments state it)."""
    return f"{n / MIB:.1f} MiB"
