"""What must hold after a chaos run, whatever was injected. Each check is a function returning
its violations (empty: it held), each violation one sentence naming what broke with the numbers.

Sources compared: exec's positions (summary.json ``positions[*].position``, read from the
positions table exec writes), the supervisor's record of the events ring (``fills.jsonl``,
``orders.jsonl``), PostgreSQL (``fills`` and ``positions`` of the run, read after the run from
the embedded cluster under var/pg) and the simulated venue's own durable record
(``var/venue/sim-<id>-<run>.venue``: every order it accepted, every fill it made).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.chaos.harness import ChaosResult, cleanup_orphans, max_intent_age_ms

CRASH_FREE_REASONS = ("exited with code -9",)  # what our SIGKILL looks like to the supervisor


@dataclass
class Record:
    """What the run left behind, loaded once for every check."""

    summary: dict[str, Any] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    run_id: int = 0
    venue_orders: list[Any] = field(default_factory=list)
    venue_fills: list[Any] = field(default_factory=list)
    venue_rejects: list[Any] = field(default_factory=list)
    pg_fills: list[tuple[int, int, int, int]] | None = None  # fill_id, instrument, side, qty
    pg_positions: dict[int, int] | None = None
    problems: list[str] = field(default_factory=list)  # what could not be read


# --- loading -------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def load_record(res: ChaosResult) -> Record:
    rec = Record()
    last = res.var / "last_run"
    try:
        rec.summary = json.loads((last / "summary.json").read_text())
        rec.fills = _jsonl(last / "fills.jsonl")
        rec.orders = _jsonl(last / "orders.jsonl")
    except (OSError, ValueError) as exc:
        rec.problems.append(f"the run's record (var/last_run) is missing or unreadable: {exc}")
    venues = sorted((res.var / "venue").glob(f"sim-{res.engine_id}-*.venue"))
    if venues:
        rec.run_id = int(venues[-1].stem.rsplit("-", 1)[1])
        _load_venue(venues[-1], rec)
    else:
        rec.problems.append("no simulated-venue record under var/venue")
    return rec


def _load_venue(path: Path, rec: Record) -> None:
    from engine.messages import NewOrder, OrderPartiallyFilled, OrderRejected
    from engine.venues.sim_record import read_frames

    for ev in read_frames(path.read_bytes())[0]:
        if isinstance(ev, NewOrder):
            rec.venue_orders.append(ev)
        elif isinstance(ev, OrderPartiallyFilled):  # OrderFilled included
            rec.venue_fills.append(ev)
        elif isinstance(ev, OrderRejected):
            rec.venue_rejects.append(ev)


def load_postgres(res: ChaosResult, rec: Record) -> None:
    """Start the run's cluster again (the engine stopped it) and read the run's rows."""
    from ops.store.pg import EmbeddedPostgres

    pg_dir = res.var / "pg"
    if not (pg_dir / "PG_VERSION").exists() or not rec.run_id:
        rec.problems.append("no PostgreSQL cluster or run id to read")
        return
    server = EmbeddedPostgres(pg_dir)
    try:
        import psycopg

        with psycopg.connect(server.start(), connect_timeout=10) as conn:
            rec.pg_fills = [
                tuple(r)
                for r in conn.execute(
                    "SELECT fill_id, instrument_id, side, qty FROM fills WHERE run_id = %s",
                    (rec.run_id,),
                )
            ]
            rec.pg_positions = dict(
                conn.execute(
                    "SELECT instrument_id, position FROM positions WHERE run_id = %s",
                    (rec.run_id,),
                ).fetchall()
            )
    except Exception as exc:
        rec.problems.append(f"PostgreSQL could not be read after the run: {exc}")
    finally:
        with contextlib.suppress(Exception):
            server.stop()


# --- the checks ----------------------------------------------------------------------------------
def check_ran_to_end(res: ChaosResult, rec: Record) -> list[str]:
    """Running until its planned end, then a clean exit 0 that says so."""
    if not res.started:
        return ["the engine never reported running"]
    out = []
    reason = rec.summary.get("stop_reason", "?")
    if res.ran_s < res.seconds - 1.0 or not str(reason).startswith("--duration"):
        out.append(
            f"the engine stopped {res.ran_s:.1f}s into a {res.seconds:g}s run: "
            f"stop reason {reason!r}"
        )
    if res.rc != 0:
        out.append(f"exit code {res.rc} (stop reason {reason!r})")
    if res.rc == 0 and rec.summary and not rec.summary.get("consistent", False):
        out.append("exit code 0 although the summary says positions are NOT consistent with fills")
    return out


def check_restarts_explained(res: ChaosResult, rec: Record) -> list[str]:
    """Every restart was caused by a fault, and every restarted worker traded again."""
    out = []
    kills = Counter(f.target for f in res.faults if f.kind == "kill")
    stops = Counter(f.target for f in res.faults if f.kind == "stop" and f.hold_s > 5.0)
    seen: Counter[str] = Counter()
    for r in rec.summary.get("restarts", []):
        w, why = r.get("worker"), str(r.get("reason"))
        if why in CRASH_FREE_REASONS:
            seen[w] += 1
            if seen[w] > kills[w]:
                out.append(
                    f"{w} was SIGKILLed at {r.get('at_s')}s by someone else than the harness"
                )
        elif why == "hung" and stops[w]:
            stops[w] -= 1
        else:
            out.append(f"{w} {why} at {r.get('at_s')}s: a crash no fault explains")
    for r in res.recoveries:
        if r.superseded or (not r.t_restart and r.fault.find("SIGSTOP") >= 0):
            continue
        if not r.t_restart:
            out.append(f"{r.worker} was never restarted after '{r.fault}'")
        elif not r.t_working:
            out.append(
                f"{r.worker} restarted (pid {r.new_pid}) after '{r.fault}' but "
                f"{'never became ready' if not r.t_ready else 'never worked again'} before the end"
            )
    return out


def _signed(rows: list[tuple[int, int, int]]) -> dict[int, int]:
    pos: dict[int, int] = {}
    for iid, side, qty in rows:
        pos[iid] = pos.get(iid, 0) + side * qty
    return pos


def check_positions(res: ChaosResult, rec: Record) -> list[str]:
    """exec's positions = the sum of the recorded fills = PostgreSQL's = the venue's."""
    per = rec.summary.get("positions", {})
    sources: dict[str, dict[int, int]] = {
        "exec": {v["instrument_id"]: v["position"] for v in per.values()},
        "fills.jsonl": _signed([(f["instrument_id"], f["side"], f["fill_qty"]) for f in rec.fills]),
        "venue record": _signed([(f.instrument_id, f.side, f.fill_qty) for f in rec.venue_fills]),
    }
    if rec.pg_fills is not None:
        sources["PostgreSQL fills"] = _signed([r[1:] for r in rec.pg_fills])
    if rec.pg_positions is not None:
        sources["PostgreSQL positions"] = rec.pg_positions
    ids = sorted({i for s in sources.values() for i in s})
    out = []
    for iid in ids:
        got = {name: s.get(iid, 0) for name, s in sources.items()}
        if len(set(got.values())) > 1:
            out.append(
                f"instrument {iid}: positions differ: "
                + ", ".join(f"{k} {v}" for k, v in got.items())
            )
    return out


