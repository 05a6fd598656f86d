"""Ring re-attachment: restarted readers and producers, in any order, as often as it happens.

A SIGKILLed process is modelled by abandoning its objects (nothing is closed, a reader's cursor
is whatever it last handed back) and attaching a fresh ``Ring`` by name, as a restarted worker
does. Whatever restarted before, a gating reader resumes at its cursor and reads every later
frame in order, losing nothing, and never raises ``RingCorruptedError``; a non-gating reader
reads in order and counts exactly what it missed.
"""

from __future__ import annotations

import contextlib
import uuid

import msgspec
import posix_ipc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.codec import MESSAGE_DECODER
from engine.messages import Control
from shm.layout import (
    FRAME_HEADER,
    FRAME_MARK,
    PUB_CK,
    PUB_GEN,
    PUB_PID,
    PUB_POS,
    SL_CURSOR,
    SL_PID,
    SL_STATE,
    SLOT_DEAD,
    SLOT_GATING,
    SLOT_SIZE,
    SLOTS,
)
from shm.region import list_regions, list_semaphores
from shm.ring import Consumer, Producer, Ring, RingFullError
from tests.conftest import mp_context

CAP = 4096  # the smallest ring: frames of up to ~600 bytes wrap it every few frames
DECODER = msgspec.msgpack.Decoder(Control)


