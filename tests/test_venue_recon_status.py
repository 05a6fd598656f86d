"""Venue states where the operator looks (procs.venue_status): exec writes the shm ``venues``
table, the supervisor reads it for the status line, ``gekko status`` and the audit log; the
kill switch and resume reach the live venues."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest

from engine.exec_engine import ExecEngine
from engine.messages import CancelOrder
from engine.routing import SmartRouter
from engine.venue_state import VenueState
from procs.venue_status import (
    VenueStates,
    create_table,
    live_venues,
    read_states,
    status_words,
    venue_names,
)
from tests.test_venue_recon import BUY, connect, external, live, order, table


@pytest.fixture
def venue_table():
    cfg = SimpleNamespace(venues=[SimpleNamespace(name="A"), SimpleNamespace(name="B")])
    t = create_table(f"vq{os.getpid() % 100000}", cfg)
    yield t
    t.unlink()


def test_the_table_has_a_row_per_venue_and_shows_only_live_ones(venue_table) -> None:
    assert venue_names(SimpleNamespace(venues=[])) == ["sim"]
    assert read_states(venue_table) == []  # no live venue wrote: nothing to show
    assert status_words([]) == ""


def test_states_reach_the_table_on_change_with_their_reason(venue_table, caplog) -> None:
    fa, a = live("A", policy="halt", shared=True)
    fb, b = live("B", shared=True)
    router = SmartRouter({"A": a, "B": b})
    assert live_venues(router) == [a, b]
    states = VenueStates(venue_table, ["A", "B"], router)
    connect(fb, b, 1)
    external(fa)
    with caplog.at_level(logging.WARNING, logger="gekko.venues"):
        connect(fa, a, 1)
        states.refresh()
    rows = {r["venue"]: r for r in read_states(venue_table)}
    assert rows["B"]["state"] == "connected" and rows["B"]["reason"] == ""
    assert rows["A"]["state"] == "halted" and "777" in rows["A"]["reason"]
    assert status_words(list(rows.values())) == "venues A:HALTED B:connected"
    assert "venue A halted" in caplog.text  # the log says it too, with the reason
    changes = rows["A"]["changes"]
    states.refresh()  # nothing changed: the row is not rewritten
    assert {r["venue"]: r for r in read_states(venue_table)}["A"]["changes"] == changes
    fb.drop()
    b.poll(2)
    states.refresh()
    rows = {r["venue"]: r for r in read_states(venue_table)}
    assert rows["B"]["state"] == "down" and "1006" in rows["B"]["reason"]


def test_kill_cancels_what_nobody_here_knows_and_resume_lifts_a_halt(venue_table) -> None:
    fa, a = live("A", policy="halt")
    eng = ExecEngine(a, table("A"))
    states = VenueStates(venue_table, ["A", "B"], a)
    connect(fa, eng, 1)
    eng.on_order(order(5, BUY, 2, 9000), 2)  # ours, resting
    external(fa, 778)  # placed behind our back after the reconciliation
    assert {o.client_order_id for o in fa.sim.open_orders()} == {5, 778}
    eng.cancel_all(3)  # exec cancels its own
    assert states.kill(3) == []  # and the venue's unknown ones, publishing nothing of them
    assert fa.refreshes_requested == 1  # from a fresh view of the venue
    assert [e for e in eng.poll(4) if getattr(e, "client_order_id", 0) == 778] == []
    assert fa.sim.open_orders() == []
    assert a.venue_status().state == VenueState.CONNECTED
    external(fa, 780, now=5)  # until a resume, a kill cancels what appears there too
    connect(fa, eng, 5)
    assert fa.sim.open_orders() == []
    states.resume(6)
    external(fa, 779, now=6)
    connect(fa, eng, 6)
    assert a.venue_status().state == VenueState.HALTED  # after the resume: the policy again
    fa.sim.cancel(CancelOrder(779, 9, 1, 7, 7), 7)  # the operator removed it by hand
    states.resume(7)
    eng.poll(8)
    states.refresh()
    assert a.venue_status().state == VenueState.CONNECTED
    assert read_states(venue_table)[0]["state"] == "connected"


def test_the_live_market_data_state_shows_beside_the_venues() -> None:
    from procs.venue_status import md_state_word

    sim_only = SimpleNamespace(venues=[SimpleNamespace(kind="sim")])
    real = SimpleNamespace(venues=[SimpleNamespace(kind="binanceus")])
    assert md_state_word(sim_only, {"md_state": 0}) == ""  # a simulated market has no state
    assert md_state_word(real, {"md_state": 0}) == "connected"
    assert md_state_word(real, {"md_state": 2}) == "down"
    rows = [{"venue": "bn", "state": "connected"}]
    assert status_words(rows, "down") == "venues bn:connected md:DOWN"
    assert status_words([], "resyncing") == "venues md:RESYNCING"  # paper on live data


def test_the_supervisor_audits_each_venue_state_change_once(venue_table) -> None:
    from ops.supervisor import Supervisor

    sup = Supervisor.__new__(Supervisor)  # only what _watch_venues reads
    sup.venue_table, sup.run_id, sup.metrics = venue_table, 7, {}
    sup.cfg = SimpleNamespace(venues=[SimpleNamespace(name="A", kind="binanceus")])
    sup._venue_states, sup._venue_changes, sup._md_state = [], {}, ""
    audited: list[tuple[str, str, dict]] = []
    sup._audit = lambda actor, action, **d: audited.append((actor, action, d))
    fa, a = live("A", policy="halt")
    states = VenueStates(venue_table, ["A", "B"], a)
    connect(fa, a, 1)
    states.refresh()
    sup._watch_venues()
    sup._watch_venues()  # nothing changed: nothing more
    external(fa, 5, now=2)
    connect(fa, a, 2)
    states.refresh()
    sup._watch_venues()
    assert [(x[1], x[2]["venue"], x[2]["state"]) for x in audited] == [
        ("venue.state", "A", "connected"),
        ("venue.state", "A", "halted"),
    ]
    assert "unknown to our record" in audited[-1][2]["reason"]
    assert sup._venue_states[0]["state"] == "halted"  # what gekko status answers


def test_exec_hands_the_kill_switch_and_resume_to_live_venues_only(venue_table) -> None:
    from engine.messages import Control, ControlCommand
    from procs.exec import _on_control

    calls: list[str] = []
    stage = SimpleNamespace(
        cancel_all=lambda now: calls.append("cancel_all"), emit=lambda evs: calls.append("emit")
    )
    sim_only = VenueStates(None, ["sim"], object())
    _on_control(stage, sim_only, Control(int(ControlCommand.KILL), 1, "gekko kill"))
    assert calls == []  # the simulator: risk's cancels are the kill switch
    fa, a = live("A", policy="halt")
    states = VenueStates(venue_table, ["A", "B"], a)
    external(fa, 5, now=2)
    connect(fa, a, 2)
    assert a.venue_status().state == VenueState.HALTED
    _on_control(stage, states, Control(int(ControlCommand.KILL), 3, "gekko kill"))
    assert calls == ["cancel_all", "emit"] and fa.refreshes_requested == 1
    fa.sim.cancel(CancelOrder(5, 9, 1, 4, 4), 4)
    _on_control(stage, states, Control(int(ControlCommand.RESUME), 5, "gekko resume"))
    a.poll(6)
    assert a.venue_status().state == VenueState.CONNECTED