def check_fills_once(res: ChaosResult, rec: Record) -> list[str]:
    """Every venue fill is recorded exactly once, in the run's record and in PostgreSQL."""
    out = []
    ids = [f["fill_id"] for f in rec.fills]
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        out.append(f"{len(dup)} fill ids twice in fills.jsonl: {dup[:10]}")
    venue = {f.fill_id for f in rec.venue_fills}
    for name, got in (("fills.jsonl", set(ids)), ("PostgreSQL", None)):
        if name == "PostgreSQL":
            if rec.pg_fills is None:
                continue
            got = {r[0] for r in rec.pg_fills}
        lost, extra = sorted(venue - got), sorted(got - venue)
        if lost:
            out.append(f"{len(lost)} of {len(venue)} venue fills missing from {name}: {lost[:10]}")
        if extra:
            out.append(f"{len(extra)} fills in {name} the venue never made: {extra[:10]}")
    return out


def check_client_order_ids(res: ChaosResult, rec: Record) -> list[str]:
    """No client order id reached the venue twice."""
    out = []
    dup = sorted(
        k for k, n in Counter(o.client_order_id for o in rec.venue_orders).items() if n > 1
    )
    if dup:
        out.append(f"{len(dup)} client order ids accepted twice by the venue: {dup[:10]}")
    again = [
        r.client_order_id for r in rec.venue_rejects if "duplicate client_order_id" in r.reason
    ]
    if again:
        out.append(f"{len(again)} orders sent again with a used client order id: {again[:10]}")
    return out


