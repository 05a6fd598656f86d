"""Every metric family the Prometheus exporter serves: name, type, labels, meaning — defined once.

Why a catalog: three things must agree on the names — the exporter (``ops/exporter.py`` refuses
to emit a family that is not here), the one table in docs/metrics.md, and the Grafana dashboards'
queries (tests check both against this list). Names follow Prometheus conventions: the ``gekko_``
prefix, ``_total`` on counters, base units (``_seconds``, ``_bytes``, ``_ratio``); money is in the
instrument's quote currency (per strategy: the portfolio's base currency) and has no unit suffix.
"""

from __future__ import annotations

from typing import NamedTuple


class MetricDef(NamedTuple):
    name: str  # as exposed (counters end in _total)
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    source: str  # where the figure is read (docs/metrics.md's last column)

    @property
    def family(self) -> str:
        """The family name a Prometheus parser reports (counters without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def series_names(self) -> tuple[str, ...]:
        """The sample names this family exposes (what a PromQL query may name)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        if self.kind == "counter":
            return (self.name, f"{self.family}_created")
        return (self.name,)


def _m(name: str, kind: str, labels: str, help: str, source: str) -> MetricDef:
    return MetricDef(name, kind, tuple(labels.split()), help, source)


CATALOG: tuple[MetricDef, ...] = (
    # --- the engine and its processes ----------------------------------------------------------
    _m("gekko_engine_info", "gauge", "engine_id run_id", "1, labelled with the running engine's id and run", "supervisor"),
    _m("gekko_worker_up", "gauge", "worker", "1 while the worker reports ready, else 0", "health table"),
    _m("gekko_worker_heartbeat_age_seconds", "gauge", "worker", "time since the worker's last heartbeat", "health table"),
    _m("gekko_worker_restarts_total", "counter", "worker", "restarts of the worker in this run", "health table (incarnation)"),
    _m("gekko_worker_messages_total", "counter", "worker", "messages the worker has processed", "health table"),
    _m("gekko_worker_cpu_seconds_total", "counter", "worker", "CPU time (user + system) of the worker's current process", "OS (psutil)"),
    _m("gekko_worker_wakeups_total", "counter", "worker", "voluntary context switches of the worker's process: each sleep (semaphore, poll) ends in one wake-up", "OS (psutil)"),
    _m("gekko_worker_preemptions_total", "counter", "worker", "involuntary context switches (the core was taken from the worker)", "OS (psutil)"),
    _m("gekko_worker_cpu", "gauge", "worker", "the CPU core the worker last ran on", "OS (psutil)"),
    _m("gekko_worker_events_total", "counter", "worker counter", "every counter of every worker's shm metrics region, by its name", "metrics regions"),
    # --- latency -------------------------------------------------------------------------------
    _m("gekko_latency_seconds", "histogram", "stage worker", "per stage (tick_to_order, tick_to_intent, tick_to_approval, publish, ...): the shm histogram's own bucket edges", "metrics regions"),
    # --- rings ---------------------------------------------------------------------------------
    _m("gekko_ring_capacity_bytes", "gauge", "ring", "the ring's data capacity", "ring header"),
    _m("gekko_ring_published_bytes_total", "counter", "ring", "bytes the producer has published (its position)", "ring header"),
    _m("gekko_ring_messages_total", "counter", "ring", "frames (messages) the producer has published", "ring header"),
    _m("gekko_ring_lag_bytes", "gauge", "ring reader gating", "bytes published that the reader has not consumed yet", "ring slots"),
    _m("gekko_ring_fill_ratio", "gauge", "ring reader", "the reader's lag as a fraction of the capacity (1: a gating reader holds the producer)", "ring slots"),
    _m("gekko_ring_missed_total", "counter", "ring reader", "frames a non-gating reader lost to being lapped", "ring slots"),
    _m("gekko_ring_closed", "gauge", "ring", "1 once the producer has closed the ring (its stream ended)", "ring header"),
    # --- market data, orders, fills, rejects ---------------------------------------------------
    _m("gekko_market_data_messages_total", "counter", "", "market-data messages the feed published", "feed counters"),
    _m("gekko_market_data_rejected_total", "counter", "reason", "market data refused before the engine: replay rows and live checks, by reason", "feed counters"),
    _m("gekko_market_data_reconnects_total", "counter", "", "live market-data sessions reopened", "feed counters"),
    _m("gekko_market_data_resyncs_total", "counter", "", "books rebuilt from a fresh snapshot (gaps and reconnects)", "feed counters"),
    _m("gekko_market_data_gaps_total", "counter", "", "sequence gaps in live market data", "feed counters"),
    _m("gekko_intents_total", "counter", "", "order intents the strategies sent to risk", "strategy counters"),
    _m("gekko_orders_total", "counter", "action order_type venue strategy", "orders risk approved: new (by order type), cancel, replace", "supervisor's record (orders ring)"),
    _m("gekko_fills_total", "counter", "venue strategy instrument", "fills", "supervisor's record (events ring)"),
    _m("gekko_risk_rejects_total", "counter", "reason", "intents risk refused, by reason", "supervisor's record (risk ring)"),
    _m("gekko_venue_rejects_total", "counter", "venue reason", "refusals from exec or the venue (orders, cancels, replaces), by reason", "supervisor's record (events ring)"),
    # --- positions and P&L ---------------------------------------------------------------------
    _m("gekko_position_lots", "gauge", "instrument venue", "position in lots (negative: short)", "positions table"),
    _m("gekko_position_avg_price", "gauge", "instrument venue", "average price of the open position", "positions table"),
    _m("gekko_mark_price", "gauge", "instrument venue", "the mark the P&L is valued at", "positions table"),
    _m("gekko_exposure", "gauge", "instrument venue", "signed notional of the position at the mark", "positions table"),
    _m("gekko_pnl_realized", "gauge", "instrument venue", "realized P&L of the instrument", "positions table"),
    _m("gekko_pnl_unrealized", "gauge", "instrument venue", "unrealized P&L of the instrument", "positions table"),
    _m("gekko_fees", "gauge", "instrument venue", "fees paid on the instrument", "positions table"),
    _m("gekko_strategy_pnl_realized", "gauge", "strategy", "realized P&L attributed to the strategy", "supervisor's record (portfolio)"),
    _m("gekko_strategy_pnl_unrealized", "gauge", "strategy", "unrealized P&L attributed to the strategy", "supervisor's record (portfolio)"),
    _m("gekko_strategy_fees", "gauge", "strategy", "fees attributed to the strategy", "supervisor's record (portfolio)"),
    # --- risk ----------------------------------------------------------------------------------
    _m("gekko_trading_state", "gauge", "state", "1 for the current trading state (ACTIVE, REDUCING, HALTED), 0 for the others", "risk's state file"),
    _m("gekko_kill_switch_engaged", "gauge", "", "1 while the operator's kill switch holds the engine HALTED", "risk's state file"),
    # --- forecasting ---------------------------------------------------------------------------
    _m("gekko_model_info", "gauge", "model version", "1, labelled with the model version infer serves", "forecasts ring"),
    _m("gekko_forecast_age_seconds", "gauge", "", "time since infer published its last forecast", "forecasts ring"),
    # --- storage -------------------------------------------------------------------------------
    _m("gekko_journal_bytes", "gauge", "journal", "size on disk of this engine's journals: exec's (orders and events, always kept) and the recorder's (rows not yet in PostgreSQL)", "journal files"),
    _m("gekko_journal_records_total", "counter", "", "trading records the recorder journaled", "recorder counters"),
    _m("gekko_db_rows_written_total", "counter", "", "rows the recorder wrote to PostgreSQL", "recorder counters"),
    _m("gekko_db_write_backlog_records", "gauge", "", "journaled records not yet in PostgreSQL (the database write lag, in records)", "recorder counters"),
    _m("gekko_db_rows_rejected_total", "counter", "", "journaled records PostgreSQL refused on replay", "recorder counters"),
    # --- venues --------------------------------------------------------------------------------
    _m("gekko_venue_state", "gauge", "venue state", "1 for a live venue's current state (connected, resyncing, banned, halted, down)", "venues table"),
    _m("gekko_venue_state_changes_total", "counter", "venue", "changes of the venue's state", "venues table"),
    _m("gekko_venue_reconnects_total", "counter", "venue", "execution sessions (user streams) reopened", "venue stats table"),
    _m("gekko_venue_resyncs_total", "counter", "venue", "reconciliations with the venue after a gap or reconnect", "venue stats table"),
    _m("gekko_venue_rate_budget_remaining_ratio", "gauge", "venue", "request-weight budget left in the venue's window (1: untouched)", "venue stats table"),
    _m("gekko_venue_http_limit_responses_total", "counter", "venue code", "rate-limit answers: 429 (slow down) and 418 (banned)", "venue stats table"),
    _m("gekko_venue_clock_offset_seconds", "gauge", "venue", "venue clock minus ours, at the last time sync", "venue stats table"),
    _m("gekko_venue_order_round_trip_seconds", "gauge", "venue", "submit-to-answer time of the venue's last answered order", "venue stats table"),
    _m("gekko_venue_orders_in_flight", "gauge", "venue", "orders submitted and not yet answered", "venue stats table"),
    _m("gekko_venue_oldest_in_flight_seconds", "gauge", "venue", "age of the oldest order in flight (0: none)", "venue stats table"),
)  # fmt: skip

BY_NAME = {m.name: m for m in CATALOG}
BY_FAMILY = {m.family: m for m in CATALOG}


def series_names() -> set[str]:
    """Every sample name the exporter may expose."""
    return {s for m in CATALOG for s in m.series_names()}
