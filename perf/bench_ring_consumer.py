"""Ring consumer read paths (and the one-message publish) in one process: ns per message.

Why: ``bench_ring.py`` measures producer and consumer in two spinning processes, which needs a
free core per process to mean anything. This measures the consumer's CPU work alone (decode or
copy, lap checks, cursor hand-back), so an A/B of consumer code is readable on a busy machine:

    .venv/bin/python perf/bench_ring_consumer.py [ROOT]

``ROOT`` is a checkout whose ``shm`` is measured (default: this one; e.g. a ``git worktree`` of
the old code for an A/B). Prints one JSON object: ``{gating|nongating}-{poll|poll_raw|poll_batch}``
-> the best (minimum) ns per message over the repeats to drain frames already published, and
``producer-publish`` -> the same for ``publish`` one message at a time (the producer's side of
``bench_ring``'s one-way single-message figure, without the second process).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from engine.messages import Message, Quote  # noqa: E402
from shm.ring import Consumer, Ring  # noqa: E402

N = 2000  # frames per drain (about 100 KB: well inside the 1 MiB ring)
REPEATS = 40


def drain(c: Consumer, how: str) -> None:
    if how == "poll":
        while c.poll() is not None:
            pass
    elif how == "poll_raw":
        while c.poll_raw() is not None:
            pass
    else:
        while c.poll_batch(256):
            pass


def main() -> None:
    dec = msgspec.msgpack.Decoder(Message)
    msgs = [Quote(1, 100 + i, 5, 101 + i, 7, i, i + 1, i) for i in range(N)]
    ring = Ring.create("rcb" + uuid.uuid4().hex[:6], "r", 1 << 20)
    cons: dict[bool, Consumer] = {}
    try:
        prod = ring.producer()
        cons = {g: ring.consumer(f"c{int(g)}", gating=g, decoder=dec) for g in (True, False)}
        best: dict[str, float] = {}
        for _ in range(REPEATS):
            pub = prod.publish
            t = time.perf_counter_ns()
            for m in msgs:
                pub(m)
            best["producer-publish"] = min(
                best.get("producer-publish", float("inf")), (time.perf_counter_ns() - t) / N
            )
            for c in cons.values():
                drain(c, "poll_raw")
            for how in ("poll", "poll_raw", "poll_batch"):
                for gating, c in cons.items():
                    prod.publish_batch(msgs)
                    t = time.perf_counter_ns()
                    drain(c, how)
                    dt = (time.perf_counter_ns() - t) / N
                    key = f"{'gating' if gating else 'nongating'}-{how}"
                    best[key] = min(best.get(key, float("inf")), dt)
                    drain(cons[not gating], "poll_raw")  # the other reader keeps up
        print(json.dumps({k: round(v, 1) for k, v in sorted(best.items())}))
        prod.detach()
    finally:
        for c in cons.values():
            c.close()
        ring.close()
        ring.unlink()


if __name__ == "__main__":
    main()
