"""A live venue's figures for the exporter: measured where they exist (the reconciled venue, its
client's guard), written to shm by exec's pass at most once a second, read back in base units,
and served as the catalog's gekko_venue_* families."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from engine.enums import Side
from engine.messages import OrderAccepted
from engine.venues.ccxt_guard import Guard, WeightBudget
from ops.exporter import _Out, _storage, _venues
from procs.venue_status import VenueStates, create_stats_table, read_stats
from tests.test_venue_recon import connect, live, of, order


class _Withheld:
    """The venue answers nothing for now (an order stays in flight); otherwise as connected."""

    def __init__(self, flaky) -> None:  # type: ignore[no-untyped-def]
        self.flaky = flaky
        self.held: list = []
        self.stats = {"reconnects": 3}
        self.guard = Guard("binanceus")

    def submit(self, o, now):  # type: ignore[no-untyped-def]
        self.held += self.flaky.submit(o, now)
        return []

    def __getattr__(self, a):  # type: ignore[no-untyped-def]
        return getattr(self.flaky, a)


def _venue():  # type: ignore[no-untyped-def]
    flaky, v = live()
    connect(flaky, v, 1)
    inner = _Withheld(flaky)
    v.inner = inner
    return v, inner


def test_in_flight_orders_their_age_and_the_round_trip() -> None:
    v, inner = _venue()
    sent = 1_000_000
    assert v.submit(order(5, Side.BUY, 5, 10000), sent) == []
    s = v.venue_stats(sent + 2_000_000)
    assert (s["in_flight"], s["oldest_sent_ns"], s["round_trip_ns"]) == (1, sent, 0)
    assert (s["reconnects"], s["resyncs"]) == (3, v.reconciliations) and v.reconciliations >= 1
    (ack,) = of(inner.held, OrderAccepted)
    answered = OrderAccepted.for_order(
        order(5, Side.BUY, 5, 10000), ack.venue_order_id, 0, sent + 750_000
    )
    assert v._through([answered]) == [answered]
    s = v.venue_stats(sent + 3_000_000)
    assert (s["in_flight"], s["oldest_sent_ns"], s["round_trip_ns"]) == (0, 0, 750_000)
    v._through([answered])  # a second answer to the same order measures nothing new
    assert v.venue_stats(sent)["round_trip_ns"] == 750_000


def test_guard_figures_budget_429_418_and_clock() -> None:
    v, inner = _venue()
    g = inner.guard
    now = time.monotonic()
    g.budget.take(g.budget.limit / 4, now)
    g.on_response(429, {"Retry-After": "1"}, now)
    g.on_response(418, {"Retry-After": "1"}, now)
    g.clock.update(server_ms=10_250, sent_ms=10_000, recv_ms=10_100, now=now)
    s = v.venue_stats(int(now * 1e9))
    assert s["budget_left"] == pytest.approx(0.75)
    assert (s["http_429"], s["http_418"], s["clock_offset_ms"]) == (1, 1, 200)


def test_left_ratio_reads_without_changing_the_budget() -> None:
    b = WeightBudget(100, 60)
    b.take(40, 0.0)
    assert b.left_ratio(30.0) == pytest.approx(0.6)
    assert b.left_ratio(61.0) == 1.0  # out of the window
    assert b.used(30.0) == 40  # nothing expired by the read
    d = WeightBudget(100, 10, decaying=True)
    d.take(50, 0.0)
    assert d.left_ratio(5.0) == pytest.approx(1.0)  # 10/s decay: 50 spent, 50 freed


def test_exec_s_pass_writes_the_table_once_a_second_and_it_reads_back(engine_id: str) -> None:
    v, inner = _venue()
    cfg = SimpleNamespace(venues=[SimpleNamespace(name="B"), SimpleNamespace(name="A")])
    table = create_stats_table(engine_id, cfg)
    try:
        states = VenueStates(None, ["B", "A"], v, table)
        v.submit(order(7, Side.BUY, 5, 10000), time.monotonic_ns() - 2_000_000_000)
        states.refresh()
        (row,) = read_stats(table)
        assert row["venue"] == "A" and row["in_flight"] == 1 and row["reconnects"] == 3
        assert row["oldest_in_flight_s"] >= 2.0 and row["age_s"] < 5
        inner.stats["reconnects"] = 4
        states.refresh()  # within the second: not rewritten
        assert read_stats(table)[0]["reconnects"] == 3
        states._next_stats = 0
        states.refresh()
        assert read_stats(table)[0]["reconnects"] == 4
    finally:
        table.close()
        table.unlink()


def test_the_exporter_serves_them_under_the_catalog_names() -> None:
    snap = {
        "venues": [{"venue": "A", "state": "banned", "changes": 2}],
        "venue_stats": [
            {
                "venue": "A",
                "reconnects": 4,
                "resyncs": 2,
                "budget_left": 0.5,
                "http_429": 1,
                "http_418": 1,
                "clock_offset_s": 0.2,
                "order_rtt_s": 0.00075,
                "in_flight": 1,
                "oldest_in_flight_s": 2.5,
            }
        ],
        "counters": {"recorder": {"journaled": 9, "rows_written": 7, "journal_backlog": 2}},
    }
    out = _Out()
    _venues(out, snap)
    _storage(out, snap, {"exec": 100, "recorder": 50})
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in out.families for s in f.samples
    }
    assert got[("gekko_venue_state", (("state", "banned"), ("venue", "A")))] == 1
    assert got[("gekko_venue_state", (("state", "connected"), ("venue", "A")))] == 0
    assert got[("gekko_venue_http_limit_responses_total", (("code", "418"), ("venue", "A")))] == 1
    assert got[("gekko_venue_oldest_in_flight_seconds", (("venue", "A"),))] == 2.5
    assert got[("gekko_venue_order_round_trip_seconds", (("venue", "A"),))] == 0.00075
    assert got[("gekko_db_write_backlog_records", ())] == 2
    assert got[("gekko_journal_bytes", (("journal", "recorder"),))] == 50
