"""The Prometheus exporter: the engine's shared-memory figures as metrics, read at scrape time.

Why this shape: the workers already write every figure into shared memory (counters and
histograms, health rows, ring headers, tables), so the exporter adds no work to any hot loop —
it runs as a daemon thread of the supervisor (never in a worker) and reads those regions through
a read-only ``EngineView`` only when Prometheus scrapes (a custom collector). What only the
supervisor knows (orders by strategy and venue, rejects by reason, P&L per strategy, the model
infer serves) its main loop hands over once a status tick as one dict (``record_figures``): the
scrape thread never walks the record while the loop changes it.

The exporter is not trading state: an address that cannot be bound costs one warning line and
the engine trades on. Names, labels and meanings: ``ops.metric_catalog`` and docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from engine.enums import OrderType
from ops.engine_view import EngineView
from ops.metric_catalog import BY_NAME
from ops.store.sink import journal_dir

log = logging.getLogger("gekko.metrics")

#: feed / recorder counters that are levels, not counts (exported as gauges or not at all)
_NOT_COUNTS = {"md_state", "md_states", "journal_backlog", "md_missed"}
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
VENUE_STATES = ("connected", "resyncing", "banned", "halted", "down")


def addr_path(cfg: Any) -> Path:
    """Where the bound address is written (tests that listen on port 0 read it)."""
    return Path(cfg.engine.var_dir) / "run" / f"metrics-{cfg.engine.id}.addr"


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port); ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port")
    return host.strip("[]"), int(port)


# --- what the supervisor's main loop hands over ---------------------------------------------------
def record_figures(record: Any, cfg: Any) -> dict[str, Any]:
    """The record's labelled counts and P&L per strategy as plain values (the main thread's)."""
    return {
        "orders_by": dict(record.orders_by),
        "fills_by": dict(record.fills_by),
        "venue_rejects_by": dict(record.venue_rejects_by),
        "risk_rejects_by": dict(record.risk_rejects_by_reason),
        "strategy_pnl": record.portfolio.strategy_pnl(),
        "model": dict(getattr(record, "model", {}) or {}),
    }


# --- families --------------------------------------------------------------------------------
class _Out:
    """Builds families by catalog name: a family the catalog lacks is a programming error."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def _family(self, name: str, cls: type, **kw: Any) -> Any:
        d = BY_NAME[name]
        fam = cls(name, d.help, labels=list(d.labels), **kw)
        self.families.append(fam)
        return fam

    def gauge(self, name: str) -> GaugeMetricFamily:
        return self._family(name, GaugeMetricFamily)

    def counter(self, name: str) -> CounterMetricFamily:
        return self._family(name, CounterMetricFamily)

    def histogram(self, name: str) -> HistogramMetricFamily:
        return self._family(name, HistogramMetricFamily)


def _num(v: Any) -> float:
    return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else 0.0


def _workers(out: _Out, snap: dict[str, Any], cpu: dict[str, Any]) -> None:
    up = out.gauge("gekko_worker_up")
    age = out.gauge("gekko_worker_heartbeat_age_seconds")
    restarts = out.counter("gekko_worker_restarts_total")
    msgs = out.counter("gekko_worker_messages_total")
    cpu_s = out.counter("gekko_worker_cpu_seconds_total")
    wake = out.counter("gekko_worker_wakeups_total")
    preempt = out.counter("gekko_worker_preemptions_total")
    core = out.gauge("gekko_worker_cpu")
    for w in snap["workers"]:
        n = [w["name"]]
        up.add_metric(n, 1.0 if w["state"] == "ready" else 0.0)
        if w["heartbeat_age_s"] is not None:
            age.add_metric(n, w["heartbeat_age_s"])
        restarts.add_metric(n, w["restarts"])
        msgs.add_metric(n, w["processed"])
        c = cpu.get(w["name"])
        if c is not None:
            cpu_s.add_metric(n, c["cpu_s"])
            wake.add_metric(n, c["voluntary"])
            preempt.add_metric(n, c["involuntary"])
        if w["core"] is not None:
            core.add_metric(n, w["core"])
    events = out.counter("gekko_worker_events_total")
    for worker, counters in snap["counters"].items():
        for k, v in counters.items():
            if k not in _NOT_COUNTS:
                events.add_metric([worker, k], v)


