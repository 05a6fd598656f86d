"""A read-only view of a running engine, straight from its shared memory.

Why: every operator view (``gekko top``, the Prometheus exporter) must see the engine without
asking any process anything and without adding work to a hot loop. The workers already write
what matters into shm (health rows, metrics regions, ring headers, the positions, top-of-book
and venue tables); this module maps those regions PROT_READ — a stray write faults instead of
corrupting the engine — and turns them into one plain dict. Two figures live outside shm: the
trading state (risk writes it to its state file on every change, ``procs.risk.state_path``) and
per-process CPU (the OS, through psutil). ``snapshot()`` costs a few milliseconds: fine once a
second, never on a trading path. Users: ``ops/exporter.py`` (docs/metrics.md), ``ops/top.py``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import psutil

from ops.operator import EngineNotRunning
from procs.risk import load_state, state_path
from procs.runtime import (
    ALL_WORKERS,
    HEALTH_DTYPE,
    POSITION_DTYPE,
    enabled_workers,
    metrics_name,
    topology,
)
from procs.venue_status import STATS_DTYPE, STATS_TABLE, VENUE_DTYPE, read_states, read_stats
from procs.venue_status import TABLE as VENUES_TABLE
from shm.metrics import H_BUCKETS, H_COUNT, H_SUM, HistogramSnapshot, MetricsRegion, bucket_index
from shm.region import RegionError, pid_alive, read_header, region_name
from shm.ring import Ring
from shm.seqlock import SeqlockTable

HEALTH_STATES = {0: "absent", 1: "starting", 2: "ready", 3: "stopping", 4: "stopped"}


def _edge_ns(v: int) -> int:
    """The lower edge of the log-linear bucket holding ``v``: a real bucket boundary."""
    i = bucket_index(v)
    if i < 128:
        return i
    e, m = divmod(i - 128, 128)
    return (m + 128) << e


def _bounds() -> tuple[list[int], np.ndarray]:
    """Exported bucket bounds (ns): the shm histograms' own edges nearest a 1-2-5 series from
    100 ns to 20 s, and the first bucket index above each (counts below an edge are exact)."""
    series = [m * 10**k for k in range(2, 11) for m in (1, 2, 5) if m * 10**k <= 20 * 10**9]
    edges = sorted({_edge_ns(v) for v in series})
    return edges, np.array([bucket_index(e) for e in edges], dtype=np.int64)


#: upper bounds (ns) of the exported histogram buckets, and where each ends in the shm buckets
BOUNDS_NS, _BOUND_IDX = _bounds()


def histogram_buckets(snap: HistogramSnapshot) -> tuple[list[int], list[int]]:
    """(bounds in ns, cumulative counts of values below each bound) of one histogram; the
    total (the ``+Inf`` bucket) is ``snap.count``."""
    cum = np.concatenate(([0], np.cumsum(snap.words[H_BUCKETS:], dtype=np.uint64)))
    return list(BOUNDS_NS), [int(c) for c in cum[_BOUND_IDX]]


class EngineView:
    """Maps a running engine's regions read-only; ``snapshot()`` reads them."""

    def __init__(self, engine_id: str, cfg: Any) -> None:
        self.engine_id = engine_id
        self.cfg = cfg
        self.workers = list(enabled_workers(cfg))
        self.health: SeqlockTable | None = None
        self.positions: SeqlockTable | None = None
        self.venues: SeqlockTable | None = None
        self.venue_stats: SeqlockTable | None = None
        self.metrics: dict[str, MetricsRegion] = {}
        self.rings: dict[str, Ring] = {}
        self._procs: dict[int, psutil.Process] = {}
        ins = list(cfg.instruments)
        self._ins = [(i.instrument_id, i.symbol, i.venue, i.tick_size, i.lot_size) for i in ins]
        self._state_path = state_path(cfg)

    @classmethod
    def attach(cls, engine_id: str, cfg: Any) -> EngineView:
        """Attach to engine ``engine_id``; ``EngineNotRunning`` when no live engine owns it."""
        hdr = read_header(region_name(engine_id, "health"))
        if hdr is None or not pid_alive(int(hdr["creator_pid"])):  # type: ignore[arg-type]
            raise EngineNotRunning(
                f"no engine {engine_id!r} is running on this host (no live shared memory "
                f"of it in /dev/shm): start it with `gekko run`, or name its config with --config"
            )
        view = cls(engine_id, cfg)
        try:
            view._map()
        except RegionError as exc:
            view.close()
            raise EngineNotRunning(f"engine {engine_id!r}: {exc}") from None
        return view

    def _map(self) -> None:
        eid = self.engine_id
        self.health = SeqlockTable.attach(eid, "health", HEALTH_DTYPE, readonly=True)
        self.positions = SeqlockTable.attach(eid, "positions", POSITION_DTYPE, readonly=True)
        with contextlib.suppress(RegionError):  # an engine without a venues table
            self.venues = SeqlockTable.attach(eid, VENUES_TABLE, VENUE_DTYPE, readonly=True)
        with contextlib.suppress(RegionError):
            self.venue_stats = SeqlockTable.attach(eid, STATS_TABLE, STATS_DTYPE, readonly=True)
        for w in self.workers:
            self.metrics[w] = MetricsRegion.attach(eid, metrics_name(w), readonly=True)
        for spec in topology(self.cfg):
            with contextlib.suppress(RegionError):
                self.rings[spec.name] = Ring.attach(eid, spec.name, readonly=True)

    def close(self) -> None:
        """Unmap everything (the engine's regions are untouched)."""
        for m in self.metrics.values():
            m.close()
        for r in self.rings.values():
            r.close()
        for t in (self.health, self.positions, self.venues, self.venue_stats):
            if t is not None:
                t.close()
        self.metrics, self.rings = {}, {}
        self.health = self.positions = self.venues = self.venue_stats = None

    # --- the snapshot --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything an operator view shows, as plain Python values:

        ``workers`` [{name, pid, state, heartbeat_age_s, incarnation, restarts, processed, core,
        cpu_pct}], ``rings`` [{name, capacity_bytes, published (bytes), messages (frames),
        closed, readers: [{name,
        state, gating, cursor, lag_bytes, fill (0..1), received, missed}]}], ``latency`` {stage:
        {worker, count, sum_ns, p50_ns, p90_ns, p99_ns, p99.9_ns, max_ns}}, ``histograms``
        {stage: (bucket bounds in ns, cumulative counts below each)}, ``counters`` {worker:
        {name: n}}, ``positions`` [{instrument, instrument_id, venue, qty (lots), avg_px, mark_px,
        exposure, fills, realized, unrealized, fees}], ``trading_state`` {state, reason, source,
        since_wall_ns}, ``kill_switch``, ``venues`` (``procs.venue_status.read_states``),
        ``venue_stats`` (``read_stats``: live venues only)."""
        latency, hists = self._latency()
        state = load_state(self._state_path) or {}
        return {
            "engine_id": self.engine_id,
            "ts": time.time(),
            "alive": self.alive(),
            "workers": self._workers(),
            "rings": self._rings(),
            "latency": latency,
            "histograms": hists,
            "counters": {w: m.counters() for w, m in self.metrics.items()},
            "positions": self._positions(),
            "trading_state": {
                "state": str(state.get("state", "ACTIVE" if state == {} else "UNKNOWN")),
                "reason": str(state.get("reason", "")),
                "source": str(state.get("source", "")),
                "since_wall_ns": int(state.get("since_wall_ns", 0) or 0),
            },
            "kill_switch": state.get("state") == "HALTED" and state.get("source") == "operator",
            "venues": read_states(self.venues) if self.venues is not None else [],
            # live venues' figures (exec writes them once a second; [] for the simulated one)
            "venue_stats": read_stats(self.venue_stats) if self.venue_stats is not None else [],
        }

    def alive(self) -> bool:
        """Is the engine that created these regions still running?"""
        return self.health is not None and pid_alive(self.health.region.creator_pid)

    def _workers(self) -> list[dict[str, Any]]:
        assert self.health is not None
        now = time.monotonic_ns()
        out = []
        for name in self.workers:
            row = self.health.read(ALL_WORKERS.index(name))
            pid, hb = int(row["pid"]), int(row["heartbeat_ns"])
            inc = int(row["incarnation"])
            cpu_pct, core = self._cpu(pid)
            out.append(
                {
                    "name": name,
                    "pid": pid,
                    "state": HEALTH_STATES.get(int(row["state"]), str(int(row["state"]))),
                    "heartbeat_age_s": (now - hb) / 1e9 if hb else None,
                    "incarnation": inc,
                    "restarts": inc,  # the supervisor starts incarnation n+1 for each restart
                    "processed": int(row["processed"]),
                    "core": core,
                    "cpu_pct": cpu_pct,
                }
            )
        return out

    def _cpu(self, pid: int) -> tuple[float | None, int | None]:
        """(CPU % since the previous snapshot, the core it last ran on); None when unknown
        (the first snapshot of a process measures nothing yet)."""
        if pid <= 0:
            return None, None
        p = self._procs.get(pid)
        try:
            if p is None:
                p = self._procs[pid] = psutil.Process(pid)
                p.cpu_percent(None)  # the baseline
                pct = None
            else:
                pct = p.cpu_percent(None)
            core = p.cpu_num() if hasattr(p, "cpu_num") else None
            return pct, core
        except (psutil.Error, ProcessLookupError):
            self._procs.pop(pid, None)
            return None, None

    def cpu_times(self) -> dict[str, dict[str, float]]:
        """Per worker: CPU seconds (user + system) and context switches (voluntary: wake-ups
        from a sleep; involuntary: preemptions) of its current process."""
        assert self.health is not None
        out: dict[str, dict[str, float]] = {}
        for name in self.workers:
            pid = int(self.health.read(ALL_WORKERS.index(name))["pid"])
            if pid <= 0:
                continue
            try:
                p = self._procs.get(pid)
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)  # the baseline of ``_cpu``'s next reading
                with p.oneshot():
                    t, cs = p.cpu_times(), p.num_ctx_switches()
                out[name] = {
                    "cpu_s": t.user + t.system,
                    "voluntary": cs.voluntary,
                    "involuntary": cs.involuntary,
                }
            except (psutil.Error, ProcessLookupError):
                continue
        return out

    def _rings(self) -> list[dict[str, Any]]:
        out = []
        for name, ring in self.rings.items():
            pub = ring.published_pos
            readers = []
            for s in ring.slots():
                lag = int(s["lag_bytes"])
                readers.append(
                    {
                        "name": s["name"],
                        "state": s["state"],
                        "gating": s["state"] == "gating",
                        "cursor": int(s["cursor"]),
                        "lag_bytes": lag,
                        "fill": min(1.0, lag / ring.capacity),
                        "received": int(s["received"]),
                        "missed": int(s["missed"]),
                    }
                )
            out.append(
                {
                    "name": name,
                    "capacity_bytes": ring.capacity,
                    "published": pub,
                    "messages": ring.published_seq,  # frames (rates: gekko top)
                    "closed": ring.closed,
                    "readers": readers,
                }
            )
        return out

    def _latency(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per stage (histogram name without ``_ns``): summary figures and exported buckets."""
        latency: dict[str, Any] = {}
        hists: dict[str, Any] = {}
        for worker, m in self.metrics.items():
            for hname, snap in m.snapshots().items():
                stage = hname.removesuffix("_ns")
                s = snap.summary()
                latency[stage] = {
                    "worker": worker,
                    "count": snap.count,
                    "sum_ns": int(snap.words[H_SUM]) if int(snap.words[H_COUNT]) else 0,
                    **{f"{k}_ns": v for k, v in s.items() if k.startswith("p") or k == "max"},
                }
                hists[stage] = histogram_buckets(snap)
        return latency, hists

    def _positions(self) -> list[dict[str, Any]]:
        assert self.positions is not None
        rows = {int(r["instrument_id"]): r for r in self.positions.read_all()}
        out = []
        for iid, sym, venue, tick, lot in self._ins:
            r = rows.get(iid)
            if r is None:
                continue
            qty, mark = int(r["position"]), int(r["mark_px"])
            out.append(
                {
                    "instrument": sym,
                    "instrument_id": iid,
                    "venue": venue,
                    "qty": qty,
                    "avg_px": float(r["avg_px"]) * tick,
                    "mark_px": mark * tick,
                    "exposure": qty * lot * mark * tick,
                    "fills": int(r["fills"]),
                    "realized": float(r["realized"]),
                    "unrealized": float(r["unrealized"]),
                    "fees": float(r["fees"]),
                }
            )
        return out
