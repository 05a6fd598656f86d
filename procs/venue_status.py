"""Venue states in shared memory: exec writes them, the supervisor shows and audits them.

Exec is where a live venue's state is known (``engine.venues.reconciled.ReconciledVenue``:
connected / resyncing / banned / halted / down, with a reason). Every operator view needs it
without asking exec anything: the status line and ``gekko status`` (through the supervisor's
control socket) read the ``venues`` seqlock table, one row per ``[[venues]]`` entry in config
order; the supervisor audits each change (``venue.state``). A row whose ``state`` is 0 belongs
to a venue without a state (the simulated exchange): nothing is shown for it.

Exec also logs what reconciliation did (``ReconciledVenue.take_notes``) and hands the operator's
kill / resume to the live venues: a kill cancels, at each venue, the orders open there that
exec's record does not hold (exec cancels its own through the ordinary path); a resume lifts a
reconciliation halt.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.venue_state import VenueState, VenueStatus

log = logging.getLogger("gekko.venues")

NAME_LEN = 32
REASON_LEN = 240
VENUE_DTYPE = np.dtype(
    [
        ("name", f"S{NAME_LEN}"),
        ("state", "<i8"),  # engine.venue_state.VenueState; 0: no state (simulated)
        ("since_ns", "<i8"),  # time.monotonic_ns of the last change
        ("changes", "<i8"),
        ("reason", f"S{REASON_LEN}"),
    ]
)
TABLE = "venues"

#: each live venue's figures for the exporter (``ReconciledVenue.venue_stats``), one row per
#: ``[[venues]]`` entry like ``TABLE``; exec rewrites them at most once a second
STATS_TABLE = "vstats"
STATS_DTYPE = np.dtype(
    [
        ("name", f"S{NAME_LEN}"),
        ("updated_ns", "<i8"),  # time.monotonic_ns of the write; 0: no figures (simulated)
        ("reconnects", "<i8"),
        ("resyncs", "<i8"),
        ("budget_left", "<f8"),
        ("http_429", "<i8"),
        ("http_418", "<i8"),
        ("clock_offset_ms", "<i8"),
        ("round_trip_ns", "<i8"),
        ("in_flight", "<i8"),
        ("oldest_sent_ns", "<i8"),
    ]
)
STATS_EVERY_NS = 1_000_000_000


def venue_names(cfg: Any) -> list[str]:
    """The table's rows: the ``[[venues]]`` names in config order (``["sim"]`` without any)."""
    names = [v.name for v in (getattr(cfg, "venues", None) or [])]
    return names or ["sim"]


def _clip(text: str, n: int) -> bytes:
    b = text.encode("utf-8", "replace")[:n]
    return b.decode("utf-8", "ignore").encode()  # never half a character


def live_venues(venue: Any) -> list[Any]:
    """The venues with a state inside exec's venue (itself, or a router's)."""
    inner = getattr(venue, "venues", None)
    parts = list(inner.values()) if isinstance(inner, dict) else [venue]
    return [v for v in parts if callable(getattr(v, "venue_status", None))]


