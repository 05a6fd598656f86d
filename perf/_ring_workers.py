"""The far side of ``perf/bench_ring.py``: message types and the helper process.

``bench_ring.py`` runs the producer (or the ping side) inside the worker process pyperf spawns
and forks one helper process per benchmark that runs the consumer (or the echo side) until told
to stop. Helper and benchmark talk over a multiprocessing ``Pipe`` only *between* timed runs:

    bench  -> helper   ("run", n)        helper answers "go", then consumes / echoes n messages
    helper -> bench    ("done", check)   check proves every message arrived, in order
    bench  -> helper   ("stop",)         helper detaches and exits

The message types live here (an importable module) so that pickling them for ``mp.Queue`` and
``faster_fifo`` works with any start method.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import sys
from typing import Any, Union

import msgspec

#: sequence numbers start here so every ``seq`` encodes as a 9-byte msgpack uint64 (fixed size)
BASE_SEQ = 1 << 40
#: messages are published round-robin from a pool of this many distinct objects
POOL = 1024
#: messages per ``publish_batch`` / ``put_many`` call
BATCH = 256
#: frames per ``publish_raw_batch`` call
RAW_BATCH = 4096
#: the ring's data capacity (the engine's default)
RING_CAPACITY = 1 << 20


class Msg64(msgspec.Struct, tag=100, array_like=True):
    """64 bytes of msgpack: a quote-sized message."""

    seq: int
    ts: int
    px: int
    qty: int
    side: int
    sym: str


class Msg512(msgspec.Struct, tag=101, array_like=True):
    """512 bytes of msgpack: a 12-level book snapshot."""

    seq: int
    ts: int
    bid_px: list[int]
    bid_qty: list[int]
    ask_px: list[int]
    ask_qty: list[int]
    venue: str


MESSAGE_TYPES = {64: Msg64, 512: Msg512}
LEVELS = 12


def make_message(size: int, i: int) -> Msg64 | Msg512:
    ts = 1_700_000_000_000_000_000 + i
    if size == 64:
        return Msg64(
            BASE_SEQ + i, ts, 6_543_210_000 + i, 1_000_000_000_000, -1, "BTCUSDT-PERP@BINANCE-000"
        )
    if size == 512:
        return Msg512(
            BASE_SEQ + i,
            ts,
            [6_543_210_000 - k for k in range(LEVELS)],
            [1_000_000_000_000 + k for k in range(LEVELS)],
            [6_543_220_000 + k for k in range(LEVELS)],
            [1_000_000_000_000 + k for k in range(LEVELS)],
            "BINANCE-USDM-PERPETUAL-BTCUSDT-L2-SNAPSHOT-DEPTH12-001",
        )
    raise ValueError(f"no message of {size} bytes")


def make_pool(size: int, n: int = POOL) -> list[Any]:
    pool = [make_message(size, i) for i in range(n)]
    enc = msgspec.msgpack.encode
    assert all(len(enc(m)) == size for m in pool), f"pool messages must encode to {size} bytes"
    return pool


def make_decoder() -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(Union[Msg64, Msg512])  # noqa: UP007 (a runtime union)


def last_seq(n: int, period: int) -> int:
    """The ``seq`` of the last of ``n`` messages sent round-robin from a pool of ``period``."""
    return BASE_SEQ + (n - 1) % period


# --- helper process ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, so a spinning helper never lingers."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _prepare(parent: int, close_fds: tuple[int, ...]) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    for fd in close_fds:  # e.g. pyperf's result pipe: the manager reads it until EOF
        with contextlib.suppress(OSError):
            os.close(fd)


def _alive(parent: int) -> None:
    if os.getppid() != parent:
        raise SystemExit("benchmark process is gone")


def serve(
    conn: Any, parent: int, close_fds: tuple[int, ...], transport: str, measure: str, spec: dict
) -> None:
    """Entry point of the helper process: set up its side, then answer commands until "stop"."""
    _prepare(parent, close_fds)
    if transport.startswith("ring"):
        side = _RingSide(spec, measure)
    else:
        side = _QueueSide(spec, measure, transport)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                cmd = conn.recv()
            except EOFError:
                return
            if cmd[0] == "stop":
                return
            n = cmd[1]
            conn.send("go")
            conn.send(("done", side.run(n, parent)))
    finally:
        side.close()


class _RingSide:
    def __init__(self, spec: dict, measure: str) -> None:
        from shm.ring import Ring

        self.measure = measure
        self.ring_in = Ring.attach(spec["engine_id"], spec["ping"])
        self.cons = self.ring_in.consumer(
            "helper", gating=True, wait=spec["wait"], decoder=make_decoder()
        )
        self.ring_out = self.prod = None
        if measure == "rtt":
            self.ring_out = Ring.attach(spec["engine_id"], spec["pong"])
            self.prod = self.ring_out.producer(wait=spec["wait"])

    def run(self, n: int, parent: int) -> Any:
        cons = self.cons
        poll = cons.poll
        wait = cons.wait_for_data
        if self.measure == "throughput":
            got = 0
            last = None
            while got < n:
                m = poll()
                if m is None:
                    if not wait(1.0):
                        _alive(parent)
                    continue
                last = m
                got += 1
            return last.seq
        if self.measure == "batch":
            got = 0
            last = None
            poll_batch = cons.poll_batch
            while got < n:
                b = poll_batch(1024)
                if not b:
                    if not wait(1.0):
                        _alive(parent)
                    continue
                got += len(b)
                last = b[-1]
            return (got, last.seq)
        if self.measure == "rawbatch":
            got = 0
            prb = cons.poll_raw_batch
            k = 0
            idx = None
            while got < n:
                k, idx = prb(65536)
                if k == 0:
                    if not wait(1.0):
                        _alive(parent)
                    continue
                got += k
            return (got, int(idx[k - 1, 1]), int(idx[k - 1, 2]))
        if self.measure == "rtt":
            pub = self.prod.publish
            for _ in range(n):
                m = poll()
                while m is None:
                    if not wait(1.0):
                        _alive(parent)
                    m = poll()
                pub(m)
            return n
        raise ValueError(self.measure)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cons.leave()
        if self.prod is not None:
            with contextlib.suppress(Exception):
                self.prod.close()
        for r in (self.ring_in, self.ring_out):
            if r is not None:
                with contextlib.suppress(Exception):
                    r.close()


class _QueueSide:
    def __init__(self, spec: dict, measure: str, transport: str) -> None:
        self.measure = measure
        self.transport = transport
        self.q_in = spec["ping"]
        self.q_out = spec.get("pong")

    def run(self, n: int, parent: int) -> Any:
        get = self.q_in.get
        if self.measure == "throughput":
            m = None
            if self.transport == "faster_fifo":  # get() waits 10 s at most, then raises Empty
                i = 0
                while i < n:
                    try:
                        m = get()
                    except queue_mod.Empty:
                        _alive(parent)
                        continue
                    i += 1
            else:
                for _ in range(n):
                    m = get()
            return m.seq
        if self.measure == "batch":  # faster_fifo only: get_many
            get_many = self.q_in.get_many
            got = 0
            last = None
            while got < n:
                try:
                    b = get_many(max_messages_to_get=1024)
                except queue_mod.Empty:
                    _alive(parent)
                    continue
                got += len(b)
                last = b[-1]
            return (got, last.seq)
        if self.measure == "rtt":
            put = self.q_out.put
            for _ in range(n):
                put(get())
            return n
        raise ValueError(self.measure)

    def close(self) -> None:
        if self.transport == "mp_queue" and self.q_out is not None:
            self.q_out.close()
            self.q_out.join_thread()