def _latency(out: _Out, snap: dict[str, Any]) -> None:
    h = out.histogram("gekko_latency_seconds")
    for stage, (bounds, cum) in snap["histograms"].items():
        lat = snap["latency"][stage]
        buckets = [(_le(b), c) for b, c in zip(bounds, cum, strict=True)]
        buckets.append(("+Inf", lat["count"]))
        h.add_metric([stage, lat["worker"]], buckets, lat["sum_ns"] / 1e9)


def _le(ns: int) -> str:
    return repr(ns / 1e9)


def _rings(out: _Out, snap: dict[str, Any]) -> None:
    cap = out.gauge("gekko_ring_capacity_bytes")
    pub = out.counter("gekko_ring_published_bytes_total")
    frames = out.counter("gekko_ring_messages_total")
    lag = out.gauge("gekko_ring_lag_bytes")
    fill = out.gauge("gekko_ring_fill_ratio")
    missed = out.counter("gekko_ring_missed_total")
    closed = out.gauge("gekko_ring_closed")
    for r in snap["rings"]:
        cap.add_metric([r["name"]], r["capacity_bytes"])
        pub.add_metric([r["name"]], r["published"])
        frames.add_metric([r["name"]], r["messages"])
        closed.add_metric([r["name"]], 1.0 if r["closed"] else 0.0)
        for rd in r["readers"]:
            if rd["state"] in ("closed", "dead"):
                continue
            lag.add_metric([r["name"], rd["name"], str(rd["gating"]).lower()], rd["lag_bytes"])
            fill.add_metric([r["name"], rd["name"]], rd["fill"])
            missed.add_metric([r["name"], rd["name"]], rd["missed"])


def _market(out: _Out, snap: dict[str, Any]) -> None:
    feed = snap["counters"].get("feed", {})
    out.counter("gekko_market_data_messages_total").add_metric([], feed.get("md_out", 0))
    rej = out.counter("gekko_market_data_rejected_total")
    for k, v in feed.items():
        if k.startswith("md_rej_"):
            rej.add_metric([k.removeprefix("md_rej_")], v)
    for name, key in (
        ("gekko_market_data_reconnects_total", "md_reconnects"),
        ("gekko_market_data_resyncs_total", "md_resyncs"),
        ("gekko_market_data_gaps_total", "md_gaps"),
    ):
        out.counter(name).add_metric([], feed.get(key, 0))
    strategy = snap["counters"].get("strategy", {})
    out.counter("gekko_intents_total").add_metric([], strategy.get("intents_out", 0))


def _positions(out: _Out, snap: dict[str, Any]) -> None:
    fams = {
        "qty": out.gauge("gekko_position_lots"),
        "avg_px": out.gauge("gekko_position_avg_price"),
        "mark_px": out.gauge("gekko_mark_price"),
        "exposure": out.gauge("gekko_exposure"),
        "realized": out.gauge("gekko_pnl_realized"),
        "unrealized": out.gauge("gekko_pnl_unrealized"),
        "fees": out.gauge("gekko_fees"),
    }
    for p in snap["positions"]:
        for key, fam in fams.items():
            fam.add_metric([p["instrument"], p["venue"]], p[key])


def _risk(out: _Out, snap: dict[str, Any]) -> None:
    st = out.gauge("gekko_trading_state")
    now = snap["trading_state"]["state"]
    for s in TRADING_STATES:
        st.add_metric([s], 1.0 if s == now else 0.0)
    out.gauge("gekko_kill_switch_engaged").add_metric([], 1.0 if snap["kill_switch"] else 0.0)


