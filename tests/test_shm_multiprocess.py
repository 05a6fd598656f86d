"""The ring across real processes: a 5-million-frame stress run, dead readers, dead producers."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from engine.codec import MESSAGE_DECODER
from engine.messages import Quote
from shm import kernels as K
from shm.region import cleanup_stale, list_regions, pid_alive
from shm.ring import ProducerDeadError, Ring
from tests.conftest import mp_context

TOTAL = 5_000_000
BATCH = 4096


def _make_batch(start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames whose payload starts with their index, then 0..23 filler bytes (varying size)."""
    idx = np.arange(start, start + n, dtype=np.uint64)
    extra = (idx % 24).astype(np.int64)
    lengths = 8 + extra
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    payload = np.zeros(int(offsets[-1]), dtype=np.uint8)
    for k in range(8):  # little-endian index in the first 8 bytes of each frame
        payload[offsets[:-1] + k] = ((idx >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.uint8)
    return np.full(n, 5, dtype=np.uint16), payload, offsets


def _gating_reader(engine_id: str, name: str, out) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.attach(engine_id, "stress")
    cons = ring.consumer(name, wait="backoff", decoder=MESSAGE_DECODER)
    h = K.FNV_OFFSET
    count = 0
    first_bad = -1
    while True:
        n, idx = cons.poll_raw_batch(8192)
        if n == 0:
            if not cons.wait_for_data(10.0):
                break
            continue
        h = K.checksum_frames(ring.data_addr, ring.capacity, idx, n, h)
        # in order, each exactly once: the embedded index equals the running count
        data = np.frombuffer(cons.data, dtype=np.uint8)
        offs = idx[:n, 0]
        embedded = np.zeros(n, dtype=np.uint64)
        for k in range(8):
            embedded |= data[offs + k].astype(np.uint64) << np.uint64(8 * k)
        expect = np.arange(count, count + n, dtype=np.uint64)
        if first_bad < 0 and not np.array_equal(embedded, expect):
            first_bad = count + int(np.argmax(embedded != expect))
        count += n
    out.put((name, count, h, first_bad))


def _slow_reader(engine_id: str, out) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.attach(engine_id, "stress")
    cons = ring.consumer("monitor", gating=False, wait="backoff", decoder=MESSAGE_DECODER)
    received = 0
    last = -1
    in_order = True
    while True:
        f = cons.poll_raw()
        if f is None:
            if not cons.wait_for_data(10.0):
                break
            continue
        i = int.from_bytes(f[1][:8], "little")
        in_order &= i > last
        last = i
        received += 1
        if received % 2000 == 0:
            time.sleep(0.002)  # slow: gets lapped
    out.put(("monitor", received, cons.missed, in_order))


@pytest.mark.timeout(300)
def test_five_million_frames_two_gating_one_lapped(engine_id: str) -> None:
    ctx = mp_context()
    ring = Ring.create(
        engine_id, "stress", 1 << 20, consumers=[("a", True), ("b", True), ("monitor", False)]
    )
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_gating_reader, args=(engine_id, "a", out)),
        ctx.Process(target=_gating_reader, args=(engine_id, "b", out)),
        ctx.Process(target=_slow_reader, args=(engine_id, out)),
    ]
    for p in procs:
        p.start()
    prod = ring.producer(wait="backoff", timeout_s=60)
    h = K.FNV_OFFSET
    sent = 0
    while sent < TOTAL:
        n = min(BATCH * 16, TOTAL - sent)
        types, payload, offsets = _make_batch(sent, n)
        h = K.checksum_bytes(payload, h)
        prod.publish_raw_batch(types, payload, offsets)
        sent += n
    prod.close()
    results = {}
    for _ in procs:
        r = out.get(timeout=120)
        results[r[0]] = r
    for p in procs:
        p.join(30)
    assert prod.published == TOTAL
    for name in ("a", "b"):
        _, count, checksum, first_bad = results[name]
        assert count == TOTAL
        assert first_bad == -1, f"{name}: frame {first_bad} out of order"
        assert checksum == h
    _, received, missed, in_order = results["monitor"]
    assert in_order
    assert missed > 0, "the slow reader was expected to be lapped"
    assert received + missed == TOTAL
    ring.unlink()


