"""The ring's one-message path with and without ``shm.fastpath`` (plain stores vs numba kernels).

Both paths must move the same frames: every message reaches a gating reader byte-exact and in
order whatever the sizes and wraps; a lapped non-gating reader gets an in-order subsequence and
counts exactly what it missed; a producer on the plain path still wakes a declared sleeper (the
one-word sleepers summary) and stops posting once it is awake again.
"""

from __future__ import annotations

import platform
import uuid

import msgspec
import posix_ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm import fastpath
from shm import kernels as K
from shm.layout import SL_CURSOR, SLEEPERS
from shm.ring import Ring


class _Blob(msgspec.Struct, tag=77, array_like=True):
    i: int
    data: bytes


_DEC = msgspec.msgpack.Decoder(_Blob)
_CAP = 8192


@pytest.fixture(params=[True, False], ids=["plain", "numba"])
def plain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not fastpath.PLAIN:
        pytest.skip("the plain path needs x86-64 Linux with membarrier (and GEKKO_SHM_PLAIN != 0)")
    monkeypatch.setattr(fastpath, "PLAIN", request.param)
    return request.param


def test_the_plain_path_is_taken_where_the_platform_allows(engine_id: str) -> None:
    if platform.machine() != "x86_64" or not fastpath.MEMBARRIER:
        assert not fastpath.PLAIN
        return
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=_DEC)
    assert prod._plain == cons._plain == fastpath.PLAIN
    prod.detach()
    cons.close()


# the fixture only sets which path roles take: the same for every generated input
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(["pub", "batch"]),
                st.lists(st.integers(0, 1000), min_size=1, max_size=8),
            ),
            st.tuples(st.sampled_from(["g", "gb"]), st.integers(1, 12)),
            st.tuples(st.just("n"), st.integers(1, 12)),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_one_message_publish_and_poll_round_trip(plain: bool, ops: list[tuple]) -> None:
    ring = Ring.create("f" + uuid.uuid4().hex[:8], "p", _CAP, max_payload=1024)
    try:
        prod = ring.producer(timeout_s=0.5)
        assert prod._plain == plain
        g = ring.consumer("g", gating=True, decoder=_DEC)
        ng = ring.consumer("n", gating=False, decoder=_DEC)
        sent: list[_Blob] = []
        got_g: list[_Blob] = []
        got_n: list[_Blob] = []

        def read(c, out: list[_Blob], k: int) -> None:  # type: ignore[no-untyped-def]
            for _ in range(k):
                m = c.poll()
                if m is None:
                    return
                out.append(m)

        for op in ops:
            if op[0] in ("pub", "batch"):
                for size in op[1] if op[0] == "pub" else op[1][:1]:
                    # room for a frame and its wrap padding behind the cursor handed back
                    if prod.pos - ring._slot_word(g.slot, SL_CURSOR) > _CAP - 2200:
                        read(g, got_g, 1 << 30)
                    m = _Blob(len(sent), bytes([len(sent) & 0xFF]) * size)
                    if op[0] == "pub":
                        prod.publish(m)
                    else:
                        prod.publish_batch([m])  # a batch of one takes publish's path
                    sent.append(m)
                    assert prod.published == len(sent)
            elif op[0] == "gb":  # a few bytes available: frame by frame; more: the numba scan
                got_g.extend(g.poll_batch(op[1]))
            else:
                read(g if op[0] == "g" else ng, got_g if op[0] == "g" else got_n, op[1])
            assert g.pos <= prod.pos and prod.pos - g.pos <= _CAP
        read(g, got_g, 1 << 30)
        read(ng, got_n, 1 << 30)
        assert got_g == sent
        idx = [m.i for m in got_n]
        assert idx == sorted(set(idx)) and all(m == sent[m.i] for m in got_n)
        assert ng.received + ng.missed == len(sent)
        assert g.poll() is None and ng.poll() is None
        prod.detach()
        g.close()
        ng.close()
    finally:
        ring.unlink()


def test_a_declared_sleeper_is_posted_once_then_not_again(engine_id: str, plain: bool) -> None:
    ring = Ring.create(engine_id, "r", 4096, max_consumers=4)
    prod = ring.producer()
    other = ring.consumer("o", decoder=_DEC)  # awake: never posted
    cons = ring.consumer("a", decoder=_DEC)
    sem = posix_ipc.Semaphore(f"{ring.region.name}_{cons.slot}", posix_ipc.O_CREAT, initial_value=0)
    try:
        cons.declare_sleep()
        assert K.load_word(ring.base + SLEEPERS) == 1 << cons.slot
        prod.publish(_Blob(0, b"x"))
        assert sem.value == 1  # woken
        prod.publish(_Blob(1, b"y"))
        assert sem.value == 1  # its flag was taken by the first post: one post per sleep
        cons.clear_sleep()
        assert K.load_word(ring.base + SLEEPERS) == 0
        prod.publish(_Blob(2, b"z"))
        assert sem.value == 1
        assert [cons.poll().i for _ in range(3)] == [0, 1, 2]
        assert other.slot not in {s for s in range(4) if prod._sems.get(ring._wake_name(s))}
    finally:
        sem.close()
        prod.detach()
        other.close()
        cons.close()


def test_a_reader_that_died_asleep_stops_counting_as_a_sleeper_when_it_returns(
    engine_id: str, plain: bool
) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=_DEC)
    cons.declare_sleep()
    cons.close()  # as if it died asleep: its flag and bit stay raised
    assert K.load_word(ring.base + SLEEPERS) != 0
    again = ring.consumer("a", decoder=_DEC)
    assert K.load_word(ring.base + SLEEPERS) == 0
    prod.publish(_Blob(5, b"q"))
    assert again.poll() == _Blob(5, b"q")
    prod.detach()
    again.close()
