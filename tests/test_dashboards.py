"""The Grafana dashboards, their provisioning and the Prometheus scrape config agree with what the
exporter serves (ops/metric_catalog.py), and docs/metrics.md's table is that catalog.

A dashboard query naming a metric the exporter does not serve, or a label its family lacks,
draws an empty panel without any error: only a check like this one finds it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ops.metric_catalog import BY_NAME, CATALOG, series_names
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml", reason="pyyaml (the test extra) is not installed")

GRAFANA = ROOT / "ops" / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
#: labels Prometheus itself adds to every scraped series
TARGET_LABELS = {"instance", "job", "deployment"}
SECTIONS = {"Latency", "Throughput", "P&L", "Risk", "Venues", "Processes"}

_METRIC = re.compile(r"\b(gekko_[a-z0-9_]+)")
_SELECTOR = re.compile(r"\b(gekko_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out += p.get("panels", [])  # a collapsed row holds its panels
    return out


def _exprs(d: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(d) for t in p.get("targets", []) if t.get("expr")]


def _family_of(series: str) -> Any:
    for suffix in ("_bucket", "_count", "_sum", ""):
        d = BY_NAME.get(series.removesuffix(suffix)) if suffix else BY_NAME.get(series)
        if d is not None:
            return d
    return None


def expr_problems(expr: str) -> list[str]:
    """What in one PromQL expression does not exist in the exporter's catalog."""
    problems = []
    names = set(_METRIC.findall(expr))
    if not names:
        problems.append(f"no gekko_ metric in {expr!r}")
    known = series_names()
    allowed = set(TARGET_LABELS)
    for n in names:
        if n not in known:
            problems.append(f"{n}: not a series the exporter serves")
            continue
        d = _family_of(n)
        allowed |= set(d.labels) | ({"le"} if d.kind == "histogram" else set())
    for n, body in _SELECTOR.findall(expr):
        d = _family_of(n)
        own = set(d.labels) | TARGET_LABELS | ({"le"} if d and d.kind == "histogram" else set())
        for label in _MATCHER.findall(body):
            if d is not None and label not in own:
                problems.append(f"{n}: no label {label!r}")
    for group in _GROUPING.findall(expr):
        for label in (x.strip() for x in group.split(",") if x.strip()):
            if label not in allowed:
                problems.append(f"grouping by {label!r}, a label none of {sorted(names)} has")
    return problems


def test_the_checker_catches_what_it_is_for() -> None:
    assert expr_problems('rate(gekko_fills_total{strategy="a"}[1m])') == []
    assert expr_problems("sum by (le) (rate(gekko_latency_seconds_bucket[1m]))") == []
    assert expr_problems("rate(gekko_filled_total[1m])")  # a misspelt name
    assert expr_problems('rate(gekko_fills_total{stage="a"}[1m])')  # a label it lacks
    assert expr_problems("sum by (reason) (gekko_fills_total)")  # grouping by a missing label
    assert expr_problems("sum by (le) (gekko_fills_total)")  # le on a counter


def test_there_are_dashboards_covering_every_section() -> None:
    assert DASHBOARDS, "no dashboard JSON under ops/deploy/grafana/dashboards"
    rows = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d.get("uid") and d.get("title"), path.name
        rows |= {p["title"] for p in _panels(d) if p["type"] == "row"}
        assert any(p["type"] != "row" for p in _panels(d)), path.name
    assert rows >= SECTIONS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_what_the_exporter_serves(path: Path) -> None:
    d = json.loads(path.read_text())
    exprs = _exprs(d)
    assert exprs
    problems = [p for e in exprs for p in expr_problems(e)]
    assert not problems, problems
    for v in d.get("templating", {}).get("list", []):
        names = _METRIC.findall(v.get("definition") or "")
        assert set(names) <= series_names(), v["name"]


def test_every_family_appears_on_a_dashboard() -> None:
    """A served metric no panel shows is either useless or forgotten."""
    shown = {
        m
        for path in DASHBOARDS
        for e in _exprs(json.loads(path.read_text()))
        for m in _METRIC.findall(e)
    }
    shown_families = {_family_of(n).name for n in shown if _family_of(n) is not None}
    left = (
        {d.name for d in CATALOG}
        - shown_families
        - {"gekko_engine_info", "gekko_worker_cpu", "gekko_worker_events_total"}
    )
    assert not left, f"families on no dashboard: {sorted(left)}"


def test_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].endswith("prometheus:9090")
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in _panels(d):
            if p["type"] != "row":
                assert p["datasource"]["uid"] == source["uid"], (path.name, p["title"])
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "gekko.yaml").read_text())
    (provider,) = prov["providers"]
    compose = ROOT / "compose.yaml"
    if compose.exists():  # the mount compose.yaml gives the dashboards is where Grafana looks
        volumes = yaml.safe_load(compose.read_text())["services"]["grafana"]["volumes"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
        assert mounts[provider["options"]["path"]] == "./ops/deploy/grafana/dashboards"


def test_prometheus_scrapes_the_engine_s_exporter() -> None:
    cfg = yaml.safe_load((ROOT / "ops" / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "gekko"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["gekko:9464"]
    compose = ROOT / "compose.yaml"
    if compose.exists():
        assert "gekko" in yaml.safe_load(compose.read_text())["services"]


def test_docs_table_is_the_catalog() -> None:
    """docs/metrics.md has one table row per family: name, type, labels, as in the catalog."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`gekko_"):
            labels = tuple(x.strip("` ") for x in cells[2].split(",") if x.strip("` "))
            rows[cells[0].strip("`")] = (cells[1], labels)
    want = {d.name: (d.kind, d.labels) for d in CATALOG}
    assert rows == want