class VenueStates:
    """Exec's side: each pass, the live venues' states into the table (on change) and the log."""

    def __init__(self, table: Any, names: list[str], venue: Any, stats: Any = None) -> None:
        self.table = table
        self.stats = stats  # the STATS_TABLE (None: figures not published)
        self.rows = {n: k for k, n in enumerate(names)}
        self.live = live_venues(venue)
        self.last: dict[str, VenueStatus] = {}
        self.changes: dict[str, int] = {}
        self._next_stats = 0

    def refresh(self) -> None:
        if self.stats is not None and self.live:
            self._publish_stats()
        for v in self.live:
            for note in v.take_notes():
                log.warning("venue %s", note)
            s: VenueStatus = v.venue_status()
            if self.last.get(s.venue) is s:
                continue
            prev = self.last.get(s.venue)
            self.last[s.venue] = s
            self.changes[s.venue] = self.changes.get(s.venue, 0) + 1
            lvl = logging.INFO if s.state == VenueState.CONNECTED else logging.WARNING
            if prev is None or prev.state != s.state or prev.reason != s.reason:
                log.log(lvl, "venue %s", s.line())
            row = self.rows.get(s.venue)
            if row is not None and self.table is not None:
                self.table.write(
                    row,
                    (
                        _clip(s.venue, NAME_LEN),
                        int(s.state),
                        s.since_ns,
                        self.changes[s.venue],
                        _clip(s.reason, REASON_LEN),
                    ),
                )

    def _publish_stats(self) -> None:
        """Each live venue's figures into the stats table, at most once a second."""
        now = time.monotonic_ns()
        if now < self._next_stats:
            return
        self._next_stats = now + STATS_EVERY_NS
        for v in self.live:
            get = getattr(v, "venue_stats", None)
            row = self.rows.get(getattr(v, "name", ""))
            if get is None or row is None:
                continue
            s = get(now)
            self.stats.write(
                row,
                (
                    _clip(s["venue"], NAME_LEN),
                    now,
                    s["reconnects"],
                    s["resyncs"],
                    s["budget_left"],
                    s["http_429"],
                    s["http_418"],
                    s["clock_offset_ms"],
                    s["round_trip_ns"],
                    s["in_flight"],
                    s["oldest_sent_ns"],
                ),
            )

    def kill(self, now_ns: int) -> list[Any]:
        out: list[Any] = []
        for v in self.live:
            out += v.kill(now_ns)
        return out

    def resume(self, now_ns: int) -> None:
        for v in self.live:
            v.resume(now_ns)


def read_states(table: Any) -> list[dict[str, Any]]:
    """The rows with a state, as dicts (for the status line, ``gekko status``, the audit)."""
    out = []
    for r in table.read_all():
        st = int(r["state"])
        if st <= 0:
            continue
        try:
            word = VenueState(st).word
        except ValueError:
            word = f"state {st}"
        out.append(
            {
                "venue": bytes(r["name"]).decode("utf-8", "replace"),
                "state": word,
                "reason": bytes(r["reason"]).decode("utf-8", "replace"),
                "since_ns": int(r["since_ns"]),
                "changes": int(r["changes"]),
            }
        )
    return out


def read_stats(table: Any, now_ns: int | None = None) -> list[dict[str, Any]]:
    """The stats table's rows that exec has written, in base units (seconds, ratios)."""
    now = time.monotonic_ns() if now_ns is None else now_ns
    out = []
    for r in table.read_all():
        if int(r["updated_ns"]) <= 0:
            continue
        oldest = int(r["oldest_sent_ns"])
        out.append(
            {
                "venue": bytes(r["name"]).decode("utf-8", "replace"),
                "reconnects": int(r["reconnects"]),
                "resyncs": int(r["resyncs"]),
                "budget_left": float(r["budget_left"]),
                "http_429": int(r["http_429"]),
                "http_418": int(r["http_418"]),
                "clock_offset_s": int(r["clock_offset_ms"]) / 1e3,
                "order_rtt_s": int(r["round_trip_ns"]) / 1e9,
                "in_flight": int(r["in_flight"]),
                "oldest_in_flight_s": max(0, now - oldest) / 1e9 if oldest else 0.0,
                "age_s": max(0, now - int(r["updated_ns"])) / 1e9,
            }
        )
    return out


def status_words(states: list[dict[str, Any]], md: str = "") -> str:
    """``venues binanceus:connected kraken:HALTED md:connected`` (a state that takes no orders
    in capitals; ``md``: the feed's live market data); '' when nothing has a state."""
    words = [
        f"{s['venue']}:{s['state'] if s['state'] == 'connected' else s['state'].upper()}"
        for s in states
    ]
    if md:
        words.append(f"md:{md if md == 'connected' else md.upper()}")
    return "venues " + " ".join(words) if words else ""


#: the feed's ``md_state`` counter (procs/feed.py) as a word
MD_STATES = {0: "connected", 1: "resyncing", 2: "down"}


