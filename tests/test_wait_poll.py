"""The ``poll`` wait: a background reader that the producer never has to wake.

A ``block`` reader raises its slot's sleeping flag and the producer posts its semaphore on the
next publish (a syscall on the hot path, a wake-up per message). A ``poll`` reader only sleeps
its interval and looks again: the observable is that the producer never opens, let alone posts,
the semaphore of a poll reader's slot, while a block reader on the same ring still gets posted.
And a gating poll reader still receives every message, in order: the producer waits for it
when the ring is full, exactly as for any gating reader.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import posix_ipc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import MESSAGE_DECODER
from engine.messages import Quote
from ops.config import ConfigError, load_config
from shm import kernels as K
from shm.region import list_semaphores
from shm.ring import Consumer, Producer, Ring
from shm.wait import WaitStrategy, make_wait
from shm.waiter import Waiter
from tests.conftest import ROOT, mp_context


def _quote(i: int) -> Quote:
    return Quote(i % 3, 100 + i, 5, 101 + i, 7, i, i + 1, i)


def _reader(cons: Consumer, waiter: Waiter, total: int, out: list[Any], give_up_s: float) -> None:
    """Drain ``cons`` the way a worker loop does: poll a batch, idle by the waiter when empty."""
    deadline = time.monotonic() + give_up_s
    while len(out) + cons.missed < total and time.monotonic() < deadline:
        got = cons.poll_batch(256)
        if got:
            out.extend(got)
        else:
            waiter.wait_any(0.05)
        if cons.ring.closed and not cons.has_data():
            break


def _wake_posted(prod: Producer, sem_name: str) -> bool:
    """Whether the producer ever posted ``sem_name``: it opens a semaphore only to post it."""
    return sem_name in prod._sems


def _sem_value(name: str) -> int:
    sem = posix_ipc.Semaphore(name)
    try:
        return sem.value
    finally:
        sem.close()


@settings(max_examples=15, deadline=None)
@given(
    bursts=st.lists(st.integers(1, 150), min_size=1, max_size=8),
    poll_ms=st.sampled_from([0.5, 2.0, 5.0]),
)
def test_poll_reader_is_never_posted_and_gets_every_message_in_order(
    bursts: list[int], poll_ms: float
) -> None:
    """Three readers on one small ring: gating ``block`` (the latency-critical kind), gating
    ``poll`` and non-gating ``poll`` (the recorder's and infer's market data). Between bursts
    the producer waits until the block reader has declared itself asleep, so each burst's first
    publish must post it; the poll readers must never be posted. Both gating readers get every
    message in order (the 4 KiB ring fills: the producer waits for the poll reader); the
    non-gating one gets an in-order subsequence and counts exactly what it missed."""
    eid = "w" + uuid.uuid4().hex[:8]
    ring = Ring.create(eid, "md", 4096, max_payload=1024)
    threads: list[threading.Thread] = []
    waiters: list[Waiter] = []
    try:
        total = sum(bursts)
        poll = make_wait("poll", poll_interval_s=poll_ms / 1e3)
        hot = ring.consumer("hot", gating=True, wait="block", decoder=MESSAGE_DECODER)
        bg = ring.consumer("bg", gating=True, wait=poll, decoder=MESSAGE_DECODER)
        lossy = ring.consumer("lossy", gating=False, wait=poll, decoder=MESSAGE_DECODER)
        hot_w = Waiter([hot], hot.wait, f"/gk_{eid}_whot")
        bg_w = Waiter([bg], poll, f"/gk_{eid}_wbg")
        lossy_w = Waiter([lossy], poll, f"/gk_{eid}_wlossy")
        waiters += [hot_w, bg_w, lossy_w]
        got: dict[str, list[Any]] = {"hot": [], "bg": [], "lossy": []}
        for name, c, w in (("hot", hot, hot_w), ("bg", bg, bg_w), ("lossy", lossy, lossy_w)):
            t = threading.Thread(target=_reader, args=(c, w, total, got[name], 20.0), daemon=True)
            threads.append(t)
            t.start()
        prod = ring.producer(wait="backoff", timeout_s=10.0)
        sent = [_quote(i) for i in range(total)]
        i = 0
        for n in bursts:
            # the block reader has drained and sleeps: the next publish has to post it
            until = time.monotonic() + 5.0
            while not K.load_word(hot.sleep_flag_addr) and time.monotonic() < until:
                time.sleep(0.0005)
            assert K.load_word(hot.sleep_flag_addr), "the block reader never went to sleep"
            for m in sent[i : i + n]:
                prod.publish(m)
            i += n
        for t in threads:
            t.join(25.0)
        assert got["hot"] == sent
        assert got["bg"] == sent
        seen = [q.seq for q in got["lossy"]]
        assert seen == sorted(set(seen)) and set(seen) <= set(range(total))
        assert len(seen) + lossy.missed == total
        # the observable: the block reader's semaphore was posted, the poll readers' never
        assert _wake_posted(prod, hot_w.sem_name)
        for c in (bg, lossy):
            name = ring._wake_name(c.slot)
            assert not _wake_posted(prod, name)
            assert _sem_value(name) == 0
            assert K.load_word(c.sleep_flag_addr) == 0  # never declared asleep
        assert f"/gk_{eid}_wbg" not in list_semaphores(eid)  # a poll waiter has no semaphore
        prod.close()
    finally:
        for t in threads:
            t.join(25.0)
        for w in waiters:
            w.close()
        ring.close()
        ring.unlink()


def _poll_process(engine_id: str, total: int, q: Any) -> None:  # type: ignore[no-untyped-def]
    """A separate process reading like the recorder: gating, ``poll`` wait, batches."""
    ring = Ring.attach(engine_id, "md")
    wait = make_wait("poll", poll_interval_s=0.002)
    cons = ring.consumer("recorder", gating=True, wait=wait, decoder=MESSAGE_DECODER)
    waiter = Waiter([cons], wait, f"/gk_{engine_id}_wrecorder")
    out: list[Any] = []
    _reader(cons, waiter, total, out, 30.0)
    in_order = all(m.seq == k for k, m in enumerate(out))
    q.put((len(out), in_order, K.load_word(cons.sleep_flag_addr)))
    waiter.close()
    cons.close()


def test_poll_reader_in_another_process_is_never_posted(engine_id: str) -> None:
    """The same across real processes: 20 000 quotes in bursts through a 64 KiB ring to a gating
    poll reader in its own process; the producer never posts its slot's semaphore."""
    total = 20_000
    ring = Ring.create(engine_id, "md", 1 << 16, consumers=[("recorder", True)])
    ctx = mp_context()
    q = ctx.Queue()
    p = ctx.Process(target=_poll_process, args=(engine_id, total, q))
    p.start()
    try:
        prod = ring.producer(wait="backoff", timeout_s=10.0)
        for i in range(total):
            prod.publish(_quote(i))
            if i % 1000 == 999:
                time.sleep(0.003)  # a pause longer than the reader's interval: it sleeps
        n, in_order, flag = q.get(timeout=60)
        assert (n, in_order, flag) == (total, True, 0)
        wake = ring._wake_name(0)
        assert not _wake_posted(prod, wake)
        assert _sem_value(wake) == 0
        prod.close()
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
        ring.close()
        ring.unlink()


