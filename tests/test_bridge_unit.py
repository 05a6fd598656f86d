"""The bridge's pieces without processes: ring batches with their sequence numbers (gating and
non-gating readers), the remote envelope, and dropping re-delivered remote messages."""

from __future__ import annotations

import msgspec
import pytest

from engine.messages import OrderFilled
from procs.bridge import REMOTE_DECODER, Remote, RemoteFilter, _Source, remote_to_json
from shm.ring import Ring


def _fill(i: int) -> OrderFilled:
    return OrderFilled(i, i, 1, 1, 19000 + i, 5, 5, 0, 0.1, 2, i, 10 + i, 20 + i, 30 + i)


@pytest.mark.parametrize("gating", [True, False])
def test_source_batches_carry_the_ring_sequence_and_hold_until_sent(
    engine_id: str, gating: bool
) -> None:
    ring = Ring.create(engine_id, "events", 1 << 16, consumers=[("bridge", gating)])
    try:
        prod = ring.producer(wait="backoff")
        src = _Source("events", ring.consumer("bridge", gating=gating), "s")
        for i in range(5):
            prod.publish(_fill(i))
        src.fill(3)
        assert [f[0] for f in src.pending] == [0, 1, 2]
        assert [f[1] for f in src.pending] == [33, 33, 33]  # the frame type: OrderFilled's tag
        assert msgspec.msgpack.decode(src.pending[1][2], type=OrderFilled) == _fill(1)
        src.fill(3)  # the batch is not in Redis yet: nothing more is read
        assert [f[0] for f in src.pending] == [0, 1, 2]
        src.pending = []  # sent
        for i in range(5, 7):
            prod.publish(_fill(i))
        got: list[int] = []
        for _ in range(4):  # a reader may hand over what it knows of first, the rest next time
            src.fill(10)
            got += [f[0] for f in src.pending]
            src.pending = []
        assert got == [3, 4, 5, 6]
        assert not src.drained()  # the producer is still open
        prod.close()
        assert src.drained()
    finally:
        ring.unlink()


def test_remote_envelope_round_trip_and_json() -> None:
    r = Remote("alpha", "events", "1700000000000-3", 123, _fill(3))
    back = REMOTE_DECODER.decode(msgspec.msgpack.encode(r))
    assert back == r and isinstance(back.msg, OrderFilled)
    j = remote_to_json(back)
    assert j["type"] == "OrderFilled" and j["fill_id"] == 3 and j["ts_recv"] == 33  # the fill's own
    assert (j["remote_source"], j["remote_ring"], j["remote_id"], j["remote_delivered_ns"]) == (
        "alpha",
        "events",
        "1700000000000-3",
        123,
    )


def test_remote_filter_drops_redelivered_and_malformed_ids_per_stream() -> None:
    f = RemoteFilter()
    seq = [
        ("a", "events", "5-0"),
        ("a", "events", "5-1"),
        ("b", "events", "1-0"),
        ("a", "events", "5-1"),  # re-delivered
        ("a", "events", "4-9"),  # older
        ("a", "events", "6-0"),  # a later run
        ("a", "orders", "1-0"),  # another stream of the same engine
        ("a", "events", "junk"),
    ]
    kept = [(s, r, i) for s, r, i in seq if f.fresh(Remote(s, r, i, 0, _fill(0)))]
    assert kept == [
        ("a", "events", "5-0"),
        ("a", "events", "5-1"),
        ("b", "events", "1-0"),
        ("a", "events", "6-0"),
        ("a", "orders", "1-0"),
    ]
    assert f.dropped == 3
