"""What one screen of ``gekko top`` shows, drawn from plain dicts: no shm, no socket, no terminal.

Why pure: the console's loop (ops/top.py) reads the engine (``EngineView.snapshot()``, the
supervisor's ``activity`` answer) and handles keys; everything drawn is a function of those dicts
and the previous snapshot (for rates), so a test can draw any state without an engine, and
``--once`` prints exactly the frame the live view shows. Rendered with rich; the keys of the
snapshot are ``EngineView.snapshot()``'s (ops/engine_view.py), those of the activity
ops/activity.py's.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

WIDE = 150  # columns from which panels sit side by side
STATE_STYLE = {"ACTIVE": "bold green", "REDUCING": "bold yellow", "HALTED": "bold red"}


@dataclass
class Frame:
    """Everything one screen is drawn from."""

    snap: dict[str, Any]  # EngineView.snapshot()
    prev: dict[str, Any] | None = None  # the snapshot before it (rates), None on the first
    activity: dict[str, Any] | None = None  # the supervisor's answer; None when it gave none
    activity_note: str = ""  # why there is no activity, when there is none
    prompt: str = ""  # a question waiting for y/n, or the last command's result
    stale_after_s: float = 5.0  # [supervisor] heartbeat_timeout_s
    width: int = 120
    extra: dict[str, Any] = field(default_factory=dict)


# --- figures -------------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fmt_us(ns: Any) -> str:
    """A latency in ns as µs (``-`` when none was measured)."""
    f = _num(ns)
    if f is None:
        return "-"
    us = f / 1000.0
    return f"{us:,.0f}µs" if us >= 1000 else f"{us:.1f}µs"


def fmt_bytes(n: Any) -> str:
    f = _num(n)
    if f is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(f) < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{f:.1f} GiB"  # pragma: no cover (the loop returns)


def fmt_rate(per_s: float | None, unit: str) -> str:
    if per_s is None:
        return "-"
    if unit == "B":
        return f"{fmt_bytes(per_s)}/s"
    return f"{per_s:,.0f}/s"


def fmt_money(v: Any) -> Text:
    f = _num(v)
    if f is None:
        return Text("-")
    return Text(f"{f:,.2f}", style="red" if f < 0 else "")


def fmt_fees(v: Any) -> str:
    """Fees paid (a negative figure: rebates earned), never coloured as a loss."""
    f = _num(v)
    return "-" if f is None else f"{f:,.2f}"


def fmt_px(v: Any) -> str:
    """A price with the decimals it has (up to 8), never rounded to a few digits."""
    f = _num(v)
    if f is None:
        return "-"
    text = f"{f:,.8f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def fmt_qty(v: Any) -> str:
    f = _num(v)
    if f is None:
        return "-"
    return f"{f:g}" if f != int(f) else f"{int(f):d}"


def _table(title: str, *cols: str, right: tuple[str, ...] = ()) -> Table:
    t = Table(
        title=title,
        title_style="bold cyan",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        expand=True,
        pad_edge=False,
    )
    for c in cols:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True)
    return t


# --- panels --------------------------------------------------------------------------------------
def header(f: Frame) -> Text:
    s = f.snap
    ts = s.get("trading_state") or {}
    state = str(ts.get("state", "?"))
    when = dt.datetime.fromtimestamp(float(s.get("ts") or 0), dt.UTC).strftime("%H:%M:%S UTC")
    t = Text.assemble(
        ("gekko top", "bold"),
        f"  engine {s.get('engine_id', '?')}",
        f"  run {f.activity.get('run_id')}" if f.activity else "",
        "  trading ",
        (state, STATE_STYLE.get(state, "bold")),
        "  kill switch ",
        ("ENGAGED", "bold white on red") if s.get("kill_switch") else ("off", "green"),
        f"  {when}",
    )
    phase = (f.activity or {}).get("phase", "running")
    if not s.get("alive", True):
        t.append("  ENGINE STOPPED", style="bold white on red")
    elif phase != "running":  # starting, or stopping: the figures are about to freeze
        t.append(f"  engine {phase}", style="bold yellow")
    t.append("   keys: k kill switch · r release · q quit", style="dim")
    return t


def processes(f: Frame) -> Table:
    t = _table(
        "Processes",
        "process",
        "pid",
        "state",
        "core",
        "cpu",
        "heartbeat",
        "restarts",
        right=("pid", "core", "cpu", "heartbeat", "restarts"),
    )
    for w in f.snap.get("workers") or []:
        age = _num(w.get("heartbeat_age_s"))
        if age is None:
            hb = Text("-", style="yellow")
        else:
            age = max(0.0, age)  # read a moment before the worker's own stamp
            hb = Text(f"{age:.1f}s ago", style="bold red" if age > f.stale_after_s else "")
        state = str(w.get("state", "?"))
        cpu = _num(w.get("cpu_pct"))
        core = w.get("core")
        restarts = int(w.get("restarts") or 0)
        t.add_row(
            str(w.get("name")),
            str(w.get("pid") or "-"),
            Text(state, style="" if state == "ready" else "yellow"),
            "-" if core is None else str(core),
            "-" if cpu is None else f"{cpu:.0f}%",
            hb,
            Text(str(restarts), style="yellow" if restarts else ""),
        )
    return t


def ring_rate(ring: dict[str, Any], prev: dict[str, Any] | None, dt_s: float) -> tuple[float, str]:
    """(rate, unit): frames a second where the snapshot counts them, else bytes a second."""
    key, unit = ("messages", "msg") if "messages" in ring else ("published", "B")
    if prev is None or dt_s <= 0 or key not in prev:
        return math.nan, unit
    return max(0.0, (int(ring[key]) - int(prev[key])) / dt_s), unit


def rings(f: Frame) -> Table:
    t = _table(
        "Rings",
        "ring",
        "rate",
        "published",
        "reader",
        "lag",
        "fill",
        "missed",
        right=("rate", "published", "lag", "fill", "missed"),
    )
    before = {r["name"]: r for r in (f.prev or {}).get("rings") or []}
    dt_s = float(f.snap.get("ts") or 0) - float((f.prev or {}).get("ts") or 0)
    for r in f.snap.get("rings") or []:
        rate, unit = ring_rate(r, before.get(r["name"]), dt_s)
        rate_s = fmt_rate(None if math.isnan(rate) else rate, unit)
        label = str(r["name"]) + (" (closed)" if r.get("closed") else "")
        readers = r.get("readers") or [{}]
        if len(readers) > 1 and not any(rd.get("lag_bytes") or rd.get("missed") for rd in readers):
            # an idle or caught-up ring takes one row, not one per reader
            readers = [{"name": f"all {len(readers)} readers", "lag_bytes": 0, "fill": 0.0}]
        for i, rd in enumerate(readers):
            fill = _num(rd.get("fill"))
            style = "" if fill is None or fill < 0.5 else ("yellow" if fill < 0.9 else "bold red")
            gating = "" if rd.get("gating", True) else " (non-gating)"
            missed = int(rd.get("missed") or 0)
            t.add_row(
                label if i == 0 else "",
                rate_s if i == 0 else "",
                fmt_bytes(r.get("published")) if i == 0 else "",
                f"{rd.get('name', '-')}{gating}",
                fmt_bytes(rd.get("lag_bytes")),
                Text("-" if fill is None else f"{fill * 100:.1f}%", style=style),
                Text(str(missed), style="yellow" if missed else ""),
            )
    return t


def _pct(stage: dict[str, Any], key: str) -> str:
    alt = {"p99.9_ns": "p999_ns"}
    return fmt_us(stage.get(key, stage.get(alt.get(key, ""))))


def latency(f: Frame) -> Table:
    cols = ("p50_ns", "p90_ns", "p99_ns", "p99.9_ns", "max_ns")
    t = _table(
        "Latency",
        "stage",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        right=("count", "p50", "p90", "p99", "p99.9", "max"),
    )
    for name, st in (f.snap.get("latency") or {}).items():
        t.add_row(name, f"{int(st.get('count') or 0):,}", *(_pct(st, c) for c in cols))
    return t


def risk(f: Frame) -> Table:
    s = f.snap
    ts = s.get("trading_state") or {}
    state = str(ts.get("state", "?"))
    t = Table.grid(padding=(0, 2))
    t.title, t.title_style, t.title_justify = "Risk", "bold cyan", "left"
    t.add_column(style="dim", no_wrap=True)
    t.add_column()
    since = int(ts.get("since_wall_ns") or 0)
    when = (
        dt.datetime.fromtimestamp(since / 1e9, dt.UTC).strftime(" since %Y-%m-%d %H:%M:%S UTC")
        if since
        else ""
    )
    t.add_row("trading state", Text.assemble((state, STATE_STYLE.get(state, "bold")), when))
    if ts.get("reason") or ts.get("source"):
        t.add_row("why", f"{ts.get('source', '')}: {ts.get('reason', '')}")
    t.add_row(
        "kill switch",
        Text("ENGAGED", style="bold white on red") if s.get("kill_switch") else Text("off"),
    )
    rc = (s.get("counters") or {}).get("risk") or {}
    figs = [f"{k} {int(rc[k]):,}" for k in ("approved", "rejected", "kills") if k in rc]
    if figs:
        t.add_row("risk checks", " · ".join(figs))
    c = (f.activity or {}).get("counts") or {}
    if c:
        t.add_row(
            "this run",
            f"orders {c.get('orders_new', 0):,} · fills {c.get('fills', 0):,} · rejects: risk "
            f"{c.get('risk_rejects', 0):,}, venue {c.get('venue_rejects', 0):,}",
        )
    return t


def venues(f: Frame) -> Table:
    t = _table("Venues", "venue", "state", "why")
    rows = f.snap.get("venues") or []
    for v in rows:
        st = str(v.get("state", "?"))
        t.add_row(
            str(v.get("venue")),
            Text(st, style="green" if st == "connected" else "bold red"),
            str(v.get("reason") or ""),
        )
    if not rows:
        t.add_row("-", "simulated", "no live venue in this run")
    return t


def positions(f: Frame) -> Table:
    t = _table(
        "Positions",
        "instrument",
        "venue",
        "qty",
        "avg px",
        "mark",
        "realized",
        "unrealized",
        "fees",
        right=("qty", "avg px", "mark", "realized", "unrealized", "fees"),
    )
    for p in f.snap.get("positions") or []:
        t.add_row(
            str(p.get("instrument")),
            str(p.get("venue") or ""),
            fmt_qty(p.get("qty")),
            fmt_px(round(_num(p.get("avg_px")) or 0.0, 4)),
            fmt_px(p.get("mark_px")),
            fmt_money(p.get("realized")),
            fmt_money(p.get("unrealized")),
            fmt_fees(p.get("fees")),
        )
    return t


def strategies(f: Frame) -> Table:
    t = _table(
        "P&L per strategy",
        "strategy",
        "fills",
        "realized",
        "unrealized",
        "fees",
        "net",
        "positions",
        right=("fills", "realized", "unrealized", "fees", "net"),
    )
    if f.activity is None:
        t.add_row(f.activity_note or "no answer from the supervisor", "", "", "", "", "", "")
        return t
    for s in f.activity.get("pnl_by_strategy") or []:
        t.add_row(
            str(s.get("strategy")),
            f"{int(s.get('fills') or 0):,}",
            fmt_money(s.get("realized")),
            fmt_money(s.get("unrealized")),
            fmt_fees(s.get("fees")),
            fmt_money(s.get("net")),
            Text(
                " · ".join(f"{k} {fmt_qty(v)}" for k, v in (s.get("positions") or {}).items()),
                overflow="ellipsis",
            ),
        )
    return t


def _side(side: Any) -> Text:
    return Text(str(side or ""), style="green" if side == "buy" else "red" if side else "")


def recent(f: Frame) -> list[Table]:
    """Recent orders, fills and rejects, newest first."""
    a = f.activity or {}
    o = _table(
        "Recent orders", "order", "strategy", "instrument", "side", "qty", "px", right=("qty", "px")
    )
    for r in reversed(a.get("orders") or []):
        o.add_row(
            str(r.get("kind", "")).removesuffix("Order").lower() or "?",
            str(r.get("strategy_id", "")),
            str(r.get("instrument", "")),
            _side(r.get("side")),
            fmt_qty(r.get("qty")) if "qty" in r else "",
            fmt_px(r["px"]) if "px" in r else "",
        )
    fl = _table(
        "Recent fills", "instrument", "side", "qty", "px", "fee", right=("qty", "px", "fee")
    )
    for r in reversed(a.get("fills") or []):
        fl.add_row(
            str(r.get("instrument", "")),
            _side(r.get("side")),
            fmt_qty(r.get("qty")),
            fmt_px(r.get("px")),
            f"{_num(r.get('fee')) or 0:.4f}",
        )
    rj = _table("Recent rejects", "by", "instrument", "reason")
    for r in reversed(a.get("rejects") or []):
        rj.add_row(
            str(r.get("source", "")),
            str(r.get("instrument", "")),
            Text(str(r.get("reason", "")), overflow="ellipsis"),
        )
    return [o, fl, rj]


# --- the screen ----------------------------------------------------------------------------------
def _row(*cells: RenderableType) -> Table:
    g = Table.grid(expand=True, padding=(0, 2))
    for _ in cells:
        g.add_column(ratio=1)
    g.add_row(*cells)
    return g


def render(f: Frame) -> RenderableType:
    """The whole screen: side by side from ``WIDE`` columns, stacked below."""
    parts: list[RenderableType] = [header(f)]
    if f.prompt:
        parts.append(Text(f.prompt, style="bold reverse"))
    if f.width >= WIDE:
        blocks: list[tuple[RenderableType, ...]] = [
            (processes(f), Group(risk(f), venues(f))),
            (rings(f), latency(f)),
            (positions(f), strategies(f)),
            tuple(recent(f)),
        ]
        parts.extend(_row(*b) for b in blocks)
    else:  # stacked: what a short terminal must not crop first
        parts += [processes(f), risk(f), latency(f), positions(f), strategies(f), venues(f)]
        parts += [rings(f), *recent(f)]
    return Group(*parts)
