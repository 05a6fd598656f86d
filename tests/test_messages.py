"""engine.messages: constructors that copy by name, and the typed refusals of cancel / replace
requests (on the wire, in the record, in the run summary)."""

from __future__ import annotations

import msgspec
import pytest

from engine.messages import (
    TAG_BY_TYPE,
    CancelOrder,
    CancelRejectReason,
    IntentCancel,
    IntentNew,
    Message,
    NewOrder,
    OrderAccepted,
    OrderCancelRejected,
    OrderRejected,
    OrderReplaceRejected,
    ReplaceOrder,
    ReplaceRejectReason,
    _copier,
)


def _distinct(struct: type[msgspec.Struct]) -> msgspec.Struct:
    """An instance whose every field holds a value no other field (and no default) has."""
    values = {}
    for i, f in enumerate(msgspec.structs.fields(struct)):
        n = 1000 + i
        if "dict" in str(f.type):
            values[f.name] = {f"p{n}": float(n)}
        elif "list" in str(f.type):
            values[f.name] = [(n, n + 1)]
        else:
            values[f.name] = n
    return struct(**values)


@pytest.mark.parametrize(
    ("intent_type", "order_type"),
    [(IntentNew, NewOrder), (IntentCancel, CancelOrder)],
)
def test_an_order_from_its_intent_carries_every_shared_field(intent_type, order_type) -> None:
    intent = _distinct(intent_type)
    order = order_type.from_intent(intent, 77)
    shared = set(intent_type.__struct_fields__) & set(order_type.__struct_fields__)
    assert shared >= {"client_order_id", "strategy_id", "instrument_id", "ts_origin"}
    assert {f: getattr(order, f) for f in shared} == {f: getattr(intent, f) for f in shared}
    assert order.ts_approved == 77
    assert set(order_type.__struct_fields__) - shared == {"ts_approved"}


def test_the_copier_carries_a_field_added_to_both_and_refuses_a_required_one_it_cannot_fill():
    class Src(msgspec.Struct, array_like=True):
        a: int
        b: int
        later: str = ""

    class Dst(msgspec.Struct, array_like=True):
        a: int
        stamp: int
        b: int
        own: int = 5  # only the destination has it: left to its default
        later: str = ""

    copy = _copier(Src, Dst, "stamp")
    assert copy(Src(1, 2, later="x"), 9) == Dst(1, 9, 2, 5, "x")

    class Needs(msgspec.Struct):
        a: int
        nobody: int

    with pytest.raises(TypeError, match="nobody"):
        _copier(Src, Needs)


def test_the_ack_and_the_reject_of_an_order_are_built_from_the_order() -> None:
    o = _distinct(NewOrder)
    ack = OrderAccepted.for_order(o, 55, 66, 77)
    assert ack == OrderAccepted(
        o.client_order_id, 55, o.instrument_id, o.side, o.px, o.qty, o.ts_origin, 66, 77
    )
    rej = OrderRejected.for_order(o, "exec: no", 66, 77)
    assert rej == OrderRejected(o.client_order_id, o.instrument_id, "exec: no", o.ts_origin, 66, 77)
    it = _distinct(IntentNew)
    assert OrderRejected.for_order(it, "risk: x", 1, 2).ts_origin == it.ts_origin


def test_request_refusals_have_their_own_tags_and_round_trip_the_ring_codec() -> None:
    cancel = CancelOrder(3, 1, 9, 111, 0)
    c = OrderCancelRejected.for_request(cancel, CancelRejectReason.NOT_OPEN, "gone", 5, 6)
    rep = ReplaceOrder(4, 1, 9, 100, 2, 222, 0)
    r = OrderReplaceRejected.for_request(rep, ReplaceRejectReason.SELF_TRADE, "stp", 7, 8)
    assert (c.client_order_id, c.instrument_id, c.ts_origin) == (3, 9, 111)
    assert (r.client_order_id, r.instrument_id, r.ts_origin) == (4, 9, 222)
    tags = {TAG_BY_TYPE[OrderCancelRejected], TAG_BY_TYPE[OrderReplaceRejected]}
    assert len(tags) == 2 and not tags & {TAG_BY_TYPE[OrderRejected]}
    dec = msgspec.msgpack.Decoder(Message)
    for m in (c, r):
        back = dec.decode(msgspec.msgpack.encode(m))
        assert type(back) is type(m) and back == m
    assert c.text == "not_open: gone" and r.text == "self_trade: stp"
    assert OrderCancelRejected(1, 1, 99, "", 0, 0, 0).text == "reason 99"


def test_the_record_stores_request_refusals_as_their_own_kind(pg_dsn: str) -> None:
    import psycopg

    from ops.store import migrate as mig
    from ops.store.pg import run_tx
    from ops.store.reader import load_run_state
    from ops.store.writer import Rows, Writer

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    c = OrderCancelRejected(31, 1, CancelRejectReason.UNKNOWN_ORDER, "unknown id", 5, 6, 7)
    r = OrderReplaceRejected(32, 1, ReplaceRejectReason.HALTED, "trading halted", 5, 6, 7)
    rows = Rows()
    for m in (c, r):
        rows.add(12, m)
    assert rows.ignored == 0
    with psycopg.connect(pg_dsn) as conn:
        run_tx(conn, lambda cn: Writer().write(cn, rows))
        got = conn.execute(
            "SELECT kind, reason FROM order_events WHERE run_id = 12 ORDER BY seq"
        ).fetchall()
        state = load_run_state(conn, 12)
    assert got == [
        ("OrderCancelRejected", "unknown_order: unknown id"),
        ("OrderReplaceRejected", "halted: trading halted"),
    ]
    assert state.events == [c, r] and [type(e) for e in state.events] == [
        OrderCancelRejected,
        OrderReplaceRejected,
    ]


def test_the_run_summary_counts_refused_cancels_and_replaces_among_venue_rejects() -> None:
    from ops.config import load_config
    from ops.report import RunRecord, format_summary
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "config.toml")
    rec = RunRecord(cfg)
    rec.on_event(OrderRejected(1, 1, "venue: no", 0, 0, 0))
    rec.on_event(OrderCancelRejected(2, 1, CancelRejectReason.NOT_OPEN, "", 0, 0, 0))
    rec.on_event(OrderCancelRejected(3, 1, CancelRejectReason.NOT_OPEN, "", 0, 0, 0))
    rec.on_event(OrderReplaceRejected(4, 1, ReplaceRejectReason.INVALID, "", 0, 0, 0))
    assert (rec.venue_rejects, rec.cancel_rejects, rec.replace_rejects) == (4, 2, 1)
    s = {"venue_rejects": 4, "cancel_rejects": 2, "replace_rejects": 1, "risk_rejects": 0}
    assert "rejects risk/venue 0/4 (refused cancels/replaces 2/1)" in format_summary(s, cfg)