def test_poll_waiter_times_out_without_data(engine_id: str) -> None:
    """Nothing published: ``wait_any`` returns False (a worker then beats and loops), even
    with an interval longer than the timeout (the sleep is cut to the deadline)."""
    ring = Ring.create(engine_id, "md", 4096)
    try:
        wait = make_wait("poll", poll_interval_s=0.5)
        cons = ring.consumer("bg", wait=wait, decoder=MESSAGE_DECODER)
        w = Waiter([cons], wait, f"/gk_{engine_id}_wbg")
        assert w.wait_any(0.02) is False
        assert cons.wait_for_data(0.02) is False
        prod = ring.producer()
        prod.publish(_quote(0))
        assert w.wait_any(0.02) is True
        assert cons.poll() == _quote(0)
        w.close()
        prod.close()
        cons.close()
    finally:
        ring.close()
        ring.unlink()


def test_poll_strategy_fields() -> None:
    w = make_wait("poll", poll_interval_s=0.025)
    assert (w.kind, w.poll_interval_s, w.uses_semaphore, w.blocks) == ("poll", 0.025, False, True)
    assert make_wait("block").uses_semaphore and not make_wait("backoff").blocks
    assert not w.should_block(10_000)  # never sleeps on a semaphore, however long it waits
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="poll_interval_s"):
            WaitStrategy(kind="poll", poll_interval_s=bad)


def test_shipped_config_puts_background_readers_on_poll() -> None:
    cfg = load_config(ROOT / "config.toml")
    for name in ("recorder", "bridge"):
        assert cfg.processes.get(name).wait == "poll"
    for name in ("feed", "strategy", "risk", "exec", "infer"):
        assert cfg.processes.get(name).wait == "block"


def test_a_table_without_wait_gets_the_process_default(tmp_path: Path) -> None:
    """Only ``cpus`` given: the recorder still polls, exec still blocks (a config file written
    before ``poll`` existed keeps its trading hops as they were)."""
    text = (ROOT / "config.toml").read_text()
    start = text.index("[processes.feed]")
    end = text.index("[market]")
    table = "[processes.recorder]\ncpus = [0]\n\n[processes.exec]\ncpus = [0]\n\n"
    p = tmp_path / "config.toml"
    p.write_text(text[:start] + table + text[end:])
    cfg = load_config(p)
    assert cfg.processes.recorder.wait == "poll" and cfg.processes.recorder.cpus == [0]
    assert cfg.processes.bridge.wait == "poll"
    assert cfg.processes.exec.wait == "block" and cfg.processes.infer.wait == "block"


@pytest.mark.parametrize("bad", ["0", "-5", "nan", "5000"])
def test_bad_poll_interval_names_the_key(tmp_path: Path, bad: str) -> None:
    text = (ROOT / "config.toml").read_text()
    p = tmp_path / "config.toml"
    p.write_text(
        text.replace("[processes.feed]\n", f"[processes.feed]\npoll_interval_ms = {bad}\n")
    )
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == "processes.feed.poll_interval_ms"