def _remove(eid: str) -> None:
    """What the ``engine_id`` fixture does (hypothesis runs many rings in one test)."""
    for name in list_regions(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_shared_memory(name)
    for name in list_semaphores(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_semaphore(name)


def _msg(i: int, size: int) -> Control:
    return Control(7, i, "x" * size)  # ``ts`` carries the frame's index in the stream


def _producer(eid: str) -> Producer:
    return Ring.attach(eid, "r").producer(wait="backoff", timeout_s=0.001)


def _reader(eid: str, name: str, gating: bool = True) -> Consumer:
    return Ring.attach(eid, "r").consumer(
        name, gating=gating, wait="backoff", decoder=MESSAGE_DECODER
    )


def _read(c: Consumer, api: str, n: int) -> list[int]:
    """Up to ``n`` frame indexes, by one of the consumer's read paths."""
    if api == "poll":
        out = []
        while len(out) < n and (m := c.poll()) is not None:
            out.append(m.ts)
        return out
    if api == "batch":
        return [m.ts for m in c.poll_batch(n)]
    if api == "raw":
        out = []
        while len(out) < n and (f := c.poll_raw()) is not None:
            out.append(DECODER.decode(f[1]).ts)
        return out
    k, idx = c.poll_raw_batch(n)
    return [DECODER.decode(c.data[o : o + ln]).ts for o, ln in idx[:k, :2].tolist()]


class Model:
    """One producer, a gating reader "g" and a non-gating reader "n", restarted at will."""

    def __init__(self, eid: str) -> None:
        self.eid = eid
        Ring.create(eid, "r", CAP, consumers=[("g", True), ("n", False)])
        self.prod = _producer(eid)
        self.g = _reader(eid, "g")
        self.n = _reader(eid, "n", gating=False)
        self.sent = 0  # frames published (the next index)
        self.g_next = 0  # the index the gating reader must read next
        self.g_after: dict[int, int] = {0: 0}  # cursor position after a frame -> next index
        self.g_resume: tuple[int, int] | None = None  # after a restart: the next frame's range
        self.n_last = -1

    def publish(self, sizes: list[int]) -> None:
        if self.prod is None:
            self.prod = _producer(self.eid)
        for size in sizes:
            try:
                self.prod.publish(_msg(self.sent, size))
            except RingFullError:
                return  # the gating reader holds the producer back: it must never be lapped
            self.sent += 1

    def read_g(self, api: str, n: int) -> None:
        for i in _read(self.g, api, n):
            if self.g_resume is not None:  # the first frame after a restart (restart_g)
                lo, hi = self.g_resume
                assert lo <= i <= hi, f"restarted gating reader got frame {i}, not {lo}..{hi}"
                self.g_next, self.g_resume = i, None
            assert i == self.g_next, f"gating reader got frame {i}, expected {self.g_next}"
            self.g_next += 1
            self.g_after[self.g.pos] = self.g_next

    def read_n(self, n: int) -> None:
        missed0 = self.n.missed
        for i in _read(self.n, "poll", n):
            assert i > self.n_last, "non-gating reader went backwards"
            if self.n_last >= 0 and missed0 == self.n.missed:
                assert i == self.n_last + 1, "a frame skipped without being counted"
            missed0 = self.n.missed
            self.n_last = i

    def restart_g(self, commit: bool) -> None:
        if commit:
            self.g.commit()
        cursor = self.g.ring._slot_word(self.g.slot, SL_CURSOR)
        self.g = _reader(self.eid, "g")  # the killed process's objects are simply abandoned
        assert self.g.resumed and self.g.pos == cursor
        # it resumes at its cursor: may re-read, never skip. A cursor may lie between two recorded
        # positions (a frame's end before the padding the reader stepped over, or past a region
        # a killed producer abandoned): the next frame is then one of the two around it, and
        # never a frame after one it had not read
        lo = self.g_after[max(p for p in self.g_after if p <= cursor)]
        hi = self.g_after[min((p for p in self.g_after if p >= cursor), default=max(self.g_after))]
        self.g_next, self.g_resume = lo, (lo, max(lo, hi))

    def restart_n(self) -> None:
        self.n = _reader(self.eid, "n", gating=False)
        self.n_last = -1  # it may re-read from its cursor; order is checked from here on

    def kill_producer(self, frames: int, stage: int) -> None:
        """The producer dies after writing ``frames`` frames it had not published yet: torn
        ones (stage 0), or complete ones, before it stored the new position (1), after it
        stored it but before any checkpoint (2), or in the middle of writing a checkpoint (3:
        the slot the generation does not name half written, the generation not bumped)."""
        p = self.prod
        if p is None:
            return
        written = 0
        for k in range(frames):
            msg = _msg(self.sent + k, 40)
            buf = p._enc.encode(msg)
            if p._end_for(len(buf)) > p._limit:
                break
            off = p._reserve(len(buf))
            if stage == 0:  # a torn frame: garbage where the sequence should be
                p._pack_hdr(p._data, off, len(buf), 41, FRAME_MARK, p.seq + 10**6)
                continue
            p._pack_hdr(p._data, off, len(buf), 41, FRAME_MARK, p.seq)
            p._data[off + FRAME_HEADER : off + FRAME_HEADER + len(buf)] = buf
            p.seq += 1
            written += 1
        w = p.ring._words
        if stage >= 2:
            w[PUB_POS // 8] = p.pos
            self.sent += written  # published: the restarted producer numbers on after them
        if stage >= 3:
            spare = PUB_CK // 8 + 2 * ((int(w[PUB_GEN // 8]) + 1) & 1)
            w[spare] = p.pos
            w[spare + 1] = p.seq + 10**6  # torn: never named by the generation
        w[PUB_PID // 8] = _dead_pid()
        self.prod = None  # restarted when next needed: readers may re-attach meanwhile

    def drain(self) -> None:
        while self.g_next < self.sent:
            before = self.g_next
            self.read_g("batch", 64)
            assert self.g_next > before, "gating reader stuck before the last frame"
        assert self.g_next == self.sent


OPS = st.one_of(
    st.tuples(st.just("pub"), st.lists(st.integers(0, 600), min_size=1, max_size=12)),
    st.tuples(
        st.just("g"), st.sampled_from(["poll", "batch", "raw", "rawbatch"]), st.integers(1, 9)
    ),
    st.tuples(st.just("n"), st.integers(1, 9)),
    st.tuples(st.just("restart_g"), st.booleans()),
    st.tuples(st.just("restart_n")),
    st.tuples(st.just("kill_p"), st.integers(0, 3), st.integers(0, 3)),
)


@settings(max_examples=120, deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=40))
# found by CI: a producer killed mid-publish, then the gating reader's cursor committed past the
# torn region, between two frames
@example(
    ops=[
        ("pub", [0]),
        ("kill_p", 1, 3),
        ("g", "poll", 1),
        ("pub", [0]),
        ("g", "poll", 2),
        ("restart_g", False),
    ]
)
def test_restarts_in_any_order_lose_nothing_and_never_corrupt(ops: list[tuple]) -> None:
    eid = "t" + uuid.uuid4().hex[:8]
    try:
        m = Model(eid)
        for op in ops:
            if op[0] == "pub":
                m.publish(op[1])
            elif op[0] == "g":
                m.read_g(op[1], op[2])
            elif op[0] == "n":
                m.read_n(op[1])
            elif op[0] == "restart_g":
                m.restart_g(op[1])
            elif op[0] == "restart_n":
                m.restart_n()
            else:
                m.kill_producer(op[1], op[2])
        m.publish([5, 300, 0])
        m.drain()
    finally:
        _remove(eid)


def test_reader_restarted_behind_the_producer_reads_on_after_new_frames(engine_id: str) -> None:
    """The feed's crash (issue 11): the supervisor published on control while the feed was
    down; the restarted feed read that frame, then crashed on the next one."""
    Ring.create(engine_id, "r", CAP, consumers=[("feed", True)])
    prod = _producer(engine_id)
    feed = _reader(engine_id, "feed")
    for i in range(2):
        prod.publish(_msg(i, 10))
    assert [feed.poll().ts for _ in range(2)] == [0, 1]
    assert feed.poll() is None  # hands its cursor back
    prod.publish(_msg(2, 10))  # "worker.restart" while the feed is down
    feed = _reader(engine_id, "feed")
    assert feed.poll().ts == 2
    assert feed.poll() is None
    prod.publish(_msg(3, 10))  # the next restart of anything
    assert feed.poll().ts == 3


def test_reader_restarted_on_a_padding_frame_reads_on(engine_id: str) -> None:
    """A cursor left just before the wrap (a padding frame) is resumed by the batch reader."""
    Ring.create(engine_id, "r", CAP, consumers=[("g", True)])
    prod = _producer(engine_id)
    g = _reader(engine_id, "g")
    i = 0
    while CAP - (prod.pos & (CAP - 1)) > 400:  # fill to just before the end of the data area
        prod.publish(_msg(i, 200))
        i += 1
    assert len(_read(g, "rawbatch", 1000)) == i
    g.commit()
    prod.publish(_msg(i, 500))  # does not fit: a padding frame, then the frame at offset 0
    assert (prod._q[(g.pos & (CAP - 1)) >> 3] >> 32) & 0xFFFF == 0xFFFF
    g = _reader(engine_id, "g")
    assert _read(g, "rawbatch", 10) == [i]
    prod.publish(_msg(i + 1, 5))
    assert _read(g, "poll", 10) == [i + 1]


def _exit_at_once() -> None:
    pass


def _dead_pid() -> int:
    p = mp_context().Process(target=_exit_at_once)
    p.start()
    p.join()
    return p.pid


def test_reader_dropped_as_dead_comes_back_counts_its_loss_and_gates_again(
    engine_id: str,
) -> None:
    """A gating reader whose process died stops gating after the grace, and the producer
    overwrites what it had not read. Its restart says so, counts exactly the frames it missed,
    reads on in order, and gates the producer again from then on."""
    ring = Ring.create(engine_id, "r", CAP, consumers=[("g", True)])
    prod = ring.producer(wait="backoff", timeout_s=1.0, dead_reader_grace_s=0.0)
    g = _reader(engine_id, "g")
    prod.publish(_msg(0, 100))
    assert _read(g, "poll", 1) == [0]
    g.commit()
    ring._words[(SLOTS + g.slot * SLOT_SIZE + SL_PID) // 8] = _dead_pid()  # its process died
    sent = 1
    while ring._slot_word(g.slot, SL_STATE) != SLOT_DEAD:  # the producer fills, then drops it
        prod.publish(_msg(sent, 100))
        sent += 1
    for _ in range(20):
        prod.publish(_msg(sent, 100))
        sent += 1
    g = _reader(engine_id, "g")  # the restart
    assert ring._slot_word(g.slot, SL_STATE) == SLOT_GATING
    assert g.missed > 0
    prod.timeout_s = 0.05
    with pytest.raises(RingFullError):  # it gates again: the producer cannot lap it
        for _ in range(CAP):
            prod.publish(_msg(sent, 100))
            sent += 1
    got = _read(g, "poll", 10 * CAP)
    assert got == list(range(got[0], sent)) and g.missed == got[0] - 1


def test_producer_killed_before_its_position_store_loses_only_what_it_never_published(
    engine_id: str,
) -> None:
    """Killed after writing two frames but before storing the new position: those frames were
    never published, so the restarted producer numbers on from the published ones and writes
    over them; a reader that re-attaches meanwhile neither raises nor skips."""
    Ring.create(engine_id, "r", CAP, consumers=[("g", True)])
    m = Model.__new__(Model)  # the model's producer-killing step, without its readers
    m.eid, m.sent = engine_id, 0
    m.prod = _producer(engine_id)
    for i in range(3):
        m.prod.publish(_msg(i, 10))
        m.sent += 1
    g = _reader(engine_id, "g")
    assert _read(g, "poll", 1) == [0]
    g.commit()
    m.kill_producer(2, 1)  # frames 3 and 4 written, the position not stored
    assert m.sent == 3
    g = _reader(engine_id, "g")  # a reader restarts while the producer is dead
    assert _read(g, "poll", 10) == [1, 2]
    prod = _producer(engine_id)
    assert prod.seq == 3
    prod.publish(_msg(3, 10))
    assert _read(g, "poll", 10) == [3]


def test_producer_killed_inside_a_checkpoint_resumes_from_the_published_position(
    engine_id: str,
) -> None:
    """Killed after publishing two more frames and while writing a checkpoint: the half-written
    slot is never named, the walk from the last whole one finds the sequence at the published
    position, and nothing is lost or numbered twice."""
    Ring.create(engine_id, "r", CAP, consumers=[("g", True)])
    m = Model.__new__(Model)
    m.eid, m.sent = engine_id, 0
    m.prod = _producer(engine_id)
    for i in range(3):
        m.prod.publish(_msg(i, 10))
        m.sent += 1
    m.kill_producer(2, 3)
    assert m.sent == 5
    ring = Ring.attach(engine_id, "r")
    assert ring.published_seq == 5
    g = _reader(engine_id, "g")
    prod = _producer(engine_id)
    assert prod.seq == 5
    prod.publish(_msg(5, 10))
    assert _read(g, "poll", 10) == [0, 1, 2, 3, 4, 5]
    ring.close()


def test_a_crashed_worker_leaves_its_streams_open_and_its_reader_slots_gating(
    engine_id: str,
) -> None:
    """A worker that dies of an exception detaches as a SIGKILLed one would: its readers see
    no end of its stream, its reader slots keep their cursors, and its restart reads on. Only
    a clean exit ends its streams and releases its slots."""
    from ops.config import load_config
    from procs.runtime import (
        ALL_WORKERS,
        COUNTERS,
        HEALTH_DTYPE,
        HISTOGRAMS,
        Worker,
        metrics_name,
        topology,
    )
    from shm.layout import SLOT_CLOSED
    from shm.metrics import MetricsRegion
    from shm.seqlock import SeqlockTable
    from shm.waiter import Waiter
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "config.toml")
    rings = {
        s.name: Ring.create(
            engine_id,
            s.name,
            getattr(cfg.rings, s.capacity_key),
            max_consumers=max(8, len(s.consumers) + 2),
            consumers=s.consumers,
        )
        for s in topology(cfg)
    }
    SeqlockTable.create(engine_id, "health", HEALTH_DTYPE, len(ALL_WORKERS))
    MetricsRegion.create(engine_id, metrics_name("feed"), COUNTERS["feed"], HISTOGRAMS["feed"])
    control = rings["control"].producer()
    md_reader = rings["md"].consumer("strategy", decoder=MESSAGE_DECODER)

    def feed(incarnation: int) -> tuple[Worker, Producer, Consumer, Waiter]:
        w = Worker("feed", cfg, engine_id, incarnation)
        ctl = w.consume("control")
        return w, w.produce("md"), ctl, w.waiter(ctl)

    def posted_when_asleep(ctl: Consumer, waiter: Waiter) -> bool:
        ctl.declare_sleep()  # as ``wait_any`` does before it sleeps
        control.publish(_msg(0, 1))
        assert ctl.poll() is not None
        return posix_ipc.Semaphore(waiter.sem_name).value == 1

    w, md, ctl, waiter = feed(0)
    assert posted_when_asleep(ctl, waiter)
    md.publish(_msg(0, 1))
    control.publish(_msg(100, 1))
    assert ctl.read(1.0).ts == 100
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("boom")
        finally:
            waiter.close()  # as every worker's ``finally`` does
            w.close()
    slot = ctl.slot
    assert not rings["md"].closed
    assert rings["control"]._slot_word(slot, SL_STATE) == SLOT_GATING
    control.publish(_msg(101, 1))  # the supervisor's record of the restart
    w, md, ctl, waiter = feed(1)
    assert md.seq == 1 and ctl.read(1.0).ts == 101
    # the supervisor still wakes it: it does not post its predecessor's semaphore
    assert posted_when_asleep(ctl, waiter)
    waiter.close()
    md.publish(_msg(1, 1))
    assert [md_reader.read(1.0).ts for _ in range(2)] == [0, 1]
    w.close()  # a clean exit
    assert rings["md"].closed
    assert rings["control"]._slot_word(slot, SL_STATE) == SLOT_CLOSED


def test_a_dead_readers_pid_reused_by_another_process_does_not_hold_its_slot(
    engine_id: str,
) -> None:
    """The OS gave the killed reader's pid to a newer, unrelated process: the restarted reader
    still takes its slot back, and the producer does not wait for the impostor."""
    import subprocess
    import time

    from shm.layout import SL_ATTACH_NS

    ring = Ring.create(engine_id, "r", CAP, consumers=[("g", True)])
    g = _reader(engine_id, "g")
    words = ring._words
    words[(SLOTS + g.slot * SLOT_SIZE + SL_ATTACH_NS) // 8] = time.time_ns() - 60 * 10**9
    other = subprocess.Popen(["sleep", "30"])  # started a minute after the reader attached
    try:
        words[(SLOTS + g.slot * SLOT_SIZE + SL_PID) // 8] = other.pid
        assert ring._slot_owner_alive(g.slot) == (other.pid, False)
        prod = ring.producer(wait="backoff", timeout_s=1.0, dead_reader_grace_s=0.0)
        for i in range(3 * CAP // 100):  # full: the producer drops the reader it cannot trust
            prod.publish(_msg(i, 100))
        assert ring._slot_word(g.slot, SL_STATE) == SLOT_DEAD
        g = _reader(engine_id, "g")  # the restart is not refused as "already attached"
        assert g.missed > 0 and ring._slot_word(g.slot, SL_STATE) == SLOT_GATING
    finally:
        other.kill()
        other.wait()
