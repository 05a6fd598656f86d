"""The Prometheus exporter as Prometheus sees it: one real `gekko run`, scraped over HTTP while it
runs and parsed with prometheus_client's own parser; the figures must equal the run's summary.

One engine run for the module (market data capped by ``max_events``): scraped once the feed has
finished and every reader caught up, when nothing moves any more, then stopped with SIGINT so
that ``summary.json`` is written and the two can be compared.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.config import ConfigError, load_config
from ops.engine_view import BOUNDS_NS, EngineView
from ops.exporter import Exporter, addr_path
from ops.metric_catalog import BY_FAMILY, CATALOG
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

MAX_EVENTS = 3000


def _config(tmp: Path, eid: str, listen: str = "127.0.0.1:0") -> Path:
    text = (ROOT / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp / "var"}"', 1)
    text = text.replace("max_events = 0 ", f"max_events = {MAX_EVENTS} ", 1)
    text = text.replace('listen = "127.0.0.1:9464"', f'listen = "{listen}"', 1)
    head, _, tail = text.partition("[storage.postgres]")  # no PostgreSQL: a faster start
    text = head + "[storage.postgres]" + tail.replace('mode = "embedded"', 'mode = "off"', 1)
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def _scrape(addr: str) -> dict[str, Any]:
    """{family name: family} of one scrape, parsed by prometheus_client."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], family: str, **labels: str) -> float:
    """The sum of a family's samples (its main series) whose labels include ``labels``."""
    fam = fams[family]
    main = {family, f"{family}_total"}
    return sum(
        s.value
        for s in fam.samples
        if s.name in main and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _settled(fams: dict[str, Any]) -> bool:
    """The feed finished and every reader of every ring has caught up."""
    closed = _value(fams, "gekko_ring_closed", ring="md") == 1
    lag = sum(s.value for s in fams["gekko_ring_lag_bytes"].samples)
    return closed and lag == 0


def _counts(fams: dict[str, Any]) -> tuple[float, ...]:
    return tuple(
        _value(fams, f)
        for f in ("gekko_orders", "gekko_fills", "gekko_market_data_messages", "gekko_intents")
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("exporter")
    eid = "x" + uuid.uuid4().hex[:8]
    cfg_path = _config(tmp, eid)
    cfg = load_config(cfg_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg_path), "--duration", "90"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = _scrape_settled(proc, cfg)
        out["second_exporter"] = _second_exporter(cfg, out["addr"])
        out["killed"] = _kill_and_scrape(cfg_path, out["addr"])
        out["mappings"] = _mappings(cfg)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    out["summary"] = json.loads((tmp / "var" / "last_run" / "summary.json").read_text())
    out["stderr"] = stderr
    out["addr_file_left"] = addr_path(cfg).exists()
    yield out


def _scrape_settled(proc: subprocess.Popen[str], cfg: Any) -> dict[str, Any]:
    """Scrapes until two scrapes more than a status tick apart agree on every count."""
    path = addr_path(cfg)
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, "gekko run ended before it served metrics"
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.1)
    addr = path.read_text().strip()
    prev: tuple[float, ...] = ()
    while True:
        assert time.monotonic() < deadline, "the run never settled"
        fams = _scrape(addr)
        if _settled(fams) and _counts(fams) == prev:
            return {"addr": addr, "fams": fams, "cfg": cfg}
        prev = _counts(fams) if _settled(fams) else ()
        time.sleep(1.2)  # the record's figures are handed over once a status tick (1 s)


def _kill_and_scrape(cfg_path: Path, addr: str) -> dict[str, Any]:
    """`gekko kill`, then the scrape that shows it (risk writes its state file on the change)."""
    r = subprocess.run(
        [sys.executable, "-m", "ops.cli", "kill", "--config", str(cfg_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while True:
        fams = _scrape(addr)
        if _value(fams, "gekko_kill_switch_engaged") == 1 or time.monotonic() > deadline:
            return fams
        time.sleep(0.2)


def _mappings(cfg: Any) -> dict[str, bool]:
    """Whether each region the view maps is mapped read-only (it can never write to the engine)."""
    view = EngineView.attach(cfg.engine.id, cfg)
    try:
        regions = {"health": view.health.region, "positions": view.positions.region}
        regions |= {f"metrics {w}": m.region for w, m in view.metrics.items()}
        regions |= {f"ring {n}": r.region for n, r in view.rings.items()}
        return {name: r.buf.readonly for name, r in regions.items()}
    finally:
        view.close()


def _second_exporter(cfg: Any, addr: str) -> dict[str, Any]:
    """A second exporter on the address the first holds: it must say so and start nothing."""
    cfg.metrics.listen = addr
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("gekko.metrics")
    logger.addHandler(handler)
    try:
        started = Exporter(cfg, 0, dict).start()
    finally:
        logger.removeHandler(handler)
    return {"started": started, "logs": [(r.levelno, r.getMessage()) for r in records]}


# --- the scrape against the summary ---------------------------------------------------------
def test_counts_equal_the_summary(run: dict[str, Any]) -> None:
    f, s = run["fams"], run["summary"]
    assert s["ticks"] == MAX_EVENTS
    assert _value(f, "gekko_market_data_messages") == s["ticks"]
    # after the scrape: the kill switch (risk cancels what is open, refuses what comes) and the
    # stop (the strategies cancel what is still open): cancels, refusals and their intents only
    late_cancels = s["orders_cancel"] - _value(f, "gekko_orders", action="cancel")
    # the metric counts risk's refusals by reason, a refused replace included (it has no
    # OrderRejected, which the summary's risk_rejects counts): compare like with like
    late_rejects = sum(s["risk_rejects_by_reason"].values()) - _value(f, "gekko_risk_rejects")
    assert late_cancels >= 0 and late_rejects >= 0
    assert 0 <= s["intents"] - _value(f, "gekko_intents") <= late_cancels + late_rejects
    assert _value(f, "gekko_orders", action="new") == s["orders_new"] > 0
    assert _value(f, "gekko_orders", action="replace") == s["orders_replace"]
    assert _value(f, "gekko_fills") == s["fills"] > 0
    for sym, n in s["fills_by_instrument"].items():
        assert _value(f, "gekko_fills", instrument=sym) == n, sym
    for reason, n in s["risk_rejects_by_reason"].items():
        assert _value(f, "gekko_risk_rejects", reason=reason) <= n, reason
    assert _value(f, "gekko_venue_rejects") <= s["venue_rejects"]
    names = {
        str(st.id or k + 1): st.name or st.path.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        for k, st in enumerate(run["cfg"].strategies)
    }
    for sid, figs in s["pnl_by_strategy"].items():
        assert _value(f, "gekko_fills", strategy=names[sid]) == figs["fills"], names[sid]


def test_positions_and_pnl_equal_the_summary(run: dict[str, Any]) -> None:
    f, s = run["fams"], run["summary"]
    for sym, p in s["positions"].items():
        assert _value(f, "gekko_position_lots", instrument=sym) == p["position"], sym
        assert _value(f, "gekko_pnl_realized", instrument=sym) == pytest.approx(p["realized"])
        assert _value(f, "gekko_fees", instrument=sym) == pytest.approx(p["fees"])
    realized = sum(x.value for x in f["gekko_strategy_pnl_realized"].samples)
    assert realized == pytest.approx(s["realized"], abs=1e-6)


def test_tick_to_order_histogram_has_the_run_s_buckets(run: dict[str, Any]) -> None:
    f, s = run["fams"], run["summary"]
    samples = [
        x for x in f["gekko_latency_seconds"].samples if x.labels["stage"] == "tick_to_order"
    ]
    count = next(x.value for x in samples if x.name.endswith("_count"))
    assert count == s["tick_to_order_ns"]["count"] > 0
    buckets = [(float(x.labels["le"]), x.value) for x in samples if x.name.endswith("_bucket")]
    assert [le for le, _ in buckets[:-1]] == [b / 1e9 for b in BOUNDS_NS]
    assert buckets[-1] == (float("inf"), count)
    values = [v for _, v in buckets]
    assert values == sorted(values)  # cumulative
    # the median lies in the bucket where the cumulative count crosses half the total
    p50_s = s["tick_to_order_ns"]["p50"] / 1e9
    crossing = next(le for le, v in buckets if v >= count / 2)
    below = max([le for le, v in buckets if v < count / 2], default=0.0)
    assert below <= p50_s * 1.01 and p50_s <= crossing * 1.01
    stages = {x.labels["stage"] for x in f["gekko_latency_seconds"].samples}
    assert {"tick_to_order", "tick_to_intent", "tick_to_approval", "publish"} <= stages


def test_processes_rings_and_risk(run: dict[str, Any]) -> None:
    f, s, cfg = run["fams"], run["summary"], run["cfg"]
    workers = {x.labels["worker"]: x.value for x in f["gekko_worker_up"].samples}
    assert set(workers) >= {"feed", "strategy", "risk", "exec"} and set(workers.values()) == {1.0}
    assert _value(f, "gekko_worker_restarts") == len(s["restarts"]) == 0
    assert all(x.value < 5 for x in f["gekko_worker_heartbeat_age_seconds"].samples)
    assert _value(f, "gekko_worker_cpu_seconds", worker="feed") > 0
    assert _value(f, "gekko_worker_wakeups", worker="strategy") > 0
    assert _value(f, "gekko_ring_capacity_bytes", ring="md") == cfg.rings.md_capacity
    assert _value(f, "gekko_ring_published_bytes", ring="md") > 0
    # every order risk approved is one frame on the orders ring
    assert _value(f, "gekko_ring_messages", ring="orders") == _value(f, "gekko_orders") > 0
    assert _value(f, "gekko_ring_messages", ring="md") >= s["ticks"]
    readers = {(x.labels["ring"], x.labels["reader"]) for x in f["gekko_ring_fill_ratio"].samples}
    assert ("orders", "supervisor") in readers and ("md", "strategy") in readers
    assert _value(f, "gekko_trading_state", state="ACTIVE") == 1
    assert _value(f, "gekko_trading_state", state="HALTED") == 0
    assert _value(f, "gekko_kill_switch_engaged") == 0
    assert _value(f, "gekko_journal_bytes", journal="exec") > 0
    info = f["gekko_engine_info"].samples[0].labels
    assert info["engine_id"] == cfg.engine.id == s["engine_id"]
    assert _value(f, "gekko_model_info") == 1  # infer serves the shipped model
    assert {x.labels["version"] for x in f["gekko_model_info"].samples} != {""}


def test_every_family_is_in_the_catalog_with_its_labels(run: dict[str, Any]) -> None:
    for name, fam in run["fams"].items():
        d = BY_FAMILY.get(name)
        assert d is not None, f"{name} is not in ops/metric_catalog.py"
        assert fam.type == d.kind, name
        for x in fam.samples:
            assert set(x.labels) - {"le"} == set(d.labels), (name, x.labels)
    missing = {
        d.family
        for d in CATALOG
        if not d.name.startswith(
            ("gekko_venue_", "gekko_db_", "gekko_journal_records", "gekko_forecast")
        )
    } - set(run["fams"])
    assert not missing, f"families a simulated run should serve: {sorted(missing)}"


def test_the_exporter_says_where_and_a_taken_port_costs_one_warning(run: dict[str, Any]) -> None:
    assert f"Prometheus exporter on http://{run['addr']}/metrics" in run["stderr"]
    second = run["second_exporter"]
    assert second["started"] is False
    assert [lvl for lvl, _ in second["logs"]] == [logging.WARNING]
    assert run["addr"] in second["logs"][0][1]
    assert not run["addr_file_left"]  # removed when the engine stopped


def test_the_kill_switch_and_the_trading_state(run: dict[str, Any]) -> None:
    f, s = run["killed"], run["summary"]
    assert _value(f, "gekko_kill_switch_engaged") == 1
    assert _value(f, "gekko_trading_state", state="HALTED") == 1
    assert _value(f, "gekko_trading_state", state="ACTIVE") == 0
    assert s["trading_state"]["state"] == "HALTED" and s["trading_state"]["source"] == "operator"


def test_the_view_maps_every_region_read_only(run: dict[str, Any]) -> None:
    m = run["mappings"]
    assert {"health", "positions", "metrics exec", "ring md", "ring orders"} <= set(m)
    assert all(m.values()), m


# --- without a running engine -----------------------------------------------------------------
def test_listen_is_validated_naming_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, "xbad", listen="localhost")
    with pytest.raises(ConfigError, match="metrics.listen"):
        load_config(path)
    path = _config(tmp_path, "xoff", listen="")
    assert load_config(path).metrics.listen == ""


def test_no_engine_no_view(tmp_path: Path) -> None:
    from ops.operator import EngineNotRunning

    cfg = load_config(_config(tmp_path, "xnone" + uuid.uuid4().hex[:5]))
    with pytest.raises(EngineNotRunning, match="is running"):
        EngineView.attach(cfg.engine.id, cfg)


def test_model_and_forecast_age_from_the_forecasts_ring(tmp_path: Path) -> None:
    from engine.messages import Forecast, ModelSwapped
    from ops.exporter import _Labels, _Out, _record, record_figures
    from ops.report import RunRecord

    cfg = load_config(_config(tmp_path, "xfc"))
    rec = RunRecord(cfg)
    now = time.monotonic_ns()
    rec.on_forecast(ModelSwapped("nhits", "", "v7", "/m/v7", now))
    rec.on_forecast(Forecast(0, "v7", now, now - 3_000_000_000, [0.1]))
    # a micro model served beside it (procs/micro_serving.py) is not the model these describe
    rec.on_forecast(ModelSwapped("micro", "", "micro:s:1", "/m/micro", now))
    rec.on_forecast(Forecast(0, "micro:s:1", now, now, [0.1], p_up=0.7))
    out = _Out()
    _record(out, record_figures(rec, cfg), _Labels(cfg))
    got = {s.name: s for f in out.families for s in f.samples}
    assert got["gekko_model_info"].labels == {"model": "nhits", "version": "v7"}
    assert 3.0 <= got["gekko_forecast_age_seconds"].value < 60