def _storage(out: _Out, snap: dict[str, Any], journal_bytes: dict[str, int]) -> None:
    jb = out.gauge("gekko_journal_bytes")
    for journal, n in journal_bytes.items():
        jb.add_metric([journal], n)
    rec = snap["counters"].get("recorder")
    if rec is None:  # storage off: no recorder
        return
    out.counter("gekko_journal_records_total").add_metric([], rec.get("journaled", 0))
    out.counter("gekko_db_rows_written_total").add_metric([], rec.get("rows_written", 0))
    out.gauge("gekko_db_write_backlog_records").add_metric([], rec.get("journal_backlog", 0))
    out.counter("gekko_db_rows_rejected_total").add_metric([], rec.get("db_rejected", 0))


def _venues(out: _Out, snap: dict[str, Any]) -> None:
    st = out.gauge("gekko_venue_state")
    ch = out.counter("gekko_venue_state_changes_total")
    for v in snap["venues"]:
        for s in VENUE_STATES:
            st.add_metric([v["venue"], s], 1.0 if v["state"] == s else 0.0)
        ch.add_metric([v["venue"]], v["changes"])
    stats = snap.get("venue_stats") or []
    if not stats:
        return
    fams = {
        "reconnects": out.counter("gekko_venue_reconnects_total"),
        "resyncs": out.counter("gekko_venue_resyncs_total"),
        "budget_left": out.gauge("gekko_venue_rate_budget_remaining_ratio"),
        "clock_offset_s": out.gauge("gekko_venue_clock_offset_seconds"),
        "order_rtt_s": out.gauge("gekko_venue_order_round_trip_seconds"),
        "in_flight": out.gauge("gekko_venue_orders_in_flight"),
        "oldest_in_flight_s": out.gauge("gekko_venue_oldest_in_flight_seconds"),
    }
    limits = out.counter("gekko_venue_http_limit_responses_total")
    for v in stats:
        for key, fam in fams.items():
            fam.add_metric([v["venue"]], v[key])
        limits.add_metric([v["venue"], "429"], v["http_429"])
        limits.add_metric([v["venue"], "418"], v["http_418"])


class _Labels:
    """Ids to label values: strategy names, instrument symbols and venues, order types."""

    def __init__(self, cfg: Any) -> None:
        # the names the run's summary uses: [[strategies]] name, else the class's
        self.strategy = {
            int(st.id or k + 1): st.name or st.path.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            for k, st in enumerate(cfg.strategies)
        }
        self.symbol = {i.instrument_id: i.symbol for i in cfg.instruments}
        self.venue = {i.instrument_id: i.venue for i in cfg.instruments}

    def strat(self, sid: int) -> str:
        return self.strategy.get(sid, "risk" if sid == 0 else str(sid))

    @staticmethod
    def order_type(t: int) -> str:
        try:
            return OrderType(t).name.lower()
        except ValueError:
            return "none" if t == 0 else str(t)


def _record(out: _Out, fig: dict[str, Any], lab: _Labels) -> None:
    orders: dict[tuple[str, ...], int] = {}  # summed over instruments
    for (action, otype, sid, iid), n in fig["orders_by"].items():
        key = (action, lab.order_type(otype), lab.venue.get(iid, "?"), lab.strat(sid))
        orders[key] = orders.get(key, 0) + n
    fam = out.counter("gekko_orders_total")
    for key, n in sorted(orders.items()):
        fam.add_metric(list(key), n)
    fills = out.counter("gekko_fills_total")
    for (sid, iid), n in sorted(fig["fills_by"].items()):
        fills.add_metric([lab.venue.get(iid, "?"), lab.strat(sid), lab.symbol.get(iid, "?")], n)
    risk = out.counter("gekko_risk_rejects_total")
    for reason, n in sorted(fig["risk_rejects_by"].items()):
        risk.add_metric([reason], n)
    venue: dict[tuple[str, ...], int] = {}
    for (iid, reason), n in fig["venue_rejects_by"].items():
        key = (lab.venue.get(iid, "?"), reason)
        venue[key] = venue.get(key, 0) + n
    fam = out.counter("gekko_venue_rejects_total")
    for key, n in sorted(venue.items()):
        fam.add_metric(list(key), n)
    fams = {
        "realized": out.gauge("gekko_strategy_pnl_realized"),
        "unrealized": out.gauge("gekko_strategy_pnl_unrealized"),
        "fees": out.gauge("gekko_strategy_fees"),
    }
    for sid, figs in sorted(fig["strategy_pnl"].items()):
        for key, fam in fams.items():
            fam.add_metric([lab.strat(sid)], figs[key])
    model = fig.get("model") or {}
    if model.get("version"):
        info = out.gauge("gekko_model_info")
        info.add_metric([model.get("name", ""), model["version"]], 1.0)
    if model.get("last_forecast_ns"):
        age = (time.monotonic_ns() - model["last_forecast_ns"]) / 1e9
        out.gauge("gekko_forecast_age_seconds").add_metric([], max(0.0, age))


