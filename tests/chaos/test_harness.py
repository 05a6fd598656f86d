"""The chaos harness's own logic, without an engine: the schedule replays from its seed, and each
invariant check catches the violation it is for (so a green chaos run means something)."""

from __future__ import annotations

from pathlib import Path

from engine.messages import NewOrder, OrderFilled, OrderRejected
from tests.chaos import faults as F
from tests.chaos import invariants as I
from tests.chaos.harness import ChaosResult


def _result(tmp_path: Path, **kw: object) -> ChaosResult:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[risk]\nmax_intent_age_ms = 500\n")
    res = ChaosResult(7, 55.0, "chtest", cfg, tmp_path / "var", F.plan(7, 55.0))
    for k, v in kw.items():
        setattr(res, k, v)
    return res


def _fill(fill_id: int, iid: int = 1, side: int = 1, qty: int = 10) -> OrderFilled:
    return OrderFilled(fill_id, fill_id, iid, side, 100, qty, qty, 0, 0.0, 1, fill_id, 0, 0, 0)


def _fill_row(f: OrderFilled) -> dict:
    return {
        "fill_id": f.fill_id,
        "instrument_id": f.instrument_id,
        "side": f.side,
        "fill_qty": f.fill_qty,
    }


def test_the_plan_replays_from_its_seed_and_kills_the_feed_several_times() -> None:
    a, b = F.plan(42, 60.0), F.plan(42, 60.0)
    assert a == b and a != F.plan(43, 60.0)
    assert 8 <= len(a) <= 14
    assert sum(f.kind == "kill" and f.target == "feed" for f in a) >= 2
    assert all(4.0 <= f.at_s <= 60.0 - F.RECOVERY_BUDGET_S for f in a)
    long = F.plan(42, 600.0)
    assert len(long) >= 120 and sum(f.target == "feed" for f in long) >= 15


def test_positions_that_disagree_anywhere_are_a_violation(tmp_path: Path) -> None:
    fills = [_fill(1), _fill(2, side=-1, qty=4)]
    rec = I.Record(
        summary={"positions": {"AAPL": {"instrument_id": 1, "position": 6}}},
        fills=[_fill_row(f) for f in fills],
        venue_fills=fills,
        pg_fills=[(f.fill_id, 1, f.side, f.fill_qty) for f in fills],
        pg_positions={1: 6},
    )
    res = _result(tmp_path)
    assert I.check_positions(res, rec) == []
    rec.pg_positions = {1: 10}
    (v,) = I.check_positions(res, rec)
    assert "instrument 1" in v and "PostgreSQL positions 10" in v and "exec 6" in v


def test_a_fill_lost_or_recorded_twice_is_a_violation(tmp_path: Path) -> None:
    fills = [_fill(1), _fill(2), _fill(3)]
    rec = I.Record(
        fills=[_fill_row(f) for f in fills[:2]] + [_fill_row(fills[0])],
        venue_fills=fills,
        pg_fills=[(f.fill_id, 1, 1, 10) for f in fills],
    )
    out = I.check_fills_once(_result(tmp_path), rec)
    assert any("twice in fills.jsonl: [1]" in v for v in out)
    assert any("missing from fills.jsonl: [3]" in v for v in out)
    assert not any("PostgreSQL" in v for v in out)


def test_a_client_order_id_sent_twice_is_a_violation(tmp_path: Path) -> None:
    o = NewOrder(5, 1, 1, 1, 2, 1, 100, 10, 0, 0)
    rec = I.Record(venue_orders=[o])
    assert I.check_client_order_ids(_result(tmp_path), rec) == []
    rec.venue_rejects = [OrderRejected(5, 1, "duplicate client_order_id 5", 0, 0, 0)]
    (v,) = I.check_client_order_ids(_result(tmp_path), rec)
    assert "used client order id: [5]" in v


def test_an_order_approved_on_data_older_than_the_limit_is_a_violation(tmp_path: Path) -> None:
    ms = 1_000_000
    rec = I.Record(
        orders=[
            {"type": "NewOrder", "ts_origin": 1, "ts_approved": 1 + 400 * ms},
            {"type": "CancelOrder", "ts_origin": 1, "ts_approved": 1 + 9000 * ms},
        ]
    )
    assert I.check_staleness(_result(tmp_path), rec) == []  # [risk] max_intent_age_ms = 500
    rec.orders.append({"type": "ReplaceOrder", "ts_origin": 1, "ts_approved": 1 + 2500 * ms})
    (v,) = I.check_staleness(_result(tmp_path), rec)
    assert "1 orders" in v and "worst 2500 ms" in v


def test_an_early_stop_a_bad_exit_and_an_unexplained_crash_are_violations(tmp_path: Path) -> None:
    res = _result(tmp_path, started=True, rc=0, ran_s=56.0)
    ok = I.Record(summary={"stop_reason": "--duration 55s reached", "consistent": True})
    assert I.check_ran_to_end(res, ok) == []
    res.rc, res.ran_s = 1, 20.0
    bad = I.Record(summary={"stop_reason": "feed failed repeatedly", "consistent": True})
    out = I.check_ran_to_end(res, bad)
    assert any("stopped 20.0s into a 55s run" in v for v in out)
    assert any("exit code 1" in v for v in out)
    bad.summary["restarts"] = [{"worker": "feed", "reason": "exited with code 1", "at_s": 3.0}]
    (v,) = I.check_restarts_explained(res, bad)
    assert "feed exited with code 1" in v and "no fault explains" in v


def test_a_lost_audit_record_is_a_violation(tmp_path: Path) -> None:
    res = _result(tmp_path, var=tmp_path / "run" / "var")
    res.var.parent.mkdir()
    (res.var.parent / "gekko.stderr").write_text(
        "08:02:00.438 ERROR   [supervisor] audit: operator.resume not recorded (ring control: "
        "no room for 168 bytes after 2.000s)\n"
    )
    (v,) = I.check_audit_complete(res, I.Record())
    assert "1 audit records lost" in v and "operator.resume" in v