def _struct_reader(engine_id: str, n: int, out) -> None:  # type: ignore[no-untyped-def]
    cons = Ring.attach(engine_id, "q").consumer("r", wait="block", decoder=MESSAGE_DECODER)
    total = 0
    count = 0
    while count < n:
        m = cons.read(5.0)
        if m is None:
            break
        total += m.bid_px
        count += 1
    out.put((count, total))


def test_structs_across_processes_with_block_wait(engine_id: str) -> None:
    ctx = mp_context()
    ring = Ring.create(engine_id, "q", 1 << 14, consumers=[("r", True)])
    out = ctx.Queue()
    p = ctx.Process(target=_struct_reader, args=(engine_id, 50_000, out))
    p.start()
    prod = ring.producer(wait="block")
    for i in range(50_000):
        prod.publish(Quote(1, i, 1, i + 1, 1, i, i, i))
        if i % 10_000 == 0:
            time.sleep(0.01)  # let the reader fall asleep on its semaphore now and then
    count, total = out.get(timeout=60)
    p.join(10)
    assert count == 50_000
    assert total == sum(range(50_000))


def _reader_that_stalls(engine_id: str) -> None:
    cons = Ring.attach(engine_id, "k").consumer("victim", decoder=MESSAGE_DECODER)
    cons.poll_raw()
    time.sleep(60)  # reads once, then stalls until killed


def test_killed_gating_consumer_stops_gating_after_grace(
    engine_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = mp_context()
    ring = Ring.create(engine_id, "k", 4096, consumers=[("victim", True)])
    prod = ring.producer(wait="backoff", timeout_s=10, dead_reader_grace_s=0.3)
    prod.publish_raw(1, b"first")
    p = ctx.Process(target=_reader_that_stalls, args=(engine_id,))
    p.start()
    deadline = time.monotonic() + 10
    while ring.slots()[0]["pid"] in (0, os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="gekko.shm.ring"):
        for _ in range(2000):  # far more than the ring holds: needs the dead reader dropped
            prod.publish_raw(1, b"x" * 64)
    p.join(5)
    assert prod.dead_readers_dropped == 1
    assert ring.slots()[0]["state"] == "dead"
    assert time.monotonic() - t0 >= 0.3
    assert "stopped gating" in caplog.text


def _producer_then_die(engine_id: str) -> None:
    prod = Ring.attach(engine_id, "d").producer()
    prod.publish_raw(1, b"one")
    time.sleep(60)


def test_consumer_notices_dead_producer(engine_id: str) -> None:
    ctx = mp_context()
    ring = Ring.create(engine_id, "d", 4096, consumers=[("c", True)])
    cons = ring.consumer("c", wait="block", decoder=MESSAGE_DECODER)
    p = ctx.Process(target=_producer_then_die, args=(engine_id,))
    p.start()
    assert cons.wait_for_data(10.0)
    assert bytes(cons.poll_raw()[1]) == b"one"
    deadline = time.monotonic() + 10
    while ring.producer_pid != p.pid and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.join(5)
    with pytest.raises(ProducerDeadError, match=str(p.pid)):
        for _ in range(10):
            cons.read(1.0)


def _create_and_crash(engine_id: str) -> None:
    Ring.create(engine_id, "left", 4096)
    os._exit(0)  # no clean-up: the region stays behind like after a crash


def test_stale_regions_of_a_crashed_run_are_removed(engine_id: str) -> None:
    ctx = mp_context()
    p = ctx.Process(target=_create_and_crash, args=(engine_id,))
    p.start()
    p.join(10)
    assert not pid_alive(p.pid)
    live = Ring.create(engine_id, "alive", 4096)  # ours, creator alive: must stay
    names = list_regions(engine_id)
    if not names:
        pytest.skip("this OS cannot list shared-memory regions (no /dev/shm)")
    assert any(n.endswith("_left") for n in names)
    removed = cleanup_stale(engine_id)
    assert any(n.endswith("_left") for n in removed)
    assert not any(n.endswith("_alive") for n in removed)
    assert [n for n in list_regions(engine_id) if n.endswith("_left")] == []
    live.unlink()
