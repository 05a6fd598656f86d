"""The local Binance.US servers bench_venue.py measures against, in a process of their own.

Why a process: the exchange is another machine in real life; in the bench's own process the
server would take the GIL from the very client it is timing. Why subclasses of the test server
(``tests.venues.binance.BinanceServer``): the bench needs two things the tests do not — a depth
update sent *when asked* (latency: one message, timed from the moment it leaves) and the whole
market replayed to *each* new subscriber from the start, as fast as the socket takes it
(throughput: every value a fresh, byte-for-byte replay) — and nothing else may differ from what
the tests' clients talk to (REST, signatures, matching, user stream).

    python perf/_venue_server.py [--synthetic]

prints ``READY <push port> <replay port> <udp port> <frames> <last update id> <source>`` and
serves until stdin closes or SIGTERM. Control is one UDP datagram on loopback, answered with one:
``push`` → ``pushed <update id> <monotonic ns sent> <new best-bid qty>`` (the push server moved
its best bid's size by one depth diff and queued it to every subscriber); ``start`` → ``start
<monotonic ns>`` (when the replay server began sending its last replay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.venues import binance_capture as bc  # noqa: E402
from tests.venues.binance import DEPTH, BinanceServer, SyntheticMarket  # noqa: E402
from tests.venues.core import Sock, SymbolSpec, now_ms  # noqa: E402

KEY, SECRET = "bench-venue-key", "bench-venue-secret"
BALANCES = {"USDT": "1000000000", "BTC": "100000"}
SYNTHETIC_FRAMES = 3000
_UNLIMITED = 10**12  # request weight: the bench sends thousands of orders a minute


class PushMarket(SyntheticMarket):
    """A synthetic book that changes only when told: each ``trigger`` sends one depth diff that
    sets the best bid's size to a new value (so the top of book moves: a Quote downstream)."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: asyncio.Queue[Callable[[int, int, str], None]] = asyncio.Queue()
        self.pushes = 0

    async def frames(self) -> AsyncIterator[tuple[str, bytes, dict | None]]:
        while True:
            reply = await self.triggers.get()
            diff, qty = self._push_diff()
            sent = time.monotonic_ns()
            yield f"{self.stream}{DEPTH}", _dumps(diff), diff
            reply(int(diff["u"]), sent, qty)  # resumed after the server queued the frame

    def _push_diff(self) -> tuple[dict[str, Any], str]:
        bid, _ = self.book.best()
        assert bid is not None
        self.pushes += 1
        qty = f"{Decimal(100 + self.pushes % 900) / 1000:.5f}"  # never the same twice running
        u = self.book.update_id + 1
        diff = {
            "e": "depthUpdate",
            "E": now_ms(),
            "s": self.spec.venue_symbol,
            "U": u,
            "u": u,
            "b": [[str(bid[0]), qty]],
            "a": [],
        }
        self.book.apply(diff)
        return diff, qty


class FixedReplay:
    """A market that never moves by itself: one REST snapshot and the depth frames after it,
    replayed to each subscriber (the real capture's, or synthetic ones without it)."""

    def __init__(self, synthetic: bool = False) -> None:
        if not synthetic and bc.available():
            cap = bc.load()
            self.spec = SymbolSpec(symbol=bc.SYMBOL, venue_symbol=bc.VENUE_SYMBOL)
            self.snapshot = cap.snapshot_text
            self._levels = bc.ReferenceBook(cap.snapshot).levels()
            depth = [f for f in cap.frames if f.stream == bc.DEPTH_STREAM]
            self.frames = [f.data.decode() for f in depth]
            self.last_u = int(json.loads(self.frames[-1])["u"])
            self.source = "capture"
        else:
            m = SyntheticMarket()
            self.spec = m.spec
            self.snapshot = m.depth_body(1000)
            self._levels = m.levels()
            self.frames = [_dumps(m._diff()).decode() for _ in range(SYNTHETIC_FRAMES)]
            self.last_u = m.book.update_id
            self.source = "synthetic"
        self.stream = self.spec.venue_symbol.lower() + DEPTH

    def levels(self) -> Any:
        return self._levels

    def depth_body(self, limit: int = 1000) -> bytes:
        return self.snapshot


class ReplayServer(BinanceServer):
    """Each depth subscription gets the whole replay from its first frame, unpaced."""

    def __init__(self, replay: FixedReplay) -> None:
        super().__init__(market=replay, weight_limit=_UNLIMITED)
        self.replay = replay
        self.started_ns = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _ensure_replay(self) -> None:
        """No shared replay: ``_on_market_text`` starts one per subscriber."""

    async def _on_market_text(self, sock: Sock, text: str) -> None:
        await super()._on_market_text(sock, text)
        try:
            msg = json.loads(text)
        except ValueError:
            return
        subscribed = msg.get("method") == "SUBSCRIBE" and self.replay.stream in sock.subs
        if subscribed and not sock.state.get("replaying"):
            sock.state["replaying"] = True
            task = asyncio.get_running_loop().create_task(self._replay_to(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replay_to(self, sock: Sock) -> None:
        self.started_ns = time.monotonic_ns()
        combined = sock.state.get("combined")
        stream = self.replay.stream
        for i, text in enumerate(self.replay.frames):
            sock.send(f'{{"stream":"{stream}","data":{text}}}' if combined else text)
            if i % 200 == 199:
                await asyncio.sleep(0)


class _Control(asyncio.DatagramProtocol):
    def __init__(self, push: BinanceServer, replay: ReplayServer) -> None:
        self.push, self.replay = push, replay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        send = self.transport.sendto
        cmd = data.decode(errors="replace").strip()
        if cmd == "push":
            market: PushMarket = self.push.market
            market.triggers.put_nowait(
                lambda u, ns, qty: send(f"pushed {u} {ns} {qty}".encode(), addr)
            )
            self.push._ensure_replay()  # the push loop runs from the first trigger on
        elif cmd == "start":
            send(f"start {self.replay.started_ns}".encode(), addr)
        else:
            send(f"error unknown command {cmd!r}".encode(), addr)


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="perf/_venue_server.py")
    p.add_argument("--synthetic", action="store_true", help="no capture even where it exists")
    args = p.parse_args(argv)
    push = BinanceServer(market=PushMarket(), weight_limit=_UNLIMITED)
    replay = ReplayServer(FixedReplay(args.synthetic))
    for srv in (push, replay):
        srv.add_key(KEY, SECRET, balances=dict(BALANCES))
        srv.start()
    loop = push.server.loop
    assert loop is not None

    async def _udp() -> Any:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Control(push, replay), local_addr=("127.0.0.1", 0)
        )
        return transport

    udp = push.server.run(_udp())
    udp_port = udp.get_extra_info("sockname")[1]
    r = replay.replay
    print(
        f"READY {push.port} {replay.port} {udp_port} {len(r.frames)} {r.last_u} {r.source}",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    try:
        done.wait()
    finally:
        loop.call_soon_threadsafe(udp.close)
        for srv in (push, replay):
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