def md_state_word(cfg: Any, counters: dict[str, int]) -> str:
    """The live market data's state ('' when the feed reads no real venue: a simulated market
    has none). Beside other venues, a real venue that is not connected is named
    ("kraken down", "binanceus down, kraken resyncing")."""
    venues = getattr(cfg, "venues", None) or []
    if not any(getattr(v, "kind", "sim") != "sim" for v in venues):
        return ""
    word = MD_STATES.get(int(counters.get("md_state", 2)), "down")
    if len(venues) < 2 or word == "connected":
        return word
    each = md_states(venue_names(cfg), int(counters.get("md_states", 0)))
    return ", ".join(f"{n} {st}" for n, st in each.items() if st != "connected") or word


def pack_md_states(names: list[str], states: dict[str, str]) -> int:
    """Each live venue's market-data state in one counter: two bits per ``[[venues]]`` row
    (``venue_names`` order; 0 = no live market data, else 1 + the ``md_state`` code)."""
    codes = {w: c for c, w in MD_STATES.items()}
    out = 0
    for k, n in enumerate(names[:31]):
        st = states.get(n)
        if st is not None:
            out |= (1 + codes.get(st, 2)) << (2 * k)
    return out


def md_states(names: list[str], packed: int) -> dict[str, str]:
    """``pack_md_states`` read back: venue name -> state, for the venues with live data."""
    out = {}
    for k, n in enumerate(names[:31]):
        code = (packed >> (2 * k)) & 3
        if code:
            out[n] = MD_STATES[code - 1]
    return out


def create_table(engine_id: str, cfg: Any) -> Any:
    """The supervisor's: the table with one named row per venue."""
    from shm.seqlock import SeqlockTable

    names = venue_names(cfg)
    t = SeqlockTable.create(engine_id, TABLE, VENUE_DTYPE, len(names))
    for k, n in enumerate(names):
        t.write(k, (_clip(n, NAME_LEN), 0, 0, 0, b""))
    return t


def create_stats_table(engine_id: str, cfg: Any) -> Any:
    """The supervisor's: the venue figures table, one named row per venue."""
    from shm.seqlock import SeqlockTable

    names = venue_names(cfg)
    t = SeqlockTable.create(engine_id, STATS_TABLE, STATS_DTYPE, len(names))
    for k, n in enumerate(names):
        t.write(k, {"name": _clip(n, NAME_LEN)})
    return t


def attach_stats_table(engine_id: str) -> Any:
    """Exec's; None when the supervisor made none (the figures are then not published)."""
    from shm.seqlock import SeqlockTable

    try:
        return SeqlockTable.attach(engine_id, STATS_TABLE, STATS_DTYPE)
    except Exception as exc:  # a view, never a reason to stop trading
        log.error("exec: no venue stats table (%s): venue figures are not exported", exc)
        return None


def attach_table(engine_id: str) -> Any:
    """Exec's; None when the supervisor made none (an engine started by an older one)."""
    from shm.seqlock import SeqlockTable

    try:
        return SeqlockTable.attach(engine_id, TABLE, VENUE_DTYPE)
    except Exception as exc:  # a view, never a reason to stop trading
        log.error("exec: no venues table (%s): venue states are only logged", exc)
        return None


# --- the balance baseline across exec restarts ----------------------------------------------------
def baseline_path(cfg: Any, engine_id: str, run_id: int, venue: str) -> Path | None:
    """Where a live venue's baseline of run ``run_id`` is kept (None outside a run)."""
    if not run_id:
        return None
    return Path(cfg.engine.var_dir) / "venue" / f"{engine_id}-{run_id}-{venue}.baseline.json"


def save_baseline(path: Path, baseline: dict[str, float]) -> None:
    """Written whole and renamed (a crash mid-write leaves the old one or none)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(baseline, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a restart then takes a new baseline: said, never fatal
        log.error("exec: venue baseline not kept at %s (%s)", path, exc)


def load_baseline(path: Path) -> dict[str, float] | None:
    """The kept baseline; None (a new one is taken, and the log says so) if unreadable."""
    try:
        data = json.loads(path.read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError) as exc:
        log.error("exec: venue baseline at %s unreadable (%s): a new one is taken", path, exc)
        return None