class EngineCollector(Collector):
    """Reads the engine at each scrape (one at a time: the view keeps per-process CPU state)."""

    def __init__(
        self, view: EngineView, cfg: Any, figures: Callable[[], dict[str, Any]], run_id: int = 0
    ) -> None:
        self.view = view
        self.cfg = cfg
        self.figures = figures
        self.run_id = run_id
        self.labels = _Labels(cfg)
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            snap = self.view.snapshot()
            cpu = self.view.cpu_times()
            fig = self.figures()
        out = _Out()
        info = out.gauge("gekko_engine_info")
        info.add_metric([self.view.engine_id, str(self.run_id)], 1.0)
        _workers(out, snap, cpu)
        _latency(out, snap)
        _rings(out, snap)
        _market(out, snap)
        _positions(out, snap)
        _risk(out, snap)
        _storage(out, snap, self._journal_bytes())
        _venues(out, snap)
        if fig:
            _record(out, fig, self.labels)
        yield from out.families

    def _journal_bytes(self) -> dict[str, int]:
        """Bytes on disk of this engine's journals: exec's (always kept) and the recorder's."""
        out: dict[str, int] = {}
        dirs = {"exec": Path(self.cfg.engine.var_dir) / "exec"}
        if "recorder" in self.view.metrics:
            dirs["recorder"] = journal_dir(self.cfg)
        for name, d in dirs.items():
            total = 0
            for p in d.glob(f"{self.cfg.engine.id}-*.journal"):
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
            out[name] = total
        return out


class Exporter:
    """The HTTP endpoint (``/metrics``) on a daemon thread; ``start`` never raises."""

    def __init__(self, cfg: Any, run_id: int, figures: Callable[[], dict[str, Any]]) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.figures = figures
        self.view: EngineView | None = None
        self.collector: EngineCollector | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.address = ""

    def start(self) -> bool:
        """Attach to the regions and listen on ``[metrics] listen``; False (said once) if not."""
        listen = self.cfg.metrics.listen
        if not listen:
            return False
        from prometheus_client import start_wsgi_server

        try:
            host, port = parse_listen(listen)
            self.view = EngineView.attach(self.cfg.engine.id, self.cfg)
            registry = CollectorRegistry(auto_describe=False)
            self.collector = EngineCollector(self.view, self.cfg, self.figures, self.run_id)
            registry.register(self.collector)
            self.server, self.thread = start_wsgi_server(port, host, registry)
        except Exception as exc:  # not trading state: say so once and trade on
            log.warning(
                "metrics: not serving on %s (%s); the engine runs without them", listen, exc
            )
            self.stop()
            return False
        bound = self.server.server_address
        h = bound[0]
        self.address = f"[{h}]:{bound[1]}" if ":" in h else f"{h}:{bound[1]}"
        log.info("metrics: Prometheus exporter on http://%s/metrics", self.address)
        try:
            p = addr_path(self.cfg)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(self.address + "\n")
        except OSError as exc:
            log.warning("metrics: cannot write %s (%s)", addr_path(self.cfg), exc)
        return True

    def stop(self) -> None:
        """Stop serving and unmap (before the supervisor removes the regions)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(2)
            self.thread = None
        if self.view is not None:
            if self.collector is not None:
                with self.collector.lock:  # a scrape still reading finishes first
                    self.view.close()
            else:
                self.view.close()
            self.view = None
        p = addr_path(self.cfg)
        if self.address and p.exists():
            p.unlink(missing_ok=True)
