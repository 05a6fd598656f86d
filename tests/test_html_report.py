"""The HTML report (ops/html_report.py): what a run and a backtest write, checked in a real
headless Chromium (no console message, every chart drawn with data, a screenshot kept as the
test's artifact), and ``gekko report RUN_ID`` rebuilding the same figures from PostgreSQL."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ops.report_charts import W, minmax_reduce
from tests.test_engine_e2e import gekko, set_key, write_config

MAX_LOTS = 30  # a small position limit: risk refuses some orders, so risk events exist


def _config(tmp_path: Path, eid: str, dsn: str = "", events: int = 5000) -> Path:
    """The default config, inference off (fewer processes), risk events guaranteed."""
    cfg = write_config(tmp_path, eid, market=f"max_events = {events}\nrate_hz = 4000.0")
    text = set_key(cfg.read_text(), "inference", "enabled", "false")
    text = set_key(text, "risk", "max_position_lots", str(MAX_LOTS))
    if dsn:
        text = set_key(text, "storage.postgres", "mode", f'"{dsn}"')
    cfg.write_text(text)
    return cfg


# --- the browser ---------------------------------------------------------------------------------
def chromium() -> str:
    for c in ("/usr/bin/chromium", shutil.which("chromium")):
        if c and Path(c).is_file():
            return c
    pytest.skip("no Chromium: /usr/bin/chromium (Debian's chromium package) is not installed")


def render_in_chromium(page: Path, shot: Path) -> tuple[str, list[str], set[str]]:
    """(the DOM after Chromium parsed and laid out the page, every console message, every URL
    the page itself asked for); writes a screenshot. Name resolution is mapped to nothing, so
    nothing leaves the machine; the browser's net log says what the page tried to load (its
    requests carry the file page's opaque origin, "null"; the browser's own, "not an origin")."""
    profile = tempfile.mkdtemp(prefix="gkchr")
    netlog = Path(profile) / "net.json"
    try:
        r = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--window-size=1100,3000",
                f"--screenshot={shot}",
                f"--log-net-log={netlog}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        requested = page_requests(netlog.read_text())
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln], requested


def page_requests(netlog: str) -> set[str]:
    """The URLs a page asked for, from a Chromium net log (which may end unterminated)."""
    import json

    text = netlog.rstrip().rstrip(",")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # cut off after an event: close the events list
        log = json.loads(text + "]}")
    return {
        p["url"]
        for e in log.get("events", [])
        if (p := e.get("params") or {}).get("url")
        and p.get("initiator") not in (None, "not an origin")
        and not p["url"].startswith("file:")
    }


class _Charts(HTMLParser):
    """Each ``svg.chart``: its data-points and the data elements inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict[str, Any]] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and a.get("class") == "chart":
            self._in = True
            self.charts.append(
                {"title": a.get("aria-label"), "points": int(a["data-points"] or 0), "data": 0}
            )
        elif self._in and tag == "path" and a.get("class") == "series":
            n = len(re.findall(r"[ML]\s*-?[\d.]+,-?[\d.]+", a.get("d") or ""))
            self.charts[-1]["data"] += n if n >= 2 else 0
        elif self._in and (
            (tag == "rect" and a.get("class") == "bar")
            or (tag == "g" and a.get("class") == "marker")
        ):
            self.charts[-1]["data"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._in = False


def charts_of(dom: str) -> list[dict[str, Any]]:
    p = _Charts()
    p.feed(dom)
    return p.charts


def tables_of(page: str) -> dict[str, list[list[str]]]:
    """The report's figures, attribution, analytics and risk tables, as rows of cell texts."""
    out = {}
    for cls in ("figures", "attribution", "analytics", "risk-kinds"):
        m = re.search(rf'<table class="{cls}">(.*?)</table>', page, re.S)
        if m:
            rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
            out[cls] = [re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.S) for r in rows]
    return out


def test_chromium_reports_a_console_error_and_a_network_load() -> None:
    """The check itself: a page with a script error or a remote image is caught."""
    d = Path(tempfile.mkdtemp(prefix="gkbad"))
    try:
        bad = d / "bad.html"
        bad.write_text(
            '<html><body><script>nope();</script><img src="http://example.invalid/x.png">'
        )
        _, console, requested = render_in_chromium(bad, d / "bad.png")
        assert any("nope is not defined" in c for c in console), console
        assert requested == {"http://example.invalid/x.png"}
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- one real run, with its record in PostgreSQL --------------------------------------------------
@pytest.fixture(scope="module")
def recorded_run(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import psycopg

    tmp = tmp_path_factory.mktemp("report_run")
    eid = "t" + uuid.uuid4().hex[:8]
    name = "t" + uuid.uuid4().hex[:12]
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        cfg = _config(tmp, eid, pg_server.get_uri(name))
        r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "60", "--quiet")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "report: " in r.stdout
        yield tmp
    finally:
        from shm.region import list_regions

        assert not list_regions(eid)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_run_report_renders_in_chromium_with_every_chart_drawn(recorded_run: Path) -> None:
    import json

    page = recorded_run / "var" / "last_run" / "report.html"
    summary = json.loads((recorded_run / "var" / "last_run" / "summary.json").read_text())
    text = page.read_text()
    assert not re.search(r"<script|\bsrc=|href=\"?http|url\(", text)  # nothing to fetch or run
    shot = recorded_run / "report.png"
    dom, console, requested = render_in_chromium(page, shot)
    print(f"\nreport screenshot (artifact): {shot}")
    assert console == [] and requested == set()
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    charts = charts_of(dom)
    titles = [c["title"] for c in charts]
    for want in ("Equity", "Drawdown", "Position", "P&L by strategy", "tick_to_order"):
        assert any(want in t for t in titles), (want, titles)
    traded = [s for s, n in summary["fills_by_instrument"].items() if n]
    for sym in traded:  # each instrument that traded has its price chart, its fills on it
        assert any(t.startswith(f"{sym}: mark price and") for t in titles), (sym, titles)
    for c in charts:
        assert c["points"] > 0 and c["data"] > 0, c
    tables = tables_of(dom)
    assert summary["risk_events"] > 0
    assert sum(int(n) for _, n in tables["risk-kinds"][1:]) == summary["risk_events"]
    figures = dict(tables["figures"][1:])
    assert figures["fills"] == figures["fills shown"] == str(summary["fills"])
    names = [r[0] for r in tables["attribution"][1:]]
    assert len(names) == len(summary["pnl_by_strategy"]) > 0
    assert set(names) <= {"MarketMaker", "MomentumTaker", "ForecastTaker"}
    assert "max_position_lots = 30" in text  # the configuration used


