"""The supervisor's control outbox: a full control ring delays messages, in order; none is lost.

Found by the chaos suite: an operator burst while a worker was stopped filled the control ring,
and the supervisor gave up on the message after 2 s (the audit record of `gekko kill` was lost).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import MESSAGE_DECODER
from engine.messages import AuditEvent, Control, ControlCommand
from ops.control_outbox import ControlOutbox
from shm.ring import Ring


def _msg(i: int) -> Control | AuditEvent:
    if i % 2:
        return AuditEvent(i, "op", f"operator.kill.{i}", "{}")
    return Control(int(ControlCommand.KILL), i, f"gekko kill #{i}")


def _ring(engine_id: str, name: str) -> tuple[Ring, ControlOutbox, object]:
    ring = Ring.create(engine_id, name, 1 << 12, consumers=[("risk", True)])
    outbox = ControlOutbox(ring.producer(wait="backoff", timeout_s=0.001))
    return ring, outbox, ring.consumer("risk", decoder=MESSAGE_DECODER)


def test_a_full_ring_queues_in_order_and_nothing_is_lost(engine_id: str) -> None:
    ring, outbox, reader = _ring(engine_id, "ctl")
    sent = [_msg(i) for i in range(400)]  # far more than 4 KiB: the reader is "stopped"
    on_ring = [outbox.send(m) for m in sent]  # each returns at once: queued, not waited on
    assert on_ring[0] and not on_ring[-1] and len(outbox) > 0
    got = []
    while len(got) < len(sent):  # the reader comes back: every message, once, in order
        while (m := reader.poll()) is not None:  # type: ignore[attr-defined]
            got.append(m)
        outbox.flush()
    assert got == sent and len(outbox) == 0
    ring.close()


def test_what_never_reached_the_ring_is_handed_back(engine_id: str) -> None:
    ring, outbox, _ = _ring(engine_id, "ctl2")
    done: list[int] = []
    for i in range(300):
        outbox.send(_msg(i), on_sent=lambda i=i: done.append(i))
    assert outbox.drain(0.05) > 0
    left = outbox.take_all()
    assert done == list(range(len(done)))  # callbacks fire for what went out, in order
    assert [*[_msg(i) for i in done], *left] == [_msg(i) for i in range(300)]
    assert len(outbox) == 0
    ring.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=30))
def test_any_interleaving_of_bursts_and_reads_keeps_order(steps: list[tuple[int, int]]) -> None:
    import uuid

    eid = "o" + uuid.uuid4().hex[:8]
    ring, outbox, reader = _ring(eid, "ctl")
    try:
        n, got = 0, []
        for burst, reads in steps:
            for _ in range(burst):
                outbox.send(_msg(n))
                n += 1
            for _ in range(reads):
                if (m := reader.poll()) is not None:  # type: ignore[attr-defined]
                    got.append(m)
            outbox.flush()
        while len(got) < n:
            while (m := reader.poll()) is not None:  # type: ignore[attr-defined]
                got.append(m)
            outbox.flush()
        assert got == [_msg(i) for i in range(n)]
    finally:
        ring.close()
        ring.unlink()
