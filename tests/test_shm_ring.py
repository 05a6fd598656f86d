"""Ring behaviour in one process: round-trips, wraps, gating, laps, corruption, lifecycle."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import MESSAGE_DECODER
from engine.messages import OrderFilled, Quote
from shm import kernels as K
from shm.layout import FRAME_HEADER
from shm.region import LayoutVersionError, Region, RegionError
from shm.ring import (
    FrameTooLargeError,
    Ring,
    RingCorruptedError,
    RingError,
    RingFullError,
)


def _payload(i: int, size: int) -> bytes:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def test_structs_round_trip_in_order(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 1 << 14)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    sent = [Quote(i % 3, 100 + i, 5, 101 + i, 7, i, i + 1, i) for i in range(5000)]
    got = []
    for m in sent:
        prod.publish(m)
        while (x := cons.poll()) is not None:
            got.append(x)
    assert got == sent
    fill = OrderFilled(1, 2, 3, 1, 100, 5, 5, 0, 0.25, 2, 9, 1, 2, 3)
    prod.publish(fill)
    assert cons.poll() == fill
    assert cons.poll() is None


def test_raw_view_gives_type_without_decoding(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 1 << 12)
    prod = ring.producer()
    cons = ring.consumer("a")  # no decoder: the transport knows no message types
    prod.publish(Quote(1, 2, 3, 4, 5, 6, 7, 8))
    prod.publish_raw(77, b"abc")
    ftype, view = cons.poll_raw()
    assert ftype == 1  # Quote's tag
    ftype, view = cons.poll_raw()
    assert (ftype, bytes(view)) == (77, b"abc")
    prod.publish(Quote(1, 2, 3, 4, 5, 6, 7, 8))
    with pytest.raises(RingError, match="no decoder"):
        cons.poll()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=300),
    batch=st.integers(1, 40),
    read_batch=st.integers(1, 50),
    use_raw_batch=st.booleans(),
)
def test_any_frames_round_trip_byte_exact(
    sizes: list[int], batch: int, read_batch: int, use_raw_batch: bool
) -> None:
    """Any frame sizes, batch sizes and wraps: every payload comes back byte-exact, in order,
    and the consumer's cursor never passes the producer's, nor falls a lap behind."""
    import uuid

    eid = "h" + uuid.uuid4().hex[:8]
    ring = Ring.create(eid, "p", 4096, max_payload=1024)
    try:
        prod = ring.producer(timeout_s=0.2)
        cons = ring.consumer("a", decoder=MESSAGE_DECODER)
        payloads = [_payload(i, s) for i, s in enumerate(sizes)]
        got: list[bytes] = []

        def drain() -> None:
            while True:
                if use_raw_batch:
                    n, idx = cons.poll_raw_batch(read_batch)
                    if n == 0:
                        return
                    for r in range(n):
                        off, ln = int(idx[r, 0]), int(idx[r, 1])
                        got.append(bytes(cons.data[off : off + ln]))
                else:
                    f = cons.poll_raw()
                    if f is None:
                        return
                    got.append(bytes(f[1]))
                assert cons.pos <= prod.pos
                assert prod.pos - cons.pos <= ring.capacity

        i = 0
        while i < len(payloads):
            chunk = payloads[i : i + batch]
            if len(chunk) == 1:
                try:
                    prod.publish_raw(7, chunk[0])
                except RingFullError:
                    drain()
                    continue
            else:
                types = np.full(len(chunk), 9, dtype=np.uint16)
                flat = (
                    np.frombuffer(b"".join(chunk), dtype=np.uint8)
                    if sum(map(len, chunk))
                    else np.zeros(0, np.uint8)
                )
                offsets = np.zeros(len(chunk) + 1, dtype=np.int64)
                offsets[1:] = np.cumsum([len(c) for c in chunk])
                # the ring holds 4 KiB: publish what fits, draining between attempts
                before = prod.published
                try:
                    prod.publish_raw_batch(types, flat, offsets)
                except RingFullError:
                    done = prod.published - before
                    drain()
                    i += done
                    continue
            i += len(chunk)
            assert prod.pos - cons.pos <= ring.capacity
            if i % (read_batch + 1) == 0:
                drain()
        drain()
        assert got == payloads
    finally:
        ring.unlink()


def test_gating_consumer_holds_back_producer(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer(timeout_s=0.1)
    cons = ring.consumer("slow", decoder=MESSAGE_DECODER)
    with pytest.raises(RingFullError):
        for _ in range(10_000):
            prod.publish_raw(1, b"x" * 100)
    # nothing the gating consumer had not read was overwritten: it reads everything in order
    n = 0
    while cons.poll_raw() is not None:
        n += 1
    assert n == prod.published


def test_non_gating_consumer_counts_exactly_what_it_missed(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    fast = ring.consumer("fast")
    lazy = ring.consumer("lazy", gating=False)
    total = 3000
    received = []
    for i in range(total):
        prod.publish_raw(1, i.to_bytes(8, "little") * (1 + i % 9))
        while fast.poll_raw() is not None:
            pass
        if i % 97 == 0:  # the lazy one reads now and then
            for _ in range(5):
                f = lazy.poll_raw()
                if f is None:
                    break
                received.append(int.from_bytes(f[1][:8], "little"))
    while (f := lazy.poll_raw()) is not None:
        received.append(int.from_bytes(f[1][:8], "little"))
    assert lazy.laps > 0
    assert len(received) + lazy.missed == total
    assert received == sorted(received) and len(set(received)) == len(received)


@pytest.mark.parametrize("read", ["poll", "poll_batch"])
def test_non_gating_decoded_reads_count_exactly_what_they_missed(engine_id: str, read: str) -> None:
    """The decoded reads of a lapped reader (the shared poll core) lose nothing silently."""
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    fast = ring.consumer("fast")
    lazy = ring.consumer("lazy", gating=False, decoder=MESSAGE_DECODER)

    def take(limit: int) -> list[Quote]:
        if read == "poll_batch":
            return lazy.poll_batch(limit)
        out = []
        while len(out) < limit and (m := lazy.poll()) is not None:
            out.append(m)
        return out

    total = 3000
    received: list[int] = []
    for i in range(total):
        prod.publish(Quote(1, i, 1 + i % 9, i + 1, 1, i, i, i))
        while fast.poll_raw() is not None:
            pass
        if i % 97 == 0:  # the lazy one reads now and then
            received += [q.bid_px for q in take(5)]
    while batch := take(64):
        received += [q.bid_px for q in batch]
    assert lazy.laps > 0
    assert len(received) + lazy.missed == total
    assert lazy.received == len(received)
    assert received == sorted(received) and len(set(received)) == len(received)


def test_corrupted_frame_length_is_a_clear_error(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    prod.publish_raw(1, b"hello world")
    # scribble over the frame's length word (the first 4 bytes of the header)
    ring.region.buf[ring.data_offset : ring.data_offset + 4] = (10**9).to_bytes(4, "little")
    with pytest.raises(RingCorruptedError, match="bad frame"):
        cons.poll_raw()
    cons2 = ring.consumer("b", from_start=True, decoder=MESSAGE_DECODER)
    with pytest.raises(RingCorruptedError):
        cons2.poll_raw_batch(16)


def test_undecodable_payload_is_a_clear_error(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    prod.publish_raw(1, b"\xc1\xc1\xc1")  # 0xc1 is never valid MessagePack
    with pytest.raises(RingCorruptedError, match="undecodable"):
        cons.poll()


def test_oversized_frame_is_refused_and_nothing_is_lost(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096, max_payload=512)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    prod.publish_raw(1, b"ok")
    with pytest.raises(FrameTooLargeError):
        prod.publish_raw(1, b"x" * 513)
    prod.publish_raw(1, b"ok2")
    assert bytes(cons.poll_raw()[1]) == b"ok"
    assert bytes(cons.poll_raw()[1]) == b"ok2"


def test_preregistered_consumer_sees_everything_and_resumes(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 1 << 14, consumers=[("risk", True)])
    prod = ring.producer()
    for i in range(10):
        prod.publish_raw(1, bytes([i]))
    cons = ring.consumer(
        "risk", decoder=MESSAGE_DECODER
    )  # attaches after publication started: still sees frame 0
    assert [bytes(cons.poll_raw()[1])[0] for _ in range(4)] == [0, 1, 2, 3]
    cons.commit()
    cons.close()  # a crash-restart re-attaches by name and resumes from the cursor
    again = Ring.attach(engine_id, "r").consumer("risk", decoder=MESSAGE_DECODER)
    assert bytes(again.poll_raw()[1])[0] == 4
    assert again.resumed


def test_attach_refuses_other_layout_and_corruption(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    with pytest.raises(RegionError, match="does not exist"):
        Ring.attach(engine_id, "nope")
    # a different layout version
    words = ring.region.array[:16].view(np.uint32)
    words[3] = 999  # layout field
    with pytest.raises(LayoutVersionError, match="layout version 999"):
        Ring.attach(engine_id, "r")
    ring.region.array[:8] = 0  # magic gone
    with pytest.raises(RegionError, match="bad magic"):
        Ring.attach(engine_id, "r")
    other = Region.create(engine_id, "tbl", 4096, kind=2, layout=1)
    with pytest.raises(RegionError, match="table region"):
        Ring.attach(engine_id, "tbl")
    other.unlink()


def test_capacity_must_be_power_of_two(engine_id: str) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Ring.create(engine_id, "r", 5000)


def test_scan_kernel_rejects_garbage_without_looping() -> None:
    buf = np.full(4096, 0xAB, dtype=np.uint8)
    out = np.zeros((8, 4), dtype=np.int64)
    n, pos, seq, err = K.scan(int(buf.ctypes.data), 4096, 0, 4096, 0, 1024, out)
    assert (n, err) == (0, K.ERR_MARK)
    assert FRAME_HEADER == 16


def test_closed_ring_drains_then_reports_closed(engine_id: str) -> None:
    ring = Ring.create(engine_id, "r", 4096)
    prod = ring.producer()
    cons = ring.consumer("a", wait="block", decoder=MESSAGE_DECODER)
    prod.publish_raw(3, b"last")
    prod.close()
    assert bytes(cons.poll_raw()[1]) == b"last"
    assert cons.wait_for_data(1.0) is False
    assert ring.closed


def test_raw_batch_at_a_lap_boundary_proceeds_once_drained(engine_id: str) -> None:
    """Regression: a full ring with the producer exactly at a lap boundary must not time out."""
    import threading

    ring = Ring.create(engine_id, "r", 4096, consumers=[("c", True)])
    prod = ring.producer(timeout_s=2.0)
    cons = ring.consumer("c", decoder=MESSAGE_DECODER)
    n = 64  # 48-byte payloads make 64-byte frames: 64 of them fill the ring exactly
    types = np.full(n, 7, dtype=np.uint16)
    payload = np.zeros(48 * n, dtype=np.uint8)
    offsets = np.arange(n + 1, dtype=np.int64) * 48
    prod.publish_raw_batch(types, payload, offsets)
    assert prod.pos & (ring.capacity - 1) == 0
    got = []

    def drain() -> None:
        end = time.monotonic() + 1.5
        while time.monotonic() < end and sum(got) < n + 1:
            k, _ = cons.poll_raw_batch(1024)
            got.append(k)
            cons.commit()

    t = threading.Thread(target=drain)
    t.start()
    prod.publish_raw_batch(types[:1], payload[:48], offsets[:2])
    t.join()
    assert sum(got) == n + 1


def test_publish_batch_commits_once_when_it_fits(
    engine_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = Ring.create(engine_id, "r", 1 << 16)
    prod = ring.producer()
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    calls = []
    real = K.commit
    monkeypatch.setattr(K, "commit", lambda *a: calls.append(1) or real(*a))
    msgs = [Quote(1, i, 1, i + 1, 1, i, i, i) for i in range(300)]
    prod.publish_batch(msgs)
    assert len(calls) == 1
    assert cons.poll_batch(1000) == msgs


def test_raw_batch_frame_that_wraps_past_a_quarter_ring_is_written(engine_id: str) -> None:
    """Regression: a frame whose wrap padding plus size exceeds a quarter of the ring must not
    spin forever (the batch writer caps each step at a quarter ring)."""
    ring = Ring.create(engine_id, "r", 4096, max_payload=2048)
    prod = ring.producer(timeout_s=1.0)
    cons = ring.consumer("a", decoder=MESSAGE_DECODER)
    for size in (1600, 1680):  # frames of 1616 + 1696 bytes: 784 bytes left before the end
        prod.publish_raw(1, b"x" * size)
        assert bytes(cons.poll_raw()[1]) == b"x" * size
    cons.commit()
    assert ring.capacity - (prod.pos & (ring.capacity - 1)) == 784
    payload = np.frombuffer(b"y" * 900, dtype=np.uint8)
    prod.publish_raw_batch(
        np.array([2], dtype=np.uint16), payload, np.array([0, 900], dtype=np.int64)
    )
    ftype, view = cons.poll_raw()
    assert (ftype, bytes(view)) == (2, b"y" * 900)