def test_gekko_report_rebuilds_the_same_figures_from_postgres(recorded_run: Path) -> None:
    import json

    summary = json.loads((recorded_run / "var" / "last_run" / "summary.json").read_text())
    out = recorded_run / "rebuilt.html"
    cfg = recorded_run / "config.toml"
    r = gekko("report", str(summary["run_id"]), "--config", str(cfg), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    own = (recorded_run / "var" / "last_run" / "report.html").read_text()
    rebuilt = out.read_text()
    assert "rebuilt from PostgreSQL" in rebuilt and "written by the run" in own
    assert tables_of(rebuilt) == tables_of(own)
    # the same charts with the same data: fills and risk events from their tables
    assert [(c["title"], c["points"]) for c in charts_of(rebuilt)] == [
        (c["title"], c["points"]) for c in charts_of(own)
    ]
    r = gekko("report", "12345", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 1 and "run 12345 has no report" in r.stderr


# --- backtests and the pieces ---------------------------------------------------------------------
def test_a_backtest_writes_its_report_beside_its_json_and_html_false_writes_none(
    tmp_path: Path,
) -> None:
    from ops.cli import main

    cfg = _config(tmp_path, "t" + uuid.uuid4().hex[:8])
    bt = ["backtest", "--config", str(cfg), "--events", "4000"]
    assert main([*bt, "--json", str(tmp_path / "bt.json")]) == 0
    page = (tmp_path / "bt.html").read_text()
    charts = charts_of(page)
    assert all(c["points"] > 0 and c["data"] > 0 for c in charts) and len(charts) >= 6
    assert "Gekko backtest report" in page and "wall_per_tick" in page
    cfg.write_text(set_key(cfg.read_text(), "report", "html", "false"))
    assert main(bt) == 0
    assert not (tmp_path / "var" / "last_backtest").exists()


def test_a_million_points_draw_in_two_per_pixel_column_and_keep_every_spike() -> None:
    x = np.arange(1_000_000, dtype=np.int64) * 1000
    y = np.sin(np.arange(x.size) / 5000.0)
    y[123_457] = 50.0  # one spike up, one down
    y[876_543] = -50.0
    rx, ry = minmax_reduce(x, y, float(x[0]), float(x[-1]), W)
    assert rx.size <= 2 * W and np.all(np.diff(rx) > 0)
    assert 50.0 in ry and -50.0 in ry


def test_what_the_page_shows_is_escaped_and_secrets_are_masked(tmp_path: Path) -> None:
    from ops.html_report import render
    from ops.report_data import ReportData, config_text

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[storage.postgres]\nmode = "postgresql://gekko:hunter2@db/gekko"\n')
    text = config_text(type("C", (), {"source_path": str(cfg_file)})())
    assert "hunter2" not in text and "db/gekko" in text
    d = ReportData(
        kind="run",
        engine_id="x",
        run_id=1,
        source="run",
        instruments={1: {"symbol": "A<B", "tick_size": 0.01}},
        strategies={1: "s"},
        summary={"fills": 2, "pnl_by_strategy": {}, "analytics": {}},
        equity={"ts": [0, 10, 20], "equity": [1.0, 2.0, 1.5], "marks": {"1": [100, 101, 99]}},
        fills={
            "ts": [5, 15],
            "instrument_id": [1, 1],
            "side": [1, -1],
            "px": [100, 101],
            "qty": [1, 1],
            "strategy": [1, 1],
        },
        risk_events=[
            {
                "ts": 12,
                "kind": "ORDER_REJECTED",
                "instrument_id": 1,
                "reason": "<script>alert(1)</script>",
            }
        ],
        latency={},
        config_text=text,
    )
    page = render(d)
    assert "<script" not in page and "&lt;script&gt;" in page and "A&lt;B" in page
    assert [c["title"] for c in charts_of(page)][:3] == [
        "Equity (base currency); risk events dashed",
        "Drawdown from the running peak (%)",
        "A<B: mark price and 2 fills",
    ]


def test_axis_labels_tell_neighbouring_ticks_apart() -> None:
    from ops.report_charts import nice_ticks, tick_labels

    for lo, hi in ((999_900.0, 1_000_010.0), (189.97, 190.05), (-0.015, 0.0), (1.0, 12.0)):
        labels = tick_labels(nice_ticks(lo, hi, 5))
        assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert tick_labels([0.0, 500_000.0, 1_000_000.0]) == ["0.0M", "0.5M", "1.0M"]