def check_staleness(res: ChaosResult, rec: Record) -> list[str]:
    """No order approved on data older than ``[risk] max_intent_age_ms``."""
    limit_ms = max_intent_age_ms(res.config)
    late = [
        (o["ts_approved"] - o["ts_origin"]) / 1e6
        for o in rec.orders
        if o.get("type") in ("NewOrder", "ReplaceOrder")
        and o.get("ts_approved")
        and o.get("ts_origin")
    ]
    late = sorted(a for a in late if a > limit_ms)
    if not late:
        return []
    return [
        f"{len(late)} orders approved on data older than max_intent_age_ms = {limit_ms:g} "
        f"(worst {late[-1]:.0f} ms)"
    ]


def check_no_orphans(res: ChaosResult, rec: Record) -> list[str]:
    """Every process the engine started (workers, postgres, redis) is gone."""
    out = []
    for pid, (created, what) in sorted(res.seen.items()):
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{what} (pid {pid}) still running after the engine exited")
    var = str(res.var)
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (var in cmd or f"--engine-id {res.engine_id}" in cmd) and p.info["pid"] not in res.seen:
            out.append(f"process {p.info['pid']} of this engine still running: {cmd[:120]}")
    return out


def check_no_regions(res: ChaosResult, rec: Record) -> list[str]:
    """No shared-memory region or semaphore of the engine id left in /dev/shm."""
    from shm.region import list_regions, list_semaphores

    left = list_regions(res.engine_id) + list_semaphores(res.engine_id)
    return [f"{len(left)} regions/semaphores left in /dev/shm: {left[:8]}"] if left else []


def check_audit_complete(res: ChaosResult, rec: Record) -> list[str]:
    """Every operator command and restart left its audit record (the supervisor logs
    "audit: <action> not recorded (<why>)" when one is lost)."""
    lost = [ln for ln in res.stderr.splitlines() if "audit:" in ln and "not recorded" in ln]
    if not lost:
        return []
    return [f"{len(lost)} audit records lost, first: {lost[0].strip()[:300]}"]


CHECKS: list[Callable[[ChaosResult, Record], list[str]]] = [
    check_ran_to_end,
    check_restarts_explained,
    check_no_orphans,  # before PostgreSQL is started again to be read
    check_no_regions,
    check_positions,
    check_fills_once,
    check_client_order_ids,
    check_staleness,
    check_audit_complete,
]


def check_all(res: ChaosResult) -> None:
    """Run every check into ``res.violations``; then clean up what the engine left behind."""
    rec = load_record(res)
    for i, check in enumerate(CHECKS):
        if check is check_positions:  # the orphan check ran: PostgreSQL may be started to read
            kill = cleanup_orphans(res)
            if kill:
                res.events.append(f"after the run: killed leftovers {kill}")
            load_postgres(res, rec)
        res.violations.extend(check(res, rec))
        res.checks += 1
        del i
    res.violations.extend(rec.problems)
    _remove_regions(res.engine_id)


def _remove_regions(engine_id: str) -> None:
    import posix_ipc

    from shm.region import list_regions, list_semaphores

    for name in list_regions(engine_id):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_shared_memory(name)
    for name in list_semaphores(engine_id):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_semaphore(name)
